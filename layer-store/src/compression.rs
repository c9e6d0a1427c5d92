//! Layer compression, detected from magic bytes (never from file names).

use std::fmt;
use std::io::{self, Cursor, Read};

use serde::{Deserialize, Serialize};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// Zstandard (possibly several frames).
    Zstd,
}

impl Compression {
    /// Detects compression from the first bytes of a stream (at least 4 bytes
    /// are needed to recognise zstd; fewer simply means uncompressed).
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type of a tar compressed this way.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => crate::media_type::OCI_LAYER_TAR,
            Compression::Gzip => crate::media_type::OCI_LAYER_TAR_GZIP,
            Compression::Zstd => crate::media_type::OCI_LAYER_TAR_ZSTD,
        }
    }

    /// Wraps `reader` (positioned at the start of the blob) so that it yields
    /// the uncompressed bytes.
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        reader: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// Reads the first bytes of `reader` to detect its compression, and returns a
/// reader that yields the whole stream again (the peeked prefix, then the rest).
pub fn peek_compression<R: Read>(mut reader: R) -> io::Result<(Compression, Cursor<Vec<u8>>, R)> {
    let mut prefix = vec![0u8; ZSTD_MAGIC.len()];
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    prefix.truncate(filled);
    Ok((Compression::detect(&prefix), Cursor::new(prefix), reader))
}

/// A reader over a whole stream that decompresses it according to its magic bytes.
pub fn decompressing_reader<'a, R: Read + Send + 'a>(
    reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let (compression, prefix, rest) = peek_compression(reader)?;
    let decoder = compression.decoder(prefix.chain(rest))?;
    Ok((compression, decoder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn detects_by_magic_bytes() {
        assert_eq!(Compression::detect(&gzip(b"x")), Compression::Gzip);
        assert_eq!(
            Compression::detect(&zstd::encode_all(&b"x"[..], 3).unwrap()),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
        assert_eq!(Compression::detect(&[0x28, 0xb5]), Compression::None);
    }

    #[test]
    fn decompressing_reader_round_trips_each_compression() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for (encoded, expected) in [
            (data.clone(), Compression::None),
            (gzip(&data), Compression::Gzip),
            (zstd::encode_all(&data[..], 3).unwrap(), Compression::Zstd),
        ] {
            let (compression, mut reader) = decompressing_reader(&encoded[..]).unwrap();
            assert_eq!(compression, expected);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn short_streams_are_uncompressed_and_kept_whole() {
        let (compression, mut reader) = decompressing_reader(&b"ab"[..]).unwrap();
        assert_eq!(compression, Compression::None);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }

    #[test]
    fn truncated_compressed_streams_fail() {
        let data = vec![42u8; 100_000];
        for encoded in [gzip(&data), zstd::encode_all(&data[..], 3).unwrap()] {
            let cut = &encoded[..encoded.len() / 2];
            let (_, mut reader) = decompressing_reader(cut).unwrap();
            assert!(reader.read_to_end(&mut Vec::new()).is_err());
        }
    }
}
