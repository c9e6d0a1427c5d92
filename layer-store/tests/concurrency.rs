//! Concurrent imports and crash safety (imports killed with SIGKILL).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::Instant;

use common::*;
use layer_store::Store;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;

const CHILD_ROOT: &str = "LAYER_STORE_TEST_CHILD_ROOT";
const CHILD_ARCHIVE: &str = "LAYER_STORE_TEST_CHILD_ARCHIVE";

/// Not a test: the body of the child processes spawned below (runs only when
/// the environment names a store and an archive).
#[test]
#[ignore = "helper run in child processes by the tests in this file"]
fn child_import() {
    let (Some(root), Some(archive)) = (
        std::env::var_os(CHILD_ROOT),
        std::env::var_os(CHILD_ARCHIVE),
    ) else {
        return;
    };
    let store = Store::open(root).unwrap();
    let images = store.import(Path::new(&archive), None).unwrap();
    assert_eq!(images.len(), 1);
}

fn spawn_child_import(root: &Path, archive: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_import",
            "--exact",
            "--ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env(CHILD_ROOT, root)
        .env(CHILD_ARCHIVE, archive)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A few MiB in several layers, some compressed, so an import takes a while.
fn large_image(dir: &Path) -> (TestImage, PathBuf) {
    let image = TestImage::new(
        vec![
            TestLayer::new(&[("a", &noise(40, 1_500_000))], Comp::None),
            TestLayer::new(&[("b", &noise(41, 1_500_000))], Comp::Zstd),
            TestLayer::new(&[("c", &noise(42, 600_000))], Comp::Gzip),
            TestLayer::new(&[("d", &noise(43, 1_500_000))], Comp::None),
        ],
        &["large:1"],
    );
    let archive = write_tar(
        &dir.join("large.tar"),
        &docker_blobs(std::slice::from_ref(&image)),
    );
    (image, archive)
}

fn assert_complete(store: &Store, expected: &TestImage) {
    let images = store.images().unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.id.to_string(), expected.id());
    let tars: Vec<Vec<u8>> = store
        .image_layers(image)
        .unwrap()
        .iter()
        .map(|layer| read_all(store.layer_tar(layer).unwrap()))
        .collect();
    assert_eq!(
        tars,
        expected
            .layers
            .iter()
            .map(|l| l.tar.clone())
            .collect::<Vec<_>>()
    );
    // 4 layers + config, one copy each.
    assert_eq!(files_in(&store.root().join("blobs/sha256")).len(), 5);
    assert_eq!(files_in(&store.root().join("layers")).len(), 4);
    check_store_consistent(store.root());
}

#[test]
fn concurrent_imports_from_threads_store_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (image, archive) = large_image(dir.path());
    let root = dir.path().join("s");
    let shared = Store::open(&root).unwrap();
    let barrier = Barrier::new(3);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let (barrier, shared, root, archive) = (&barrier, &shared, &root, &archive);
                scope.spawn(move || {
                    // One thread shares a Store, the others open their own.
                    let own;
                    let store = if i == 0 {
                        shared
                    } else {
                        own = Store::open(root).unwrap();
                        &own
                    };
                    barrier.wait();
                    store.import(archive, None).unwrap()
                })
            })
            .collect();
        for worker in workers {
            let images = worker.join().unwrap();
            assert_eq!(images[0].id.to_string(), image.id());
        }
    });
    assert_complete(&shared, &image);
    assert!(files_in(&root.join("tmp")).is_empty());
}

#[test]
fn concurrent_imports_from_processes_store_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (image, archive) = large_image(dir.path());
    let root = dir.path().join("s");
    Store::open(&root).unwrap();
    let children: Vec<Child> = (0..2)
        .map(|_| spawn_child_import(&root, &archive))
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let store = Store::open(&root).unwrap();
    assert_complete(&store, &image);
    assert!(files_in(&root.join("tmp")).is_empty());
}

#[test]
fn imports_killed_at_random_points_leave_no_partial_state() {
    let dir = tempfile::tempdir().unwrap();
    let (image, archive) = large_image(dir.path());
    let root = dir.path().join("s");

    // Time one complete child import to spread the kill points over it.
    let started = Instant::now();
    let output = spawn_child_import(&root, &archive)
        .wait_with_output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let full_run = started.elapsed();
    reset(&root);

    let mut rng = rand::thread_rng();
    let (mut interrupted, mut finished) = (0, 0);
    for _ in 0..20 {
        let mut child = spawn_child_import(&root, &archive);
        let delay = full_run.mul_f64(rng.gen_range(0.0..1.1));
        std::thread::sleep(delay);
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let status = child.wait().unwrap();
        if status.success() {
            finished += 1;
        } else {
            interrupted += 1;
        }

        // A fresh open cleans up after the dead child; what is visible is complete.
        let store = Store::open(&root).unwrap();
        assert!(
            files_in(&root.join("tmp")).is_empty(),
            "staging of the killed import was not removed"
        );
        check_store_consistent(&root);
        for visible in store.images().unwrap() {
            assert_eq!(
                visible.id.to_string(),
                image.id(),
                "only the complete image can be visible"
            );
            for layer in store.image_layers(&visible).unwrap() {
                assert!(store.has_blob(&layer.blob));
            }
        }
        drop(store);
        reset(&root);
    }
    eprintln!("killed imports: {interrupted} interrupted, {finished} finished before the kill (full run {full_run:?})");
    assert!(interrupted > 0, "no import was actually interrupted");

    let store = Store::open(&root).unwrap();
    store.import(&archive, None).unwrap();
    assert_complete(&store, &image);
}

/// Empties the store (removes images and collects garbage) for the next round.
fn reset(root: &Path) {
    let store = Store::open(root).unwrap();
    for image in store.images().unwrap() {
        store.remove_image(&image.id.to_string()).unwrap();
    }
    store.gc().unwrap();
    assert!(files_in(&root.join("blobs/sha256")).is_empty());
    assert!(files_in(&root.join("layers")).is_empty());
    assert!(files_in(&root.join("images")).is_empty());
}
