//! Peers: other filesystems measured in the same run over the same layer
//! directories, so Lamina's numbers have a yardstick.
//!
//! The overlay peers mount the overlay2 driver's layer directories
//! (`<store>/overlay2/<chain id>/diff`, overlay whiteouts) directly, bypassing
//! Lamina: the kernel's overlayfs (the reference every ratio is relative to) and
//! `fuse-overlayfs` as Debian ships it and as `cargo install` builds it. The
//! squashfs peers ([`crate::squashfs_peers`]) mount the squashfs driver's layer
//! images instead, and serve the read workloads only.
//!
//! To add a peer: implement
//! [`Peer`] — [`Peer::prepare`] may build the peer's own form of an image (a
//! squashfs file per layer, say) from the layer directories once per run — and
//! list it in [`discover`], with the command that installs it when missing.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drivers::kernel::KernelFrontend;
use drivers::{Frontend, MountSpec};

use crate::error::{BenchError, IoContext};
use crate::host;
use crate::mounts::Unmount;

/// The id of the reference peer: the kernel's overlayfs.
pub const REFERENCE: &str = "kernel-overlayfs";

/// How long a FUSE peer may take to serve its mount.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// The layers of one image as a peer sees them.
#[derive(Debug, Clone)]
pub(crate) struct LayerDirs {
    /// Lower directories, top first (overlay's `lowerdir` order).
    pub lowers: Vec<PathBuf>,
    /// The squashfs driver's images of the same layers, top first (they exist
    /// once the image is materialised in the squashfs driver).
    pub squashfs_images: Vec<PathBuf>,
}

/// A mount a peer made: how to undo it and which process serves it.
pub(crate) struct PeerMount {
    /// How to undo it.
    pub unmount: Unmount,
    /// The serving daemon, for FUSE peers.
    pub daemon: Option<u32>,
}

/// A filesystem measured next to Lamina.
pub(crate) trait Peer {
    /// Its id in reports.
    fn id(&self) -> &str;

    /// `kernel` or `fuse`.
    fn frontend(&self) -> &'static str;

    /// What it is, with its version.
    fn description(&self) -> String;

    /// Whether it mounts the squashfs driver's layer images (so the run
    /// materialises every image in the squashfs driver).
    fn uses_squashfs_images(&self) -> bool {
        false
    }

    /// Whether it only serves read-only views (so it is measured on the read
    /// workloads only).
    fn read_only(&self) -> bool {
        false
    }

    /// Builds whatever the peer needs besides the layer directories, once per image.
    fn prepare(&mut self, _layers: &LayerDirs, _scratch: &Path) -> Result<(), BenchError> {
        Ok(())
    }

    /// Mounts `layers` on `mountpoint`: read-only without `upper`, else
    /// read-write with `upper` = (upper dir, work dir).
    fn mount(
        &self,
        layers: &LayerDirs,
        upper: Option<(&Path, &Path)>,
        mountpoint: &Path,
    ) -> Result<PeerMount, BenchError>;
}

/// A peer that is not installed or cannot run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingPeer {
    /// Its id.
    pub id: String,
    /// Its frontend.
    pub frontend: &'static str,
    /// Why it cannot run.
    pub reason: String,
    /// The command that installs it, when installing helps.
    pub install_hint: Option<String>,
}

/// The ids of every peer this build knows.
pub(crate) fn known_ids() -> Vec<&'static str> {
    vec![
        REFERENCE,
        "fuse-overlayfs-apt",
        "fuse-overlayfs-cargo",
        crate::squashfs_peers::KERNEL_SQUASHFS,
        crate::squashfs_peers::SQUASHFUSE,
    ]
}

