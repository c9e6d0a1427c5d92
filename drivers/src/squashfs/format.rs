//! The squashfs 4.0 on-disk format, as far as the in-process reader needs it:
//! the super block, inodes, directory listings and xattr key/value records.
//!
//! Every parser works on bytes it was handed and checks every length and
//! offset: a corrupt image yields [`Corrupt`], never a panic or an unbounded
//! allocation.

/// Bytes of the super block at the start of an image.
pub const SUPER_BLOCK_SIZE: usize = 96;
/// Uncompressed size of a metadata block.
pub const METADATA_SIZE: usize = 8192;
/// `hsqs`, little endian.
pub const MAGIC: u32 = 0x7371_7368;
/// Marks "no fragment" in a file inode and "no xattrs" in an extended inode.
pub const NONE_U32: u32 = 0xFFFF_FFFF;
/// Marks an absent optional table in the super block.
pub const NO_TABLE: u64 = u64::MAX;
/// In a data block or fragment size: the block is stored uncompressed.
pub const BLOCK_UNCOMPRESSED: u32 = 1 << 24;
/// In a metadata block header: the block is stored uncompressed.
pub const META_UNCOMPRESSED: u16 = 1 << 15;
/// Longest symlink target the reader accepts.
pub const MAX_SYMLINK: usize = 65_536;
/// Longest xattr value the reader accepts (Linux' `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 65_536;

/// Why an image cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);

/// A [`Corrupt`] error with `msg`.
pub fn corrupt(msg: impl Into<String>) -> Corrupt {
    Corrupt(msg.into())
}

/// The super block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperBlock {
    /// Inodes in the image.
    pub inode_count: u32,
    /// Data block size.
    pub block_size: u32,
    /// Entries of the fragment table.
    pub fragment_count: u32,
    /// Compressor id.
    pub compression: u16,
    /// Flags (`SQFS_FLAG_*`).
    pub flags: u16,
    /// Entries of the id table.
    pub id_count: u16,
    /// Reference of the root directory's inode.
    pub root_inode: u64,
    /// Bytes of the image that are used (the rest is padding).
    pub bytes_used: u64,
    /// Position of the id table's block list.
    pub id_table: u64,
    /// Position of the xattr id table header, or [`NO_TABLE`].
    pub xattr_table: u64,
    /// Position of the inode table.
    pub inode_table: u64,
    /// Position of the directory table.
    pub directory_table: u64,
    /// Position of the fragment table's block list, or [`NO_TABLE`].
    pub fragment_table: u64,
}

impl SuperBlock {
    /// Parses and checks a super block; `file_len` is the image file's length.
    pub fn parse(b: &[u8; SUPER_BLOCK_SIZE], file_len: u64) -> Result<SuperBlock, Corrupt> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(0) != MAGIC {
            return Err(corrupt("not a squashfs image (bad magic)"));
        }
        let (major, minor) = (u16_at(28), u16_at(30));
        if (major, minor) != (4, 0) {
            return Err(corrupt(format!(
                "unsupported squashfs version {major}.{minor}"
            )));
        }
        let sb = SuperBlock {
            inode_count: u32_at(4),
            block_size: u32_at(12),
            fragment_count: u32_at(16),
            compression: u16_at(20),
            flags: u16_at(24),
            id_count: u16_at(26),
            root_inode: u64_at(32),
            bytes_used: u64_at(40),
            id_table: u64_at(48),
            xattr_table: u64_at(56),
            inode_table: u64_at(64),
            directory_table: u64_at(72),
            fragment_table: u64_at(80),
        };
        let block_log = u16_at(22);
        if !sb.block_size.is_power_of_two()
            || !(4096..=1 << 20).contains(&sb.block_size)
            || u32::from(block_log) != sb.block_size.trailing_zeros()
        {
            return Err(corrupt(format!("invalid block size {}", sb.block_size)));
        }
        if sb.bytes_used > file_len {
            return Err(corrupt(format!(
                "the image is truncated: {file_len} bytes of {}",
                sb.bytes_used
            )));
        }
        let within = |pos: u64| pos >= SUPER_BLOCK_SIZE as u64 && pos < sb.bytes_used;
        if !within(sb.inode_table)
            || !within(sb.directory_table)
            || sb.inode_table >= sb.directory_table
            || !within(sb.id_table)
        {
            return Err(corrupt("table positions lie outside the image"));
        }
        for optional in [sb.xattr_table, sb.fragment_table] {
            if optional != NO_TABLE && !within(optional) {
                return Err(corrupt("table positions lie outside the image"));
            }
        }
        if sb.id_count == 0 || sb.inode_count == 0 {
            return Err(corrupt("the image has no ids or no inodes"));
        }
        Ok(sb)
    }
}

