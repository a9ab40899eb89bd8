//! Colour maps for pictures of depth and labels: turbo (Mikhailov 2019, polynomial fit) for depth,
//! a fixed palette for classes, and a tiler for contact sheets. The trainer reuses these for its
//! prediction figures, so a depth map looks the same in every picture the project writes.

use image::{Rgb, RgbImage};
use ndarray::{ArrayView2, ArrayView3};

use crate::sample::{IGNORE_LABEL, quantize_unit, to_rgb8};

/// Turbo colour map at `t` in [0, 1] (values outside are clamped): dark blue -> green -> dark red.
pub fn turbo(t: f32) -> [u8; 3] {
    let x = t.clamp(0.0, 1.0) as f64;
    let (x2, x3) = (x * x, x * x * x);
    let (x4, x5) = (x3 * x, x3 * x2);
    let r = 0.13572138 + 4.61539260 * x - 42.66032258 * x2 + 132.13108234 * x3 - 152.94239396 * x4
        + 59.28637943 * x5;
    let g = 0.09140261 + 2.19418839 * x + 4.84296658 * x2 - 14.18503333 * x3
        + 4.27729857 * x4
        + 2.82956604 * x5;
    let b = 0.10667330 + 12.64194608 * x - 60.58204836 * x2 + 110.36276771 * x3 - 89.90310912 * x4
        + 27.34824973 * x5;
    let q = |v: f64| quantize_unit(v as f32);
    [q(r), q(g), q(b)]
}

/// Colours a depth map with turbo on inverse depth, so near surfaces are red and far ones blue
/// (inverse depth spreads the near range, where indoor detail lives). Pixels outside `mask`, or
/// with depth <= 0, are black. `range` is (near, far) in metres; by default the valid min and max.
pub fn colorize_depth(
    depth: ArrayView2<f32>,
    mask: Option<ArrayView2<bool>>,
    range: Option<(f32, f32)>,
) -> RgbImage {
    let (h, w) = depth.dim();
    let valid = |y: usize, x: usize| {
        depth[[y, x]] > 0.0 && depth[[y, x]].is_finite() && mask.is_none_or(|m| m[[y, x]])
    };
    let (near, far) = range.unwrap_or_else(|| {
        let mut lo = f32::INFINITY;
        let mut hi = 0.0f32;
        for ((y, x), &d) in depth.indexed_iter() {
            if valid(y, x) {
                lo = lo.min(d);
                hi = hi.max(d);
            }
        }
        if lo.is_finite() { (lo, hi) } else { (1.0, 2.0) }
    });
    let (inv_near, inv_far) = (1.0 / near.max(1e-3), 1.0 / far.max(1e-3));
    let span = (inv_near - inv_far).max(1e-12);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        if valid(y, x) {
            Rgb(turbo((1.0 / depth[[y, x]] - inv_far) / span))
        } else {
            Rgb([0, 0, 0])
        }
    })
}

/// Hand-picked colours for the synthetic classes (see `render::classes`), indexed by class id.
const PALETTE: [[u8; 3]; crate::render::classes::COUNT] = [
    [150, 110, 70],  // 0 floor
    [190, 190, 160], // 1 wall
    [240, 240, 255], // 2 ceiling
    [230, 120, 30],  // 3 box
    [220, 40, 60],   // 4 sphere
    [60, 160, 220],  // 5 cylinder
    [120, 60, 130],  // 6 road
    [255, 255, 255], // 7 lane marking
    [244, 35, 232],  // 8 sidewalk
    [70, 70, 70],    // 9 building
    [0, 0, 142],     // 10 car
    [250, 170, 30],  // 11 pole
    [107, 142, 35],  // 12 vegetation
    [70, 130, 180],  // 13 sky
];