/// Every known peer: usable ones, and the others with the reason and an install hint.
pub(crate) fn discover() -> Vec<Result<Box<dyn Peer>, MissingPeer>> {
    let mut peers: Vec<Result<Box<dyn Peer>, MissingPeer>> = Vec::new();
    peers.push(match drivers::kernel::overlay_usable() {
        Ok(()) => Ok(Box::new(KernelOverlay)),
        Err(reason) => Err(MissingPeer {
            id: REFERENCE.into(),
            frontend: "kernel",
            reason,
            install_hint: None,
        }),
    });
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("fuse-overlayfs"));
    peers.push(FuseOverlayfs::find(
        "fuse-overlayfs-apt",
        Some(PathBuf::from("/usr/bin/fuse-overlayfs")),
        "apt-get install fuse-overlayfs",
    ));
    peers.push(FuseOverlayfs::find(
        "fuse-overlayfs-cargo",
        cargo_bin,
        "cargo install fuse-overlayfs",
    ));
    peers.extend(crate::squashfs_peers::discover());
    peers
}

/// The kernel's overlayfs over the layer directories, with the kernel's default
/// options: the reference.
struct KernelOverlay;

impl Peer for KernelOverlay {
    fn id(&self) -> &str {
        REFERENCE
    }

    fn frontend(&self) -> &'static str {
        "kernel"
    }

    fn description(&self) -> String {
        format!(
            "the kernel's overlayfs (Linux {}) mounted directly over the overlay2 layer directories, default options",
            host::kernel_release()
        )
    }

    fn mount(
        &self,
        layers: &LayerDirs,
        upper: Option<(&Path, &Path)>,
        mountpoint: &Path,
    ) -> Result<PeerMount, BenchError> {
        let spec = MountSpec::Overlay {
            images: Vec::new(),
            lowers: layers.lowers.clone(),
            upper: upper.map(|(u, w)| (u.to_path_buf(), w.to_path_buf())),
            options: Vec::new(),
            read_only: upper.is_none(),
        };
        KernelFrontend
            .mount(spec, mountpoint)
            .map_err(|e| BenchError::Mount(format!("kernel overlayfs: {e}")))?;
        Ok(PeerMount {
            unmount: Unmount::Kernel,
            daemon: None,
        })
    }
}

/// A `fuse-overlayfs` binary, run in the foreground so its pid is the daemon's.
struct FuseOverlayfs {
    id: &'static str,
    binary: PathBuf,
    version: String,
}

impl FuseOverlayfs {
    fn find(
        id: &'static str,
        binary: Option<PathBuf>,
        install: &str,
    ) -> Result<Box<dyn Peer>, MissingPeer> {
        let missing = |reason: String, hint: bool| MissingPeer {
            id: id.into(),
            frontend: "fuse",
            reason,
            install_hint: hint.then(|| install.to_string()),
        };
        let Some(binary) = binary.filter(|b| b.is_file()) else {
            return Err(missing("not installed".into(), true));
        };
        if !Path::new("/dev/fuse").exists() {
            return Err(missing("/dev/fuse is missing".into(), false));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(missing(
                "the benchmark mounts FUSE peers as root".into(),
                false,
            ));
        }
        let version = Command::new(&binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| missing(format!("cannot run {}: {e}", binary.display()), true))?;
        let text = String::from_utf8_lossy(&version.stdout).into_owned()
            + &String::from_utf8_lossy(&version.stderr);
        let version = parse_version(&text).unwrap_or_else(|| "unknown".into());
        Ok(Box::new(FuseOverlayfs {
            id,
            binary,
            version,
        }))
    }
}

/// The version from `fuse-overlayfs --version` output (`fuse-overlayfs: version 1.10`).
fn parse_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("fuse-overlayfs: version"))
        .map(|v| v.trim().to_string())
}

impl Peer for FuseOverlayfs {
    fn id(&self) -> &str {
        self.id
    }

