//! The OCI runtime `config.json` of a bundle, made from an image's config
//! (Entrypoint, Cmd, Env, WorkingDir, User), so that `runc run -b DIR` starts
//! the container on a root filesystem Lamina mounted at `DIR/rootfs`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use layer_store::ImageConfig;
use serde_json::{json, Value};

/// The capabilities a container process gets (Docker's default set).
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Resolves an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the
/// root filesystem's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == u || f[2] == u));
    let uid = match (u.parse::<u32>(), &entry) {
        (Ok(n), _) => n,
        (Err(_), Some(f)) => f[2]
            .parse()
            .with_context(|| format!("uid of {u} in /etc/passwd"))?,
        (Err(_), None) => {
            bail!("user {u:?} of the image is not in the root filesystem's /etc/passwd")
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                let f = group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .with_context(|| format!("group {g:?} of the image is not in /etc/group"))?;
                f[2].parse()
                    .with_context(|| format!("gid of {g} in /etc/group"))?
            }
        },
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok((uid, gid))
}

/// Who runs a rootless container: the host uid and gid its root maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootlessUser {
    /// Host uid of the container's root.
    pub uid: u32,
    /// Host gid of the container's root group.
    pub gid: u32,
}

/// The runtime spec for a bundle whose root filesystem is `rootfs`. With
/// `rootless`, the container gets a user namespace mapping its root to that
/// user (what `runc --rootless` and `runc spec --rootless` expect): no network
/// namespace of its own, `/sys` bound from the host.
pub fn runtime_spec(
    config: &ImageConfig,
    rootfs: &Path,
    read_only: bool,
    hostname: &str,
    rootless: Option<RootlessUser>,
) -> Result<Value> {
    let c = &config.config;
    let mut args: Vec<String> = c.entrypoint.clone().unwrap_or_default();
    args.extend(c.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        args = vec!["/bin/sh".into()];
    }
    let mut env = c.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let (uid, gid) = resolve_user(rootfs, c.user.as_deref().unwrap_or(""))?;
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": read_only},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if let Some(user) = rootless {
        let linux = &mut spec["linux"];
        linux["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}]);
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": user.uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": user.gid, "size": 1}]);
        let mounts = spec["mounts"].as_array_mut().expect("mounts is an array");
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                *m = json!({"destination": "/sys", "type": "none", "source": "/sys",
                            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_specs_map_root_to_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let config: ImageConfig =
            serde_json::from_str(r#"{"config":{"Cmd":["/bin/sh"]}}"#).unwrap();
        let user = RootlessUser {
            uid: 1234,
            gid: 567,
        };
        let spec = runtime_spec(&config, dir.path(), false, "h", Some(user)).unwrap();
        assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 1234);
        assert_eq!(spec["linux"]["gidMappings"][0]["hostID"], 567);
        let namespaces = spec["linux"]["namespaces"].to_string();
        assert!(namespaces.contains("user") && !namespaces.contains("network"));
        let plain = runtime_spec(&config, dir.path(), false, "h", None).unwrap();
        assert!(plain["linux"].get("uidMappings").is_none());
        assert!(plain["linux"]["namespaces"].to_string().contains("network"));
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(dir.path(), "").unwrap(), (0, 0));
        assert_eq!(resolve_user(dir.path(), "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(dir.path(), "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_user(dir.path(), "42:43").unwrap(), (42, 43));
        assert!(resolve_user(dir.path(), "nobody-here")
            .unwrap_err()
            .to_string()
            .contains("nobody-here"));
    }
}
