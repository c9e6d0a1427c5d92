//! The benchmark images, built in code (deterministic content, streamed to
//! disk), and their sizes at full and quick scale.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use test_support::{Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};

use crate::error::BenchError;
use crate::peers::LayerDirs;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Sizes of the benchmark data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scale {
    /// The file of the sequential read workloads.
    pub big_file: u64,
    /// The file of the random read workload.
    pub random_file: u64,
    /// 4 KiB reads per random-read sample.
    pub random_reads: u64,
    /// Files read at once by the parallel read workload.
    pub parallel_files: usize,
    /// Size of each of them.
    pub parallel_file: u64,
    /// Files in the tree the stat workloads walk.
    pub tree_files: usize,
    /// Files per directory of that tree.
    pub tree_fanout: usize,
    /// Entries of the directory the readdir workload lists.
    pub wide_entries: usize,
    /// The lower file the copy-up workload appends to.
    pub cow_file: u64,
    /// Lower files the chmod workload changes.
    pub chmod_files: usize,
    /// The lower file the chmod-big workload changes the attributes of.
    pub chmod_big_file: u64,
    /// Files the create-delete workload creates and deletes.
    pub create_delete_files: u64,
    /// Files in the archive the untar workload unpacks.
    pub untar_files: usize,
    /// Small files of the import image.
    pub import_files: usize,
    /// Bytes of the import image's big file.
    pub import_data: u64,
    /// Layers of the deep image.
    pub deep_layers: usize,
}

impl Scale {
    /// The sizes of a full run, or of a `--quick` one.
    pub fn new(quick: bool) -> Scale {
        if quick {
            Scale {
                big_file: 64 * MIB,
                random_file: 32 * MIB,
                random_reads: 8192,
                parallel_files: 4,
                parallel_file: 16 * MIB,
                tree_files: 2_000,
                tree_fanout: 100,
                wide_entries: 10_000,
                cow_file: 64 * MIB,
                chmod_files: 1_000,
                chmod_big_file: 64 * MIB,
                create_delete_files: 2_000,
                untar_files: 2_000,
                import_files: 1_000,
                import_data: 8 * MIB,
                deep_layers: 150,
            }
        } else {
            Scale {
                big_file: GIB,
                random_file: 256 * MIB,
                random_reads: 65_536,
                parallel_files: 4,
                parallel_file: 128 * MIB,
                tree_files: 25_000,
                tree_fanout: 100,
                wide_entries: 10_000,
                cow_file: 64 * MIB,
                chmod_files: 1_000,
                chmod_big_file: 256 * MIB,
                create_delete_files: 10_000,
                untar_files: 20_000,
                import_files: 10_000,
                import_data: 128 * MIB,
                deep_layers: 150,
            }
        }
    }
}

/// `bytes` as people read sizes (`64 MiB`, `1.0 GiB`).
pub(crate) fn human_bytes(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// Paths inside the benchmark images, relative to the image root.
pub(crate) mod paths {
    /// The big file of the sequential read workloads (files image).
    pub const BIG: &str = "data/big";
    /// The file of the random read workload (files image).
    pub const RANDOM: &str = "data/random";
    /// The tree the stat workloads walk (tree image).
    pub const TREE: &str = "tree";
    /// The directory the readdir workload lists (tree image).
    pub const WIDE: &str = "wide";
    /// The file the copy-up workload appends to (rw image).
    pub const COW: &str = "cow/file";
    /// The file of the chmod-big workload (rw image).
    pub const CHMOD_BIG: &str = "cow/chmod-big";
    /// The directory of the chmod workload's files (rw image).
    pub const CHMOD: &str = "chmod";
    /// An empty directory the write workloads work in (rw image).
    pub const SCRATCH: &str = "scratch";

    /// The `i`-th file of the parallel read workload (files image).
    pub fn parallel(i: usize) -> String {
        format!("data/par-{i}")
    }

    /// The `i`-th file of the chmod workload (rw image).
    pub fn chmod(i: usize) -> String {
        format!("{CHMOD}/f{i:04}")
    }
}

/// The images the workloads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum BenchImage {
    /// Big files: sequential, random and parallel reads.
    Files,
    /// A deep tree and a wide directory: stat and readdir.
    Tree,
    /// Lower files containers change: copy-up, chmod, create-delete, untar.
    Rw,
    /// Two small layers: mount time.
    Shallow,
    /// Many small layers: mount time.
    Deep,
    /// Gzip layers with many files and some data: materialisation time.
    Import,
}

