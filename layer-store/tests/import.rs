//! Importing every supported input form.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use layer_store::{Compression, Digest, Image, Store, StoreError};

fn open(dir: &Path) -> Store {
    Store::open(dir.join("store")).unwrap()
}

fn tags(image: &Image) -> Vec<String> {
    image.tags.iter().map(ToString::to_string).collect()
}

fn blob_count(store: &Store) -> usize {
    files_in(&store.root().join("blobs/sha256")).len()
}

fn layer_count(store: &Store) -> usize {
    files_in(&store.root().join("layers")).len()
}

/// The uncompressed tar of each layer of `image`, read back from the store.
fn stored_layer_tars(store: &Store, image: &Image) -> Vec<Vec<u8>> {
    store
        .image_layers(image)
        .unwrap()
        .iter()
        .map(|layer| read_all(store.layer_tar(layer).unwrap()))
        .collect()
}

fn assert_matches(store: &Store, image: &Image, expected: &TestImage) {
    assert_eq!(image.id.to_string(), expected.id());
    assert_eq!(image.config_digest, image.id);
    let chain: Vec<String> = image.chain_ids.iter().map(ToString::to_string).collect();
    assert_eq!(chain, expected.chain_ids());
    let tars: Vec<Vec<u8>> = expected.layers.iter().map(|l| l.tar.clone()).collect();
    assert_eq!(stored_layer_tars(store, image), tars);
    for (layer, test_layer) in store
        .image_layers(image)
        .unwrap()
        .iter()
        .zip(&expected.layers)
    {
        assert_eq!(
            layer.blob.to_string(),
            test_layer.blob_digest(),
            "blob kept as it arrived"
        );
        assert_eq!(
            fs::read(store.blob_path(&layer.blob)).unwrap(),
            test_layer.blob
        );
        assert_eq!(layer.diff_id.to_string(), test_layer.diff_id());
        assert_eq!(layer.uncompressed_size, test_layer.tar.len() as u64);
        assert_eq!(layer.blob_size, test_layer.blob.len() as u64);
    }
    assert_eq!(store.image_config(image).unwrap().raw, expected.config);
    check_store_consistent(store.root());
}

fn two_images_sharing_a_base(comp: Comp) -> (TestImage, TestImage) {
    let base = TestLayer::new(&[("bin/", b""), ("bin/sh", b"#!shell")], comp);
    let a = TestImage::new(
        vec![base.clone(), TestLayer::new(&[("a.txt", b"image a")], comp)],
        &["app-a:1.0", "app-a:latest"],
    );
    let b = TestImage::new(
        vec![base, TestLayer::new(&[("b.txt", b"image b")], comp)],
        &["reg.example.com/team/b:2"],
    );
    (a, b)
}

#[test]
fn legacy_docker_archive_imports_every_image_with_its_repo_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = two_images_sharing_a_base(Comp::None);
    let archive = write_tar(
        &dir.path().join("save.tar"),
        &docker_legacy(&[a.clone(), b.clone()]),
    );

    let images = store.import(&archive, None).unwrap();
    assert_eq!(images.len(), 2);
    assert_matches(&store, &images[0], &a);
    assert_matches(&store, &images[1], &b);
    assert_eq!(tags(&images[0]), ["app-a:1.0", "app-a:latest"]);
    assert_eq!(tags(&images[1]), ["reg.example.com/team/b:2"]);
    // Shared base layer (a symlink in the archive) stored once: 3 layers + 2 configs.
    assert_eq!(layer_count(&store), 3);
    assert_eq!(blob_count(&store), 5);
    assert_eq!(store.images().unwrap().len(), 2);
    assert_eq!(store.resolve_image("app-a").unwrap().id, images[0].id);
}

#[test]
fn blobs_form_docker_archive_keeps_compressed_layers_and_adds_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = TestImage::new(
        vec![
            TestLayer::new(&[("etc/", b""), ("etc/os-release", b"ID=test")], Comp::Gzip),
            TestLayer::new(&[("usr/lib/big", &noise(1, 300_000))], Comp::Zstd),
            TestLayer::new(&[("etc/hostname", b"box")], Comp::None),
        ],
        &["busybox:musl"],
    );
    let archive = write_tar(
        &dir.path().join("bb.tar"),
        &docker_blobs(std::slice::from_ref(&image)),
    );

    let images = store.import(&archive, Some("mine:v1")).unwrap();
    assert_eq!(images.len(), 1);
    assert_matches(&store, &images[0], &image);
    assert_eq!(tags(&images[0]), ["busybox:musl", "mine:v1"]);
    let compressions: Vec<Compression> = store
        .image_layers(&images[0])
        .unwrap()
        .iter()
        .map(|l| l.compression)
        .collect();
    assert_eq!(
        compressions,
        [Compression::Gzip, Compression::Zstd, Compression::None]
    );
    // Docker's manifest.json wins over the index.json it also carries.
    assert_eq!(images[0].manifest_digest, None);
}

