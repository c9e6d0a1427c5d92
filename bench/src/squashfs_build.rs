//! The `squashfs-build` workload: one layer tar turned into a squashfs image by
//! Lamina's squashfs writer (in-process, as the squashfs driver materialises a
//! layer), by `tar2sqfs` (squashfs-tools-ng, from the same tar) and by
//! `mksquashfs` (squashfs-tools, from the tar unpacked once beforehand), all
//! with the squashfs driver's default compressor, level and block size.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use drivers::squashfs::{write_image, ImageSettings, SquashfsOptions};
use test_support::LayerBuilder;

use crate::error::{BenchError, IoContext};
use crate::fsops;
use crate::host;
use crate::images::Scale;
use crate::report::Skipped;
use crate::workloads::{Sample, SampleContext};

/// The id of Lamina's builder, the reference of the workload.
pub(crate) const LAMINA: &str = "lamina";

/// Something that builds a squashfs image from a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SquashfsBuilder {
    /// Lamina's writer, in-process, from the tar.
    Lamina,
    /// `tar2sqfs`, from the tar on its standard input.
    Tar2sqfs(PathBuf),
    /// `mksquashfs`, from the unpacked directory.
    Mksquashfs(PathBuf),
}

impl SquashfsBuilder {
    /// Its id in reports.
    pub fn id(&self) -> &'static str {
        match self {
            SquashfsBuilder::Lamina => LAMINA,
            SquashfsBuilder::Tar2sqfs(_) => "tar2sqfs",
            SquashfsBuilder::Mksquashfs(_) => "mksquashfs",
        }
    }

    /// Builds the image of `input` at `out` (which must not exist) and syncs it.
    fn build(&self, input: &BuildInput, out: &Path) -> Result<(), BenchError> {
        let options = SquashfsOptions::default();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let compressor = options.compressor.to_string();
        let block_size = options.block_size.to_string();
        let fail = |reason: String| BenchError::Build {
            builder: self.id().into(),
            reason,
        };
        let mut command = match self {
            SquashfsBuilder::Lamina => {
                let settings = ImageSettings {
                    compressor: options.compressor,
                    level: options.level,
                    block_size: options.block_size,
                    workers,
                };
                let file = File::open(&input.tar).ctx("open", &input.tar)?;
                let mut tar = BufReader::with_capacity(256 * 1024, file);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
                write_image(out, &mut tar, &settings, now).map_err(|e| fail(e.to_string()))?;
                return Ok(());
            }
            SquashfsBuilder::Tar2sqfs(binary) => {
                let mut c = Command::new(binary);
                c.args(["-q", "-c", &compressor, "-b", &block_size])
                    .arg("-j")
                    .arg(workers.to_string());
                if let Some(level) = options.level {
                    c.arg("-X").arg(format!("level={level}"));
                }
                c.arg(out)
                    .stdin(File::open(&input.tar).ctx("open", &input.tar)?);
                c
            }
            SquashfsBuilder::Mksquashfs(binary) => {
                let mut c = Command::new(binary);
                c.arg(&input.dir)
                    .arg(out)
                    .args(["-comp", &compressor, "-b", &block_size])
                    .args(["-noappend", "-quiet", "-no-progress", "-processors"])
                    .arg(workers.to_string());
                if let Some(level) = options.level {
                    c.arg("-Xcompression-level").arg(level.to_string());
                }
                c.stdin(Stdio::null());
                c
            }
        };
        let result = command
            .stdout(Stdio::null())
            .output()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        if !result.status.success() {
            return Err(fail(format!(
                "{}: {}",
                result.status,
                String::from_utf8_lossy(&result.stderr).trim()
            )));
        }
        // Lamina's writer syncs its image; the tools' images are synced too.
        File::open(out).and_then(|f| f.sync_all()).ctx("sync", out)
    }
}

/// Makes the builder of a tool from the tool's path.
type MakeBuilder = fn(PathBuf) -> SquashfsBuilder;

/// Every builder: Lamina's, and the tools found on `PATH` (the others skipped,
/// with the package that installs them).
pub(crate) fn discover() -> (Vec<SquashfsBuilder>, Vec<Skipped>) {
    let mut builders = vec![SquashfsBuilder::Lamina];
    let mut skipped = Vec::new();
    let tools: [(&str, &str, MakeBuilder); 2] = [
        (
            "tar2sqfs",
            "apt-get install squashfs-tools-ng",
            SquashfsBuilder::Tar2sqfs,
        ),
        (
            "mksquashfs",
            "apt-get install squashfs-tools",
            SquashfsBuilder::Mksquashfs,
        ),
    ];
    for (name, install, make) in tools {
        match find_on_path(name) {
            Some(binary) => builders.push(make(binary)),
            None => skipped.push(Skipped {
                target: name.into(),
                reason: "not installed".into(),
                install_hint: Some(install.into()),
            }),
        }
    }
    (builders, skipped)
}