    fn frontend(&self) -> &'static str {
        "fuse"
    }

    fn description(&self) -> String {
        format!(
            "fuse-overlayfs {} ({}) over the overlay2 layer directories",
            self.version,
            self.binary.display()
        )
    }

    fn mount(
        &self,
        layers: &LayerDirs,
        upper: Option<(&Path, &Path)>,
        mountpoint: &Path,
    ) -> Result<PeerMount, BenchError> {
        let options = fuse_overlayfs_options(&layers.lowers, upper)?;
        let mut command = Command::new(&self.binary);
        command.arg("-f").arg("-o").arg(&options).arg(mountpoint);
        spawn_fuse_daemon(self.id, command, mountpoint)
    }
}

/// Starts `command`, a FUSE daemon in the foreground serving `mountpoint`, and
/// waits until it serves; `id` names it in errors.
pub(crate) fn spawn_fuse_daemon(
    id: &str,
    mut command: Command,
    mountpoint: &Path,
) -> Result<PeerMount, BenchError> {
    let mut log = tempfile::tempfile().ctx("create a temporary file", "(anonymous)")?;
    let program = PathBuf::from(command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().ctx("duplicate", "(anonymous)")?)
        .spawn()
        .ctx("start", &program)?;
    let pid = child.id();
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if host::is_mountpoint(mountpoint).unwrap_or(false) {
            return Ok(PeerMount {
                unmount: Unmount::FuseChild(child),
                daemon: Some(pid),
            });
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let mut text = String::new();
            let _ = log.rewind();
            let _ = log.read_to_string(&mut text);
            return Err(BenchError::Mount(format!(
                "{} did not mount {}: {}",
                id,
                mountpoint.display(),
                match exited {
                    Some(status) => format!("exited with {status}: {}", text.trim()),
                    None => format!("not serving after {MOUNT_TIMEOUT:?}"),
                }
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The `-o` option string of fuse-overlayfs for these layers.
fn fuse_overlayfs_options(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
) -> Result<String, BenchError> {
    let mut paths: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    if let Some((u, w)) = upper {
        paths.extend([u, w]);
    }
    if let Some(bad) = paths
        .iter()
        .find(|p| p.to_string_lossy().contains([',', ':', '\\']))
    {
        return Err(BenchError::Mount(format!(
            "fuse-overlayfs cannot take {} in its options (',', ':' or '\\' in the path); choose another bench root",
            bad.display()
        )));
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let mut options = format!("lowerdir={lowerdir}");
    if let Some((u, w)) = upper {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_both_fuse_overlayfs_generations() {
        let old = "unknown argument ignored: lazytime\nfusermount3 version: 3.14.0\nfuse-overlayfs: version 1.10\n";
        assert_eq!(parse_version(old).as_deref(), Some("1.10"));
        assert_eq!(
            parse_version("fuse-overlayfs: version 2.0.0\n").as_deref(),
            Some("2.0.0")
        );
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn options_list_lowers_top_first_then_upper_and_work() {
        let lowers = vec![PathBuf::from("/s/top/diff"), PathBuf::from("/s/base/diff")];
        assert_eq!(
            fuse_overlayfs_options(&lowers, None).unwrap(),
            "lowerdir=/s/top/diff:/s/base/diff"
        );
        assert_eq!(
            fuse_overlayfs_options(&lowers, Some((Path::new("/u"), Path::new("/w")))).unwrap(),
            "lowerdir=/s/top/diff:/s/base/diff,upperdir=/u,workdir=/w"
        );
        assert!(fuse_overlayfs_options(&[PathBuf::from("/a,b")], None).is_err());
    }

    #[test]
    fn every_known_peer_is_discovered_or_explained() {
        let found = discover();
        let ids: Vec<String> = found
            .iter()
            .map(|p| match p {
                Ok(peer) => peer.id().to_string(),
                Err(m) => m.id.clone(),
            })
            .collect();
        assert_eq!(ids, known_ids());
        for p in &found {
            if let Err(m) = p {
                assert!(!m.reason.is_empty());
                if m.reason == "not installed" {
                    assert!(m.install_hint.is_some(), "{m:?}");
                }
            }
        }
    }
}
