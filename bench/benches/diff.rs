//! Diff production: `drivers::export::write_layer_diff` comparing a parent
//! tree with a changed copy (added, changed and deleted files) and writing the
//! OCI layer tar.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use drivers::export::write_layer_diff;

const DIRS: usize = 20;
const FILES_PER_DIR: usize = 50;

fn write_tree(root: &Path) {
    for d in 0..DIRS {
        let dir = root.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).expect("dir");
        for f in 0..FILES_PER_DIR {
            fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}\n")).expect("file");
        }
    }
}

/// Changes every tenth file, deletes one file per directory, adds a directory.
fn change_tree(root: &Path) {
    for d in 0..DIRS {
        let dir = root.join(format!("d{d:02}"));
        for f in (0..FILES_PER_DIR).step_by(10) {
            fs::write(dir.join(format!("f{f:03}")), b"changed, and longer\n").expect("change");
        }
        fs::remove_file(dir.join("f001")).expect("delete");
    }
    fs::create_dir(root.join("added")).expect("add dir");
    fs::write(root.join("added/new"), b"new\n").expect("add file");
}

fn bench_diff(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (parent, child) = (dir.path().join("parent"), dir.path().join("child"));
    write_tree(&parent);
    write_tree(&child);
    change_tree(&child);
    let mut group = c.benchmark_group("write_layer_diff");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function(format!("{}_files_vs_parent", DIRS * FILES_PER_DIR), |b| {
        b.iter(|| {
            let stats =
                write_layer_diff(Some(&parent), &child, &mut std::io::sink()).expect("diff");
            black_box(stats)
        });
    });
    group.bench_function(
        format!("{}_files_from_scratch", DIRS * FILES_PER_DIR),
        |b| {
            b.iter(|| {
                black_box(write_layer_diff(None, &child, &mut std::io::sink()).expect("diff"))
            });
        },
    );
    group.finish();
}

criterion_group!(benches, bench_diff);
criterion_main!(benches);
