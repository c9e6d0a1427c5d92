//! [`LayerBuilder`]: describes one layer's entries and writes it as an OCI layer tar.
//!
//! Entries are written in the order they are added, with deterministic metadata
//! (mtime [`DEFAULT_MTIME`], owner 0:0 unless set), so the bytes — and therefore the
//! digests — of a layer never change between runs.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tar::{EntryType, GnuExtSparseHeader, Header};

use crate::compression::{Compression, Encoder};
use crate::digest::HashingWriter;
use crate::tar_out::{self, HeaderSpec, LongNameFormat, BLOCK};

/// The mtime (seconds since the epoch) given to every entry unless set with
/// [`LayerBuilder::mtime`]: 2020-09-13T12:26:40Z.
pub const DEFAULT_MTIME: u64 = 1_600_000_000;

/// The name prefix that marks a whiteout file in an OCI layer.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The name of the marker that makes a directory opaque in an OCI layer.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Describes the entries of one layer, in order, and writes them as a tar.
///
/// Methods that add an entry take the path relative to the image root
/// (`"etc/passwd"`; a leading `/` or `./` and a trailing `/` are dropped). The
/// modifiers [`mode`](Self::mode), [`owner`](Self::owner), [`mtime`](Self::mtime)
/// and [`xattr`](Self::xattr) change the entry added last:
///
/// ```
/// use test_support::LayerBuilder;
/// let layer = LayerBuilder::new()
///     .dir("home/alice", 0o750).owner(1000, 1000)
///     .file("home/alice/notes", "hi\n", 0o600).owner(1000, 1000).mtime(1_700_000_000)
///     .xattr("user.comment", "private")
///     .symlink("home/alice/link", "notes");
/// let tar = layer.to_tar();
/// assert_eq!(tar.len() % 512, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    pub(crate) entries: Vec<Entry>,
    long_names: LongNameFormat,
}

/// One tar entry as described by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Normalised path (no leading `/` or `./`, no trailing `/`); for raw entries
    /// the name bytes decoded lossily.
    pub(crate) path: String,
    /// When set, the header name is written verbatim from these bytes.
    pub(crate) raw_name: Option<Vec<u8>>,
    pub(crate) kind: EntryKind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
}

/// What an entry is.
#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    Dir,
    File(Content),
    Sparse(SparseFile),
    Symlink(String),
    Hardlink(String),
    Fifo,
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

/// The data of a regular file.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    Bytes(Arc<[u8]>),
    Generated { size: u64, seed: u64 },
    Host(PathBuf),
}

impl Content {
    /// Opens the content as a stream, returning it with its length.
    pub(crate) fn open(&self) -> io::Result<(Box<dyn Read + '_>, u64)> {
        Ok(match self {
            Content::Bytes(b) => (Box::new(&b[..]), b.len() as u64),
            Content::Generated { size, seed } => (Box::new(generated_content(*size, *seed)), *size),
            Content::Host(path) => {
                let f = fs::File::open(path)?;
                let len = f.metadata()?.len();
                (Box::new(f.take(len)), len)
            }
        })
    }
}

/// A sparse file: its logical size and the data segments; everything else is a hole.
#[derive(Debug, Clone)]
pub(crate) struct SparseFile {
    pub(crate) size: u64,
    /// Sorted, non-overlapping, non-empty `(offset, bytes)` segments.
    segments: Vec<(u64, Vec<u8>)>,
}