#[test]
fn untagged_single_image_archive_is_named_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = TestImage::new(vec![TestLayer::new(&[("x", b"x")], Comp::None)], &[]);
    let archive = write_tar(&dir.path().join("My_Export.tar"), &docker_legacy(&[image]));
    let images = store.import(&archive, None).unwrap();
    assert_eq!(tags(&images[0]), ["my-export:latest"]);
}

#[test]
fn oci_layout_directory_picks_the_host_platform_through_nested_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let layer = TestLayer::new(&[("bin/", b""), ("bin/tool", b"native")], Comp::Gzip);
    let host = TestImage::new(vec![layer.clone()], &[]);
    let foreign = TestImage::for_arch(
        vec![TestLayer::new(&[("bin/tool", b"foreign")], Comp::Gzip)],
        &[],
        other_arch(),
        "",
    );
    let mut layout = OciLayout::default();
    let foreign_manifest = layout.image_manifest(&foreign, true);
    let host_manifest = layout.image_manifest(&host, true);
    let attestation = {
        let mut d =
            layout.image_manifest(&TestImage::for_arch(vec![], &[], "unknown", "att"), false);
        d["platform"] = serde_json::json!({"architecture": "unknown", "os": "unknown"});
        d
    };
    // index.json -> OCI index -> Docker manifest list -> manifests.
    let list = layout.nested_index(vec![foreign_manifest, host_manifest, attestation], true);
    let outer = layout.nested_index(vec![list], false);
    layout.index.push(outer);
    let layout_dir = dir.path().join("alpine-layout");
    write_dir(&layout_dir, &layout.entries());

    let images = store.import(&layout_dir, None).unwrap();
    assert_eq!(images.len(), 1);
    assert_matches(&store, &images[0], &host);
    assert_eq!(tags(&images[0]), ["alpine-layout:latest"]);
    let manifest = images[0]
        .manifest_digest
        .clone()
        .expect("manifest digest recorded");
    assert!(store.has_blob(&manifest));
    // Only the chosen image's blobs are stored: its layer, config and manifest.
    assert_eq!(blob_count(&store), 3);
}

#[test]
fn oci_layout_tar_imports_each_ref_name() {
    let dir = tempfile::tempdir().unwrap();
    let base = TestLayer::new(
        &[("lib/", b""), ("lib/libc.so", &noise(2, 50_000))],
        Comp::Zstd,
    );
    let one = TestImage::for_arch(
        vec![base.clone()],
        &[],
        layer_store::host_architecture(),
        "one",
    );
    let two = TestImage::for_arch(
        vec![base.clone(), TestLayer::new(&[("two", b"2")], Comp::None)],
        &[],
        layer_store::host_architecture(),
        "two",
    );
    let three = TestImage::for_arch(
        vec![base, TestLayer::new(&[("three", b"3")], Comp::Gzip)],
        &[],
        layer_store::host_architecture(),
        "three",
    );
    let foreign = TestImage::for_arch(
        vec![TestLayer::new(&[("f", b"f")], Comp::None)],
        &[],
        other_arch(),
        "foreign",
    );
    let mut layout = OciLayout::default();
    let d1 = layout.image_manifest(&one, false);
    let d2 = layout.image_manifest(&two, false);
    let d3 = layout.image_manifest(&three, false);
    let df = layout.image_manifest(&foreign, false);
    layout
        .index
        .push(with_ref_name(d1.clone(), "reg.io/team/one:1.0"));
    layout.index.push(with_ref_name(d1, "v1"));
    layout.index.push(with_ref_name(d2, "v2"));
    let nested = layout.nested_index(vec![df, d3], false);
    layout.index.push(with_ref_name(nested, "multi:3"));
    let archive = write_tar(&dir.path().join("bundle.tar"), &layout.entries());

    // With a name: bare tags take its repository.
    let store = Store::open(dir.path().join("named")).unwrap();
    let images = store.import(&archive, Some("mine")).unwrap();
    let summary: Vec<(String, Vec<String>)> =
        images.iter().map(|i| (i.id.to_string(), tags(i))).collect();
    assert_eq!(
        summary,
        [
            (
                one.id(),
                vec!["mine:v1".to_string(), "reg.io/team/one:1.0".to_string()]
            ),
            (two.id(), vec!["mine:v2".to_string()]),
            (three.id(), vec!["multi:3".to_string()]),
        ]
    );
    assert_matches(&store, &images[2], &three);
    // The shared base layer is stored once.
    assert_eq!(layer_count(&store), 3);

    // Without a name: bare tags take the file stem.
    let store = Store::open(dir.path().join("unnamed")).unwrap();
    let images = store.import(&archive, None).unwrap();
    assert_eq!(tags(&images[0]), ["bundle:v1", "reg.io/team/one:1.0"]);
    assert_eq!(tags(&images[1]), ["bundle:v2"]);
}

