//! Writes one layer tar as a squashfs image through libsquashfs, streaming.
//!
//! File content goes to libsquashfs' block processor as the tar streams past:
//! it cuts it into blocks, compresses them on worker threads, deduplicates
//! them and packs file tails into fragment blocks. Only metadata is kept in
//! memory (the [`LayerTree`] and one inode per file with its block list);
//! inodes, directories, the export, id, fragment and xattr tables and the
//! super block are written at the end.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tracing::{debug, warn};

use super::ffi::{self, check, InodeGeneric, Object, SqfsError};
use super::options::Compressor;
use super::tree::{Attrs, LayerTree, NodeId, NodeKind, Spec, SpecKind, TreeError, ROOT};
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::clean_components;
use crate::tar_reader::{TarEntry, TarKind, TarReader};
use crate::xattr;

/// How an image is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSettings {
    /// The compressor.
    pub compressor: Compressor,
    /// Its level (`None`: libsquashfs' default for it).
    pub level: Option<u32>,
    /// The data block size (a power of two from 4 KiB to 1 MiB).
    pub block_size: u32,
    /// Threads compressing blocks.
    pub workers: usize,
}

/// What writing an image did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageStats {
    /// Tar entries read (whiteouts included).
    pub entries: u64,
    /// Bytes of regular-file content stored.
    pub bytes: u64,
    /// Inodes in the image.
    pub inodes: u32,
    /// Non-directories with more than one name.
    pub hardlink_groups: u32,
}

/// Size of the chunks file content is read and handed to libsquashfs in.
const CHUNK: usize = 256 * 1024;
/// Zeros fed for the holes of sparse tar entries (libsquashfs stores all-zero blocks as sparse).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

const S_IFMT_DIR: u16 = 0o040000;
const S_IFMT_REG: u16 = 0o100000;
const S_IFMT_LNK: u16 = 0o120000;
const S_IFMT_BLK: u16 = 0o060000;
const S_IFMT_CHR: u16 = 0o020000;
const S_IFMT_FIFO: u16 = 0o010000;

impl From<TreeError> for DriverError {
    fn from(e: TreeError) -> Self {
        DriverError::BadLayer(e.0)
    }
}

fn lib(image: &Path) -> impl Fn(SqfsError) -> DriverError + '_ {
    move |e| DriverError::Other(format!("writing squashfs image {}: {e}", image.display()))
}

/// Writes the uncompressed layer tar `tar` as a squashfs image at `path`
/// (created or truncated). `now` dates the super block and the directories
/// the tar implies without listing.
pub fn write_image(
    path: &Path,
    tar: &mut dyn Read,
    settings: &ImageSettings,
    now: u32,
) -> Result<ImageStats> {
    let mut writer = ImageWriter::create(path, settings, now)?;
    let mut tree = LayerTree::new(now);
    let mut reader = TarReader::new(tar);
    let mut stats = ImageStats::default();
    loop {
        let entry = reader
            .next_entry()
            .map_err(|e| DriverError::BadLayer(format!("{e} (after {} entries)", stats.entries)))?;
        let Some(entry) = entry else {
            break;
        };
        stats.entries += 1;
        let spec = spec_of(&entry)?;
        let size = entry.size;
        tree.apply(spec, || {
            let slot = writer.store_file(&entry, &mut reader)?;
            stats.bytes += size;
            Ok::<usize, DriverError>(slot)
        })?;
    }
    let (inodes, hardlink_groups) = writer.finish(&tree)?;
    stats.inodes = inodes;
    stats.hardlink_groups = hardlink_groups;
    File::open(path)
        .and_then(|f| f.sync_all())
        .ctx("sync image", path)?;
    debug!(image = %path.display(), entries = stats.entries, bytes = stats.bytes, inodes, "wrote squashfs image");
    Ok(stats)
}

