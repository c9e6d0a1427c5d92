//! SHA-256 helpers and small `Write` adapters used while streaming blobs.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Returns the lowercase hex SHA-256 of `bytes` (no `sha256:` prefix).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Returns the OCI digest string `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Streams `reader` to its end and returns the lowercase hex SHA-256 and the byte count.
pub fn sha256_hex_of_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = HashingWriter::new(io::sink());
    let n = io::copy(&mut reader, &mut hasher)?;
    Ok((hasher.finish_hex(), n))
}

/// A writer that hashes (SHA-256) and counts every byte passed on to the inner writer.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Hex digest of everything written.
    pub(crate) fn finish_hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that passes on only the first `limit` bytes and silently drops the rest.
pub(crate) struct LimitWriter<W> {
    inner: W,
    remaining: u64,
}

impl<W: Write> LimitWriter<W> {
    pub(crate) fn new(inner: W, limit: u64) -> Self {
        LimitWriter {
            inner,
            remaining: limit,
        }
    }
}

impl<W: Write> Write for LimitWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let keep = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if keep > 0 {
            self.inner.write_all(&buf[..keep])?;
            self.remaining -= keep as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes every byte to two writers.
pub(crate) struct TeeWriter<A, B> {
    pub(crate) a: A,
    pub(crate) b: B,
}

impl<A: Write, B: Write> Write for TeeWriter<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.a.write_all(buf)?;
        self.b.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.a.flush()?;
        self.b.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex_of_reader(&b"abc"[..]).unwrap(),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string(),
                3
            )
        );
    }

    #[test]
    fn limit_writer_drops_the_tail() {
        let mut out = Vec::new();
        let mut w = LimitWriter::new(&mut out, 5);
        w.write_all(b"abc").unwrap();
        w.write_all(b"defgh").unwrap();
        assert_eq!(out, b"abcde");
    }
}
