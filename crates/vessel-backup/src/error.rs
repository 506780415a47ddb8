//! Errors of the backup store.

use std::path::{Path, PathBuf};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stored data does not match what names or describes it: a chunk whose content does
    /// not hash to its name, an index whose checksum fails, sizes that disagree.
    #[error("damaged: {0}")]
    Corrupt(String),
    /// A request or a stored description that cannot be right (a hostile name, a path that
    /// leaves the restore target, ...).
    #[error("{0}")]
    Invalid(String),
    /// No such backup or store.
    #[error("{0}")]
    NotFound(String),
    /// Something else holds what this needs.
    #[error("{0}")]
    Busy(String),
}

/// Results of the backup store.
pub type Result<T> = std::result::Result<T, BackupError>;

/// A closure that turns an `io::Error` into a [`BackupError::Io`] about `path`.
pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}
