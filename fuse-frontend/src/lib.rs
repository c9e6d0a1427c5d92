//! Lamina's FUSE frontend: serves a [`drivers::MountSpec::Stack`] — read-only
//! [`drivers::LayerReader`]s plus an optional writable upper directory — as one
//! merged filesystem in userspace, with the semantics of the kernel's overlayfs.
//!
//! * [`FuseFrontend`] implements [`drivers::Frontend`]: by default it forks a
//!   daemon that mounts and serves the stack and returns once the mount answers;
//!   [`FuseOptions::foreground`] serves in the calling process instead.
//! * [`spawn_mount`] serves a stack from threads of the calling process and
//!   unmounts when the returned [`FuseMount`] is dropped (tests, embedding).
//! * [`unmount`] undoes a mount, detaching dead ones; [`supported`] tells whether
//!   this host can mount FUSE filesystems at all.
//!
//! The merged view follows overlayfs: a name comes from the topmost layer that
//! has it, whiteouts hide names below them, opaque directories hide everything
//! below them, and directories merge. Writes copy the object up into the upper
//! directory first (through a private work directory, so a half-copied file is
//! never visible), deletions of lower names leave whiteouts in the upper's
//! [`drivers::WhiteoutFormat`], and renaming a directory that merges lower
//! content copies its whole subtree up. File data of upper files, and of every
//! file of a read-only stack, goes through FUSE passthrough when the kernel
//! offers it; [`FuseMount::stats`] shows what reached the server.

#![warn(missing_docs)]

mod attr;
mod copy_up;
mod create;
mod daemon;
mod data;
mod dirs;
mod fs;
mod fusermount;
mod handles;
mod ids;
mod layers;
mod merged;
mod mount;
mod nodes;
mod options;
mod remove;
mod rename;
// Nothing starts the rings yet: the mount code will once dispatch lands.
#[allow(dead_code)]
mod ring;
mod stats;
mod sys;
mod upper;
mod xattrs;

pub use ids::{IdMap, IdMapError, OVERFLOW_ID};
pub use mount::{spawn_mount, supported, unmount, FuseFrontend, FuseMount};
pub use options::FuseOptions;
pub use stats::ServeStats;
