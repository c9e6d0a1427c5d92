//! Reading squashfs images in-process: [`SquashfsLayer`], the [`LayerReader`]
//! the FUSE frontend stacks, with no loop device and no privilege.
//!
//! Decompressed metadata blocks, parsed inodes and directory listings, and
//! decompressed data and fragment blocks are kept in byte-bounded LRU caches
//! ([`ReaderCache`]: `LAMINA_SQUASHFS_CACHE_MB`, a quarter for metadata, the
//! rest for data), shared by every image a driver opens, so a stack of many
//! layers stays within one budget.
//! The image is read with `pread`, decompressors come from a pool, and no lock
//! is held while reading or decompressing, so reads proceed in parallel. Every
//! length and offset read from the image is checked: a damaged image gives an
//! `InvalidData` error naming the layer, never a panic or garbage.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::cache::{HitCounts, Pool, WeightedLru};
use super::ffi::Decompressor;
use super::format::{
    corrupt, decode_dev, parse_listing, split_ref, xattr_prefix, BasicType, Corrupt, Fields, Inode,
    InodeData, RawDirEntry, SuperBlock, BLOCK_UNCOMPRESSED, MAX_XATTR_VALUE, METADATA_SIZE,
    META_UNCOMPRESSED, NONE_U32, NO_TABLE, SUPER_BLOCK_SIZE,
};
use crate::error::DriverError;
use crate::fsutil::clean_components;
use crate::layer::{DirEntry, Entry, FileKind, LayerReader};
use crate::xattr;

/// Why reading an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image's content is inconsistent.
    #[error("{0}")]
    Corrupt(#[from] Corrupt),
    /// Reading the image file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

type Res<T> = Result<T, ImageError>;

/// What the reader's caches did (over every image sharing them) and how much
/// this image decompressed, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Decompressed data and fragment blocks.
    pub data: HitCounts,
    /// Decompressed metadata blocks.
    pub metadata: HitCounts,
    /// Parsed inodes.
    pub inodes: HitCounts,
    /// Parsed directory listings.
    pub directories: HitCounts,
    /// Blocks decompressed so far.
    pub decompressions: u64,
    /// Decompressors made: the most decompressions that ran at the same time.
    pub decompressors: u64,
    /// Bytes held by all caches.
    pub cached_bytes: usize,
}

/// A decompressed metadata block and where the next one starts.
struct MetaBlock {
    data: Vec<u8>,
    next: u64,
}

/// Caches of decompressed and parsed image content, keyed by image and position.
pub struct ReaderCache {
    metadata: WeightedLru<(u64, u64), Arc<MetaBlock>>,
    inodes: WeightedLru<(u64, u64), Arc<Inode>>,
    dirs: WeightedLru<(u64, u64), Arc<Vec<RawDirEntry>>>,
    data: WeightedLru<(u64, u64), Arc<[u8]>>,
}

impl ReaderCache {
    /// Caches holding at most `bytes` in all: a quarter for metadata blocks,
    /// inodes and listings, the rest for data and fragment blocks.
    pub fn new(bytes: usize) -> ReaderCache {
        let meta = bytes / 4;
        ReaderCache {
            metadata: WeightedLru::new(meta / 2),
            inodes: WeightedLru::new(meta / 4),
            dirs: WeightedLru::new(meta / 4),
            data: WeightedLru::new(bytes - meta),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.data.used() + self.metadata.used() + self.inodes.used() + self.dirs.used()
    }
}

impl std::fmt::Debug for ReaderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderCache")
            .field("used", &self.used())
            .finish()
    }
}

/// Distinguishes the images sharing a [`ReaderCache`].
static NEXT_IMAGE: AtomicU64 = AtomicU64::new(1);

/// One open image: the file, its super block and id table, the caches.
struct Image {
    file: File,
    sb: SuperBlock,
    ids: Vec<u32>,
    serial: u64,
    cache: Arc<ReaderCache>,
    decompressors: Pool<Decompressor>,
    decompressions: AtomicU64,
}

/// A position in a metadata table, read field by field across block boundaries.
struct MetaStream<'a> {
    image: &'a Image,
    block: Arc<MetaBlock>,
    offset: usize,
    end: u64,
}

