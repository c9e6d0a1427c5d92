//! Low-level tar writing: headers, GNU long names, PAX records and padding.
//!
//! The `tar` crate formats the header fields; this module decides which extension
//! entries precede a header so that tests control the exact on-disk encoding.

use std::io::{self, Write};

use tar::{EntryType, Header};

/// Size of one tar block.
pub(crate) const BLOCK: u64 = 512;

/// Length of the `name` and `linkname` fields of a tar header.
const NAME_FIELD: usize = 100;

/// How names and link targets that do not fit a 100-byte header field are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongNameFormat {
    /// GNU `././@LongLink` entries of type `L` (name) and `K` (link target).
    #[default]
    Gnu,
    /// PAX extended header records `path` and `linkpath`.
    Pax,
}

/// Everything that goes into one entry's header(s) apart from the data.
pub(crate) struct HeaderSpec<'a> {
    /// The raw name bytes (already relative, trailing `/` for directories).
    pub(crate) name: &'a [u8],
    /// The link target for symlinks and hard links.
    pub(crate) link: Option<&'a [u8]>,
    /// A fully populated header (type, mode, owner, mtime, size, devices) whose
    /// name/linkname fields are filled here.
    pub(crate) header: Header,
    /// PAX records to emit before the header (e.g. `SCHILY.xattr.*`).
    pub(crate) pax: Vec<(String, Vec<u8>)>,
    /// Encoding of over-long names.
    pub(crate) long_names: LongNameFormat,
}

/// Writes the extension entries and the header block(s) for one entry.
///
/// The caller writes the entry's data afterwards and then calls [`pad`].
pub(crate) fn write_header(w: &mut dyn Write, spec: HeaderSpec<'_>) -> io::Result<()> {
    let HeaderSpec {
        name,
        link,
        mut header,
        mut pax,
        long_names,
    } = spec;
    let long_name = name.len() > NAME_FIELD;
    let long_link = link.is_some_and(|l| l.len() > NAME_FIELD);
    match long_names {
        LongNameFormat::Gnu => {
            if long_name {
                write_gnu_long(w, b'L', name)?;
            }
            if let Some(link) = link.filter(|_| long_link) {
                write_gnu_long(w, b'K', link)?;
            }
        }
        LongNameFormat::Pax => {
            if long_name {
                pax.push(("path".to_string(), name.to_vec()));
            }
            if let Some(link) = link.filter(|_| long_link) {
                pax.push(("linkpath".to_string(), link.to_vec()));
            }
        }
    }
    if !pax.is_empty() {
        write_pax(w, name, &pax)?;
    }
    set_truncated(&mut header.as_old_mut().name, name);
    if let Some(link) = link {
        set_truncated(&mut header.as_old_mut().linkname, link);
    }
    header.set_cksum();
    w.write_all(header.as_bytes())
}

/// Writes a complete entry whose data is `data`.
pub(crate) fn write_entry(w: &mut dyn Write, spec: HeaderSpec<'_>, data: &[u8]) -> io::Result<()> {
    write_header(w, spec)?;
    w.write_all(data)?;
    pad(w, data.len() as u64)
}

/// Writes zeros up to the next block boundary after `len` data bytes.
pub(crate) fn pad(w: &mut dyn Write, len: u64) -> io::Result<()> {
    let rem = (BLOCK - len % BLOCK) % BLOCK;
    w.write_all(&[0u8; BLOCK as usize][..rem as usize])
}

/// Writes the two zero blocks that end an archive.
pub(crate) fn finish(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK as usize])
}

/// A fresh GNU header with deterministic defaults.
pub(crate) fn gnu_header(entry_type: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(entry_type);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn set_truncated(field: &mut [u8; NAME_FIELD], value: &[u8]) {
    let n = value.len().min(NAME_FIELD);
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
}

fn write_gnu_long(w: &mut dyn Write, kind: u8, value: &[u8]) -> io::Result<()> {
    let mut h = Header::new_gnu();
    set_truncated(&mut h.as_old_mut().name, b"././@LongLink");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(value.len() as u64 + 1);
    h.set_entry_type(EntryType::new(kind));
    h.set_cksum();
    w.write_all(h.as_bytes())?;
    w.write_all(value)?;
    w.write_all(&[0])?;
    pad(w, value.len() as u64 + 1)
}

/// Encodes PAX records (`"<len> <key>=<value>\n"`, where `len` counts itself).
pub(crate) fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn write_pax(w: &mut dyn Write, name: &[u8], records: &[(String, Vec<u8>)]) -> io::Result<()> {
    let data = pax_records(records);
    let mut h = Header::new_ustar();
    let base = name
        .split(|b| *b == b'/')
        .rev()
        .find(|c| !c.is_empty())
        .unwrap_or(b"entry");
    let mut pax_name = b"PaxHeaders/".to_vec();
    pax_name.extend_from_slice(&base[..base.len().min(NAME_FIELD - pax_name.len())]);
    set_truncated(&mut h.as_old_mut().name, &pax_name);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(EntryType::XHeader);
    h.set_cksum();
    w.write_all(h.as_bytes())?;
    w.write_all(&data)?;
    pad(w, data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_its_own_digits() {
        let rec = pax_records(&[("path".into(), b"a".to_vec())]);
        assert_eq!(rec, b"9 path=a\n");
        // Boundary: rest = 98 plus two digits is 100, which needs three digits → 101.
        let value = vec![b'x'; 98 - "path".len() - 3];
        let rec = pax_records(&[("path".into(), value)]);
        assert_eq!(rec.len(), 101);
        assert!(rec.starts_with(b"101 path="));
    }
}
