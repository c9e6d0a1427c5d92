//! [`ImageBuilder`]: layers plus an OCI image config, with the digests an
//! importer must compute (DiffIDs, blob digests, ChainIDs, image ID).
//!
//! The writers live in [`crate::docker_archive`] and [`crate::oci_layout`].

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::OnceLock;

use serde::Serialize;

use crate::compression::{Compression, Encoder};
use crate::digest::{sha256_digest, HashingWriter, LimitWriter, TeeWriter};
use crate::layer::LayerBuilder;
use crate::model::expected_tree_of_layers;
use crate::tree::Tree;

/// The `created` timestamp of every generated config and history entry
/// ([`crate::DEFAULT_MTIME`] in RFC 3339).
pub const CREATED: &str = "2020-09-13T12:26:40Z";

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The layer media type written by [`Corruption::UnknownLayerMediaType`].
pub const MEDIA_TYPE_UNKNOWN: &str = "application/vnd.example.unknown.layer.v1";
/// The annotation naming an image inside an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The host architecture in OCI spelling (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// A deliberate defect for bad-input tests, applied by the writers. The
/// accessors of [`ImageBuilder`] keep describing the intact image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The config's `rootfs.diff_ids[i]` names another digest (the written config
    /// stays consistent with its own file name / digest).
    WrongDiffId(usize),
    /// Layer `i`'s blob is not written; the manifest still refers to it.
    MissingLayerBlob(usize),
    /// Layer `i`'s blob holds only its first half, under its full-blob name.
    TruncatedLayerBlob(usize),
    /// Layer `i`'s blob holds a different, valid layer (an empty one) under the
    /// original name, so only digest verification catches it.
    SwappedLayerBlob(usize),
    /// The manifest refers to layer `i` by this string: a path in a docker
    /// archive's `manifest.json` (e.g. `../../etc/passwd`), a digest in an OCI
    /// manifest (e.g. `sha256:../../etc/passwd`).
    LayerReference(usize, String),
    /// Layer `i` has an unknown media type in the OCI manifest (not applicable to
    /// legacy docker archives, whose manifest has no media types).
    UnknownLayerMediaType(usize),
    /// The config blob is not written.
    MissingConfigBlob,
    /// The manifest (docker `manifest.json`, OCI manifest blob) is not valid JSON.
    InvalidManifestJson,
}

/// Digests and sizes of one layer of an [`ImageBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the (compressed) blob.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub tar_size: u64,
    /// The blob's compression.
    pub compression: Compression,
}

#[derive(Debug, Clone)]
struct ImageLayer {
    layer: LayerBuilder,
    compression: Compression,
    created_by: String,
}

/// An image under construction: layers (each with its compression) and the
/// config. Deterministic: the same builder always yields the same digests.
///
/// ```
/// use test_support::{Compression, ImageBuilder, LayerBuilder};
/// let image = ImageBuilder::new()
///     .layer(LayerBuilder::new().file("etc/hello", "hi\n", 0o644), Compression::Gzip)
///     .cmd(&["/bin/sh"]);
/// assert_eq!(image.diff_ids().len(), 1);
/// assert!(image.image_id().starts_with("sha256:"));
/// ```
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<ImageLayer>,
    /// Empty-layer history entries: (number of layers before it, created_by).
    empty_history: Vec<(usize, String)>,
    architecture: String,
    variant: Option<String>,
    os: String,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    pub(crate) corruptions: Vec<Corruption>,
    infos: OnceLock<Vec<LayerInfo>>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            empty_history: Vec::new(),
            architecture: host_arch().to_string(),
            variant: None,
            os: "linux".to_string(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            corruptions: Vec::new(),
            infos: OnceLock::new(),
        }
    }
}

#[derive(Serialize)]
struct ConfigFile<'a> {
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    created: &'a str,
    config: ContainerConfig<'a>,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created: &'static str,
    created_by: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    empty_layer: bool,
}

