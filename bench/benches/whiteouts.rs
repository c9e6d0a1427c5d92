//! Whiteout conversion: applying a layer full of `.wh.` entries (and opaque
//! markers) as overlay whiteouts (0/0 character devices, `trusted.overlay.opaque`)
//! versus keeping them as AUFS `.wh.` files. Overlay mode needs root
//! (mknod, trusted xattrs); without it only the AUFS case runs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use drivers::apply::{apply_layer, WhiteoutMode};
use test_support::LayerBuilder;

const DIRS: usize = 10;
const WHITEOUTS_PER_DIR: usize = 50;

/// `DIRS` directories, each opaque, with `WHITEOUTS_PER_DIR` whiteouts.
fn whiteout_layer() -> Vec<u8> {
    let mut layer = LayerBuilder::new();
    for d in 0..DIRS {
        let dir = format!("etc/d{d:02}");
        layer = layer.dir(&dir, 0o755).opaque(&dir);
        for w in 0..WHITEOUTS_PER_DIR {
            layer = layer.whiteout(&format!("{dir}/gone{w:03}"));
        }
    }
    layer.to_tar()
}

fn bench_whiteouts(c: &mut Criterion) {
    let tar = whiteout_layer();
    let mut group = c.benchmark_group("whiteouts");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(
            (DIRS * (WHITEOUTS_PER_DIR + 1)) as u64,
        ));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut modes = vec![("aufs", WhiteoutMode::Aufs)];
    if root {
        modes.insert(0, ("overlay", WhiteoutMode::Overlay { userxattr: false }));
    } else {
        eprintln!("whiteouts/overlay skipped: mknod of 0/0 whiteouts needs root");
    }
    for (name, mode) in modes {
        group.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("temp dir"),
                |dir| {
                    black_box(apply_layer(dir.path(), &mut &tar[..], mode).expect("apply"));
                    dir
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_whiteouts);
criterion_main!(benches);
