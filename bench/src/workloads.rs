//! The workloads: what one sample of each does, on which image, and what it times.
//!
//! Every sample is self-contained: it mounts a fresh view (a fresh container for
//! writing workloads), prepares (warms the cache or drops it), times the
//! operation, and undoes everything. Each operation's result is checked (bytes
//! read, entries seen), so a broken view fails instead of looking fast.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{BenchError, IoContext};
use crate::fsops;
use crate::host;
use crate::images::{human_bytes, paths, BenchImage, Scale};
use crate::lamina_cli::LaminaCli;
use crate::mounts::{Mounted, Mountpoint};
use crate::peers::LayerDirs;
use crate::squashfs_build::BuildInput;
use crate::targets::Target;

/// The names of every workload, in the order a run does them (the CLI values).
pub const WORKLOAD_NAMES: &[&str] = &[
    "import",
    "squashfs-build",
    "mount-shallow",
    "mount-deep",
    "read-cold",
    "read-warm",
    "random-read",
    "parallel-read",
    "stat-cold",
    "stat-warm",
    "readdir",
    "copy-up",
    "chmod",
    "chmod-big",
    "create-delete",
    "untar",
];

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Materialise an image in a driver (`lamina create` on a fresh store).
    Import,
    /// Build a squashfs image of one layer with Lamina, tar2sqfs and mksquashfs.
    SquashfsBuild,
    /// Mount a 2-layer image.
    MountShallow,
    /// Mount a 150-layer image.
    MountDeep,
    /// Sequential read of the big file after dropping caches.
    ReadCold,
    /// Sequential read of the big file with a warm cache.
    ReadWarm,
    /// 4 KiB reads at random offsets, warm cache.
    RandomRead,
    /// One reader thread per file, all at once, warm cache.
    ParallelRead,
    /// Walk and lstat a tree after dropping caches.
    StatCold,
    /// Walk and lstat a tree with warm caches.
    StatWarm,
    /// List a wide directory.
    Readdir,
    /// Append a byte to a big lower file.
    CopyUp,
    /// chmod many lower files.
    Chmod,
    /// chmod, chown and utimens of one big lower file.
    ChmodBig,
    /// Create and delete many small files in a container.
    CreateDelete,
    /// Unpack a tar of many files into a container.
    Untar,
}

impl Workload {
    /// Every workload, in run order.
    pub fn all() -> [Workload; 16] {
        use Workload::*;
        [
            Import,
            SquashfsBuild,
            MountShallow,
            MountDeep,
            ReadCold,
            ReadWarm,
            RandomRead,
            ParallelRead,
            StatCold,
            StatWarm,
            Readdir,
            CopyUp,
            Chmod,
            ChmodBig,
            CreateDelete,
            Untar,
        ]
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        let i = Workload::all()
            .iter()
            .position(|w| *w == self)
            .expect("every workload is listed");
        WORKLOAD_NAMES[i]
    }

