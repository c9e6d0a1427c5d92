//! The fuse-overlayfs-compatible entry: `lamina fuse-overlay -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT`,
//! also reachable as an executable named `lamina-fuse-overlay` (a link to `lamina`)
//! that takes exactly fuse-overlayfs's arguments, so containers/storage can use
//! Lamina as its `mount_program`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fuse_frontend::IdMap;

/// The names under which `lamina` acts as a fuse-overlayfs replacement.
pub const PROGRAM_NAMES: &[&str] = &["lamina-fuse-overlay", "fuse-overlayfs"];

/// fuse-overlayfs options Lamina accepts and deliberately ignores (performance
/// knobs and labels that change nothing in its behaviour).
const IGNORED_OPTIONS: &[&str] = &[
    "fsync",
    "noacl",
    "threaded",
    "static_nlink",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "rw",
    "default_permissions",
    "allow_other",
    "allow_root",
    "max_read",
    "timeout",
    "xino",
    "redirect_dir",
    "index",
    "metacopy",
];

/// A parsed fuse-overlayfs command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FuseOverlayArgs {
    /// Lower directories, top first.
    pub lowers: Vec<PathBuf>,
    /// The writable upper directory.
    pub upper: Option<PathBuf>,
    /// The work directory.
    pub work: Option<PathBuf>,
    /// Mount read-only (`-o ro`, or no upper).
    pub read_only: bool,
    /// Serve in the foreground (`-f`).
    pub foreground: bool,
    /// Print debugging output (`-d`).
    pub debug: bool,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Options accepted but not acted upon, for the log.
    pub ignored: Vec<String>,
    /// `uidmapping=CONTAINER:HOST:LEN[:...]`.
    pub uid_map: IdMap,
    /// `gidmapping=CONTAINER:HOST:LEN[:...]`.
    pub gid_map: IdMap,
    /// `volatile`: never flush the upper to stable storage.
    pub volatile: bool,
    /// `xattr_permissions=2`: owners, modes and device nodes are kept in
    /// `user.containers.override_stat` (an unprivileged store).
    pub xattr_permissions: bool,
}

/// Splits a `lowerdir` value on `:` (a `\:` is a literal colon, as overlay allows).
fn split_lowers(value: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if i + 1 < value.len() => {
                cur.push(value[i + 1]);
                i += 2;
                continue;
            }
            b':' => out.push(PathBuf::from(OsStr::from_bytes(&std::mem::take(&mut cur)))),
            b => cur.push(b),
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(OsStr::from_bytes(&cur)));
    }
    out.into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// Splits an `-o` value on `,` (a `\,` is a literal comma).
fn split_options(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if i + 1 < value.len() && value[i + 1] == b',' => {
                cur.push(b',');
                i += 2;
                continue;
            }
            b',' => out.push(std::mem::take(&mut cur)),
            b => cur.push(b),
        }
        i += 1;
    }
    out.push(cur);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

