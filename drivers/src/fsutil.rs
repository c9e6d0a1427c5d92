//! File-descriptor-relative filesystem primitives.
//!
//! Everything that touches a layer tree goes through these helpers: paths are
//! resolved by the kernel inside a root (`openat2` with `RESOLVE_IN_ROOT`), and
//! the final component of a path is always handled relative to its parent
//! directory's descriptor without following it (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`). Content of a layer can therefore never redirect an
//! operation outside the layer root.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::layer::FileKind;

/// Converts a `-1`-on-error return value into an [`io::Result`].
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a `-1`-on-error `ssize_t` return value into an [`io::Result`].
pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A NUL-terminated copy of a path or name, rejecting interior NUL bytes.
pub fn c_path(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("name {:?} contains a NUL byte", name),
        )
    })
}

/// The name to pass to `*at` calls for "the directory itself".
fn dot_if_empty(name: &OsStr) -> &OsStr {
    if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    }
}

/// Metadata of one filesystem entry, as read by `fstatat(AT_SYMLINK_NOFOLLOW)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The entry's type (never [`FileKind::Whiteout`]; whiteout detection is format-specific).
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Device number of device nodes.
    pub rdev: u64,
    /// Hard-link count.
    pub nlink: u64,
    /// Device of the filesystem holding the entry.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
}

impl Meta {
    /// Converts a raw `stat` buffer.
    pub fn from_stat(st: &libc::stat) -> Meta {
        Meta {
            kind: kind_from_mode(st.st_mode),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            rdev: st.st_rdev,
            nlink: st.st_nlink,
            dev: st.st_dev,
            ino: st.st_ino,
            blocks: st.st_blocks as u64,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    /// Whether this is an overlay whiteout (a character device with device number 0/0).
    pub fn is_overlay_whiteout(&self) -> bool {
        self.kind == FileKind::CharDevice && self.rdev == 0
    }
}

/// The [`FileKind`] of an `st_mode`.
pub fn kind_from_mode(mode: libc::mode_t) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFSOCK => FileKind::Socket,
        _ => FileKind::Regular,
    }
}

/// The `S_IF*` bits of a node kind that `mknodat` can create.
pub fn mode_type_bits(kind: FileKind) -> libc::mode_t {
    match kind {
        FileKind::Directory => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::CharDevice | FileKind::Whiteout => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::Regular => libc::S_IFREG,
    }
}

/// Opens a directory by (trusted) path, `O_RDONLY | O_DIRECTORY | O_CLOEXEC`.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path.as_os_str())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` below `root` with the kernel resolving every component inside
/// `root` (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, plus `extra_resolve`):
/// `..`, absolute symlinks and absolute paths stay inside the root.
///
/// `flags` are `O_*` open flags (`O_CLOEXEC` is always added); `mode` is used with `O_CREAT`.
/// An empty `rel` opens the root itself.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
    extra_resolve: u64,
) -> io::Result<OwnedFd> {
    let name = dot_if_empty(rel.as_os_str());
    let c = c_path(name)?;
    // SAFETY: open_how is plain old data; all-zero is its documented initial state.
    let mut how: libc::open_how = unsafe { MaybeUninit::zeroed().assume_init() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        how.mode = u64::from(mode);
    }
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | extra_resolve;
    let mut attempts = 0;
    loop {
        // SAFETY: all pointers are valid for the duration of the call and `size`
        // matches the struct we pass.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel returned a fresh descriptor that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        let retry = matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR));
        attempts += 1;
        if !retry || attempts > 128 {
            return Err(err);
        }
    }
}

/// Creates the empty regular file `name` in `dir` with `mode` (`EEXIST` when
/// the name is taken); the file is not kept open.
pub fn create_empty_at(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    open_at(
        dir,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        mode,
    )
    .map(drop)
}

/// Opens `name` directly inside `dir` with `O_NOFOLLOW | O_CLOEXEC` added to `flags`.
/// An empty `name` reopens `dir` itself.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = c_path(dot_if_empty(name))?;
    // SAFETY: valid fd and string; the result is a fresh descriptor we own.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: `fd` was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens directory `name` inside `dir` (`O_RDONLY | O_DIRECTORY | O_NOFOLLOW`).
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Metadata of `name` inside `dir` without following a final symlink;
/// `Ok(None)` when it does not exist. An empty `name` describes `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Meta>> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    let c = c_path(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: valid fd, string and output buffer.
    let ret = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) };
    match cvt(ret) {
        // SAFETY: fstatat succeeded, so the buffer is initialised.
        Ok(_) => Ok(Some(Meta::from_stat(unsafe { &st.assume_init() }))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Metadata of an open descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd and output buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded.
    Ok(Meta::from_stat(unsafe { &st.assume_init() }))
}

/// The names inside directory `dir` (without `.` and `..`), sorted by their bytes.
///
/// Reads through a fresh open file description, so `dir`'s own offset is untouched.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    Ok(read_dir_typed(dir)?.into_iter().map(|(n, _)| n).collect())
}

