//! `lamina fuse-overlay` and the `lamina-fuse-overlay` executable: mounts plain
//! overlay-format directories through the FUSE frontend, as fuse-overlayfs does.

use std::ffi::OsString;
use std::sync::Arc;

use anyhow::{Context, Result};
use drivers::dirlayer::DirLayer;
use drivers::ownership::Ownership;
use drivers::{Frontend, LayerReader, MountSpec, WhiteoutFormat};
use fuse_frontend::{FuseFrontend, FuseOptions};

use crate::fuse_overlay::FuseOverlayArgs;

pub fn run(args: &[OsString]) -> Result<()> {
    let args = FuseOverlayArgs::parse(args)?;
    for ignored in &args.ignored {
        tracing::info!(option = %ignored, "ignoring a fuse-overlayfs option that changes nothing here");
    }
    if let Err(why) = fuse_frontend::supported() {
        anyhow::bail!("the FUSE frontend cannot work here: {why}");
    }
    // Root writes overlay's trusted.* form; an unprivileged user the user.* form.
    // SAFETY: geteuid has no preconditions.
    let format = WhiteoutFormat::Overlay {
        userxattr: unsafe { libc::geteuid() } != 0,
    };
    let ownership = if args.xattr_permissions {
        Ownership::Xattr
    } else {
        Ownership::Native
    };
    let lowers = args
        .lowers
        .iter()
        .map(|dir| {
            DirLayer::open_as(dir, format, ownership)
                .map(|l| Arc::new(l) as Arc<dyn LayerReader>)
                .with_context(|| format!("lower directory {}", dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let upper = match (&args.upper, &args.work, args.read_only) {
        (Some(u), Some(w), false) => Some((u.clone(), w.clone())),
        _ => None,
    };
    let spec = MountSpec::Stack {
        lowers,
        upper,
        whiteouts: format,
        ownership,
    };
    let frontend = FuseFrontend::new(FuseOptions {
        foreground: args.foreground,
        volatile: args.volatile,
        uid_map: args.uid_map.clone(),
        gid_map: args.gid_map.clone(),
        ..FuseOptions::default()
    });
    frontend
        .mount(spec, &args.mountpoint)
        .with_context(|| format!("mounting {}", args.mountpoint.display()))?;
    Ok(())
}
