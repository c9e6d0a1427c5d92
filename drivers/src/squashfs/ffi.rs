//! A minimal binding to libsquashfs (squashfs-tools-ng 1.x), the library the
//! squashfs driver writes its images with and decompresses blocks through.
//!
//! Only what the writer and the block decompressor need is declared. The
//! structures mirror `<sqfs/*.h>` of libsquashfs 1.2 field for field; the unit
//! tests at the bottom check the layouts against the library's own accessors.
//! Why not the `squashfs-ng` crate: see `docs/decisions.md`.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::fmt;
use std::ptr::NonNull;

/// `sqfs_object_t`: the destroy/copy header of every libsquashfs object.
#[repr(C)]
pub struct SqfsObject {
    pub destroy: Option<unsafe extern "C" fn(*mut SqfsObject)>,
    pub copy: Option<unsafe extern "C" fn(*const SqfsObject) -> *mut SqfsObject>,
}

/// `sqfs_file_t`.
#[repr(C)]
pub struct SqfsFile {
    pub base: SqfsObject,
    pub read_at: Option<unsafe extern "C" fn(*mut SqfsFile, u64, *mut c_void, usize) -> c_int>,
    pub write_at: Option<unsafe extern "C" fn(*mut SqfsFile, u64, *const c_void, usize) -> c_int>,
    pub get_size: Option<unsafe extern "C" fn(*const SqfsFile) -> u64>,
    pub truncate: Option<unsafe extern "C" fn(*mut SqfsFile, u64) -> c_int>,
}

/// `sqfs_compressor_t`.
#[repr(C)]
pub struct SqfsCompressor {
    pub base: SqfsObject,
    pub get_configuration:
        Option<unsafe extern "C" fn(*const SqfsCompressor, *mut CompressorConfig)>,
    pub write_options: Option<unsafe extern "C" fn(*mut SqfsCompressor, *mut SqfsFile) -> c_int>,
    pub read_options: Option<unsafe extern "C" fn(*mut SqfsCompressor, *mut SqfsFile) -> c_int>,
    pub do_block:
        Option<unsafe extern "C" fn(*mut SqfsCompressor, *const u8, u32, *mut u8, u32) -> i32>,
}

/// `sqfs_compressor_config_t` (the per-compressor option union kept opaque).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CompressorConfig {
    pub id: u16,
    pub flags: u16,
    pub block_size: u32,
    pub level: u32,
    pub opt: [u64; 2],
}

/// `sqfs_super_t`, the in-memory super block.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SqfsSuper {
    pub magic: u32,
    pub inode_count: u32,
    pub modification_time: u32,
    pub block_size: u32,
    pub fragment_entry_count: u32,
    pub compression_id: u16,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub version_major: u16,
    pub version_minor: u16,
    pub root_inode_ref: u64,
    pub bytes_used: u64,
    pub id_table_start: u64,
    pub xattr_id_table_start: u64,
    pub inode_table_start: u64,
    pub directory_table_start: u64,
    pub fragment_table_start: u64,
    pub export_table_start: u64,
}

