//! The application context every command works in: the store, its drivers and mounts.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use drivers::mount_table::MountTable;
use drivers::{Driver, Frontend, FrontendKind};
use layer_store::{Container, Image, Layer, Store};

use crate::registry;
use crate::registry::FuseMountOptions;

/// A target of `mount`/`export`: an image or a container.
pub enum Target {
    /// A read-only image.
    Image(Image),
    /// A container and its image.
    Container(Container),
}

/// The store, its drivers and its mount table.
pub struct App {
    /// The layer store.
    pub store: Store,
    /// The mounts Lamina made under this store.
    pub mounts: MountTable,
}

/// An exclusive lock that serialises changes to drivers' layers (applying image
/// layers, creating and removing container layers, garbage collection), so that
/// one process's cleanup never removes another's work in progress.
pub struct DriverLock(File);

impl Drop for DriverLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl App {
    /// Opens the store at `root` (or the default root); with `prune`, forgets
    /// mounts that vanished and detaches dead ones first.
    pub fn open(root: Option<PathBuf>, prune: bool) -> Result<App> {
        let root = root.unwrap_or_else(layer_store::default_root);
        let store = Store::open(&root)
            .with_context(|| format!("opening the store at {}", root.display()))?;
        let mounts = MountTable::new(store.root());
        if prune {
            mounts.prune().context("checking recorded mounts")?;
        }
        Ok(App { store, mounts })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// Opens a driver by name.
    pub fn driver(&self, name: &str) -> Result<Box<dyn Driver>> {
        registry::open_driver(name, self.root())
    }

    /// Opens a frontend.
    pub fn frontend(&self, kind: FrontendKind, foreground: bool) -> Result<Box<dyn Frontend>> {
        self.frontend_mapped(kind, foreground, &FuseMountOptions::default())
    }

    /// Opens a frontend whose FUSE mounts present owners through `ids`.
    pub fn frontend_mapped(
        &self,
        kind: FrontendKind,
        foreground: bool,
        ids: &FuseMountOptions,
    ) -> Result<Box<dyn Frontend>> {
        if kind == FrontendKind::Kernel && !ids.is_identity() {
            bail!("--uidmap/--gidmap apply to the FUSE frontend (add --frontend fuse)");
        }
        if kind == FrontendKind::Kernel && ids.volatile {
            bail!("--volatile applies to the FUSE frontend (add --frontend fuse)");
        }
        if kind == FrontendKind::Kernel && !ids.io_uring {
            bail!("--no-io-uring applies to the FUSE frontend (add --frontend fuse)");
        }
        let logs = self.root().join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let options = registry::FrontendOptions {
            foreground,
            log: Some(logs.join(format!("{kind}-{stamp}-{}.log", std::process::id()))),
            fuse: ids.clone(),
        };
        registry::open_frontend(kind, &options)
    }

    /// The driver and frontend to use when the user names none.
    pub fn choose(
        &self,
        driver: Option<&str>,
        frontend: Option<&str>,
    ) -> Result<(Box<dyn Driver>, FrontendKind)> {
        let (default_driver, default_frontend) = registry::default_choice(self.root());
        let driver = self.driver(driver.unwrap_or(&default_driver))?;
        let frontend = match frontend {
            Some(f) => f.parse::<FrontendKind>().map_err(anyhow::Error::msg)?,
            None if driver.supports(default_frontend).is_ok() => default_frontend,
            None if driver.supports(FrontendKind::Kernel).is_ok() => FrontendKind::Kernel,
            None => FrontendKind::Fuse,
        };
        if let Err(why) = driver.supports(frontend) {
            bail!(
                "driver {} cannot use the {frontend} frontend here: {why}",
                driver.name()
            );
        }
        Ok((driver, frontend))
    }

    /// Resolves an image or container name.
    pub fn target(&self, name: &str) -> Result<Target> {
        if let Ok(c) = self.store.container(name) {
            return Ok(Target::Container(c));
        }
        match self.store.resolve_image(name) {
            Ok(image) => Ok(Target::Image(image)),
            Err(e) => bail!("no container named {name:?}, and {e}"),
        }
    }

    /// Makes sure `driver` holds the first `upto` layers of `image` (all when `None`);
    /// returns the id of the top one. Layers are applied from the store on demand.
    pub fn materialize(
        &self,
        driver: &dyn Driver,
        image: &Image,
        upto: Option<usize>,
    ) -> Result<String> {
        let all = self.layers(image)?;
        let layers = &all[..upto.unwrap_or(all.len()).min(all.len())];
        if layers.is_empty() {
            bail!("image {} has no layers", image.id);
        }
        let _lock = self.driver_lock()?;
        driver.cleanup().context("cleaning driver leftovers")?;
        let mut parent: Option<String> = None;
        for (i, layer) in layers.iter().enumerate() {
            let id = layer.chain_id.hex().to_string();
            if !driver.exists(&id) {
                tracing::info!(driver = driver.name(), layer = %layer.chain_id, "applying layer {} of {}", i + 1, layers.len());
                let mut tar = self
                    .store
                    .layer_tar(layer)
                    .with_context(|| format!("reading layer {} ({})", i + 1, layer.diff_id))?;
                driver
                    .apply_diff(&id, parent.as_deref(), &mut tar)
                    .with_context(|| {
                        format!(
                            "applying layer {} ({}) with {}",
                            i + 1,
                            layer.diff_id,
                            driver.name()
                        )
                    })?;
            }
            parent = Some(id);
        }
        Ok(parent.expect("at least one layer"))
    }

    /// Takes the driver lock (see [`DriverLock`]).
    pub fn driver_lock(&self) -> Result<DriverLock> {
        let path = self.root().join("drivers.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(DriverLock(f))
    }

    /// The layers of an image, bottom first.
    pub fn layers(&self, image: &Image) -> Result<Vec<Layer>> {
        Ok(self.store.image_layers(image)?)
    }

    /// An image's uncompressed size.
    pub fn image_size(&self, image: &Image) -> Result<u64> {
        Ok(self
            .layers(image)?
            .iter()
            .map(|l| l.uncompressed_size)
            .sum())
    }

    /// The image a container was created from.
    pub fn container_image(&self, c: &Container) -> Result<Image> {
        self.store
            .resolve_image(&c.image.to_string())
            .with_context(|| format!("the image of container {}", c.name))
    }

    /// The driver-level parent of a container's layer.
    pub fn container_parent(&self, c: &Container) -> Result<String> {
        let driver = self.driver(&c.driver)?;
        if let Some(parent) = driver.parent(&c.id)? {
            return Ok(parent);
        }
        let image = self.container_image(c)?;
        match image.chain_ids.last() {
            Some(top) => Ok(top.hex().to_string()),
            None => bail!("the image of container {} has no layers", c.name),
        }
    }
}