impl BenchImage {
    /// The image's name in the store.
    pub fn name(self) -> &'static str {
        match self {
            BenchImage::Files => "bench-files:latest",
            BenchImage::Tree => "bench-tree:latest",
            BenchImage::Rw => "bench-rw:latest",
            BenchImage::Shallow => "bench-shallow:latest",
            BenchImage::Deep => "bench-deep:latest",
            BenchImage::Import => "bench-import:latest",
        }
    }

    /// The image at `scale`.
    pub fn builder(self, scale: &Scale) -> ImageBuilder {
        match self {
            BenchImage::Files => files_image(scale),
            BenchImage::Tree => tree_image(scale),
            BenchImage::Rw => rw_image(scale),
            BenchImage::Shallow => shallow_image(),
            BenchImage::Deep => deep_image(scale),
            BenchImage::Import => import_image(scale),
        }
    }

    /// Writes the image as a docker archive at `path`.
    pub fn write_archive(self, scale: &Scale, path: &Path) -> Result<ImageBuilder, BenchError> {
        let image = self.builder(scale);
        image
            .write_docker_archive(path, &[self.name()], DockerArchiveForm::Blobs)
            .map_err(|source| BenchError::Image {
                image: self.name().into(),
                source,
            })?;
        Ok(image)
    }
}

/// The overlay2 layer directories of `image` in the store at `store`, and the
/// squashfs driver's layer images, top first.
pub(crate) fn overlay2_layer_dirs(store: &Path, image: &ImageBuilder) -> LayerDirs {
    let chain = image.chain_ids();
    let hexes = chain
        .iter()
        .rev()
        .map(|c| c.strip_prefix("sha256:").unwrap_or(c));
    LayerDirs {
        lowers: hexes
            .clone()
            .map(|hex| store.join("overlay2").join(hex).join("diff"))
            .collect(),
        squashfs_images: hexes
            .map(|hex| store.join("squashfs").join(format!("{hex}.sqfs")))
            .collect(),
    }
}

fn base_layer() -> LayerBuilder {
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/os-release", "NAME=lamina-bench\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", "#!/bin/sh\n", 0o755)
}

fn files_image(scale: &Scale) -> ImageBuilder {
    // The big files are in the top layer, so vfs does not copy them from a parent.
    let mut top =
        LayerBuilder::new()
            .dir("data", 0o755)
            .generated_file(paths::BIG, scale.big_file, 1, 0o644);
    top = top.generated_file(paths::RANDOM, scale.random_file, 2, 0o644);
    for i in 0..scale.parallel_files {
        top = top.generated_file(
            &paths::parallel(i),
            scale.parallel_file,
            10 + i as u64,
            0o644,
        );
    }
    ImageBuilder::new()
        .layer(base_layer(), Compression::None)
        .layer(top, Compression::None)
}

