//! What a workload runs on: Lamina's available driver × frontend rows and the
//! peers, chosen from `lamina drivers` and the user's filters.

use std::path::Path;

use crate::error::BenchError;
use crate::lamina_cli::{DriverRow, LaminaCli};
use crate::mounts::{ContainerLease, Mounted, Mountpoint, Unmount};
use crate::peers::{self, LayerDirs, MissingPeer, Peer};
use crate::report::{Skipped, TargetInfo, TargetKind};

/// Something a workload is measured on.
pub(crate) enum Target {
    /// One of Lamina's driver × frontend rows, driven through the `lamina` binary.
    Lamina {
        /// The driver.
        driver: String,
        /// `kernel` or `fuse`.
        frontend: String,
        /// How its FUSE mounts are made.
        variant: Variant,
    },
    /// Another filesystem over the same layer directories.
    Peer(Box<dyn Peer>),
}

/// An opt-in way of mounting overlay2 through FUSE, measured beside the
/// default when named in `--drivers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// As `lamina mount` mounts by default.
    Default,
    /// Containers mounted `--volatile` (no flushes to stable storage).
    Volatile,
    /// Mounted `--no-io-uring`: every request through `/dev/fuse`.
    DevFuse,
}

impl Variant {
    /// The opt-in variants.
    pub const OPT_IN: [Variant; 2] = [Variant::Volatile, Variant::DevFuse];

    /// The suffix of its row's id and of its `--drivers` name.
    fn suffix(self) -> &'static str {
        match self {
            Variant::Default => "",
            Variant::Volatile => "-volatile",
            Variant::DevFuse => "-devfuse",
        }
    }

    /// Its `--drivers` name (`overlay2-volatile`, `overlay2-devfuse`).
    pub fn row_name(self) -> String {
        format!("overlay2{}", self.suffix())
    }

    /// What the report says about it.
    fn description(self) -> &'static str {
        match self {
            Variant::Default => "",
            Variant::Volatile => ", containers mounted --volatile (no flushes to stable storage)",
            Variant::DevFuse => {
                ", mounted --no-io-uring (every request through /dev/fuse, none through io_uring)"
            }
        }
    }

    /// The `lamina mount` options it adds; `volatile` applies to containers only.
    pub fn mount_args(self, container: bool) -> &'static [&'static str] {
        match self {
            Variant::Default => &[],
            Variant::Volatile if container => &["--volatile"],
            Variant::Volatile => &[],
            Variant::DevFuse => &["--no-io-uring"],
        }
    }
}

impl Target {
    /// The target's id in reports (`overlay2/kernel`, `kernel-overlayfs`, ...).
    pub fn id(&self) -> String {
        match self {
            Target::Lamina {
                driver,
                frontend,
                variant,
            } => format!("{}{}", lamina_id(driver, frontend), variant.suffix()),
            Target::Peer(p) => p.id().to_string(),
        }
    }

    /// What the report says about it.
    pub fn info(&self) -> TargetInfo {
        match self {
            Target::Lamina {
                driver,
                frontend,
                variant,
            } => TargetInfo {
                id: self.id(),
                kind: TargetKind::Lamina,
                description: format!(
                    "Lamina's {driver} driver through the {frontend} frontend{}",
                    variant.description()
                ),
            },
            Target::Peer(p) => TargetInfo {
                id: self.id(),
                kind: TargetKind::Peer,
                description: p.description(),
            },
        }
    }

    /// Mounts image `name` (whose overlay2 layers are `layers`) read-only on `mountpoint`.
    pub fn mount_image(
        &self,
        cli: &LaminaCli,
        name: &str,
        layers: &LayerDirs,
        mountpoint: Mountpoint,
    ) -> Result<Mounted, BenchError> {
        match self {
            Target::Lamina {
                driver,
                frontend,
                variant,
            } => {
                cli.mount_image(
                    driver,
                    frontend,
                    name,
                    mountpoint.path(),
                    variant.mount_args(false),
                )?;
                Ok(Mounted::new(
                    mountpoint,
                    Unmount::Lamina(cli.clone()),
                    None,
                    None,
                ))
            }
            Target::Peer(peer) => {
                let m = peer.mount(layers, None, mountpoint.path())?;
                Ok(Mounted::new(mountpoint, m.unmount, m.daemon, None))
            }
        }
    }

