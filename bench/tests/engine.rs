//! The benchmark engine against the real `lamina` binary: quick runs with one
//! repetition of cheap workloads, checking the report's structure (never its
//! timings).
//!
//! The binary is looked up next to this test's target directory
//! (`<target>/<profile>/lamina`, built by `cargo build -p lamina` or by a
//! workspace test run); without it, or without root and `/dev/fuse`, the tests
//! print why and skip — unless `LAMINA_REQUIRE_PRIVILEGED=1`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use lamina_bench::{run, BenchOptions, Report, TargetKind, HTML_FILE, REFERENCE};
use test_support::privilege::{require_privileged, REQUIRE_ENV};

/// The squashfs peers, which serve the read workloads only.
const SQUASHFS_PEERS: [&str; 2] = ["kernel-squashfs", "squashfuse"];

/// The `lamina` binary of this build, or `None` after printing why the test skips.
fn lamina_binary(test: &str) -> Option<PathBuf> {
    if !require_privileged(test) {
        return None;
    }
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test>-<hash> → <target>/<profile>/lamina
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("lamina"))
        .filter(|b| b.is_file());
    match bin {
        Some(b) => Some(b),
        None if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!(
                "{test}: the lamina binary is not built next to this test (cargo build -p lamina)"
            )
        }
        None => {
            eprintln!("skipped {test}: the lamina binary is not built (cargo build -p lamina)");
            None
        }
    }
}