impl SparseFile {
    fn new(size: u64, segments: &[(u64, &[u8])]) -> Self {
        let mut segs: Vec<(u64, Vec<u8>)> = segments
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(o, d)| (*o, d.to_vec()))
            .collect();
        segs.sort_by_key(|(o, _)| *o);
        let mut end = 0;
        for (off, data) in &segs {
            assert!(
                *off >= end,
                "sparse_file: data segments overlap at offset {off}"
            );
            end = off + data.len() as u64;
            assert!(
                end <= size,
                "sparse_file: segment ending at {end} exceeds the file size {size}"
            );
        }
        SparseFile {
            size,
            segments: segs,
        }
    }

    /// The regions stored in the archive: block-aligned `(offset, length)` pairs
    /// covering every data segment (only the region that ends at `size` may have an
    /// unaligned length), as GNU tar and the `tar` crate's reader expect.
    fn stored_regions(&self) -> Vec<(u64, u64)> {
        let mut regions: Vec<(u64, u64)> = Vec::new(); // (start, end)
        for (off, data) in &self.segments {
            let start = off / BLOCK * BLOCK;
            let end = (off + data.len() as u64).div_ceil(BLOCK) * BLOCK;
            let end = end.min(self.size);
            match regions.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => regions.push((start, end)),
            }
        }
        regions.into_iter().map(|(s, e)| (s, e - s)).collect()
    }

    /// A reader over the logical content in `from..to` (holes read as zeros).
    pub(crate) fn reader(&self, from: u64, to: u64) -> SparseReader<'_> {
        SparseReader {
            file: self,
            pos: from,
            end: to,
        }
    }
}