    /// Creates a container of image `name` (a Lamina container named
    /// `container`, or fresh upper and work directories in `scratch` for a
    /// peer) and mounts it read-write on `mountpoint`. The container goes when
    /// the mount is undone.
    pub fn mount_container(
        &self,
        cli: &LaminaCli,
        name: &str,
        layers: &LayerDirs,
        container: String,
        scratch: &Path,
        mountpoint: Mountpoint,
    ) -> Result<Mounted, BenchError> {
        match self {
            Target::Lamina {
                driver,
                frontend,
                variant,
            } => {
                let lease = ContainerLease::lamina(cli, driver, name, container.clone())?;
                cli.mount_container(
                    frontend,
                    &container,
                    mountpoint.path(),
                    variant.mount_args(true),
                )?;
                Ok(Mounted::new(
                    mountpoint,
                    Unmount::Lamina(cli.clone()),
                    None,
                    Some(lease),
                ))
            }
            Target::Peer(peer) => {
                let dir = tempfile::Builder::new()
                    .prefix("upper-")
                    .tempdir_in(scratch)
                    .map_err(|source| BenchError::Io {
                        context: "create upper directory in",
                        path: scratch.to_path_buf(),
                        source,
                    })?;
                let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir(d).map_err(|source| BenchError::Io {
                        context: "create",
                        path: d.clone(),
                        source,
                    })?;
                }
                let m = peer.mount(layers, Some((&upper, &work)), mountpoint.path())?;
                Ok(Mounted::new(
                    mountpoint,
                    m.unmount,
                    m.daemon,
                    Some(ContainerLease::Upper { _dir: dir }),
                ))
            }
        }
    }
}

/// The id of a Lamina row: `driver/frontend`.
pub(crate) fn lamina_id(driver: &str, frontend: &str) -> String {
    format!("{driver}/{frontend}")
}

/// The targets of a run and what was left out.
pub(crate) struct Selection {
    /// What is measured: the reference first, then Lamina's rows, then other peers.
    pub targets: Vec<Target>,
    /// What was asked for (or not excluded) but cannot run here.
    pub skipped: Vec<Skipped>,
}