/// The ids of every available row of `lamina drivers` on a fresh store.
fn available_rows(lamina: &Path) -> Vec<String> {
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(lamina)
        .arg("--root")
        .arg(store.path())
        .args(["drivers", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["available"] == true)
        .map(|r| {
            format!(
                "{}/{}",
                r["driver"].as_str().unwrap(),
                r["frontend"].as_str().unwrap()
            )
        })
        .collect()
}

fn quick_options(lamina: PathBuf, root: &Path, workloads: &[&str]) -> BenchOptions {
    let mut opts = BenchOptions::new(lamina);
    opts.root = Some(root.to_path_buf());
    opts.quick = true;
    opts.repetitions = Some(1);
    opts.workloads = workloads.iter().map(|w| w.to_string()).collect();
    opts
}

/// Runs the engine, collecting its progress lines.
fn run_logged(opts: &BenchOptions) -> (Report, Vec<String>) {
    let mut lines = Vec::new();
    let report = run(opts, &mut |l| {
        eprintln!("{l}");
        lines.push(l.to_string());
    })
    .expect("benchmark run");
    (report, lines)
}

/// Checks ratios are the medians divided by the reference's median of the same workload.
fn check_ratios(report: &Report, reference: &str) {
    for w in &report.workloads {
        let Some(base) = w.results.iter().find(|r| r.target == reference) else {
            assert!(w.reference.is_none(), "{}: no reference measured", w.name);
            assert!(w.results.iter().all(|r| r.ratio.is_none()), "{}", w.name);
            continue;
        };
        assert_eq!(w.reference.as_deref(), Some(reference), "{}", w.name);
        for r in &w.results {
            let expected = r.summary.median / base.summary.median;
            let ratio = r
                .ratio
                .unwrap_or_else(|| panic!("{} {}: no ratio", w.name, r.target));
            assert!(
                (ratio - expected).abs() <= 1e-9 * expected.max(1.0),
                "{} {}",
                w.name,
                r.target
            );
        }
        assert_eq!(base.ratio, Some(1.0));
    }
}

#[test]
fn a_quick_run_measures_every_available_target_and_cleans_up() {
    let Some(lamina) = lamina_binary("a_quick_run_measures_every_available_target_and_cleans_up")
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let workloads = ["mount-shallow", "stat-warm", "chmod"];
    let (report, lines) = run_logged(&quick_options(lamina.clone(), root.path(), &workloads));

    // Every available Lamina row is a target, and so is every peer that was not skipped.
    let target_ids: Vec<&str> = report.targets.iter().map(|t| t.id.as_str()).collect();
    for row in available_rows(&lamina) {
        assert!(
            target_ids.contains(&row.as_str()),
            "{row} missing from {target_ids:?}"
        );
    }
    for s in &report.skipped {
        assert!(
            !target_ids.contains(&s.target.as_str()),
            "{} both measured and skipped",
            s.target
        );
        if s.reason == "not installed" {
            assert!(s.install_hint.is_some(), "{s:?}");
        }
    }
    let lamina_rows = report
        .targets
        .iter()
        .filter(|t| t.kind == TargetKind::Lamina)
        .count();
    assert!(lamina_rows >= 1, "no Lamina target: {report:?}");

    // Every workload has one sample of every target, in the targets' order;
    // only the read-only squashfs peers skip the workloads that are not reads.
    let names: Vec<&str> = report.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, workloads);
    for w in &report.workloads {
        assert!(w.failed.is_empty(), "{}: {:?}", w.name, w.failed);
        let skipped: Vec<&str> = w.skipped.iter().map(|s| s.target.as_str()).collect();
        let expected_skips: Vec<&str> = if w.name == "stat-warm" {
            Vec::new()
        } else {
            target_ids
                .iter()
                .copied()
                .filter(|t| SQUASHFS_PEERS.contains(t))
                .collect()
        };
        assert_eq!(skipped, expected_skips, "{}: {:?}", w.name, w.skipped);
        assert_eq!(w.unit, "s");
        let ids: Vec<&str> = w.results.iter().map(|r| r.target.as_str()).collect();
        let measured: Vec<&str> = target_ids
            .iter()
            .copied()
            .filter(|t| !skipped.contains(t))
            .collect();
        assert_eq!(ids, measured, "{}", w.name);
        for r in &w.results {
            assert_eq!(r.samples.len(), 1, "{} {}", w.name, r.target);
            assert!(r.samples[0] > 0.0);
            assert_eq!(r.summary.median, r.samples[0]);
        }
        // FUSE targets, Lamina's and the peers, report their daemon's memory.
        let fuse = |t: &str| t.starts_with("fuse-overlayfs") || t.ends_with("/fuse");
        for r in w.results.iter().filter(|r| fuse(&r.target)) {
            assert!(
                r.daemon_peak_rss_kib.is_some_and(|k| k > 0),
                "{} {}",
                w.name,
                r.target
            );
        }
    }
    if target_ids.contains(&REFERENCE) {
        assert_eq!(
            target_ids[0], REFERENCE,
            "the reference runs first in each repetition"
        );
    }
    check_ratios(&report, REFERENCE);
    assert!(lines.iter().any(|l| l.contains("stat-warm")));

    // JSON round-trips; the table and the HTML page show the workloads.
    assert_eq!(Report::from_json(&report.to_json()).unwrap(), report);
    let table = report.to_table();
    for w in workloads {
        assert!(table.contains(&format!("\n{w}: ")), "{table}");
    }
    let html_dir = tempfile::tempdir().unwrap();
    let page = report.write_html(html_dir.path()).unwrap();
    assert_eq!(page, html_dir.path().join(HTML_FILE));
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("<svg") && html.contains("chmod"));

    // Nothing is left mounted or on disk.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(root.path().to_str().unwrap()),
        "mounts left under {}",
        root.path().display()
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn import_is_measured_per_driver_relative_to_overlay2() {
    let Some(lamina) = lamina_binary("import_is_measured_per_driver_relative_to_overlay2") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (report, _) = run_logged(&quick_options(lamina.clone(), root.path(), &["import"]));
    let w = report.workload("import").expect("import workload");
    assert!(w.failed.is_empty(), "{:?}", w.failed);
    let mut drivers: Vec<String> = Vec::new();
    for row in available_rows(&lamina) {
        let driver = row.split('/').next().unwrap().to_string();
        if !drivers.contains(&driver) {
            drivers.push(driver);
        }
    }
    let measured: Vec<&str> = w.results.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(measured, drivers);
    assert!(w.results.iter().all(|r| r.samples.len() == 1));
    check_ratios(&report, "overlay2");
}

