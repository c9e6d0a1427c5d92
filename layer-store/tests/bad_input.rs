//! Bad input is refused with an error naming the problem, and leaves the store as it was.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use layer_store::{Store, StoreError};
use serde_json::json;

/// A store that already holds one image, so "unchanged" is not just "empty".
fn seeded_store(dir: &Path) -> Store {
    let store = Store::open(dir.join("store")).unwrap();
    let seed = TestImage::new(
        vec![TestLayer::new(&[("seed", b"seed")], Comp::Gzip)],
        &["seed:1"],
    );
    let archive = write_tar(&dir.join("seed.tar"), &docker_legacy(&[seed]));
    store.import(&archive, None).unwrap();
    store
}

/// Imports `input`, expects an error accepted by `check` whose message
/// contains every string in `phrases`, and checks the store is unchanged.
fn assert_refused(
    input: &Path,
    name: Option<&str>,
    check: fn(&StoreError) -> bool,
    phrases: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded_store(dir.path());
    let before = snapshot(store.root());
    let err = store.import(input, name).expect_err("import must fail");
    let message = err.to_string();
    eprintln!("refused {}: {message}", input.display());
    assert!(check(&err), "unexpected error kind: {message}");
    for phrase in phrases {
        assert!(
            message.contains(phrase),
            "{message:?} does not mention {phrase:?}"
        );
    }
    assert_eq!(
        snapshot(store.root()),
        before,
        "store changed by a failed import ({message})"
    );
    assert!(
        files_in(&store.root().join("tmp")).is_empty(),
        "staging left behind"
    );
    drop(store);
    // A fresh handle sees the same store.
    let reopened = Store::open(dir.path().join("store")).unwrap();
    assert_eq!(reopened.images().unwrap().len(), 1);
    check_store_consistent(reopened.root());
    message
}

fn sample_image() -> TestImage {
    TestImage::new(
        vec![
            TestLayer::new(&[("a/", b""), ("a/file", &noise(7, 40_000))], Comp::Gzip),
            TestLayer::new(&[("b", b"second layer")], Comp::None),
        ],
        &["sample:1"],
    )
}

fn oci_layout_of(image: &TestImage) -> OciLayout {
    let mut layout = OciLayout::default();
    let descriptor = layout.image_manifest(image, false);
    layout.index.push(descriptor);
    layout
}

/// Rewrites the manifest of a one-image layout with `edit`, fixing up index.json.
fn edit_manifest(layout: &mut OciLayout, edit: impl FnOnce(&mut serde_json::Value)) {
    let old = layout.index[0].clone();
    let old_hex = old["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&layout.blobs.remove(&old_hex).unwrap()).unwrap();
    edit(&mut manifest);
    let mut descriptor = layout.add_blob(&serde_json::to_vec(&manifest).unwrap(), OCI_MANIFEST);
    descriptor["platform"] = old["platform"].clone();
    layout.index[0] = descriptor;
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tar_bytes(&docker_blobs(&[sample_image()]));
    // Cut inside the data of the first (large) layer member.
    let cut = write(dir.path(), "cut.tar", &archive[..20_000]);
    assert_refused(
        &cut,
        None,
        |e| {
            matches!(
                e,
                StoreError::Corrupt { .. } | StoreError::MissingFile { .. }
            )
        },
        &["cut.tar"],
    );
    // Cut at a header boundary: members after it (manifest.json) are missing.
    let headers_only = write(dir.path(), "short.tar", &archive[..512]);
    assert_refused(
        &headers_only,
        None,
        |e| matches!(e, StoreError::Corrupt { .. }),
        &["truncated"],
    );
    // A compressed archive cut short.
    let gz = gzip(&archive);
    let cut_gz = write(dir.path(), "cut.tar.gz", &gz[..gz.len() / 2]);
    assert_refused(
        &cut_gz,
        None,
        |e| matches!(e, StoreError::Corrupt { .. }),
        &["cut.tar.gz"],
    );
}

#[test]
fn garbage_is_not_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.bin", &noise(9, 5000));
    assert_refused(
        &junk,
        None,
        |e| matches!(e, StoreError::UnrecognizedFormat { .. }),
        &["junk.bin", "not a tar"],
    );
    let tiny = write(dir.path(), "tiny", b"hi");
    assert_refused(
        &tiny,
        None,
        |e| matches!(e, StoreError::UnrecognizedFormat { .. }),
        &["too short"],
    );
    let gz_junk = write(dir.path(), "junk.gz", &gzip(&noise(9, 5000)));
    assert_refused(
        &gz_junk,
        None,
        |e| matches!(e, StoreError::UnrecognizedFormat { .. }),
        &["not a tar"],
    );
    let empty_dir = dir.path().join("empty-dir");
    fs::create_dir(&empty_dir).unwrap();
    assert_refused(
        &empty_dir,
        None,
        |e| matches!(e, StoreError::UnrecognizedFormat { .. }),
        &["empty-dir"],
    );
}

