//! The error type of the layer store.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// Everything that can go wrong in the layer store; each variant names the problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "reading /x/manifest.json".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A JSON document could not be parsed or has the wrong shape.
    #[error("{context}: invalid JSON: {source}")]
    InvalidJson {
        /// Which document, e.g. "manifest.json".
        context: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A JSON metadata document is larger than the store accepts.
    #[error("{context}: {size} bytes is larger than the {limit} byte limit for metadata")]
    MetadataTooLarge {
        /// Which document.
        context: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A string is not a valid `sha256:<64 hex>` digest.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The offending text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },

    /// Content does not hash to the digest its descriptor or file name promises.
    #[error("{context}: digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch {
        /// Which blob.
        context: String,
        /// The digest named by the descriptor.
        expected: Digest,
        /// The digest of the content.
        actual: Digest,
    },

    /// Content does not have the size its descriptor promises.
    #[error(
        "{context}: size mismatch: descriptor says {expected} bytes, content is {actual} bytes"
    )]
    SizeMismatch {
        /// Which blob.
        context: String,
        /// The size named by the descriptor.
        expected: u64,
        /// The size of the content.
        actual: u64,
    },

    /// The uncompressed content of a layer does not match the image config's `rootfs.diff_ids`.
    #[error("{context}: diff_id mismatch: config says {expected}, content is {actual}")]
    DiffIdMismatch {
        /// Which layer, e.g. "layer 2 of manifest.json".
        context: String,
        /// The diff ID listed in the config.
        expected: Digest,
        /// The digest of the uncompressed content.
        actual: Digest,
    },

    /// A manifest and its config disagree on the number of layers.
    #[error("{context}: the manifest lists {manifest} layers but the config's rootfs.diff_ids lists {config}")]
    LayerCountMismatch {
        /// Which image.
        context: String,
        /// Layers in the manifest.
        manifest: usize,
        /// Diff IDs in the config.
        config: usize,
    },

    /// A media type the store does not know how to handle.
    #[error("{context}: unknown media type {media_type:?}")]
    UnknownMediaType {
        /// Where it was found.
        context: String,
        /// The media type.
        media_type: String,
    },

    /// A file or blob named by the input is not in it.
    #[error("{context}: missing {path:?} in {source_name}")]
    MissingFile {
        /// Who names the file.
        context: String,
        /// The path that is missing.
        path: String,
        /// The archive or directory searched.
        source_name: String,
    },

    /// The input names a file outside the archive (absolute path or `..`).
    #[error("{context}: {path:?} names a file outside the archive")]
    PathOutsideArchive {
        /// Who names the path.
        context: String,
        /// The offending path.
        path: String,
    },

    /// The input archive or a compressed layer is truncated or corrupt.
    #[error("{context}: corrupt or truncated data: {reason}")]
    Corrupt {
        /// Which file or layer.
        context: String,
        /// What is wrong.
        reason: String,
    },

    /// The input is none of the formats the store imports.
    #[error("{path}: not a docker-archive, OCI layout or layer tar: {reason}")]
    UnrecognizedFormat {
        /// The input path.
        path: PathBuf,
        /// Why it was not recognised.
        reason: String,
    },

    /// An index offers no manifest for this host's platform.
    #[error("{context}: no image for {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// Which index.
        context: String,
        /// The host platform, e.g. "linux/amd64".
        wanted: String,
        /// The platforms offered.
        available: String,
    },

    /// An import name was given but the input holds several unnamed images.
    #[error("a name was given but {path} holds {count} images; it can only name a single image")]
    NameNeedsSingleImage {
        /// The input path.
        path: PathBuf,
        /// How many images it holds.
        count: usize,
    },

    /// A reference (`name[:tag]`) is malformed.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The offending text.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },

    /// No image matches a reference or ID.
    #[error("no such image: {reference}")]
    ImageNotFound {
        /// What was looked up.
        reference: String,
    },

    /// An ID prefix matches several images.
    #[error("image ID prefix {prefix:?} is ambiguous: it matches {matches} images")]
    AmbiguousImage {
        /// The prefix.
        prefix: String,
        /// How many images it matches.
        matches: usize,
    },

    /// An image cannot be removed because a container uses it.
    #[error("image {image} is in use by container {container:?}")]
    ImageInUse {
        /// The image.
        image: Digest,
        /// The container using it.
        container: String,
    },

    /// A layer record is missing from the store.
    #[error("layer {chain_id} is not in the store")]
    LayerNotFound {
        /// Its chain ID.
        chain_id: Digest,
    },

    /// A blob is missing from the store.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// Its digest.
        digest: Digest,
    },

    /// A container name does not match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    #[error("invalid container name {name:?}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be at most 128 characters")]
    InvalidContainerName {
        /// The offending name.
        name: String,
    },

    /// A container with this name already exists.
    #[error("a container named {name:?} already exists")]
    ContainerExists {
        /// The name.
        name: String,
    },

    /// No container matches a name or ID.
    #[error("no such container: {name}")]
    ContainerNotFound {
        /// What was looked up.
        name: String,
    },

    /// A container ID prefix matches several containers.
    #[error("container ID prefix {prefix:?} is ambiguous: it matches {matches} containers")]
    AmbiguousContainer {
        /// The prefix.
        prefix: String,
        /// How many containers it matches.
        matches: usize,
    },

    /// Store metadata on disk is inconsistent.
    #[error("store metadata {path}: {reason}")]
    CorruptStore {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The result type of the layer store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a context string to I/O errors.
pub(crate) trait IoContext<T> {
    /// Wraps an `io::Error` into [`StoreError::Io`] with the context built by `context`.
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            context: context().into(),
            source,
        })
    }
}