    /// The workload called `name`.
    pub fn from_name(name: &str) -> Option<Workload> {
        WORKLOAD_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Workload::all()[i])
    }

    /// The image it works on (`squashfs-build` builds the import image's
    /// content as one layer).
    pub fn image(self) -> BenchImage {
        use Workload::*;
        match self {
            Import | SquashfsBuild => BenchImage::Import,
            MountShallow => BenchImage::Shallow,
            MountDeep => BenchImage::Deep,
            ReadCold | ReadWarm | RandomRead | ParallelRead => BenchImage::Files,
            StatCold | StatWarm | Readdir => BenchImage::Tree,
            CopyUp | Chmod | ChmodBig | CreateDelete | Untar => BenchImage::Rw,
        }
    }

    /// Whether each sample starts from dropped caches.
    pub fn is_cold(self) -> bool {
        matches!(self, Workload::ReadCold | Workload::StatCold)
    }

    /// Whether it measures drivers (materialisation) rather than mounted views.
    pub fn per_driver(self) -> bool {
        self == Workload::Import
    }

    /// Whether it measures squashfs image builders rather than mounted views.
    pub fn per_builder(self) -> bool {
        self == Workload::SquashfsBuild
    }

    /// Whether its samples work on mounted views of an imported image.
    pub fn mounts(self) -> bool {
        !self.per_driver() && !self.per_builder()
    }

    /// Whether it only reads a mounted view (the workloads read-only peers serve).
    pub fn reads(self) -> bool {
        use Workload::*;
        matches!(
            self,
            ReadCold | ReadWarm | RandomRead | ParallelRead | StatCold | StatWarm | Readdir
        )
    }

    /// Whether it writes, and so works in a fresh container.
    fn writes(self) -> bool {
        matches!(
            self,
            Workload::CopyUp
                | Workload::Chmod
                | Workload::ChmodBig
                | Workload::CreateDelete
                | Workload::Untar
        )
    }

    /// What one sample does, with the sizes of `scale`.
    pub fn description(self, s: &Scale) -> String {
        use Workload::*;
        match self {
            Import => format!(
                "`lamina create` on a fresh store holding the imported image: applies 4 gzip layers \
                 ({} small files, a {} file, whiteouts) into the driver",
                s.import_files,
                human_bytes(s.import_data)
            ),
            SquashfsBuild => crate::squashfs_build::describe(s),
            MountShallow => "mount a 2-layer image read-only and list its root \
                             (for Lamina's rows: the whole `lamina mount` command)"
                .into(),
            MountDeep => format!(
                "mount a {}-layer image read-only and list its root \
                 (for Lamina's rows: the whole `lamina mount` command)",
                s.deep_layers
            ),
            ReadCold => format!(
                "sequential read (128 KiB reads) of a {} file after `sync; echo 3 > drop_caches`, fresh mount",
                human_bytes(s.big_file)
            ),
            ReadWarm => format!(
                "sequential read (128 KiB reads) of a {} file, read once before",
                human_bytes(s.big_file)
            ),
            RandomRead => format!(
                "{} reads of 4 KiB at random aligned offsets of a {} file, read once before",
                s.random_reads,
                human_bytes(s.random_file)
            ),
            ParallelRead => format!(
                "{} threads each reading a different {} file, all read once before",
                s.parallel_files,
                human_bytes(s.parallel_file)
            ),
            StatCold => format!(
                "find + lstat of a {}-file tree after `sync; echo 3 > drop_caches`, fresh mount",
                s.tree_files
            ),
            StatWarm => format!(
                "find + lstat of a {}-file tree, walked once before",
                s.tree_files
            ),
            Readdir => format!(
                "list a directory of {} entries, listed once before",
                s.wide_entries + 1
            ),
            CopyUp => format!(
                "append 1 byte to a {} lower file in a fresh container (copy-up)",
                human_bytes(s.cow_file)
            ),
            Chmod => format!("chmod {} lower files in a fresh container", s.chmod_files),
            ChmodBig => format!(
                "chmod, chown and utimens of a {} lower file in a fresh container \
                 (the first change copies it up)",
                human_bytes(s.chmod_big_file)
            ),
            CreateDelete => format!(
                "create {} files of 64 bytes, then delete them, in a fresh container",
                s.create_delete_files
            ),
            Untar => format!(
                "unpack a tar of {} files of 1 KiB into a fresh container",
                s.untar_files
            ),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Wall-clock seconds of the timed part.
    pub seconds: f64,
    /// Peak RSS of the serving daemon at the end of the sample, in KiB.
    pub daemon_peak_rss_kib: Option<u64>,
}

/// What samples need: the store, scratch space, the imported images.
pub(crate) struct SampleContext {
    /// The `lamina` binary on the run's store.
    pub cli: LaminaCli,
    /// Scratch space.
    pub scratch: PathBuf,
    /// This run's sizes.
    pub scale: Scale,
    /// The imported images and their overlay2 layer directories.
    pub images: BTreeMap<BenchImage, LayerDirs>,
    /// The docker archive of the import image, when the import workload runs.
    pub import_archive: Option<PathBuf>,
    /// The tar of the untar workload, when it runs.
    pub untar_archive: Option<PathBuf>,
    /// The layer of the squashfs-build workload, when it runs.
    pub build_input: Option<BuildInput>,
    counter: Cell<u64>,
}

impl SampleContext {
    /// A context with nothing imported yet.
    pub fn new(cli: LaminaCli, scratch: PathBuf, scale: Scale) -> SampleContext {
        SampleContext {
            cli,
            scratch,
            scale,
            images: BTreeMap::new(),
            import_archive: None,
            untar_archive: None,
            build_input: None,
            counter: Cell::new(0),
        }
    }

    /// A number not handed out before in this run.
    fn next(&self) -> u64 {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        n
    }

    /// A fresh, empty mountpoint in scratch.
    pub fn mountpoint(&self) -> Result<Mountpoint, BenchError> {
        Mountpoint::create(self.scratch.join(format!("mnt-{}", self.next())))
    }

    fn layers(&self, image: BenchImage) -> Result<&LayerDirs, BenchError> {
        self.images
            .get(&image)
            .ok_or_else(|| BenchError::Unprepared(format!("image {}", image.name())))
    }

    /// Mounts `image` on `target` at `mountpoint`: read-only, or as a fresh
    /// container when `container`.
    pub fn mount(
        &self,
        target: &Target,
        image: BenchImage,
        container: bool,
        mountpoint: Mountpoint,
    ) -> Result<Mounted, BenchError> {
        let layers = self.layers(image)?;
        if container {
            target.mount_container(
                &self.cli,
                image.name(),
                layers,
                format!("bench-c{}", self.next()),
                &self.scratch,
                mountpoint,
            )
        } else {
            target.mount_image(&self.cli, image.name(), layers, mountpoint)
        }
    }
}

/// Runs `op` and returns its wall-clock seconds and result.
fn timed<T>(op: impl FnOnce() -> Result<T, BenchError>) -> Result<(f64, T), BenchError> {
    let start = Instant::now();
    let value = op()?;
    Ok((start.elapsed().as_secs_f64(), value))
}

/// Fails unless an operation did the expected amount of work.
fn expect_work(what: &str, got: u64, want: u64) -> Result<(), BenchError> {
    if got == want {
        Ok(())
    } else {
        Err(BenchError::WrongView(format!(
            "{what}: got {got}, expected {want}"
        )))
    }
}

/// One sample of the per-driver `import` workload on `driver`: a fresh store,
/// the image imported (not timed), then `lamina create` timed.
pub(crate) fn import_sample(ctx: &SampleContext, driver: &str) -> Result<Sample, BenchError> {
    let archive = ctx
        .import_archive
        .as_deref()
        .ok_or_else(|| BenchError::Unprepared("the import image".into()))?;
    let store = tempfile::Builder::new()
        .prefix("import-store-")
        .tempdir_in(&ctx.scratch)
        .ctx("create a store in", &ctx.scratch)?;
    let cli = ctx.cli.with_root(store.path());
    let name = BenchImage::Import.name();
    cli.import(archive, name)?;
    let container = format!("bench-import-{}", ctx.next());
    host::sync();
    let (seconds, ()) = timed(|| cli.create(driver, name, &container))?;
    cli.rm(&container)?;
    Ok(Sample {
        seconds,
        daemon_peak_rss_kib: None,
    })
}

/// One sample of a mount-based workload on `target`.
pub(crate) fn mounted_sample(
    ctx: &SampleContext,
    workload: Workload,
    target: &Target,
) -> Result<Sample, BenchError> {
    let image = workload.image();
    if matches!(workload, Workload::MountShallow | Workload::MountDeep) {
        let mountpoint = ctx.mountpoint()?;
        host::sync();
        let (seconds, mounted) = timed(|| {
            let mounted = ctx.mount(target, image, false, mountpoint)?;
            fsops::list_dir(mounted.path()).ctx("list", mounted.path())?;
            Ok(mounted)
        })?;
        let daemon_peak_rss_kib = mounted.daemon_peak_rss_kib();
        mounted.unmount()?;
        return Ok(Sample {
            seconds,
            daemon_peak_rss_kib,
        });
    }
    let mounted = ctx.mount(target, image, workload.writes(), ctx.mountpoint()?)?;
    let seconds = run_on(ctx, workload, mounted.path())?;
    let daemon_peak_rss_kib = mounted.daemon_peak_rss_kib();
    mounted.unmount()?;
    Ok(Sample {
        seconds,
        daemon_peak_rss_kib,
    })
}

/// Prepares and times `workload` on the view mounted at `root`.
fn run_on(ctx: &SampleContext, workload: Workload, root: &Path) -> Result<f64, BenchError> {
    let s = &ctx.scale;
    host::sync();
    let drop_caches = || host::drop_caches().ctx("drop caches via", "/proc/sys/vm/drop_caches");
    let seconds = match workload {
        Workload::ReadCold | Workload::ReadWarm => {
            let big = root.join(paths::BIG);
            if workload == Workload::ReadCold {
                drop_caches()?;
            } else {
                fsops::read_file(&big).ctx("read", &big)?;
            }
            let (t, n) = timed(|| fsops::read_file(&big).ctx("read", &big))?;
            expect_work("bytes read", n, s.big_file)?;
            t
        }
        Workload::RandomRead => {
            let file = root.join(paths::RANDOM);
            fsops::read_file(&file).ctx("read", &file)?;
            let (t, n) =
                timed(|| fsops::random_reads(&file, s.random_reads, 0x5eed).ctx("read", &file))?;
            expect_work("bytes read", n, s.random_reads * fsops::RANDOM_READ_SIZE)?;
            t
        }
        Workload::ParallelRead => {
            let files: Vec<PathBuf> = (0..s.parallel_files)
                .map(|i| root.join(paths::parallel(i)))
                .collect();
            for f in &files {
                fsops::read_file(f).ctx("read", f)?;
            }
            let (t, n) = timed(|| fsops::parallel_read(&files).ctx("read", root))?;
            expect_work("bytes read", n, s.parallel_file * s.parallel_files as u64)?;
            t
        }
        Workload::StatCold | Workload::StatWarm => {
            let tree = root.join(paths::TREE);
            if workload == Workload::StatCold {
                drop_caches()?;
            } else {
                fsops::walk_lstat(&tree).ctx("walk", &tree)?;
            }
            let (t, n) = timed(|| fsops::walk_lstat(&tree).ctx("walk", &tree))?;
            let dirs = s.tree_files.div_ceil(s.tree_fanout) as u64;
            expect_work("entries seen", n, 1 + dirs + s.tree_files as u64)?;
            t
        }
        Workload::Readdir => {
            let wide = root.join(paths::WIDE);
            fsops::list_dir(&wide).ctx("list", &wide)?;
            let (t, n) = timed(|| fsops::list_dir(&wide).ctx("list", &wide))?;
            expect_work("entries listed", n, s.wide_entries as u64 + 1)?;
            t
        }
        Workload::CopyUp => {
            let file = root.join(paths::COW);
            let (t, ()) = timed(|| fsops::append_byte(&file).ctx("append to", &file))?;
            let len = std::fs::metadata(&file).ctx("stat", &file)?.len();
            expect_work("file size after the append", len, s.cow_file + 1)?;
            t
        }
        Workload::Chmod => {
            let files: Vec<PathBuf> = (0..s.chmod_files)
                .map(|i| root.join(paths::chmod(i)))
                .collect();
            let (t, n) = timed(|| fsops::chmod_all(&files, 0o600).ctx("chmod", root))?;
            expect_work("files changed", n, s.chmod_files as u64)?;
            t
        }
        Workload::ChmodBig => {
            let file = root.join(paths::CHMOD_BIG);
            let (t, ()) =
                timed(|| fsops::change_attributes(&file).ctx("change attributes of", &file))?;
            let len = std::fs::metadata(&file).ctx("stat", &file)?.len();
            expect_work("file size after the changes", len, s.chmod_big_file)?;
            t
        }
        Workload::CreateDelete => {
            let dir = root.join(paths::SCRATCH).join("create-delete");
            let (t, n) = timed(|| {
                fsops::create_delete(&dir, s.create_delete_files).ctx("create and delete in", &dir)
            })?;
            expect_work("files created", n, s.create_delete_files)?;
            t
        }
        Workload::Untar => {
            let archive = ctx
                .untar_archive
                .as_deref()
                .ok_or_else(|| BenchError::Unprepared("the untar archive".into()))?;
            let dest = root.join(paths::SCRATCH);
            let (t, n) = timed(|| fsops::untar(archive, &dest).ctx("untar into", &dest))?;
            let dirs = s.untar_files.div_ceil(200) as u64;
            expect_work("entries unpacked", n, 1 + dirs + s.untar_files as u64)?;
            t
        }
        Workload::Import
        | Workload::SquashfsBuild
        | Workload::MountShallow
        | Workload::MountDeep => {
            unreachable!("timed by their own sample functions")
        }
    };
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_workloads_correspond() {
        assert_eq!(WORKLOAD_NAMES.len(), Workload::all().len());
        for w in Workload::all() {
            assert_eq!(Workload::from_name(w.name()), Some(w));
            assert!(!w.description(&Scale::new(true)).is_empty());
        }
        assert_eq!(Workload::from_name("nope"), None);
    }

    #[test]
    fn descriptions_carry_the_run_sizes() {
        let full = Scale::new(false);
        assert!(Workload::ReadCold.description(&full).contains("1.0 GiB"));
        assert!(Workload::StatWarm.description(&full).contains("25000-file"));
        assert!(Workload::MountDeep.description(&full).contains("150-layer"));
        assert!(Workload::ReadWarm
            .description(&Scale::new(true))
            .contains("64 MiB"));
    }

    #[test]
    fn only_cold_workloads_drop_caches_and_only_writers_use_containers() {
        let cold: Vec<_> = Workload::all()
            .into_iter()
            .filter(|w| w.is_cold())
            .collect();
        assert_eq!(cold, [Workload::ReadCold, Workload::StatCold]);
        assert!(Workload::Untar.writes() && !Workload::Readdir.writes());
        assert!(Workload::Import.per_driver() && !Workload::MountDeep.per_driver());
        assert!(Workload::SquashfsBuild.per_builder() && !Workload::SquashfsBuild.mounts());
        assert!(Workload::ReadCold.reads() && Workload::Readdir.reads());
        assert!(!Workload::CopyUp.reads() && !Workload::MountShallow.reads());
    }
}