/// Reads a range of a [`SparseFile`]'s logical content.
pub(crate) struct SparseReader<'a> {
    file: &'a SparseFile,
    pos: u64,
    end: u64,
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.end - self.pos).min(buf.len() as u64);
        let next = self
            .file
            .segments
            .iter()
            .find(|(off, data)| off + data.len() as u64 > self.pos);
        let n = match next {
            Some((off, data)) if *off <= self.pos => {
                let start = (self.pos - off) as usize;
                let n = (data.len() - start).min(want as usize);
                buf[..n].copy_from_slice(&data[start..start + n]);
                n
            }
            Some((off, _)) => {
                let n = (off - self.pos).min(want) as usize;
                buf[..n].fill(0);
                n
            }
            None => {
                let n = want as usize;
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// Deterministic pseudo-random content of `size` bytes derived from `seed`, as a
/// stream; the same content [`LayerBuilder::generated_file`] writes.
pub fn generated_content(size: u64, seed: u64) -> impl Read {
    GeneratedReader { seed, pos: 0, size }
}

struct GeneratedReader {
    seed: u64,
    pos: u64,
    size: u64,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Read for GeneratedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.size - self.pos).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            let word = splitmix64(self.seed.wrapping_mul(0x1000_0000_01b3) ^ (p / 8));
            *b = (word >> ((p % 8) * 8)) as u8;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Drops a leading `/` or `./` and a trailing `/` (the form used in layer tars).
pub(crate) fn normalize_path(path: &str) -> String {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    let p = p.trim_end_matches('/');
    let mut out = String::with_capacity(p.len());
    for comp in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(comp);
    }
    out
}

/// Joins `dir` and a file name (with `dir` possibly empty = the root).
fn join(dir: &str, name: &str) -> String {
    let dir = normalize_path(dir);
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses how names and link targets longer than 100 bytes are encoded
    /// (default [`LongNameFormat::Gnu`]).
    pub fn long_names(mut self, format: LongNameFormat) -> Self {
        self.long_names = format;
        self
    }

    fn push(mut self, path: &str, kind: EntryKind, mode: u32) -> Self {
        let path = normalize_path(path);
        assert!(!path.is_empty(), "layer entries need a non-root path");
        self.entries.push(Entry {
            path,
            raw_name: None,
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        });
        self
    }

    /// Adds a directory.
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.push(path, EntryKind::Dir, mode)
    }

    /// Adds a regular file with `content` (may be empty).
    pub fn file(self, path: &str, content: impl AsRef<[u8]>, mode: u32) -> Self {
        let bytes: Arc<[u8]> = Arc::from(content.as_ref());
        self.push(path, EntryKind::File(Content::Bytes(bytes)), mode)
    }

    /// Adds a regular file of `size` deterministic pseudo-random bytes (see
    /// [`generated_content`]); the content is generated while writing, never held
    /// in memory, so it suits large layers.
    pub fn generated_file(self, path: &str, size: u64, seed: u64, mode: u32) -> Self {
        self.push(
            path,
            EntryKind::File(Content::Generated { size, seed }),
            mode,
        )
    }

    /// Adds a regular file whose content is streamed from `host_path` each time
    /// the layer is written.
    pub fn host_file(self, path: &str, host_path: impl Into<PathBuf>, mode: u32) -> Self {
        self.push(path, EntryKind::File(Content::Host(host_path.into())), mode)
    }

    /// Adds a GNU sparse file (type `S`, old GNU sparse map, extension headers
    /// when the map has more than 4 regions) of logical `size`, holding
    /// `segments` of `(offset, bytes)` and holes elsewhere. Mode 0644.
    ///
    /// Stored regions are widened to 512-byte blocks (the widened bytes are
    /// zeros, so the logical content is unchanged).
    ///
    /// # Panics
    /// If segments overlap or extend beyond `size`.
    pub fn sparse_file(self, path: &str, size: u64, segments: &[(u64, &[u8])]) -> Self {
        let sparse = SparseFile::new(size, segments);
        self.push(path, EntryKind::Sparse(sparse), 0o644)
    }

    /// Adds a symbolic link to `target` (written verbatim, absolute or relative).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.push(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    /// Adds a hard link to `target_path`, an entry of this layer or a lower one.
    pub fn hardlink(self, path: &str, target_path: &str) -> Self {
        let target = normalize_path(target_path);
        self.push(path, EntryKind::Hardlink(target), 0o644)
    }

    /// Adds a named pipe.
    pub fn fifo(self, path: &str, mode: u32) -> Self {
        self.push(path, EntryKind::Fifo, mode)
    }

    /// Adds a character device (mode 0666).
    pub fn char_device(self, path: &str, major: u32, minor: u32) -> Self {
        self.push(path, EntryKind::CharDevice { major, minor }, 0o666)
    }

    /// Adds a block device (mode 0660).
    pub fn block_device(self, path: &str, major: u32, minor: u32) -> Self {
        self.push(path, EntryKind::BlockDevice { major, minor }, 0o660)
    }

    /// Adds a whiteout for `path`: the empty regular file `<dir>/.wh.<name>`,
    /// which deletes `path` (and anything below it) from the lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        let norm = normalize_path(path);
        let (dir, name) = norm.rsplit_once('/').unwrap_or(("", norm.as_str()));
        let marker = join(dir, &format!("{WHITEOUT_PREFIX}{name}"));
        self.file(&marker, b"", 0o644)
    }

    /// Makes `dir` opaque: writes the empty file `<dir>/.wh..wh..opq`, which hides
    /// the content of `dir` in lower layers (content of this layer stays).
    pub fn opaque(self, dir: &str) -> Self {
        let marker = join(dir, OPAQUE_MARKER);
        self.file(&marker, b"", 0o644)
    }

    /// Adds a regular file whose header name is `raw_name` exactly as given — for
    /// bad-input tests (`../escape`, `/abs/path`, non-UTF-8 bytes). Layers holding
    /// such entries have no expected tree.
    pub fn raw_file(mut self, raw_name: &[u8], content: impl AsRef<[u8]>, mode: u32) -> Self {
        let bytes: Arc<[u8]> = Arc::from(content.as_ref());
        self.entries.push(Entry {
            path: String::from_utf8_lossy(raw_name).into_owned(),
            raw_name: Some(raw_name.to_vec()),
            kind: EntryKind::File(Content::Bytes(bytes)),
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        });
        self
    }

    fn last(&mut self, what: &str) -> &mut Entry {
        self.entries
            .last_mut()
            .unwrap_or_else(|| panic!("LayerBuilder::{what} needs an entry to modify"))
    }

    /// Sets the permission bits (including setuid 0o4000, setgid 0o2000, sticky
    /// 0o1000) of the last entry.
    ///
    /// # Panics
    /// If no entry was added yet (as for every modifier).
    pub fn mode(mut self, mode: u32) -> Self {
        self.last("mode").mode = mode;
        self
    }

    /// Sets the numeric owner of the last entry.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        let e = self.last("owner");
        e.uid = uid;
        e.gid = gid;
        self
    }

    /// Sets the mtime (seconds since the epoch) of the last entry.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.last("mtime").mtime = mtime;
        self
    }

    /// Adds an extended attribute to the last entry, written as the PAX record
    /// `SCHILY.xattr.<name>` (e.g. `user.comment`, `security.capability`).
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.last("xattr")
            .xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Number of entries (whiteout and opaque markers count as entries).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the layer has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the layer as an uncompressed tar (with the closing zero blocks).
    pub fn write_tar(&self, mut w: impl Write) -> io::Result<()> {
        for entry in &self.entries {
            self.write_entry(&mut w, entry)?;
        }
        tar_out::finish(&mut w)
    }

    /// The layer as an uncompressed tar in memory (for small layers).
    pub fn to_tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_tar(&mut out)
            .expect("writing a layer to memory failed (unreadable host file?)");
        out
    }

    /// Writes the layer tar compressed with `compression` (a layer blob).
    pub fn write_blob(&self, w: impl Write, compression: Compression) -> io::Result<()> {
        let mut enc = Encoder::new(w, compression)?;
        self.write_tar(&mut enc)?;
        enc.finish()?;
        Ok(())
    }

    /// The layer blob compressed with `compression`, in memory.
    pub fn to_blob(&self, compression: Compression) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_blob(&mut out, compression)
            .expect("writing a layer to memory failed (unreadable host file?)");
        out
    }

    /// The DiffID (`sha256:<hex>` of the uncompressed tar), computed by streaming.
    pub fn diff_id(&self) -> io::Result<String> {
        let mut h = HashingWriter::new(io::sink());
        self.write_tar(&mut h)?;
        Ok(format!("sha256:{}", h.finish_hex()))
    }

    fn spec<'a>(&self, entry: &'a Entry, name: &'a [u8], header: Header) -> HeaderSpec<'a> {
        let link = match &entry.kind {
            EntryKind::Symlink(t) | EntryKind::Hardlink(t) => Some(t.as_bytes()),
            _ => None,
        };
        HeaderSpec {
            name,
            link,
            header,
            pax: entry
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                .collect(),
            long_names: self.long_names,
        }
    }

    fn base_header(&self, entry: &Entry, entry_type: EntryType, size: u64) -> Header {
        let mut h = match (self.long_names, &entry.kind) {
            (LongNameFormat::Pax, kind) if !matches!(kind, EntryKind::Sparse(_)) => {
                Header::new_ustar()
            }
            _ => Header::new_gnu(),
        };
        h.set_entry_type(entry_type);
        h.set_mode(entry.mode & 0o7777);
        h.set_uid(entry.uid);
        h.set_gid(entry.gid);
        h.set_mtime(entry.mtime);
        h.set_size(size);
        h
    }

    fn write_entry(&self, w: &mut dyn Write, entry: &Entry) -> io::Result<()> {
        let mut name = match &entry.raw_name {
            Some(raw) => raw.clone(),
            None => entry.path.as_bytes().to_vec(),
        };
        match &entry.kind {
            EntryKind::Dir => {
                if entry.raw_name.is_none() {
                    name.push(b'/');
                }
                let h = self.base_header(entry, EntryType::Directory, 0);
                tar_out::write_entry(w, self.spec(entry, &name, h), &[])
            }
            EntryKind::File(content) => {
                let (mut reader, len) = content.open()?;
                let h = self.base_header(entry, EntryType::Regular, len);
                tar_out::write_header(w, self.spec(entry, &name, h))?;
                let copied = io::copy(&mut reader, w)?;
                if copied != len {
                    return Err(io::Error::other(format!(
                        "{}: content changed while writing ({copied} of {len} bytes)",
                        entry.path
                    )));
                }
                tar_out::pad(w, len)
            }
            EntryKind::Sparse(sparse) => self.write_sparse(w, entry, &name, sparse),
            EntryKind::Symlink(_) => {
                let h = self.base_header(entry, EntryType::Symlink, 0);
                tar_out::write_entry(w, self.spec(entry, &name, h), &[])
            }
            EntryKind::Hardlink(_) => {
                let h = self.base_header(entry, EntryType::Link, 0);
                tar_out::write_entry(w, self.spec(entry, &name, h), &[])
            }
            EntryKind::Fifo => {
                let h = self.base_header(entry, EntryType::Fifo, 0);
                tar_out::write_entry(w, self.spec(entry, &name, h), &[])
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let ty = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                let mut h = self.base_header(entry, ty, 0);
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                tar_out::write_entry(w, self.spec(entry, &name, h), &[])
            }
        }
    }

    fn write_sparse(
        &self,
        w: &mut dyn Write,
        entry: &Entry,
        name: &[u8],
        sparse: &SparseFile,
    ) -> io::Result<()> {
        let mut map = sparse.stored_regions();
        let stored: u64 = map.iter().map(|(_, len)| len).sum();
        let data_map = map.clone();
        // A file that ends in a hole (or has no data) ends its map with an empty
        // region at the logical size, as GNU tar does.
        if map.last().is_none_or(|(o, l)| o + l < sparse.size) {
            map.push((sparse.size, 0));
        }
        let mut h = self.base_header(entry, EntryType::GNUSparse, stored);
        {
            let gnu = h.as_gnu_mut().expect("sparse entries use GNU headers");
            gnu.set_real_size(sparse.size);
            for (slot, (off, len)) in gnu.sparse.iter_mut().zip(&map) {
                slot.set_offset(*off);
                slot.set_length(*len);
            }
            gnu.set_is_extended(map.len() > gnu.sparse.len());
        }
        tar_out::write_header(w, self.spec(entry, name, h))?;
        let mut rest = map.iter().skip(4).peekable();
        while rest.peek().is_some() {
            let mut ext = GnuExtSparseHeader::new();
            for slot in ext.sparse_mut().iter_mut() {
                match rest.next() {
                    Some((off, len)) => {
                        slot.set_offset(*off);
                        slot.set_length(*len);
                    }
                    None => break,
                }
            }
            ext.set_is_extended(rest.peek().is_some());
            w.write_all(ext.as_bytes())?;
        }
        for (off, len) in data_map {
            io::copy(&mut sparse.reader(off, off + len), w)?;
        }
        tar_out::pad(w, stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_leading_and_trailing_noise() {
        assert_eq!(normalize_path("/etc/passwd"), "etc/passwd");
        assert_eq!(normalize_path("./etc//x/"), "etc/x");
        assert_eq!(normalize_path("a/./b"), "a/b");
        assert_eq!(normalize_path("../x"), "../x");
    }

    #[test]
    fn stored_regions_are_block_aligned_and_merged() {
        let s = SparseFile::new(
            10_000,
            &[
                (0, &[1; 10]),
                (100, &[2; 10]),
                (2000, &[3; 600]),
                (9990, &[4; 10]),
            ],
        );
        assert_eq!(
            s.stored_regions(),
            vec![(0, 512), (1536, 1536), (9728, 272)]
        );
    }

    #[test]
    fn sparse_reader_fills_holes_with_zeros() {
        let s = SparseFile::new(20, &[(2, b"ab"), (10, b"xyz")]);
        let mut out = Vec::new();
        s.reader(0, 20).read_to_end(&mut out).unwrap();
        let mut want = vec![0u8; 20];
        want[2..4].copy_from_slice(b"ab");
        want[10..13].copy_from_slice(b"xyz");
        assert_eq!(out, want);
        let mut mid = Vec::new();
        s.reader(3, 11).read_to_end(&mut mid).unwrap();
        assert_eq!(mid, &want[3..11]);
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn overlapping_sparse_segments_are_rejected() {
        let _ = LayerBuilder::new().sparse_file("s", 100, &[(0, &[1; 10]), (5, &[1; 10])]);
    }

    #[test]
    fn generated_content_depends_on_seed_and_is_stable() {
        let read = |size, seed| {
            let mut v = Vec::new();
            generated_content(size, seed).read_to_end(&mut v).unwrap();
            v
        };
        assert_eq!(read(1000, 1).len(), 1000);
        assert_eq!(read(1000, 1), read(1000, 1));
        assert_ne!(read(1000, 1), read(1000, 2));
        assert_eq!(&read(1000, 1)[..10], &read(10, 1)[..]);
    }

    #[test]
    fn whiteout_and_opaque_markers_are_named_per_spec() {
        let l = LayerBuilder::new()
            .whiteout("/etc/passwd")
            .whiteout("top")
            .opaque("var/lib/");
        let paths: Vec<_> = l.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["etc/.wh.passwd", ".wh.top", "var/lib/.wh..wh..opq"]);
    }
}
