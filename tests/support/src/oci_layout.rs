//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/`) as a
//! directory or a tar, with one or several images and nested indexes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::digest::sha256_digest;
use crate::image::{
    put_layer_blob, Corruption, Descriptor, ImageBuilder, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
};
use crate::output::{DirOutput, Output, TarOutput};

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone)]
enum Item<'a> {
    Image(&'a ImageBuilder, Option<String>),
    MultiPlatform(Vec<&'a ImageBuilder>, Option<String>),
}

/// An OCI layout holding several images: each listed in `index.json` (with an
/// `org.opencontainers.image.ref.name` annotation when named), or grouped under a
/// nested image index whose manifests carry a `platform` (so importers must pick
/// the host's).
///
/// ```
/// use test_support::{Compression, ImageBuilder, LayerBuilder, OciLayoutBuilder};
/// let amd = ImageBuilder::new().architecture("amd64")
///     .layer(LayerBuilder::new().file("arch", "amd64", 0o644), Compression::Gzip);
/// let arm = ImageBuilder::new().architecture("arm64").variant("v8")
///     .layer(LayerBuilder::new().file("arch", "arm64", 0o644), Compression::Gzip);
/// let dir = tempfile::tempdir().unwrap();
/// OciLayoutBuilder::new()
///     .multi_platform(&[&amd, &arm], Some("multi"))
///     .image(&amd, Some("amd-only"))
///     .write_dir(dir.path())
///     .unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct OciLayoutBuilder<'a> {
    items: Vec<Item<'a>>,
}

impl<'a> OciLayoutBuilder<'a> {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists `image`'s manifest in `index.json`, named `ref_name` if given.
    pub fn image(mut self, image: &'a ImageBuilder, ref_name: Option<&str>) -> Self {
        self.items
            .push(Item::Image(image, ref_name.map(str::to_string)));
        self
    }

    /// Lists in `index.json` an image index blob (named `ref_name` if given)
    /// whose manifests are `images`, each with its `platform` (architecture,
    /// os, variant from the image's config).
    pub fn multi_platform(mut self, images: &[&'a ImageBuilder], ref_name: Option<&str>) -> Self {
        self.items.push(Item::MultiPlatform(
            images.to_vec(),
            ref_name.map(str::to_string),
        ));
        self
    }

    /// Writes the layout into directory `dir` (created if missing).
    pub fn write_dir(&self, dir: impl AsRef<Path>) -> io::Result<()> {
        let mut out = DirOutput::new(dir.as_ref().to_path_buf())?;
        self.write(&mut out)
    }

    /// Writes the layout as a tar file.
    pub fn write_tar(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let file = BufWriter::new(fs::File::create(path)?);
        self.write_tar_to(file)?.flush()
    }

    /// Streams the layout as a tar into `w` and returns it.
    pub fn write_tar_to<W: Write>(&self, w: W) -> io::Result<W> {
        let mut out = TarOutput::new(w);
        self.write(&mut out)?;
        out.finish()
    }

    fn write(&self, out: &mut dyn Output) -> io::Result<()> {
        out.bytes("oci-layout", OCI_LAYOUT_FILE)?;
        out.dir("blobs")?;
        out.dir("blobs/sha256")?;
        let mut top = Vec::new();
        for item in &self.items {
            match item {
                Item::Image(image, ref_name) => {
                    let mut d = write_image(out, image)?;
                    d.annotations = annotations(ref_name);
                    top.push(d);
                }
                Item::MultiPlatform(images, ref_name) => {
                    let mut manifests = Vec::new();
                    for image in images {
                        let mut d = write_image(out, image)?;
                        d.platform = Some(image.platform());
                        manifests.push(d);
                    }
                    let index = index_json(manifests);
                    let digest = sha256_digest(&index);
                    out.bytes(&blob_path(&digest), &index)?;
                    top.push(Descriptor {
                        media_type: MEDIA_TYPE_INDEX.to_string(),
                        digest,
                        size: index.len() as u64,
                        platform: None,
                        annotations: annotations(ref_name),
                    });
                }
            }
        }
        out.bytes("index.json", &index_json(top))
    }
}

fn annotations(ref_name: &Option<String>) -> BTreeMap<String, String> {
    ref_name
        .iter()
        .map(|r| (ANNOTATION_REF_NAME.to_string(), r.clone()))
        .collect()
}

fn index_json(manifests: Vec<Descriptor>) -> Vec<u8> {
    serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX,
        manifests,
    })
    .expect("serialising plain data cannot fail")
}

fn blob_path(digest: &str) -> String {
    format!(
        "blobs/sha256/{}",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    )
}

/// Writes an image's layer, config and manifest blobs; returns the manifest's
/// descriptor.
fn write_image(out: &mut dyn Output, image: &ImageBuilder) -> io::Result<Descriptor> {
    for (i, info) in image.try_layer_info()?.iter().enumerate() {
        put_layer_blob(out, image, i, false, &blob_path(&info.digest))?;
    }
    let config = image.written_config();
    if !image.has(&Corruption::MissingConfigBlob) {
        out.bytes(&blob_path(&sha256_digest(&config)), &config)?;
    }
    let manifest = image.written_oci_manifest();
    let digest = sha256_digest(&manifest);
    out.bytes(&blob_path(&digest), &manifest)?;
    Ok(Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.to_string(),
        digest,
        size: manifest.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    })
}

impl ImageBuilder {
    /// Writes this image as an OCI layout directory, named `ref_name` in
    /// `index.json` if given.
    pub fn write_oci_layout_dir(
        &self,
        dir: impl AsRef<Path>,
        ref_name: Option<&str>,
    ) -> io::Result<()> {
        OciLayoutBuilder::new().image(self, ref_name).write_dir(dir)
    }

    /// Writes this image as an OCI layout tar file.
    pub fn write_oci_layout_tar(
        &self,
        path: impl AsRef<Path>,
        ref_name: Option<&str>,
    ) -> io::Result<()> {
        OciLayoutBuilder::new()
            .image(self, ref_name)
            .write_tar(path)
    }

    /// Streams this image as an OCI layout tar into `w` and returns it.
    pub fn write_oci_layout_tar_to<W: Write>(&self, w: W, ref_name: Option<&str>) -> io::Result<W> {
        OciLayoutBuilder::new()
            .image(self, ref_name)
            .write_tar_to(w)
    }
}
