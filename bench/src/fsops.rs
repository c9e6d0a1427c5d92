//! The file-system operations the workloads time, done in-process on a mounted
//! tree. Each returns an amount of work done so callers can check it happened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Read size of sequential reads (what `cat` and `cp` use).
const READ_CHUNK: usize = 128 * 1024;
/// Size of one random read.
pub(crate) const RANDOM_READ_SIZE: u64 = 4096;

/// Reads `path` sequentially to its end; returns the bytes read.
pub(crate) fn read_file(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads `count` blocks of [`RANDOM_READ_SIZE`] bytes at block-aligned offsets
/// chosen by a generator seeded with `seed` (the same offsets for every target).
pub(crate) fn random_reads(path: &Path, count: u64, seed: u64) -> io::Result<u64> {
    let f = File::open(path)?;
    let blocks = f.metadata()?.len() / RANDOM_READ_SIZE;
    if blocks == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is smaller than one block", path.display()),
        ));
    }
    let mut buf = vec![0u8; RANDOM_READ_SIZE as usize];
    let mut state = seed | 1;
    let mut total = 0u64;
    for _ in 0..count {
        // xorshift64: cheap, deterministic, good enough to defeat read-ahead.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state % blocks) * RANDOM_READ_SIZE;
        f.read_exact_at(&mut buf, offset)?;
        total += RANDOM_READ_SIZE;
    }
    Ok(total)
}

/// Walks the tree under `root` as `find root` does and `lstat`s every entry;
/// returns the number of entries seen (the root included).
pub(crate) fn walk_lstat(root: &Path) -> io::Result<u64> {
    let mut count = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        fs::symlink_metadata(&dir)?;
        count += 1;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Lists directory `dir` (names only); returns the number of entries.
pub(crate) fn list_dir(dir: &Path) -> io::Result<u64> {
    let mut count = 0u64;
    for entry in fs::read_dir(dir)? {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// Appends one byte to `path` (a copy-up on a lower file).
pub(crate) fn append_byte(path: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(b"x")
}

/// Sets the mode of every file in `paths` to `mode`.
pub(crate) fn chmod_all(paths: &[PathBuf], mode: u32) -> io::Result<u64> {
    for p in paths {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    }
    Ok(paths.len() as u64)
}

/// Changes the mode, the owner and the times of `path`, as `chmod`, `chown`
/// and `touch -d` do, one call each.
pub(crate) fn change_attributes(path: &Path) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(path, Some(1), Some(1))?;
    let f = File::open(path)?;
    f.set_times(
        fs::FileTimes::new()
            .set_accessed(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000),
            )
            .set_modified(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000),
            ),
    )
}

/// Creates `count` files of 64 bytes in `dir` (which is created), then deletes
/// them and the directory; returns the number of files.
pub(crate) fn create_delete(dir: &Path, count: u64) -> io::Result<u64> {
    fs::create_dir(dir)?;
    let content = [b'c'; 64];
    for i in 0..count {
        let mut f = File::create(dir.join(format!("f{i:06}")))?;
        f.write_all(&content)?;
    }
    for i in 0..count {
        fs::remove_file(dir.join(format!("f{i:06}")))?;
    }
    fs::remove_dir(dir)?;
    Ok(count)
}

/// Unpacks the tar at `archive` into `dest` (created if missing); returns the
/// number of entries unpacked.
pub(crate) fn untar(archive: &Path, dest: &Path) -> io::Result<u64> {
    fs::create_dir_all(dest)?;
    let mut tar = tar::Archive::new(io::BufReader::new(File::open(archive)?));
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    let mut count = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry?;
        entry.unpack_in(dest)?;
        count += 1;
    }
    Ok(count)
}

/// Reads every file of `paths` to its end, each in its own thread, all at once;
/// returns the total bytes read.
pub(crate) fn parallel_read(paths: &[PathBuf]) -> io::Result<u64> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| scope.spawn(move || read_file(p)))
            .collect();
        let mut total = 0u64;
        for h in handles {
            total += h
                .join()
                .map_err(|_| io::Error::other("a reader thread panicked"))??;
        }
        Ok(total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_files_and_random_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, vec![7u8; 300_000]).unwrap();
        assert_eq!(read_file(&p).unwrap(), 300_000);
        assert_eq!(random_reads(&p, 10, 42).unwrap(), 10 * RANDOM_READ_SIZE);
        let q = dir.path().join("g");
        fs::write(&q, vec![1u8; 5000]).unwrap();
        assert_eq!(
            parallel_read(&[p.clone(), q.clone()]).unwrap(),
            300_000 + 5000
        );
        fs::write(&q, b"tiny").unwrap();
        assert!(random_reads(&q, 1, 1).is_err());
    }

    #[test]
    fn walks_trees_and_lists_directories() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/f"), b"1").unwrap();
        fs::write(dir.path().join("a/b/g"), b"2").unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("a/l")).unwrap();
        // root, a, b, f, g, l
        assert_eq!(walk_lstat(dir.path()).unwrap(), 6);
        assert_eq!(list_dir(&dir.path().join("a")).unwrap(), 3);
    }

    #[test]
    fn changes_files_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"ab").unwrap();
        append_byte(&f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"abx");
        assert_eq!(chmod_all(std::slice::from_ref(&f), 0o600).unwrap(), 1);
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        if test_support::privilege::missing_privilege().is_none() {
            change_attributes(&f).unwrap();
            let m = fs::metadata(&f).unwrap();
            assert_eq!((m.permissions().mode() & 0o777, m.len()), (0o600, 3));
        }
        assert_eq!(create_delete(&dir.path().join("cd"), 25).unwrap(), 25);
        assert!(!dir.path().join("cd").exists());
    }

    #[test]
    fn untars_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let layer = test_support::LayerBuilder::new()
            .dir("d", 0o755)
            .file("d/a", "1", 0o644)
            .file("d/b", "2", 0o600);
        let archive = dir.path().join("x.tar");
        fs::write(&archive, layer.to_tar()).unwrap();
        let dest = dir.path().join("out");
        assert_eq!(untar(&archive, &dest).unwrap(), 3);
        assert_eq!(fs::read(dest.join("d/b")).unwrap(), b"2");
    }
}
