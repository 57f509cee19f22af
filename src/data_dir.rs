//! The data dir is private: it holds the audit trail (`journal.redb`) and possibly the hook
//! secret, so it is created `0700` and its files `0600`.
//!
//! An existing data dir that others may read is tightened to `0700` at start, with a warning
//! (the directory is ours; a world-readable audit trail is never intended). A path that exists
//! but is not a directory is refused.

use std::io;
use std::path::Path;

/// Mode of the data dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file okta-stream writes in it.
pub const FILE_MODE: u32 = 0o600;

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The path exists and is a file (or another non-directory).
    #[error("{0} exists and is not a directory")]
    NotADirectory(String),
    /// Creating it or changing its mode failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Makes `dir` a private directory: created `0700` (with missing parents) when missing,
/// tightened to `0700` when group or others have access.
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let io_error = |source| DataDirError::Io {
        path: dir.display().to_string(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(DataDirError::NotADirectory(dir.display().to_string())),
        Ok(meta) => tighten(dir, &meta).map_err(io_error),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(dir).map_err(io_error),
        Err(e) => Err(io_error(e)),
    }
}

/// Creates `dir` (and missing parents) with mode `0700`; an existing one is left as it is.
pub fn create(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// Sets a file okta-stream wrote to mode `0600`.
pub fn restrict_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(unix)]
fn tighten(dir: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
        tracing::warn!(
            dir = %dir.display(),
            was = format!("{mode:o}"),
            "the data dir was readable by others; its mode is now 700"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_dir: &Path, _meta: &std::fs::Metadata) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_an_open_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            prepare(&file),
            Err(DataDirError::NotADirectory(_))
        ));
    }
}
