//! Applying a layer tar (`drivers::apply::apply_layer`) from memory into a
//! fresh directory: the cost of the safe applier per entry.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use drivers::apply::{apply_layer, WhiteoutMode};
use test_support::LayerBuilder;

/// A layer of `dirs` directories with `files_per_dir` small files each.
fn small_files_layer(dirs: usize, files_per_dir: usize) -> Vec<u8> {
    let mut layer = LayerBuilder::new().dir("usr", 0o755);
    for d in 0..dirs {
        let dir = format!("usr/d{d:03}");
        layer = layer.dir(&dir, 0o755);
        for f in 0..files_per_dir {
            layer = layer.file(&format!("{dir}/f{f:03}"), format!("{d}/{f}\n"), 0o644);
        }
        layer = layer.symlink(&format!("{dir}/link"), "f000");
    }
    layer.to_tar()
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_layer");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (dirs, per_dir) in [(10, 10), (20, 25)] {
        let tar = small_files_layer(dirs, per_dir);
        let entries = (1 + dirs * (per_dir + 2)) as u64;
        group.throughput(Throughput::Elements(entries));
        group.bench_function(format!("{entries}_entries"), |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("temp dir"),
                |dir| {
                    let stats = apply_layer(dir.path(), &mut &tar[..], WhiteoutMode::Remove)
                        .expect("apply");
                    black_box(stats);
                    dir
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
