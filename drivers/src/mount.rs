//! Mount descriptions and frontends.
//!
//! A driver describes a mount ([`MountSpec`]); a [`Frontend`] performs it. The
//! kernel frontend handles [`MountSpec::Overlay`] and [`MountSpec::Bind`]; the
//! FUSE frontend handles [`MountSpec::Stack`] (and can serve any driver).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layer::LayerReader;
use crate::ownership::Ownership;

/// Which frontend serves a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontendKind {
    /// The kernel mounts it (overlay, bind, aufs, squashfs loop devices).
    Kernel,
    /// Lamina's FUSE daemon serves a merged view in userspace.
    Fuse,
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrontendKind::Kernel => "kernel",
            FrontendKind::Fuse => "fuse",
        })
    }
}

impl std::str::FromStr for FrontendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kernel" => Ok(FrontendKind::Kernel),
            "fuse" => Ok(FrontendKind::Fuse),
            other => Err(format!("unknown frontend {other:?} (kernel or fuse)")),
        }
    }
}

/// The whiteout format of a writable upper directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WhiteoutFormat {
    /// Overlay: char device 0/0 whiteouts, `trusted.overlay.opaque=y` (or `user.overlay.*` when `userxattr`).
    Overlay {
        /// Use `user.overlay.*` xattrs (unprivileged).
        userxattr: bool,
    },
    /// AUFS/OCI: `.wh.NAME` files and `.wh..wh..opq`.
    Aufs,
    /// No whiteouts: the upper is a complete copy (vfs).
    None,
}

/// How to mount a layer chain.
pub enum MountSpec {
    /// A bind mount of one directory (vfs).
    Bind {
        /// The directory to bind.
        source: PathBuf,
        /// Mount read-only.
        read_only: bool,
    },
    /// A kernel overlay mount.
    Overlay {
        /// Squashfs images to mount read-only first, each at its directory (which
        /// `lowers` then names): `(image, mount directory)`. A directory that
        /// already holds a squashfs mount is reused. Empty for directory layers.
        images: Vec<(PathBuf, PathBuf)>,
        /// Lower directories, top first.
        lowers: Vec<PathBuf>,
        /// Upper and work directories for read-write mounts.
        upper: Option<(PathBuf, PathBuf)>,
        /// Extra mount options (`index=on`, `userxattr`, ...).
        options: Vec<String>,
        /// Mount read-only even with an upper (a read-only view of a container
        /// that still follows its upper's index).
        read_only: bool,
    },
    /// A kernel aufs mount (only where the kernel has aufs).
    Aufs {
        /// Branches, top first, each with whether it is writable.
        branches: Vec<(PathBuf, bool)>,
    },
    /// A stack of layers for the FUSE frontend.
    Stack {
        /// Read-only layers, top first.
        lowers: Vec<Arc<dyn LayerReader>>,
        /// The writable upper directory and its work directory, for read-write mounts.
        upper: Option<(PathBuf, PathBuf)>,
        /// How whiteouts are written into the upper.
        whiteouts: WhiteoutFormat,
        /// How the upper keeps owners, modes and device nodes.
        ownership: Ownership,
    },
}

impl fmt::Debug for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountSpec::Bind { source, read_only } => f
                .debug_struct("Bind")
                .field("source", source)
                .field("read_only", read_only)
                .finish(),
            MountSpec::Overlay {
                images,
                lowers,
                upper,
                options,
                read_only,
            } => f
                .debug_struct("Overlay")
                .field("images", images)
                .field("lowers", lowers)
                .field("upper", upper)
                .field("options", options)
                .field("read_only", read_only)
                .finish(),
            MountSpec::Aufs { branches } => {
                f.debug_struct("Aufs").field("branches", branches).finish()
            }
            MountSpec::Stack {
                lowers,
                upper,
                whiteouts,
                ownership,
            } => f
                .debug_struct("Stack")
                .field("lowers", &lowers.len())
                .field("upper", upper)
                .field("whiteouts", whiteouts)
                .field("ownership", ownership)
                .finish(),
        }
    }
}

/// Performs mounts described by drivers.
pub trait Frontend: Send + Sync {
    /// Which frontend this is.
    fn kind(&self) -> FrontendKind;
    /// Mounts `spec` at `target` (an existing directory). Returns once the mount
    /// answers, with the pid of the process serving it when that is a daemon (FUSE).
    fn mount(&self, spec: MountSpec, target: &Path) -> Result<Option<u32>>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// What sets this frontend's mounts of a layer apart from another
    /// configuration's (FUSE: presented ids, flushing, transport); empty when
    /// nothing does. Only mounts presenting alike share one mount.
    fn presentation(&self) -> String {
        String::new()
    }
}

/// Mounts a read-only [`MountSpec::Stack`] for as long as the returned guard
/// lives. Drivers whose layers the kernel cannot stack (aufs on kernels without
/// aufs) compute diffs on such views; the CLI hands them one backed by the FUSE
/// frontend, serving from threads of the calling process.
pub trait StackViewer: Send + Sync + fmt::Debug {
    /// Mounts `spec` read-only on `target`; dropping the guard unmounts it.
    fn view(&self, spec: MountSpec, target: &Path) -> Result<Box<dyn std::any::Any>>;
}