#[test]
fn oci_single_manifest_without_platform_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = TestImage::for_arch(
        vec![TestLayer::new(&[("x", b"y")], Comp::None)],
        &[],
        "s390x",
        "",
    );
    let mut layout = OciLayout::default();
    let mut descriptor = layout.image_manifest(&image, false);
    descriptor.as_object_mut().unwrap().remove("platform");
    layout.index.push(descriptor);
    let archive = write_tar(&dir.path().join("one.tar"), &layout.entries());
    let images = store.import(&archive, Some("only:it")).unwrap();
    assert_matches(&store, &images[0], &image);
    assert_eq!(tags(&images[0]), ["only:it"]);
}

#[test]
fn oci_layout_without_a_manifest_for_this_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = TestImage::for_arch(
        vec![TestLayer::new(&[("x", b"y")], Comp::None)],
        &[],
        other_arch(),
        "",
    );
    let mut layout = OciLayout::default();
    let descriptor = layout.image_manifest(&image, false);
    layout.index.push(descriptor);
    let archive = write_tar(&dir.path().join("foreign.tar"), &layout.entries());
    let err = store.import(&archive, None).unwrap_err();
    assert!(
        matches!(err, StoreError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(other_arch()), "{err}");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn bare_layer_tars_import_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let shared = open(dir.path());
    let tar = layer_tar(&[("rootfs/", b""), ("rootfs/file", &noise(3, 100_000))]);
    for (file_name, comp, expected_name) in [
        ("rootfs.tar", Comp::None, "rootfs:latest"),
        ("rootfs-gz.tar.gz", Comp::Gzip, "rootfs-gz:latest"),
        ("Layer.tar.zst", Comp::Zstd, "layer:latest"),
    ] {
        let layer = TestLayer::from_tar(tar.clone(), comp);
        let path = dir.path().join(file_name);
        fs::write(&path, &layer.blob).unwrap();
        let store = Store::open(dir.path().join(format!("{file_name}.store"))).unwrap();
        let images = store.import(&path, None).unwrap();
        assert_eq!(images.len(), 1);
        let image = &images[0];
        assert_eq!(tags(image), [expected_name]);
        let layers = store.image_layers(image).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].blob.to_string(), layer.blob_digest());
        assert_eq!(layers[0].diff_id.to_string(), layer.diff_id());
        assert_eq!(read_all(store.layer_tar(&layers[0]).unwrap()), tar);
        let config = store.image_config(image).unwrap();
        assert_eq!(config.os, "linux");
        assert_eq!(config.architecture, layer_store::host_architecture());
        assert_eq!(config.rootfs.diff_ids, vec![layers[0].diff_id.clone()]);
        assert_eq!(
            config.history[0].created_by.as_deref(),
            Some(format!("lamina import {file_name}").as_str())
        );
        assert_eq!(image.id, Digest::of_bytes(&config.raw));
        shared.import(&path, None).unwrap();
    }
    // Same content in three compressions: one layer record (one chain ID),
    // keeping the blob that arrived first.
    assert_eq!(layer_count(&shared), 1);
    assert_eq!(shared.layers().unwrap()[0].compression, Compression::None);
    let named = shared
        .import(&dir.path().join("rootfs.tar"), Some("custom:1"))
        .unwrap();
    assert_eq!(
        tags(&named[0]),
        ["custom:1", "rootfs:latest"],
        "same file, same image ID"
    );
    check_store_consistent(shared.root());
}

#[test]
fn compressed_archives_are_unpacked_into_staging_and_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_images_sharing_a_base(Comp::Gzip);
    let docker = tar_bytes(&docker_legacy(&[a.clone(), b]));
    let gz = dir.path().join("save.tar.gz");
    fs::write(&gz, gzip(&docker)).unwrap();
    let store = Store::open(dir.path().join("s1")).unwrap();
    let images = store.import(&gz, None).unwrap();
    assert_eq!(images.len(), 2);
    assert_matches(&store, &images[0], &a);

    let mut layout = OciLayout::default();
    let descriptor = layout.image_manifest(&a, false);
    layout.index.push(descriptor);
    let zst = dir.path().join("layout.tar.zst");
    fs::write(&zst, zstd(&tar_bytes(&layout.entries()))).unwrap();
    let store = Store::open(dir.path().join("s2")).unwrap();
    let images = store.import(&zst, None).unwrap();
    assert_matches(&store, &images[0], &a);
    assert_eq!(tags(&images[0]), ["layout:latest"]);
    assert!(
        files_in(&store.root().join("tmp")).is_empty(),
        "staging removed"
    );
}

