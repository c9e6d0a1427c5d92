//! A streaming reader of layer tars.
//!
//! Reads ustar, PAX (`x` records: `path`, `linkpath`, `size`, `uid`, `gid`,
//! `mtime` with nanoseconds, `SCHILY.xattr.*`, GNU sparse 0.0/0.1/1.0) and GNU
//! (`L`/`K` long names, old-style `S` sparse files, base-256 numbers) archives
//! entry by entry, never holding more than one entry's metadata in memory.
//!
//! PAX records are parsed by their length prefix, so binary xattr values
//! (a `security.capability` blob may contain a newline byte) are read intact.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;

use tracing::debug;

/// Size of a tar block.
const BLOCK: usize = 512;
/// Largest PAX extended header or GNU long name accepted (protects memory).
const MAX_META: u64 = 16 << 20;
/// Largest number of sparse segments accepted for one file.
const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// Why a tar could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The archive ends in the middle of a header or an entry's data.
    #[error("truncated tar: {0}")]
    Truncated(String),
    /// A header or an extension record is malformed.
    #[error("corrupt tar: {0}")]
    Corrupt(String),
    /// Reading the underlying stream failed.
    #[error("reading the tar stream: {0}")]
    Io(#[from] io::Error),
}

/// The type of a tar entry (after extension headers are folded in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    /// A regular file (`0`, NUL, `7`, or a GNU sparse `S` entry).
    Regular,
    /// A hard link to an earlier entry (`1`).
    Hardlink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A directory (`5`, GNU `D`, or a pre-POSIX regular entry whose name ends in `/`).
    Directory,
    /// A named pipe (`6`).
    Fifo,
    /// Any other type flag.
    Other(u8),
}

