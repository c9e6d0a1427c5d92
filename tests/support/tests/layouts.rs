//! The written docker archives and OCI layouts parse, and their digests,
//! sizes and media types are right.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use test_support::{
    fixtures, host_arch, sha256_digest, Compression, Corruption, DockerArchiveForm, ImageBuilder,
    LayerBuilder, OciLayoutBuilder, ANNOTATION_REF_NAME, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST, MEDIA_TYPE_UNKNOWN,
};

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = zstd::decode_all(blob).unwrap();
    } else {
        out = blob.to_vec();
    }
    out
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Reads a verified blob (digest and size match) as bytes.
fn verified_blob(root: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().unwrap();
    let bytes = fs::read(blob(root, digest)).unwrap();
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "blob content matches its name"
    );
    assert_eq!(
        desc["size"].as_u64().unwrap(),
        bytes.len() as u64,
        "descriptor size"
    );
    bytes
}

/// Checks one OCI manifest of `image` in `root` end to end.
fn check_manifest(root: &Path, desc: &Value, image: &ImageBuilder) {
    assert_eq!(desc["mediaType"], MEDIA_TYPE_MANIFEST);
    let manifest: Value = serde_json::from_slice(&verified_blob(root, desc)).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
    let config_bytes = verified_blob(root, &manifest["config"]);
    assert_eq!(config_bytes, image.config_json());
    assert_eq!(sha256_digest(&config_bytes), image.image_id());
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.layer_count());
    for (i, (layer, info)) in layers.iter().zip(image.layer_info()).enumerate() {
        assert_eq!(
            layer["mediaType"],
            info.compression.oci_layer_media_type(),
            "layer {i}"
        );
        let bytes = verified_blob(root, layer);
        assert_eq!(
            sha256_digest(&decompress(&bytes)),
            config["rootfs"]["diff_ids"][i],
            "layer {i}"
        );
        assert_eq!(layer["digest"], info.digest);
    }
}

fn untar(tar_path: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    tar::Archive::new(fs::File::open(tar_path).unwrap())
        .unpack(into)
        .unwrap();
}

#[test]
fn oci_layout_dir_and_tar_agree_and_verify() {
    let image = fixtures::rich_image();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    image.write_oci_layout_dir(&dir, Some("v1")).unwrap();
    let tar_path = tmp.path().join("layout.tar");
    image.write_oci_layout_tar(&tar_path, Some("v1")).unwrap();
    let from_tar = tmp.path().join("from-tar");
    untar(&tar_path, &from_tar);

    for root in [&dir, &from_tar] {
        assert_eq!(
            json(&root.join("oci-layout")),
            serde_json::json!({"imageLayoutVersion": "1.0.0"})
        );
        let index = json(&root.join("index.json"));
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], MEDIA_TYPE_INDEX);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        assert_eq!(manifests[0]["annotations"][ANNOTATION_REF_NAME], "v1");
        assert_eq!(manifests[0]["digest"], image.manifest_digest());
        check_manifest(root, &manifests[0], &image);
        // Exactly the referenced blobs: the (distinct) layers, a config, a manifest.
        let blobs = fs::read_dir(root.join("blobs/sha256")).unwrap().count();
        assert_eq!(blobs, image.layer_count() + 2);
    }
    // Writing again gives identical bytes.
    let again = tmp.path().join("again.tar");
    image.write_oci_layout_tar(&again, Some("v1")).unwrap();
    assert_eq!(fs::read(&tar_path).unwrap(), fs::read(&again).unwrap());
}

