//! The benchmark engine behind `lamina bench`, and criterion micro-benchmarks
//! (in `benches/`).
//!
//! [`run`] drives the `lamina` binary as a subprocess against a throw-away
//! store, exactly as a user would, and measures workloads — materialising an
//! image, mount time, cold and warm reads, random and parallel reads, stat
//! walks, readdir, copy-up, chmod, create/delete, untar — on every available
//! driver × frontend row of `lamina drivers` and on peers measured in the same
//! run: the kernel's overlayfs mounted directly over the overlay2 layer
//! directories (the reference of every ratio), `fuse-overlayfs` where
//! installed, and — on the read workloads — the kernel's squashfs and
//! `squashfuse` over the squashfs driver's layer images. The `squashfs-build`
//! workload times Lamina's squashfs writer against `tar2sqfs` and
//! `mksquashfs`. Targets are interleaved within each repetition, and the
//! [`Report`] holds every sample with its median and spread, the ratio to the
//! reference, the peak memory of FUSE daemons, and what was skipped and why.
//!
//! ```no_run
//! let mut opts = lamina_bench::BenchOptions::new(std::env::current_exe().unwrap());
//! opts.quick = true;
//! opts.workloads = vec!["mount-shallow".into(), "read-warm".into()];
//! let report = lamina_bench::run(&opts, &mut |line| eprintln!("{line}")).unwrap();
//! print!("{}", report.to_table());
//! report.write_html(std::path::Path::new("bench-report")).unwrap();
//! ```

#![warn(missing_docs)]

mod engine;
mod error;
mod fsops;
mod host;
mod html;
mod images;
mod lamina_cli;
mod mounts;
mod peers;
mod report;
mod squashfs_build;
mod squashfs_peers;
mod stats;
mod targets;
mod workloads;

pub use engine::{run, BenchOptions, DEFAULT_REPETITIONS, QUICK_REPETITIONS};
pub use error::BenchError;
pub use html::HTML_FILE;
pub use peers::REFERENCE;
pub use report::{Report, Skipped, TargetInfo, TargetKind, TargetResult, WorkloadReport};
pub use stats::Summary;
pub use workloads::WORKLOAD_NAMES;