/// Chooses the targets: every available row of `lamina drivers` that passes the
/// `drivers` and `frontends` filters (empty = all); the reference peer whenever
/// it is available (ratios need it); other peers when the filters let them in
/// (`drivers` may name peers by id). Unknown names are errors.
pub(crate) fn select(
    rows: &[DriverRow],
    found_peers: Vec<Result<Box<dyn Peer>, MissingPeer>>,
    drivers: &[String],
    frontends: &[String],
) -> Result<Selection, BenchError> {
    if let Some(f) = frontends
        .iter()
        .find(|f| !["kernel", "fuse"].contains(&f.as_str()))
    {
        return Err(BenchError::UnknownFrontend(f.clone()));
    }
    let mut known: Vec<String> = Vec::new();
    for r in rows {
        if !known.contains(&r.driver) {
            known.push(r.driver.clone());
        }
    }
    known.extend(peers::known_ids().into_iter().map(String::from));
    known.extend(Variant::OPT_IN.map(Variant::row_name));
    if let Some(d) = drivers.iter().find(|d| !known.contains(d)) {
        return Err(BenchError::UnknownDriver {
            name: d.clone(),
            known: known.join(", "),
        });
    }
    let wanted = |name: &str, frontend: &str| {
        (drivers.is_empty() || drivers.iter().any(|d| d == name))
            && (frontends.is_empty() || frontends.iter().any(|f| f == frontend))
    };

    let mut reference = Vec::new();
    let mut lamina = Vec::new();
    let mut others = Vec::new();
    let mut skipped = Vec::new();
    for r in rows.iter().filter(|r| wanted(&r.driver, &r.frontend)) {
        if r.available {
            lamina.push(Target::Lamina {
                driver: r.driver.clone(),
                frontend: r.frontend.clone(),
                variant: Variant::Default,
            });
            // Asked for by name only: overlay2 through FUSE mounted another way.
            if r.driver == "overlay2" && r.frontend == "fuse" {
                for variant in Variant::OPT_IN {
                    if drivers.iter().any(|d| *d == variant.row_name()) {
                        lamina.push(Target::Lamina {
                            driver: r.driver.clone(),
                            frontend: r.frontend.clone(),
                            variant,
                        });
                    }
                }
            }
        } else {
            skipped.push(Skipped {
                target: lamina_id(&r.driver, &r.frontend),
                reason: r.reason.clone().unwrap_or_else(|| "unavailable".into()),
                install_hint: None,
            });
        }
    }
    for p in found_peers {
        let (id, frontend) = match &p {
            Ok(peer) => (peer.id().to_string(), peer.frontend()),
            Err(m) => (m.id.clone(), m.frontend),
        };
        let is_reference = id == peers::REFERENCE;
        if !is_reference && !wanted(&id, frontend) {
            continue;
        }
        match p {
            Ok(peer) if is_reference => reference.push(Target::Peer(peer)),
            Ok(peer) => others.push(Target::Peer(peer)),
            Err(m) => skipped.push(Skipped {
                target: m.id,
                reason: m.reason,
                install_hint: m.install_hint,
            }),
        }
    }
    let mut targets = reference;
    targets.extend(lamina);
    targets.extend(others);
    Ok(Selection { targets, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::PeerMount;

    struct FakePeer(&'static str, &'static str);

    impl Peer for FakePeer {
        fn id(&self) -> &str {
            self.0
        }
        fn frontend(&self) -> &'static str {
            self.1
        }
        fn description(&self) -> String {
            format!("fake {}", self.0)
        }
        fn mount(
            &self,
            _: &LayerDirs,
            _: Option<(&Path, &Path)>,
            _: &Path,
        ) -> Result<PeerMount, BenchError> {
            Err(BenchError::Mount("fake peers do not mount".into()))
        }
    }

    fn row(driver: &str, frontend: &str, available: bool) -> DriverRow {
        DriverRow {
            driver: driver.into(),
            frontend: frontend.into(),
            available,
            reason: (!available).then(|| format!("{driver} × {frontend} is not here")),
        }
    }

    fn rows() -> Vec<DriverRow> {
        vec![
            row("overlay2", "kernel", true),
            row("overlay2", "fuse", false),
            row("vfs", "kernel", true),
            row("vfs", "fuse", true),
        ]
    }

    fn peers_found() -> Vec<Result<Box<dyn Peer>, MissingPeer>> {
        vec![
            Ok(Box::new(FakePeer(peers::REFERENCE, "kernel"))),
            Ok(Box::new(FakePeer("fuse-overlayfs-apt", "fuse"))),
            Err(MissingPeer {
                id: "fuse-overlayfs-cargo".into(),
                frontend: "fuse",
                reason: "not installed".into(),
                install_hint: Some("cargo install fuse-overlayfs".into()),
            }),
        ]
    }

    fn ids(s: &Selection) -> Vec<String> {
        s.targets.iter().map(Target::id).collect()
    }

    #[test]
    fn everything_available_is_measured_reference_first() {
        let s = select(&rows(), peers_found(), &[], &[]).unwrap();
        assert_eq!(
            ids(&s),
            [
                "kernel-overlayfs",
                "overlay2/kernel",
                "vfs/kernel",
                "vfs/fuse",
                "fuse-overlayfs-apt"
            ]
        );
        let skipped: Vec<&str> = s.skipped.iter().map(|k| k.target.as_str()).collect();
        assert_eq!(skipped, ["overlay2/fuse", "fuse-overlayfs-cargo"]);
        assert_eq!(
            s.skipped[1].install_hint.as_deref(),
            Some("cargo install fuse-overlayfs")
        );
    }

    #[test]
    fn filters_keep_the_reference() {
        let s = select(&rows(), peers_found(), &["vfs".into()], &["fuse".into()]).unwrap();
        assert_eq!(ids(&s), ["kernel-overlayfs", "vfs/fuse"]);
        assert!(s.skipped.is_empty());
        let s = select(&rows(), peers_found(), &["fuse-overlayfs-apt".into()], &[]).unwrap();
        assert_eq!(ids(&s), ["kernel-overlayfs", "fuse-overlayfs-apt"]);
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = select(&rows(), peers_found(), &["zfs".into()], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("\"zfs\"") && e.contains("overlay2, vfs, kernel-overlayfs"),
            "{e}"
        );
        let e = select(&rows(), peers_found(), &[], &["nfs".into()])
            .err()
            .unwrap();
        assert!(matches!(e, BenchError::UnknownFrontend(f) if f == "nfs"));
    }

    #[test]
    fn the_opt_in_rows_are_measured_only_when_named() {
        let mut all = rows();
        all[1].available = true;
        let plain = select(&all, peers_found(), &[], &[]).unwrap();
        assert!(!ids(&plain)
            .iter()
            .any(|i| i.ends_with("-volatile") || i.ends_with("-devfuse")));
        let named = [
            "overlay2".to_string(),
            "overlay2-volatile".to_string(),
            "overlay2-devfuse".to_string(),
        ];
        let s = select(&all, peers_found(), &named, &[]).unwrap();
        assert_eq!(
            ids(&s),
            [
                "kernel-overlayfs",
                "overlay2/kernel",
                "overlay2/fuse",
                "overlay2/fuse-volatile",
                "overlay2/fuse-devfuse"
            ]
        );
    }
}