/// `sqfs_inode_t`: the header common to every inode.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct InodeBase {
    pub inode_type: u16,
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mod_time: u32,
    pub inode_number: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeDev {
    pub nlink: u32,
    pub devno: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeDevExt {
    pub nlink: u32,
    pub devno: u32,
    pub xattr_idx: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeIpc {
    pub nlink: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeIpcExt {
    pub nlink: u32,
    pub xattr_idx: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeSlink {
    pub nlink: u32,
    pub target_size: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeSlinkExt {
    pub nlink: u32,
    pub target_size: u32,
    pub xattr_idx: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeFile {
    pub blocks_start: u32,
    pub fragment_index: u32,
    pub fragment_offset: u32,
    pub file_size: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeFileExt {
    pub blocks_start: u64,
    pub file_size: u64,
    pub sparse: u64,
    pub nlink: u32,
    pub fragment_idx: u32,
    pub fragment_offset: u32,
    pub xattr_idx: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeDir {
    pub start_block: u32,
    pub nlink: u32,
    pub size: u16,
    pub offset: u16,
    pub parent_inode: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeDirExt {
    pub nlink: u32,
    pub size: u32,
    pub start_block: u32,
    pub parent_inode: u32,
    pub inodex_count: u16,
    pub offset: u16,
    pub xattr_idx: u32,
}

/// The type-specific part of [`InodeGeneric`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union InodeData {
    pub dev: InodeDev,
    pub dev_ext: InodeDevExt,
    pub ipc: InodeIpc,
    pub ipc_ext: InodeIpcExt,
    pub slink: InodeSlink,
    pub slink_ext: InodeSlinkExt,
    pub file: InodeFile,
    pub file_ext: InodeFileExt,
    pub dir: InodeDir,
    pub dir_ext: InodeDirExt,
}

/// `sqfs_inode_generic_t`: an inode followed by a variable payload
/// (block sizes, a symlink target, a directory index).
#[repr(C)]
pub struct InodeGeneric {
    pub base: InodeBase,
    pub payload_bytes_available: u32,
    pub payload_bytes_used: u32,
    pub data: InodeData,
    pub extra: [u32; 0],
}

/// Opaque libsquashfs objects.
#[repr(C)]
pub struct BlockWriter {
    _private: [u8; 0],
}
#[repr(C)]
pub struct BlockProcessor {
    _private: [u8; 0],
}
#[repr(C)]
pub struct FragTable {
    _private: [u8; 0],
}
#[repr(C)]
pub struct IdTable {
    _private: [u8; 0],
}
#[repr(C)]
pub struct XattrWriter {
    _private: [u8; 0],
}
#[repr(C)]
pub struct MetaWriter {
    _private: [u8; 0],
}
#[repr(C)]
pub struct DirWriter {
    _private: [u8; 0],
}

pub const SQFS_FILE_OPEN_OVERWRITE: u32 = 0x02;
pub const SQFS_COMP_FLAG_UNCOMPRESS: u16 = 0x8000;
pub const SQFS_META_WRITER_KEEP_IN_MEMORY: u32 = 0x01;
pub const SQFS_DIR_WRITER_CREATE_EXPORT_TABLE: u32 = 0x01;
pub const SQFS_FLAG_EXPORTABLE: u16 = 0x0080;
pub const SQFS_FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;
pub const SQFS_DEVBLK_SIZE: usize = 4096;
/// Inode types (`SQFS_INODE_TYPE`).
pub const INODE_SLINK: u16 = 3;
pub const INODE_BDEV: u16 = 4;
pub const INODE_CDEV: u16 = 5;
pub const INODE_FIFO: u16 = 6;
pub const INODE_EXT_DIR: u16 = 8;
pub const INODE_EXT_SLINK: u16 = 10;
pub const INODE_EXT_BDEV: u16 = 11;
pub const INODE_EXT_CDEV: u16 = 12;
pub const INODE_EXT_FIFO: u16 = 13;
/// The xattr index of an inode without extended attributes.
pub const NO_XATTRS: u32 = 0xFFFF_FFFF;

#[link(name = "squashfs")]
extern "C" {
    pub fn sqfs_free(ptr: *mut c_void);
    pub fn sqfs_open_file(filename: *const c_char, flags: u32) -> *mut SqfsFile;
    pub fn sqfs_compressor_config_init(
        cfg: *mut CompressorConfig,
        id: c_int,
        block_size: usize,
        flags: u16,
    ) -> c_int;
    pub fn sqfs_compressor_create(
        cfg: *const CompressorConfig,
        out: *mut *mut SqfsCompressor,
    ) -> c_int;
    pub fn sqfs_super_init(
        sup: *mut SqfsSuper,
        block_size: usize,
        mtime: u32,
        compressor: c_int,
    ) -> c_int;
    pub fn sqfs_super_write(sup: *const SqfsSuper, file: *mut SqfsFile) -> c_int;
    pub fn sqfs_block_writer_create(
        file: *mut SqfsFile,
        devblksz: usize,
        flags: u32,
    ) -> *mut BlockWriter;
    pub fn sqfs_frag_table_create(flags: u32) -> *mut FragTable;
    pub fn sqfs_frag_table_write(
        tbl: *mut FragTable,
        file: *mut SqfsFile,
        sup: *mut SqfsSuper,
        cmp: *mut SqfsCompressor,
    ) -> c_int;
    pub fn sqfs_block_processor_create(
        max_block_size: usize,
        cmp: *mut SqfsCompressor,
        num_workers: c_uint,
        max_backlog: usize,
        wr: *mut BlockWriter,
        tbl: *mut FragTable,
    ) -> *mut BlockProcessor;
    pub fn sqfs_block_processor_begin_file(
        proc_: *mut BlockProcessor,
        inode: *mut *mut InodeGeneric,
        user: *mut c_void,
        flags: u32,
    ) -> c_int;
    pub fn sqfs_block_processor_append(
        proc_: *mut BlockProcessor,
        data: *const c_void,
        size: usize,
    ) -> c_int;
    pub fn sqfs_block_processor_end_file(proc_: *mut BlockProcessor) -> c_int;
    pub fn sqfs_block_processor_finish(proc_: *mut BlockProcessor) -> c_int;
    pub fn sqfs_id_table_create(flags: u32) -> *mut IdTable;
    pub fn sqfs_id_table_id_to_index(tbl: *mut IdTable, id: u32, out: *mut u16) -> c_int;
    pub fn sqfs_id_table_write(
        tbl: *mut IdTable,
        file: *mut SqfsFile,
        sup: *mut SqfsSuper,
        cmp: *mut SqfsCompressor,
    ) -> c_int;
    pub fn sqfs_xattr_writer_create(flags: u32) -> *mut XattrWriter;
    pub fn sqfs_xattr_writer_begin(xwr: *mut XattrWriter, flags: u32) -> c_int;
    pub fn sqfs_xattr_writer_add(
        xwr: *mut XattrWriter,
        key: *const c_char,
        value: *const c_void,
        size: usize,
    ) -> c_int;
    pub fn sqfs_xattr_writer_end(xwr: *mut XattrWriter, out: *mut u32) -> c_int;
    pub fn sqfs_xattr_writer_flush(
        xwr: *const XattrWriter,
        file: *mut SqfsFile,
        sup: *mut SqfsSuper,
        cmp: *mut SqfsCompressor,
    ) -> c_int;
    pub fn sqfs_meta_writer_create(
        file: *mut SqfsFile,
        cmp: *mut SqfsCompressor,
        flags: u32,
    ) -> *mut MetaWriter;
    pub fn sqfs_meta_writer_flush(m: *mut MetaWriter) -> c_int;
    pub fn sqfs_meta_writer_get_position(
        m: *const MetaWriter,
        block_start: *mut u64,
        offset: *mut u32,
    );
    pub fn sqfs_meta_write_write_to_file(m: *mut MetaWriter) -> c_int;
    pub fn sqfs_meta_writer_write_inode(iw: *mut MetaWriter, n: *const InodeGeneric) -> c_int;
    pub fn sqfs_dir_writer_create(dm: *mut MetaWriter, flags: u32) -> *mut DirWriter;
    pub fn sqfs_dir_writer_begin(writer: *mut DirWriter, flags: u32) -> c_int;
    pub fn sqfs_dir_writer_add_entry(
        writer: *mut DirWriter,
        name: *const c_char,
        inode_num: u32,
        inode_ref: u64,
        mode: u16,
    ) -> c_int;
    pub fn sqfs_dir_writer_end(writer: *mut DirWriter) -> c_int;
    pub fn sqfs_dir_writer_create_inode(
        writer: *const DirWriter,
        hlinks: usize,
        xattr: u32,
        parent_ino: u32,
    ) -> *mut InodeGeneric;
    pub fn sqfs_dir_writer_write_export_table(
        writer: *mut DirWriter,
        file: *mut SqfsFile,
        cmp: *mut SqfsCompressor,
        root_inode_num: u32,
        root_inode_ref: u64,
        sup: *mut SqfsSuper,
    ) -> c_int;
    pub fn sqfs_inode_set_xattr_index(inode: *mut InodeGeneric, index: u32) -> c_int;
    pub fn sqfs_inode_make_extended(inode: *mut InodeGeneric) -> c_int;
    #[cfg(test)]
    pub fn sqfs_inode_get_file_size(inode: *const InodeGeneric, size: *mut u64) -> c_int;
}

/// An error code returned by libsquashfs (`SQFS_ERROR`), with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqfsError {
    /// The operation that failed.
    pub what: &'static str,
    /// The negative `SQFS_ERROR` value (0 for a `NULL` returned by a constructor).
    pub code: i32,
}

impl fmt::Display for SqfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.code {
            0 => "out of memory or invalid arguments",
            -1 => "out of memory",
            -2 => "I/O error",
            -3 => "compressor error",
            -4 => "internal error",
            -5 => "corrupted data",
            -6 => "unsupported feature",
            -7 => "size overflow",
            -8 => "out of bounds",
            -9 => "bad super block magic",
            -10 => "unsupported version",
            -11 => "invalid block size",
            -12 => "not a directory",
            -13 => "no such entry",
            -14 => "link loop",
            -15 => "not a regular file",
            -16 => "invalid argument",
            -17 => "operations out of sequence",
            _ => "unknown error",
        };
        write!(f, "libsquashfs: {}: {why} ({})", self.what, self.code)
    }
}

impl std::error::Error for SqfsError {}

/// Turns a libsquashfs return code into a result.
pub fn check(code: c_int, what: &'static str) -> Result<c_int, SqfsError> {
    if code < 0 {
        Err(SqfsError { what, code })
    } else {
        Ok(code)
    }
}

/// An owned libsquashfs object, destroyed through its `sqfs_object_t` header.
pub struct Object<T> {
    ptr: NonNull<T>,
}

impl<T> Object<T> {
    /// Takes ownership of what a constructor returned; `NULL` is an error.
    ///
    /// # Safety
    /// `ptr` must be `NULL` or a libsquashfs object (starting with `sqfs_object_t`)
    /// owned by nobody else.
    pub unsafe fn from_raw(ptr: *mut T, what: &'static str) -> Result<Self, SqfsError> {
        NonNull::new(ptr)
            .map(|ptr| Object { ptr })
            .ok_or(SqfsError { what, code: 0 })
    }

    /// The raw pointer, for calls into the library.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Drop for Object<T> {
    fn drop(&mut self) {
        let obj = self.ptr.as_ptr().cast::<SqfsObject>();
        // SAFETY: every libsquashfs object starts with `sqfs_object_t`, and we own it.
        unsafe {
            if let Some(destroy) = (*obj).destroy {
                destroy(obj);
            }
        }
    }
}

/// A compressor configuration for `id` (`SQFS_COMPRESSOR`) and `block_size`.
pub fn compressor_config(
    id: u16,
    block_size: u32,
    flags: u16,
) -> Result<CompressorConfig, SqfsError> {
    let mut cfg = CompressorConfig {
        id: 0,
        flags: 0,
        block_size: 0,
        level: 0,
        opt: [0; 2],
    };
    // SAFETY: `cfg` is a valid, writable configuration structure.
    check(
        unsafe {
            sqfs_compressor_config_init(&mut cfg, c_int::from(id), block_size as usize, flags)
        },
        "compressor configuration",
    )?;
    Ok(cfg)
}

/// Creates a compressor (or, with `SQFS_COMP_FLAG_UNCOMPRESS` in the
/// configuration, a decompressor).
pub fn create_compressor(cfg: &CompressorConfig) -> Result<Object<SqfsCompressor>, SqfsError> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `cfg` is initialised; `out` receives a new object on success.
    check(
        unsafe { sqfs_compressor_create(cfg, &mut out) },
        "create compressor",
    )?;
    // SAFETY: the library just created this object for us.
    unsafe { Object::from_raw(out, "create compressor") }
}

/// A block decompressor for one compressor id. Not shareable between threads
/// (libsquashfs decompressors keep stream state); the reader pools them.
pub struct Decompressor {
    cmp: Object<SqfsCompressor>,
}

// SAFETY: the decompressor is used by one thread at a time (`&mut self`); libsquashfs
// objects have no thread affinity.
unsafe impl Send for Decompressor {}

impl Decompressor {
    /// A decompressor for compressor `id` (as stored in the super block).
    pub fn new(id: u16, block_size: u32) -> Result<Self, SqfsError> {
        let cfg = compressor_config(id, block_size, SQFS_COMP_FLAG_UNCOMPRESS)?;
        Ok(Decompressor {
            cmp: create_compressor(&cfg)?,
        })
    }

    /// Decompresses `input` into `out`; returns the decompressed length.
    pub fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<usize, SqfsError> {
        let cmp = self.cmp.as_ptr();
        let in_len = u32::try_from(input.len()).map_err(|_| SqfsError {
            what: "decompress",
            code: -7,
        })?;
        let out_len = u32::try_from(out.len()).map_err(|_| SqfsError {
            what: "decompress",
            code: -7,
        })?;
        // SAFETY: `cmp` is a live compressor; the buffers are valid for the given lengths.
        let n = unsafe {
            let do_block = (*cmp).do_block.ok_or(SqfsError {
                what: "decompress",
                code: -4,
            })?;
            do_block(cmp, input.as_ptr(), in_len, out.as_mut_ptr(), out_len)
        };
        if n <= 0 {
            return Err(SqfsError {
                what: "decompress",
                code: if n == 0 { -3 } else { n },
            });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_headers() {
        assert_eq!(std::mem::size_of::<SqfsSuper>(), 96);
        assert_eq!(std::mem::size_of::<CompressorConfig>(), 32);
        assert_eq!(std::mem::size_of::<InodeBase>(), 16);
        assert_eq!(std::mem::size_of::<InodeData>(), 40);
        assert_eq!(std::mem::size_of::<InodeGeneric>(), 64);
        assert_eq!(std::mem::offset_of!(InodeGeneric, data), 24);
    }

    #[test]
    fn super_block_init_fills_the_fields_we_read() {
        let mut sup = SqfsSuper::default();
        // SAFETY: `sup` is a valid super block structure.
        check(
            unsafe { sqfs_super_init(&mut sup, 131072, 1234, 6) },
            "super init",
        )
        .unwrap();
        assert_eq!(sup.magic, 0x7371_7368);
        assert_eq!(sup.block_size, 131072);
        assert_eq!(sup.block_log, 17);
        assert_eq!(sup.compression_id, 6);
        assert_eq!(sup.modification_time, 1234);
        assert_eq!((sup.version_major, sup.version_minor), (4, 0));
    }

    #[test]
    fn compressor_config_layout() {
        let cfg = compressor_config(6, 65536, 0).unwrap();
        assert_eq!(cfg.id, 6);
        assert_eq!(cfg.block_size, 65536);
        assert_eq!(cfg.level, 15, "libsquashfs' default zstd level");
    }

    #[test]
    fn file_inodes_of_the_block_processor_match_our_layout() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let path =
            std::ffi::CString::new(dir.path().join("t.sqfs").as_os_str().as_bytes()).unwrap();
        // SAFETY: every object is created and used as libsquashfs documents;
        // the processor is dropped before what it references.
        unsafe {
            let file = Object::from_raw(
                sqfs_open_file(path.as_ptr(), SQFS_FILE_OPEN_OVERWRITE),
                "open",
            )
            .unwrap();
            let cmp = create_compressor(&compressor_config(6, 4096, 0).unwrap()).unwrap();
            let frag = Object::from_raw(sqfs_frag_table_create(0), "fragments").unwrap();
            let writer =
                Object::from_raw(sqfs_block_writer_create(file.as_ptr(), 4096, 0), "writer")
                    .unwrap();
            let processor = Object::from_raw(
                sqfs_block_processor_create(
                    4096,
                    cmp.as_ptr(),
                    1,
                    4,
                    writer.as_ptr(),
                    frag.as_ptr(),
                ),
                "processor",
            )
            .unwrap();
            let mut inode: Box<*mut InodeGeneric> = Box::new(std::ptr::null_mut());
            let p = processor.as_ptr();
            check(
                sqfs_block_processor_begin_file(p, &mut *inode, std::ptr::null_mut(), 0),
                "begin",
            )
            .unwrap();
            let data = vec![7u8; 10_000];
            check(
                sqfs_block_processor_append(p, data.as_ptr().cast(), data.len()),
                "append",
            )
            .unwrap();
            check(sqfs_block_processor_end_file(p), "end").unwrap();
            check(sqfs_block_processor_finish(p), "finish").unwrap();
            drop(processor);
            let mut size = 0u64;
            check(sqfs_inode_get_file_size(*inode, &mut size), "size").unwrap();
            assert_eq!(size, 10_000);
            assert_eq!((**inode).base.inode_type, 2, "a basic file inode");
            assert_eq!((**inode).data.file.file_size, 10_000);
            assert_eq!(
                (**inode).payload_bytes_used,
                8,
                "two full blocks, the tail in a fragment"
            );
            check(sqfs_inode_make_extended(*inode), "extend").unwrap();
            assert_eq!((**inode).data.file_ext.file_size, 10_000);
            assert_eq!((**inode).data.file_ext.nlink, 1);
            sqfs_free((*inode).cast());
        }
    }

    #[test]
    fn round_trip_through_a_compressor() {
        let cfg = compressor_config(6, 131072, 0).unwrap();
        let cmp = create_compressor(&cfg).unwrap();
        let input = b"squashfs ".repeat(1000);
        let mut packed = vec![0u8; input.len()];
        // SAFETY: live compressor, valid buffers.
        let n = unsafe {
            ((*cmp.as_ptr()).do_block.unwrap())(
                cmp.as_ptr(),
                input.as_ptr(),
                input.len() as u32,
                packed.as_mut_ptr(),
                packed.len() as u32,
            )
        };
        assert!(n > 0 && (n as usize) < input.len());
        let mut d = Decompressor::new(6, 131072).unwrap();
        let mut out = vec![0u8; 131072];
        let m = d.decompress(&packed[..n as usize], &mut out).unwrap();
        assert_eq!(&out[..m], &input[..]);
        assert!(d.decompress(b"garbage", &mut out).is_err());
    }
}
