//! The init layer between an image and a container's writable layer, as
//! Docker's `-init` layer: it holds the mountpoints a runtime mounts over
//! (`/proc`, `/sys`, `/dev`) when the image lacks them, so that running the
//! container never makes them show up in `lamina diff` or in a commit.

use std::path::Path;

use anyhow::{Context, Result};
use drivers::mount_table::MountRequest;
use drivers::{Driver, FrontendKind};

use crate::app::App;

/// The directories a runtime needs to mount on, relative to the root.
pub const INIT_DIRS: &[&str] = &["dev", "proc", "sys"];

/// The driver-level id of a container's init layer.
pub fn init_id(container_id: &str) -> String {
    format!("{container_id}-init")
}

/// Which of [`INIT_DIRS`] the merged view at `root` lacks.
fn missing_dirs(root: &Path) -> Vec<&'static str> {
    INIT_DIRS
        .iter()
        .copied()
        .filter(|d| std::fs::symlink_metadata(root.join(d)).is_err())
        .collect()
}

/// A layer tar holding `dirs` as root-owned 0755 directories.
fn init_tar(dirs: &[&str]) -> Result<Vec<u8>> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut b = tar::Builder::new(Vec::new());
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(mtime);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .context("writing the init layer")?;
    }
    Ok(b.into_inner()?)
}

/// Which mountpoints image layer `top` lacks: mounts it read-only to look.
/// Call it without holding the driver lock (a FUSE daemon forked meanwhile
/// would inherit that lock).
pub fn missing(
    app: &App,
    driver: &dyn Driver,
    frontend: FrontendKind,
    top: &str,
) -> Result<Vec<&'static str>> {
    let view = tempfile::Builder::new()
        .prefix("lamina-init-")
        .tempdir()
        .context("creating a temporary mountpoint")?;
    let frontend_impl = app.frontend(frontend, false)?;
    let request = MountRequest {
        layer: top,
        label: "init layer check",
        read_only: true,
        target: view.path(),
    };
    let record = app.mounts.get(driver, frontend_impl.as_ref(), &request)?;
    let missing = missing_dirs(&record.mountpoint);
    app.mounts
        .put(&record.mountpoint, &crate::registry::frontend_for_unmount)
        .context("unmounting the init layer check")?;
    Ok(missing)
}

/// Creates init layer `id` on top of image layer `top` holding `missing`.
pub fn create(driver: &dyn Driver, top: &str, id: &str, missing: &[&str]) -> Result<()> {
    let tar = init_tar(missing)?;
    driver
        .apply_diff(id, Some(top), &mut &tar[..])
        .with_context(|| format!("creating init layer {id}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_holds_just_the_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        let missing = missing_dirs(dir.path());
        assert_eq!(missing, ["dev", "sys"]);
        let tar = init_tar(&missing).unwrap();
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["dev/", "sys/"]);
    }
}
