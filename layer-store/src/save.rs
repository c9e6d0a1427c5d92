//! Saving an image as an archive that both `docker load` and OCI tools read.
//!
//! The archive is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) that also carries Docker's `manifest.json` (with
//! `blobs/sha256/…` paths) and `repositories`, like `docker save` writes since
//! Docker 25. The config blob is written byte for byte and layers exactly as
//! stored, so importing the archive gives the same image ID.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{IoContext, Result, StoreError};
use crate::image::Image;
use crate::media_type::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use crate::oci::{
    self, Descriptor, Index, LayoutFile, Manifest, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION,
};
use crate::store::Store;

/// One image in Docker's `manifest.json`.
#[derive(Debug, Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl Store {
    /// Writes `image` (with its current tags) as a docker-archive / OCI layout tar to `out`.
    pub fn save(&self, image: &Image, out: &mut dyn Write) -> Result<()> {
        let tags = self.read_tags()?.tags_of(&image.id);
        let layers = self.image_layers(image)?;
        let config = self.read_blob(&image.config_digest)?;
        let actual = Digest::of_bytes(&config);
        if actual != image.config_digest {
            return Err(StoreError::DigestMismatch {
                context: format!("stored config of image {}", image.id),
                expected: image.config_digest.clone(),
                actual,
            });
        }

        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: Some(OCI_CONFIG.to_string()),
                digest: image.config_digest.clone(),
                size: config.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers: layers
                .iter()
                .map(|layer| Descriptor {
                    media_type: Some(layer.compression.oci_layer_media_type().to_string()),
                    digest: layer.blob.clone(),
                    size: layer.blob_size,
                    platform: None,
                    annotations: BTreeMap::new(),
                })
                .collect(),
        };
        let manifest_bytes = to_json(&manifest)?;
        let manifest_digest = Digest::of_bytes(&manifest_bytes);
        let manifest_descriptor = |annotations: BTreeMap<String, String>| Descriptor {
            media_type: Some(OCI_MANIFEST.to_string()),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            platform: None,
            annotations,
        };
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: if tags.is_empty() {
                vec![manifest_descriptor(BTreeMap::new())]
            } else {
                tags.iter()
                    .map(|tag| {
                        manifest_descriptor(BTreeMap::from([
                            (IMAGE_NAME_ANNOTATION.to_string(), tag.to_string()),
                            (REF_NAME_ANNOTATION.to_string(), tag.to_string()),
                        ]))
                    })
                    .collect()
            },
        };
        let docker_manifest = vec![DockerManifestEntry {
            config: oci::blob_path(&image.config_digest),
            repo_tags: tags.iter().map(ToString::to_string).collect(),
            layers: layers
                .iter()
                .map(|layer| oci::blob_path(&layer.blob))
                .collect(),
        }];
        let mut repositories: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        if let Some(top) = layers.last() {
            for tag in &tags {
                repositories
                    .entry(tag.name())
                    .or_default()
                    .insert(tag.tag(), top.blob.hex());
            }
        }

        let mut archive = ArchiveWriter {
            builder: tar::Builder::new(out),
        };
        archive.directory("blobs/")?;
        archive.directory("blobs/sha256/")?;
        archive.file(&oci::blob_path(&image.config_digest), &config)?;
        let mut written = HashSet::new();
        for layer in &layers {
            if !written.insert(&layer.blob) {
                continue;
            }
            let blob = self.open_blob(&layer.blob)?;
            let size = blob
                .metadata()
                .io_context(|| format!("reading blob {}", layer.blob))?
                .len();
            if size != layer.blob_size {
                return Err(self.corrupt(
                    &self.blob_path(&layer.blob),
                    format!(
                        "blob is {size} bytes, its layer record says {}",
                        layer.blob_size
                    ),
                ));
            }
            archive.stream(&oci::blob_path(&layer.blob), size, blob)?;
        }
        archive.file(&oci::blob_path(&manifest_digest), &manifest_bytes)?;
        archive.file("index.json", &to_json(&index)?)?;
        archive.file("manifest.json", &to_json(&docker_manifest)?)?;
        if !repositories.is_empty() {
            archive.file("repositories", &to_json(&repositories)?)?;
        }
        archive.file(
            "oci-layout",
            &to_json(&LayoutFile {
                image_layout_version: oci::LAYOUT_VERSION.to_string(),
            })?,
        )?;
        archive
            .builder
            .into_inner()
            .and_then(|out| out.flush())
            .io_context(|| "finishing the saved archive")?;
        tracing::info!(image = %image.id, "saved image");
        Ok(())
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| StoreError::InvalidJson {
        context: "writing archive metadata".to_string(),
        source,
    })
}

/// Writes tar members with fixed, reproducible metadata.
struct ArchiveWriter<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
}

impl ArchiveWriter<'_> {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn directory(&mut self, path: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut header, path, std::io::empty())
            .io_context(|| format!("writing {path} to the archive"))
    }

    fn file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        self.stream(path, bytes.len() as u64, bytes)
    }

    fn stream(&mut self, path: &str, size: u64, reader: impl Read) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, 0o644, size);
        self.builder
            .append_data(&mut header, path, reader.take(size))
            .io_context(|| format!("writing {path} to the archive"))
    }
}
