//! Decoding and encoding of the image files the datasets use: 8-bit RGB (JPEG or PNG), 16-bit
//! grayscale depth PNGs with a per-format scale (NYU: 1/1000 m, KITTI: 1/256 m, 0 = invalid) and
//! 8-bit label PNGs (stored ids, 255 = ignore). Every failure becomes a [`DataError`] naming the file.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use image::{ColorType, DynamicImage, ImageDecoder, ImageReader};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

use crate::error::{DataError, Result};
use crate::sample::{normalize_rgb8, to_rgb8};

fn open_decoder(path: &Path) -> Result<ImageReader<BufReader<File>>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))
}

fn decode_error(path: &Path, e: image::ImageError) -> DataError {
    match e {
        image::ImageError::IoError(source) => DataError::io(path, source),
        other => DataError::Decode {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

fn describe(color: ColorType) -> String {
    let bits = color.bits_per_pixel() / color.channel_count() as u16;
    let layout = match color.channel_count() {
        1 => "grayscale",
        2 => "grayscale+alpha",
        3 => "RGB",
        _ => "RGBA",
    };
    format!("a {bits}-bit {layout} image")
}

/// The most pixels an image we read may have (2^25, a little over 8K UHD's 7680 x 4320), checked
/// on the header before decoding; the decoder's own allocation limit is set to match (16-bit RGBA
/// at the cap), so no input can make a reader allocate more.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 25;

/// Decodes `path` fully and returns the image with the colour type the file declares.
fn decode(path: &Path) -> Result<(DynamicImage, ColorType)> {
    let mut reader = open_decoder(path)?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > MAX_IMAGE_PIXELS {
        return Err(DataError::ImageSize {
            path: path.to_path_buf(),
            width,
            height,
            cap: MAX_IMAGE_PIXELS,
        });
    }
    let color = decoder.color_type();
    let image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(path, e))?;
    Ok((image, color))
}

/// Reads an 8-bit RGB image (JPEG or PNG; grayscale is expanded, alpha dropped) as a normalised
/// 3 x H x W array. 16-bit or float images are rejected: they are not camera RGB.
pub fn read_rgb(path: &Path) -> Result<Array3<f32>> {
    let (image, color) = decode(path)?;
    if !matches!(
        color,
        ColorType::Rgb8 | ColorType::Rgba8 | ColorType::L8 | ColorType::La8
    ) {
        return Err(DataError::WrongFormat {
            path: path.to_path_buf(),
            expected: "an 8-bit RGB image",
            found: describe(color),
        });
    }
    let rgb = image.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    Ok(normalize_rgb8(rgb.as_raw(), h, w))
}

/// Reads a 16-bit grayscale depth PNG and returns metres, `value * scale` (0 stays 0 = invalid).
/// An 8-bit or colour file is a typed error: silently reading it would give depth off by 256x.
pub fn read_depth_png(path: &Path, scale: f32) -> Result<Array2<f32>> {
    let (image, color) = decode(path)?;
    let DynamicImage::ImageLuma16(gray) = image else {
        return Err(DataError::WrongFormat {
            path: path.to_path_buf(),
            expected: "a 16-bit grayscale depth PNG",
            found: describe(color),
        });
    };
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    let values: Vec<f32> = gray.as_raw().iter().map(|&v| v as f32 * scale).collect();
    Ok(Array2::from_shape_vec((h, w), values).expect("buffer length is h*w"))
}

/// Reads an 8-bit grayscale label PNG as stored (class id per pixel; in our files 0-based ids with
/// 255 = ignore). Readers whose format codes classes differently remap after reading.
pub fn read_labels_png(path: &Path) -> Result<Array2<u8>> {
    let (image, color) = decode(path)?;
    let DynamicImage::ImageLuma8(gray) = image else {
        return Err(DataError::WrongFormat {
            path: path.to_path_buf(),
            expected: "an 8-bit grayscale label PNG",
            found: describe(color),
        });
    };
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    Ok(Array2::from_shape_vec((h, w), gray.into_raw()).expect("buffer length is h*w"))
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    Ok(BufWriter::new(
        File::create(path).map_err(|e| DataError::io(path, e))?,
    ))
}

/// JPEG quality used for written RGB; high enough that the round trip stays within a few levels.
pub const JPEG_QUALITY: u8 = 95;

/// Writes normalised RGB as JPEG (quality [`JPEG_QUALITY`]) or PNG, chosen by the extension.
pub fn write_rgb(path: &Path, rgb: ArrayView3<f32>) -> Result<()> {
    let (_, h, w) = rgb.dim();
    let buffer = to_rgb8(rgb);
    let is_jpeg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
    let mut out = create(path)?;
    let result = if is_jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode(
            &buffer,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
        )
    } else {
        image::RgbImage::from_raw(w as u32, h as u32, buffer)
            .expect("buffer length is 3*h*w")
            .write_to(&mut out, image::ImageFormat::Png)
    };
    result.map_err(|e| decode_error(path, e))
}

/// Writes depth in metres as a 16-bit PNG of `round(depth / scale)`; pixels outside `mask` are 0.
/// Depth beyond the 16-bit range is an error rather than a silent wrap.
pub fn write_depth_png(
    path: &Path,
    depth: ArrayView2<f32>,
    mask: ArrayView2<bool>,
    scale: f32,
) -> Result<()> {
    let (h, w) = depth.dim();
    let mut values = Vec::with_capacity(h * w);
    for ((y, x), &d) in depth.indexed_iter() {
        let v = if mask[[y, x]] {
            (d / scale).round()
        } else {
            0.0
        };
        if !(0.0..=65535.0).contains(&v) {
            return Err(DataError::Config(format!(
                "{}: depth {d} m at ({y}, {x}) does not fit a 16-bit PNG with scale {scale}",
                path.display()
            )));
        }
        values.push(v as u16);
    }
    let image = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w as u32, h as u32, values)
        .expect("buffer length is h*w");
    image
        .write_to(&mut create(path)?, image::ImageFormat::Png)
        .map_err(|e| decode_error(path, e))
}