/// An OCI content descriptor.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// An OCI platform object.
#[derive(Serialize, Clone)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What a writer must put where a layer blob goes.
pub(crate) enum BlobPlan {
    /// Nothing (the blob is missing).
    Skip,
    /// `size` bytes of the real blob (less than the whole when truncated).
    Stream { size: u64 },
    /// These bytes instead of the real blob.
    Replace(Vec<u8>),
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ImageBuilder {
    /// An image without layers for the host architecture and `linux`.
    pub fn new() -> Self {
        Self::default()
    }

    fn changed(mut self) -> Self {
        self.infos = OnceLock::new();
        self
    }

    /// Appends a layer with its blob compression; its history entry reads
    /// `layer <n>` unless set with [`created_by`](Self::created_by).
    pub fn layer(mut self, layer: LayerBuilder, compression: Compression) -> Self {
        let created_by = format!("layer {}", self.layers.len());
        self.layers.push(ImageLayer {
            layer,
            compression,
            created_by,
        });
        self.changed()
    }

    /// Sets the history `created_by` of the last layer.
    ///
    /// # Panics
    /// If there is no layer yet.
    pub fn created_by(mut self, text: &str) -> Self {
        self.layers
            .last_mut()
            .expect("ImageBuilder::created_by needs a layer")
            .created_by = text.to_string();
        self.changed()
    }

    /// Appends a history entry with `empty_layer: true` (like `ENV` or `CMD`
    /// steps), which importers must not count as a layer.
    pub fn empty_history(mut self, created_by: &str) -> Self {
        self.empty_history
            .push((self.layers.len(), created_by.to_string()));
        self.changed()
    }

    /// Sets the architecture (OCI spelling; default [`host_arch`]).
    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.to_string();
        self.changed()
    }

