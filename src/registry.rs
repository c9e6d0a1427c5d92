//! Which drivers and frontends exist, which work on this host, and the default choice.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use drivers::aufs::AufsDriver;
use drivers::kernel::KernelFrontend;
use drivers::mount::StackViewer;
use drivers::overlay2::Overlay2Driver;
use drivers::squashfs::SquashfsDriver;
use drivers::vfs::VfsDriver;
use drivers::{Driver, Frontend, FrontendKind};
use fuse_frontend::{FuseFrontend, FuseOptions, IdMap};
use serde::Serialize;
use std::sync::Arc;

/// Every driver Lamina knows, in order of preference.
pub const DRIVER_NAMES: &[&str] = &["overlay2", "aufs", "vfs", "squashfs"];

/// Opens driver `name` over the store at `root`.
pub fn open_driver(name: &str, root: &Path) -> Result<Box<dyn Driver>> {
    match name {
        "vfs" => Ok(Box::new(VfsDriver::new(root)?.with_viewer(viewer()))),
        "overlay2" => Ok(Box::new(Overlay2Driver::new(root)?.with_viewer(viewer()))),
        "squashfs" => Ok(Box::new(SquashfsDriver::new(root)?.with_viewer(viewer()))),
        "aufs" => Ok(Box::new(AufsDriver::new(root, Some(viewer()))?)),
        other => bail!(
            "unknown driver {other:?} (known: {})",
            DRIVER_NAMES.join(", ")
        ),
    }
}

/// The viewer every driver gets for the diffs it cannot compute on kernel mounts.
fn viewer() -> Arc<dyn StackViewer> {
    Arc::new(FuseStackViewer)
}

/// Read-only merged views for diffs, served by the FUSE frontend from threads of
/// this process (drivers whose layers the kernel cannot stack use them).
#[derive(Debug)]
struct FuseStackViewer;

impl StackViewer for FuseStackViewer {
    fn view(
        &self,
        spec: drivers::MountSpec,
        target: &Path,
    ) -> drivers::Result<Box<dyn std::any::Any>> {
        // A private view (inside the store, for this user only) that a diff
        // must read whole, whatever the modes of the files in it.
        let options = FuseOptions {
            allow_other: false,
            check_permissions: false,
            ..FuseOptions::default()
        };
        Ok(Box::new(fuse_frontend::spawn_mount(
            spec, target, &options,
        )?))
    }
}

/// How a FUSE mount presents owners (`--uidmap`, `--gidmap`), whether the
/// kernel checks permissions on it, and whether it flushes to stable storage.
#[derive(Debug, Clone)]
pub struct FuseMountOptions {
    /// Stored → presented uids.
    pub uids: IdMap,
    /// Stored → presented gids.
    pub gids: IdMap,
    /// `default_permissions` (off only for private views this process reads whole).
    pub check_permissions: bool,
    /// `--volatile`: no flushes to stable storage (overlayfs's `volatile`).
    pub volatile: bool,
    /// Requests through FUSE over io_uring where the kernel offers it
    /// (`--no-io-uring` turns it off).
    pub io_uring: bool,
}

impl Default for FuseMountOptions {
    fn default() -> Self {
        FuseMountOptions {
            uids: Default::default(),
            gids: Default::default(),
            check_permissions: true,
            volatile: false,
            io_uring: true,
        }
    }
}

impl FuseMountOptions {
    /// Whether ids are presented as stored.
    pub fn is_identity(&self) -> bool {
        self.uids.is_identity() && self.gids.is_identity()
    }

    /// The mapping of a rootless container's user namespace: its root (0) is
    /// this process's user and group.
    pub fn root_to_caller() -> FuseMountOptions {
        FuseMountOptions {
            uids: IdMap::single(0, nix::unistd::geteuid().as_raw(), 1),
            gids: IdMap::single(0, nix::unistd::getegid().as_raw(), 1),
            ..FuseMountOptions::default()
        }
    }
}

/// How a frontend is to serve the mounts it makes.
#[derive(Debug, Clone, Default)]
pub struct FrontendOptions {
    /// Serve in this process until unmounted (FUSE, for debugging).
    pub foreground: bool,
    /// Where a FUSE daemon writes its log.
    pub log: Option<PathBuf>,
    /// How FUSE mounts present owners, check permissions and flush.
    pub fuse: FuseMountOptions,
}

/// The frontend of the given kind.
pub fn open_frontend(kind: FrontendKind, options: &FrontendOptions) -> Result<Box<dyn Frontend>> {
    match kind {
        FrontendKind::Kernel => Ok(Box::new(KernelFrontend)),
        FrontendKind::Fuse => {
            if let Err(why) = fuse_frontend::supported() {
                bail!("the FUSE frontend cannot work here: {why}");
            }
            Ok(Box::new(FuseFrontend::new(FuseOptions {
                foreground: options.foreground,
                log: options.log.clone(),
                uid_map: options.fuse.uids.clone(),
                gid_map: options.fuse.gids.clone(),
                check_permissions: options.fuse.check_permissions,
                volatile: options.fuse.volatile,
                io_uring: options.fuse.io_uring,
                ..FuseOptions::default()
            })))
        }
    }
}

/// The frontend that undoes a mount of the given kind (for `MountTable::put`).
pub fn frontend_for_unmount(kind: FrontendKind) -> drivers::Result<Box<dyn Frontend>> {
    open_frontend(kind, &FrontendOptions::default())
        .map_err(|e| drivers::DriverError::Other(e.to_string()))
}

/// One row of `lamina drivers`.
#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    /// Driver name.
    pub driver: String,
    /// Frontend.
    pub frontend: FrontendKind,
    /// Whether it works here.
    pub available: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
}

/// Every driver × frontend and whether it works here.
pub fn availability(root: &Path) -> Vec<Availability> {
    let mut rows = Vec::new();
    for name in DRIVER_NAMES {
        let driver = open_driver(name, root);
        for frontend in [FrontendKind::Kernel, FrontendKind::Fuse] {
            let verdict = match &driver {
                Err(e) => Err(e.to_string()),
                Ok(d) => d.supports(frontend).and_then(|()| {
                    open_frontend(frontend, &FrontendOptions::default())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
            };
            rows.push(Availability {
                driver: name.to_string(),
                frontend,
                available: verdict.is_ok(),
                reason: verdict.err(),
            });
        }
    }
    rows
}

/// The default driver and frontend here: overlay2 through the kernel where it has
/// overlayfs (and `LAMINA_HIDE_KERNEL_OVERLAY` does not hide it), overlay2 through
/// FUSE where it has not but FUSE works, else vfs.
pub fn default_choice(root: &Path) -> (String, FrontendKind) {
    let rows = availability(root);
    let works = |d: &str, f: FrontendKind| {
        rows.iter()
            .any(|r| r.driver == d && r.frontend == f && r.available)
    };
    if works("overlay2", FrontendKind::Kernel) {
        return ("overlay2".into(), FrontendKind::Kernel);
    }
    if works("overlay2", FrontendKind::Fuse) {
        return ("overlay2".into(), FrontendKind::Fuse);
    }
    if works("vfs", FrontendKind::Kernel) {
        return ("vfs".into(), FrontendKind::Kernel);
    }
    ("vfs".into(), FrontendKind::Fuse)
}
