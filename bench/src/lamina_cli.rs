//! The `lamina` binary, run as a subprocess against one store root.
//!
//! The benchmark drives Lamina exactly as a user does, so measured times include
//! what a user waits for (process start, opening the store, the mount table).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{BenchError, IoContext};

/// One row of `lamina drivers --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct DriverRow {
    /// The driver's name.
    pub driver: String,
    /// `kernel` or `fuse`.
    pub frontend: String,
    /// Whether this driver × frontend works here.
    pub available: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
}

#[derive(Deserialize)]
struct DriversOutput {
    drivers: Vec<DriverRow>,
}

/// Parses the output of `lamina drivers --format json`.
pub(crate) fn parse_driver_rows(json: &str) -> Result<Vec<DriverRow>, serde_json::Error> {
    Ok(serde_json::from_str::<DriversOutput>(json)?.drivers)
}

/// The `lamina` binary bound to one store root.
#[derive(Debug, Clone)]
pub(crate) struct LaminaCli {
    bin: PathBuf,
    root: PathBuf,
}

impl LaminaCli {
    /// Runs `bin` with `--root root`.
    pub fn new(bin: &Path, root: &Path) -> Self {
        LaminaCli {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    /// The same binary against another store root.
    pub fn with_root(&self, root: &Path) -> Self {
        LaminaCli::new(&self.bin, root)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `lamina --root ROOT args...` and returns its standard output.
    ///
    /// Output goes to anonymous files rather than pipes: a FUSE daemon started by
    /// `lamina mount` may keep inherited descriptors open for its whole life, and
    /// waiting for a pipe's end would then wait for the unmount.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String, BenchError> {
        let command = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let failed = |reason: String| BenchError::Lamina {
            command: command.clone(),
            reason,
        };
        let mut stdout = tempfile::tempfile().ctx("create a temporary file", "(anonymous)")?;
        let mut stderr = tempfile::tempfile().ctx("create a temporary file", "(anonymous)")?;
        let status = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().ctx("duplicate", "(anonymous)")?)
            .stderr(stderr.try_clone().ctx("duplicate", "(anonymous)")?)
            .status()
            .map_err(|e| failed(format!("cannot run {}: {e}", self.bin.display())))?;
        let out = read_all(&mut stdout)?;
        if status.success() {
            Ok(out)
        } else {
            let err = read_all(&mut stderr)?;
            let err = err.trim();
            Err(failed(if err.is_empty() {
                format!("exited with {status}")
            } else {
                err.to_string()
            }))
        }
    }

    /// The first line of `lamina --version`.
    pub fn version(&self) -> Result<String, BenchError> {
        Ok(self
            .run(&["--version"])?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// Every driver × frontend row of `lamina drivers`.
    pub fn drivers(&self) -> Result<Vec<DriverRow>, BenchError> {
        let out = self.run(&["drivers", "--format", "json"])?;
        parse_driver_rows(&out).map_err(|e| BenchError::Lamina {
            command: "drivers --format json".into(),
            reason: format!("unexpected output: {e}"),
        })
    }

    /// Imports the archive at `path` as `name`.
    pub fn import(&self, path: &Path, name: &str) -> Result<(), BenchError> {
        self.run(&[
            OsStr::new("import"),
            path.as_os_str(),
            OsStr::new("--name"),
            OsStr::new(name),
        ])
        .map(drop)
    }

    /// Creates container `name` of `image` in `driver`.
    pub fn create(&self, driver: &str, image: &str, name: &str) -> Result<(), BenchError> {
        self.run(&["create", "--driver", driver, image, name])
            .map(drop)
    }

    /// Removes container `name`.
    pub fn rm(&self, name: &str) -> Result<(), BenchError> {
        self.run(&["rm", name]).map(drop)
    }

    /// Mounts image `image` read-only with `driver` through `frontend` on
    /// `mountpoint`, with the extra `lamina mount` `options`.
    pub fn mount_image(
        &self,
        driver: &str,
        frontend: &str,
        image: &str,
        mountpoint: &Path,
        options: &[&str],
    ) -> Result<(), BenchError> {
        let mut args = vec![
            OsStr::new("mount"),
            OsStr::new("--driver"),
            OsStr::new(driver),
            OsStr::new("--frontend"),
            OsStr::new(frontend),
        ];
        args.extend(options.iter().map(OsStr::new));
        args.extend([OsStr::new(image), mountpoint.as_os_str()]);
        self.run(&args).map(drop)
    }

    /// Mounts container `name` read-write through `frontend` on `mountpoint`,
    /// with the extra `lamina mount` `options`.
    pub fn mount_container(
        &self,
        frontend: &str,
        name: &str,
        mountpoint: &Path,
        options: &[&str],
    ) -> Result<(), BenchError> {
        let mut args = vec![
            OsStr::new("mount"),
            OsStr::new("--frontend"),
            OsStr::new(frontend),
        ];
        args.extend(options.iter().map(OsStr::new));
        args.extend([OsStr::new(name), mountpoint.as_os_str()]);
        self.run(&args).map(drop)
    }

    /// Unmounts what `lamina mount` mounted on `mountpoint`.
    pub fn umount(&self, mountpoint: &Path) -> Result<(), BenchError> {
        self.run(&[OsStr::new("umount"), mountpoint.as_os_str()])
            .map(drop)
    }

    /// The pid of the daemon serving `mountpoint`, as recorded in `<root>/mounts.json`.
    pub fn daemon_pid(&self, mountpoint: &Path) -> Option<u32> {
        let canonical = std::fs::canonicalize(mountpoint).ok()?;
        let bytes = std::fs::read(self.root.join("mounts.json")).ok()?;
        let records: Vec<serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
        records.iter().find_map(|r| {
            let mp = r.get("mountpoint")?.as_str()?;
            if Path::new(mp) == canonical {
                r.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
            } else {
                None
            }
        })
    }
}

fn read_all(file: &mut File) -> Result<String, BenchError> {
    file.rewind().ctx("rewind", "(anonymous)")?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ctx("read", "(anonymous)")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_rows_are_read_from_lamina_drivers_json() {
        let json = r#"{
          "default": {"driver": "overlay2", "frontend": "kernel"},
          "drivers": [
            {"available": true, "driver": "overlay2", "frontend": "kernel", "reason": null},
            {"available": false, "driver": "overlay2", "frontend": "fuse", "reason": "no FUSE"}
          ]
        }"#;
        let rows = parse_driver_rows(json).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].available && rows[0].reason.is_none());
        assert_eq!(rows[1].frontend, "fuse");
        assert_eq!(rows[1].reason.as_deref(), Some("no FUSE"));
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let cli = LaminaCli::new(&dir.path().join("no-such-lamina"), dir.path());
        let err = cli.drivers().unwrap_err().to_string();
        assert!(err.contains("drivers --format json"), "{err}");
        assert!(err.contains("cannot run"), "{err}");
    }

    #[test]
    fn a_failing_command_reports_its_error_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-lamina");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'lamina: no such container' >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cli = LaminaCli::new(&script, dir.path());
        let err = cli.rm("c1").unwrap_err().to_string();
        assert!(
            err.contains("`lamina rm c1` failed: lamina: no such container"),
            "{err}"
        );
    }
}