/// A reference into a metadata table: the block's offset from the table start
/// and the offset inside the uncompressed block.
pub fn split_ref(reference: u64) -> (u64, usize) {
    (reference >> 16, (reference & 0xffff) as usize)
}

/// A source of little-endian fields (a metadata stream or a byte slice).
pub trait Fields {
    /// Fills `buf` completely.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), super::reader::ImageError>;

    /// A `u16`.
    fn u16(&mut self) -> Result<u16, super::reader::ImageError> {
        let mut b = [0u8; 2];
        self.read_exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// A `u32`.
    fn u32(&mut self) -> Result<u32, super::reader::ImageError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A `u64`.
    fn u64(&mut self) -> Result<u64, super::reader::ImageError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// `n` bytes (the caller bounds `n`).
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, super::reader::ImageError> {
        let mut v = vec![0u8; n];
        self.read_exact(&mut v)?;
        Ok(v)
    }
}

/// The type of an inode, as directory entries and inodes record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicType {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink.
    Symlink,
    /// A block device.
    BlockDev,
    /// A character device.
    CharDev,
    /// A fifo.
    Fifo,
    /// A socket.
    Socket,
}

impl BasicType {
    /// The type of inode type `t` (basic 1–7 or extended 8–14).
    pub fn from_inode_type(t: u16) -> Option<BasicType> {
        Some(match t {
            1 | 8 => BasicType::Dir,
            2 | 9 => BasicType::File,
            3 | 10 => BasicType::Symlink,
            4 | 11 => BasicType::BlockDev,
            5 | 12 => BasicType::CharDev,
            6 | 13 => BasicType::Fifo,
            7 | 14 => BasicType::Socket,
            _ => return None,
        })
    }
}

/// What an inode describes, with its type-specific data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeData {
    /// A directory and where its listing is.
    Dir {
        /// Offset of the listing's first block from the directory table.
        start_block: u32,
        /// Offset inside that block.
        offset: u16,
        /// Listing size plus 3 (as squashfs records it).
        size: u32,
    },
    /// A regular file.
    File {
        /// Position of the first data block.
        blocks_start: u64,
        /// File size.
        size: u64,
        /// Fragment index of the tail, or [`NONE_U32`].
        fragment: u32,
        /// Offset of the tail in its fragment block.
        fragment_offset: u32,
        /// Stored size of each full (or last, without a fragment) block.
        block_sizes: Vec<u32>,
        /// Position of each of those blocks in the image.
        block_positions: Vec<u64>,
    },
    /// A symlink.
    Symlink(Vec<u8>),
    /// A block or character device (`block`) with its encoded device number.
    Device {
        /// Block device.
        block: bool,
        /// The number as squashfs stores it.
        devno: u32,
    },
    /// A fifo.
    Fifo,
    /// A socket.
    Socket,
}

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Permission bits.
    pub mode: u32,
    /// Index into the id table of the owner.
    pub uid_idx: u16,
    /// Index into the id table of the group.
    pub gid_idx: u16,
    /// Modification time.
    pub mtime: u32,
    /// Inode number.
    pub number: u32,
    /// Link count.
    pub nlink: u32,
    /// Xattr index, or [`NONE_U32`].
    pub xattr: u32,
    /// Type-specific data.
    pub data: InodeData,
}