/// Reduces a tar entry to a tree [`Spec`]: owners checked, overlay xattrs and
/// xattrs squashfs cannot store dropped, times clamped to squashfs' range.
fn spec_of(entry: &TarEntry) -> Result<Spec> {
    let shown = String::from_utf8_lossy(&entry.path).into_owned();
    let bad = |msg: String| DriverError::BadLayer(msg);
    let kind = match entry.kind {
        TarKind::Regular => SpecKind::Regular,
        TarKind::Directory => SpecKind::Directory,
        TarKind::Symlink => {
            if entry.link.is_empty() {
                return Err(bad(format!("symlink {shown} has no target")));
            }
            SpecKind::Symlink(entry.link.clone())
        }
        TarKind::Hardlink => {
            let target: Vec<Vec<u8>> = clean_components(&entry.link)
                .into_iter()
                .map(|c| c.into_encoded_bytes())
                .collect();
            if target.is_empty() {
                return Err(bad(format!("hard link {shown} points at the layer root")));
            }
            SpecKind::Hardlink(target)
        }
        TarKind::CharDevice | TarKind::BlockDevice => {
            if entry.dev_major >= 1 << 12 || entry.dev_minor >= 1 << 20 {
                return Err(bad(format!(
                    "{shown}: device {}:{} does not fit squashfs' device numbers",
                    entry.dev_major, entry.dev_minor
                )));
            }
            SpecKind::Device {
                block: entry.kind == TarKind::BlockDevice,
                major: entry.dev_major,
                minor: entry.dev_minor,
            }
        }
        TarKind::Fifo => SpecKind::Fifo,
        TarKind::Other(flag) => {
            return Err(bad(format!(
                "{shown}: unsupported tar entry type {:?}",
                flag as char
            )))
        }
    };
    let to_u32 = |field: &str, v: u64| {
        u32::try_from(v).map_err(|_| bad(format!("{shown}: {field} {v} out of range")))
    };
    let uid = to_u32("uid", entry.uid)?;
    let gid = to_u32("gid", entry.gid)?;
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(entry.xattrs.len());
    for (name, value) in &entry.xattrs {
        if xattr::is_overlay_xattr(name) {
            warn!(path = %shown, xattr = ?name, "dropping overlay xattr carried by the layer");
            continue;
        }
        let bytes = name.as_bytes();
        let storable = [&b"user."[..], b"trusted.", b"security."]
            .iter()
            .any(|p| bytes.starts_with(p) && bytes.len() > p.len())
            && !bytes.contains(&0);
        if !storable {
            warn!(path = %shown, xattr = ?name, "squashfs cannot store this xattr namespace, skipping it");
            continue;
        }
        xattrs.retain(|(n, _)| n.as_slice() != bytes);
        xattrs.push((bytes.to_vec(), value.clone()));
    }
    let mtime = entry.mtime.clamp(0, i64::from(u32::MAX)) as u32;
    if i64::from(mtime) != entry.mtime {
        debug!(path = %shown, mtime = entry.mtime, "clamping a time squashfs cannot store");
    }
    Ok(Spec {
        components: clean_components(&entry.path)
            .into_iter()
            .map(|c| c.into_encoded_bytes())
            .collect(),
        display: shown,
        kind,
        attrs: Attrs {
            mode: entry.mode & 0o7777,
            uid,
            gid,
            mtime,
            xattrs,
        },
    })
}

/// The inode of each stored file, as the block processor fills it in. The
/// processor keeps the address of each slot until it finishes, so slots are
/// boxed and freed only after the processor is gone.
// The boxes are the point: the processor holds their addresses while the vector grows.
#[allow(clippy::vec_box)]
struct FileSlots(Vec<Box<*mut InodeGeneric>>);

impl Drop for FileSlots {
    fn drop(&mut self) {
        for slot in &self.0 {
            if !slot.is_null() {
                // SAFETY: the block processor allocated these inodes with malloc and is gone.
                unsafe { ffi::sqfs_free((**slot).cast()) };
            }
        }
    }
}

/// An inode allocated by us (`calloc`), freed on drop.
struct OwnInode(*mut InodeGeneric);

impl OwnInode {
    fn new(payload: usize) -> Result<OwnInode> {
        // SAFETY: plain allocation; zeroed memory is a valid inode.
        let ptr = unsafe { libc::calloc(1, std::mem::size_of::<InodeGeneric>() + payload) };
        if ptr.is_null() {
            return Err(DriverError::Other("out of memory for an inode".into()));
        }
        Ok(OwnInode(ptr.cast()))
    }
}

