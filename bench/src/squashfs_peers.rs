//! The squashfs peers: the squashfs driver's very layer images
//! (`<store>/squashfs/<chain id>.sqfs`), mounted per sample by the kernel's
//! squashfs over loop devices or by `squashfuse`, one mount per layer, stacked
//! with a read-only kernel overlay — as Lamina's squashfs × kernel row stacks
//! them. They serve read-only views, so they are measured on the read
//! workloads only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use drivers::kernel::KernelFrontend;
use drivers::{Frontend, MountSpec};

use crate::error::{BenchError, IoContext};
use crate::host;
use crate::mounts::{undo_layers, Unmount};
use crate::peers::{spawn_fuse_daemon, LayerDirs, MissingPeer, Peer, PeerMount};

/// The id of the kernel squashfs peer.
pub(crate) const KERNEL_SQUASHFS: &str = "kernel-squashfs";
/// The id of the squashfuse peer.
pub(crate) const SQUASHFUSE: &str = "squashfuse";

/// Where Debian installs squashfuse.
const SQUASHFUSE_BINARY: &str = "/usr/bin/squashfuse";

/// Both squashfs peers: usable, or with the reason and an install hint.
pub(crate) fn discover() -> Vec<Result<Box<dyn Peer>, MissingPeer>> {
    vec![kernel_squashfs(), squashfuse(Path::new(SQUASHFUSE_BINARY))]
}

fn kernel_squashfs() -> Result<Box<dyn Peer>, MissingPeer> {
    let missing = |reason: String| MissingPeer {
        id: KERNEL_SQUASHFS.into(),
        frontend: "kernel",
        reason,
        install_hint: None,
    };
    drivers::kernel::overlay_usable().map_err(missing)?;
    let filesystems = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| missing(format!("cannot read /proc/filesystems: {e}")))?;
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("squashfs"))
    {
        return Err(missing(
            "the kernel has no squashfs (modprobe squashfs)".into(),
        ));
    }
    Ok(Box::new(SquashfsStack {
        kind: LayerMounter::Kernel,
    }))
}

fn squashfuse(binary: &Path) -> Result<Box<dyn Peer>, MissingPeer> {
    let missing = |reason: String, hint: bool| MissingPeer {
        id: SQUASHFUSE.into(),
        frontend: "fuse",
        reason,
        install_hint: hint.then(|| "apt-get install squashfuse".to_string()),
    };
    if !binary.is_file() {
        return Err(missing("not installed".into(), true));
    }
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
    drivers::kernel::overlay_usable().map_err(|reason| {
        missing(
            format!("its layers are stacked with overlay: {reason}"),
            false,
        )
    })?;
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| missing(format!("cannot run {}: {e}", binary.display()), true))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok(Box::new(SquashfsStack {
        kind: LayerMounter::Squashfuse {
            binary: binary.to_path_buf(),
            version: parse_squashfuse_version(&text).unwrap_or_else(|| "unknown".into()),
        },
    }))
}

