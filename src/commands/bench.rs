//! `lamina bench`: drivers and frontends head to head, against the kernel and the peers.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lamina_bench::{run, BenchOptions};

use crate::cli::Format;

/// The options of `lamina bench`.
pub struct BenchArgs {
    pub drivers: Vec<String>,
    pub frontends: Vec<String>,
    pub workloads: Vec<String>,
    pub quick: bool,
    pub repetitions: Option<usize>,
    pub scratch: Option<PathBuf>,
    pub format: Format,
    pub report: Option<PathBuf>,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let lamina = std::env::current_exe().context("locating the lamina executable")?;
    let mut options = BenchOptions::new(lamina);
    options.root = args.scratch.clone();
    options.drivers = args.drivers.clone();
    options.frontends = args.frontends.clone();
    options.workloads = args.workloads.clone();
    options.quick = args.quick;
    options.repetitions = args.repetitions;
    let report = run(&options, &mut |line| eprintln!("{line}")).context("running the benchmark")?;
    match args.format {
        Format::Table => print!("{}", report.to_table()),
        Format::Json => println!("{}", report.to_json()),
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let page = report.write_html(dir)?;
        let json = dir.join("report.json");
        std::fs::write(&json, report.to_json())
            .with_context(|| format!("writing {}", json.display()))?;
        eprintln!("Report: {} and {}", page.display(), json.display());
    }
    Ok(())
}