impl Drop for OwnInode {
    fn drop(&mut self) {
        // SAFETY: allocated with calloc by `new`.
        unsafe { libc::free(self.0.cast()) };
    }
}

/// A directory inode made by libsquashfs, freed on drop.
struct LibInode(*mut InodeGeneric);

impl Drop for LibInode {
    fn drop(&mut self) {
        // SAFETY: allocated by libsquashfs (malloc).
        unsafe { ffi::sqfs_free(self.0.cast()) };
    }
}

/// The libsquashfs objects writing one image. Field order is drop order: the
/// block processor (which joins its workers) goes first, the file last.
struct ImageWriter<'p> {
    processor: Object<ffi::BlockProcessor>,
    files: FileSlots,
    _block_writer: Object<ffi::BlockWriter>,
    dir_writer: Object<ffi::DirWriter>,
    dirent_writer: Object<ffi::MetaWriter>,
    inode_writer: Object<ffi::MetaWriter>,
    xattr_writer: Object<ffi::XattrWriter>,
    id_table: Object<ffi::IdTable>,
    frag_table: Object<ffi::FragTable>,
    cmp: Object<ffi::SqfsCompressor>,
    file: Object<ffi::SqfsFile>,
    sup: ffi::SqfsSuper,
    path: &'p Path,
    buf: Vec<u8>,
}