#[test]
fn filters_choose_the_targets_and_keep_the_reference() {
    let Some(lamina) = lamina_binary("filters_choose_the_targets_and_keep_the_reference") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut opts = quick_options(lamina, root.path(), &["mount-shallow"]);
    opts.drivers = vec!["vfs".into()];
    opts.frontends = vec!["kernel".into()];
    let (report, _) = run_logged(&opts);
    let ids: Vec<&str> = report.targets.iter().map(|t| t.id.as_str()).collect();
    let expected: Vec<&str> = if report.skipped.iter().any(|s| s.target == REFERENCE) {
        vec!["vfs/kernel"]
    } else {
        vec![REFERENCE, "vfs/kernel"]
    };
    assert_eq!(ids, expected);
    let w = report.workload("mount-shallow").unwrap();
    assert_eq!(w.results.len(), expected.len());
    check_ratios(&report, REFERENCE);

    opts.drivers = vec!["no-such-driver".into()];
    let err = run(&opts, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("no-such-driver") && err.contains("vfs"),
        "{err}"
    );
}

#[test]
fn squashfs_peers_read_the_squashfs_drivers_images_or_say_why_not() {
    let Some(lamina) =
        lamina_binary("squashfs_peers_read_the_squashfs_drivers_images_or_say_why_not")
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let workloads = ["read-warm", "readdir", "copy-up"];
    let mut opts = quick_options(lamina, root.path(), &workloads);
    // The squashfs driver is not a target: the run still writes its images for the peers.
    opts.drivers = vec![
        "overlay2".into(),
        "kernel-squashfs".into(),
        "squashfuse".into(),
    ];
    let (report, _) = run_logged(&opts);
    let target_ids: Vec<&str> = report.targets.iter().map(|t| t.id.as_str()).collect();
    for peer in SQUASHFS_PEERS {
        let measured = target_ids.contains(&peer);
        let skipped = report.skipped.iter().find(|s| s.target == peer);
        assert!(
            measured != skipped.is_some(),
            "{peer} must be measured or skipped: {report:?}"
        );
        if let Some(s) = skipped {
            assert!(!s.reason.is_empty());
            if peer == "squashfuse" && s.reason == "not installed" {
                assert_eq!(
                    s.install_hint.as_deref(),
                    Some("apt-get install squashfuse")
                );
            }
            continue;
        }
        for w in &report.workloads {
            assert!(w.failed.is_empty(), "{}: {:?}", w.name, w.failed);
            let result = w.results.iter().find(|r| r.target == peer);
            if w.name == "copy-up" {
                assert!(result.is_none(), "{peer} cannot serve copy-up");
                let skip = w.skipped.iter().find(|s| s.target == peer).unwrap();
                assert!(skip.reason.contains("read"), "{skip:?}");
            } else {
                let r = result.unwrap_or_else(|| panic!("{}: {peer} not measured", w.name));
                assert_eq!(r.samples.len(), 1);
                assert!(r.samples[0] > 0.0);
            }
        }
    }
    check_ratios(&report, REFERENCE);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(root.path().to_str().unwrap()),
        "mounts left under {}",
        root.path().display()
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

/// Whether `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

#[test]
fn squashfs_build_times_lamina_and_the_installed_tools_relative_to_lamina() {
    let Some(lamina) =
        lamina_binary("squashfs_build_times_lamina_and_the_installed_tools_relative_to_lamina")
    else {
        return;
    };
    if !available_rows(&lamina)
        .iter()
        .any(|r| r.starts_with("squashfs/"))
    {
        eprintln!("skipped: the squashfs driver is not available here");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut opts = quick_options(lamina, root.path(), &["squashfs-build"]);
    opts.drivers = vec!["squashfs".into()];
    let (report, _) = run_logged(&opts);
    let w = report
        .workload("squashfs-build")
        .expect("squashfs-build workload");
    assert!(w.failed.is_empty(), "{:?}", w.failed);
    assert!(
        w.description.contains("relative to Lamina"),
        "{}",
        w.description
    );
    let measured: Vec<&str> = w.results.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(measured[0], "lamina");
    for (tool, package) in [
        ("tar2sqfs", "squashfs-tools-ng"),
        ("mksquashfs", "squashfs-tools"),
    ] {
        if on_path(tool) {
            assert!(
                measured.contains(&tool),
                "{tool} not measured: {measured:?}"
            );
        } else {
            let s = w.skipped.iter().find(|s| s.target == tool).unwrap();
            assert_eq!(
                s.install_hint.as_deref(),
                Some(format!("apt-get install {package}").as_str())
            );
        }
    }
    for r in &w.results {
        assert_eq!(r.samples.len(), 1, "{}", r.target);
        assert!(r.samples[0] > 0.0);
    }
    check_ratios(&report, "lamina");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}