#[test]
fn docker_archive_legacy_form() {
    let image = fixtures::rich_image();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("legacy.tar");
    image
        .write_docker_archive(
            &path,
            &["rich:latest", "example.com:5000/rich:v2"],
            DockerArchiveForm::Legacy,
        )
        .unwrap();
    let root = tmp.path().join("x");
    untar(&path, &root);
    let manifest = json(&root.join("manifest.json"));
    let item = &manifest.as_array().unwrap()[0];
    assert_eq!(
        item["RepoTags"],
        serde_json::json!(["rich:latest", "example.com:5000/rich:v2"])
    );
    let config_name = item["Config"].as_str().unwrap();
    assert_eq!(config_name, format!("{}.json", &image.image_id()[7..]));
    assert_eq!(
        fs::read(root.join(config_name)).unwrap(),
        image.config_json()
    );
    let layers = item["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.layer_count());
    for (i, layer) in layers.iter().enumerate() {
        let layer = layer.as_str().unwrap();
        assert!(layer.ends_with("/layer.tar"));
        let bytes = fs::read(root.join(layer)).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            image.diff_ids()[i],
            "legacy layers are plain tars"
        );
        let id = layer.trim_end_matches("/layer.tar");
        assert_eq!(
            fs::read_to_string(root.join(id).join("VERSION")).unwrap(),
            "1.0"
        );
        let v1 = json(&root.join(id).join("json"));
        assert_eq!(v1["id"], id);
        if i > 0 {
            assert_eq!(
                v1["parent"],
                layers[i - 1]
                    .as_str()
                    .unwrap()
                    .trim_end_matches("/layer.tar")
            );
        }
    }
    let repos = json(&root.join("repositories"));
    let top = layers
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .trim_end_matches("/layer.tar");
    assert_eq!(repos["rich"]["latest"], top);
    assert_eq!(repos["example.com:5000/rich"]["v2"], top);
}

#[test]
fn docker_archive_blobs_form() {
    let image = fixtures::small_image();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("blobs.tar");
    image
        .write_docker_archive(&path, &["small:1"], DockerArchiveForm::Blobs)
        .unwrap();
    let root = tmp.path().join("x");
    untar(&path, &root);
    let item = json(&root.join("manifest.json"))[0].clone();
    assert_eq!(
        item["Config"],
        format!("blobs/sha256/{}", &image.image_id()[7..])
    );
    for (i, layer) in item["Layers"].as_array().unwrap().iter().enumerate() {
        let rel = layer.as_str().unwrap();
        let bytes = fs::read(root.join(rel)).unwrap();
        assert_eq!(
            format!("sha256:{}", rel.trim_start_matches("blobs/sha256/")),
            sha256_digest(&bytes)
        );
        assert_eq!(sha256_digest(&decompress(&bytes)), image.diff_ids()[i]);
    }
    // The first layer is gzip: the blob is carried as is.
    assert_eq!(image.layer_info()[0].compression, Compression::Gzip);
    let index = json(&root.join("index.json"));
    let desc = &index["manifests"][0];
    assert_eq!(desc["annotations"][ANNOTATION_REF_NAME], "1");
    assert_eq!(desc["annotations"]["io.containerd.image.name"], "small:1");
    check_manifest(&root, desc, &image);
    assert!(root.join("oci-layout").is_file());
    assert_eq!(
        json(&root.join("repositories"))["small"]["1"],
        &image.image_id()[7..]
    );
}

