//! Differential tests against the kernel's overlayfs: two identical stacks, one
//! mounted by the kernel and one by the FUSE frontend, get the same operations;
//! every operation must give the same result (errno, data) on both, and in the
//! end the merged trees and the upper directories must match.
//!
//! The kernel runs with `index=on,redirect_dir=off,metacopy=off` (see
//! `common::KERNEL_OPTIONS`). Without redirects the kernel refuses to rename a
//! directory that lower layers merge into (`EXDEV`), and userspace (`mv`)
//! copies it instead; the harness does that copy on the kernel side, while the
//! FUSE frontend renames such directories itself.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use common::*;
use drivers::WhiteoutFormat;
use fuse_frontend::FuseOptions;
use proptest::prelude::*;

/// The paths operations act on.
const PATHS: &[&str] = &[
    "a", "b", "c", "d", "d/a", "d/b", "d/c", "d/e", "d/e/a", "d/h3", "o", "o/a", "o/b", "h1", "h2",
    "s", "n", "f", "null", "caps", "t", "t/a", "u", "u/a", "w", "w/a",
];

/// The lower hard links of the fixture.
const ALIASES: &[&str] = &["h1", "h2", "d/h3"];

fn fixture() -> Vec<Vec<Item>> {
    let top = vec![
        Item::Dir("d", 0o755),
        Item::File("d/b", b"top b", 0o600),
        Item::Whiteout("b"),
        Item::Dir("o", 0o700),
        Item::Opaque("o"),
        Item::File("o/a", b"opaque a", 0o644),
        Item::Xattr("o/a", "user.t", b"top"),
        Item::Fifo("f"),
        Item::Dir("t", 0o755),
        Item::File("t/a", b"dir over a file", 0o644),
        Item::File("u", b"file over a dir", 0o644),
        Item::Whiteout("w"),
    ];
    let bottom = vec![
        Item::File("a", b"bottom a", 0o644),
        Item::Xattr("a", "user.t", b"va"),
        Item::Owner("a", 1000, 1000),
        Item::File("b", b"deleted b", 0o644),
        Item::Dir("d", 0o751),
        Item::File("d/a", b"d/a bottom", 0o640),
        Item::File("d/b", b"d/b bottom", 0o644),
        Item::Dir("d/e", 0o755),
        Item::File("d/e/a", b"deep", 0o755),
        Item::Dir("o", 0o755),
        Item::File("o/b", b"hidden by opaque", 0o644),
        Item::File("h1", b"linked", 0o644),
        Item::Hardlink("h2", "h1"),
        Item::Hardlink("d/h3", "h1"),
        Item::Symlink("s", "a"),
        Item::CharDev("null", 1, 3),
        Item::File("sparse", b"", 0o644),
        Item::File("caps", b"\x7fELF", 0o755),
        Item::Xattr("caps", "security.capability", CAPS),
        Item::File("t", b"file under a dir", 0o644),
        Item::Dir("u", 0o755),
        Item::File("u/a", b"dir under a file", 0o644),
        Item::Dir("w", 0o755),
        Item::File("w/a", b"deleted dir's file", 0o644),
    ];
    vec![top, bottom]
}

/// `security.capability` granting CAP_NET_RAW (revision 2, effective).
const CAPS: &[u8] = &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RenameKind {
    Plain,
    NoReplace,
    Exchange,
}