/// One entry's header with its PAX and GNU extensions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The path as stored (not normalised).
    pub path: Vec<u8>,
    /// Link target of hard and symbolic links.
    pub link: Vec<u8>,
    /// The entry type.
    pub kind: TarKind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds (from a PAX `mtime` record).
    pub mtime_nsec: u32,
    /// Logical file size (the real size of a sparse file).
    pub size: u64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes from `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// For sparse files, the `(offset, length)` data segments, in order; the
    /// entry's stored data is their concatenation and everything else is a hole.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// PAX records collected for the next entry.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(OsString, Vec<u8>)>,
    sparse_major: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_realsize: Option<u64>,
    sparse_map: Vec<u64>,
}

/// Reads a tar stream entry by entry.
pub struct TarReader<R: Read> {
    inner: R,
    /// Bytes of the current entry's stored data not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    /// Bytes consumed so far (for messages).
    offset: u64,
    finished: bool,
}

fn corrupt(msg: impl Into<String>) -> TarError {
    TarError::Corrupt(msg.into())
}

/// Parses a numeric header field: octal (space/NUL terminated) or GNU base-256.
fn parse_number(field: &[u8], what: &str) -> Result<u64, TarError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(corrupt(format!("negative {what}")));
            }
            let mut value: u64 = u64::from(first & 0x7f);
            for &b in &field[1..] {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or_else(|| corrupt(format!("{what} overflows")))?;
            }
            return Ok(value);
        }
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).map_err(|_| corrupt(format!("invalid {what}")))?;
    u64::from_str_radix(s, 8).map_err(|_| corrupt(format!("invalid {what} {s:?}")))
}

fn parse_decimal(value: &[u8], what: &str) -> Result<u64, TarError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            corrupt(format!(
                "invalid PAX {what} {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Parses a PAX time (`seconds[.fraction]`, possibly negative) into seconds and nanoseconds.
pub fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nsec: u32 = 0;
    for digit in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nsec = nsec * 10 + u32::from(digit - b'0');
    }
    match (neg, nsec) {
        (false, _) => Some((secs, nsec)),
        (true, 0) => Some((-secs, 0)),
        (true, n) => Some((-secs - 1, 1_000_000_000 - n)),
    }
}

/// A NUL-terminated string field.
fn c_field(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses PAX records (`"<len> <key>=<value>\n"`, `len` counting the whole record).
fn parse_pax_records(
    data: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), TarError>,
) -> Result<(), TarError> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| corrupt("PAX record without length"))?;
        let len = parse_decimal(&rest[..space], "record length")? as usize;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(corrupt("malformed PAX record"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| corrupt("PAX record without '='"))?;
        each(&record[..eq], &record[eq + 1..])?;
        rest = &rest[len..];
    }
    Ok(())
}

impl Pax {
    fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), TarError> {
        match key {
            b"path" => self.path = Some(value.to_vec()),
            b"linkpath" => self.link = Some(value.to_vec()),
            b"size" => self.size = Some(parse_decimal(value, "size")?),
            b"uid" => self.uid = Some(parse_decimal(value, "uid")?),
            b"gid" => self.gid = Some(parse_decimal(value, "gid")?),
            b"mtime" => {
                self.mtime =
                    Some(parse_pax_time(value).ok_or_else(|| corrupt("invalid PAX mtime"))?)
            }
            b"GNU.sparse.major" => {
                self.sparse_major = Some(parse_decimal(value, "GNU.sparse.major")?)
            }
            b"GNU.sparse.name" => self.sparse_name = Some(value.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.sparse_realsize = Some(parse_decimal(value, "GNU.sparse.realsize")?)
            }
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                self.sparse_map
                    .push(parse_decimal(value, "GNU.sparse map")?);
                self.sparse_major.get_or_insert(0);
            }
            b"GNU.sparse.map" => {
                for part in value.split(|b| *b == b',').filter(|p| !p.is_empty()) {
                    self.sparse_map.push(parse_decimal(part, "GNU.sparse.map")?);
                }
                self.sparse_major.get_or_insert(0);
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattrs
                        .push((OsString::from_vec(name.to_vec()), value.to_vec()));
                } else {
                    debug!(key = %String::from_utf8_lossy(key), "ignoring PAX record");
                }
            }
        }
        Ok(())
    }
}

/// Turns a flat `offset, length, offset, length, ...` list into checked segments.
fn segments_from_pairs(pairs: &[u64], real_size: u64) -> Result<Vec<(u64, u64)>, TarError> {
    if !pairs.len().is_multiple_of(2) {
        return Err(corrupt("odd number of values in a sparse map"));
    }
    let segments: Vec<(u64, u64)> = pairs.chunks(2).map(|c| (c[0], c[1])).collect();
    check_segments(&segments, real_size)?;
    Ok(segments)
}

fn check_segments(segments: &[(u64, u64)], real_size: u64) -> Result<(), TarError> {
    if segments.len() > MAX_SPARSE_SEGMENTS {
        return Err(corrupt("too many sparse segments"));
    }
    let mut end = 0u64;
    for &(offset, len) in segments {
        let seg_end = offset
            .checked_add(len)
            .ok_or_else(|| corrupt("sparse segment overflows"))?;
        if offset < end || seg_end > real_size {
            return Err(corrupt("sparse segments overlap or exceed the file size"));
        }
        end = seg_end;
    }
    Ok(())
}

impl<R: Read> TarReader<R> {
    /// A reader of the tar stream `inner`.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            offset: 0,
            finished: false,
        }
    }

    /// Fills `buf` completely; `Ok(false)` on a clean end of stream before any byte.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(TarError::Truncated(format!(
                        "stream ends inside a header at byte {}",
                        self.offset + filled as u64
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TarError::Io(e)),
            }
        }
        self.offset += buf.len() as u64;
        Ok(true)
    }

    /// Discards `n` bytes of the stream.
    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(TarError::Truncated(format!(
                        "stream ends inside entry data at byte {}",
                        self.offset
                    )))
                }
                Ok(k) => {
                    n -= k as u64;
                    self.offset += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TarError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads the whole data of an extension entry of `size` bytes.
    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_META {
            return Err(corrupt(format!("{what} of {size} bytes is too large")));
        }
        let mut data = vec![0u8; size as usize];
        if size > 0 && !self.read_block(&mut data)? {
            return Err(TarError::Truncated(format!("stream ends inside a {what}")));
        }
        self.skip(padding_of(size))?;
        Ok(data)
    }

    /// The next entry, after skipping whatever is left of the current one.
    /// `Ok(None)` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pending_meta = false;
        loop {
            let mut header = [0u8; BLOCK];
            let header_at = self.offset;
            if !self.read_block(&mut header)? {
                if pending_meta {
                    return Err(TarError::Truncated(
                        "extension header without an entry".into(),
                    ));
                }
                self.finished = true;
                return Ok(None);
            }
            if header.iter().all(|b| *b == 0) {
                if pending_meta {
                    return Err(corrupt("extension header without an entry"));
                }
                self.finished = true;
                return Ok(None);
            }
            verify_checksum(&header, header_at)?;
            let typeflag = header[156];
            let stored = parse_number(&header[124..136], "size")?;
            match typeflag {
                b'x' => {
                    let data = self.read_meta(stored, "PAX header")?;
                    parse_pax_records(&data, |k, v| pax.record(k, v))?;
                    pending_meta = true;
                    continue;
                }
                b'g' => {
                    self.read_meta(stored, "PAX global header")?;
                    debug!("ignoring PAX global header");
                    continue;
                }
                b'L' => {
                    long_name = Some(c_field(&self.read_meta(stored, "GNU long name")?).to_vec());
                    pending_meta = true;
                    continue;
                }
                b'K' => {
                    long_link =
                        Some(c_field(&self.read_meta(stored, "GNU long link name")?).to_vec());
                    pending_meta = true;
                    continue;
                }
                b'V' => {
                    self.skip(stored + padding_of(stored))?;
                    continue;
                }
                _ => {}
            }
            return self
                .build_entry(&header, typeflag, stored, pax, long_name, long_link)
                .map(Some);
        }
    }

    fn build_entry(
        &mut self,
        header: &[u8; BLOCK],
        typeflag: u8,
        header_size: u64,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<TarEntry, TarError> {
        let magic = &header[257..265];
        let posix = &magic[..6] == b"ustar\0";
        let gnu = magic == b"ustar  \0";
        let mut path = c_field(&header[0..100]).to_vec();
        if posix {
            let prefix = c_field(&header[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&path);
                path = full;
            }
        }
        if let Some(name) = long_name {
            path = name;
        }
        if let Some(p) = pax.path {
            path = p;
        }
        let mut link = c_field(&header[157..257]).to_vec();
        if let Some(l) = long_link {
            link = l;
        }
        if let Some(l) = pax.link {
            link = l;
        }
        let mut kind = match typeflag {
            b'0' | 0 | b'7' | b'S' => TarKind::Regular,
            b'1' => TarKind::Hardlink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::CharDevice,
            b'4' => TarKind::BlockDevice,
            b'5' | b'D' => TarKind::Directory,
            b'6' => TarKind::Fifo,
            other => TarKind::Other(other),
        };
        if typeflag == 0 && !posix && !gnu && path.ends_with(b"/") {
            kind = TarKind::Directory;
        }
        let mode = (parse_number(&header[100..108], "mode")? & 0o7777) as u32;
        let uid = pax
            .uid
            .map_or_else(|| parse_number(&header[108..116], "uid"), Ok)?;
        let gid = pax
            .gid
            .map_or_else(|| parse_number(&header[116..124], "gid"), Ok)?;
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => {
                let secs = parse_number(&header[136..148], "mtime")?;
                (i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        let (dev_major, dev_minor) = if posix || gnu {
            (
                parse_number(&header[329..337], "device major")? as u32,
                parse_number(&header[337..345], "device minor")? as u32,
            )
        } else {
            (0, 0)
        };
        let stored = pax.size.unwrap_or(header_size);
        // Hard links, symlinks, devices, fifos and directories carry no data in practice,
        // but whatever size the header claims is skipped.
        self.remaining = stored;
        self.padding = padding_of(stored);
        let mut size = stored;
        let mut sparse = None;

        if typeflag == b'S' {
            if !gnu {
                return Err(corrupt("GNU sparse entry without a GNU header"));
            }
            let mut segments = Vec::new();
            let mut push = |chunk: &[u8]| -> Result<(), TarError> {
                let offset = parse_number(&chunk[0..12], "sparse offset")?;
                let len = parse_number(&chunk[12..24], "sparse length")?;
                if offset != 0 || len != 0 {
                    segments.push((offset, len));
                }
                Ok(())
            };
            for i in 0..4 {
                push(&header[386 + i * 24..386 + (i + 1) * 24])?;
            }
            let mut extended = header[482] != 0;
            // Extension blocks sit between the header and the data, outside the entry size.
            while extended {
                let mut block = [0u8; BLOCK];
                if !self.read_block(&mut block)? {
                    return Err(TarError::Truncated(
                        "stream ends inside a sparse map".into(),
                    ));
                }
                for i in 0..21 {
                    push(&block[i * 24..(i + 1) * 24])?;
                }
                extended = block[504] != 0;
            }
            size = parse_number(&header[483..495], "sparse real size")?;
            check_segments(&segments, size)?;
            sparse = Some(segments);
        } else if let Some(major) = pax.sparse_major {
            size = pax
                .sparse_realsize
                .ok_or_else(|| corrupt("PAX sparse entry without GNU.sparse.realsize"))?;
            if let Some(name) = pax.sparse_name {
                path = name;
            }
            let segments = if major >= 1 {
                self.read_sparse_map_from_data(size)?
            } else {
                segments_from_pairs(&pax.sparse_map, size)?
            };
            sparse = Some(segments);
        }
        if let Some(segments) = &sparse {
            let total: u64 = segments.iter().map(|s| s.1).sum();
            if total != self.remaining {
                return Err(corrupt(format!(
                    "sparse map of {} describes {total} bytes of data but {} are stored",
                    String::from_utf8_lossy(&path),
                    self.remaining
                )));
            }
        }
        Ok(TarEntry {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            sparse,
        })
    }

    /// Reads the PAX 1.0 sparse map stored at the start of the entry's data.
    fn read_sparse_map_from_data(&mut self, real_size: u64) -> Result<Vec<(u64, u64)>, TarError> {
        let start = self.remaining;
        let mut numbers = Vec::new();
        let mut current = Vec::new();
        let mut count: Option<u64> = None;
        loop {
            if let Some(n) = count {
                if numbers.len() as u64 == n * 2 {
                    break;
                }
            }
            let mut byte = [0u8; 1];
            if self.read_data(&mut byte)? == 0 {
                return Err(TarError::Truncated(
                    "stream ends inside a sparse map".into(),
                ));
            }
            if byte[0] == b'\n' {
                let value = parse_decimal(&current, "sparse map")?;
                current.clear();
                match count {
                    None => {
                        if value as usize > MAX_SPARSE_SEGMENTS {
                            return Err(corrupt("too many sparse segments"));
                        }
                        count = Some(value)
                    }
                    Some(_) => numbers.push(value),
                }
            } else {
                if current.len() > 20 {
                    return Err(corrupt("malformed sparse map"));
                }
                current.push(byte[0]);
            }
        }
        let consumed = start - self.remaining;
        let pad = padding_of(consumed).min(self.remaining);
        let mut sink = vec![0u8; pad as usize];
        let mut got = 0;
        while got < sink.len() {
            let n = self.read_data(&mut sink[got..])?;
            if n == 0 {
                return Err(TarError::Truncated(
                    "stream ends inside a sparse map".into(),
                ));
            }
            got += n;
        }
        segments_from_pairs(&numbers, real_size)
    }

    /// Reads the current entry's (stored) data; `Ok(0)` at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(TarError::Truncated(format!(
                        "stream ends inside entry data at byte {} ({} bytes missing)",
                        self.offset, self.remaining
                    )))
                }
                Ok(n) => {
                    self.remaining -= n as u64;
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TarError::Io(e)),
            }
        }
    }
}

/// Padding after `size` bytes of data up to the next block.
fn padding_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn verify_checksum(header: &[u8; BLOCK], at: u64) -> Result<(), TarError> {
    let expected = parse_number(&header[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in header.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if unsigned == expected || signed == expected as i64 {
        Ok(())
    } else {
        Err(corrupt(format!("header checksum mismatch at byte {at}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"12.123456789123"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.2x"), None);
    }

    #[test]
    fn pax_records_with_binary_values() {
        let value = b"a\nb=c\0";
        let record_len = 3 + "SCHILY.xattr.k".len() + 2 + value.len();
        let mut data = format!("{record_len} SCHILY.xattr.k=").into_bytes();
        data.extend_from_slice(value);
        data.push(b'\n');
        assert_eq!(data.len(), record_len);
        data.extend_from_slice(b"12 path=abc\n");
        let mut pax = Pax::default();
        parse_pax_records(&data, |k, v| pax.record(k, v)).unwrap();
        assert_eq!(pax.xattrs, vec![(OsString::from("k"), value.to_vec())]);
        assert_eq!(pax.path.as_deref(), Some(&b"abc"[..]));
        assert!(parse_pax_records(b"99 path=abc\n", |_, _| Ok(())).is_err());
        assert!(parse_pax_records(b"5 a\n", |_, _| Ok(())).is_err());
    }

    #[test]
    fn numbers_parse() {
        assert_eq!(parse_number(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(parse_number(b"   755 \0", "m").unwrap(), 0o755);
        assert_eq!(parse_number(b"\0\0\0\0", "m").unwrap(), 0);
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 1, 0], "uid").unwrap(),
            256
        );
        assert!(parse_number(b"0009\0", "m").is_err());
        assert!(parse_number(&[0xff; 8], "m").is_err());
    }
}