#[test]
fn layers_shared_between_imports_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = two_images_sharing_a_base(Comp::Gzip);
    let first = write_tar(
        &dir.path().join("a.tar"),
        &docker_blobs(std::slice::from_ref(&a)),
    );
    let second = write_tar(
        &dir.path().join("b.tar"),
        &docker_blobs(std::slice::from_ref(&b)),
    );
    store.import(&first, None).unwrap();
    assert_eq!((layer_count(&store), blob_count(&store)), (2, 3));
    store.import(&second, None).unwrap();
    assert_eq!((layer_count(&store), blob_count(&store)), (3, 5));

    // The same base layer shipped uncompressed has the same chain ID: the
    // existing record and blob are kept, the new blob is not published.
    let base_plain = TestLayer::from_tar(a.layers[0].tar.clone(), Comp::None);
    let c = TestImage::new(
        vec![base_plain, TestLayer::new(&[("c", b"c")], Comp::None)],
        &["c:1"],
    );
    let third = write_tar(
        &dir.path().join("c.tar"),
        &docker_legacy(std::slice::from_ref(&c)),
    );
    let images = store.import(&third, None).unwrap();
    assert_eq!((layer_count(&store), blob_count(&store)), (4, 7));
    let layers = store.image_layers(&images[0]).unwrap();
    assert_eq!(layers[0].compression, Compression::Gzip);
    assert_eq!(
        read_all(store.layer_tar(&layers[0]).unwrap()),
        a.layers[0].tar
    );

    // Importing again changes nothing.
    let before = snapshot(store.root());
    store.import(&first, None).unwrap();
    store.import(&third, None).unwrap();
    assert_eq!(snapshot(store.root()), before);
}

#[test]
fn progress_is_reported_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = TestImage::new(
        vec![
            TestLayer::new(&[("big", &noise(4, 2_000_000))], Comp::None),
            TestLayer::new(&[("small", b"s")], Comp::Gzip),
        ],
        &["p:1"],
    );
    let archive = write_tar(
        &dir.path().join("p.tar"),
        &docker_blobs(std::slice::from_ref(&image)),
    );
    let mut reports = Vec::new();
    store
        .import_with_progress(&archive, None, &mut |p| reports.push(p.clone()))
        .unwrap();
    for (index, layer) in image.layers.iter().enumerate() {
        let mine: Vec<_> = reports.iter().filter(|p| p.layer == index + 1).collect();
        assert!(mine.len() >= 2, "start and end reported");
        assert!(mine
            .iter()
            .all(|p| p.layers == 2 && p.bytes_total == layer.blob.len() as u64));
        assert_eq!(mine[0].bytes_done, 0);
        assert_eq!(mine.last().unwrap().bytes_done, layer.blob.len() as u64);
        assert_eq!(
            mine[0].digest.as_ref().map(ToString::to_string),
            Some(layer.blob_digest())
        );
    }
    let big: Vec<_> = reports.iter().filter(|p| p.layer == 1).collect();
    assert!(
        big.len() > 3,
        "the large layer reports intermediate progress"
    );
}

#[test]
fn import_names_are_validated_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, b) = two_images_sharing_a_base(Comp::None);
    let archive = write_tar(&dir.path().join("two.tar"), &docker_legacy(&[a, b]));
    let err = store.import(&archive, Some("Bad Name")).unwrap_err();
    assert!(matches!(err, StoreError::InvalidReference { .. }), "{err}");
    let err = store.import(&archive, Some("one:name")).unwrap_err();
    assert!(
        matches!(err, StoreError::NameNeedsSingleImage { count: 2, .. }),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());
    assert!(files_in(&store.root().join("blobs/sha256")).is_empty());
}

#[test]
fn layer_tars_with_a_manifest_json_file_are_still_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tar = layer_tar(&[
        ("manifest.json", br#"{"name": "web app", "icons": []}"#),
        ("index.json", b"{}"),
        ("index.html", b"<html>"),
    ]);
    for (file_name, bytes) in [("webapp.tar", tar.clone()), ("webapp.tar.gz", gzip(&tar))] {
        let path = dir.path().join(file_name);
        fs::write(&path, bytes).unwrap();
        let images = store.import(&path, None).unwrap();
        let layers = store.image_layers(&images[0]).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(read_all(store.layer_tar(&layers[0]).unwrap()), tar);
    }
}