/// Writes a label map as an 8-bit grayscale PNG.
pub fn write_labels_png(path: &Path, labels: ArrayView2<u8>) -> Result<()> {
    let (h, w) = labels.dim();
    let image = image::GrayImage::from_raw(w as u32, h as u32, labels.iter().copied().collect())
        .expect("buffer length is h*w");
    image
        .write_to(&mut create(path)?, image::ImageFormat::Png)
        .map_err(|e| decode_error(path, e))
}

/// Saves any RGB picture (contact sheets, colour-mapped predictions) as PNG.
pub fn write_png(path: &Path, image: &image::RgbImage) -> Result<()> {
    image
        .write_to(&mut create(path)?, image::ImageFormat::Png)
        .map_err(|e| decode_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn depth_png_round_trips_to_the_scale_and_keeps_zero_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.png");
        let depth = array![[1.2344f32, 0.0], [9.9996, 3.0]];
        let mask = array![[true, false], [true, true]];
        write_depth_png(&path, depth.view(), mask.view(), 1e-3).unwrap();
        let back = read_depth_png(&path, 1e-3).unwrap();
        for (a, b) in back.iter().zip(depth.iter()) {
            assert!((a - b).abs() <= 0.5e-3 + 1e-6, "{a} vs {b}");
        }
        assert_eq!(back[[0, 1]], 0.0);
    }

    #[test]
    fn eight_bit_png_where_depth_is_expected_is_a_wrong_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.png");
        write_labels_png(&path, array![[1u8, 2], [3, 4]].view()).unwrap();
        let err = read_depth_png(&path, 1e-3).unwrap_err();
        assert!(matches!(err, DataError::WrongFormat { .. }), "{err}");
        assert!(err.to_string().contains("8-bit grayscale"), "{err}");
        assert!(err.to_string().contains("labels.png"), "{err}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = read_rgb(Path::new("/nonexistent/rgb_00001.jpg")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(err.to_string().contains("rgb_00001.jpg"));
    }

    #[test]
    fn depth_beyond_sixteen_bits_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let depth = array![[300.0f32]];
        let mask = array![[true]];
        assert!(
            write_depth_png(&dir.path().join("x.png"), depth.view(), mask.view(), 1e-3).is_err()
        );
    }
}
