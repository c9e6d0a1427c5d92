//! The errors of a benchmark run.

use std::io;
use std::path::PathBuf;

/// Why a benchmark run (or one of its samples) failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A workload name that is not one of [`crate::WORKLOAD_NAMES`].
    #[error("unknown workload {name:?} (known: {known})")]
    UnknownWorkload {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A driver or peer name that neither `lamina drivers` nor the peers know.
    #[error("unknown driver or peer {name:?} (known: {known})")]
    UnknownDriver {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A frontend name other than `kernel` or `fuse`.
    #[error("unknown frontend {0:?} (kernel or fuse)")]
    UnknownFrontend(String),
    /// The `lamina` binary could not be run or reported an error.
    #[error("`lamina {command}` failed: {reason}")]
    Lamina {
        /// The arguments after `--root DIR`.
        command: String,
        /// Its error output, or why it could not start.
        reason: String,
    },
    /// A file operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A peer filesystem could not be mounted or unmounted.
    #[error("{0}")]
    Mount(String),
    /// Writing a benchmark image failed.
    #[error("writing benchmark image {image}: {source}")]
    Image {
        /// The image's name.
        image: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An operation on a mounted view did not do what it should have (a file
    /// read short, entries missing): the view is wrong, so its time means nothing.
    #[error("wrong result on the mounted view: {0}")]
    WrongView(String),
    /// A squashfs image builder failed.
    #[error("building a squashfs image with {builder}: {reason}")]
    Build {
        /// The builder (`lamina`, `tar2sqfs`, `mksquashfs`).
        builder: String,
        /// What went wrong.
        reason: String,
    },
    /// A sample needs data the run did not prepare (an internal error).
    #[error("{0} was not prepared")]
    Unprepared(String),
    /// An option value that cannot be used.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Nothing is left to measure after filtering.
    #[error("nothing to measure: {0}")]
    NoTargets(String),
    /// A report could not be read or written as JSON.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Attaches what was being done, and on which path, to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`BenchError::Io`].
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T, BenchError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Io {
            context,
            path: path.into(),
            source,
        })
    }
}