#[test]
fn layer_digest_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample_image();
    let mut layout = oci_layout_of(&image);
    // Replace the second layer's content (same size) under its old digest name.
    let hex = sha256_hex(&image.layers[1].blob);
    let mut tampered = image.layers[1].blob.clone();
    tampered[600] ^= 0xff;
    layout.blobs.insert(hex.clone(), tampered);
    let archive = write_tar(&dir.path().join("tampered.tar"), &layout.entries());
    let message = assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::DigestMismatch { .. }),
        &["layer 2 of manifest", &hex],
    );
    assert!(message.contains("digest mismatch"), "{message}");
    // The same as a directory layout.
    let layout_dir = write_dir(&dir.path().join("tampered-dir"), &layout.entries());
    assert_refused(
        &layout_dir,
        None,
        |e| matches!(e, StoreError::DigestMismatch { .. }),
        &["layer 2"],
    );
}

#[test]
fn descriptor_size_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = oci_layout_of(&sample_image());
    edit_manifest(&mut layout, |manifest| {
        let size = manifest["layers"][0]["size"].as_u64().unwrap();
        manifest["layers"][0]["size"] = json!(size + 1);
    });
    let archive = write_tar(&dir.path().join("size.tar"), &layout.entries());
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::SizeMismatch { .. }),
        &["layer 1 of manifest", "size mismatch"],
    );
}

#[test]
fn tampered_manifest_and_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample_image();
    let mut layout = oci_layout_of(&image);
    let config_hex = sha256_hex(&image.config);
    let mut config = image.config.clone();
    config[5] = b' ';
    layout.blobs.insert(config_hex, config);
    let archive = write_tar(&dir.path().join("config.tar"), &layout.entries());
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::DigestMismatch { .. }),
        &["config of manifest"],
    );

    // A docker archive whose config file name promises another digest.
    let mut entries = docker_legacy(std::slice::from_ref(&image));
    for entry in &mut entries {
        if let Entry::File(path, data) = entry {
            if path.ends_with(".json") && path.len() == 69 {
                data.push(b'\n');
            }
        }
    }
    let archive = write_tar(&dir.path().join("docker-config.tar"), &entries);
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::DigestMismatch { .. }),
        &["config of manifest.json"],
    );
}

#[test]
fn diff_id_mismatch_names_the_layer_and_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let mut image = sample_image();
    let real = image.layers[1].diff_id();
    let claimed = digest(b"something else");
    let config = String::from_utf8(image.config.clone())
        .unwrap()
        .replace(&real, &claimed);
    image.config = config.into_bytes();
    let archive = write_tar(
        &dir.path().join("diff.tar"),
        &docker_legacy(std::slice::from_ref(&image)),
    );
    let message = assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::DiffIdMismatch { .. }),
        &[],
    );
    assert_eq!(
        message,
        format!(
            "layer 2 of manifest.json: diff_id mismatch: config says {claimed}, content is {real}"
        )
    );
    // In an OCI layout too (compressed first layer this time).
    let mut image = sample_image();
    let real = image.layers[0].diff_id();
    image.config = String::from_utf8(image.config)
        .unwrap()
        .replace(&real, &claimed)
        .into_bytes();
    let archive = write_tar(
        &dir.path().join("diff-oci.tar"),
        &oci_layout_of(&image).entries(),
    );
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::DiffIdMismatch { .. }),
        &["layer 1 of manifest", &real],
    );
}

#[test]
fn unknown_media_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = oci_layout_of(&sample_image());
    edit_manifest(&mut layout, |manifest| {
        manifest["layers"][1]["mediaType"] = json!("application/vnd.example.strange");
    });
    let archive = write_tar(&dir.path().join("layer-type.tar"), &layout.entries());
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::UnknownMediaType { .. }),
        &["layer 2", "application/vnd.example.strange"],
    );

    let mut layout = oci_layout_of(&sample_image());
    edit_manifest(&mut layout, |manifest| {
        manifest["config"]["mediaType"] = json!("application/vnd.cncf.helm.config.v1+json");
    });
    let archive = write_tar(&dir.path().join("config-type.tar"), &layout.entries());
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::UnknownMediaType { .. }),
        &["config of manifest", "helm"],
    );

    let mut layout = oci_layout_of(&sample_image());
    layout.index[0]["mediaType"] = json!("application/vnd.example.artifact+json");
    let archive = write_tar(&dir.path().join("index-type.tar"), &layout.entries());
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::UnknownMediaType { .. }),
        &["index.json", "artifact"],
    );
}

#[test]
fn missing_blobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample_image();
    let mut layout = oci_layout_of(&image);
    let hex = sha256_hex(&image.layers[1].blob);
    layout.blobs.remove(&hex);
    let archive = write_tar(&dir.path().join("missing.tar"), &layout.entries());
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::MissingFile { .. }),
        &["layer 2", &hex],
    );
    let layout_dir = write_dir(&dir.path().join("missing-dir"), &layout.entries());
    assert_refused(
        &layout_dir,
        None,
        |e| matches!(e, StoreError::MissingFile { .. }),
        &["layer 2", &hex],
    );

    let mut entries = docker_legacy(&[image]);
    entries.retain(|entry| !matches!(entry, Entry::File(path, _) if path.ends_with(".json") && path.len() == 69));
    let archive = write_tar(&dir.path().join("no-config.tar"), &entries);
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::MissingFile { .. }),
        &["config of manifest.json"],
    );
}