    /// Sets the architecture variant (e.g. `v8`).
    pub fn variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_string());
        self.changed()
    }

    /// Sets the operating system (default `linux`).
    pub fn os(mut self, os: &str) -> Self {
        self.os = os.to_string();
        self.changed()
    }

    /// Sets `config.Entrypoint`.
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(strings(args));
        self.changed()
    }

    /// Sets `config.Cmd`.
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(strings(args));
        self.changed()
    }

    /// Sets `config.Env` (`KEY=value` items).
    pub fn env(mut self, vars: &[&str]) -> Self {
        self.env = strings(vars);
        self.changed()
    }

    /// Sets `config.WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_string());
        self.changed()
    }

    /// Sets `config.User`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self.changed()
    }

    /// Adds a label to `config.Labels`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self.changed()
    }

    /// Adds a defect that the writers apply (see [`Corruption`]).
    pub fn corrupt(mut self, corruption: Corruption) -> Self {
        self.corruptions.push(corruption);
        self
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The layers, lowest first.
    pub fn layers(&self) -> Vec<&LayerBuilder> {
        self.layers.iter().map(|l| &l.layer).collect()
    }

    /// The configured architecture.
    pub fn arch(&self) -> &str {
        &self.architecture
    }

    /// Digests and sizes of every layer (computed once by streaming, then cached).
    ///
    /// # Panics
    /// If a host file of a layer cannot be read (as for every digest accessor).
    pub fn layer_info(&self) -> &[LayerInfo] {
        self.try_layer_info()
            .unwrap_or_else(|e| panic!("computing layer digests: {e}"))
    }

    pub(crate) fn try_layer_info(&self) -> io::Result<&[LayerInfo]> {
        if let Some(infos) = self.infos.get() {
            return Ok(infos);
        }
        let mut infos = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let mut tee = TeeWriter {
                a: HashingWriter::new(io::sink()),
                b: Encoder::new(HashingWriter::new(io::sink()), l.compression)?,
            };
            l.layer.write_tar(&mut tee)?;
            let TeeWriter { a, b } = tee;
            let tar_size = a.written();
            let diff_id = format!("sha256:{}", a.finish_hex());
            let blob = b.finish()?;
            let size = blob.written();
            infos.push(LayerInfo {
                diff_id,
                digest: format!("sha256:{}", blob.finish_hex()),
                size,
                tar_size,
                compression: l.compression,
            });
        }
        let _ = self.infos.set(infos);
        Ok(self.infos.get().expect("just set"))
    }

    /// The DiffIDs (`sha256:<hex>` of each uncompressed layer tar).
    pub fn diff_ids(&self) -> Vec<String> {
        self.layer_info()
            .iter()
            .map(|l| l.diff_id.clone())
            .collect()
    }

    /// The blob digests (`sha256:<hex>` of each compressed layer blob).
    pub fn layer_digests(&self) -> Vec<String> {
        self.layer_info().iter().map(|l| l.digest.clone()).collect()
    }

    /// The ChainIDs: `ChainID(L0) = DiffID(L0)`,
    /// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
    pub fn chain_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for diff_id in self.diff_ids() {
            let next = match out.last() {
                None => diff_id,
                Some(prev) => sha256_digest(format!("{prev} {diff_id}").as_bytes()),
            };
            out.push(next);
        }
        out
    }

    /// The config JSON bytes (intact, without corruptions).
    pub fn config_json(&self) -> Vec<u8> {
        self.config_with(&self.diff_ids())
    }

    /// The image ID: `sha256:<hex>` of [`config_json`](Self::config_json).
    pub fn image_id(&self) -> String {
        sha256_digest(&self.config_json())
    }

    /// The OCI manifest JSON bytes (intact, without corruptions).
    pub fn manifest_json(&self) -> Vec<u8> {
        self.oci_manifest(&self.config_json(), &[])
    }

    /// The digest of [`manifest_json`](Self::manifest_json).
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest_json())
    }

    /// The tree a correct importer must produce from all layers.
    ///
    /// # Panics
    /// See [`expected_tree_of_layers`].
    pub fn expected_tree(&self) -> Tree {
        self.expected_tree_upto(self.layers.len())
    }

    /// The tree of the lowest `n` layers.
    pub fn expected_tree_upto(&self, n: usize) -> Tree {
        expected_tree_of_layers(&self.layers()[..n])
    }

    fn config_with(&self, diff_ids: &[String]) -> Vec<u8> {
        let mut history = Vec::new();
        for i in 0..=self.layers.len() {
            for (_, text) in self.empty_history.iter().filter(|(pos, _)| *pos == i) {
                history.push(History {
                    created: CREATED,
                    created_by: text.clone(),
                    empty_layer: true,
                });
            }
            if let Some(l) = self.layers.get(i) {
                history.push(History {
                    created: CREATED,
                    created_by: l.created_by.clone(),
                    empty_layer: false,
                });
            }
        }
        let config = ConfigFile {
            architecture: &self.architecture,
            variant: self.variant.as_deref(),
            os: &self.os,
            created: CREATED,
            config: ContainerConfig {
                user: self.user.as_deref(),
                env: &self.env,
                entrypoint: self.entrypoint.as_deref(),
                cmd: self.cmd.as_deref(),
                working_dir: self.working_dir.as_deref(),
                labels: &self.labels,
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: diff_ids.to_vec(),
            },
            history,
        };
        serde_json::to_vec(&config).expect("serialising plain data cannot fail")
    }

    /// The platform object for an index entry.
    pub(crate) fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }

    pub(crate) fn has(&self, c: &Corruption) -> bool {
        self.corruptions.contains(c)
    }

    /// The config bytes the writers store (with [`Corruption::WrongDiffId`]).
    pub(crate) fn written_config(&self) -> Vec<u8> {
        let mut diff_ids = self.diff_ids();
        for c in &self.corruptions {
            if let Corruption::WrongDiffId(i) = c {
                let slot = &mut diff_ids[*i];
                *slot = sha256_digest(format!("not {slot}").as_bytes());
            }
        }
        self.config_with(&diff_ids)
    }

    /// How layer `i` is referenced by the manifest (default `default`).
    pub(crate) fn layer_reference(&self, i: usize, default: String) -> String {
        self.corruptions
            .iter()
            .find_map(|c| match c {
                Corruption::LayerReference(j, s) if *j == i => Some(s.clone()),
                _ => None,
            })
            .unwrap_or(default)
    }

    /// The OCI manifest for `config` with the manifest-level corruptions applied
    /// when `corruptions` holds them.
    fn oci_manifest(&self, config: &[u8], corruptions: &[Corruption]) -> Vec<u8> {
        let infos = self.layer_info();
        let layers = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                let mut digest = info.digest.clone();
                if let Some(s) = corruptions.iter().find_map(|c| match c {
                    Corruption::LayerReference(j, s) if *j == i => Some(s.clone()),
                    _ => None,
                }) {
                    digest = s;
                }
                let unknown = corruptions.contains(&Corruption::UnknownLayerMediaType(i));
                Descriptor {
                    media_type: if unknown {
                        MEDIA_TYPE_UNKNOWN.to_string()
                    } else {
                        info.compression.oci_layer_media_type().to_string()
                    },
                    digest,
                    size: info.size,
                    platform: None,
                    annotations: BTreeMap::new(),
                }
            })
            .collect();
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST,
            config: Descriptor {
                media_type: MEDIA_TYPE_CONFIG.to_string(),
                digest: sha256_digest(config),
                size: config.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).expect("serialising plain data cannot fail");
        if corruptions.contains(&Corruption::InvalidManifestJson) {
            bytes[..bytes.len() / 2].to_vec()
        } else {
            bytes
        }
    }

    /// The OCI manifest bytes the writers store (all corruptions applied).
    pub(crate) fn written_oci_manifest(&self) -> Vec<u8> {
        self.oci_manifest(&self.written_config(), &self.corruptions)
    }

    /// What to store for layer `i`'s blob (`uncompressed`: the plain tar, as in
    /// legacy docker archives).
    pub(crate) fn blob_plan(&self, i: usize, uncompressed: bool) -> io::Result<BlobPlan> {
        let info = &self.try_layer_info()?[i];
        let full = if uncompressed {
            info.tar_size
        } else {
            info.size
        };
        Ok(if self.has(&Corruption::MissingLayerBlob(i)) {
            BlobPlan::Skip
        } else if self.has(&Corruption::SwappedLayerBlob(i)) {
            let c = if uncompressed {
                Compression::None
            } else {
                info.compression
            };
            BlobPlan::Replace(LayerBuilder::new().to_blob(c))
        } else if self.has(&Corruption::TruncatedLayerBlob(i)) {
            BlobPlan::Stream { size: full / 2 }
        } else {
            BlobPlan::Stream { size: full }
        })
    }

    /// Streams the first `size` bytes of layer `i`'s blob into `w`.
    pub(crate) fn write_layer_blob(
        &self,
        i: usize,
        uncompressed: bool,
        size: u64,
        w: &mut dyn Write,
    ) -> io::Result<()> {
        let l = &self.layers[i];
        let c = if uncompressed {
            Compression::None
        } else {
            l.compression
        };
        l.layer.write_blob(LimitWriter::new(w, size), c)
    }
}

