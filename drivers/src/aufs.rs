//! The `aufs` driver: one directory per layer in AUFS's own format, the one OCI
//! layer tars use — deletions are `.wh.NAME` files, opaque directories hold
//! `.wh..wh..opq` — so applying a layer converts nothing.
//!
//! Layout under `<store root>/aufs/`, in the spirit of Docker's aufs driver:
//! - `diff/<id>/`: the layer's own files, whiteouts as `.wh.` files;
//! - `layers/<id>`: the layer's ancestors, nearest first, one id per line;
//! - `work/<id>/`: the FUSE frontend's work directory of a container layer;
//! - `staging/<id>.<pid>.<random>`: layers being built, renamed into place.
//!
//! The union is served by the FUSE frontend (the layer trait reads AUFS
//! whiteouts, the upper is written in AUFS form). Where `/proc/filesystems`
//! lists `aufs` the kernel frontend mounts it with `mount -t aufs -o br=...`;
//! elsewhere the kernel row says so and suggests `--frontend fuse`. AUFS
//! housekeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`, `.wh..wh.orph`) are never
//! shown and never leave in a diff. Diffs compare the merged views of the
//! parent and of the container (served read-only by a [`StackViewer`]) exactly
//! as overlay2 does, so both drivers write identical tars for the same changes.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;

use crate::apply::{apply_layer_as, WhiteoutMode};
use crate::dirlayer::DirLayer;
use crate::driver::{
    driver_home, layer_ids, validate_id, ApplyStats, Change, Driver, DriverStatus, LayerId,
};
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil;
use crate::kernel::kernel_has_filesystem;
use crate::layer::{LayerReader, OCI_OPAQUE};
use crate::merged_diff::{self, MergedDiff};
use crate::mount::{FrontendKind, MountSpec, StackViewer, WhiteoutFormat};
use crate::ownership::Ownership;

const NAME: &str = "aufs";

/// The aufs driver.
pub struct AufsDriver {
    home: PathBuf,
    viewer: Option<Arc<dyn StackViewer>>,
    ownership: Ownership,
}

impl std::fmt::Debug for AufsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AufsDriver")
            .field("home", &self.home)
            .finish()
    }
}

impl AufsDriver {
    /// Opens (and creates) the driver's home under `store_root`. `viewer` serves
    /// the read-only merged views diffs are computed on; without one, `diff`,
    /// `changes` and `diff_size` report that they cannot work.
    pub fn new(store_root: &Path, viewer: Option<Arc<dyn StackViewer>>) -> Result<Self> {
        let home = driver_home(store_root, NAME);
        for sub in ["diff", "layers", "work", "staging", "views"] {
            let p = home.join(sub);
            fs::create_dir_all(&p).ctx("create driver directory", &p)?;
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).ctx("chmod", &home)?;
        let ownership = Ownership::for_store(store_root).ctx("open store", store_root)?;
        Ok(AufsDriver {
            home,
            viewer,
            ownership,
        })
    }

