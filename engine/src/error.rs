//! Typed errors for everything that touches the outside world: files, the environment, devices.
//!
//! Misuse of the tensor API (mismatched shapes, bad axes) panics at the call site instead, the way
//! PyTorch raises: those are programming errors, and `#[track_caller]` points at the caller's line.

use std::path::PathBuf;

/// The engine's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its contents are not what its format promises.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// No usable compute device (no adapter, or the one asked for is missing).
    #[error("device: {0}")]
    Device(String),
    /// A request exceeded a limit of the device (for example a buffer larger than it allows).
    #[error("device limit: {0}")]
    Limit(String),
    /// A setting from the environment or the command line is not valid.
    #[error("invalid setting {name}={value:?}: {reason}")]
    Setting {
        name: String,
        value: String,
        reason: String,
    },
}

impl Error {
    /// A format error for `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