/// Writes layer `i` of `image` to `out` at `path` following its [`BlobPlan`].
pub(crate) fn put_layer_blob(
    out: &mut dyn crate::output::Output,
    image: &ImageBuilder,
    i: usize,
    uncompressed: bool,
    path: &str,
) -> io::Result<()> {
    match image.blob_plan(i, uncompressed)? {
        BlobPlan::Skip => Ok(()),
        BlobPlan::Replace(bytes) => out.bytes(path, &bytes),
        BlobPlan::Stream { size } => out.file(path, size, &mut |w| {
            image.write_layer_blob(i, uncompressed, size, w)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;

    fn two_layers() -> ImageBuilder {
        ImageBuilder::new()
            .layer(LayerBuilder::new().file("a", "1", 0o644), Compression::Gzip)
            .created_by("ADD a")
            .empty_history("ENV X=1")
            .layer(LayerBuilder::new().file("b", "2", 0o644), Compression::Zstd)
            .env(&["PATH=/bin"])
            .cmd(&["/bin/sh"])
            .label("k", "v")
    }

    #[test]
    fn digests_follow_the_spec() {
        let img = two_layers();
        let tars: Vec<Vec<u8>> = img.layers().iter().map(|l| l.to_tar()).collect();
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256_digest(t)).collect();
        assert_eq!(img.diff_ids(), diff_ids);
        assert_eq!(
            img.layer_digests()[0],
            sha256_digest(&img.layers()[0].to_blob(Compression::Gzip))
        );
        assert_eq!(img.layer_info()[1].tar_size, tars[1].len() as u64);
        let chain = img.chain_ids();
        assert_eq!(chain[0], diff_ids[0]);
        assert_eq!(
            chain[1],
            format!(
                "sha256:{}",
                sha256_hex(format!("{} {}", diff_ids[0], diff_ids[1]).as_bytes())
            )
        );
        assert_eq!(img.image_id(), sha256_digest(&img.config_json()));
    }

    #[test]
    fn config_json_has_the_oci_fields() {
        let img = two_layers();
        let v: serde_json::Value = serde_json::from_slice(&img.config_json()).unwrap();
        assert_eq!(v["architecture"], host_arch());
        assert_eq!(v["os"], "linux");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(v["config"]["Env"][0], "PATH=/bin");
        assert_eq!(v["config"]["Cmd"][0], "/bin/sh");
        assert_eq!(v["config"]["Labels"]["k"], "v");
        let history = v["history"].as_array().unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[0]["created_by"], "ADD a");
        assert_eq!(history[1]["empty_layer"], true);
        assert_eq!(history[2].get("empty_layer"), None);
    }

    #[test]
    fn corruptions_leave_the_accessors_intact() {
        let img = two_layers().corrupt(Corruption::WrongDiffId(1));
        let written: serde_json::Value = serde_json::from_slice(&img.written_config()).unwrap();
        assert_ne!(written["rootfs"]["diff_ids"][1], img.diff_ids()[1]);
        assert_eq!(written["rootfs"]["diff_ids"][0], img.diff_ids()[0]);
        assert_eq!(img.image_id(), two_layers().image_id());
    }

    #[test]
    fn builder_changes_invalidate_cached_digests() {
        let img = two_layers();
        let before = img.diff_ids();
        let img = img.layer(LayerBuilder::new().dir("x", 0o755), Compression::None);
        assert_eq!(img.diff_ids().len(), 3);
        assert_eq!(&img.diff_ids()[..2], &before[..]);
    }

    #[test]
    fn host_arch_uses_oci_names() {
        assert!(!host_arch().contains("x86_64") && !host_arch().contains("aarch64"));
    }
}
