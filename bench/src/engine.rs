//! One benchmark run: choose the targets, build and import the images, then
//! for every workload take the samples — targets interleaved within each
//! repetition (A B C, A B C, ...) so that machine noise hits all alike — and
//! summarise them into a [`Report`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::info;

use crate::error::{BenchError, IoContext};
use crate::host;
use crate::images::{overlay2_layer_dirs, write_untar_archive, BenchImage, Scale};
use crate::lamina_cli::LaminaCli;
use crate::mounts::WorkDir;
use crate::peers;
use crate::report::{Report, Skipped, TargetResult, WorkloadReport};
use crate::squashfs_build::{self, build_sample, SquashfsBuilder};
use crate::stats::Summary;
use crate::targets::{self, Target};
use crate::workloads::{import_sample, mounted_sample, Sample, SampleContext, Workload};
use crate::WORKLOAD_NAMES;

/// Repetitions of a full run when none are asked for.
pub const DEFAULT_REPETITIONS: usize = 5;
/// Repetitions of a `--quick` run when none are asked for.
pub const QUICK_REPETITIONS: usize = 2;

/// What to measure and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// The `lamina` binary to drive (the CLI passes its own executable).
    pub lamina: PathBuf,
    /// Where to make the run's throw-away directory (store and scratch space;
    /// removed at the end). The system temp dir when `None`. Its filesystem is
    /// the one measured.
    pub root: Option<PathBuf>,
    /// Lamina drivers, and peers by id, to measure; empty = all. The reference
    /// (`kernel-overlayfs`) is measured whenever it is available.
    pub drivers: Vec<String>,
    /// Frontends (`kernel`, `fuse`) to measure; empty = both.
    pub frontends: Vec<String>,
    /// Workloads to run (see [`WORKLOAD_NAMES`]); empty = all.
    pub workloads: Vec<String>,
    /// Smaller data sets and fewer default repetitions.
    pub quick: bool,
    /// Samples per workload and target; `None` = [`DEFAULT_REPETITIONS`]
    /// ([`QUICK_REPETITIONS`] when quick).
    pub repetitions: Option<usize>,
}

impl BenchOptions {
    /// Every workload on every available target, full size, default repetitions.
    pub fn new(lamina: impl Into<PathBuf>) -> BenchOptions {
        BenchOptions {
            lamina: lamina.into(),
            root: None,
            drivers: Vec::new(),
            frontends: Vec::new(),
            workloads: Vec::new(),
            quick: false,
            repetitions: None,
        }
    }

    /// The number of samples each workload takes per target.
    pub fn repetition_count(&self) -> usize {
        self.repetitions.unwrap_or(if self.quick {
            QUICK_REPETITIONS
        } else {
            DEFAULT_REPETITIONS
        })
    }

    /// The workloads asked for, in run order, without duplicates.
    fn selected_workloads(&self) -> Result<Vec<Workload>, BenchError> {
        let mut wanted = Vec::new();
        for name in &self.workloads {
            let w = Workload::from_name(name).ok_or_else(|| BenchError::UnknownWorkload {
                name: name.clone(),
                known: WORKLOAD_NAMES.join(", "),
            })?;
            wanted.push(w);
        }
        Ok(Workload::all()
            .into_iter()
            .filter(|w| wanted.is_empty() || wanted.contains(w))
            .collect())
    }
}

/// What one workload is measured on: a target, (for `import`) a driver, or
/// (for `squashfs-build`) an image builder.
enum Subject<'a> {
    Target(&'a Target),
    Driver(String),
    Builder(SquashfsBuilder),
}

impl Subject<'_> {
    fn id(&self) -> String {
        match self {
            Subject::Target(t) => t.id(),
            Subject::Driver(d) => d.clone(),
            Subject::Builder(b) => b.id().to_string(),
        }
    }
}

