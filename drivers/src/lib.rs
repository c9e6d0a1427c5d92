//! Lamina's storage drivers.
//!
//! Every driver implements [`Driver`]: the graph-driver operations (create, remove,
//! apply a layer diff, produce a diff, list changes, ...). A driver never mounts
//! anything itself: it *describes* a mount as a [`MountSpec`] and a [`Frontend`]
//! performs it (the kernel frontend in [`kernel`], the FUSE frontend in the
//! `fuse-frontend` crate). [`mount_table::MountTable`] adds reference-counted get/put on top.
//!
//! Layers are read by the FUSE frontend through [`LayerReader`], which presents
//! each driver's native whiteout format uniformly.

pub mod apply;
pub mod aufs;
pub mod changes;
pub mod copy;
pub mod dircache;
pub mod dirlayer;
pub mod driver;
pub mod error;
pub mod export;
pub mod fsutil;
pub mod kernel;
pub mod layer;
mod merged_diff;
pub mod mount;
pub mod mount_table;
pub mod overlay2;
pub mod ownership;
pub mod squashfs;
pub mod tar_reader;
pub mod vfs;
pub mod whiteouts;
pub mod xattr;

pub use driver::{Change, ChangeKind, Driver, DriverStatus, LayerId};
pub use error::{DriverError, Result};
pub use layer::{Entry, FileKind, LayerReader};
pub use mount::{Frontend, FrontendKind, MountSpec, WhiteoutFormat};
pub use squashfs::SquashfsDriver;
pub use vfs::VfsDriver;
