//! Ready-made images for tests: [`rich_image`] exercises every layer feature,
//! [`small_image`] is quick, [`arch_image`] differs per architecture.

use crate::compression::Compression;
use crate::image::ImageBuilder;
use crate::layer::LayerBuilder;
use crate::tar_out::LongNameFormat;

/// `security.capability` xattr value (VFS_CAP_REVISION_2, effective flag set)
/// granting the capabilities whose bits are set in `permitted`
/// (e.g. `1 << 13` for CAP_NET_RAW).
pub fn capability_xattr(permitted: u64) -> Vec<u8> {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&(VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE).to_le_bytes());
    v.extend_from_slice(&(permitted as u32).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&((permitted >> 32) as u32).to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// CAP_NET_RAW's bit.
const CAP_NET_RAW: u64 = 1 << 13;

/// Path of the [`rich_image`] file whose name is longer than 100 bytes
/// (GNU long-name encoding).
pub fn rich_long_name_path() -> String {
    format!("long/{}.txt", "n".repeat(150))
}

/// Path of the [`rich_image`] file whose path (not any single name) is longer
/// than 100 bytes.
pub fn rich_long_path() -> String {
    format!("long/{}/{}/file.txt", "a".repeat(60), "b".repeat(60))
}

/// Path of the [`rich_image`] file written with a PAX `path` record.
pub fn rich_pax_name_path() -> String {
    format!("long/{}.txt", "p".repeat(120))
}

/// Path of the [`rich_image`] file 30 directories deep (its parents are implied).
pub fn rich_deep_path() -> String {
    let dirs: Vec<String> = (1..=30).map(|i| format!("d{i:02}")).collect();
    format!("deep/{}/leaf.txt", dirs.join("/"))
}

/// Size of the [`rich_image`] sparse file `/var/lib/sparse.img`.
pub const RICH_SPARSE_SIZE: u64 = 4 << 20;

/// A five-layer image (gzip, plain, zstd, gzip with PAX long names, and an
/// empty gzip layer) that exercises every layer feature:
///
/// - layer 0 (base): setuid `/usr/bin/tool`, setgid `/usr/bin/gtool`, sticky
///   `/tmp`, `security.capability` on `/usr/bin/ping`, `user.comment` on
///   `/etc/config.txt`, an empty file, hard links `/usr/share/doc/readme` =
///   `/usr/share/doc/README` = `/opt/readme-link` (across directories), absolute
///   (`/usr/bin/sh-abs`) and relative (`/lib`, `/etc/localtime`) symlinks, a
///   home owned by 1000:1000, an implied parent (`/usr/share`);
/// - layer 1 (changes): whiteouts of `/remove-me.txt` and of the directory
///   `/cache`, `/etc/hostname` modified, `/data` made opaque (its new file comes
///   before the marker and stays), a fifo, char and block devices, two sparse
///   files (one with more than 4 regions), a setgid `/srv/www` owned by 33:33;
/// - layer 2 (recreate): `/cache` recreated with different content and mode,
///   `/etc/replaced` (a directory below) whited out and recreated as a file in
///   the same layer, `/etc/config.txt` changed in content, mode, owner and
///   xattr, `/etc/motd` turned from a file into a symlink, a >100-byte name
///   and a >100-byte path (GNU long names), unicode names, a 30-level deep path;
/// - layer 3 (pax): a PAX long name, a symlink with a >100-byte target, a hard
///   link with long name and target, a directory with a `user.*` xattr, a file
///   owned by uid 100000;
/// - layer 4: empty.
pub fn rich_image() -> ImageBuilder {
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nwww-data:x:33:33::/srv/www:/bin/false\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nalice:x:1000:\nwww-data:x:33:\n", 0o644)
        .file("etc/hostname", "base\n", 0o644)
        .file("etc/motd", "welcome\n", 0o644)
        .file("etc/empty", "", 0o644)
        .file("etc/config.txt", "v1\n", 0o644)
        .xattr("user.comment", "base config")
        .dir("etc/replaced", 0o755)
        .file("etc/replaced/child", "child\n", 0o644)
        .symlink("etc/localtime", "../usr/share/zoneinfo/UTC")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .dir("usr/lib", 0o755)
        .file("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o4755)
        .file("usr/bin/gtool", "#!/bin/sh\necho gtool\n", 0o2755)
        .file("usr/bin/ping", "#!/bin/sh\necho ping\n", 0o755)
        .xattr("security.capability", capability_xattr(CAP_NET_RAW))
        .symlink("usr/bin/sh-abs", "/usr/bin/tool")
        .symlink("lib", "usr/lib")
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/readme", "read me\n", 0o644)
        .hardlink("usr/share/doc/README", "usr/share/doc/readme")
        .dir("opt", 0o755)
        .hardlink("opt/readme-link", "usr/share/doc/readme")
        .dir("tmp", 0o1777)
        .dir("home", 0o755)
        .dir("home/alice", 0o750)
        .owner(1000, 1000)
        .file("home/alice/.profile", "export PS1='$ '\n", 0o644)
        .owner(1000, 1000)
        .mtime(1_650_000_000)
        .dir("data", 0o755)
        .file("data/a", "a\n", 0o644)
        .file("data/b", "b\n", 0o644)
        .dir("data/sub", 0o755)
        .file("data/sub/c", "c\n", 0o644)
        .dir("cache", 0o755)
        .file("cache/old-entry", "old\n", 0o644)
        .dir("cache/sub", 0o755)
        .file("cache/sub/old", "old\n", 0o644)
        .file("remove-me.txt", "doomed\n", 0o644)
        .dir("var", 0o755)
        .dir("var/lib", 0o755);

    let head = b"HEAD".repeat(1024);
    let tail: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8 + 1).collect();
    let many: Vec<(u64, Vec<u8>)> = (0..8u64)
        .map(|k| (k * 65_536 + 17, vec![b'a' + k as u8; 1000]))
        .collect();
    let many_refs: Vec<(u64, &[u8])> = many.iter().map(|(o, d)| (*o, d.as_slice())).collect();
    let changes = LayerBuilder::new()
        .whiteout("remove-me.txt")
        .whiteout("cache")
        .file("etc/hostname", "changed\n", 0o644)
        .mtime(1_700_000_000)
        .dir("data", 0o750)
        .file("data/new.txt", "new\n", 0o644)
        .opaque("data")
        .fifo("var/pipe", 0o620)
        .dir("dev", 0o755)
        .char_device("dev/null-like", 1, 3)
        .block_device("dev/loop-like", 7, 0)
        .sparse_file(
            "var/lib/sparse.img",
            RICH_SPARSE_SIZE,
            &[(0, &head), (1 << 20, b"middle"), ((3 << 20) + 100, &tail)],
        )
        .sparse_file("var/lib/many-holes.img", 1 << 20, &many_refs)
        .dir("srv", 0o755)
        .dir("srv/www", 0o2775)
        .owner(33, 33)
        .file("srv/www/index.html", "<h1>hi</h1>\n", 0o644)
        .owner(33, 33);

    let deep = rich_deep_path();
    let recreate = LayerBuilder::new()
        .dir("cache", 0o700)
        .file("cache/new-entry", "fresh\n", 0o644)
        .whiteout("etc/replaced")
        .file("etc/replaced", "now a file\n", 0o644)
        .file("etc/config.txt", "v2\n", 0o600)
        .owner(1000, 1000)
        .xattr("user.comment", "upper config")
        .symlink("etc/motd", "hostname")
        .dir("long", 0o755)
        .file(&rich_long_name_path(), "long name\n", 0o644)
        .file(&rich_long_path(), "long path\n", 0o644)
        .dir("données", 0o755)
        .file("données/日本語.txt", "こんにちは\n", 0o644)
        .file("données/émoji-🙂.txt", "🙂\n", 0o644)
        .file(&deep, "deep\n", 0o644);

    let long_target = format!("{}/{}", "t".repeat(70), "u".repeat(70));
    let pax = LayerBuilder::new()
        .long_names(LongNameFormat::Pax)
        .file(&rich_pax_name_path(), "pax name\n", 0o644)
        .symlink("long/pax-link", &long_target)
        .hardlink(
            &format!("long/{}.lnk", "h".repeat(110)),
            &rich_pax_name_path(),
        )
        .dir("opt/tagged", 0o755)
        .xattr("user.tag", "dir-xattr")
        .file("home/bigid", "big\n", 0o640)
        .owner(100_000, 100_000);

    ImageBuilder::new()
        .layer(base, Compression::Gzip)
        .created_by("ADD base")
        .layer(changes, Compression::None)
        .created_by("RUN changes")
        .empty_history("ENV LANG=C.UTF-8")
        .layer(recreate, Compression::Zstd)
        .created_by("RUN recreate")
        .layer(pax, Compression::Gzip)
        .created_by("RUN pax")
        .layer(LayerBuilder::new(), Compression::Gzip)
        .created_by("WORKDIR /")
        .env(&["PATH=/usr/bin:/bin", "LANG=C.UTF-8"])
        .entrypoint(&["/usr/bin/tool"])
        .cmd(&["--help"])
        .working_dir("/home/alice")
        .user("1000:1000")
        .label("org.example.fixture", "rich")
}

/// A two-layer image with a few files: `/etc/hello.txt` (modified by layer 1),
/// `/bin/run` (0755) and its symlink `/bin/run-link` (whited out by layer 1),
/// and `/data/x.txt` (added by layer 1, parent implied).
pub fn small_image() -> ImageBuilder {
    let l0 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/hello.txt", "hello\n", 0o644)
        .dir("bin", 0o755)
        .file("bin/run", "#!/bin/sh\necho run\n", 0o755)
        .symlink("bin/run-link", "run");
    let l1 = LayerBuilder::new()
        .file("etc/hello.txt", "hello again\n", 0o644)
        .whiteout("bin/run-link")
        .file("data/x.txt", "x\n", 0o644);
    ImageBuilder::new()
        .layer(l0, Compression::Gzip)
        .layer(l1, Compression::None)
        .cmd(&["/bin/run"])
}

/// A one-layer image for architecture `arch` whose `/etc/arch` holds `arch`
/// (for multi-platform layouts; see [`crate::OciLayoutBuilder::multi_platform`]).
pub fn arch_image(arch: &str) -> ImageBuilder {
    let layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/arch", format!("{arch}\n"), 0o644);
    let image = ImageBuilder::new()
        .architecture(arch)
        .layer(layer, Compression::Gzip);
    if arch == "arm64" {
        image.variant("v8")
    } else {
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_xattr_is_a_v2_cap() {
        let v = capability_xattr(CAP_NET_RAW);
        assert_eq!(v.len(), 20);
        assert_eq!(&v[..4], &[1, 0, 0, 2]);
        assert_eq!(&v[4..8], &[0, 0x20, 0, 0]);
    }

    #[test]
    fn fixture_paths_have_the_promised_lengths() {
        let long_name = rich_long_name_path();
        assert!(long_name.rsplit('/').next().unwrap().len() > 100);
        let long_path = rich_long_path();
        assert!(long_path.len() > 100 && long_path.split('/').all(|c| c.len() < 100));
        assert_eq!(rich_deep_path().matches('/').count(), 31);
    }
}
