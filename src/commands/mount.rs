//! `mount`, `umount`, `export`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use drivers::mount_table::{MountRecord, MountRequest};
use drivers::FrontendKind;

use crate::app::{App, Target};
use crate::commands::inspect_layers;
use crate::registry::FuseMountOptions;
use crate::runtime_spec::RootlessUser;
use fuse_frontend::IdMap;

/// The options of `lamina mount`.
pub struct MountArgs<'a> {
    pub driver: Option<&'a str>,
    pub frontend: Option<&'a str>,
    pub read_only: bool,
    pub layer: Option<usize>,
    pub upto: Option<usize>,
    pub foreground: bool,
    pub ids: FuseMountOptions,
    pub target: &'a str,
    pub mountpoint: &'a Path,
}

pub fn mount(app: &App, args: &MountArgs<'_>) -> Result<()> {
    let Some(record) = mount_target(app, args)? else {
        println!("Unmounted {}", args.mountpoint.display());
        return Ok(());
    };
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

/// Mounts through the mount table, or — with `--foreground` — serves the mount
/// in this process until it is unmounted (then returns `None`).
fn attach(
    app: &App,
    driver: &dyn drivers::Driver,
    frontend: FrontendKind,
    req: &MountRequest<'_>,
    foreground: bool,
    ids: &FuseMountOptions,
) -> Result<Option<MountRecord>> {
    if !foreground {
        let frontend = app.frontend_mapped(frontend, false, ids)?;
        return Ok(Some(app.mounts.get(driver, frontend.as_ref(), req)?));
    }
    if frontend != FrontendKind::Fuse {
        bail!("--foreground applies to the FUSE frontend (add --frontend fuse)");
    }
    let fuse = app.frontend_mapped(frontend, true, ids)?;
    eprintln!(
        "Serving {} at {} in the foreground; stop with Ctrl-C or `lamina umount {}`",
        req.label,
        req.target.display(),
        req.target.display()
    );
    app.mounts.serve(driver, fuse.as_ref(), req)?;
    Ok(None)
}

fn mount_target(app: &App, args: &MountArgs<'_>) -> Result<Option<MountRecord>> {
    let target = app.target(args.target)?;
    if let Some(n) = args.layer {
        let image = match &target {
            Target::Image(i) => i.clone(),
            Target::Container(_) => bail!("--layer N takes an image, not a container"),
        };
        return inspect_layers::mount_layer_view(app, &image, n, args.target, args.mountpoint)
            .map(Some);
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
            let req = MountRequest {
                layer: &top,
                label: &label,
                read_only: true,
                target: args.mountpoint,
            };
            attach(
                app,
                driver.as_ref(),
                frontend,
                &req,
                args.foreground,
                &args.ids,
            )
        }
        Target::Container(c) => {
            if args.upto.is_some() {
                bail!("--upto N takes an image, not a container");
            }
            if let Some(d) = args.driver.filter(|d| *d != c.driver) {
                bail!("container {} lives in driver {}, not {d}", c.name, c.driver);
            }
            let (driver, frontend) = app.choose(Some(&c.driver), args.frontend)?;
            let req = MountRequest {
                layer: &c.id,
                label: &c.name,
                read_only: args.read_only,
                target: args.mountpoint,
            };
            attach(
                app,
                driver.as_ref(),
                frontend,
                &req,
                args.foreground,
                &args.ids,
            )
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
            frontend: None,
            read_only: true,
            layer: None,
            upto: None,
            foreground: false,
            // Exporting reads every file, whatever its mode, through a private mount.
            ids: FuseMountOptions {
                check_permissions: false,
                ..FuseMountOptions::default()
            },
            target,
            mountpoint: dir.path(),
        },
    )?
    .expect("only foreground mounts return no record");
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

/// `lamina bundle`: mounts the root filesystem at `DIR/rootfs` and writes the
/// runtime `config.json`; with `--remove`, undoes both.
pub fn bundle(
    app: &App,
    driver: Option<&str>,
    frontend: Option<&str>,
    (uidmap, gidmap): (Option<IdMap>, Option<IdMap>),
    remove: bool,
    target: Option<&str>,
    dir: Option<&Path>,
) -> Result<()> {
    // With --remove the one positional argument is the directory.
    let dir = match (remove, dir, target) {
        (true, None, Some(t)) => Path::new(t).to_path_buf(),
        (_, Some(d), _) => d.to_path_buf(),
        (_, None, _) => bail!("lamina bundle needs a bundle directory"),
    };
    let rootfs = dir.join("rootfs");
    let config = dir.join("config.json");
    if remove {
        if drivers::mount_table::MountInfo::read()?
            .is_mountpoint(&std::fs::canonicalize(&rootfs).unwrap_or(rootfs.clone()))
        {
            app.mounts
                .put(&rootfs, &crate::registry::frontend_for_unmount)?;
        }
        for p in [&config] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
            }
        }
        match std::fs::remove_dir(&rootfs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", rootfs.display())),
        }
        println!("Removed bundle {}", dir.display());
        return Ok(());
    }
    let target = target.context("lamina bundle needs an image or container")?;
    let (image, read_only, hostname) = match app.target(target)? {
        Target::Image(i) => (
            i,
            true,
            target.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        ),
        Target::Container(c) => (app.container_image(&c)?, false, c.name.clone()),
    };
    let image_config = app.store.image_config(&image)?;
    // An unprivileged user's container runs in a user namespace whose root is
    // that user: the root filesystem shows the image's root as the user.
    let rootless = (!nix::unistd::geteuid().is_root()).then(|| RootlessUser {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    });
    let default_ids = if rootless.is_some() {
        FuseMountOptions::root_to_caller()
    } else {
        FuseMountOptions::default()
    };
    let ids = FuseMountOptions {
        uids: uidmap.unwrap_or(default_ids.uids),
        gids: gidmap.unwrap_or(default_ids.gids),
        ..default_ids
    };
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let record = mount_target(
        app,
        &MountArgs {
            driver,
            frontend,
            read_only,
            layer: None,
            upto: None,
            foreground: false,
            ids,
            target,
            mountpoint: &rootfs,
        },
    )?
    .expect("only foreground mounts return no record");
    let written = crate::runtime_spec::runtime_spec(
        &image_config,
        &record.mountpoint,
        read_only,
        &hostname,
        rootless,
    )
    .and_then(|spec| {
        crate::output::write_atomically(&config, |out| {
            Ok(serde_json::to_writer_pretty(out, &spec)?)
        })
    });
    if let Err(e) = written {
        let _ = app
            .mounts
            .put(&record.mountpoint, &crate::registry::frontend_for_unmount);
        return Err(e);
    }
    println!(
        "Bundle {} ready: {} ({} × {}) at rootfs; run it with `runc run -b {} NAME`",
        dir.display(),
        record.label,
        record.driver,
        record.frontend,
        dir.display()
    );
    Ok(())
}