/// Runs the benchmark described by `opts`, reporting what it does through
/// `progress` (one line per step and per sample), and returns the report.
///
/// Needs root for mounts and for dropping caches; a target that fails is
/// reported as failed for that workload and the run goes on. Everything the
/// run mounts or creates is undone, also when it fails or panics.
pub fn run(opts: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let workloads = opts.selected_workloads()?;
    let repetitions = opts.repetition_count();
    if repetitions == 0 {
        return Err(BenchError::InvalidOption(
            "repetitions must be at least 1".into(),
        ));
    }
    let scale = Scale::new(opts.quick);

    let work = WorkDir::create(opts.root.as_deref())?;
    let cli = LaminaCli::new(&opts.lamina, &work.store());
    let lamina_version = cli.version()?;
    let rows = cli.drivers()?;
    let mut selection = targets::select(&rows, peers::discover(), &opts.drivers, &opts.frontends)?;
    if selection.targets.is_empty() {
        let why = selection
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.target, s.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(BenchError::NoTargets(if why.is_empty() {
            "no driver, frontend or peer matches the filters".into()
        } else {
            why
        }));
    }
    progress(&format!(
        "{lamina_version}: measuring {} on {}",
        workloads
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", "),
        selection
            .targets
            .iter()
            .map(Target::id)
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let mut ctx = SampleContext::new(cli.clone(), work.scratch(), scale);
    prepare(&mut ctx, &workloads, &mut selection.targets, progress)?;
    let cold_blocker = if workloads.iter().any(|w| w.is_cold()) {
        host::can_drop_caches().err()
    } else {
        None
    };

    let mut reports = Vec::new();
    for (i, &workload) in workloads.iter().enumerate() {
        progress(&format!(
            "[{}/{}] {}: {}",
            i + 1,
            workloads.len(),
            workload.name(),
            workload.description(&scale)
        ));
        reports.push(measure(
            &ctx,
            workload,
            &selection.targets,
            repetitions,
            cold_blocker.as_deref(),
            progress,
        ));
    }

    let report = Report {
        lamina_version,
        kernel: host::kernel_release(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        quick: opts.quick,
        repetitions,
        started_unix,
        duration_seconds: started.elapsed().as_secs_f64(),
        reference: peers::REFERENCE.into(),
        targets: selection.targets.iter().map(Target::info).collect(),
        skipped: selection.skipped,
        workloads: reports,
    };
    drop(ctx);
    drop(work);
    Ok(report)
}

/// Writes, imports and materialises the images the workloads need, and the
/// archives of the import and untar workloads.
fn prepare(
    ctx: &mut SampleContext,
    workloads: &[Workload],
    targets: &mut [Target],
    progress: &mut dyn FnMut(&str),
) -> Result<(), BenchError> {
    let scratch = ctx.scratch.clone();
    let scale = ctx.scale;
    if workloads.contains(&Workload::Import) {
        progress("writing the import image");
        let path = scratch.join("import.tar");
        BenchImage::Import.write_archive(&scale, &path)?;
        ctx.import_archive = Some(path);
    }
    if workloads.contains(&Workload::Untar) {
        progress("writing the untar archive");
        let path = scratch.join("untar.tar");
        write_untar_archive(&scale, &path)?;
        ctx.untar_archive = Some(path);
    }
    if workloads.contains(&Workload::SquashfsBuild) && measures_squashfs(targets) {
        progress("writing and unpacking the squashfs-build layer");
        ctx.build_input = Some(squashfs_build::write_build_input(&scale, &scratch)?);
    }
    let images: BTreeSet<BenchImage> = workloads
        .iter()
        .filter(|w| w.mounts())
        .map(|w| w.image())
        .collect();
    let has_peers = targets.iter().any(|t| matches!(t, Target::Peer(_)));
    let needs_squashfs_images = targets
        .iter()
        .any(|t| matches!(t, Target::Peer(p) if p.uses_squashfs_images()));
    for image in images {
        let name = image.name();
        progress(&format!("building and importing {name}"));
        let archive = scratch.join("image.tar");
        let builder = image.write_archive(&scale, &archive)?;
        ctx.cli.import(&archive, name)?;
        std::fs::remove_file(&archive).ctx("remove", &archive)?;
        let layers = overlay2_layer_dirs(ctx.cli.root(), &builder);
        drop(builder);

        // Materialise the image in every driver measured, so mounts in samples
        // only mount; peers read overlay2's layer directories.
        let mut done: Vec<String> = Vec::new();
        for t in targets.iter() {
            let Target::Lamina { driver, .. } = t else {
                continue;
            };
            if done.contains(driver) {
                continue;
            }
            done.push(driver.clone());
            progress(&format!("applying {name} with {driver}"));
            let mounted = ctx
                .mountpoint()
                .and_then(|mp| t.mount_image(&ctx.cli, name, &layers, mp))
                .and_then(|m| m.unmount());
            if let Err(e) = mounted {
                progress(&format!("  {}: {e}", t.id()));
            }
        }
        if has_peers && !done.iter().any(|d| d == "overlay2") {
            progress(&format!("applying {name} with overlay2 for the peers"));
            let prep = "bench-prep";
            if let Err(e) = ctx
                .cli
                .create("overlay2", name, prep)
                .and_then(|()| ctx.cli.rm(prep))
            {
                progress(&format!("  overlay2: {e}"));
            }
        }
        if needs_squashfs_images && !done.iter().any(|d| d == "squashfs") {
            progress(&format!("applying {name} with squashfs for the peers"));
            let prep = "bench-prep";
            if let Err(e) = ctx
                .cli
                .create("squashfs", name, prep)
                .and_then(|()| ctx.cli.rm(prep))
            {
                progress(&format!("  squashfs: {e}"));
            }
        }
        for t in targets.iter_mut() {
            if let Target::Peer(peer) = t {
                if let Err(e) = peer.prepare(&layers, &scratch) {
                    progress(&format!("  {}: {e}", peer.id()));
                }
            }
        }
        ctx.images.insert(image, layers);
    }
    host::sync();
    Ok(())
}

/// Whether Lamina's squashfs driver is among the targets.
fn measures_squashfs(targets: &[Target]) -> bool {
    targets
        .iter()
        .any(|t| matches!(t, Target::Lamina { driver, .. } if driver == "squashfs"))
}

/// Takes every sample of `workload` and summarises them.
fn measure(
    ctx: &SampleContext,
    workload: Workload,
    targets: &[Target],
    repetitions: usize,
    cold_blocker: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> WorkloadReport {
    let mut report = WorkloadReport {
        name: workload.name().into(),
        description: workload.description(&ctx.scale),
        unit: "s".into(),
        reference: None,
        results: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    let (subjects, reference): (Vec<Subject>, &str) = if workload.per_builder() {
        if !measures_squashfs(targets) {
            report.skipped.push(Skipped {
                target: "-".into(),
                reason: "Lamina's squashfs driver is not measured in this run".into(),
                install_hint: None,
            });
            return report;
        }
        let (builders, missing) = squashfs_build::discover();
        report.skipped.extend(missing);
        (
            builders.into_iter().map(Subject::Builder).collect(),
            squashfs_build::LAMINA,
        )
    } else if workload.per_driver() {
        let mut drivers: Vec<String> = Vec::new();
        for t in targets {
            if let Target::Lamina { driver, .. } = t {
                if !drivers.contains(driver) {
                    drivers.push(driver.clone());
                }
            }
        }
        (
            drivers.into_iter().map(Subject::Driver).collect(),
            "overlay2",
        )
    } else {
        let mut served = Vec::new();
        for t in targets {
            match t {
                Target::Peer(p) if p.read_only() && !workload.reads() => {
                    report.skipped.push(Skipped {
                        target: t.id(),
                        reason: "serves read-only views: measured on the read workloads only"
                            .into(),
                        install_hint: None,
                    })
                }
                _ => served.push(Subject::Target(t)),
            }
        }
        (served, peers::REFERENCE)
    };
    if subjects.is_empty() {
        report.skipped.push(Skipped {
            target: "-".into(),
            reason: "no Lamina driver is measured in this run".into(),
            install_hint: None,
        });
        return report;
    }
    if let (true, Some(why)) = (workload.is_cold(), cold_blocker) {
        for s in &subjects {
            report.skipped.push(Skipped {
                target: s.id(),
                reason: why.to_string(),
                install_hint: None,
            });
        }
        return report;
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); subjects.len()];
    let mut failures: Vec<Option<String>> = vec![None; subjects.len()];
    for rep in 0..repetitions {
        for (i, subject) in subjects.iter().enumerate() {
            if failures[i].is_some() {
                continue;
            }
            let id = subject.id();
            let result = match subject {
                Subject::Driver(d) => import_sample(ctx, d),
                Subject::Builder(b) => build_sample(ctx, b),
                Subject::Target(t) => mounted_sample(ctx, workload, t),
            };
            match result {
                Ok(sample) => {
                    progress(&format!(
                        "  {}/{repetitions} {id}: {}",
                        rep + 1,
                        crate::report::format_seconds(sample.seconds)
                    ));
                    samples[i].push(sample);
                }
                Err(e) => {
                    info!(workload = workload.name(), target = %id, error = %e, "sample failed");
                    progress(&format!("  {}/{repetitions} {id}: FAILED: {e}", rep + 1));
                    failures[i] = Some(e.to_string());
                }
            }
        }
    }

    for (i, subject) in subjects.iter().enumerate() {
        if let Some(reason) = failures[i].take() {
            report.failed.push(Skipped {
                target: subject.id(),
                reason,
                install_hint: None,
            });
            continue;
        }
        let seconds: Vec<f64> = samples[i].iter().map(|s| s.seconds).collect();
        let Some(summary) = Summary::of(&seconds) else {
            continue;
        };
        report.results.push(TargetResult {
            target: subject.id(),
            samples: seconds,
            summary,
            ratio: None,
            daemon_peak_rss_kib: samples[i]
                .iter()
                .filter_map(|s| s.daemon_peak_rss_kib)
                .max(),
        });
    }
    let reference_median = report
        .results
        .iter()
        .find(|r| r.target == reference)
        .map(|r| r.summary.median)
        .filter(|m| *m > 0.0);
    if let Some(base) = reference_median {
        report.reference = Some(reference.into());
        for r in &mut report.results {
            r.ratio = Some(r.summary.median / base);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_repetitions_depend_on_quick() {
        let mut opts = BenchOptions::new("/nonexistent/lamina");
        assert_eq!(opts.repetition_count(), DEFAULT_REPETITIONS);
        opts.quick = true;
        assert_eq!(opts.repetition_count(), QUICK_REPETITIONS);
        opts.repetitions = Some(7);
        assert_eq!(opts.repetition_count(), 7);
    }

    #[test]
    fn workloads_run_in_canonical_order_once() {
        let mut opts = BenchOptions::new("/nonexistent/lamina");
        opts.workloads = vec!["untar".into(), "import".into(), "untar".into()];
        assert_eq!(
            opts.selected_workloads().unwrap(),
            [Workload::Import, Workload::Untar]
        );
        opts.workloads.clear();
        assert_eq!(
            opts.selected_workloads().unwrap().len(),
            WORKLOAD_NAMES.len()
        );
    }

    #[test]
    fn bad_options_fail_before_anything_runs() {
        let mut opts = BenchOptions::new("/nonexistent/lamina");
        opts.workloads = vec!["fsck".into()];
        let mut lines = Vec::new();
        let err = run(&opts, &mut |l| lines.push(l.to_string())).unwrap_err();
        assert!(matches!(err, BenchError::UnknownWorkload { ref name, .. } if name == "fsck"));
        assert!(err.to_string().contains("read-cold"), "{err}");
        opts.workloads.clear();
        opts.repetitions = Some(0);
        assert!(matches!(
            run(&opts, &mut |_| {}).unwrap_err(),
            BenchError::InvalidOption(_)
        ));
        assert!(lines.is_empty());
    }

    #[test]
    fn a_missing_lamina_binary_is_reported() {
        let parent = tempfile::tempdir().unwrap();
        let mut opts = BenchOptions::new(parent.path().join("no-lamina"));
        opts.root = Some(parent.path().to_path_buf());
        let err = run(&opts, &mut |_| {}).unwrap_err();
        assert!(matches!(err, BenchError::Lamina { .. }), "{err}");
        // The throw-away directory is gone.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
