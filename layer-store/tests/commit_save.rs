//! Committing layers and saving images (save → import round trips).

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::*;
use layer_store::{ConfigChanges, Digest, Image, Store};

fn imported(store: &Store, dir: &std::path::Path) -> (TestImage, Image) {
    let image = TestImage::new(
        vec![
            TestLayer::new(&[("etc/", b""), ("etc/conf", b"v1")], Comp::Gzip),
            TestLayer::new(&[("usr/bin/tool", &noise(30, 20_000))], Comp::Zstd),
        ],
        &["tool:1"],
    );
    let archive = write_tar(
        &dir.join("tool.tar"),
        &docker_blobs(std::slice::from_ref(&image)),
    );
    let stored = store.import(&archive, None).unwrap().remove(0);
    (image, stored)
}

#[test]
fn commit_adds_a_layer_and_derives_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (_, base) = imported(&store, dir.path());
    let diff = layer_tar(&[("etc/conf", b"v2"), ("etc/.wh.old", b"")]);
    let changes = ConfigChanges {
        cmd: Some(vec!["tool".into(), "--serve".into()]),
        env: vec!["MODE=prod".into()],
        working_dir: Some("/srv".into()),
        labels: BTreeMap::from([("committed".to_string(), "true".to_string())]),
        comment: Some("from container web".into()),
        ..ConfigChanges::default()
    };
    let mut progress = Vec::new();
    let child = store
        .commit_layer_with_progress(
            &base,
            &mut &diff[..],
            "tool:2",
            "lamina commit web",
            &changes,
            &mut |p| progress.push(p.bytes_done),
        )
        .unwrap();
    assert_eq!(progress.last(), Some(&(diff.len() as u64)));

    let raw = fs::read(store.blob_path(&child.config_digest)).unwrap();
    assert_eq!(
        child.id,
        Digest::of_bytes(&raw),
        "image id is the config digest"
    );
    assert_eq!(
        child
            .tags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["tool:2"]
    );
    assert_eq!(child.chain_ids.len(), 3);
    assert_eq!(child.chain_ids[..2], base.chain_ids[..]);
    assert_eq!(
        child.chain_ids[2],
        layer_store::chain_id(Some(&base.chain_ids[1]), &Digest::of_bytes(&diff))
    );

    let config = store.image_config(&child).unwrap();
    let base_config = store.image_config(&base).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 3);
    assert_eq!(config.rootfs.diff_ids[2], Digest::of_bytes(&diff));
    assert_eq!(config.rootfs.diff_ids[..2], base_config.rootfs.diff_ids[..]);
    assert_eq!(config.history.len(), base_config.history.len() + 1);
    let last = config.history.last().unwrap();
    assert_eq!(last.created_by.as_deref(), Some("lamina commit web"));
    assert_eq!(last.comment.as_deref(), Some("from container web"));
    assert_ne!(config.created, base_config.created);
    assert_eq!(config.config.cmd, changes.cmd);
    assert_eq!(config.config.env, ["PATH=/usr/bin:/bin", "MODE=prod"]);
    assert_eq!(config.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(config.config.labels.len(), 2);
    assert_eq!(config.architecture, base_config.architecture);

    let layers = store.image_layers(&child).unwrap();
    assert_eq!(read_all(store.layer_tar(&layers[2]).unwrap()), diff);
    assert_eq!(layers[2].compression, layer_store::Compression::None);
    let history = store.history(&child).unwrap();
    assert_eq!(history[2].created_by, "lamina commit web");
    check_store_consistent(store.root());

    // Committing on top of the commit works too, and the base keeps its tag.
    let grandchild = store
        .commit_layer(
            &child,
            &mut &layer_tar(&[("more", b"m")])[..],
            "tool:3",
            "again",
            &ConfigChanges::default(),
        )
        .unwrap();
    assert_eq!(grandchild.chain_ids.len(), 4);
    assert_eq!(store.resolve_image("tool:1").unwrap().id, base.id);
    assert!(store
        .commit_layer(
            &child,
            &mut &diff[..],
            "Bad Ref",
            "x",
            &ConfigChanges::default()
        )
        .is_err());
}

#[test]
fn save_then_import_gives_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (test_image, base) = imported(&store, dir.path());
    store
        .tag(&base, "registry.local:5000/tools/tool:stable")
        .unwrap();
    let child = store
        .commit_layer(
            &base,
            &mut &layer_tar(&[("new", b"n")])[..],
            "tool:child",
            "commit",
            &ConfigChanges::default(),
        )
        .unwrap();

    for image in [&base, &child] {
        let saved = dir.path().join(format!("saved-{}.tar", image.id.short()));
        let mut out = fs::File::create(&saved).unwrap();
        store.save(image, &mut out).unwrap();
        drop(out);

        let fresh = Store::open(dir.path().join(format!("fresh-{}", image.id.short()))).unwrap();
        let loaded = fresh.import(&saved, None).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, image.id, "same config bytes, same id");
        assert_eq!(loaded[0].chain_ids, image.chain_ids);
        let original = store.image(&image.id).unwrap();
        assert_eq!(loaded[0].tags, original.tags);
        for (ours, theirs) in store
            .image_layers(image)
            .unwrap()
            .iter()
            .zip(fresh.image_layers(&loaded[0]).unwrap())
        {
            assert_eq!(ours.blob, theirs.blob, "layers saved exactly as stored");
            assert_eq!(ours.compression, theirs.compression);
        }
        check_store_consistent(fresh.root());

        // The same archive read as a pure OCI layout (without manifest.json).
        let mut archive = tar::Archive::new(fs::File::open(&saved).unwrap());
        let oci_dir = dir.path().join(format!("oci-{}", image.id.short()));
        archive.unpack(&oci_dir).unwrap();
        assert!(oci_dir.join("oci-layout").is_file() && oci_dir.join("repositories").is_file());
        fs::remove_file(oci_dir.join("manifest.json")).unwrap();
        let oci_store =
            Store::open(dir.path().join(format!("oci-store-{}", image.id.short()))).unwrap();
        let loaded = oci_store.import(&oci_dir, None).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, image.id);
        assert_eq!(loaded[0].tags, original.tags);
        assert!(loaded[0].manifest_digest.is_some());
    }

    // Importing a save into the store it came from changes nothing.
    let saved = dir.path().join("again.tar");
    store
        .save(&base, &mut fs::File::create(&saved).unwrap())
        .unwrap();
    let before = snapshot(store.root());
    store.import(&saved, None).unwrap();
    assert_eq!(snapshot(store.root()), before);
    assert_eq!(store.image_config(&base).unwrap().raw, test_image.config);
}

#[test]
fn untagged_images_save_and_load_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (_, base) = imported(&store, dir.path());
    store.remove_image("tool:1").unwrap();
    let mut bytes = Vec::new();
    store.save(&base, &mut bytes).unwrap();
    let saved = dir.path().join("untagged.tar");
    fs::write(&saved, &bytes).unwrap();
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    let loaded = fresh.import(&saved, Some("restored:1")).unwrap();
    assert_eq!(loaded[0].id, base.id);
    assert_eq!(
        loaded[0]
            .tags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["restored:1"]
    );
}