/// The names in directory `dir` (without `.` and `..`), sorted bytewise, each
/// with its type as the directory reports it (`None` where it does not say).
pub fn read_dir_typed(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Option<FileKind>)>> {
    let fd = open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` is an open directory descriptor whose ownership passes to the DIR stream.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own `raw`.
        unsafe { libc::close(raw) };
        return Err(err);
    }
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it distinguishes end-of-stream from errors.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a valid DIR stream until closedir below.
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            // SAFETY: as above.
            let kind = match unsafe { (*ent).d_type } {
                libc::DT_REG => Some(FileKind::Regular),
                libc::DT_DIR => Some(FileKind::Directory),
                libc::DT_LNK => Some(FileKind::Symlink),
                libc::DT_FIFO => Some(FileKind::Fifo),
                libc::DT_CHR => Some(FileKind::CharDevice),
                libc::DT_BLK => Some(FileKind::BlockDevice),
                libc::DT_SOCK => Some(FileKind::Socket),
                _ => None,
            };
            names.push((OsString::from_vec(bytes.to_vec()), kind));
        }
    };
    // SAFETY: `stream` is valid and closed exactly once (this also closes `raw`).
    unsafe { libc::closedir(stream) };
    result?;
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

/// Creates directory `name` inside `dir`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = c_path(name)?;
    // SAFETY: valid fd and string.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) }).map(drop)
}

/// Creates a device node, fifo or socket `name` inside `dir`.
pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: FileKind,
    perm: libc::mode_t,
    rdev: u64,
) -> io::Result<()> {
    let c = c_path(name)?;
    let mode = mode_type_bits(kind) | (perm & 0o7777);
    // SAFETY: valid fd and string.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode, rdev) }).map(drop)
}

/// Creates symlink `name` inside `dir` pointing at `target` (stored verbatim, never resolved).
pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = c_path(target)?;
    let c = c_path(name)?;
    // SAFETY: valid fd and strings.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

/// Creates hard link `new_dir/new_name` to `old_dir/old_name` (a final symlink is linked, not followed).
pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old_name: &OsStr,
    new_dir: BorrowedFd<'_>,
    new_name: &OsStr,
) -> io::Result<()> {
    let o = c_path(old_name)?;
    let n = c_path(new_name)?;
    // SAFETY: valid fds and strings.
    cvt(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// Removes the non-directory `name` (or the empty directory when `is_dir`) inside `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = c_path(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and string.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

/// Renames `old_dir/old_name` to `new_dir/new_name`, failing with `EEXIST` when the target exists.
pub fn rename_noreplace(
    old_dir: BorrowedFd<'_>,
    old_name: &OsStr,
    new_dir: BorrowedFd<'_>,
    new_name: &OsStr,
) -> io::Result<()> {
    let o = c_path(old_name)?;
    let n = c_path(new_name)?;
    // SAFETY: valid fds and strings.
    cvt(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
    .map(drop)
}

/// Reads the target of symlink `name` inside `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    let c = c_path(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid fd, string and buffer of `buf.len()` bytes.
        let n = cvt_size(unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(OsString::from_vec(buf));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Changes the owner of `name` inside `dir` without following a final symlink
/// (an empty `name` changes `dir` itself).
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = c_path(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: valid fd and string.
    cvt(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) }).map(drop)
}

/// Changes the owner of an open file.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// Changes the permission bits of an open file.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o7777) }).map(drop)
}

/// Changes the permission bits of `name` inside `dir` without following it.
/// Symlinks are left alone (their permission bits mean nothing on Linux).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let node = open_at(dir, name, libc::O_PATH, 0)?;
    if stat_fd(node.as_fd())?.kind == FileKind::Symlink {
        return Ok(());
    }
    // The O_PATH descriptor pins the inode; /proc/self/fd/N resolves to exactly it.
    let proc_path = c_path(OsStr::new(&format!("/proc/self/fd/{}", node.as_raw_fd())))?;
    // SAFETY: valid string.
    cvt(unsafe { libc::chmod(proc_path.as_ptr(), mode & 0o7777) }).map(drop)
}

fn timespecs(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: i64::from(nsec.min(999_999_999)),
    };
    [ts, ts]
}

