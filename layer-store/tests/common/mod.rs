//! Test fixtures: layer tars, image configs, docker archives and OCI layouts
//! built in memory with the `tar` crate, and store snapshots.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// An uncompressed layer tar holding `files` (paths ending in `/` are directories).
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, path, &[][..]).unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, *data).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).unwrap()
}

/// Pseudo-random bytes (deterministic per seed), incompressible enough for size tests.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// One layer: its uncompressed tar and the blob as shipped.
#[derive(Clone, Debug)]
pub struct TestLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub comp: Comp,
}

impl TestLayer {
    pub fn new(files: &[(&str, &[u8])], comp: Comp) -> TestLayer {
        TestLayer::from_tar(layer_tar(files), comp)
    }

    pub fn from_tar(tar: Vec<u8>, comp: Comp) -> TestLayer {
        let blob = match comp {
            Comp::None => tar.clone(),
            Comp::Gzip => gzip(&tar),
            Comp::Zstd => zstd(&tar),
        };
        TestLayer { tar, blob, comp }
    }

    pub fn diff_id(&self) -> String {
        digest(&self.tar)
    }

    pub fn blob_digest(&self) -> String {
        digest(&self.blob)
    }

    pub fn media_type(&self) -> &'static str {
        match self.comp {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// An image: layers, a config listing their diff IDs, and tags.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub config: Vec<u8>,
    pub tags: Vec<String>,
    pub arch: String,
}

impl TestImage {
    pub fn new(layers: Vec<TestLayer>, tags: &[&str]) -> TestImage {
        TestImage::for_arch(layers, tags, layer_store::host_architecture(), "")
    }

    /// `salt` goes into the config's `author`, giving different IDs for the same layers.
    pub fn for_arch(layers: Vec<TestLayer>, tags: &[&str], arch: &str, salt: &str) -> TestImage {
        let diff_ids: Vec<String> = layers.iter().map(TestLayer::diff_id).collect();
        let history: Vec<Value> = (0..layers.len())
            .flat_map(|i| {
                [
                    json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("RUN step {i}")}),
                    json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("ENV X={i}"), "empty_layer": true}),
                ]
            })
            .collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "author": salt,
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/", "Labels": {"fixture": "yes"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        TestImage {
            layers,
            config: serde_json::to_vec_pretty(&config).unwrap(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            arch: arch.to_string(),
        }
    }

    pub fn id(&self) -> String {
        digest(&self.config)
    }

    pub fn chain_ids(&self) -> Vec<String> {
        let mut chain: Vec<String> = Vec::new();
        for layer in &self.layers {
            let next = match chain.last() {
                None => layer.diff_id(),
                Some(parent) => digest(format!("{parent} {}", layer.diff_id()).as_bytes()),
            };
            chain.push(next);
        }
        chain
    }
}

/// A member of a test archive.
#[derive(Clone, Debug)]
pub enum Entry {
    File(String, Vec<u8>),
    Symlink(String, String),
}

pub fn file(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Entry {
    Entry::File(path.into(), data.into())
}

pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_mode(0o644);
        match entry {
            Entry::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..]).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

pub fn write_tar(path: &Path, entries: &[Entry]) -> PathBuf {
    fs::write(path, tar_bytes(entries)).unwrap();
    path.to_path_buf()
}

pub fn write_dir(dir: &Path, entries: &[Entry]) -> PathBuf {
    for entry in entries {
        match entry {
            Entry::File(path, data) => {
                let target = dir.join(path);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                fs::write(target, data).unwrap();
            }
            Entry::Symlink(path, link) => {
                let target = dir.join(path);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(link, target).unwrap();
            }
        }
    }
    dir.to_path_buf()
}

/// A legacy `docker save` archive: `<v1id>/layer.tar`, `<config-hex>.json`,
/// `manifest.json`, `repositories`. Identical layers after the first are
/// written as symlinks to the first copy, as Docker does.
pub fn docker_legacy(images: &[TestImage]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut first_copy: BTreeMap<String, String> = BTreeMap::new();
    let mut manifest = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let mut layer_paths = Vec::new();
        for (j, layer) in image.layers.iter().enumerate() {
            let v1 = sha256_hex(format!("v1 {i} {j} {}", image.id()).as_bytes());
            let path = format!("{v1}/layer.tar");
            entries.push(file(format!("{v1}/VERSION"), "1.0"));
            entries.push(file(format!("{v1}/json"), format!("{{\"id\":\"{v1}\"}}")));
            match first_copy.get(&layer.blob_digest()) {
                Some(first) => entries.push(Entry::Symlink(path.clone(), format!("../{first}"))),
                None => {
                    first_copy.insert(layer.blob_digest(), path.clone());
                    entries.push(file(path.clone(), layer.blob.clone()));
                }
            }
            layer_paths.push(path);
        }
        let config_path = format!("{}.json", sha256_hex(&image.config));
        entries.push(file(config_path.clone(), image.config.clone()));
        manifest
            .push(json!({"Config": config_path, "RepoTags": image.tags, "Layers": layer_paths}));
    }
    entries.push(file(
        "manifest.json",
        serde_json::to_vec(&manifest).unwrap(),
    ));
    entries.push(file("repositories", "{}"));
    entries
}

