//! Importing images: `docker save` archives, OCI image layouts (directory or
//! tar) and bare layer tars, with the format detected from the content.
//!
//! Import streams: an uncompressed archive is indexed once and its members are
//! read by seeking; a compressed archive is first decompressed into the
//! store's staging area. Layers are hashed while they are copied into staging
//! and verified before anything becomes visible; the store lock is held only
//! for the final publish step.

mod docker_archive;
mod layer_tar;
mod naming;
mod oci_layout;
mod plan;
mod publish;
mod source;

pub(crate) use publish::{publish, ReadyImage, ReadyLayer};

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::compression::{peek_compression, Compression};
use crate::error::{IoContext, Result, StoreError};
use crate::image::Image;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::staging::StagingDir;
use crate::store::Store;

use source::{DirSource, Source, TarSource};

/// The image formats that carry their own metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveFormat {
    DockerArchive,
    OciLayout,
}

/// How many leading bytes of `manifest.json` are inspected to classify input.
const MANIFEST_PROBE_LEN: u64 = 256;

/// Classifies input from what is at its top level: a `manifest.json` holding
/// a JSON array makes a docker-archive (so that a layer tar that happens to
/// contain some other `/manifest.json` is still imported as a layer), an
/// `oci-layout` file an OCI layout.
fn classify(manifest_head: Option<&[u8]>, has_layout: bool) -> Option<ArchiveFormat> {
    let is_docker_manifest = manifest_head
        .and_then(|head| head.iter().find(|b| !b.is_ascii_whitespace()))
        .is_some_and(|&first| first == b'[');
    if is_docker_manifest {
        Some(ArchiveFormat::DockerArchive)
    } else if has_layout {
        Some(ArchiveFormat::OciLayout)
    } else {
        None
    }
}

/// Classifies a directory or indexed tar.
fn classify_source(source: &dyn Source) -> Result<Option<ArchiveFormat>> {
    let manifest_head = match source.open(docker_archive::MANIFEST_FILE)? {
        Some((reader, _)) => {
            Some(read_head(reader).io_context(|| format!("reading {}", source.name()))?)
        }
        None => None,
    };
    let has_layout = source.size_of(oci_layout::LAYOUT_FILE)?.is_some();
    Ok(classify(manifest_head.as_deref(), has_layout))
}

/// The first [`MANIFEST_PROBE_LEN`] bytes of a stream.
fn read_head(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    reader.take(MANIFEST_PROBE_LEN).read_to_end(&mut head)?;
    Ok(head)
}

