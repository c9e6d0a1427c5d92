//! Looking images up, tagging, removing, containers, gc, df and history.

mod common;

use std::path::Path;

use common::*;
use layer_store::{Digest, Image, Store, StoreError};

fn import_one(store: &Store, dir: &Path, image: &TestImage, file: &str) -> Image {
    let archive = write_tar(&dir.join(file), &docker_legacy(std::slice::from_ref(image)));
    store.import(&archive, None).unwrap().remove(0)
}

fn tag_strings(image: &Image) -> Vec<String> {
    image.tags.iter().map(ToString::to_string).collect()
}

/// Two images sharing their first layer.
fn base_and_derived() -> (TestImage, TestImage) {
    let base_layer = TestLayer::new(&[("base", &noise(20, 10_000))], Comp::None);
    let base = TestImage::for_arch(
        vec![base_layer.clone()],
        &["base:1", "base:latest"],
        layer_store::host_architecture(),
        "base",
    );
    let derived = TestImage::for_arch(
        vec![
            base_layer,
            TestLayer::new(&[("app", &noise(21, 3_000))], Comp::Gzip),
        ],
        &["app:2"],
        layer_store::host_architecture(),
        "app",
    );
    (base, derived)
}

#[test]
fn images_resolve_by_tag_name_id_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (base, derived) = base_and_derived();
    let base_image = import_one(&store, dir.path(), &base, "base.tar");
    let app_image = import_one(&store, dir.path(), &derived, "app.tar");
    let id = base_image.id.clone();

    for reference in [
        "base:1".to_string(),
        "base".to_string(),
        id.to_string(),
        id.hex().to_string(),
        id.hex()[..4].to_string(),
        format!("sha256:{}", &id.hex()[..10]),
    ] {
        let found = store
            .resolve_image(&reference)
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(found.id, id, "{reference}");
        assert_eq!(tag_strings(&found), ["base:1", "base:latest"]);
    }
    assert_eq!(store.resolve_image("app:2").unwrap().id, app_image.id);
    for missing in [
        "app",
        "nothing:1",
        &id.hex()[..3],
        "zzzz",
        "sha256:0000000000",
    ] {
        let err = store.resolve_image(missing).unwrap_err();
        assert!(
            matches!(err, StoreError::ImageNotFound { .. }),
            "{missing}: {err}"
        );
    }
    let listed: Vec<Digest> = store.images().unwrap().into_iter().map(|i| i.id).collect();
    let mut expected = vec![base_image.id.clone(), app_image.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn ambiguous_id_prefixes_are_refused() {
    // Find two configs whose IDs share their first 4 hex characters.
    let layer = TestLayer::new(&[("same", b"layer")], Comp::None);
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (0..100_000)
        .find_map(|salt| {
            let image = TestImage::for_arch(
                vec![layer.clone()],
                &[],
                layer_store::host_architecture(),
                &salt.to_string(),
            );
            let prefix = sha256_hex(&image.config)[..4].to_string();
            seen.insert(prefix, image.clone())
                .map(|earlier| (earlier, image))
        })
        .unwrap();
    let first = TestImage {
        tags: vec!["first:1".into()],
        ..first
    };
    let second = TestImage {
        tags: vec!["second:1".into()],
        ..second
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let archive = write_tar(
        &dir.path().join("two.tar"),
        &docker_legacy(&[first.clone(), second.clone()]),
    );
    store.import(&archive, None).unwrap();

    let prefix = &sha256_hex(&first.config)[..4];
    let err = store.resolve_image(prefix).unwrap_err();
    assert!(
        matches!(err, StoreError::AmbiguousImage { matches: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ambiguous"));
    // A longer prefix disambiguates.
    let longer = common_prefix_plus_one(&sha256_hex(&first.config), &sha256_hex(&second.config));
    assert_eq!(
        store.resolve_image(&longer).unwrap().id.to_string(),
        first.id()
    );
    assert!(matches!(
        store.remove_image(prefix),
        Err(StoreError::AmbiguousImage { .. })
    ));
}

fn common_prefix_plus_one(a: &str, b: &str) -> String {
    let shared = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    a[..shared + 1].to_string()
}

#[test]
fn tag_untag_remove_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (base, derived) = base_and_derived();
    let base_image = import_one(&store, dir.path(), &base, "base.tar");
    let app_image = import_one(&store, dir.path(), &derived, "app.tar");

    assert_eq!(
        store.tag(&app_image, "app:extra").unwrap().to_string(),
        "app:extra"
    );
    assert_eq!(
        store.tag(&app_image, "other").unwrap().to_string(),
        "other:latest"
    );
    assert!(matches!(
        store.tag(&app_image, "Bad:tag!"),
        Err(StoreError::InvalidReference { .. })
    ));
    assert_eq!(
        tag_strings(&store.image(&app_image.id).unwrap()),
        ["app:2", "app:extra", "other:latest"]
    );
    // Moving a tag.
    store.tag(&base_image, "other").unwrap();
    assert_eq!(store.resolve_image("other").unwrap().id, base_image.id);

    // Untag by name: the record stays.
    let removal = store.remove_image("app:extra").unwrap();
    assert_eq!((removal.untagged.len(), removal.deleted.clone()), (1, None));
    let removal = store.remove_image("app:2").unwrap();
    assert_eq!(removal.deleted, None);
    assert!(store.image(&app_image.id).unwrap().tags.is_empty());
    assert!(matches!(
        store.remove_image("app:2"),
        Err(StoreError::ImageNotFound { .. })
    ));

    // gc removes the untagged image, its own layer and blobs, not the shared base.
    let blobs_before = files_in(&store.root().join("blobs/sha256")).len();
    let report = store.gc().unwrap();
    assert_eq!(report.removed_images, vec![app_image.id.clone()]);
    assert_eq!(report.removed_layers, vec![app_image.chain_ids[1].clone()]);
    assert_eq!(report.removed_blobs.len(), 2, "top layer blob and config");
    assert!(report.reclaimed_bytes > 3_000);
    assert_eq!(
        files_in(&store.root().join("blobs/sha256")).len(),
        blobs_before - 2
    );
    assert!(store.layer(&base_image.chain_ids[0]).is_ok());
    check_store_consistent(store.root());
    assert_eq!(store.gc().unwrap(), layer_store::GcReport::default());

    // Remove by ID: all tags and the record; blobs wait for gc.
    let removal = store.remove_image(&base_image.id.hex()[..8]).unwrap();
    assert_eq!(removal.deleted, Some(base_image.id.clone()));
    assert_eq!(removal.untagged.len(), 3);
    assert!(store.images().unwrap().is_empty());
    assert!(!files_in(&store.root().join("blobs/sha256")).is_empty());
    let report = store.gc().unwrap();
    assert_eq!(report.removed_layers, base_image.chain_ids);
    assert!(files_in(&store.root().join("blobs/sha256")).is_empty());
    assert!(files_in(&store.root().join("layers")).is_empty());
}

#[test]
fn containers_pin_their_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (base, _) = base_and_derived();
    let image = import_one(&store, dir.path(), &base, "base.tar");

    let web = store.create_container("web-1", &image, "overlay2").unwrap();
    assert_eq!(web.id.len(), 64);
    assert!(web.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        (web.image.clone(), web.driver.as_str()),
        (image.id.clone(), "overlay2")
    );
    assert!(matches!(
        store.create_container("web-1", &image, "vfs"),
        Err(StoreError::ContainerExists { .. })
    ));
    for bad in ["", "-x", "a/b", "../x", "with space"] {
        assert!(
            matches!(
                store.create_container(bad, &image, "vfs"),
                Err(StoreError::InvalidContainerName { .. })
            ),
            "{bad}"
        );
    }
    let db = store.create_container("db", &image, "vfs").unwrap();
    assert_eq!(store.containers().unwrap(), vec![db.clone(), web.clone()]);
    assert_eq!(store.container("web-1").unwrap(), web);
    assert_eq!(store.container(&web.id[..12]).unwrap(), web);
    assert!(matches!(
        store.container("nope"),
        Err(StoreError::ContainerNotFound { .. })
    ));

    // Removal refused while containers use the image; the error names one.
    let err = store.remove_image(&image.id.to_string()).unwrap_err();
    assert!(matches!(err, StoreError::ImageInUse { .. }), "{err}");
    assert!(
        err.to_string().contains("\"db\"") || err.to_string().contains("\"web-1\""),
        "{err}"
    );
    // Dropping one of two tags is fine; the last one is refused.
    store.remove_image("base:1").unwrap();
    let err = store.remove_image("base:latest").unwrap_err();
    assert!(matches!(err, StoreError::ImageInUse { .. }), "{err}");

    // gc keeps an untagged image that a container uses.
    store.remove_container("db").unwrap();
    assert_eq!(store.df().unwrap().containers, 1);
    let dangling = store
        .commit_layer(
            &image,
            &mut &layer_tar(&[("x", b"x")])[..],
            "tmp:1",
            "c",
            &Default::default(),
        )
        .unwrap();
    let user = store.create_container("user", &dangling, "vfs").unwrap();
    store.remove_image("tmp:1").unwrap_err();
    store.remove_container(&user.id).unwrap();
    store.remove_image("tmp:1").unwrap();
    store.create_container("user2", &dangling, "vfs").unwrap();
    let report = store.gc().unwrap();
    assert!(report.removed_images.is_empty());
    assert!(store.image(&dangling.id).is_ok());
    store.remove_container("user2").unwrap();
    assert_eq!(store.gc().unwrap().removed_images, vec![dangling.id]);
    assert!(matches!(
        store.remove_container("db"),
        Err(StoreError::ContainerNotFound { .. })
    ));
}

#[test]
fn disk_usage_counts_shared_layers_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (base, derived) = base_and_derived();
    let base_image = import_one(&store, dir.path(), &base, "base.tar");
    let app_image = import_one(&store, dir.path(), &derived, "app.tar");
    store.create_container("c", &app_image, "vfs").unwrap();

    let base_size = base.layers[0].tar.len() as u64;
    let top_size = derived.layers[1].tar.len() as u64;
    let usage = store.df().unwrap();
    let of = |id: &Digest| usage.images.iter().find(|i| &i.id == id).unwrap().clone();
    let b = of(&base_image.id);
    assert_eq!(
        (b.size, b.shared_size, b.unique_size, b.containers),
        (base_size, base_size, 0, 0)
    );
    let a = of(&app_image.id);
    assert_eq!(
        (a.size, a.shared_size, a.unique_size, a.containers),
        (base_size + top_size, base_size, top_size, 1)
    );
    assert_eq!(usage.layers_size, base_size + top_size);
    assert_eq!(usage.layer_count, 2);
    assert_eq!(usage.containers, 1);
    let on_disk: u64 = files_in(&store.root().join("blobs/sha256"))
        .iter()
        .map(|name| {
            std::fs::metadata(store.root().join("blobs/sha256").join(name))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(usage.blob_bytes, on_disk);
    assert_eq!(
        tag_strings(&store.image(&base_image.id).unwrap()),
        ["base:1", "base:latest"]
    );
}

#[test]
fn history_config_and_layer_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (_, derived) = base_and_derived();
    let image = import_one(&store, dir.path(), &derived, "app.tar");

    let history = store.history(&image).unwrap();
    assert_eq!(history.len(), 2);
    // The fixture interleaves empty_layer entries ("ENV X=i") which are skipped.
    assert_eq!(history[0].created_by, "RUN step 0");
    assert_eq!(history[1].created_by, "RUN step 1");
    assert_eq!(history[1].size, derived.layers[1].tar.len() as u64);
    assert_eq!(history[1].blob_size, derived.layers[1].blob.len() as u64);
    assert_eq!(history[1].blob.to_string(), derived.layers[1].blob_digest());
    assert_eq!(history[1].chain_id, image.chain_ids[1]);

    let config = store.image_config(&image).unwrap();
    assert_eq!(config.config.cmd, Some(vec!["/bin/sh".to_string()]));
    assert_eq!(config.config.env, ["PATH=/usr/bin:/bin"]);
    assert_eq!(config.config.working_dir.as_deref(), Some("/"));
    assert_eq!(
        config.config.labels.get("fixture").map(String::as_str),
        Some("yes")
    );
    assert_eq!(config.architecture, layer_store::host_architecture());
    assert_eq!(config.os, "linux");
    assert_eq!(config.created.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(config.history.len(), 4);
    assert_eq!(config.raw, derived.config);

    let layers = store.image_layers(&image).unwrap();
    assert_eq!(layers[1].parent.as_ref(), Some(&image.chain_ids[0]));
    assert_eq!(layers[0].parent, None);
    let mut archive = tar::Archive::new(store.layer_tar(&layers[1]).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app"]);
    assert!(matches!(
        store.layer(&Digest::of_bytes(b"none")),
        Err(StoreError::LayerNotFound { .. })
    ));
}

#[test]
fn stale_staging_directories_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    drop(Store::open(&root).unwrap());
    let dead = root.join("tmp/999999999-deadbeef");
    std::fs::create_dir_all(dead.join("x")).unwrap();
    std::fs::write(dead.join("x/partial"), b"half a layer").unwrap();
    let alive = root.join(format!("tmp/{}-cafe", std::process::id()));
    std::fs::create_dir_all(&alive).unwrap();
    let store = Store::open(&root).unwrap();
    assert!(!dead.exists());
    assert!(alive.exists(), "a live process's staging directory is kept");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn the_store_lock_is_reentrant_and_shared_with_store_methods() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let (base, _) = base_and_derived();
    let image = import_one(&store, dir.path(), &base, "base.tar");
    let guard = store.lock().unwrap();
    // Store methods take the lock themselves; holding it must not deadlock.
    store.tag(&image, "held:1").unwrap();
    store.create_container("held", &image, "vfs").unwrap();
    drop(guard);

    // Another Store on the same root waits for the lock.
    let guard = store.lock().unwrap();
    let other = Store::open(store.root()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            other.tag(&image, "other:1").unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "tag ran while the lock was held"
        );
        drop(guard);
        waiter.join().unwrap();
    });
    assert_eq!(store.resolve_image("other:1").unwrap().id, image.id);
}