impl Inode {
    /// Reads an inode from `f`, which is positioned at its start.
    pub fn parse(f: &mut impl Fields, block_size: u32) -> Result<Inode, super::reader::ImageError> {
        let inode_type = f.u16()?;
        let mode = u32::from(f.u16()?);
        let uid_idx = f.u16()?;
        let gid_idx = f.u16()?;
        let mtime = f.u32()?;
        let number = f.u32()?;
        let mut xattr = NONE_U32;
        let mut nlink = 1;
        let data = match inode_type {
            1 => {
                let start_block = f.u32()?;
                nlink = f.u32()?;
                let size = u32::from(f.u16()?);
                let offset = f.u16()?;
                let _parent = f.u32()?;
                InodeData::Dir {
                    start_block,
                    offset,
                    size,
                }
            }
            8 => {
                nlink = f.u32()?;
                let size = f.u32()?;
                let start_block = f.u32()?;
                let _parent = f.u32()?;
                let _index_count = f.u16()?;
                let offset = f.u16()?;
                xattr = f.u32()?;
                InodeData::Dir {
                    start_block,
                    offset,
                    size,
                }
            }
            2 | 9 => {
                let (blocks_start, size, fragment, fragment_offset) = if inode_type == 2 {
                    let start = u64::from(f.u32()?);
                    let fragment = f.u32()?;
                    let offset = f.u32()?;
                    let size = u64::from(f.u32()?);
                    (start, size, fragment, offset)
                } else {
                    let start = f.u64()?;
                    let size = f.u64()?;
                    let _sparse = f.u64()?;
                    nlink = f.u32()?;
                    let fragment = f.u32()?;
                    let offset = f.u32()?;
                    xattr = f.u32()?;
                    (start, size, fragment, offset)
                };
                let bs = u64::from(block_size);
                let count = if fragment == NONE_U32 {
                    size.div_ceil(bs)
                } else {
                    size / bs
                };
                // The list is read entry by entry: its length is bounded by the
                // metadata actually present, whatever the size field claims.
                let mut block_sizes = Vec::new();
                let mut block_positions = Vec::new();
                let mut at = blocks_start;
                for _ in 0..count {
                    let s = f.u32()?;
                    if s & !(BLOCK_UNCOMPRESSED | 0x00FF_FFFF) != 0 || s & 0x00FF_FFFF > block_size
                    {
                        return Err(corrupt(format!("invalid data block size {s:#x}")).into());
                    }
                    block_sizes.push(s);
                    block_positions.push(at);
                    at = at.checked_add(u64::from(s & 0x00FF_FFFF)).ok_or_else(|| {
                        corrupt("data blocks run past the end of the address space")
                    })?;
                }
                InodeData::File {
                    blocks_start,
                    size,
                    fragment,
                    fragment_offset,
                    block_sizes,
                    block_positions,
                }
            }
            3 | 10 => {
                nlink = f.u32()?;
                let len = f.u32()? as usize;
                if len == 0 || len > MAX_SYMLINK {
                    return Err(corrupt(format!("invalid symlink target length {len}")).into());
                }
                let target = f.bytes(len)?;
                if inode_type == 10 {
                    xattr = f.u32()?;
                }
                InodeData::Symlink(target)
            }
            4 | 5 | 11 | 12 => {
                nlink = f.u32()?;
                let devno = f.u32()?;
                if inode_type >= 11 {
                    xattr = f.u32()?;
                }
                InodeData::Device {
                    block: inode_type == 4 || inode_type == 11,
                    devno,
                }
            }
            6 | 7 | 13 | 14 => {
                nlink = f.u32()?;
                if inode_type >= 13 {
                    xattr = f.u32()?;
                }
                if inode_type == 6 || inode_type == 13 {
                    InodeData::Fifo
                } else {
                    InodeData::Socket
                }
            }
            other => return Err(corrupt(format!("unknown inode type {other}")).into()),
        };
        Ok(Inode {
            mode: mode & 0o7777,
            uid_idx,
            gid_idx,
            mtime,
            number,
            nlink,
            xattr,
            data,
        })
    }

    /// The basic type of this inode.
    pub fn basic_type(&self) -> BasicType {
        match &self.data {
            InodeData::Dir { .. } => BasicType::Dir,
            InodeData::File { .. } => BasicType::File,
            InodeData::Symlink(_) => BasicType::Symlink,
            InodeData::Device { block: true, .. } => BasicType::BlockDev,
            InodeData::Device { block: false, .. } => BasicType::CharDev,
            InodeData::Fifo => BasicType::Fifo,
            InodeData::Socket => BasicType::Socket,
        }
    }
}

/// Major and minor of a device number as squashfs stores it (`new_decode_dev`).
pub fn decode_dev(devno: u32) -> (u32, u32) {
    (
        (devno & 0xfff00) >> 8,
        (devno & 0xff) | ((devno >> 12) & 0xfff00),
    )
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirEntry {
    /// The name.
    pub name: Vec<u8>,
    /// Reference of the entry's inode.
    pub inode_ref: u64,
    /// The entry's inode number.
    pub number: u32,
    /// The entry's type.
    pub kind: BasicType,
}

/// Reads a directory listing of `size` bytes (the inode's size field, i.e.
/// listing plus 3) from `f`, positioned at its start.
pub fn parse_listing(
    f: &mut impl Fields,
    size: u32,
) -> Result<Vec<RawDirEntry>, super::reader::ImageError> {
    let mut remaining =
        size.checked_sub(3)
            .ok_or_else(|| corrupt(format!("invalid directory size {size}")))? as usize;
    let mut entries = Vec::new();
    let take = |remaining: &mut usize, n: usize| -> Result<(), Corrupt> {
        *remaining = remaining
            .checked_sub(n)
            .ok_or_else(|| corrupt("a directory listing overruns its size"))?;
        Ok(())
    };
    while remaining > 0 {
        take(&mut remaining, 12)?;
        let count = f.u32()? as usize + 1;
        let start = u64::from(f.u32()?);
        let base = f.u32()?;
        if count > 256 {
            return Err(corrupt(format!("a directory header announces {count} entries")).into());
        }
        for _ in 0..count {
            take(&mut remaining, 8)?;
            let offset = f.u16()?;
            let delta = f.u16()? as i16;
            let kind = f.u16()?;
            let name_len = usize::from(f.u16()?) + 1;
            take(&mut remaining, name_len)?;
            let name = f.bytes(name_len)?;
            if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
                return Err(corrupt(format!(
                    "invalid name {:?} in a directory",
                    String::from_utf8_lossy(&name)
                ))
                .into());
            }
            let kind = BasicType::from_inode_type(kind)
                .filter(|_| kind <= 7)
                .ok_or_else(|| corrupt(format!("invalid directory entry type {kind}")))?;
            if usize::from(offset) >= METADATA_SIZE {
                return Err(corrupt("a directory entry points outside its inode block").into());
            }
            let number = base.wrapping_add_signed(i32::from(delta));
            entries.push(RawDirEntry {
                name,
                inode_ref: (start << 16) | u64::from(offset),
                number,
                kind,
            });
        }
    }
    Ok(entries)
}

