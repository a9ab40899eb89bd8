//! Files the trainer writes: one error type that names the file and the action, and the atomic
//! write (temp file, fsync, rename) every checkpoint, record, log rewrite and table goes through,
//! so an interruption never leaves a half-written file in place of a good one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A failed file operation, naming the file: `cannot write runs/x/last.json: No space left`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {message}")]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    /// An error for `action` on `path` with any message (e.g. from libtorch).
    pub fn new(action: &'static str, path: &Path, message: impl ToString) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// For `map_err`: turns an I/O error of `action` on `path` into a [`FileError`].
pub fn file_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |e| FileError {
        action,
        path,
        message: e.to_string(),
    }
}

/// `<path>.tmp`, beside the file it will replace (so the rename stays on one filesystem).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = tmp_path(path);
    {
        let mut file = File::create(&tmp).map_err(file_error("create", &tmp))?;
        file.write_all(bytes).map_err(file_error("write", &tmp))?;
        file.sync_all().map_err(file_error("fsync", &tmp))?;
    }
    rename_durable(&tmp, path)
}

/// Renames `from` over `path` and fsyncs the folder, so the rename survives a power cut.
pub fn rename_durable(from: &Path, path: &Path) -> Result<(), FileError> {
    std::fs::rename(from, path).map_err(file_error("rename into", path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        // Persisting the rename; some filesystems refuse fsync on folders, which is harmless.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let path = Path::new("/nonexistent-folder/x.json");
        let err = write_atomic(path, b"x").unwrap_err().to_string();
        assert!(err.contains("/nonexistent-folder/x.json.tmp"), "{err}");
    }
}