/// The executable `name` in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The layer every builder builds: as a tar, and unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildInput {
    /// The uncompressed layer tar.
    pub tar: PathBuf,
    /// The same layer unpacked (for `mksquashfs`).
    pub dir: PathBuf,
}

/// The layer of the workload at `scale`: the import image's content as one
/// layer (small files and one big file, no whiteouts).
fn build_layer(scale: &Scale) -> LayerBuilder {
    let mut layer = LayerBuilder::new()
        .dir("usr", 0o755)
        .dir("usr/share", 0o755)
        .dir("usr/share/a", 0o755);
    for i in 0..scale.import_files {
        layer = layer.generated_file(&format!("usr/share/a/{i:05}"), 1024, 100 + i as u64, 0o644);
    }
    layer
        .dir("opt", 0o755)
        .generated_file("opt/blob", scale.import_data, 4, 0o644)
}

/// Writes the layer tar into `scratch` and unpacks it there (outside any timing).
pub(crate) fn write_build_input(scale: &Scale, scratch: &Path) -> Result<BuildInput, BenchError> {
    let input = BuildInput {
        tar: scratch.join("squashfs-build.tar"),
        dir: scratch.join("squashfs-build"),
    };
    let fail = |source| BenchError::Image {
        image: "squashfs-build layer".into(),
        source,
    };
    let mut out = std::io::BufWriter::new(File::create(&input.tar).map_err(fail)?);
    build_layer(scale).write_tar(&mut out).map_err(fail)?;
    std::io::Write::flush(&mut out).map_err(fail)?;
    drop(out);
    fsops::untar(&input.tar, &input.dir).ctx("unpack", &input.tar)?;
    Ok(input)
}

/// What one sample builds, for the workload's description.
pub(crate) fn describe(scale: &Scale) -> String {
    let options = SquashfsOptions::default();
    let level = options
        .level
        .map(|l| format!(" level {l}"))
        .unwrap_or_default();
    format!(
        "build the squashfs image of one uncompressed layer tar ({} files of 1 KiB and a {} file; \
         {}{level}, {} KiB blocks, one job per CPU, image synced): Lamina's writer in-process \
         from the tar (as the squashfs driver materialises a layer), tar2sqfs from the tar, \
         mksquashfs from the tar unpacked beforehand; ratios are relative to Lamina's time",
        scale.import_files,
        crate::images::human_bytes(scale.import_data),
        options.compressor,
        options.block_size / 1024
    )
}

/// One sample: `builder` builds a fresh image of the prepared layer, timed.
pub(crate) fn build_sample(
    ctx: &SampleContext,
    builder: &SquashfsBuilder,
) -> Result<Sample, BenchError> {
    let input = ctx
        .build_input
        .as_ref()
        .ok_or_else(|| BenchError::Unprepared("the squashfs-build layer".into()))?;
    let out = ctx.scratch.join(format!("built-{}.sqfs", builder.id()));
    if out.exists() {
        std::fs::remove_file(&out).ctx("remove", &out)?;
    }
    host::sync();
    let start = Instant::now();
    let built = builder.build(input, &out);
    let seconds = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(&out).map(|m| m.len());
    let _ = std::fs::remove_file(&out);
    built?;
    match size {
        Ok(n) if n > 0 => Ok(Sample {
            seconds,
            daemon_peak_rss_kib: None,
        }),
        _ => Err(BenchError::Build {
            builder: builder.id().into(),
            reason: format!("no image at {}", out.display()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lamina_is_always_a_builder_and_missing_tools_say_how_to_install() {
        let (builders, skipped) = discover();
        assert_eq!(builders[0], SquashfsBuilder::Lamina);
        assert_eq!(builders.len() + skipped.len(), 3);
        for s in &skipped {
            assert!(s
                .install_hint
                .as_deref()
                .unwrap()
                .starts_with("apt-get install"));
        }
    }

    #[test]
    fn the_build_input_is_a_tar_and_its_unpacked_tree() {
        let dir = tempfile::tempdir().unwrap();
        let scale = Scale {
            import_files: 10,
            import_data: 4096,
            ..Scale::new(true)
        };
        let input = write_build_input(&scale, dir.path()).unwrap();
        assert!(input.tar.is_file());
        assert_eq!(
            std::fs::read_dir(input.dir.join("usr/share/a"))
                .unwrap()
                .count(),
            10
        );
        assert_eq!(
            std::fs::metadata(input.dir.join("opt/blob")).unwrap().len(),
            4096
        );
        assert!(describe(&scale).contains("10 files"));
    }
}