impl Fields for MetaStream<'_> {
    fn read_exact(&mut self, mut buf: &mut [u8]) -> Res<()> {
        while !buf.is_empty() {
            if self.offset >= self.block.data.len() {
                let next = self.block.next;
                if next >= self.end {
                    return Err(corrupt("metadata runs past the end of its table").into());
                }
                self.block = self.image.meta_block(next)?;
                self.offset = 0;
            }
            let n = buf.len().min(self.block.data.len() - self.offset);
            let (head, tail) = buf.split_at_mut(n);
            head.copy_from_slice(&self.block.data[self.offset..self.offset + n]);
            self.offset += n;
            buf = tail;
        }
        Ok(())
    }
}

impl Image {
    fn open(path: &Path, cache: Arc<ReaderCache>) -> Res<Image> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut raw = [0u8; SUPER_BLOCK_SIZE];
        if len < SUPER_BLOCK_SIZE as u64 {
            return Err(corrupt(format!("the image is truncated to {len} bytes")).into());
        }
        file.read_exact_at(&mut raw, 0)?;
        let sb = SuperBlock::parse(&raw, len)?;
        let mut image = Image {
            file,
            sb,
            ids: Vec::new(),
            serial: NEXT_IMAGE.fetch_add(1, Ordering::Relaxed),
            cache,
            decompressors: Pool::new(),
            decompressions: AtomicU64::new(0),
        };
        let mut ids = Vec::with_capacity(usize::from(sb.id_count));
        for i in 0..u64::from(sb.id_count) {
            ids.push(image.table_entry(sb.id_table, 4, i)?.u32()?);
        }
        image.ids = ids;
        let root = image.inode(sb.root_inode)?;
        if root.basic_type() != BasicType::Dir {
            return Err(corrupt("the root inode is not a directory").into());
        }
        Ok(image)
    }

    /// Reads `buf.len()` bytes at `pos`, which must lie inside the used part of the image.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> Res<()> {
        let end = pos
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.sb.bytes_used)
            .ok_or_else(|| corrupt(format!("a block at {pos} lies outside the image")))?;
        match self.file.read_exact_at(buf, pos) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(corrupt(format!("the image is truncated before byte {end}")).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn decompress(&self, input: &[u8], max: usize) -> Res<Vec<u8>> {
        let mut out = vec![0u8; max];
        let n = self
            .decompressors
            .with(
                || Decompressor::new(self.sb.compression, self.sb.block_size),
                |d| d.decompress(input, &mut out),
            )
            .map_err(|e| {
                corrupt(format!(
                    "cannot decompress with compressor id {}: {e}",
                    self.sb.compression
                ))
            })?
            .map_err(|e| corrupt(format!("a compressed block does not decompress ({e})")))?;
        self.decompressions.fetch_add(1, Ordering::Relaxed);
        out.truncate(n);
        Ok(out)
    }

    fn meta_block(&self, pos: u64) -> Res<Arc<MetaBlock>> {
        if let Some(block) = self.cache.metadata.get(&(self.serial, pos)) {
            return Ok(block);
        }
        let mut header = [0u8; 2];
        self.read_at(pos, &mut header)?;
        let header = u16::from_le_bytes(header);
        let size = usize::from(header & !META_UNCOMPRESSED);
        if size == 0 || size > METADATA_SIZE {
            return Err(corrupt(format!("invalid metadata block header at {pos}")).into());
        }
        let mut raw = vec![0u8; size];
        self.read_at(pos + 2, &mut raw)?;
        let data = if header & META_UNCOMPRESSED != 0 {
            raw
        } else {
            self.decompress(&raw, METADATA_SIZE)?
        };
        if data.is_empty() {
            return Err(corrupt(format!("empty metadata block at {pos}")).into());
        }
        let block = Arc::new(MetaBlock {
            data,
            next: pos + 2 + size as u64,
        });
        self.cache
            .metadata
            .insert((self.serial, pos), block.clone(), block.data.len() + 64);
        Ok(block)
    }

    fn stream(&self, pos: u64, offset: usize, end: u64) -> Res<MetaStream<'_>> {
        if pos >= end {
            return Err(corrupt(format!(
                "a metadata reference points past its table ({pos})"
            ))
            .into());
        }
        let block = self.meta_block(pos)?;
        if offset > block.data.len() {
            return Err(corrupt("a metadata reference points past its block").into());
        }
        Ok(MetaStream {
            image: self,
            block,
            offset,
            end,
        })
    }

    /// Entry `index` of a lookup table (id, fragment, xattr id) whose block list starts at `start`.
    fn table_entry(&self, start: u64, entry_size: usize, index: u64) -> Res<MetaStream<'_>> {
        let per_block = (METADATA_SIZE / entry_size) as u64;
        let slot = start
            .checked_add((index / per_block) * 8)
            .ok_or_else(|| corrupt("a table index overflows"))?;
        let mut ptr = [0u8; 8];
        self.read_at(slot, &mut ptr)?;
        let block = u64::from_le_bytes(ptr);
        self.stream(
            block,
            (index % per_block) as usize * entry_size,
            self.sb.bytes_used,
        )
    }

    fn inode(&self, reference: u64) -> Res<Arc<Inode>> {
        if let Some(inode) = self.cache.inodes.get(&(self.serial, reference)) {
            return Ok(inode);
        }
        let (block, offset) = split_ref(reference);
        let pos = self
            .sb
            .inode_table
            .checked_add(block)
            .ok_or_else(|| corrupt("an inode reference overflows"))?;
        let mut stream = self.stream(pos, offset, self.sb.directory_table)?;
        let inode = Arc::new(Inode::parse(&mut stream, self.sb.block_size)?);
        let weight = 96
            + match &inode.data {
                InodeData::File { block_sizes, .. } => block_sizes.len() * 12,
                InodeData::Symlink(t) => t.len(),
                _ => 0,
            };
        self.cache
            .inodes
            .insert((self.serial, reference), inode.clone(), weight);
        Ok(inode)
    }

    fn listing(&self, reference: u64, inode: &Inode) -> Res<Arc<Vec<RawDirEntry>>> {
        let InodeData::Dir {
            start_block,
            offset,
            size,
        } = inode.data
        else {
            return Err(corrupt("listing a non-directory").into());
        };
        if let Some(listing) = self.cache.dirs.get(&(self.serial, reference)) {
            return Ok(listing);
        }
        let pos = self.sb.directory_table + u64::from(start_block);
        let mut entries = if size <= 3 {
            Vec::new()
        } else {
            let mut stream = self.stream(pos, usize::from(offset), self.sb.bytes_used)?;
            parse_listing(&mut stream, size)?
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let weight = 64 + entries.iter().map(|e| 48 + e.name.len()).sum::<usize>();
        let entries = Arc::new(entries);
        self.cache
            .dirs
            .insert((self.serial, reference), entries.clone(), weight);
        Ok(entries)
    }

    fn id(&self, index: u16) -> Res<u32> {
        self.ids
            .get(usize::from(index))
            .copied()
            .ok_or_else(|| corrupt(format!("id index {index} is out of range")).into())
    }

    /// A data or fragment block at `pos` with stored size `stored` (flags included).
    fn block(&self, pos: u64, stored: u32) -> Res<Arc<[u8]>> {
        if let Some(block) = self.cache.data.get(&(self.serial, pos)) {
            return Ok(block);
        }
        let size = (stored & 0x00FF_FFFF) as usize;
        if size > self.sb.block_size as usize {
            return Err(corrupt(format!(
                "a data block of {size} bytes exceeds the block size"
            ))
            .into());
        }
        let mut raw = vec![0u8; size];
        self.read_at(pos, &mut raw)?;
        let data: Arc<[u8]> = if stored & BLOCK_UNCOMPRESSED != 0 {
            raw.into()
        } else {
            self.decompress(&raw, self.sb.block_size as usize)?.into()
        };
        self.cache
            .data
            .insert((self.serial, pos), data.clone(), data.len() + 64);
        Ok(data)
    }

    fn fragment(&self, index: u32) -> Res<(u64, u32)> {
        if self.sb.fragment_table == NO_TABLE || index >= self.sb.fragment_count {
            return Err(corrupt(format!("fragment {index} does not exist")).into());
        }
        let mut entry = self.table_entry(self.sb.fragment_table, 16, u64::from(index))?;
        let start = entry.u64()?;
        let size = entry.u32()?;
        Ok((start, size))
    }

    /// Reads file content at `offset` into `buf`; returns the bytes read.
    fn read_file(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Res<usize> {
        let InodeData::File {
            size,
            fragment,
            fragment_offset,
            block_sizes,
            block_positions,
            ..
        } = &inode.data
        else {
            return Err(corrupt("reading a non-file").into());
        };
        let size = *size;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let bs = u64::from(self.sb.block_size);
        let end = size.min(offset.saturating_add(buf.len() as u64));
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let within = (pos % bs) as usize;
            let chunk_len = (size - index * bs).min(bs) as usize;
            let want = ((end - pos) as usize).min(chunk_len - within);
            let out = &mut buf[(pos - offset) as usize..][..want];
            match block_sizes.get(index as usize) {
                Some(0) => out.fill(0),
                Some(&stored) => {
                    let data = self.block(block_positions[index as usize], stored)?;
                    if data.len() < chunk_len {
                        return Err(corrupt(format!(
                            "a data block holds {} bytes, {chunk_len} expected",
                            data.len()
                        ))
                        .into());
                    }
                    out.copy_from_slice(&data[within..within + want]);
                }
                None if index as usize == block_sizes.len() && *fragment != NONE_U32 => {
                    let (start, stored) = self.fragment(*fragment)?;
                    let data = self.block(start, stored)?;
                    let from = *fragment_offset as usize + within;
                    let tail = data
                        .get(from..from + want)
                        .ok_or_else(|| corrupt("a file's tail lies outside its fragment block"))?;
                    out.copy_from_slice(tail);
                }
                None => return Err(corrupt("a file has fewer blocks than its size needs").into()),
            }
            pos += want as u64;
        }
        Ok((end - offset) as usize)
    }

    /// The extended attributes of an inode's xattr index.
    fn xattrs(&self, index: u32) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
        if index == NONE_U32 {
            return Ok(Vec::new());
        }
        if self.sb.xattr_table == NO_TABLE {
            return Err(corrupt("an inode has xattrs but the image has no xattr table").into());
        }
        let mut header = [0u8; 16];
        self.read_at(self.sb.xattr_table, &mut header)?;
        let kv_start = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if index >= count {
            return Err(corrupt(format!("xattr index {index} is out of range")).into());
        }
        let mut id = self.table_entry(self.sb.xattr_table + 16, 16, u64::from(index))?;
        let reference = id.u64()?;
        let pairs = id.u32()?;
        if pairs > 65_536 {
            return Err(corrupt(format!("an inode claims {pairs} xattrs")).into());
        }
        let (block, offset) = split_ref(reference);
        let mut kv = self.stream(kv_start + block, offset, self.sb.bytes_used)?;
        let mut out = Vec::with_capacity(pairs as usize);
        for _ in 0..pairs {
            let key_type = kv.u16()?;
            let name_len = usize::from(kv.u16()?);
            let prefix = xattr_prefix(key_type)
                .ok_or_else(|| corrupt(format!("unknown xattr key type {key_type:#x}")))?;
            let mut name = prefix.to_vec();
            name.extend(kv.bytes(name_len)?);
            let value_len = kv.u32()? as usize;
            let value = if key_type & 0x100 != 0 {
                if value_len != 8 {
                    return Err(corrupt("an out-of-line xattr value has a bad reference").into());
                }
                let (vblock, voffset) = split_ref(kv.u64()?);
                let mut v = self.stream(kv_start + vblock, voffset, self.sb.bytes_used)?;
                let len = v.u32()? as usize;
                if len > MAX_XATTR_VALUE {
                    return Err(corrupt("an xattr value is too large").into());
                }
                v.bytes(len)?
            } else {
                if value_len > MAX_XATTR_VALUE {
                    return Err(corrupt("an xattr value is too large").into());
                }
                kv.bytes(value_len)?
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// Resolves a layer path to its inode reference and inode; `None` when absent.
    fn resolve(&self, path: &Path) -> Res<Option<(u64, Arc<Inode>)>> {
        let mut reference = self.sb.root_inode;
        let mut inode = self.inode(reference)?;
        for name in clean_components(path.as_os_str().as_bytes()) {
            if inode.basic_type() != BasicType::Dir {
                return Ok(None);
            }
            let listing = self.listing(reference, &inode)?;
            let Ok(i) = listing.binary_search_by(|e| e.name.as_slice().cmp(name.as_bytes())) else {
                return Ok(None);
            };
            let entry = &listing[i];
            reference = entry.inode_ref;
            inode = self.inode(reference)?;
            if inode.basic_type() != entry.kind {
                return Err(corrupt(format!(
                    "directory entry {:?} and its inode disagree on the type",
                    name
                ))
                .into());
            }
        }
        Ok(Some((reference, inode)))
    }

    fn is_opaque(&self, inode: &Inode) -> Res<bool> {
        if inode.basic_type() != BasicType::Dir || inode.xattr == NONE_U32 {
            return Ok(false);
        }
        let opaque = xattr::overlay_opaque_xattr(false).as_bytes();
        Ok(self
            .xattrs(inode.xattr)?
            .iter()
            .any(|(n, v)| n.as_slice() == opaque && v.as_slice() == b"y"))
    }

    fn entry(&self, inode: &Inode) -> Res<Entry> {
        let (kind, size, rdev) = match &inode.data {
            InodeData::Dir { size, .. } => (FileKind::Directory, u64::from(*size), 0),
            InodeData::File { size, .. } => (FileKind::Regular, *size, 0),
            InodeData::Symlink(t) => (FileKind::Symlink, t.len() as u64, 0),
            InodeData::Device { block, devno } => {
                let (major, minor) = decode_dev(*devno);
                let kind = match (*block, *devno) {
                    (false, 0) => FileKind::Whiteout,
                    (false, _) => FileKind::CharDevice,
                    (true, _) => FileKind::BlockDevice,
                };
                (kind, 0, libc::makedev(major, minor))
            }
            InodeData::Fifo => (FileKind::Fifo, 0, 0),
            InodeData::Socket => (FileKind::Socket, 0, 0),
        };
        Ok(Entry {
            kind,
            mode: inode.mode,
            uid: self.id(inode.uid_idx)?,
            gid: self.id(inode.gid_idx)?,
            size,
            mtime: i64::from(inode.mtime),
            mtime_nsec: 0,
            rdev,
            nlink: inode.nlink,
            ino: u64::from(inode.number),
            opaque: self.is_opaque(inode)?,
        })
    }

    fn stats(&self) -> CacheStats {
        let c = &self.cache;
        CacheStats {
            data: c.data.counts(),
            metadata: c.metadata.counts(),
            inodes: c.inodes.counts(),
            directories: c.dirs.counts(),
            decompressions: self.decompressions.load(Ordering::Relaxed),
            decompressors: self.decompressors.created(),
            cached_bytes: c.used(),
        }
    }
}

/// One layer's squashfs image, read in-process. Cloning shares the caches.
#[derive(Clone)]
pub struct SquashfsLayer {
    id: String,
    path: PathBuf,
    image: Arc<Image>,
}

impl std::fmt::Debug for SquashfsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SquashfsLayer")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish()
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SquashfsLayer {
    /// Opens the image of layer `id` at `path` with a cache of its own of
    /// `cache_bytes`. The super block, the id table and the root inode are
    /// checked; a damaged image is [`DriverError::CorruptLayer`].
    pub fn open(path: &Path, id: &str, cache_bytes: usize) -> Result<SquashfsLayer, DriverError> {
        Self::open_with_cache(path, id, Arc::new(ReaderCache::new(cache_bytes)))
    }

    /// Opens the image of layer `id` at `path`, caching into `cache` (shared
    /// with other images).
    pub fn open_with_cache(
        path: &Path,
        id: &str,
        cache: Arc<ReaderCache>,
    ) -> Result<SquashfsLayer, DriverError> {
        match Image::open(path, cache) {
            Ok(image) => Ok(SquashfsLayer {
                id: id.to_string(),
                path: path.to_path_buf(),
                image: Arc::new(image),
            }),
            Err(ImageError::Corrupt(c)) => Err(DriverError::CorruptLayer {
                id: id.to_string(),
                reason: format!("squashfs image {}: {c}", path.display()),
            }),
            Err(ImageError::Io(e)) => Err(DriverError::Io {
                op: "open squashfs image",
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// The layer id this image belongs to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The compressor id and block size recorded in the super block.
    pub fn compression(&self) -> (u16, u32) {
        (self.image.sb.compression, self.image.sb.block_size)
    }

    /// Counters of the caches and decompressions so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.image.stats()
    }

    fn err(&self, e: ImageError) -> io::Error {
        match e {
            ImageError::Corrupt(c) => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("squashfs image of layer {} is corrupt: {c}", self.id),
            ),
            ImageError::Io(e) => io::Error::new(
                e.kind(),
                format!("reading the squashfs image of layer {}: {e}", self.id),
            ),
        }
    }

    fn existing(&self, path: &Path) -> io::Result<(u64, Arc<Inode>)> {
        self.image
            .resolve(path)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| errno(libc::ENOENT))
    }

    /// Groups of paths naming the same non-directory inode (hard links), each
    /// group sorted, groups in path order.
    pub fn hardlink_groups(&self) -> io::Result<Vec<Vec<PathBuf>>> {
        let mut by_inode: std::collections::BTreeMap<u32, Vec<PathBuf>> = Default::default();
        self.walk(|path, entry| {
            if entry.kind != BasicType::Dir {
                by_inode
                    .entry(entry.number)
                    .or_default()
                    .push(path.to_path_buf());
            }
            Ok(())
        })?;
        let mut groups: Vec<Vec<PathBuf>> = by_inode
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// The outermost opaque directories of the layer, as path components.
    pub fn opaque_dirs(&self) -> io::Result<Vec<Vec<OsString>>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.image.sb.root_inode, Vec::<OsString>::new())];
        while let Some((reference, path)) = stack.pop() {
            let inode = self.image.inode(reference).map_err(|e| self.err(e))?;
            let listing = self
                .image
                .listing(reference, &inode)
                .map_err(|e| self.err(e))?;
            for e in listing.iter().filter(|e| e.kind == BasicType::Dir) {
                let child = self.image.inode(e.inode_ref).map_err(|e| self.err(e))?;
                let mut p = path.clone();
                p.push(OsString::from_vec(e.name.clone()));
                if self.image.is_opaque(&child).map_err(|e| self.err(e))? {
                    out.push(p);
                } else {
                    stack.push((e.inode_ref, p));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Calls `f` for every entry below the root (directories before their content).
    fn walk(&self, mut f: impl FnMut(&Path, &RawDirEntry) -> io::Result<()>) -> io::Result<()> {
        let mut stack = vec![(self.image.sb.root_inode, PathBuf::new(), 0usize)];
        while let Some((reference, path, depth)) = stack.pop() {
            if depth > 4096 {
                return Err(self.err(corrupt("directories nest deeper than a path can").into()));
            }
            let inode = self.image.inode(reference).map_err(|e| self.err(e))?;
            let listing = self
                .image
                .listing(reference, &inode)
                .map_err(|e| self.err(e))?;
            for e in listing.iter() {
                let p = path.join(OsStr::from_bytes(&e.name));
                f(&p, e)?;
                if e.kind == BasicType::Dir {
                    stack.push((e.inode_ref, p, depth + 1));
                }
            }
        }
        Ok(())
    }
}

impl LayerReader for SquashfsLayer {
    fn lookup(&self, path: &Path) -> io::Result<Option<Entry>> {
        match self.image.resolve(path).map_err(|e| self.err(e))? {
            Some((_, inode)) => self.image.entry(&inode).map(Some).map_err(|e| self.err(e)),
            None => Ok(None),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let (reference, inode) = self.existing(path)?;
        if inode.basic_type() != BasicType::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        let listing = self
            .image
            .listing(reference, &inode)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(listing.len());
        for e in listing.iter() {
            let kind = match e.kind {
                BasicType::Dir => FileKind::Directory,
                BasicType::File => FileKind::Regular,
                BasicType::Symlink => FileKind::Symlink,
                BasicType::BlockDev => FileKind::BlockDevice,
                BasicType::Fifo => FileKind::Fifo,
                BasicType::Socket => FileKind::Socket,
                BasicType::CharDev => {
                    let child = self.image.inode(e.inode_ref).map_err(|e| self.err(e))?;
                    match child.data {
                        InodeData::Device { devno: 0, .. } => FileKind::Whiteout,
                        _ => FileKind::CharDevice,
                    }
                }
            };
            out.push(DirEntry {
                name: OsString::from_vec(e.name.clone()),
                kind,
            });
        }
        Ok(out)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let (_, inode) = self.existing(path)?;
        match inode.basic_type() {
            BasicType::File => self
                .image
                .read_file(&inode, offset, buf)
                .map_err(|e| self.err(e)),
            BasicType::Dir => Err(errno(libc::EISDIR)),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        let (_, inode) = self.existing(path)?;
        match &inode.data {
            InodeData::Symlink(target) => Ok(OsString::from_vec(target.clone())),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    fn xattrs(&self, path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let (_, inode) = self.existing(path)?;
        Ok(self
            .image
            .xattrs(inode.xattr)
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|(n, v)| (OsString::from_vec(n), v))
            .filter(|(n, _)| !xattr::is_overlay_xattr(n))
            .collect())
    }

    fn open_file(&self, _path: &Path) -> io::Result<Option<OwnedFd>> {
        Ok(None)
    }

    fn directory(&self) -> Option<&Path> {
        None
    }
}