/// One operation on the merged view.
#[derive(Debug, Clone)]
enum Op {
    Write(&'static str, Vec<u8>),
    Append(&'static str, Vec<u8>),
    Truncate(&'static str, u64),
    Chmod(&'static str, u32),
    Chown(&'static str, u32, u32),
    Utime(&'static str, i64),
    Unlink(&'static str),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Rename(&'static str, &'static str, RenameKind),
    Symlink(&'static str, &'static str),
    Link(&'static str, &'static str),
    SetXattr(&'static str, Vec<u8>),
    RemoveXattr(&'static str),
    Mkfifo(&'static str),
    Mknod(&'static str, u32, u32),
    Read(&'static str),
    Stat(&'static str),
    List(&'static str),
    ListXattr(&'static str),
    Access(&'static str, i32),
    Fallocate(&'static str, u64, u64),
    PunchHole(&'static str, u64, u64),
    SeekData(&'static str, i64, i32),
    CopyRange(&'static str, &'static str, u64),
    Fsync(&'static str),
    WriteAt(&'static str, u64, Vec<u8>),
    Statfs,
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What an operation returned: errno (0 for success) and any data it produced.
type Outcome = (i32, Vec<u8>);

fn outcome(r: io::Result<Vec<u8>>) -> Outcome {
    match r {
        Ok(data) => (0, data),
        Err(e) => (e.raw_os_error().unwrap_or(-1), Vec::new()),
    }
}

fn rename_flags(kind: RenameKind) -> libc::c_uint {
    match kind {
        RenameKind::Plain => 0,
        RenameKind::NoReplace => libc::RENAME_NOREPLACE,
        RenameKind::Exchange => libc::RENAME_EXCHANGE,
    }
}

/// Opens `path` without blocking (fifos among the paths must not hang the harness).
fn open_rw(path: &Path, read: bool, write: bool) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Runs `op` inside the merged view at `root`.
fn run(root: &Path, op: &Op) -> io::Result<Vec<u8>> {
    let at = |p: &str| root.join(p);
    let none = |r: io::Result<()>| r.map(|()| Vec::new());
    match op {
        Op::Write(p, data) => none(
            fs::OpenOptions::new()
                .custom_flags(libc::O_NONBLOCK)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(at(p))
                .and_then(|mut f| f.write_all(data)),
        ),
        Op::Append(p, data) => none(
            fs::OpenOptions::new()
                .custom_flags(libc::O_NONBLOCK)
                .append(true)
                .open(at(p))
                .and_then(|mut f| f.write_all(data)),
        ),
        Op::WriteAt(p, off, data) => {
            none(open_rw(&at(p), false, true).and_then(|f| f.write_all_at(data, *off)))
        }
        // SAFETY: valid path string.
        Op::Truncate(p, len) => none(check(unsafe {
            libc::truncate(c(&at(p)).as_ptr(), *len as i64)
        })),
        Op::Chmod(p, mode) => none(fs::set_permissions(
            at(p),
            fs::Permissions::from_mode(*mode),
        )),
        Op::Chown(p, uid, gid) => none(std::os::unix::fs::lchown(at(p), Some(*uid), Some(*gid))),
        Op::Utime(p, t) => {
            let ts = libc::timespec {
                tv_sec: *t,
                tv_nsec: 0,
            };
            // SAFETY: valid path string and two timespecs.
            none(check(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c(&at(p)).as_ptr(),
                    [ts, ts].as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            }))
        }
        Op::Unlink(p) => none(fs::remove_file(at(p))),
        Op::Mkdir(p) => none(fs::create_dir(at(p))),
        Op::Rmdir(p) => none(fs::remove_dir(at(p))),
        Op::Rename(from, to, kind) => {
            // SAFETY: valid path strings.
            none(check(unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    c(&at(from)).as_ptr(),
                    libc::AT_FDCWD,
                    c(&at(to)).as_ptr(),
                    rename_flags(*kind),
                )
            }))
        }
        Op::Symlink(target, p) => none(std::os::unix::fs::symlink(target, at(p))),
        Op::Link(from, to) => none(fs::hard_link(at(from), at(to))),
        Op::SetXattr(p, value) => none(lset_xattr(&at(p), "user.t", value)),
        Op::RemoveXattr(p) => {
            let name = CString::new("user.t").unwrap();
            // SAFETY: valid strings.
            none(check(unsafe {
                libc::lremovexattr(c(&at(p)).as_ptr(), name.as_ptr())
            }))
        }
        Op::Mkfifo(p) => none(mknod(&at(p), libc::S_IFIFO | 0o640, 0)),
        Op::Mknod(p, major, minor) => none(mknod(
            &at(p),
            libc::S_IFCHR | 0o600,
            libc::makedev(*major, *minor),
        )),
        Op::Read(p) => open_rw(&at(p), true, false).and_then(|mut f| {
            let mut v = Vec::new();
            io::Read::read_to_end(&mut f, &mut v)?;
            Ok(v)
        }),
        Op::Stat(p) => fs::symlink_metadata(at(p)).map(|m| {
            let nlink = if m.is_dir() { 0 } else { m.nlink() };
            format!(
                "{:o} {}:{} {} {} {}",
                m.mode(),
                m.uid(),
                m.gid(),
                if m.is_dir() { 0 } else { m.size() },
                nlink,
                m.rdev()
            )
            .into_bytes()
        }),
        Op::List(p) => fs::read_dir(at(p)).and_then(|rd| {
            let mut names: Vec<String> = rd
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<_>>()?;
            names.sort();
            Ok(names.join("\n").into_bytes())
        }),
        Op::ListXattr(p) => {
            let mut buf = vec![0u8; 4096];
            // SAFETY: valid string and buffer.
            let n =
                unsafe { libc::llistxattr(c(&at(p)).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            let mut names: Vec<&[u8]> = buf.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
            names.sort();
            Ok(names.join(&b'\n'))
        }
        // SAFETY: valid path string.
        Op::Access(p, mask) => none(check(unsafe { libc::access(c(&at(p)).as_ptr(), *mask) })),
        Op::Fallocate(p, off, len) | Op::PunchHole(p, off, len) => {
            let mode = if matches!(op, Op::PunchHole(..)) {
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
            } else {
                0
            };
            let f = open_rw(&at(p), false, true)?;
            // SAFETY: valid descriptor.
            none(check(unsafe {
                libc::fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    mode,
                    *off as i64,
                    *len as i64,
                )
            }))
        }
        Op::SeekData(p, off, whence) => {
            let f = open_rw(&at(p), true, false)?;
            // SAFETY: valid descriptor.
            let r = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), *off, *whence) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r.to_string().into_bytes())
            }
        }
        Op::CopyRange(from, to, len) => {
            let src = open_rw(&at(from), true, false)?;
            let dst = open_rw(&at(to), false, true)?;
            let (mut off_in, mut off_out) = (0i64, 0i64);
            // SAFETY: valid descriptors and offsets.
            let n = unsafe {
                libc::copy_file_range(
                    std::os::fd::AsRawFd::as_raw_fd(&src),
                    &mut off_in,
                    std::os::fd::AsRawFd::as_raw_fd(&dst),
                    &mut off_out,
                    *len as usize,
                    0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n.to_string().into_bytes())
            }
        }
        Op::Fsync(p) => none(open_rw(&at(p), false, true).and_then(|f| f.sync_all())),
        Op::Statfs => {
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: valid string and output buffer.
            check(unsafe { libc::statvfs(c(root).as_ptr(), &mut st) })?;
            Ok(format!("{} {}", st.f_blocks, st.f_bsize).into_bytes())
        }
    }
}

/// Copies `from` to `to` keeping every attribute and the hard links inside,
/// then removes `from`: what `mv` does when rename(2) says `EXDEV`.
fn move_by_copy(from: &Path, to: &Path) -> io::Result<()> {
    if let Ok(m) = fs::symlink_metadata(to) {
        if m.is_dir() {
            fs::remove_dir(to)?;
        }
    }
    let mut links = std::collections::HashMap::new();
    copy_tree(from, to, &mut links)?;
    fs::remove_dir_all(from)
}

fn copy_attrs(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid string and buffer.
    let n = unsafe { libc::llistxattr(c(from).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n > 0 {
        buf.truncate(n as usize);
        for name in buf.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            if let Ok(v) = lget_xattr(from, &name) {
                let _ = lset_xattr(to, &name, &v);
            }
        }
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: valid string and two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(to).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

fn copy_tree(
    from: &Path,
    to: &Path,
    links: &mut std::collections::HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()), links)?;
        }
    } else if meta.nlink() > 1 && links.contains_key(&(meta.dev(), meta.ino())) {
        return fs::hard_link(&links[&(meta.dev(), meta.ino())], to);
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if ft.is_file() {
        fs::write(to, fs::read(from)?)?;
    } else {
        mknod(to, meta.mode(), meta.rdev())?;
    }
    if !ft.is_dir() && meta.nlink() > 1 {
        links.insert((meta.dev(), meta.ino()), to.to_path_buf());
    }
    copy_attrs(from, to, &meta)
}

/// Whether the tree at `dir` holds a file hard-linked to a name outside it.
fn has_outside_links(dir: &Path) -> bool {
    fn walk(p: &Path, seen: &mut std::collections::HashMap<(u64, u64), (u64, u64)>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            for e in fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), seen);
            }
        } else if m.nlink() > 1 {
            seen.entry((m.dev(), m.ino())).or_insert((0, m.nlink())).0 += 1;
        }
    }
    let mut seen = std::collections::HashMap::new();
    walk(dir, &mut seen);
    seen.values().any(|(inside, nlink)| inside < nlink)
}

/// The same stack mounted by the kernel and by the FUSE frontend.
struct Pair {
    kernel_mount: Option<KernelOverlay>,
    fuse_mount: Option<FuseGuard>,
    kernel: StackDirs,
    fuse: StackDirs,
    format: WhiteoutFormat,
    base: tempfile::TempDir,
}

impl Pair {
    /// The kernel over overlay-format layers; the FUSE frontend over the same
    /// layers written in `format`.
    fn new(layers: &[Vec<Item>], options: &FuseOptions, format: WhiteoutFormat) -> Pair {
        let base = tempfile::tempdir().unwrap();
        let kernel = StackDirs::build(&base.path().join("k"), layers, OVERLAY);
        let fuse = StackDirs::build(&base.path().join("f"), layers, format);
        let kernel_mount = KernelOverlay::mount(&kernel);
        let fuse_mount = FuseGuard::mount(fuse.spec(format, true), &fuse.merged, options);
        Pair {
            kernel_mount: Some(kernel_mount),
            fuse_mount: Some(fuse_mount),
            kernel,
            fuse,
            format,
            base,
        }
    }

    /// Runs `op` on both mounts; returns a description of any difference.
    fn apply(&self, op: &Op) -> Result<(), String> {
        if let Op::Rename(from, to, RenameKind::Exchange) = op {
            let is_dir = |p: &str| {
                fs::symlink_metadata(self.kernel.merged.join(p)).is_ok_and(|m| m.is_dir())
            };
            if is_dir(from) || is_dir(to) {
                // The kernel cannot exchange merged directories without redirects, nor can userspace.
                return Ok(());
            }
        }
        let mut k = outcome(run(&self.kernel.merged, op));
        if let (Op::Rename(from, to, kind), libc::EXDEV) = (op, k.0) {
            let (from, to) = (self.kernel.merged.join(from), self.kernel.merged.join(to));
            if has_outside_links(&from) {
                // Moving by copy would break hard links leaving the subtree, which a
                // rename keeps (as the FUSE frontend does): not comparable, skip it.
                return Ok(());
            }
            let target_busy = fs::read_dir(&to)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            k = if *kind == RenameKind::NoReplace && fs::symlink_metadata(&to).is_ok() {
                (libc::EEXIST, Vec::new())
            } else if target_busy {
                (libc::ENOTEMPTY, Vec::new())
            } else {
                outcome(move_by_copy(&from, &to).map(|()| Vec::new()))
            };
        }
        let f = outcome(run(&self.fuse.merged, op));
        if k != f {
            return Err(format!(
                "{op:?}: kernel gave errno {} {:?}, FUSE gave errno {} {:?}",
                k.0,
                String::from_utf8_lossy(&k.1),
                f.0,
                String::from_utf8_lossy(&f.1)
            ));
        }
        Ok(())
    }

    /// Compares the merged trees and the upper directories.
    fn compare(&self) -> Result<(), String> {
        let merged = diff_merged(&scan(&self.kernel.merged), &scan(&self.fuse.merged));
        if !merged.is_empty() {
            return Err(format!("merged trees differ:\n  {}", merged.join("\n  ")));
        }
        // The FUSE upper, read as the next layer over the lowers, gives the same tree.
        let view = self.base.path().join("replay");
        fs::create_dir_all(&view).unwrap();
        let replay = FuseGuard::mount(
            upper_as_layer(&self.fuse, self.format),
            &view,
            &fuse_options(true),
        );
        let replayed = diff_merged(&scan(&self.kernel.merged), &scan(&view));
        replay.unmount();
        if !replayed.is_empty() {
            return Err(format!(
                "the upper read as a layer differs:\n  {}",
                replayed.join("\n  ")
            ));
        }
        if self.format != OVERLAY {
            return Ok(());
        }
        let uppers = diff_uppers(&scan(&self.kernel.upper), &scan(&self.fuse.upper), ALIASES);
        if !uppers.is_empty() {
            return Err(format!(
                "upper directories differ:\n  {}\n--- kernel upper ---\n{}--- FUSE upper ---\n{}",
                uppers.join("\n  "),
                scan(&self.kernel.upper),
                scan(&self.fuse.upper)
            ));
        }
        Ok(())
    }

    /// Runs `ops` on both, then compares; stops at the first difference.
    fn run_all(&self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op).map_err(|e| format!("operation {i}: {e}"))?;
        }
        self.compare()
    }

    fn close(mut self) {
        if let Some(f) = self.fuse_mount.take() {
            f.unmount();
        }
        drop(self.kernel_mount.take());
    }
}

fn differential(name: &str, ops: &[Op], options: &FuseOptions) {
    if !gate(name) {
        return;
    }
    let pair = Pair::new(&fixture(), options, OVERLAY);
    if let Err(e) = pair.run_all(ops) {
        panic!("{name}: {e}\nsequence: {ops:#?}");
    }
    pair.close();
}

fn file_ops() -> Vec<Op> {
    vec![
        Op::Read("a"),
        Op::Stat("a"),
        Op::ListXattr("a"),
        Op::Append("a", b" appended".to_vec()),
        Op::Read("a"),
        Op::Stat("a"),
        Op::Write("c", b"new file".to_vec()),
        Op::Write("b", b"recreated over a whiteout".to_vec()),
        Op::Truncate("d/a", 3),
        Op::Truncate("d/e/a", 10_000),
        Op::WriteAt("d/b", 2, b"XY".to_vec()),
        Op::Read("d/b"),
        Op::Chmod("o/a", 0o4755),
        Op::Chown("d/e", 7, 8),
        Op::Chown("s", 5, 6),
        Op::Utime("d/e/a", 1_234_567_890),
        Op::Utime("s", 1_111_111_111),
        Op::SetXattr("a", b"changed".to_vec()),
        Op::SetXattr("d", b"on a dir".to_vec()),
        Op::RemoveXattr("o/a"),
        Op::RemoveXattr("d/a"),
        Op::ListXattr("o/a"),
        Op::Chown("caps", 1, 1),
        Op::Stat("caps"),
        Op::Access("d/a", libc::R_OK),
        Op::Access("a", libc::X_OK),
        Op::Access("d", libc::X_OK | libc::W_OK),
        Op::Fsync("c"),
        Op::Statfs,
    ]
}

fn namespace_ops() -> Vec<Op> {
    vec![
        Op::List(""),
        Op::List("d"),
        Op::List("o"),
        Op::Unlink("a"),
        Op::Unlink("a"),
        Op::Unlink("d/e"),
        Op::Rmdir("d"),
        Op::Rmdir("d/e/a"),
        Op::Unlink("d/e/a"),
        Op::Rmdir("d/e"),
        Op::List("d"),
        Op::Mkdir("d/e"),
        Op::List("d/e"),
        Op::Mkdir("a"),
        Op::Mkdir("o"),
        Op::Symlink("../a", "d/link"),
        Op::Symlink("x", "s"),
        Op::Mkfifo("n"),
        Op::Mknod("d/tty", 5, 0),
        Op::Mknod("d/whiteout-lookalike", 0, 0),
        Op::Stat("d/tty"),
        Op::Unlink("f"),
        Op::Unlink("null"),
        Op::Rmdir("o"),
        Op::Unlink("o/a"),
        Op::Rmdir("o"),
        Op::List(""),
        Op::Stat("o"),
    ]
}

fn rename_ops() -> Vec<Op> {
    vec![
        Op::Rename("a", "c", RenameKind::Plain),
        Op::Rename("c", "d/a", RenameKind::NoReplace),
        Op::Rename("c", "d/a", RenameKind::Plain),
        Op::Rename("d/b", "h1", RenameKind::Exchange),
        Op::Read("h1"),
        Op::Read("h2"),
        Op::Rename("d/e", "e", RenameKind::Plain),
        Op::List("e"),
        Op::Rename("e", "d/e", RenameKind::NoReplace),
        Op::Mkdir("x"),
        Op::Write("x/file", b"in a new dir".to_vec()),
        Op::Rename("x", "o", RenameKind::Plain),
        Op::Rmdir("o/a"),
        Op::Unlink("o/a"),
        Op::Rename("x", "o", RenameKind::Plain),
        Op::List("o"),
        Op::Rename("o", "d", RenameKind::Plain),
        Op::Rename("d", "moved", RenameKind::Plain),
        Op::List("moved"),
        Op::Rename("moved/e", "moved/a", RenameKind::Plain),
        Op::Rename("s", "moved/s", RenameKind::Plain),
        Op::Read("moved/s"),
        Op::Mkdir("d"),
        Op::List("d"),
    ]
}

fn link_ops() -> Vec<Op> {
    vec![
        Op::Stat("h1"),
        Op::Append("h1", b" and changed".to_vec()),
        Op::Read("h2"),
        Op::Read("d/h3"),
        Op::Stat("h2"),
        Op::Chmod("h2", 0o600),
        Op::Stat("d/h3"),
        Op::Link("a", "d/a-link"),
        Op::Append("d/a-link", b"+".to_vec()),
        Op::Read("a"),
        Op::Stat("a"),
        Op::Link("d", "dlink"),
        Op::Link("a", "c"),
        Op::Unlink("a"),
        Op::Stat("c"),
        Op::Unlink("h1"),
        Op::Read("h2"),
        Op::Link("h2", "b"),
        Op::Stat("b"),
    ]
}

fn data_ops() -> Vec<Op> {
    vec![
        Op::Fallocate("sparse", 0, 8192),
        Op::Stat("sparse"),
        Op::WriteAt("sparse", 1 << 20, b"tail".to_vec()),
        Op::SeekData("sparse", 8192, libc::SEEK_DATA),
        Op::SeekData("sparse", 0, libc::SEEK_HOLE),
        Op::PunchHole("sparse", 0, 4096),
        Op::Stat("sparse"),
        Op::CopyRange("d/e/a", "sparse", 4),
        Op::Read("sparse"),
        Op::SeekData("d/a", 0, libc::SEEK_HOLE),
        Op::SeekData("d/a", 100, libc::SEEK_DATA),
        Op::Truncate("sparse", 7),
        Op::Read("sparse"),
    ]
}

#[test]
fn file_operations_match_the_kernel() {
    differential(
        "file_operations_match_the_kernel",
        &file_ops(),
        &fuse_options(true),
    );
}

#[test]
fn file_operations_match_the_kernel_without_passthrough() {
    differential(
        "file_operations_match_the_kernel_without_passthrough",
        &file_ops(),
        &fuse_options(false),
    );
}

#[test]
fn namespace_operations_match_the_kernel() {
    differential(
        "namespace_operations_match_the_kernel",
        &namespace_ops(),
        &fuse_options(true),
    );
}

#[test]
fn renames_match_the_kernel() {
    differential(
        "renames_match_the_kernel",
        &rename_ops(),
        &fuse_options(true),
    );
}

#[test]
fn hard_links_match_the_kernel() {
    differential(
        "hard_links_match_the_kernel",
        &link_ops(),
        &fuse_options(true),
    );
}

#[test]
fn data_operations_match_the_kernel() {
    differential(
        "data_operations_match_the_kernel",
        &data_ops(),
        &fuse_options(true),
    );
}

#[test]
fn data_operations_match_the_kernel_without_passthrough() {
    differential(
        "data_operations_match_the_kernel_without_passthrough",
        &data_ops(),
        &fuse_options(false),
    );
}

#[test]
fn file_operations_match_the_kernel_through_dev_fuse() {
    differential(
        "file_operations_match_the_kernel_through_dev_fuse",
        &file_ops(),
        &dev_fuse_options(),
    );
}

#[test]
fn namespace_operations_match_the_kernel_through_dev_fuse() {
    differential(
        "namespace_operations_match_the_kernel_through_dev_fuse",
        &namespace_ops(),
        &dev_fuse_options(),
    );
}

fn any_path() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(PATHS)
}

fn any_op() -> impl Strategy<Value = Op> {
    let data = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (any_path(), data.clone()).prop_map(|(p, d)| Op::Write(p, d)),
        (any_path(), data.clone()).prop_map(|(p, d)| Op::Append(p, d)),
        (any_path(), 0u64..100).prop_map(|(p, n)| Op::Truncate(p, n)),
        (
            any_path(),
            proptest::sample::select(vec![0o600u32, 0o755, 0o4711, 0o1777])
        )
            .prop_map(|(p, m)| Op::Chmod(p, m)),
        (any_path(), 0u32..3, 0u32..3).prop_map(|(p, u, g)| Op::Chown(p, u * 1000, g * 1000)),
        any_path().prop_map(Op::Unlink),
        any_path().prop_map(Op::Mkdir),
        any_path().prop_map(Op::Rmdir),
        (
            any_path(),
            any_path(),
            proptest::sample::select(vec![
                RenameKind::Plain,
                RenameKind::NoReplace,
                RenameKind::Exchange
            ])
        )
            .prop_map(|(a, b, k)| Op::Rename(a, b, k)),
        (
            proptest::sample::select(vec!["a", "../a", "/abs"]),
            any_path()
        )
            .prop_map(|(t, p)| Op::Symlink(t, p)),
        (any_path(), any_path()).prop_map(|(a, b)| Op::Link(a, b)),
        (any_path(), data).prop_map(|(p, d)| Op::SetXattr(p, d)),
        any_path().prop_map(Op::RemoveXattr),
        (any_path(), 1_000_000_000i64..1_100_000_000).prop_map(|(p, t)| Op::Utime(p, t)),
        any_path().prop_map(Op::Mkfifo),
        (
            any_path(),
            0u64..64,
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(p, o, d)| Op::WriteAt(p, o, d)),
        (any_path(), any_path()).prop_map(|(a, b)| Op::CopyRange(a, b, 16)),
        any_path().prop_map(Op::ListXattr),
        any_path().prop_map(Op::Read),
        any_path().prop_map(Op::List),
        any_path().prop_map(Op::Stat),
    ]
}

/// `PROPTEST_CASES` from the environment (for longer runs), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_sequence(
    name: &str,
    ops: &[Op],
    options: &FuseOptions,
    format: WhiteoutFormat,
) -> Result<(), TestCaseError> {
    if gate(name) {
        let pair = Pair::new(&fixture(), options, format);
        let result = pair.run_all(ops);
        pair.close();
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(48),
        max_shrink_iters: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_match_the_kernel(ops in proptest::collection::vec(any_op(), 1..20)) {
        random_sequence("random_sequences_match_the_kernel", &ops, &fuse_options(true), OVERLAY)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(24),
        max_shrink_iters: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_match_the_kernel_without_passthrough(ops in proptest::collection::vec(any_op(), 1..20)) {
        random_sequence("random_sequences_match_the_kernel_without_passthrough", &ops, &fuse_options(false), OVERLAY)?;
    }

    #[test]
    fn random_sequences_through_dev_fuse_match_the_kernel(ops in proptest::collection::vec(any_op(), 1..20)) {
        random_sequence("random_sequences_through_dev_fuse_match_the_kernel", &ops, &dev_fuse_options(), OVERLAY)?;
    }

    #[test]
    fn random_sequences_in_the_aufs_format_match_the_kernel(ops in proptest::collection::vec(any_op(), 1..20)) {
        random_sequence("random_sequences_in_the_aufs_format_match_the_kernel", &ops, &fuse_options(true), WhiteoutFormat::Aufs)?;
    }
}
