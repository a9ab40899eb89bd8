//! Split lists in the format of the common NYU-v2 "sync" and KITTI Eigen lists (BTS, AdaBins,
//! Depth-Anything): one sample per line, `rgb_path depth_path [focal] [labels_path]`, paths relative
//! to a root, a leading `/` ignored, `None` for a missing ground truth, `#` starting a comment.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// One line of a split list.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitEntry {
    /// RGB image, relative to the RGB root.
    pub rgb: PathBuf,
    /// Depth PNG relative to the depth root; `None` where the list says `None`.
    pub depth: Option<PathBuf>,
    /// Focal length in pixels when the list gives one.
    pub focal: Option<f32>,
    /// Label PNG, relative to the depth root (our extension of the format).
    pub labels: Option<PathBuf>,
}

fn relative(p: &str) -> PathBuf {
    PathBuf::from(p.trim_start_matches('/'))
}

/// Parses a split list; a line with fewer than two fields or an unparsable focal is an error
/// naming the file and line.
pub fn parse_split(path: &Path, text: &str) -> Result<Vec<SplitEntry>> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let err = |message: String| DataError::Split {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        if fields.len() < 2 || fields.len() > 4 {
            return Err(err(format!(
                "expected `rgb depth [focal] [labels]`, found {} fields",
                fields.len()
            )));
        }
        let depth = (fields[1] != "None").then(|| relative(fields[1]));
        let (focal, labels) = match fields.get(2) {
            None => (None, None),
            Some(f) => match f.parse::<f32>() {
                Ok(v) if v.is_finite() && v > 0.0 => (Some(v), fields.get(3).map(|l| relative(l))),
                Ok(v) => return Err(err(format!("focal length {v} is not positive"))),
                Err(_) if fields.len() == 3 => (None, Some(relative(f))),
                Err(_) => return Err(err(format!("focal length {f:?} is not a number"))),
            },
        };
        entries.push(SplitEntry {
            rgb: relative(fields[0]),
            depth,
            focal,
            labels,
        });
    }
    Ok(entries)
}

/// Reads and parses a split list file.
pub fn read_split(path: &Path) -> Result<Vec<SplitEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    parse_split(path, &text)
}

/// Formats entries as a split list that [`parse_split`] reads back.
pub fn format_split(entries: &[SplitEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let depth = e
            .depth
            .as_ref()
            .map_or("None".to_string(), |d| d.display().to_string());
        out.push_str(&format!("{} {depth}", e.rgb.display()));
        if let Some(f) = e.focal {
            out.push_str(&format!(" {f:.4}"));
        }
        if let Some(l) = &e.labels {
            out.push_str(&format!(" {}", l.display()));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nyu_and_kitti_eigen_lines() {
        let text = "/kitchen_0028a/rgb_00045.jpg /kitchen_0028a/sync_depth_00045.png 518.8579\n\
                    # comment\n\
                    2011_09_26/a/image_02/data/0000000069.png None 721.5377\n\
                    rgb/0.png depth/0.png 100.0 label/0.png\n";
        let e = parse_split(Path::new("list.txt"), text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].rgb, PathBuf::from("kitchen_0028a/rgb_00045.jpg"));
        assert_eq!(e[0].focal, Some(518.8579));
        assert_eq!(e[1].depth, None);
        assert_eq!(e[2].labels, Some(PathBuf::from("label/0.png")));
        assert_eq!(parse_split(Path::new("x"), &format_split(&e)).unwrap(), e);
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let err = parse_split(Path::new("eigen_test.txt"), "a.png\n").unwrap_err();
        assert!(err.to_string().contains("eigen_test.txt, line 1"), "{err}");
        assert!(parse_split(Path::new("x"), "a b nan c\n").is_err());
    }
}
