//! The runnable demo image behind `lamina sample`: a static busybox plus a
//! small app layer.

use std::env;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::compression::Compression;
use crate::image::ImageBuilder;
use crate::layer::LayerBuilder;

/// The busybox applets linked from `/bin` in the sample image.
pub const SAMPLE_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "mkdir", "rm", "mv", "cp", "touch", "find", "stat", "sleep", "id",
    "env", "true", "false", "grep", "sed", "head", "tail", "wc", "chmod", "ln", "date", "uname",
    "ps", "mount", "df", "du", "vi",
];

/// The file of layer 0 that layer 1 deletes.
pub const SAMPLE_DELETED_FILE: &str = "/etc/placeholder.txt";

/// The sample's `/etc/motd`.
pub const SAMPLE_MOTD: &str = "Welcome to the lamina sample image.\n";

/// `PATH` in the sample's config.
pub const SAMPLE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the sample image around the static busybox at `busybox` (streamed
/// from disk when the image is written):
///
/// - layer 0 (gzip): `/bin/busybox` and relative symlinks for
///   [`SAMPLE_APPLETS`], `/etc/passwd`, `/etc/group`, `/tmp` (1777), `/root`
///   (0700), `/var`, and [`SAMPLE_DELETED_FILE`];
/// - layer 1 (plain): `/app/hello.txt`, the executable `/app/run.sh`,
///   `/etc/motd`, and a whiteout of [`SAMPLE_DELETED_FILE`];
/// - config: `Cmd ["/bin/sh", "-c", "cat /etc/motd; ls /app"]`, `Env PATH`,
///   `WorkingDir /app`.
///
/// Fails if `busybox` is not a regular file.
pub fn sample_image(busybox: &Path) -> io::Result<ImageBuilder> {
    let meta = fs::metadata(busybox)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", busybox.display()),
        ));
    }
    let mut base = LayerBuilder::new()
        .dir("bin", 0o755)
        .host_file("bin/busybox", busybox, 0o755);
    for applet in SAMPLE_APPLETS {
        base = base.symlink(&format!("bin/{applet}"), "busybox");
    }
    let base = base
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
        .file(
            SAMPLE_DELETED_FILE,
            "This file is deleted by the second layer.\n",
            0o644,
        )
        .dir("tmp", 0o1777)
        .dir("root", 0o700)
        .dir("var", 0o755);
    let app = LayerBuilder::new()
        .dir("app", 0o755)
        .file("app/hello.txt", "Hello from a lamina layer!\n", 0o644)
        .file(
            "app/run.sh",
            "#!/bin/sh\necho \"running in $(pwd) as $(id -u)\"\ncat /app/hello.txt\n",
            0o755,
        )
        .file("etc/motd", SAMPLE_MOTD, 0o644)
        .whiteout(SAMPLE_DELETED_FILE);
    Ok(ImageBuilder::new()
        .layer(base, Compression::Gzip)
        .created_by("ADD busybox and a minimal /etc")
        .layer(app, Compression::None)
        .created_by("ADD app")
        .env(&[SAMPLE_PATH])
        .cmd(&["/bin/sh", "-c", "cat /etc/motd; ls /app"])
        .working_dir("/app")
        .label("org.opencontainers.image.title", "lamina sample"))
}

/// Finds a statically linked `busybox`: `/bin/busybox` (where Debian's
/// busybox-static installs it), `/usr/bin/busybox`, then the directories of
/// `PATH`. Dynamically linked busyboxes are skipped (they would not run
/// inside the image).
pub fn find_busybox() -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/bin/busybox"),
        PathBuf::from("/usr/bin/busybox"),
    ];
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("busybox")));
    }
    candidates.into_iter().find(|c| {
        fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            && is_static_elf(c).unwrap_or(false)
    })
}

/// Whether `path` is an ELF executable without a program interpreter
/// (`PT_INTERP`), i.e. statically linked (static-pie included).
pub fn is_static_elf(path: &Path) -> io::Result<bool> {
    let whole = fs::read(path)?;
    if whole.len() < 64 || &whole[..4] != b"\x7fELF" {
        return Ok(false);
    }
    let ident = &whole[..64];
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Ok(false),
    };
    let little = match ident[5] {
        1 => true,
        2 => false,
        _ => return Ok(false),
    };
    let u16_at = |b: &[u8], o: usize| {
        let a = [b[o], b[o + 1]];
        if little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        if little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(ident, 32), u16_at(ident, 54), u16_at(ident, 56))
    } else {
        (
            u64::from(u32_at(ident, 28)),
            u16_at(ident, 42),
            u16_at(ident, 44),
        )
    };
    for i in 0..u64::from(phnum) {
        let off = phoff + i * u64::from(phentsize);
        let Some(p_type) = usize::try_from(off)
            .ok()
            .filter(|o| o + 4 <= whole.len())
            .map(|o| u32_at(&whole, o))
        else {
            return Ok(false);
        };
        const PT_INTERP: u32 = 3;
        if p_type == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_are_not_static() {
        // The test binary itself is dynamically linked (it has PT_INTERP).
        let me = env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("script");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&script).unwrap());
    }

    #[test]
    fn sample_image_needs_a_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(sample_image(tmp.path()).is_err());
        assert!(sample_image(&tmp.path().join("missing")).is_err());
    }
}
