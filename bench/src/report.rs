//! The result of a benchmark run: samples and their summary per workload and
//! target, ratios to the reference, what was skipped and why. Serialisable as
//! JSON; printable as a table ([`Report::to_table`]) and as an HTML page
//! ([`Report::write_html`]).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `lamina --version` of the binary measured.
    pub lamina_version: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// CPUs available to the run.
    pub cpus: usize,
    /// Whether the run used the reduced `--quick` sizes.
    pub quick: bool,
    /// Samples per workload and target.
    pub repetitions: usize,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// How long the whole run took, setup included, in seconds.
    pub duration_seconds: f64,
    /// The id of the reference target of mount-based workloads (`kernel-overlayfs`).
    pub reference: String,
    /// Every target measured, in the order each repetition visits them.
    pub targets: Vec<TargetInfo>,
    /// Targets that were not measured at all, with the reason.
    pub skipped: Vec<Skipped>,
    /// One entry per workload, in the order they ran.
    pub workloads: Vec<WorkloadReport>,
}

/// Whether a target is Lamina's or another filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A Lamina driver × frontend row.
    Lamina,
    /// A peer filesystem measured for comparison.
    Peer,
}

/// A target of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// `driver/frontend` for Lamina's rows, the peer's id otherwise.
    pub id: String,
    /// Lamina's or a peer.
    pub kind: TargetKind,
    /// What it is (versions included).
    pub description: String,
}

/// A target left out of a run or a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The target's id.
    pub target: String,
    /// Why.
    pub reason: String,
    /// The command that makes it available, when installing something helps.
    pub install_hint: Option<String>,
}

/// The results of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// The workload's name (the CLI value).
    pub name: String,
    /// What one sample does, with this run's sizes.
    pub description: String,
    /// The unit of samples: `s` (wall-clock seconds; lower is better).
    pub unit: String,
    /// The target the ratios are relative to, when it was measured.
    pub reference: Option<String>,
    /// One entry per target measured (for `import`, per driver).
    pub results: Vec<TargetResult>,
    /// Targets this workload does not apply to or cannot run on here.
    pub skipped: Vec<Skipped>,
    /// Targets whose samples failed (the error of the first failure).
    pub failed: Vec<Skipped>,
}