impl<'p> ImageWriter<'p> {
    fn create(path: &'p Path, settings: &ImageSettings, now: u32) -> Result<Self> {
        let err = lib(path);
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| DriverError::Other("image path contains a NUL byte".into()))?;
        // SAFETY: a valid C string; the result is owned by us.
        let file = unsafe {
            Object::from_raw(
                ffi::sqfs_open_file(cpath.as_ptr(), ffi::SQFS_FILE_OPEN_OVERWRITE),
                "open output file",
            )
        }
        .map_err(|_| DriverError::Io {
            op: "create image",
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        })?;
        let id = settings.compressor.id();
        let mut cfg = ffi::compressor_config(id, settings.block_size, 0).map_err(&err)?;
        if let Some(level) = settings.level {
            cfg.level = level;
        }
        let cmp = ffi::create_compressor(&cfg).map_err(|e| {
            DriverError::Unsupported(format!(
                "libsquashfs cannot compress with {} here: {e}",
                settings.compressor
            ))
        })?;
        let mut sup = ffi::SqfsSuper::default();
        // SAFETY: all pointers below are live objects we own; `sup` is a valid structure.
        unsafe {
            check(
                ffi::sqfs_super_init(
                    &mut sup,
                    settings.block_size as usize,
                    now,
                    std::ffi::c_int::from(id),
                ),
                "initialise super block",
            )
            .map_err(&err)?;
            // Reserve the super block; it is rewritten once the tables are known.
            check(
                ffi::sqfs_super_write(&sup, file.as_ptr()),
                "write super block",
            )
            .map_err(&err)?;
            let write_options = (*cmp.as_ptr())
                .write_options
                .ok_or_else(|| DriverError::Other("compressor without write_options".into()))?;
            let written = check(
                write_options(cmp.as_ptr(), file.as_ptr()),
                "write compressor options",
            )
            .map_err(&err)?;
            if written > 0 {
                sup.flags |= ffi::SQFS_FLAG_COMPRESSOR_OPTIONS;
            }
            let frag_table =
                Object::from_raw(ffi::sqfs_frag_table_create(0), "fragment table").map_err(&err)?;
            let block_writer = Object::from_raw(
                ffi::sqfs_block_writer_create(file.as_ptr(), ffi::SQFS_DEVBLK_SIZE, 0),
                "block writer",
            )
            .map_err(&err)?;
            let workers = settings.workers.max(1);
            let processor = Object::from_raw(
                ffi::sqfs_block_processor_create(
                    settings.block_size as usize,
                    cmp.as_ptr(),
                    workers as std::ffi::c_uint,
                    workers * 8,
                    block_writer.as_ptr(),
                    frag_table.as_ptr(),
                ),
                "block processor",
            )
            .map_err(&err)?;
            let id_table =
                Object::from_raw(ffi::sqfs_id_table_create(0), "id table").map_err(&err)?;
            let xattr_writer =
                Object::from_raw(ffi::sqfs_xattr_writer_create(0), "xattr writer").map_err(&err)?;
            let inode_writer = Object::from_raw(
                ffi::sqfs_meta_writer_create(file.as_ptr(), cmp.as_ptr(), 0),
                "inode writer",
            )
            .map_err(&err)?;
            let dirent_writer = Object::from_raw(
                ffi::sqfs_meta_writer_create(
                    file.as_ptr(),
                    cmp.as_ptr(),
                    ffi::SQFS_META_WRITER_KEEP_IN_MEMORY,
                ),
                "directory writer",
            )
            .map_err(&err)?;
            let dir_writer = Object::from_raw(
                ffi::sqfs_dir_writer_create(
                    dirent_writer.as_ptr(),
                    ffi::SQFS_DIR_WRITER_CREATE_EXPORT_TABLE,
                ),
                "directory writer",
            )
            .map_err(&err)?;
            Ok(ImageWriter {
                processor,
                files: FileSlots(Vec::new()),
                _block_writer: block_writer,
                dir_writer,
                dirent_writer,
                inode_writer,
                xattr_writer,
                id_table,
                frag_table,
                cmp,
                file,
                sup,
                path,
                buf: vec![0u8; CHUNK],
            })
        }
    }

    /// Streams the content of a regular-file entry into the block processor;
    /// returns the slot of its inode.
    fn store_file<R: Read>(
        &mut self,
        entry: &TarEntry,
        reader: &mut TarReader<R>,
    ) -> Result<usize> {
        let err = lib(self.path);
        let slot = self.files.0.len();
        self.files.0.push(Box::new(std::ptr::null_mut()));
        let inode_ptr: *mut *mut InodeGeneric = &mut *self.files.0[slot];
        let proc_ = self.processor.as_ptr();
        // SAFETY: the processor is live; the slot's address stays valid until the
        // processor is finished or destroyed (slots are boxed and outlive it).
        check(
            unsafe {
                ffi::sqfs_block_processor_begin_file(proc_, inode_ptr, std::ptr::null_mut(), 0)
            },
            "begin file",
        )
        .map_err(&err)?;
        match &entry.sparse {
            Some(segments) => {
                let mut at = 0;
                for &(offset, len) in segments {
                    self.append_zeros(offset.saturating_sub(at))?;
                    self.append_data(reader, len, entry)?;
                    at = offset + len;
                }
                self.append_zeros(entry.size.saturating_sub(at))?;
            }
            None => self.append_data(reader, entry.size, entry)?,
        }
        // SAFETY: as above.
        check(
            unsafe { ffi::sqfs_block_processor_end_file(proc_) },
            "end file",
        )
        .map_err(&err)?;
        Ok(slot)
    }

    fn append(&mut self, data: *const u8, len: usize) -> Result<()> {
        // SAFETY: `data` points to `len` readable bytes; the processor copies them.
        check(
            unsafe { ffi::sqfs_block_processor_append(self.processor.as_ptr(), data.cast(), len) },
            "append file data",
        )
        .map_err(lib(self.path))
        .map(drop)
    }

    fn append_zeros(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.append(ZEROS.as_ptr(), k)?;
            n -= k as u64;
        }
        Ok(())
    }

    fn append_data<R: Read>(
        &mut self,
        reader: &mut TarReader<R>,
        mut n: u64,
        entry: &TarEntry,
    ) -> Result<()> {
        while n > 0 {
            let want = n.min(self.buf.len() as u64) as usize;
            let got = reader.read_data(&mut self.buf[..want]).map_err(|e| {
                DriverError::BadLayer(format!("{}: {e}", String::from_utf8_lossy(&entry.path)))
            })?;
            if got == 0 {
                return Err(DriverError::BadLayer(format!(
                    "{}: the tar holds less data than the entry announces",
                    String::from_utf8_lossy(&entry.path)
                )));
            }
            let ptr = self.buf.as_ptr();
            self.append(ptr, got)?;
            n -= got as u64;
        }
        Ok(())
    }

    fn file_size(&self) -> u64 {
        let f = self.file.as_ptr();
        // SAFETY: a live file object; get_size is always provided by sqfs_open_file.
        unsafe { ((*f).get_size.expect("sqfs_file_t has get_size"))(f) }
    }

    fn id_index(&self, id: u32) -> Result<u16> {
        let mut idx = 0u16;
        // SAFETY: live id table, valid out pointer.
        check(
            unsafe { ffi::sqfs_id_table_id_to_index(self.id_table.as_ptr(), id, &mut idx) },
            "id table",
        )
        .map_err(lib(self.path))?;
        Ok(idx)
    }

    /// The xattr index of a set of xattrs ([`ffi::NO_XATTRS`] for none).
    fn xattr_index(&self, xattrs: &[(Vec<u8>, Vec<u8>)], opaque: bool) -> Result<u32> {
        if xattrs.is_empty() && !opaque {
            return Ok(ffi::NO_XATTRS);
        }
        let err = lib(self.path);
        let xw = self.xattr_writer.as_ptr();
        let opaque_pair = (
            xattr::overlay_opaque_xattr(false).as_bytes().to_vec(),
            b"y".to_vec(),
        );
        // SAFETY: live xattr writer; keys are NUL-terminated copies, values valid slices.
        unsafe {
            check(ffi::sqfs_xattr_writer_begin(xw, 0), "begin xattrs").map_err(&err)?;
            for (name, value) in xattrs.iter().chain(opaque.then_some(&opaque_pair)) {
                let key = CString::new(name.as_slice())
                    .map_err(|_| DriverError::BadLayer("an xattr name contains NUL".into()))?;
                check(
                    ffi::sqfs_xattr_writer_add(
                        xw,
                        key.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                    ),
                    "add xattr",
                )
                .map_err(&err)?;
            }
            let mut idx = ffi::NO_XATTRS;
            check(ffi::sqfs_xattr_writer_end(xw, &mut idx), "end xattrs").map_err(&err)?;
            Ok(idx)
        }
    }

    fn set_base(
        &self,
        inode: *mut InodeGeneric,
        type_bits: u16,
        attrs: &Attrs,
        number: u32,
    ) -> Result<()> {
        let uid_idx = self.id_index(attrs.uid)?;
        let gid_idx = self.id_index(attrs.gid)?;
        // SAFETY: `inode` is a live inode structure.
        unsafe {
            let base = &mut (*inode).base;
            base.mode = type_bits | (attrs.mode & 0o7777) as u16;
            base.uid_idx = uid_idx;
            base.gid_idx = gid_idx;
            base.mod_time = attrs.mtime;
            base.inode_number = number;
        }
        Ok(())
    }

    /// Writes `inode` to the inode table; returns its reference.
    fn write_inode(&self, inode: *const InodeGeneric) -> Result<u64> {
        let (mut block, mut offset) = (0u64, 0u32);
        let iw = self.inode_writer.as_ptr();
        // SAFETY: live meta writer, valid inode.
        unsafe {
            ffi::sqfs_meta_writer_get_position(iw, &mut block, &mut offset);
            check(ffi::sqfs_meta_writer_write_inode(iw, inode), "write inode")
                .map_err(lib(self.path))?;
        }
        Ok((block << 16) | u64::from(offset))
    }

    /// Finishes the image: inodes, directories and tables from `tree`, then the
    /// super block. Returns the inode count and the number of hard-link groups.
    fn finish(mut self, tree: &LayerTree) -> Result<(u32, u32)> {
        let err = lib(self.path);
        // SAFETY: live processor.
        check(
            unsafe { ffi::sqfs_block_processor_finish(self.processor.as_ptr()) },
            "finish data blocks",
        )
        .map_err(&err)?;
        let (order, parents) = post_order(tree);
        let count = u32::try_from(order.len())
            .map_err(|_| DriverError::BadLayer("too many entries for one image".into()))?;
        let mut numbers = vec![0u32; tree.len()];
        for (i, &n) in order.iter().enumerate() {
            numbers[n] = i as u32 + 1;
        }
        self.sup.inode_table_start = self.file_size();
        let mut refs = vec![0u64; tree.len()];
        let mut groups = 0;
        for &n in &order {
            let node = tree.node(n);
            if !matches!(node.kind, NodeKind::Dir { .. }) && node.links > 1 {
                groups += 1;
            }
            refs[n] = match &node.kind {
                NodeKind::Dir { children, opaque } => {
                    let parent_number = match parents[n] {
                        Some(p) => numbers[p],
                        None => count + 1,
                    };
                    self.write_dir(
                        tree,
                        node,
                        children,
                        *opaque,
                        &numbers,
                        &refs,
                        numbers[n],
                        parent_number,
                    )?
                }
                NodeKind::File { slot } => {
                    let inode = *self.files.0[*slot];
                    if inode.is_null() {
                        return Err(DriverError::Other(
                            "libsquashfs returned no file inode".into(),
                        ));
                    }
                    self.set_base(inode, S_IFMT_REG, &node.attrs, numbers[n])?;
                    let xattrs = self.xattr_index(&node.attrs.xattrs, false)?;
                    // SAFETY: a live file inode made by the block processor.
                    unsafe {
                        if node.links > 1 {
                            check(ffi::sqfs_inode_make_extended(inode), "extend inode")
                                .map_err(&err)?;
                            (*inode).data.file_ext.nlink = node.links;
                        }
                        if xattrs != ffi::NO_XATTRS {
                            check(ffi::sqfs_inode_set_xattr_index(inode, xattrs), "set xattrs")
                                .map_err(&err)?;
                        }
                    }
                    self.write_inode(inode)?
                }
                other => {
                    let inode = self.special_inode(other, node.links, &node.attrs)?;
                    self.set_base(inode.0, type_bits(other), &node.attrs, numbers[n])?;
                    self.write_inode(inode.0)?
                }
            };
        }
        let root_ref = refs[ROOT];
        self.sup.inode_count = count;
        self.sup.root_inode_ref = root_ref;
        let file = self.file.as_ptr();
        let cmp = self.cmp.as_ptr();
        // SAFETY: live objects throughout; `self.sup` is a valid super block.
        unsafe {
            check(
                ffi::sqfs_meta_writer_flush(self.inode_writer.as_ptr()),
                "flush inodes",
            )
            .map_err(&err)?;
            check(
                ffi::sqfs_meta_writer_flush(self.dirent_writer.as_ptr()),
                "flush directories",
            )
            .map_err(&err)?;
            self.sup.directory_table_start = self.file_size();
            check(
                ffi::sqfs_meta_write_write_to_file(self.dirent_writer.as_ptr()),
                "write directories",
            )
            .map_err(&err)?;
            check(
                ffi::sqfs_frag_table_write(self.frag_table.as_ptr(), file, &mut self.sup, cmp),
                "write fragment table",
            )
            .map_err(&err)?;
            check(
                ffi::sqfs_dir_writer_write_export_table(
                    self.dir_writer.as_ptr(),
                    file,
                    cmp,
                    numbers[ROOT],
                    root_ref,
                    &mut self.sup,
                ),
                "write export table",
            )
            .map_err(&err)?;
            self.sup.flags |= ffi::SQFS_FLAG_EXPORTABLE;
            check(
                ffi::sqfs_id_table_write(self.id_table.as_ptr(), file, &mut self.sup, cmp),
                "write id table",
            )
            .map_err(&err)?;
            check(
                ffi::sqfs_xattr_writer_flush(self.xattr_writer.as_ptr(), file, &mut self.sup, cmp),
                "write xattr table",
            )
            .map_err(&err)?;
            self.sup.bytes_used = self.file_size();
            check(ffi::sqfs_super_write(&self.sup, file), "write super block").map_err(&err)?;
            let used = self.sup.bytes_used as usize;
            let pad =
                (ffi::SQFS_DEVBLK_SIZE - used % ffi::SQFS_DEVBLK_SIZE) % ffi::SQFS_DEVBLK_SIZE;
            if pad > 0 {
                let write_at = (*file)
                    .write_at
                    .ok_or_else(|| DriverError::Other("sqfs_file_t without write_at".into()))?;
                check(
                    write_at(file, self.sup.bytes_used, ZEROS.as_ptr().cast(), pad),
                    "pad image",
                )
                .map_err(&err)?;
            }
        }
        Ok((count, groups))
    }

    /// Writes the listing of a directory and then its inode; returns the inode's reference.
    #[allow(clippy::too_many_arguments)]
    fn write_dir(
        &self,
        tree: &LayerTree,
        node: &super::tree::Node,
        children: &std::collections::BTreeMap<Vec<u8>, NodeId>,
        opaque: bool,
        numbers: &[u32],
        refs: &[u64],
        number: u32,
        parent_number: u32,
    ) -> Result<u64> {
        let err = lib(self.path);
        let dw = self.dir_writer.as_ptr();
        let mut subdirs = 0u32;
        // SAFETY: live directory writer; names are NUL-terminated copies.
        unsafe {
            check(ffi::sqfs_dir_writer_begin(dw, 0), "begin directory").map_err(&err)?;
            for (name, &child) in children {
                let kind = &tree.node(child).kind;
                if matches!(kind, NodeKind::Dir { .. }) {
                    subdirs += 1;
                }
                let cname = CString::new(name.as_slice())
                    .map_err(|_| DriverError::BadLayer("a name contains NUL".into()))?;
                check(
                    ffi::sqfs_dir_writer_add_entry(
                        dw,
                        cname.as_ptr(),
                        numbers[child],
                        refs[child],
                        type_bits(kind) | (tree.node(child).attrs.mode & 0o7777) as u16,
                    ),
                    "add directory entry",
                )
                .map_err(&err)?;
            }
            check(ffi::sqfs_dir_writer_end(dw), "end directory").map_err(&err)?;
        }
        let xattrs = self.xattr_index(&node.attrs.xattrs, opaque)?;
        // SAFETY: live directory writer, right after `end`.
        let inode =
            LibInode(unsafe { ffi::sqfs_dir_writer_create_inode(dw, 0, xattrs, parent_number) });
        if inode.0.is_null() {
            return Err(DriverError::Other(
                "out of memory for a directory inode".into(),
            ));
        }
        // SAFETY: a live directory inode; the variant matches its type.
        unsafe {
            let nlink = 2 + subdirs;
            if (*inode.0).base.inode_type == ffi::INODE_EXT_DIR {
                (*inode.0).data.dir_ext.nlink = nlink;
            } else {
                (*inode.0).data.dir.nlink = nlink;
            }
        }
        self.set_base(inode.0, S_IFMT_DIR, &node.attrs, number)?;
        self.write_inode(inode.0)
    }

    /// The inode of a symlink, device, fifo or whiteout.
    fn special_inode(&self, kind: &NodeKind, links: u32, attrs: &Attrs) -> Result<OwnInode> {
        let xattrs = self.xattr_index(&attrs.xattrs, false)?;
        let ext = xattrs != ffi::NO_XATTRS;
        let payload = match kind {
            NodeKind::Symlink(target) => target.len(),
            _ => 0,
        };
        let inode = OwnInode::new(payload)?;
        let p = inode.0;
        // SAFETY: `p` is a zeroed inode with `payload` bytes after it; we set the
        // union variant that matches the type we give it.
        unsafe {
            match kind {
                NodeKind::Symlink(target) => {
                    let size = u32::try_from(target.len())
                        .map_err(|_| DriverError::BadLayer("symlink target too long".into()))?;
                    // The payload follows the structure inside the same allocation.
                    let payload_ptr = p.cast::<u8>().add(std::mem::size_of::<InodeGeneric>());
                    std::ptr::copy_nonoverlapping(target.as_ptr(), payload_ptr, target.len());
                    (*p).payload_bytes_available = size;
                    (*p).payload_bytes_used = size;
                    if ext {
                        (*p).base.inode_type = ffi::INODE_EXT_SLINK;
                        (*p).data.slink_ext = ffi::InodeSlinkExt {
                            nlink: links,
                            target_size: size,
                            xattr_idx: xattrs,
                        };
                    } else {
                        (*p).base.inode_type = ffi::INODE_SLINK;
                        (*p).data.slink = ffi::InodeSlink {
                            nlink: links,
                            target_size: size,
                        };
                    }
                }
                NodeKind::Device { .. } | NodeKind::Whiteout => {
                    let (block, devno) = match kind {
                        NodeKind::Device {
                            block,
                            major,
                            minor,
                        } => (*block, encode_dev(*major, *minor)),
                        _ => (false, 0),
                    };
                    (*p).base.inode_type = match (block, ext) {
                        (true, false) => ffi::INODE_BDEV,
                        (true, true) => ffi::INODE_EXT_BDEV,
                        (false, false) => ffi::INODE_CDEV,
                        (false, true) => ffi::INODE_EXT_CDEV,
                    };
                    (*p).data.dev_ext = ffi::InodeDevExt {
                        nlink: links,
                        devno,
                        xattr_idx: xattrs,
                    };
                }
                NodeKind::Fifo => {
                    (*p).base.inode_type = if ext {
                        ffi::INODE_EXT_FIFO
                    } else {
                        ffi::INODE_FIFO
                    };
                    (*p).data.ipc_ext = ffi::InodeIpcExt {
                        nlink: links,
                        xattr_idx: xattrs,
                    };
                }
                NodeKind::Dir { .. } | NodeKind::File { .. } => {
                    unreachable!("directories and files have their own inodes")
                }
            }
        }
        Ok(inode)
    }
}

