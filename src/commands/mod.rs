//! One module per group of subcommands; [`run`] dispatches.

mod bench;
mod container;
mod fuse_overlay;
pub(crate) mod image;
mod inspect_layers;
mod mount;
mod status;

use anyhow::Result;

use crate::app::App;
use crate::cli::{Cli, Command};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Commands that work without a store.
    let command = match cli.command {
        Command::Bench {
            drivers,
            frontends,
            workloads,
            quick,
            repetitions,
            scratch,
            format,
            report,
        } => {
            return bench::bench(&bench::BenchArgs {
                drivers,
                frontends,
                workloads,
                quick,
                repetitions,
                scratch,
                format,
                report,
            })
        }
        Command::FuseOverlay { args } => return fuse_overlay::run(&args),
        other => other,
    };
    // `umount` handles dead mounts itself (it must find their records).
    let prune = !matches!(command, Command::Umount { .. });
    let app = App::open(cli.root, prune)?;
    match command {
        Command::Import { path, name } => image::import(&app, &path, name.as_deref()),
        Command::Images { format } => image::images(&app, format),
        Command::Inspect { image } => image::inspect(&app, &image),
        Command::Rmi { image } => image::rmi(&app, &image),
        Command::Gc => status::gc(&app),
        Command::Df { format } => status::df(&app, format),
        Command::Drivers { format } => status::drivers(&app, format),
        Command::Create {
            driver,
            image,
            container,
        } => container::create(&app, driver.as_deref(), &image, &container),
        Command::Rm { container } => container::rm(&app, &container),
        Command::Ps { format } => container::ps(&app, format),
        Command::Mount {
            driver,
            frontend,
            read_only,
            layer,
            upto,
            foreground,
            uidmap,
            gidmap,
            volatile,
            no_io_uring,
            target,
            mountpoint,
        } => mount::mount(
            &app,
            &mount::MountArgs {
                driver: driver.as_deref(),
                frontend: frontend.as_deref(),
                read_only,
                layer,
                upto,
                foreground,
                ids: crate::registry::FuseMountOptions {
                    uids: uidmap.unwrap_or_default(),
                    gids: gidmap.unwrap_or_default(),
                    check_permissions: true,
                    volatile,
                    io_uring: !no_io_uring,
                },
                target: &target,
                mountpoint: &mountpoint,
            },
        ),
        Command::Umount { mountpoint } => mount::umount(&app, &mountpoint),
        Command::Diff { container, format } => container::diff(&app, &container, format),
        Command::Commit {
            container,
            reference,
        } => container::commit(&app, &container, &reference),
        Command::Export { target, output } => mount::export(&app, &target, &output),
        Command::Save { image, output } => image::save(&app, &image, &output),
        Command::Sample { name } => image::sample(&app, &name),
        Command::History { image, format } => inspect_layers::history(&app, &image, format),
        Command::Bundle {
            driver,
            frontend,
            remove,
            uidmap,
            gidmap,
            target,
            dir,
        } => mount::bundle(
            &app,
            driver.as_deref(),
            frontend.as_deref(),
            (uidmap, gidmap),
            remove,
            target.as_deref(),
            dir.as_deref(),
        ),
        Command::Bench { .. } | Command::FuseOverlay { .. } => unreachable!("handled above"),
    }
}