impl FuseOverlayArgs {
    /// Parses fuse-overlayfs's arguments (without the program name).
    pub fn parse(args: &[OsString]) -> Result<FuseOverlayArgs> {
        let mut parsed = FuseOverlayArgs::default();
        let mut mountpoint = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let bytes = arg.as_bytes();
            match bytes {
                b"-o" => {
                    let value = it.next().context("-o needs a value")?;
                    parsed.apply_options(value.as_bytes())?;
                }
                b"-f" => parsed.foreground = true,
                b"-d" | b"--debug" => {
                    parsed.debug = true;
                    parsed.foreground = true;
                }
                b"-h" | b"--help" => bail!("usage: lamina-fuse-overlay -o lowerdir=A:B[,upperdir=U,workdir=W][,ro] MOUNTPOINT"),
                b"-V" | b"--version" => bail!("lamina-fuse-overlay {}", env!("CARGO_PKG_VERSION")),
                _ if bytes.starts_with(b"-o") => parsed.apply_options(&bytes[2..])?,
                _ if bytes.starts_with(b"-") => bail!("unknown option {}", arg.to_string_lossy()),
                _ => {
                    if mountpoint.replace(PathBuf::from(arg)).is_some() {
                        bail!("more than one mountpoint given");
                    }
                }
            }
        }
        parsed.mountpoint = mountpoint.context("no mountpoint given")?;
        if parsed.lowers.is_empty() {
            bail!("no lowerdir given (-o lowerdir=A:B)");
        }
        match (&parsed.upper, &parsed.work) {
            (Some(_), None) => bail!("upperdir needs a workdir"),
            (None, Some(_)) => bail!("workdir needs an upperdir"),
            (None, None) => parsed.read_only = true,
            (Some(_), Some(_)) => {}
        }
        Ok(parsed)
    }

    fn apply_options(&mut self, value: &[u8]) -> Result<()> {
        for opt in split_options(value) {
            let (key, val) = match opt.iter().position(|&b| b == b'=') {
                Some(i) => (&opt[..i], Some(&opt[i + 1..])),
                None => (&opt[..], None),
            };
            let path = |v: Option<&[u8]>| -> Result<PathBuf> {
                let v =
                    v.with_context(|| format!("{} needs a value", String::from_utf8_lossy(key)))?;
                Ok(PathBuf::from(OsStr::from_bytes(v)))
            };
            match key {
                b"lowerdir" => self.lowers = split_lowers(val.context("lowerdir needs a value")?),
                b"upperdir" => self.upper = Some(path(val)?),
                b"workdir" => self.work = Some(path(val)?),
                b"ro" => self.read_only = true,
                b"volatile" => self.volatile = true,
                b"uidmapping" | b"gidmapping" => {
                    let text = String::from_utf8_lossy(val.context("a mapping needs a value")?);
                    let map: IdMap = text.parse()?;
                    if key == b"uidmapping" {
                        self.uid_map = map;
                    } else {
                        self.gid_map = map;
                    }
                }
                b"xattr_permissions" => match val {
                    Some(b"0") => self.xattr_permissions = false,
                    Some(b"2") => self.xattr_permissions = true,
                    _ => bail!(
                        "xattr_permissions: only 0 and 2 (user.containers.override_stat) are supported"
                    ),
                },
                _ => {
                    let name = String::from_utf8_lossy(key).to_string();
                    if IGNORED_OPTIONS.contains(&name.as_str()) || name.starts_with("x-") {
                        self.ignored
                            .push(String::from_utf8_lossy(&opt).into_owned());
                    } else {
                        bail!("option {name} is not supported by lamina-fuse-overlay");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_what_containers_storage_passes() {
        let a = FuseOverlayArgs::parse(&args(&[
            "-o",
            "lowerdir=/l/A:/l/B,upperdir=/u,workdir=/w,fsync=0,context=\"system_u:object_r:container_file_t:s0\"",
            "/merged",
        ]))
        .unwrap();
        assert_eq!(a.lowers, vec![PathBuf::from("/l/A"), PathBuf::from("/l/B")]);
        assert_eq!(a.upper, Some(PathBuf::from("/u")));
        assert_eq!(a.work, Some(PathBuf::from("/w")));
        assert_eq!(a.mountpoint, PathBuf::from("/merged"));
        assert!(!a.read_only && !a.foreground);
        assert_eq!(a.ignored.len(), 2);
    }

    #[test]
    fn escaped_colons_and_commas_stay_in_paths() {
        let a = FuseOverlayArgs::parse(&args(&["-olowerdir=/a\\:b:/c\\,d", "-f", "/m"])).unwrap();
        assert_eq!(a.lowers, vec![PathBuf::from("/a:b"), PathBuf::from("/c,d")]);
        assert!(a.read_only, "no upper: read-only");
        assert!(a.foreground);
    }

    #[test]
    fn id_mappings_parse_like_fuse_overlayfs() {
        let a = FuseOverlayArgs::parse(&args(&[
            "-o",
            "lowerdir=/l,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1,xattr_permissions=2,volatile",
            "/m",
        ]))
        .unwrap();
        assert_eq!(a.uid_map.to_host(0), 1000);
        assert_eq!(a.uid_map.to_host(2), 100001);
        assert_eq!(a.gid_map.to_host(1), fuse_frontend::OVERFLOW_ID);
        assert!(a.xattr_permissions);
        assert!(a.volatile, "volatile is acted upon, not ignored");
        let err = FuseOverlayArgs::parse(&args(&["-o", "lowerdir=/l,uidmapping=0:1", "/m"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("triples"), "{err}");
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let err = |s: &[&str]| FuseOverlayArgs::parse(&args(s)).unwrap_err().to_string();
        assert!(err(&["-o", "upperdir=/u,workdir=/w", "/m"]).contains("lowerdir"));
        assert!(err(&["-o", "lowerdir=/l,upperdir=/u", "/m"]).contains("workdir"));
        assert!(err(&["-o", "lowerdir=/l"]).contains("mountpoint"));
        assert!(err(&["-o", "lowerdir=/l,plugins=/x.so", "/m"]).contains("plugins"));
        assert!(err(&["-o", "lowerdir=/l", "/m", "/n"]).contains("more than one"));
    }
}
