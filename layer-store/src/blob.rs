//! Blobs: content-addressed files under `<root>/blobs/sha256/`.
//!
//! A blob is first written to a staging directory while it is hashed; it is
//! renamed into place only after its digest has been verified, so a blob file
//! under its digest name is always complete and correct. Compressed layers are
//! kept exactly as they arrived; their diff ID (the digest of the
//! uncompressed tar) is computed in the same pass through a decompressor.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::compression::{peek_compression, Compression};
use crate::digest::{Digest, DigestWriter};
use crate::error::{IoContext, Result, StoreError};
use crate::staging::StagingDir;
use crate::store::Store;

/// How often (in bytes) progress is reported while streaming.
const PROGRESS_STEP: u64 = 256 * 1024;

/// A layer blob written to a staging directory and fully hashed.
#[derive(Debug, Clone)]
pub(crate) struct StagedBlob {
    /// The staging file.
    pub(crate) path: PathBuf,
    /// Digest of the bytes as they arrived.
    pub(crate) digest: Digest,
    /// Their size.
    pub(crate) size: u64,
    /// Compression detected from the magic bytes.
    pub(crate) compression: Compression,
    /// Digest of the uncompressed content.
    pub(crate) diff_id: Digest,
    /// Size of the uncompressed content.
    pub(crate) uncompressed_size: u64,
}

/// Copies everything read into a staging file and a hasher, reporting progress.
struct TeeReader<'a> {
    input: &'a mut dyn Read,
    output: BufWriter<File>,
    hasher: DigestWriter,
    progress: &'a mut dyn FnMut(u64),
    reported: u64,
    input_error: bool,
    output_error: Option<io::Error>,
}

impl Read for TeeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.input.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.input_error = true;
                }
                return Err(e);
            }
        };
        if let Err(e) = self.output.write_all(&buf[..n]) {
            let kind = e.kind();
            self.output_error = Some(e);
            return Err(io::Error::new(kind, "writing the staging file failed"));
        }
        self.hasher.update(&buf[..n]);
        if self.hasher.len() - self.reported >= PROGRESS_STEP {
            self.reported = self.hasher.len();
            (self.progress)(self.reported);
        }
        Ok(n)
    }
}

/// Streams `input` into a new staging file, computing its digest and (through
/// a decompressor chosen by magic bytes) its diff ID. `progress` receives the
/// number of input bytes consumed so far. `context` names the input in errors.
pub(crate) fn stage_layer(
    staging: &StagingDir,
    input: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
    context: &str,
) -> Result<StagedBlob> {
    let (path, file) = staging.new_file()?;
    let mut tee = TeeReader {
        input,
        output: BufWriter::with_capacity(256 * 1024, file),
        hasher: DigestWriter::new(),
        progress,
        reported: 0,
        input_error: false,
        output_error: None,
    };
    let streamed = hash_content(&mut tee);
    if let Some(source) = tee.output_error.take() {
        return Err(StoreError::Io {
            context: format!("{context}: writing {}", path.display()),
            source,
        });
    }
    let (compression, diff_id, uncompressed_size) = match streamed {
        Ok(result) => result,
        Err(source) if tee.input_error => {
            return Err(StoreError::Io {
                context: format!("{context}: reading"),
                source,
            })
        }
        Err(e) => {
            return Err(StoreError::Corrupt {
                context: context.to_string(),
                reason: e.to_string(),
            })
        }
    };
    let file = tee
        .output
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all().map(|()| file))
        .io_context(|| format!("{context}: writing {}", path.display()))?;
    drop(file);
    let (digest, size) = tee.hasher.finish();
    (tee.progress)(size);
    let (diff_id, uncompressed_size) = match compression {
        Compression::None => (digest.clone(), size),
        _ => (diff_id, uncompressed_size),
    };
    Ok(StagedBlob {
        path,
        digest,
        size,
        compression,
        diff_id,
        uncompressed_size,
    })
}