/// The `S_IFMT` bits of a node's type.
fn type_bits(kind: &NodeKind) -> u16 {
    match kind {
        NodeKind::Dir { .. } => S_IFMT_DIR,
        NodeKind::File { .. } => S_IFMT_REG,
        NodeKind::Symlink(_) => S_IFMT_LNK,
        NodeKind::Device { block: true, .. } => S_IFMT_BLK,
        NodeKind::Device { block: false, .. } | NodeKind::Whiteout => S_IFMT_CHR,
        NodeKind::Fifo => S_IFMT_FIFO,
    }
}

/// A device number as squashfs (the kernel's `new_encode_dev`) stores it.
pub(crate) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The live nodes of `tree` in post order (children before their directory,
/// each hard-linked node once, at its first name), with every directory's parent.
fn post_order(tree: &LayerTree) -> (Vec<NodeId>, Vec<Option<NodeId>>) {
    let mut order = Vec::new();
    let mut seen = vec![false; tree.len()];
    let mut parents = vec![None; tree.len()];
    let children_of = |n: NodeId| -> Vec<NodeId> {
        match &tree.node(n).kind {
            NodeKind::Dir { children, .. } => children.values().copied().collect(),
            _ => Vec::new(),
        }
    };
    seen[ROOT] = true;
    let mut stack: Vec<(NodeId, Vec<NodeId>, usize)> = vec![(ROOT, children_of(ROOT), 0)];
    while let Some((node, children, next)) = stack.last_mut() {
        if let Some(&child) = children.get(*next) {
            *next += 1;
            if seen[child] {
                continue;
            }
            seen[child] = true;
            if matches!(tree.node(child).kind, NodeKind::Dir { .. }) {
                parents[child] = Some(*node);
                let grandchildren = children_of(child);
                stack.push((child, grandchildren, 0));
            } else {
                order.push(child);
            }
        } else {
            order.push(*node);
            stack.pop();
        }
    }
    (order, parents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_encode_like_the_kernel() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(7, 0), 0x700);
        // new_decode_dev: major = (dev & 0xfff00) >> 8, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
        let dev = encode_dev(259, 70000);
        assert_eq!((dev & 0xfff00) >> 8, 259);
        assert_eq!((dev & 0xff) | ((dev >> 12) & 0xfff00), 70000);
    }
}
