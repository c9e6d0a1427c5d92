//! Layer blob compression (none, gzip, zstd) with deterministic output.

use std::io::{self, Write};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// A plain tar.
    #[default]
    None,
    /// gzip (level 6, no file name, mtime 0).
    Gzip,
    /// zstd (level 3, single-threaded).
    Zstd,
}

impl Compression {
    /// The OCI layer media type for a blob with this compression.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Compresses `bytes` with `compression` and returns the blob.
pub fn compress(bytes: &[u8], compression: Compression) -> Vec<u8> {
    let mut encoder =
        Encoder::new(Vec::new(), compression).expect("creating an in-memory encoder cannot fail");
    encoder
        .write_all(bytes)
        .expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

/// A streaming compressor that writes the compressed blob into `W`.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(inner: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(inner),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(inner, flate2::Compression::new(6)),
            ),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, 3)?),
        })
    }

    /// Flushes the compressed trailer and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_compression_round_trips_and_is_deterministic() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = compress(&data, c);
            assert_eq!(blob, compress(&data, c), "{c:?} output is not stable");
            let mut back = Vec::new();
            match c {
                Compression::None => back = blob.clone(),
                Compression::Gzip => {
                    assert_eq!(&blob[..2], &[0x1f, 0x8b]);
                    flate2::read::GzDecoder::new(&blob[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::Zstd => {
                    assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
                    back = zstd::decode_all(&blob[..]).unwrap();
                }
            }
            assert_eq!(back, data, "{c:?}");
        }
    }
}
