//! Property test of diff and commit: for random operation sequences run in a
//! container, `lamina diff` names exactly what the merged view changed, and
//! importing the committed layer on top of the image gives the same tree as the
//! container had. Runs for every driver the kernel frontend serves here.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{require_privileged, Lamina};
use proptest::prelude::*;
use test_support::tree::{compare_trees, scan_tree, CompareOptions, Tree};
use test_support::{Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};

const NAMES: &[&str] = &["a", "b", "d/a", "d/b", "d/e", "d/e/a", "x", "x/y"];

#[derive(Debug, Clone)]
enum Op {
    Write(usize, u8),
    Append(usize),
    Truncate(usize, u8),
    Chmod(usize, u32),
    Chown(usize, u32),
    Unlink(usize),
    Mkdir(usize),
    RemoveAll(usize),
    Rename(usize, usize),
    Symlink(usize, usize),
    Hardlink(usize, usize),
    SetXattr(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    prop_oneof![
        (n.clone(), any::<u8>()).prop_map(|(p, b)| Op::Write(p, b)),
        n.clone().prop_map(Op::Append),
        (n.clone(), 0u8..4).prop_map(|(p, l)| Op::Truncate(p, l)),
        (
            n.clone(),
            prop_oneof![Just(0o600u32), Just(0o755), Just(0o4755), Just(0o1777)]
        )
            .prop_map(|(p, m)| Op::Chmod(p, m)),
        (n.clone(), prop_oneof![Just(0u32), Just(1000), Just(4242)])
            .prop_map(|(p, u)| Op::Chown(p, u)),
        n.clone().prop_map(Op::Unlink),
        n.clone().prop_map(Op::Mkdir),
        n.clone().prop_map(Op::RemoveAll),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::Symlink(a, b)),
        (n.clone(), n.clone()).prop_map(|(a, b)| Op::Hardlink(a, b)),
        (n, any::<u8>()).prop_map(|(p, v)| Op::SetXattr(p, v)),
    ]
}

/// Runs one operation; failures (a missing path, a directory in the way, EXDEV)
/// are part of the game: both sides of the comparison see the same result.
fn run(root: &Path, op: &Op) {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    let p = |i: usize| root.join(NAMES[i]);
    let _ = match op {
        Op::Write(i, b) => fs::write(p(*i), vec![*b; 1 + *b as usize]),
        Op::Append(i) => fs::OpenOptions::new()
            .append(true)
            .open(p(*i))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"+")),
        Op::Truncate(i, l) => fs::OpenOptions::new()
            .write(true)
            .open(p(*i))
            .and_then(|f| f.set_len(*l as u64)),
        Op::Chmod(i, m) => fs::set_permissions(p(*i), fs::Permissions::from_mode(*m)),
        Op::Chown(i, u) => std::os::unix::fs::lchown(p(*i), Some(*u), Some(*u)),
        Op::Unlink(i) => fs::remove_file(p(*i)),
        Op::Mkdir(i) => fs::create_dir(p(*i)),
        Op::RemoveAll(i) => fs::remove_dir_all(p(*i)),
        Op::Rename(a, b) => fs::rename(p(*a), p(*b)),
        Op::Symlink(a, b) => std::os::unix::fs::symlink(NAMES[*b], p(*a)),
        Op::Hardlink(a, b) => fs::hard_link(p(*a), p(*b)),
        Op::SetXattr(i, v) => {
            let path = std::ffi::CString::new(p(*i).into_os_string().into_encoded_bytes()).unwrap();
            let value = [*v];
            // SAFETY: valid NUL-terminated strings and a one-byte value.
            let r = unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    c"user.prop".as_ptr(),
                    value.as_ptr().cast(),
                    1,
                    0,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    };
}

fn base_image() -> ImageBuilder {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("a", "base a", 0o644)
                .dir("d", 0o755)
                .file("d/a", "base d/a", 0o640)
                .dir("d/e", 0o700)
                .owner(1000, 1000)
                .file("d/e/a", "deep", 0o644)
                .hardlink("d/b", "d/a"),
            Compression::Gzip,
        )
        .layer(
            LayerBuilder::new()
                .whiteout("a")
                .file("b", "upper b", 0o600),
            Compression::None,
        )
}