/// Sets access and modification time of `name` inside `dir` without following it
/// (an empty `name` sets `dir`'s own times).
pub fn set_times_at(dir: BorrowedFd<'_>, name: &OsStr, sec: i64, nsec: u32) -> io::Result<()> {
    let times = timespecs(sec, nsec);
    if name.is_empty() {
        return set_times_fd(dir, sec, nsec);
    }
    let c = c_path(name)?;
    // SAFETY: valid fd, string and two timespecs.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Sets access and modification time of an open file.
pub fn set_times_fd(fd: BorrowedFd<'_>, sec: i64, nsec: u32) -> io::Result<()> {
    let times = timespecs(sec, nsec);
    // SAFETY: valid fd and two timespecs.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;
const FS_APPEND_FL: libc::c_long = 0x0000_0020;

/// Whether `name` inside `dir` carries the immutable or append-only inode flag.
fn is_immutable_at(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    // Only files and directories are opened: opening a device node can have side effects.
    let openable = matches!(
        stat_at(dir, name),
        Ok(Some(Meta {
            kind: FileKind::Regular | FileKind::Directory,
            ..
        }))
    );
    if !openable {
        return false;
    }
    let Ok(fd) = open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    ret == 0 && flags & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0
}

/// Explains an `EPERM` from removing `name` when an immutable/append-only flag is the cause.
fn explain_eperm(dir: BorrowedFd<'_>, name: &OsStr, err: io::Error) -> io::Error {
    if err.raw_os_error() != Some(libc::EPERM) {
        return err;
    }
    if is_immutable_at(dir, name) {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{:?} is immutable or append-only; clear the flag with `chattr -i -a` first",
                name
            ),
        );
    }
    if is_immutable_at(dir, OsStr::new("")) {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the directory holding {:?} is immutable or append-only; clear the flag with `chattr -i -a` first",
                name
            ),
        );
    }
    err
}

/// Removes `name` inside `dir` and, for a directory, everything below it, never
/// following symlinks. Directories without write/search permission are made
/// accessible first. A missing `name` is not an error. Immutable or append-only
/// entries produce an error saying so.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(meta) = stat_at(dir, name)? else {
        return Ok(());
    };
    if meta.is_dir() {
        let sub = match open_dir_at(dir, name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                chmod_at(dir, name, 0o700)?;
                open_dir_at(dir, name)?
            }
            Err(e) => return Err(e),
        };
        if meta.mode & 0o300 != 0o300 {
            chmod_fd(sub.as_fd(), meta.mode | 0o700)?;
        }
        remove_dir_contents(sub.as_fd())?;
    }
    match unlink_at(dir, name, meta.is_dir()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(explain_eperm(dir, name, e)),
    }
}

/// Removes everything inside directory `dir`, keeping `dir` itself.
pub fn remove_dir_contents(dir: BorrowedFd<'_>) -> io::Result<()> {
    for child in read_dir_names(dir)? {
        remove_tree_at(dir, &child)?;
    }
    Ok(())
}

/// Removes a tree by (trusted) path; a missing path is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (parent, name) = split_parent(path)?;
    let parent_fd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_tree_at(parent_fd.as_fd(), name)
}

/// Splits a path into its parent directory and final component.
pub fn split_parent(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            },
            name,
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no final component", path.display()),
        )),
    }
}

/// Flushes the filesystem holding `fd` to stable storage (`syncfs`).
pub fn sync_filesystem(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// The name of the filesystem type holding `path` (from its `statfs` magic).
pub fn filesystem_name(path: &Path) -> io::Result<String> {
    let fd = open_dir(path)?;
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid fd and output buffer.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded.
    let magic = unsafe { st.assume_init() }.f_type as u64 & 0xffff_ffff;
    let name = match magic {
        0xef53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlayfs",
        0x2fc1_2fc1 => "zfs",
        0x6573_5546 => "fuse",
        0x7371_7368 => "squashfs",
        0xf2f5_2010 => "f2fs",
        0x6161_7566 => "aufs",
        0x6969 => "nfs",
        0xff53_4d42 => "cifs",
        0x5346_544e => "ntfs",
        0x8584_58f6 => "ramfs",
        other => return Ok(format!("unknown (magic {other:#x})")),
    };
    Ok(name.to_string())
}

/// Lexically normalises a path from a layer tar or a layer API into its
/// components: empty and `.` components are dropped, `..` removes the previous
/// component and is ignored at the root, a leading `/` is ignored. The result
/// never leaves the root and never contains `..`.
pub fn clean_components(path: &[u8]) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            name => out.push(OsString::from_vec(name.to_vec())),
        }
    }
    out
}

/// Joins components into a relative path.
pub fn join_components(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// Splits a relative, already clean path into its parent path and final name
/// (`("", "")` for the root).
pub fn split_rel(path: &Path) -> (PathBuf, OsString) {
    let mut comps: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    match comps.pop() {
        Some(name) => (comps.iter().collect(), name.to_os_string()),
        None => (PathBuf::new(), OsString::new()),
    }
}