fn tree_image(scale: &Scale) -> ImageBuilder {
    let mut lower = base_layer().dir(paths::TREE, 0o755);
    let dirs = scale.tree_files.div_ceil(scale.tree_fanout);
    for d in 0..dirs {
        let dir = format!("{}/d{d:04}", paths::TREE);
        lower = lower.dir(&dir, 0o755);
        let files = scale
            .tree_fanout
            .min(scale.tree_files - d * scale.tree_fanout);
        for f in 0..files {
            lower = lower.file(&format!("{dir}/f{f:03}"), format!("{d}/{f}\n"), 0o644);
        }
    }
    lower = lower.dir(paths::WIDE, 0o755);
    for e in 0..scale.wide_entries {
        lower = lower.file(&format!("{}/e{e:06}", paths::WIDE), "", 0o644);
    }
    // The top layer changes a little of everything, as images do.
    let top = LayerBuilder::new()
        .whiteout(&format!("{}/d0000/f000", paths::TREE))
        .file(&format!("{}/d0000/added", paths::TREE), "new\n", 0o644)
        .file(&format!("{}/d0000/f001", paths::TREE), "changed\n", 0o644)
        .file(&format!("{}/added", paths::WIDE), "", 0o644);
    ImageBuilder::new()
        .layer(lower, Compression::None)
        .layer(top, Compression::None)
}

fn rw_image(scale: &Scale) -> ImageBuilder {
    let mut lower = base_layer()
        .dir("cow", 0o755)
        .generated_file(paths::COW, scale.cow_file, 3, 0o644)
        .generated_file(paths::CHMOD_BIG, scale.chmod_big_file, 4, 0o644)
        .dir(paths::CHMOD, 0o755)
        .dir(paths::SCRATCH, 0o777);
    for i in 0..scale.chmod_files {
        lower = lower.file(&paths::chmod(i), format!("{i}\n"), 0o644);
    }
    let top = LayerBuilder::new().file("etc/marker", "rw\n", 0o644);
    ImageBuilder::new()
        .layer(lower, Compression::None)
        .layer(top, Compression::None)
}

fn shallow_image() -> ImageBuilder {
    let mut lower = base_layer().dir("usr/lib", 0o755);
    for i in 0..100 {
        lower = lower.file(
            &format!("usr/lib/lib{i:03}.so"),
            format!("lib {i}\n"),
            0o644,
        );
    }
    let mut top = LayerBuilder::new().dir("app", 0o755);
    for i in 0..100 {
        top = top.file(&format!("app/f{i:03}"), format!("app {i}\n"), 0o644);
    }
    ImageBuilder::new()
        .layer(lower, Compression::None)
        .layer(top, Compression::None)
}

fn deep_image(scale: &Scale) -> ImageBuilder {
    let mut image = ImageBuilder::new().layer(base_layer().dir("layers", 0o755), Compression::None);
    for l in 1..scale.deep_layers {
        let dir = format!("layers/l{l:03}");
        let mut layer =
            LayerBuilder::new()
                .dir(&dir, 0o755)
                .file("etc/version", format!("{l}\n"), 0o644);
        for f in 0..5 {
            layer = layer.file(&format!("{dir}/f{f}"), format!("{l}/{f}\n"), 0o644);
        }
        if l > 1 {
            layer = layer.whiteout(&format!("layers/l{:03}/f0", l - 1));
        }
        image = image.layer(layer, Compression::None);
    }
    image
}

fn import_image(scale: &Scale) -> ImageBuilder {
    let half = scale.import_files / 2;
    let mut first = base_layer().dir("usr/share/a", 0o755);
    for i in 0..half {
        first = first.generated_file(&format!("usr/share/a/{i:05}"), 1024, 100 + i as u64, 0o644);
    }
    let data = LayerBuilder::new().dir("opt", 0o755).generated_file(
        "opt/blob",
        scale.import_data,
        4,
        0o644,
    );
    let mut third = LayerBuilder::new().dir("usr/share/b", 0o755);
    for i in 0..(scale.import_files - half) {
        third = third.generated_file(
            &format!("usr/share/b/{i:05}"),
            1024,
            200_000 + i as u64,
            0o644,
        );
    }
    for i in (0..half).step_by(10) {
        third = third.whiteout(&format!("usr/share/a/{i:05}"));
    }
    let last = LayerBuilder::new().file("etc/config", "key=value\n", 0o644);
    ImageBuilder::new()
        .layer(first, Compression::Gzip)
        .layer(data, Compression::Gzip)
        .layer(third, Compression::Gzip)
        .layer(last, Compression::Gzip)
}

