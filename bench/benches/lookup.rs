//! Path lookup through a stack of layers, as the FUSE frontend resolves a
//! name: `DirLayer::lookup` on each layer from the top until one has the path.
//! The path exists only in the bottom layer, so a stack of N layers costs
//! N - 1 misses and one hit.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use drivers::dirlayer::DirLayer;
use drivers::{LayerReader, WhiteoutFormat};

const DEPTHS: [usize; 3] = [1, 10, 50];
const TARGET: &str = "usr/lib/deep/target.so";

/// Writes `n` layer directories under `root`; only layer 0 (the bottom) has `TARGET`.
fn layers(root: &Path, n: usize) -> Vec<DirLayer> {
    let mut stack = Vec::with_capacity(n);
    for i in 0..n {
        let dir = root.join(format!("layer{i:03}"));
        fs::create_dir_all(dir.join("usr/lib/deep")).expect("layer dirs");
        fs::write(dir.join(format!("usr/lib/deep/own{i}")), b"x").expect("layer file");
        if i == 0 {
            fs::write(dir.join(TARGET), b"target").expect("target");
        }
        stack.push(
            DirLayer::open(&dir, WhiteoutFormat::Overlay { userxattr: false }).expect("open"),
        );
    }
    stack.reverse(); // top first
    stack
}

/// Resolves `path` through `stack` (top first) as a merged view does.
fn resolve(stack: &[DirLayer], path: &Path) -> Option<drivers::Entry> {
    stack
        .iter()
        .find_map(|layer| layer.lookup(path).expect("lookup"))
}

fn bench_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("lookup_through_layers");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for n in DEPTHS {
        let stack = layers(&dir.path().join(format!("stack{n}")), n);
        assert!(resolve(&stack, Path::new(TARGET)).is_some());
        group.bench_with_input(BenchmarkId::from_parameter(n), &stack, |b, stack| {
            b.iter(|| black_box(resolve(stack, Path::new(TARGET))));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