    /// The directory holding layer `id`'s own files.
    pub fn diff_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("diff").join(id)
    }

    fn chain_file(&self, id: &LayerId) -> PathBuf {
        self.home.join("layers").join(id)
    }

    fn work_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("work").join(id)
    }

    fn checked(&self, id: &LayerId) -> Result<()> {
        validate_id(id)?;
        if self.exists(id) {
            Ok(())
        } else {
            Err(DriverError::NoSuchLayer(id.to_string()))
        }
    }

    /// The ancestors of `id`, nearest first.
    fn ancestors(&self, id: &LayerId) -> Result<Vec<String>> {
        let p = self.chain_file(id);
        let text = fs::read_to_string(&p).ctx("read layer chain", &p)?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Readers of branches `ids` (top first) for the FUSE frontend.
    fn readers(&self, ids: &[String]) -> Result<Vec<Arc<dyn LayerReader>>> {
        ids.iter()
            .map(|id| {
                let dir = self.diff_dir(id);
                DirLayer::open_as(&dir, WhiteoutFormat::Aufs, self.ownership)
                    .map(|l| Arc::new(l) as Arc<dyn LayerReader>)
                    .ctx("open layer", dir)
            })
            .collect()
    }

    fn build<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        fill: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        validate_id(id)?;
        let mut chain = Vec::new();
        if let Some(p) = parent {
            self.checked(p)?;
            chain.push(p.to_string());
            chain.extend(self.ancestors(p)?);
        }
        if self.exists(id) {
            return Err(DriverError::LayerExists(id.to_string()));
        }
        let staging = self.home.join("staging").join(format!(
            "{id}.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            fs::create_dir(&staging).ctx("create layer directory", &staging)?;
            fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
                .ctx("chmod", &staging)?;
            let value = fill(&staging)?;
            if rw {
                let work = self.work_dir(id);
                fs::create_dir_all(&work).ctx("create work directory", &work)?;
            }
            let chain_file = self.chain_file(id);
            let tmp = staging.with_extension("chain");
            fs::write(
                &tmp,
                chain.iter().map(|c| format!("{c}\n")).collect::<String>(),
            )
            .ctx("write layer chain", &tmp)?;
            fs::rename(&tmp, &chain_file).ctx("install layer chain", &chain_file)?;
            let dir = self.diff_dir(id);
            fs::rename(&staging, &dir).ctx("install layer", &dir)?;
            info!(driver = NAME, id, "created layer");
            Ok(value)
        })();
        if result.is_err() {
            let _ = fsutil::remove_tree(&staging);
            let _ = fs::remove_file(staging.with_extension("chain"));
        }
        result
    }
}

/// The outermost directories of an AUFS branch holding `.wh..wh..opq`.
fn outermost_opaque_dirs(
    root: &Path,
    prefix: &mut Vec<OsString>,
    out: &mut Vec<Vec<OsString>>,
) -> Result<()> {
    let here = root.join(fsutil::join_components(prefix));
    for entry in fs::read_dir(&here).ctx("list", &here)? {
        let entry = entry.ctx("list", &here)?;
        if !entry.file_type().ctx("stat", entry.path())?.is_dir() {
            continue;
        }
        prefix.push(entry.file_name());
        if entry.path().join(OCI_OPAQUE).exists() {
            out.push(prefix.clone());
        } else {
            outermost_opaque_dirs(root, prefix, out)?;
        }
        prefix.pop();
    }
    Ok(())
}

impl MergedDiff for AufsDriver {
    /// Runs `f` on read-only views of the merged trees of `parent` (an empty
    /// directory when `None`) and of `id` on top of it, unmounting both after.
    fn with_views<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        f: impl FnOnce(&Path, &Path) -> Result<T>,
    ) -> Result<T> {
        self.checked(id)?;
        let ancestors = self.ancestors(id)?;
        if ancestors.first().map(String::as_str) != parent {
            return Err(DriverError::Other(format!(
                "aufs layer {id} sits on {}, not on {}",
                ancestors.first().map(String::as_str).unwrap_or("nothing"),
                parent.unwrap_or("nothing")
            )));
        }
        let mut all = vec![id.to_string()];
        all.extend(ancestors.iter().cloned());
        merged_diff::with_stack_views(
            self.viewer.as_ref(),
            &self.home.join("views"),
            self.readers(&ancestors)?,
            self.readers(&all)?,
            WhiteoutFormat::Aufs,
            self.ownership,
            f,
        )
    }

    /// The directories of `id`'s branch marked `.wh..wh..opq` (the outermost).
    fn opaque_dirs(&self, id: &LayerId) -> Result<Vec<Vec<OsString>>> {
        let mut opaque = Vec::new();
        outermost_opaque_dirs(&self.diff_dir(id), &mut Vec::new(), &mut opaque)?;
        Ok(opaque)
    }
}

impl Driver for AufsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn status(&self) -> DriverStatus {
        let backing =
            fsutil::filesystem_name(&self.home).unwrap_or_else(|e| format!("unknown ({e})"));
        DriverStatus {
            driver: NAME.to_string(),
            facts: vec![
                ("Backing Filesystem".into(), backing),
                (
                    "Kernel aufs".into(),
                    if kernel_has_filesystem("aufs") {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                ),
                (
                    "Layers".into(),
                    self.layers().map(|l| l.len()).unwrap_or(0).to_string(),
                ),
            ],
        }
    }