/// The fixed colour of class `class`: the ignore label is black, the synthetic classes have
/// hand-picked colours, and any other id gets the PASCAL VOC bit-interleaving colour of `id + 1`
/// (VOC's black id 0 is thereby left to the ignore label), so every 8-bit label map is readable.
pub fn label_color(class: u8) -> [u8; 3] {
    if class == IGNORE_LABEL {
        return [0, 0, 0];
    }
    if let Some(c) = PALETTE.get(class as usize) {
        return *c;
    }
    let mut rgb = [0u8; 3];
    let mut id = class + 1;
    for bit in 0..8 {
        for (ch, v) in rgb.iter_mut().enumerate() {
            *v |= ((id >> ch) & 1) << (7 - bit);
        }
        id >>= 3;
    }
    rgb
}

/// Colours a label map with [`label_color`].
pub fn colorize_labels(labels: ArrayView2<u8>) -> RgbImage {
    let (h, w) = labels.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        Rgb(label_color(labels[[y as usize, x as usize]]))
    })
}

/// Turns a normalised 3 x H x W RGB array back into a displayable image.
pub fn rgb_image(rgb: ArrayView3<f32>) -> RgbImage {
    let (_, h, w) = rgb.dim();
    RgbImage::from_raw(w as u32, h as u32, to_rgb8(rgb)).expect("buffer length is 3*h*w")
}

/// Tiles rows of images (left to right, top to bottom) with a `gap`-pixel dark separator; rows
/// may differ in length and images in size (each cell is as large as the largest image).
pub fn tile(rows: &[Vec<RgbImage>], gap: u32) -> RgbImage {
    let cell_w = rows.iter().flatten().map(|i| i.width()).max().unwrap_or(1);
    let cell_h = rows.iter().flatten().map(|i| i.height()).max().unwrap_or(1);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let n_rows = rows.len().max(1) as u32;
    let mut sheet = RgbImage::from_pixel(
        cols * cell_w + (cols + 1) * gap,
        n_rows * cell_h + (n_rows + 1) * gap,
        Rgb([32, 32, 32]),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let x0 = gap + c as u32 * (cell_w + gap);
            let y0 = gap + r as u32 * (cell_h + gap);
            image::imageops::replace(&mut sheet, img, x0 as i64, y0 as i64);
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn turbo_runs_from_dark_blue_to_dark_red() {
        let lo = turbo(0.1);
        let hi = turbo(1.0);
        assert!(lo[2] > 2 * lo[0], "low end is blue: {lo:?}");
        assert!(hi[0] > 2 * hi[2], "high end is red: {hi:?}");
        assert_eq!(turbo(-3.0), turbo(0.0));
    }

    #[test]
    fn invalid_depth_is_black_and_near_is_redder_than_far() {
        let depth = array![[1.0f32, 10.0, 0.0]];
        let img = colorize_depth(depth.view(), None, None);
        assert_eq!(img.get_pixel(2, 0).0, [0, 0, 0]);
        let near = img.get_pixel(0, 0).0;
        let far = img.get_pixel(1, 0).0;
        assert!(near[0] > far[0] && far[2] > near[2], "{near:?} vs {far:?}");
    }

    #[test]
    fn palette_gives_distinct_colours_to_all_256_classes() {
        let colours: std::collections::HashSet<_> = (0..=255u8).map(label_color).collect();
        assert_eq!(colours.len(), 256);
        assert_eq!(label_color(IGNORE_LABEL), [0, 0, 0]);
    }

    #[test]
    fn tile_places_cells_with_gaps() {
        let a = RgbImage::from_pixel(2, 2, Rgb([255, 0, 0]));
        let b = RgbImage::from_pixel(2, 2, Rgb([0, 255, 0]));
        let sheet = tile(&[vec![a, b]], 1);
        assert_eq!(sheet.dimensions(), (7, 4));
        assert_eq!(sheet.get_pixel(1, 1).0, [255, 0, 0]);
        assert_eq!(sheet.get_pixel(4, 1).0, [0, 255, 0]);
    }
}