#[test]
fn multi_platform_and_multi_image_layouts() {
    let amd = fixtures::arch_image("amd64");
    let arm = fixtures::arch_image("arm64");
    let small = fixtures::small_image();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    OciLayoutBuilder::new()
        .multi_platform(&[&amd, &arm], Some("multi"))
        .image(&small, Some("small"))
        .image(&amd, None)
        .write_dir(&dir)
        .unwrap();
    let index = json(&dir.join("index.json"));
    let top = index["manifests"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["mediaType"], MEDIA_TYPE_INDEX);
    assert_eq!(top[0]["annotations"][ANNOTATION_REF_NAME], "multi");
    let nested: Value = serde_json::from_slice(&verified_blob(&dir, &top[0])).unwrap();
    assert_eq!(nested["mediaType"], MEDIA_TYPE_INDEX);
    let platforms = nested["manifests"].as_array().unwrap();
    assert_eq!(
        platforms[0]["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );
    assert_eq!(
        platforms[1]["platform"],
        serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
    );
    check_manifest(&dir, &platforms[0], &amd);
    check_manifest(&dir, &platforms[1], &arm);
    assert_ne!(amd.image_id(), arm.image_id());
    assert_eq!(top[1]["annotations"][ANNOTATION_REF_NAME], "small");
    check_manifest(&dir, &top[1], &small);
    assert!(top[2].get("annotations").is_none());
    assert_eq!(top[2]["digest"], platforms[0]["digest"]);
    // Shared blobs are stored once: the amd64 image appears twice.
    let blobs = fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
    let expected = 1 + 3 * 2 /* amd, arm: layer, config, manifest */ + (small.layer_count() + 2);
    assert_eq!(blobs, expected);
    // The host's architecture is one of the listed ones on the usual machines.
    if ["amd64", "arm64"].contains(&host_arch()) {
        assert!(platforms
            .iter()
            .any(|p| p["platform"]["architecture"] == host_arch()));
    }
}

fn small_with(c: Corruption) -> ImageBuilder {
    fixtures::small_image().corrupt(c)
}

#[test]
fn corruptions_in_oci_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let intact = fixtures::small_image();
    let write = |name: &str, image: &ImageBuilder| {
        let dir = tmp.path().join(name);
        image.write_oci_layout_dir(&dir, None).unwrap();
        let index = json(&dir.join("index.json"));
        let desc = index["manifests"][0].clone();
        (dir, desc)
    };
    let manifest_of = |dir: &Path, desc: &Value| -> Value {
        serde_json::from_slice(&verified_blob(dir, desc)).unwrap()
    };

    let (dir, desc) = write("wrong-diff", &small_with(Corruption::WrongDiffId(1)));
    let m = manifest_of(&dir, &desc);
    let config: Value = serde_json::from_slice(&verified_blob(&dir, &m["config"])).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], intact.diff_ids()[0]);
    assert_ne!(config["rootfs"]["diff_ids"][1], intact.diff_ids()[1]);
    let layer1 = verified_blob(&dir, &m["layers"][1]);
    assert_eq!(sha256_digest(&decompress(&layer1)), intact.diff_ids()[1]);

    let (dir, desc) = write("missing", &small_with(Corruption::MissingLayerBlob(0)));
    let m = manifest_of(&dir, &desc);
    assert!(!blob(&dir, m["layers"][0]["digest"].as_str().unwrap()).exists());
    verified_blob(&dir, &m["layers"][1]);

    let (dir, desc) = write("truncated", &small_with(Corruption::TruncatedLayerBlob(0)));
    let m = manifest_of(&dir, &desc);
    let digest = m["layers"][0]["digest"].as_str().unwrap();
    let bytes = fs::read(blob(&dir, digest)).unwrap();
    assert_eq!(bytes.len() as u64, intact.layer_info()[0].size / 2);
    assert_ne!(sha256_digest(&bytes), digest);

    let (dir, desc) = write("swapped", &small_with(Corruption::SwappedLayerBlob(0)));
    let m = manifest_of(&dir, &desc);
    let digest = m["layers"][0]["digest"].as_str().unwrap();
    let bytes = fs::read(blob(&dir, digest)).unwrap();
    assert_ne!(sha256_digest(&bytes), digest);
    let tar = decompress(&bytes);
    assert_eq!(
        tar::Archive::new(&tar[..]).entries().unwrap().count(),
        0,
        "a valid, empty layer"
    );

    let evil = "sha256:../../etc/passwd";
    let (dir, desc) = write(
        "reference",
        &small_with(Corruption::LayerReference(1, evil.into())),
    );
    assert_eq!(manifest_of(&dir, &desc)["layers"][1]["digest"], evil);

    let (dir, desc) = write("media", &small_with(Corruption::UnknownLayerMediaType(0)));
    assert_eq!(
        manifest_of(&dir, &desc)["layers"][0]["mediaType"],
        MEDIA_TYPE_UNKNOWN
    );

    let (dir, desc) = write("no-config", &small_with(Corruption::MissingConfigBlob));
    let m = manifest_of(&dir, &desc);
    assert!(!blob(&dir, m["config"]["digest"].as_str().unwrap()).exists());

    let (dir, desc) = write("bad-json", &small_with(Corruption::InvalidManifestJson));
    let bytes = verified_blob(&dir, &desc);
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
}

