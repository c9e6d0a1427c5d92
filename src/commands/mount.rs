//! `mount`, `umount`, `export`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use drivers::mount_table::{MountRecord, MountRequest};
use drivers::FrontendKind;

use crate::app::{App, Target};
use crate::commands::inspect_layers;

/// The options of `lamina mount`.
pub struct MountArgs<'a> {
    pub driver: Option<&'a str>,
    pub frontend: Option<&'a str>,
    pub read_only: bool,
    pub layer: Option<usize>,
    pub upto: Option<usize>,
    pub foreground: bool,
    pub target: &'a str,
    pub mountpoint: &'a Path,
}

pub fn mount(app: &App, args: &MountArgs<'_>) -> Result<()> {
    if args.foreground {
        bail!("--foreground applies to the FUSE frontend, which is not part of this build yet");
    }
    let record = mount_target(app, args)?;
    println!(
        "Mounted {} ({} × {}{}) at {}",
        record.label,
        record.driver,
        record.frontend,
        if record.read_only { ", read-only" } else { "" },
        record.mountpoint.display()
    );
    Ok(())
}

fn mount_target(app: &App, args: &MountArgs<'_>) -> Result<MountRecord> {
    let target = app.target(args.target)?;
    if let Some(n) = args.layer {
        let image = match &target {
            Target::Image(i) => i.clone(),
            Target::Container(_) => bail!("--layer N takes an image, not a container"),
        };
        return inspect_layers::mount_layer_view(app, &image, n, args.target, args.mountpoint);
    }
    match target {
        Target::Image(image) => {
            let (driver, frontend) = app.choose(args.driver, args.frontend)?;
            if let Some(n) = args.upto {
                if n == 0 || n > image.chain_ids.len() {
                    bail!(
                        "--upto {n}: image {} has layers 1 to {}",
                        args.target,
                        image.chain_ids.len()
                    );
                }
            }
            let top = app.materialize(driver.as_ref(), &image, args.upto)?;
            let label = match args.upto {
                Some(n) => format!("{} (layers 1-{n})", args.target),
                None => args.target.to_string(),
            };
            let frontend = app.frontend(frontend)?;
            let req = MountRequest {
                layer: &top,
                label: &label,
                read_only: true,
                target: args.mountpoint,
            };
            Ok(app.mounts.get(driver.as_ref(), frontend.as_ref(), &req)?)
        }
        Target::Container(c) => {
            if args.upto.is_some() {
                bail!("--upto N takes an image, not a container");
            }
            if let Some(d) = args.driver.filter(|d| *d != c.driver) {
                bail!("container {} lives in driver {}, not {d}", c.name, c.driver);
            }
            let (driver, frontend) = app.choose(Some(&c.driver), args.frontend)?;
            let frontend = app.frontend(frontend)?;
            let req = MountRequest {
                layer: &c.id,
                label: &c.name,
                read_only: args.read_only,
                target: args.mountpoint,
            };
            Ok(app.mounts.get(driver.as_ref(), frontend.as_ref(), &req)?)
        }
    }
}

pub fn umount(app: &App, mountpoint: &Path) -> Result<()> {
    let record = app
        .mounts
        .put(mountpoint, &crate::registry::frontend_for_unmount)?;
    println!(
        "Unmounted {} from {}",
        record.label,
        record.mountpoint.display()
    );
    Ok(())
}

/// A mount that is undone when dropped, even on error or panic.
struct TemporaryMount<'a> {
    app: &'a App,
    record: MountRecord,
    _dir: tempfile::TempDir,
}

impl Drop for TemporaryMount<'_> {
    fn drop(&mut self) {
        if let Err(e) = umount_quiet(self.app, &self.record.mountpoint) {
            eprintln!(
                "lamina: could not unmount {}: {e}",
                self.record.mountpoint.display()
            );
        }
    }
}

fn umount_quiet(app: &App, mountpoint: &Path) -> Result<()> {
    app.mounts
        .put(mountpoint, &crate::registry::frontend_for_unmount)?;
    Ok(())
}

pub fn export(app: &App, target: &str, output: &Path) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("lamina-export-")
        .tempdir()
        .context("creating a temporary mountpoint")?;
    let record = mount_target(
        app,
        &MountArgs {
            driver: None,
            frontend: Some(&FrontendKind::Kernel.to_string()),
            read_only: true,
            layer: None,
            upto: None,
            foreground: false,
            target,
            mountpoint: dir.path(),
        },
    )?;
    let mounted = TemporaryMount {
        app,
        record,
        _dir: dir,
    };
    crate::output::write_atomically(output, |out| {
        drivers::export::write_layer_diff(None, &mounted.record.mountpoint, out)
            .with_context(|| format!("writing the root filesystem of {target}"))?;
        Ok(())
    })?;
    drop(mounted);
    println!("Exported {target} to {}", output.display());
    Ok(())
}