    fn supports(&self, frontend: FrontendKind) -> std::result::Result<(), String> {
        match frontend {
            FrontendKind::Fuse => Ok(()),
            FrontendKind::Kernel if kernel_has_filesystem("aufs") => {
                crate::kernel::kernel_mounts_usable(self.ownership)
            }
            FrontendKind::Kernel => Err("unavailable on this kernel: it has no aufs (see /proc/filesystems); --frontend fuse works".into()),
        }
    }

    fn exists(&self, id: &LayerId) -> bool {
        validate_id(id).is_ok() && self.diff_dir(id).is_dir() && self.chain_file(id).is_file()
    }

    fn layers(&self) -> Result<Vec<String>> {
        layer_ids(&self.home.join("diff"), "", |id| self.exists(id))
    }

    fn parent(&self, id: &LayerId) -> Result<Option<String>> {
        self.checked(id)?;
        Ok(self.ancestors(id)?.into_iter().next())
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.build(id, parent, false, |_| Ok(()))
    }

    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.build(id, parent, true, |_| Ok(()))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        validate_id(id)?;
        let dir = self.diff_dir(id);
        let doomed = self.home.join("staging").join(format!(
            "{id}.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove layer", dir),
        }
        for p in [self.chain_file(id)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove layer chain", p),
            }
        }
        fsutil::remove_tree(&self.work_dir(id)).ctx("remove work directory", self.work_dir(id))?;
        fsutil::remove_tree(&doomed).ctx("remove layer", &doomed)?;
        Ok(())
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<ApplyStats> {
        self.build(id, parent, false, |dir| {
            apply_layer_as(dir, diff, WhiteoutMode::Aufs, self.ownership)
        })
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<()> {
        self.write_diff(id, parent, out)
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.list_changes(id, parent)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.size_of_diff(id, parent)
    }

    fn mount_spec(
        &self,
        id: &LayerId,
        frontend: FrontendKind,
        read_only: bool,
    ) -> Result<MountSpec> {
        self.checked(id)?;
        let rw = self.work_dir(id).is_dir();
        if !read_only && !rw {
            return Err(DriverError::Other(format!(
                "layer {id} is read-only: mount it read-only or create a read-write layer on top of it"
            )));
        }
        let ancestors = self.ancestors(id)?;
        if let Err(why) = self.supports(frontend) {
            return Err(DriverError::Unsupported(why));
        }
        match frontend {
            FrontendKind::Kernel => {
                let mut branches = Vec::new();
                if !read_only {
                    branches.push((self.diff_dir(id), true));
                } else {
                    branches.push((self.diff_dir(id), false));
                }
                branches.extend(ancestors.iter().map(|a| (self.diff_dir(a), false)));
                Ok(MountSpec::Aufs { branches })
            }
            FrontendKind::Fuse => {
                let mut lower_ids = Vec::new();
                if read_only {
                    lower_ids.push(id.to_string());
                }
                lower_ids.extend(ancestors);
                Ok(MountSpec::Stack {
                    lowers: self.readers(&lower_ids)?,
                    upper: (!read_only).then(|| (self.diff_dir(id), self.work_dir(id))),
                    whiteouts: WhiteoutFormat::Aufs,
                    ownership: self.ownership,
                })
            }
        }
    }

    fn layer_reader(&self, id: &LayerId) -> Result<Box<dyn LayerReader>> {
        self.checked(id)?;
        let dir = self.diff_dir(id);
        Ok(Box::new(
            DirLayer::open_as(&dir, WhiteoutFormat::Aufs, self.ownership).ctx("open layer", dir)?,
        ))
    }

    fn cleanup(&self) -> Result<()> {
        merged_diff::remove_dead_staging(&self.home.join("staging"))?;
        merged_diff::remove_stale_views(&self.home.join("views"))
    }
}