/// Checks that every `lamina diff` line agrees with the two trees, and that
/// every changed path is covered by a line of its own or of an added or
/// deleted ancestor.
fn check_diff(before: &Tree, after: &Tree, diff: &str) -> Result<(), String> {
    let mut listed: BTreeMap<String, char> = BTreeMap::new();
    for line in diff.lines() {
        let (kind, path) = line
            .split_once(' ')
            .ok_or(format!("bad diff line {line:?}"))?;
        let kind = kind.chars().next().unwrap();
        let ok = match kind {
            'A' => after.contains(path) && !before.contains(path),
            'D' => before.contains(path) && !after.contains(path),
            'C' => before.contains(path) && after.contains(path),
            _ => false,
        };
        if !ok {
            return Err(format!("diff line {line:?} disagrees with the trees"));
        }
        listed.insert(path.to_string(), kind);
    }
    let covered = |path: &str| {
        listed.contains_key(path)
            || listed
                .iter()
                .any(|(p, k)| matches!(k, 'A' | 'D') && path.starts_with(&format!("{p}/")))
    };
    for (path, node) in &after.nodes {
        let changed = match before.get(path) {
            None => true,
            Some(old) => {
                let mut a = old.clone();
                let mut b = node.clone();
                if matches!(a.kind, test_support::tree::NodeKind::Dir) {
                    a.mtime = 0;
                    b.mtime = 0;
                }
                a.link_group = None;
                b.link_group = None;
                a != b
            }
        };
        if changed && !covered(path) {
            return Err(format!("{path} changed but lamina diff does not say so"));
        }
    }
    for path in before.nodes.keys() {
        if !after.contains(path) && !covered(path) {
            return Err(format!(
                "{path} was deleted but lamina diff does not say so"
            ));
        }
    }
    Ok(())
}

fn roundtrip(driver: &str, frontend: &str) {
    let test = format!("roundtrip {driver} × {frontend}");
    if !require_privileged(&test) {
        return;
    }
    let l = Lamina::new();
    let p = l.path("base.tar");
    base_image()
        .write_docker_archive(&p, &["base:1"], DockerArchiveForm::Blobs)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    let m = l.mountpoint("m");
    let counter = std::cell::Cell::new(0u32);
    let config = ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..12))| {
        counter.set(counter.get() + 1);
        let case = counter.get();
        let c1 = format!("c{case}");
        let c2 = format!("c{case}-committed");
        let img = format!("committed:{case}");
        l.ok(["create", "--driver", driver, "base:1", &c1]);
        let (before, after) = {
            let g = l.mount(&["--frontend", frontend, &c1], &m);
            let before = scan_tree(&m).unwrap();
            for op in &ops {
                run(&m, op);
            }
            let live = scan_tree(&m).unwrap();
            g.unmount();
            // The container as a fresh mount shows it (on squashfs layers the
            // kernel runs overlay without its index, so a new hard link to a
            // lower file shows its final inode only from the next mount on).
            let g = l.mount(&["--frontend", frontend, &c1], &m);
            let after = scan_tree(&m).unwrap();
            g.unmount();
            if !frontend_keeps_links_live(driver, frontend) {
                let diffs = compare_trees(&live, &after, CompareOptions::ignoring_dir_mtimes());
                prop_assert!(diffs.iter().all(|d| d.contains("hard-link")), "{}: remount changed more than link groups:\n{}", test, diffs.join("\n"));
            } else {
                let diffs = compare_trees(&live, &after, CompareOptions::ignoring_dir_mtimes());
                prop_assert!(diffs.is_empty(), "{}: the container changed across a remount:\n{}", test, diffs.join("\n"));
            }
            (before, after)
        };
        let diff = l.ok(["diff", &c1]);
        prop_assert!(check_diff(&before, &after, &diff).is_ok(), "{}: {}\ndiff:\n{diff}", test, check_diff(&before, &after, &diff).unwrap_err());
        l.ok(["commit", &c1, &img]);
        l.ok(["create", "--driver", driver, &img, &c2]);
        let g = l.mount(&["--frontend", frontend, &c2], &m);
        let committed = scan_tree(&m).unwrap();
        g.unmount();
        let diffs = compare_trees(&after, &committed, CompareOptions::ignoring_dir_mtimes());
        prop_assert!(diffs.is_empty(), "{}: the committed image differs from the container:\n{}", test, diffs.join("\n"));
        l.ok(["rm", &c1]);
        l.ok(["rm", &c2]);
    });
}

/// Whether a live mount already shows hard links made to lower files as links
/// (everywhere but squashfs under the kernel, which has no overlay index).
fn frontend_keeps_links_live(driver: &str, frontend: &str) -> bool {
    !(driver == "squashfs" && frontend == "kernel")
}

macro_rules! rows {
    ($($name:ident: $driver:literal, $frontend:literal;)*) => {
        $(
            #[test]
            fn $name() {
                roundtrip($driver, $frontend);
            }
        )*
    };
}

rows! {
    roundtrip_vfs_kernel: "vfs", "kernel";
    roundtrip_vfs_fuse: "vfs", "fuse";
    roundtrip_overlay2_kernel: "overlay2", "kernel";
    roundtrip_overlay2_fuse: "overlay2", "fuse";
    roundtrip_squashfs_kernel: "squashfs", "kernel";
    roundtrip_squashfs_fuse: "squashfs", "fuse";
    roundtrip_aufs_fuse: "aufs", "fuse";
}