/// Reads `tee` to its end; returns the compression and the digest and size of
/// the decompressed content (meaningless for uncompressed input, whose diff ID
/// is its digest).
fn hash_content(tee: &mut TeeReader<'_>) -> io::Result<(Compression, Digest, u64)> {
    let (compression, prefix, rest) = peek_compression(tee)?;
    let mut whole = prefix.chain(rest);
    let mut uncompressed = DigestWriter::new();
    match compression {
        Compression::None => {}
        Compression::Gzip => {
            io::copy(&mut MultiGzDecoder::new(&mut whole), &mut uncompressed)?;
        }
        Compression::Zstd => {
            io::copy(
                &mut zstd::stream::read::Decoder::new(&mut whole)?,
                &mut uncompressed,
            )?;
        }
    }
    // Whatever the decompressor did not consume still belongs to the blob.
    io::copy(&mut whole, &mut io::sink())?;
    let (diff_id, uncompressed_size) = uncompressed.finish();
    Ok((compression, diff_id, uncompressed_size))
}

/// Writes small content (a config or manifest) to a staging file, fsync'd.
pub(crate) fn stage_bytes(staging: &StagingDir, bytes: &[u8]) -> Result<PathBuf> {
    let (path, mut file) = staging.new_file()?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .io_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

impl Store {
    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.paths().blob(digest)
    }

    /// Whether the blob `digest` is stored.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens the stored blob `digest`.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound {
                digest: digest.clone(),
            },
            _ => StoreError::Io {
                context: format!("opening blob {digest}"),
                source,
            },
        })
    }

    /// Reads a whole (small) blob such as a config.
    pub(crate) fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .io_context(|| format!("reading blob {digest}"))?;
        Ok(bytes)
    }

    /// Moves a verified staging file into place as blob `digest`. An existing
    /// blob with that digest is kept (it has the same content). The caller
    /// fsyncs the blob directory afterwards with [`Store::sync_blobs`].
    pub(crate) fn publish_blob(&self, staged: &Path, digest: &Digest) -> Result<()> {
        let target = self.blob_path(digest);
        if target.is_file() {
            return Ok(());
        }
        fs::rename(staged, &target)
            .io_context(|| format!("moving {} into place as blob {digest}", staged.display()))
    }

    /// Makes blob renames durable.
    pub(crate) fn sync_blobs(&self) -> Result<()> {
        crate::fsutil::sync_dir(&self.paths().blobs_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(data: &[u8]) -> (tempfile::TempDir, StagingDir, Result<StagedBlob>, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let staging = StagingDir::create(dir.path()).unwrap();
        let mut reports = Vec::new();
        let staged = stage_layer(
            &staging,
            &mut &data[..],
            &mut |n| reports.push(n),
            "test layer",
        );
        (dir, staging, staged, reports)
    }

    #[test]
    fn staged_blobs_keep_the_input_bytes_and_compute_diff_ids() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for (input, compression) in [
            (&data, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let (_dir, _staging, staged, reports) = stage(input);
            let staged = staged.unwrap();
            assert_eq!(staged.compression, compression);
            assert_eq!(fs::read(&staged.path).unwrap(), *input);
            assert_eq!(staged.digest, Digest::of_bytes(input));
            assert_eq!(staged.size, input.len() as u64);
            assert_eq!(staged.diff_id, Digest::of_bytes(&data));
            assert_eq!(staged.uncompressed_size, data.len() as u64);
            assert_eq!(reports.last(), Some(&(input.len() as u64)));
            assert!(reports.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn corrupt_compressed_input_is_a_corrupt_error() {
        let zst = zstd::encode_all(&vec![7u8; 200_000][..], 1).unwrap();
        let (_dir, _staging, staged, _) = stage(&zst[..zst.len() - 3]);
        assert!(
            matches!(staged, Err(StoreError::Corrupt { .. })),
            "{staged:?}"
        );
        let mut garbage = vec![0x1f, 0x8b];
        garbage.extend_from_slice(&[0xff; 100]);
        let (_dir, _staging, staged, _) = stage(&garbage);
        assert!(
            matches!(staged, Err(StoreError::Corrupt { .. })),
            "{staged:?}"
        );
    }
}