/// The prefix of an xattr key type (`0` user, `1` trusted, `2` security).
pub fn xattr_prefix(key_type: u16) -> Option<&'static [u8]> {
    match key_type & 0xff {
        0 => Some(b"user."),
        1 => Some(b"trusted."),
        2 => Some(b"security."),
        _ => None,
    }
}

/// A byte slice as a [`Fields`] source.
#[cfg(test)]
pub struct SliceFields<'a> {
    bytes: &'a [u8],
}

#[cfg(test)]
impl<'a> SliceFields<'a> {
    /// Fields of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        SliceFields { bytes }
    }
}

#[cfg(test)]
impl Fields for SliceFields<'_> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), super::reader::ImageError> {
        if buf.len() > self.bytes.len() {
            return Err(corrupt("a record ends past its data").into());
        }
        let (head, tail) = self.bytes.split_at(buf.len());
        buf.copy_from_slice(head);
        self.bytes = tail;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_block_checks() {
        let mut b = [0u8; SUPER_BLOCK_SIZE];
        assert!(SuperBlock::parse(&b, 4096).is_err());
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&3u32.to_le_bytes());
        b[12..16].copy_from_slice(&131072u32.to_le_bytes());
        b[22..24].copy_from_slice(&17u16.to_le_bytes());
        b[26..28].copy_from_slice(&1u16.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b[40..48].copy_from_slice(&1000u64.to_le_bytes());
        b[48..56].copy_from_slice(&900u64.to_le_bytes());
        b[56..64].copy_from_slice(&NO_TABLE.to_le_bytes());
        b[64..72].copy_from_slice(&100u64.to_le_bytes());
        b[72..80].copy_from_slice(&200u64.to_le_bytes());
        b[80..88].copy_from_slice(&NO_TABLE.to_le_bytes());
        let sb = SuperBlock::parse(&b, 4096).unwrap();
        assert_eq!(sb.block_size, 131072);
        let err = SuperBlock::parse(&b, 999).unwrap_err();
        assert!(err.0.contains("truncated"), "{err}");
        b[22] = 16;
        assert!(SuperBlock::parse(&b, 4096).is_err());
    }

    #[test]
    fn listings_parse_and_reject_overruns() {
        let mut l = Vec::new();
        l.extend_from_slice(&1u32.to_le_bytes()); // two entries
        l.extend_from_slice(&0u32.to_le_bytes());
        l.extend_from_slice(&10u32.to_le_bytes());
        for (name, delta) in [(&b"a"[..], 0i16), (&b"bc"[..], -1)] {
            l.extend_from_slice(&32u16.to_le_bytes());
            l.extend_from_slice(&delta.to_le_bytes());
            l.extend_from_slice(&2u16.to_le_bytes());
            l.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
            l.extend_from_slice(name);
        }
        let size = l.len() as u32 + 3;
        let entries = parse_listing(&mut SliceFields::new(&l), size).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, b"bc");
        assert_eq!(entries[1].number, 9);
        assert_eq!(entries[0].inode_ref, 32);
        assert!(parse_listing(&mut SliceFields::new(&l), size - 1).is_err());
        assert!(parse_listing(&mut SliceFields::new(&l[..10]), size).is_err());
        assert!(parse_listing(&mut SliceFields::new(&l), 2).is_err());
    }

    #[test]
    fn device_numbers_decode() {
        assert_eq!(decode_dev(0x103), (1, 3));
        assert_eq!(
            decode_dev(super::super::writer::encode_dev(259, 70000)),
            (259, 70000)
        );
    }
}