#[test]
fn manifest_paths_outside_the_archive_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample_image();
    for (i, outside) in ["../escape/layer.tar", "/etc/passwd", "a/../../b"]
        .iter()
        .enumerate()
    {
        let mut entries = docker_legacy(std::slice::from_ref(&image));
        let manifest_entry = entries
            .iter_mut()
            .find(|e| matches!(e, Entry::File(p, _) if p == "manifest.json"))
            .unwrap();
        if let Entry::File(_, data) = manifest_entry {
            let mut manifest: serde_json::Value = serde_json::from_slice(data).unwrap();
            manifest[0]["Layers"][1] = json!(outside);
            *data = serde_json::to_vec(&manifest).unwrap();
        }
        let archive = write_tar(&dir.path().join(format!("outside{i}.tar")), &entries);
        assert_refused(
            &archive,
            None,
            |e| matches!(e, StoreError::PathOutsideArchive { .. }),
            &["layer 2 of manifest.json", outside, "outside the archive"],
        );
    }

    // A symlinked blob in a layout directory pointing outside it.
    let secret = write(dir.path(), "secret", &image.layers[1].blob);
    let layout = oci_layout_of(&image);
    let layout_dir = write_dir(&dir.path().join("symlinked"), &layout.entries());
    let blob = layout_dir
        .join("blobs/sha256")
        .join(sha256_hex(&image.layers[1].blob));
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&secret, &blob).unwrap();
    assert_refused(
        &layout_dir,
        None,
        |e| matches!(e, StoreError::PathOutsideArchive { .. }),
        &["outside the archive"],
    );

    // A symlink member inside a tar pointing outside it.
    let mut entries = docker_legacy(&[image]);
    let layer_path = match entries
        .iter()
        .find(|e| matches!(e, Entry::File(p, _) if p.ends_with("layer.tar")))
    {
        Some(Entry::File(path, _)) => path.clone(),
        _ => unreachable!(),
    };
    entries.retain(|e| !matches!(e, Entry::File(p, _) if *p == layer_path));
    entries.push(Entry::Symlink(
        layer_path,
        "../../../etc/passwd".to_string(),
    ));
    let archive = write_tar(&dir.path().join("evil-link.tar"), &entries);
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::PathOutsideArchive { .. }),
        &["outside the archive"],
    );
}

#[test]
fn invalid_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample_image();
    let mut entries = docker_legacy(std::slice::from_ref(&image));
    for entry in &mut entries {
        if let Entry::File(path, data) = entry {
            if path == "manifest.json" {
                data.truncate(data.len() - 3);
            }
        }
    }
    let archive = write_tar(&dir.path().join("bad-manifest.tar"), &entries);
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::InvalidJson { .. }),
        &["manifest.json", "invalid JSON"],
    );

    let mut layout = oci_layout_of(&image);
    let mut entries = layout.entries();
    entries[1] = file("index.json", "{\"schemaVersion\": 2, \"manifests\": [");
    let archive = write_tar(&dir.path().join("bad-index.tar"), &entries);
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::InvalidJson { .. }),
        &["index.json"],
    );

    edit_manifest(&mut layout, |manifest| {
        manifest["layers"] = json!("not a list")
    });
    let archive = write_tar(
        &dir.path().join("bad-manifest-shape.tar"),
        &layout.entries(),
    );
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::InvalidJson { .. }),
        &["manifest sha256:"],
    );

    let mut broken = image.clone();
    broken.config = b"{\"rootfs\": {\"diff_ids\": 5}}".to_vec();
    let archive = write_tar(
        &dir.path().join("bad-config.tar"),
        &docker_legacy(&[broken]),
    );
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::InvalidJson { .. }),
        &["config of manifest.json"],
    );
}

#[test]
fn inconsistent_layer_counts_and_corrupt_layers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut image = sample_image();
    let mut extra = image.clone();
    extra.layers.pop();
    let archive = write_tar(
        &dir.path().join("count.tar"),
        &docker_legacy(&[TestImage {
            config: image.config.clone(),
            ..extra
        }]),
    );
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::LayerCountMismatch { .. }),
        &["1 layers", "lists 2"],
    );

    // A gzip layer whose deflate stream is garbage.
    let mut corrupt = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    corrupt.extend(noise(11, 2000));
    image.layers[1] = TestLayer {
        tar: image.layers[1].tar.clone(),
        blob: corrupt,
        comp: Comp::Gzip,
    };
    let archive = write_tar(
        &dir.path().join("corrupt-layer.tar"),
        &docker_legacy(&[image]),
    );
    assert_refused(
        &archive,
        None,
        |e| matches!(e, StoreError::Corrupt { .. }),
        &["layer 2 of manifest.json"],
    );
}