impl Store {
    /// Imports the images in `path` (a docker-archive, an OCI layout directory
    /// or tar, or a bare layer tar; plain, gzip or zstd) and returns them with
    /// their tags. `name` (`name[:tag]`) names or additionally tags the
    /// imported image, following the naming rules in the crate documentation.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        self.import_with_progress(path, name, &mut |_| {})
    }

    /// [`Store::import`], reporting progress while each layer streams.
    pub fn import_with_progress(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Vec<Image>> {
        let name = name.map(Reference::parse).transpose()?;
        let name = name.as_ref();
        let metadata = fs::metadata(path).io_context(|| format!("reading {}", path.display()))?;
        let staging = self.staging()?;
        tracing::info!(path = %path.display(), "importing");

        if metadata.is_dir() {
            let source = DirSource::new(path)?;
            let format =
                classify_source(&source)?.ok_or_else(|| StoreError::UnrecognizedFormat {
                    path: path.to_path_buf(),
                    reason:
                        "the directory has neither a manifest.json array nor an oci-layout file"
                            .to_string(),
                })?;
            return self.import_archive(&staging, &source, format, path, name, progress);
        }

        let mut file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
        let (compression, _, _) =
            peek_compression(&mut file).io_context(|| format!("reading {}", path.display()))?;
        if compression == Compression::None {
            check_tar_header(path)?;
            let source = TarSource::index(path, path)?;
            return match classify_source(&source)? {
                Some(format) => {
                    self.import_archive(&staging, &source, format, path, name, progress)
                }
                None => {
                    if source.is_empty() {
                        return Err(StoreError::UnrecognizedFormat {
                            path: path.to_path_buf(),
                            reason: "the tar archive is empty".to_string(),
                        });
                    }
                    layer_tar::import(self, &staging, path, name, progress)
                }
            };
        }

        match scan_compressed(path, compression)? {
            Some(format) => {
                let unpacked = decompress_to_staging(&staging, path, compression)?;
                let source = TarSource::index(&unpacked, path)?;
                self.import_archive(&staging, &source, format, path, name, progress)
            }
            None => layer_tar::import(self, &staging, path, name, progress),
        }
    }

    fn import_archive(
        &self,
        staging: &StagingDir,
        source: &dyn Source,
        format: ArchiveFormat,
        input: &Path,
        name: Option<&Reference>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Vec<Image>> {
        let planned = match format {
            ArchiveFormat::DockerArchive => docker_archive::plan(source, name, input)?,
            ArchiveFormat::OciLayout => oci_layout::plan(source, name, input)?,
        };
        let mut staged = HashMap::new();
        let ready = plan::stage_images(staging, source, &planned, &mut staged, progress)?;
        publish(self, staging, &ready)
    }
}

/// Fails with [`StoreError::UnrecognizedFormat`] unless the file starts with a valid tar header.
fn check_tar_header(path: &Path) -> Result<()> {
    let unrecognized = |reason: &str| StoreError::UnrecognizedFormat {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut block = [0u8; 512];
    let mut file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let mut filled = 0;
    while filled < block.len() {
        match file.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).io_context(|| format!("reading {}", path.display())),
        }
    }
    if filled < block.len() {
        return Err(unrecognized("too short to be a tar archive"));
    }
    if block.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let stored: Option<u32> = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|field| field.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|octal| u32::from_str_radix(octal, 8).ok());
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    if stored != Some(computed) {
        return Err(unrecognized(
            "it is not a tar archive (no valid tar header)",
        ));
    }
    Ok(())
}

/// Reads a compressed tar through once to see whether it is an image archive
/// (`Some`) or a bare layer (`None`).
fn scan_compressed(path: &Path, compression: Compression) -> Result<Option<ArchiveFormat>> {
    let corrupt = |reason: String| StoreError::Corrupt {
        context: path.display().to_string(),
        reason,
    };
    let file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let decoder = compression
        .decoder(io::BufReader::new(file))
        .io_context(|| format!("reading {}", path.display()))?;
    let mut archive = tar::Archive::new(decoder);
    let entries = archive.entries().map_err(|e| corrupt(e.to_string()))?;
    let mut manifest_head = None;
    let mut has_layout = false;
    let mut count = 0usize;
    for entry in entries {
        let entry = entry.map_err(|e| {
            if count == 0 {
                StoreError::UnrecognizedFormat {
                    path: path.to_path_buf(),
                    reason: format!("its {compression} content is not a tar archive: {e}"),
                }
            } else {
                corrupt(e.to_string())
            }
        })?;
        count += 1;
        let name = match entry.path() {
            Ok(name) => name.to_string_lossy().trim_start_matches("./").to_string(),
            Err(_) => continue,
        };
        if name == oci_layout::LAYOUT_FILE {
            has_layout = true;
        } else if name == docker_archive::MANIFEST_FILE {
            manifest_head = Some(read_head(entry).map_err(|e| corrupt(e.to_string()))?);
        }
    }
    if count == 0 {
        return Err(StoreError::UnrecognizedFormat {
            path: path.to_path_buf(),
            reason: format!("its {compression} content is an empty tar archive"),
        });
    }
    Ok(classify(manifest_head.as_deref(), has_layout))
}

/// Decompresses an archive into a staging file, for random access.
fn decompress_to_staging(
    staging: &StagingDir,
    path: &Path,
    compression: Compression,
) -> Result<std::path::PathBuf> {
    let (target, file) = staging.new_file()?;
    let input = File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let mut decoder = compression
        .decoder(io::BufReader::new(input))
        .io_context(|| format!("reading {}", path.display()))?;
    let mut output = BufWriter::with_capacity(256 * 1024, file);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(StoreError::Corrupt {
                    context: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        output
            .write_all(&buffer[..n])
            .io_context(|| format!("writing {}", target.display()))?;
    }
    output
        .into_inner()
        .map_err(|e| e.into_error())
        .io_context(|| format!("writing {}", target.display()))?;
    Ok(target)
}