/// The samples of one workload on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// The target's id (for `import`: the driver's name).
    pub target: String,
    /// Every sample, in repetition order.
    pub samples: Vec<f64>,
    /// Median, quartiles and extremes of the samples.
    pub summary: Summary,
    /// This median divided by the reference's median in the same run.
    pub ratio: Option<f64>,
    /// The largest peak resident set size (`VmHWM`) of the daemon serving the
    /// mount, over all samples, in KiB (FUSE targets).
    pub daemon_peak_rss_kib: Option<u64>,
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }

    /// Reads a report written by [`Report::to_json`].
    pub fn from_json(json: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The workload named `name`.
    pub fn workload(&self, name: &str) -> Option<&WorkloadReport> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// The report as aligned text for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "lamina bench: {}, Linux {}, {} CPUs, {}{} repetition{}, {}",
            self.lamina_version,
            self.kernel,
            self.cpus,
            if self.quick { "quick, " } else { "" },
            self.repetitions,
            if self.repetitions == 1 { "" } else { "s" },
            format_duration(self.duration_seconds)
        );
        let _ = writeln!(
            out,
            "ratio = median / median of the reference ({}; for import: overlay2) in this run; lower is faster",
            self.reference
        );
        for w in &self.workloads {
            let _ = writeln!(out, "\n{}: {}", w.name, w.description);
            if !w.results.is_empty() {
                let width = w
                    .results
                    .iter()
                    .map(|r| r.target.len())
                    .max()
                    .unwrap_or(0)
                    .max(6);
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>10}  {:>10}  {:>10}  {:>7}  {:>11}",
                    "target", "median", "min", "max", "ratio", "daemon RSS"
                );
                for r in &w.results {
                    let _ = writeln!(
                        out,
                        "  {:<width$}  {:>10}  {:>10}  {:>10}  {:>7}  {:>11}",
                        r.target,
                        format_seconds(r.summary.median),
                        format_seconds(r.summary.min),
                        format_seconds(r.summary.max),
                        r.ratio
                            .map(|x| format!("{x:.2}"))
                            .unwrap_or_else(|| "-".into()),
                        r.daemon_peak_rss_kib.map(format_kib).unwrap_or_default()
                    );
                }
            }
            for s in &w.skipped {
                let _ = writeln!(out, "  skipped {}: {}", s.target, s.reason);
            }
            for s in &w.failed {
                let _ = writeln!(out, "  FAILED {}: {}", s.target, s.reason);
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\nnot measured:");
            for s in &self.skipped {
                let _ = write!(out, "  {}: {}", s.target, s.reason);
                if let Some(hint) = &s.install_hint {
                    let _ = write!(out, " (install: {hint})");
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Seconds as people read them: `850 µs`, `12.3 ms`, `1.52 s`.
pub(crate) fn format_seconds(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A run's length: `42 s`, `3 min 05 s`.
pub(crate) fn format_duration(s: f64) -> String {
    let total = s.round() as u64;
    if total < 60 {
        format!("{total} s")
    } else {
        format!("{} min {:02} s", total / 60, total % 60)
    }
}

/// KiB as people read them: `812 KiB`, `14.2 MiB`.
pub(crate) fn format_kib(kib: u64) -> String {
    if kib < 1024 {
        format!("{kib} KiB")
    } else {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small report with a reference, a FUSE target, a skip and a failure.
    pub(crate) fn sample_report() -> Report {
        let result = |target: &str, samples: &[f64], ratio: f64, rss: Option<u64>| TargetResult {
            target: target.into(),
            samples: samples.to_vec(),
            summary: Summary::of(samples).unwrap(),
            ratio: Some(ratio),
            daemon_peak_rss_kib: rss,
        };
        Report {
            lamina_version: "lamina 0.1.0".into(),
            kernel: "6.18.0".into(),
            cpus: 2,
            quick: true,
            repetitions: 2,
            started_unix: 1_700_000_000,
            duration_seconds: 75.4,
            reference: "kernel-overlayfs".into(),
            targets: vec![
                TargetInfo {
                    id: "kernel-overlayfs".into(),
                    kind: TargetKind::Peer,
                    description: "the kernel's overlayfs".into(),
                },
                TargetInfo {
                    id: "vfs/fuse".into(),
                    kind: TargetKind::Lamina,
                    description: "Lamina's vfs driver through the fuse frontend".into(),
                },
            ],
            skipped: vec![Skipped {
                target: "fuse-overlayfs-cargo".into(),
                reason: "not installed".into(),
                install_hint: Some("cargo install fuse-overlayfs".into()),
            }],
            workloads: vec![WorkloadReport {
                name: "read-warm".into(),
                description: "sequential read of a 64 MiB file <warm>".into(),
                unit: "s".into(),
                reference: Some("kernel-overlayfs".into()),
                results: vec![
                    result("kernel-overlayfs", &[0.010, 0.012], 1.0, None),
                    result("vfs/fuse", &[0.030, 0.036], 3.0, Some(20_480)),
                ],
                skipped: vec![],
                failed: vec![Skipped {
                    target: "overlay2/fuse".into(),
                    reason: "mount failed".into(),
                    install_hint: None,
                }],
            }],
        }
    }

    #[test]
    fn json_round_trips() {
        let report = sample_report();
        let json = report.to_json();
        assert_eq!(Report::from_json(&json).unwrap(), report);
        assert!(json.contains("\"daemon_peak_rss_kib\": 20480"));
    }

    #[test]
    fn the_table_shows_every_number_skip_and_failure() {
        let table = sample_report().to_table();
        assert!(
            table.contains("lamina 0.1.0, Linux 6.18.0, 2 CPUs, quick, 2 repetitions, 1 min 15 s")
        );
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with("vfs/fuse"))
            .unwrap();
        assert!(
            line.contains("33.0 ms") && line.contains("3.00") && line.contains("20.0 MiB"),
            "{line}"
        );
        assert!(table.contains("FAILED overlay2/fuse: mount failed"));
        assert!(table.contains(
            "fuse-overlayfs-cargo: not installed (install: cargo install fuse-overlayfs)"
        ));
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(format_seconds(0.000_25), "250 µs");
        assert_eq!(format_seconds(0.0123), "12.3 ms");
        assert_eq!(format_seconds(2.5), "2.50 s");
        assert_eq!(format_duration(42.4), "42 s");
        assert_eq!(format_duration(185.0), "3 min 05 s");
        assert_eq!(format_kib(800), "800 KiB");
    }
}