/// Writes the tar the untar workload unpacks (`untar/dNNN/fNNN`, 1 KiB files).
pub(crate) fn write_untar_archive(scale: &Scale, path: &Path) -> Result<(), BenchError> {
    let mut layer = LayerBuilder::new().dir("untar", 0o755);
    let per_dir = 200;
    for d in 0..scale.untar_files.div_ceil(per_dir) {
        let dir = format!("untar/d{d:03}");
        layer = layer.dir(&dir, 0o755);
        for f in 0..per_dir.min(scale.untar_files - d * per_dir) {
            layer = layer.generated_file(
                &format!("{dir}/f{f:03}"),
                1024,
                (d * per_dir + f) as u64,
                0o644,
            );
        }
    }
    let fail = |source| BenchError::Image {
        image: "untar archive".into(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(fail)?);
    layer.write_tar(&mut out).map_err(fail)?;
    out.flush().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_scale_is_smaller_where_the_work_is_long() {
        let (full, quick) = (Scale::new(false), Scale::new(true));
        assert!(quick.big_file < full.big_file);
        assert!(quick.tree_files < full.tree_files);
        assert!(quick.untar_files < full.untar_files);
        assert_eq!(full.big_file, GIB);
        assert_eq!(full.tree_files, 25_000);
        assert_eq!(quick.deep_layers, 150);
    }

    #[test]
    fn images_have_the_layers_the_workloads_expect() {
        let scale = Scale::new(true);
        assert_eq!(BenchImage::Shallow.builder(&scale).layer_count(), 2);
        assert_eq!(BenchImage::Deep.builder(&scale).layer_count(), 150);
        let tree = BenchImage::Tree.builder(&scale).expected_tree();
        assert!(tree.contains("/tree/d0000/f001"));
        assert!(!tree.contains("/tree/d0000/f000"));
        assert!(tree.contains(&format!("/wide/e{:06}", scale.wide_entries - 1)));
        let rw = BenchImage::Rw.builder(&scale).expected_tree();
        assert!(rw.contains(&format!("/{}", paths::chmod(scale.chmod_files - 1))));
        assert!(rw.contains("/cow/file") && rw.contains("/scratch"));
    }

    #[test]
    fn layer_dirs_are_listed_top_first() {
        let scale = Scale::new(true);
        let image = BenchImage::Shallow.builder(&scale);
        let dirs = overlay2_layer_dirs(Path::new("/s"), &image);
        let chain = image.chain_ids();
        let top_hex = chain[1].strip_prefix("sha256:").unwrap();
        assert_eq!(
            dirs.lowers[0],
            Path::new("/s/overlay2").join(top_hex).join("diff")
        );
        assert_eq!(dirs.lowers.len(), 2);
        assert_eq!(
            dirs.squashfs_images[0],
            Path::new("/s/squashfs").join(format!("{top_hex}.sqfs"))
        );
        assert_eq!(dirs.squashfs_images.len(), 2);
    }

    #[test]
    fn the_untar_archive_holds_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let scale = Scale {
            untar_files: 450,
            ..Scale::new(true)
        };
        let path = dir.path().join("u.tar");
        write_untar_archive(&scale, &path).unwrap();
        let mut archive = tar::Archive::new(File::open(&path).unwrap());
        let files = archive
            .entries()
            .unwrap()
            .filter(|e| e.as_ref().unwrap().header().entry_type().is_file())
            .count();
        assert_eq!(files, 450);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(64 * MIB), "64 MiB");
        assert_eq!(human_bytes(GIB), "1.0 GiB");
        assert_eq!(human_bytes(4 * KIB), "4 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