/// The version from `squashfuse --version` (`squashfuse 0.1.104 (c) 2012 ...`).
fn parse_squashfuse_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("squashfuse "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// How one layer image is mounted.
enum LayerMounter {
    /// `mount -t squashfs -o ro,loop` (the loop device is freed on unmount).
    Kernel,
    /// A `squashfuse` daemon in the foreground.
    Squashfuse {
        /// The binary.
        binary: PathBuf,
        /// Its version.
        version: String,
    },
}

impl LayerMounter {
    fn mount(&self, image: &Path, dir: &Path) -> Result<PeerMount, BenchError> {
        match self {
            LayerMounter::Kernel => {
                let out = Command::new("mount")
                    .args(["-t", "squashfs", "-o", "ro,loop"])
                    .arg(image)
                    .arg(dir)
                    .stdin(Stdio::null())
                    .output()
                    .ctx("run mount for", image)?;
                if !out.status.success() {
                    return Err(BenchError::Mount(format!(
                        "mount -t squashfs {}: {}",
                        image.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(PeerMount {
                    unmount: Unmount::Kernel,
                    daemon: None,
                })
            }
            LayerMounter::Squashfuse { binary, .. } => {
                let mut command = Command::new(binary);
                command.arg("-f").arg(image).arg(dir);
                spawn_fuse_daemon(SQUASHFUSE, command, dir)
            }
        }
    }
}

/// A squashfs peer: every layer image mounted by `kind`, stacked with a
/// read-only kernel overlay (a single layer is the view itself).
struct SquashfsStack {
    kind: LayerMounter,
}

impl Peer for SquashfsStack {
    fn id(&self) -> &str {
        match self.kind {
            LayerMounter::Kernel => KERNEL_SQUASHFS,
            LayerMounter::Squashfuse { .. } => SQUASHFUSE,
        }
    }

    fn frontend(&self) -> &'static str {
        match self.kind {
            LayerMounter::Kernel => "kernel",
            LayerMounter::Squashfuse { .. } => "fuse",
        }
    }

    fn description(&self) -> String {
        let under = "read-only kernel overlay, over the squashfs driver's layer images";
        match &self.kind {
            LayerMounter::Kernel => format!(
                "the kernel's squashfs (Linux {}): each layer image loop-mounted, under a {under}",
                host::kernel_release()
            ),
            LayerMounter::Squashfuse { binary, version } => format!(
                "squashfuse {version} ({}): one daemon per layer image, under a {under} \
                 (no daemon memory reported for several layers: there are several daemons)",
                binary.display()
            ),
        }
    }

    fn uses_squashfs_images(&self) -> bool {
        true
    }

    fn read_only(&self) -> bool {
        true
    }

    fn mount(
        &self,
        layers: &LayerDirs,
        upper: Option<(&Path, &Path)>,
        mountpoint: &Path,
    ) -> Result<PeerMount, BenchError> {
        if upper.is_some() {
            return Err(BenchError::Mount(format!(
                "{} serves read-only views only",
                self.id()
            )));
        }
        if layers.squashfs_images.is_empty() {
            return Err(BenchError::Mount(format!("{}: no layers", self.id())));
        }
        if let [image] = layers.squashfs_images.as_slice() {
            return self.kind.mount(image, mountpoint);
        }
        let mut name = mountpoint.as_os_str().to_owned();
        name.push(".layers");
        let dir = PathBuf::from(name);
        std::fs::create_dir(&dir).ctx("create", &dir)?;
        let mut mounted: Vec<(PathBuf, Unmount)> = Vec::new();
        let stacked = (|| {
            for (i, image) in layers.squashfs_images.iter().enumerate() {
                let at = dir.join(i.to_string());
                std::fs::create_dir(&at).ctx("create", &at)?;
                match self.kind.mount(image, &at) {
                    Ok(m) => mounted.push((at, m.unmount)),
                    Err(e) => {
                        let _ = std::fs::remove_dir(&at);
                        return Err(e);
                    }
                }
            }
            let spec = MountSpec::Overlay {
                images: Vec::new(),
                lowers: mounted.iter().map(|(p, _)| p.clone()).collect(),
                upper: None,
                options: Vec::new(),
                read_only: true,
            };
            KernelFrontend
                .mount(spec, mountpoint)
                .map(|_| ())
                .map_err(|e| BenchError::Mount(format!("{}: overlay: {e}", self.id())))
        })();
        match stacked {
            Ok(()) => Ok(PeerMount {
                unmount: Unmount::Layered {
                    view: Box::new(Unmount::Kernel),
                    layers: mounted,
                    dir,
                },
                daemon: None,
            }),
            Err(e) => {
                let _ = undo_layers(mounted, &dir);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_squashfuse_version_is_read_from_its_banner() {
        assert_eq!(
            parse_squashfuse_version("squashfuse 0.1.104 (c) 2012 Dave Vasilevsky\n\nUsage: ...")
                .as_deref(),
            Some("0.1.104")
        );
        assert_eq!(parse_squashfuse_version("fuse: unknown option"), None);
    }

    #[test]
    fn a_missing_squashfuse_is_skipped_with_the_apt_command() {
        let dir = tempfile::tempdir().unwrap();
        let Err(missing) = squashfuse(&dir.path().join("squashfuse")) else {
            panic!("a missing binary was found");
        };
        assert_eq!(missing.id, SQUASHFUSE);
        assert_eq!(missing.reason, "not installed");
        assert_eq!(
            missing.install_hint.as_deref(),
            Some("apt-get install squashfuse")
        );
    }
}
