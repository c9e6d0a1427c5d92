//! Errors of the driver layer.

use std::path::PathBuf;

/// Errors a driver, the applier or a frontend can return.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// An I/O error with the path it happened on.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A layer tar that cannot be applied (corrupt, escaping the root, unsupported entry).
    #[error("bad layer tar: {0}")]
    BadLayer(String),
    /// The layer id is not a safe name.
    #[error("invalid layer id {0:?}")]
    InvalidId(String),
    /// No layer with this id.
    #[error("layer {0} does not exist")]
    NoSuchLayer(String),
    /// A layer with this id exists already.
    #[error("layer {0} exists already")]
    LayerExists(String),
    /// The driver or frontend cannot work on this host.
    #[error("{0}")]
    Unsupported(String),
    /// A mount failed or is in a bad state.
    #[error("mount {target}: {reason}")]
    Mount {
        /// The mountpoint.
        target: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A layer's stored data is damaged (e.g. a truncated or corrupt squashfs image).
    #[error("layer {id} is corrupt: {reason}")]
    CorruptLayer {
        /// The layer.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

/// Result type of the driver layer.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// Attaches an operation and a path to an I/O error.
pub trait IoContext<T> {
    /// Wraps the error as [`DriverError::Io`].
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| DriverError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| DriverError::Io {
            op,
            path: path.into(),
            source: std::io::Error::from(e),
        })
    }
}
