//! The [`Driver`] trait: one interface, one module per driver (like moby's graphdriver).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layer::LayerReader;
use crate::mount::{FrontendKind, MountSpec};

/// A driver-level layer id. Image layers use the hex of their chain ID, container
/// layers a random 64-hex id. Ids are plain file names: `[0-9a-z-]`, at most 128 bytes.
pub type LayerId = str;

/// What happened to one path of a layer relative to its parent, as `docker diff` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    /// Absolute path inside the root filesystem, e.g. `/etc/passwd`.
    pub path: String,
    /// Added, changed or deleted.
    pub kind: ChangeKind,
}

/// The kind of a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChangeKind {
    /// `C`: the path exists in both and differs (content, metadata, or a directory whose children changed).
    Modified,
    /// `A`: the path is new.
    Added,
    /// `D`: the path was removed.
    Deleted,
}

impl ChangeKind {
    /// The one-letter code `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path)
    }
}

/// What [`Driver::status`] reports: key/value lines and whether each frontend works here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverStatus {
    /// The driver's name, e.g. `vfs`.
    pub driver: String,
    /// Key/value facts (backing filesystem, reflink support, layer count, ...).
    pub facts: Vec<(String, String)>,
}

/// Statistics of one applied layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStats {
    /// Entries in the tar (including whiteouts).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// The graph-driver operations every storage driver implements.
///
/// Layers form chains through `parent`. Every operation that creates a layer
/// either completes or leaves nothing visible under `id` (work happens in a
/// staging directory that is renamed into place at the end).
pub trait Driver: Send + Sync {
    /// The driver's name as the CLI spells it (`vfs`, `overlay2`, `aufs`, `squashfs`).
    fn name(&self) -> &'static str;

    /// The driver's home directory, `<store root>/<name>`.
    fn home(&self) -> &Path;

    /// Facts about the driver on this host.
    fn status(&self) -> DriverStatus;

    /// Whether this driver can serve the given frontend on this host; `Err(reason)` when not.
    fn supports(&self, frontend: FrontendKind) -> std::result::Result<(), String>;

    /// Whether a layer with this id exists (completely).
    fn exists(&self, id: &LayerId) -> bool;

    /// All layer ids this driver holds (for garbage collection).
    fn layers(&self) -> Result<Vec<String>>;

    /// The parent of a layer as recorded at creation.
    fn parent(&self, id: &LayerId) -> Result<Option<String>>;

    /// Creates an empty read-only layer `id` on top of `parent`.
    fn create(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()>;

    /// Creates an empty read-write (container) layer `id` on top of `parent`.
    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()>;

    /// Removes a layer and everything the driver keeps for it. Removing a missing layer is not an error.
    fn remove(&self, id: &LayerId) -> Result<()>;

    /// Creates read-only layer `id` on top of `parent` from an (uncompressed) OCI layer tar.
    /// Atomic: on error nothing is left under `id`.
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<ApplyStats>;

    /// Writes the OCI layer tar that turns `parent` into `id` (whiteouts as `.wh.` entries).
    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<()>;

    /// Lists what changed between `parent` and `id`, sorted by path.
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>>;

    /// Bytes of regular-file content that `diff` would carry.
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64>;

    /// Describes how to mount layer `id` (with its parents) through `frontend`.
    /// Read-only mounts of a read-write layer are allowed.
    fn mount_spec(
        &self,
        id: &LayerId,
        frontend: FrontendKind,
        read_only: bool,
    ) -> Result<MountSpec>;

    /// A reader of the layer's own content (its diff, whiteouts visible), for
    /// `mount --layer N` and for the FUSE frontend's stacks.
    fn layer_reader(&self, id: &LayerId) -> Result<Box<dyn LayerReader>>;

    /// Removes leftovers of interrupted operations (staging directories, stale state).
    fn cleanup(&self) -> Result<()>;
}

/// Where a driver keeps its data under a store root.
pub fn driver_home(store_root: &Path, name: &str) -> PathBuf {
    store_root.join(name)
}

/// The layers a driver holds, sorted: the names in `dir` ending in `suffix`,
/// without it, for which `exists` holds.
pub(crate) fn layer_ids(
    dir: &Path,
    suffix: &str,
    exists: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    use crate::error::IoContext;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list layers", dir)? {
        let entry = entry.ctx("list layers", dir)?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
        {
            if exists(id) {
                out.push(id.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks that a layer id is a safe single path component.
pub fn validate_id(id: &LayerId) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(crate::error::DriverError::InvalidId(id.to_string()))
    }
}