#[test]
fn corruptions_in_docker_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let intact = fixtures::small_image();
    let write = |name: &str, image: &ImageBuilder, form| {
        let path = tmp.path().join(format!("{name}.tar"));
        image.write_docker_archive(&path, &["x:y"], form).unwrap();
        let root = tmp.path().join(name);
        untar(&path, &root);
        root
    };
    let root = write(
        "evil",
        &small_with(Corruption::LayerReference(0, "../../etc/passwd".into())),
        DockerArchiveForm::Legacy,
    );
    assert_eq!(
        json(&root.join("manifest.json"))[0]["Layers"][0],
        "../../etc/passwd"
    );

    let root = write(
        "missing",
        &small_with(Corruption::MissingLayerBlob(1)),
        DockerArchiveForm::Legacy,
    );
    let layer = json(&root.join("manifest.json"))[0]["Layers"][1]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!root.join(&layer).exists());

    let root = write(
        "trunc",
        &small_with(Corruption::TruncatedLayerBlob(0)),
        DockerArchiveForm::Legacy,
    );
    let layer = json(&root.join("manifest.json"))[0]["Layers"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        fs::metadata(root.join(&layer)).unwrap().len(),
        intact.layer_info()[0].tar_size / 2
    );

    let root = write(
        "wrong",
        &small_with(Corruption::WrongDiffId(0)),
        DockerArchiveForm::Blobs,
    );
    let item = json(&root.join("manifest.json"))[0].clone();
    let config_path = item["Config"].as_str().unwrap();
    let config = json(&root.join(config_path));
    assert_ne!(config["rootfs"]["diff_ids"][0], intact.diff_ids()[0]);
    assert_eq!(
        format!("sha256:{}", config_path.trim_start_matches("blobs/sha256/")),
        sha256_digest(&fs::read(root.join(config_path)).unwrap()),
        "the config stays consistent with its name"
    );

    let root = write(
        "nocfg",
        &small_with(Corruption::MissingConfigBlob),
        DockerArchiveForm::Legacy,
    );
    let config_path = json(&root.join("manifest.json"))[0]["Config"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!root.join(config_path).exists());

    let root = write(
        "badjson",
        &small_with(Corruption::InvalidManifestJson),
        DockerArchiveForm::Blobs,
    );
    assert!(
        serde_json::from_slice::<Value>(&fs::read(root.join("manifest.json")).unwrap()).is_err()
    );

    let err = small_with(Corruption::UnknownLayerMediaType(0)).write_docker_archive(
        tmp.path().join("n/a.tar"),
        &[],
        DockerArchiveForm::Legacy,
    );
    assert!(err.is_err());
}

#[test]
fn archives_stream_into_any_writer() {
    let image = ImageBuilder::new().layer(
        LayerBuilder::new().generated_file("big", 2 << 20, 7, 0o644),
        Compression::Zstd,
    );
    let bytes = image
        .write_docker_archive_to(Vec::new(), &[], DockerArchiveForm::Blobs)
        .unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"manifest.json".to_string()));
    assert!(names.contains(&format!("blobs/sha256/{}", &image.layer_digests()[0][7..])));
    assert!(
        !names.contains(&"repositories".to_string()),
        "no tags, no repositories file"
    );
    let oci = image.write_oci_layout_tar_to(Vec::new(), None).unwrap();
    assert!(oci.len() < bytes.len() + 4096);
}