/// The newer `docker save` form: `blobs/sha256/<hex>` paths in manifest.json
/// (plus `oci-layout` and `index.json` as Docker 25 writes them).
pub fn docker_blobs(images: &[TestImage]) -> Vec<Entry> {
    let mut layout = OciLayout::default();
    let mut manifest = Vec::new();
    for image in images {
        let descriptor = layout.image_manifest(image, false);
        let tag = image
            .tags
            .first()
            .map(|t| t.rsplit_once(':').map_or("latest", |(_, tag)| tag));
        let mut annotated = descriptor.clone();
        if let Some(tag) = tag {
            annotated["annotations"] = json!({"io.containerd.image.name": image.tags[0], "org.opencontainers.image.ref.name": tag});
        }
        layout.index.push(annotated);
        manifest.push(json!({
            "Config": format!("blobs/sha256/{}", sha256_hex(&image.config)),
            "RepoTags": image.tags,
            "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", sha256_hex(&l.blob))).collect::<Vec<_>>(),
        }));
    }
    let mut entries = layout.entries();
    entries.push(file(
        "manifest.json",
        serde_json::to_vec(&manifest).unwrap(),
    ));
    entries
}

/// An OCI image layout under construction.
#[derive(Default, Clone)]
pub struct OciLayout {
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// Top-level `index.json` entries.
    pub index: Vec<Value>,
}

impl OciLayout {
    pub fn add_blob(&mut self, bytes: &[u8], media_type: &str) -> Value {
        self.blobs.insert(sha256_hex(bytes), bytes.to_vec());
        json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
    }

    /// Adds an image's config, layers and manifest; returns the manifest descriptor
    /// (with the image's platform). `docker` selects Docker v2 media types.
    pub fn image_manifest(&mut self, image: &TestImage, docker: bool) -> Value {
        let config = self.add_blob(
            &image.config,
            if docker { DOCKER_CONFIG } else { OCI_CONFIG },
        );
        let layers: Vec<Value> = image
            .layers
            .iter()
            .map(|layer| {
                let media_type = if docker && layer.comp == Comp::Gzip {
                    DOCKER_LAYER_GZIP
                } else {
                    layer.media_type()
                };
                self.add_blob(&layer.blob, media_type)
            })
            .collect();
        let media_type = if docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let manifest = json!({"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers});
        let mut descriptor = self.add_blob(&serde_json::to_vec(&manifest).unwrap(), media_type);
        descriptor["platform"] = json!({"architecture": image.arch, "os": "linux"});
        descriptor
    }

    /// Adds an index blob listing `manifests`; returns its descriptor.
    pub fn nested_index(&mut self, manifests: Vec<Value>, docker: bool) -> Value {
        let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
        let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
        self.add_blob(&serde_json::to_vec(&index).unwrap(), media_type)
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut entries = vec![file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#)];
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index});
        entries.push(file("index.json", serde_json::to_vec(&index).unwrap()));
        for (hex, bytes) in &self.blobs {
            entries.push(file(format!("blobs/sha256/{hex}"), bytes.clone()));
        }
        entries
    }
}

/// Annotates a descriptor with an OCI ref name.
pub fn with_ref_name(mut descriptor: Value, name: &str) -> Value {
    descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    descriptor
}

/// An architecture that is not the host's.
pub fn other_arch() -> &'static str {
    if layer_store::host_architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// Every file under `root` except staging space and the lock file, with a hash of its content.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "tmp" || rel == "store.lock" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &path, out);
            } else {
                out.insert(rel, sha256_hex(&fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Files in `dir` (not recursive); empty if it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Checks the store's invariants: every blob's content matches its name,
/// every layer record's blob and parent exist, every image's config, manifest
/// and layers exist, every tag names an existing image, and tmp/ has no
/// staging directory of a dead process.
pub fn check_store_consistent(root: &Path) {
    let blobs = root.join("blobs/sha256");
    for name in files_in(&blobs) {
        assert_eq!(
            sha256_hex(&fs::read(blobs.join(&name)).unwrap()),
            name,
            "blob {name} is corrupt"
        );
    }
    let read_json =
        |path: PathBuf| -> Value { serde_json::from_slice(&fs::read(&path).unwrap()).unwrap() };
    let hex_of = |digest: &Value| {
        digest
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string()
    };
    for name in files_in(&root.join("layers")) {
        let layer = read_json(root.join("layers").join(&name));
        assert!(
            blobs.join(hex_of(&layer["blob"])).is_file(),
            "layer {name} lacks its blob"
        );
        if !layer["parent"].is_null() {
            assert!(root
                .join("layers")
                .join(format!("{}.json", hex_of(&layer["parent"])))
                .is_file());
        }
    }
    for name in files_in(&root.join("images")) {
        let image = read_json(root.join("images").join(&name));
        assert!(blobs.join(hex_of(&image["config_digest"])).is_file());
        if !image["manifest_digest"].is_null() {
            assert!(blobs.join(hex_of(&image["manifest_digest"])).is_file());
        }
        for chain in image["chain_ids"].as_array().unwrap() {
            assert!(
                root.join("layers")
                    .join(format!("{}.json", hex_of(chain)))
                    .is_file(),
                "image {name} lacks a layer"
            );
        }
    }
    if root.join("repositories.json").exists() {
        let tags = read_json(root.join("repositories.json"));
        for (tag, id) in tags["tags"].as_object().unwrap() {
            assert!(
                root.join("images")
                    .join(format!("{}.json", hex_of(id)))
                    .is_file(),
                "tag {tag} dangles"
            );
        }
    }
}

/// Reads a whole stream.
pub fn read_all(mut reader: impl std::io::Read) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}
