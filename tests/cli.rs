//! End-to-end tests of the `lamina` CLI: import forms, bad input, crash safety of
//! imports, images/rmi/gc/df, containers, reference-counted mounts, layer views,
//! history, save/export round trips, and the default driver choice.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_privileged, Lamina};
use test_support::tree::{compare_trees, scan_tree, CompareOptions};
use test_support::{fixtures, Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};

fn images_json(l: &Lamina) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(&l.ok(["images", "--format", "json"]))
        .expect("images json")
}

fn image_names(l: &Lamina) -> BTreeSet<String> {
    images_json(l)
        .iter()
        .flat_map(|i| {
            i["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn image_id(l: &Lamina, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&l.ok(["inspect", name])).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Every file below `dir` except the store's temp dir, with sizes: a fingerprint of the store.
fn store_listing(dir: &Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            if rel == "tmp" || rel.ends_with(".lock") {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            }
            out.insert((rel, if md.is_file() { md.len() } else { 0 }));
        }
    }
    out
}

#[test]
fn every_import_form_gives_the_same_image() {
    let l = Lamina::new();
    let img = fixtures::small_image();
    let legacy = l.path("legacy.tar");
    img.write_docker_archive(&legacy, &["small:legacy"], DockerArchiveForm::Legacy)
        .unwrap();
    let blobs = l.path("blobs.tar");
    img.write_docker_archive(&blobs, &["small:blobs"], DockerArchiveForm::Blobs)
        .unwrap();
    let oci_dir = l.path("oci-dir");
    img.write_oci_layout_dir(&oci_dir, Some("small:oci-dir"))
        .unwrap();
    let oci_tar = l.path("oci.tar");
    img.write_oci_layout_tar(&oci_tar, Some("small:oci-tar"))
        .unwrap();
    for p in [&legacy, &blobs, &oci_dir, &oci_tar] {
        l.ok(["import".as_ref(), p.as_os_str()]);
    }
    let images = images_json(&l);
    assert_eq!(images.len(), 1, "one image, four names: {images:?}");
    assert_eq!(images[0]["id"], img.image_id());
    let names = image_names(&l);
    for n in [
        "small:legacy",
        "small:blobs",
        "small:oci-dir",
        "small:oci-tar",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }

    // A bare layer tar, compressed either way (the name does not say which), is a one-layer image.
    let layer = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/f", "content", 0o644);
    for (c, name) in [
        (Compression::Gzip, "gz-layer.tar"),
        (Compression::Zstd, "zst-layer.bin"),
        (Compression::None, "plain.layer"),
    ] {
        let p = l.path(name);
        std::fs::write(&p, layer.to_blob(c)).unwrap();
        let tag = format!("bare:{}", name.replace('.', "-"));
        l.ok([
            "import".as_ref(),
            p.as_os_str(),
            "--name".as_ref(),
            tag.as_ref(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&l.ok(["inspect", &tag])).unwrap();
        assert_eq!(v["layers"].as_array().unwrap().len(), 1);
        assert_eq!(v["layers"][0]["diff_id"], layer.diff_id().unwrap());
    }
}

#[test]
fn the_store_root_comes_from_the_environment_without_root_flag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("env-root");
    let out = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["images"])
        .env("LAMINA_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        root.join("blobs").is_dir(),
        "the store was created under $LAMINA_ROOT"
    );
}

#[test]
fn bad_input_is_one_clear_line_and_leaves_the_store_as_it_was() {
    use test_support::Corruption;
    let l = Lamina::new();
    let good = fixtures::small_image();
    let archive = l.path("good.tar");
    good.write_docker_archive(&archive, &["good:1"], DockerArchiveForm::Blobs)
        .unwrap();
    l.ok(["import".as_ref(), archive.as_os_str()]);
    let before = store_listing(&l.root);

    let cases: Vec<(&str, Corruption, &str)> = vec![
        ("wrong-diff-id", Corruption::WrongDiffId(0), "diff_id"),
        ("missing-blob", Corruption::MissingLayerBlob(1), "missing"),
        ("truncated", Corruption::TruncatedLayerBlob(0), ""),
        (
            "outside",
            Corruption::LayerReference(0, "../../etc/passwd".into()),
            "outside",
        ),
        (
            "media-type",
            Corruption::UnknownLayerMediaType(0),
            "media type",
        ),
        ("bad-json", Corruption::InvalidManifestJson, "json"),
    ];
    for (name, corruption, needle) in cases {
        let img = fixtures::small_image().corrupt(corruption);
        let p = l.path(&format!("{name}.tar"));
        let form = if name == "media-type" {
            None
        } else {
            Some(DockerArchiveForm::Blobs)
        };
        match form {
            Some(f) => img.write_docker_archive(&p, &["bad:1"], f).unwrap(),
            None => img.write_oci_layout_tar(&p, Some("bad:1")).unwrap(),
        }
        let err = l.fails(["import".as_ref(), p.as_os_str()]);
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
        assert!(err.starts_with("lamina: "), "{name}: {err}");
        assert!(
            err.to_lowercase().contains(needle),
            "{name}: error should mention {needle:?}: {err}"
        );
        assert_eq!(store_listing(&l.root), before, "{name}: the store changed");
    }
    let garbage = l.path("garbage.tar");
    std::fs::write(&garbage, vec![0x5a; 3000]).unwrap();
    let err = l.fails(["import".as_ref(), garbage.as_os_str()]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(store_listing(&l.root), before);
    assert_eq!(image_names(&l), BTreeSet::from(["good:1".to_string()]));
}

#[test]
fn an_import_killed_at_any_point_leaves_no_partial_image() {
    let l = Lamina::new();
    let mut img = ImageBuilder::new();
    for i in 0..3 {
        img = img.layer(
            LayerBuilder::new()
                .generated_file(&format!("blob{i}"), 24 << 20, i, 0o644)
                .file("small", format!("{i}"), 0o644),
            if i == 1 {
                Compression::Gzip
            } else {
                Compression::None
            },
        );
    }
    let archive = l.path("big.tar");
    img.write_docker_archive(&archive, &["big:1"], DockerArchiveForm::Blobs)
        .unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 700);
        let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
            .arg("--root")
            .arg(&l.root)
            .arg("import")
            .arg(&archive)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let names = image_names(&l);
        if status.success() {
            assert!(
                names.contains("big:1"),
                "round {round}: finished import is visible"
            );
            l.ok(["rmi", "big:1"]);
            l.ok(["gc"]);
        } else {
            assert!(
                names.is_empty(),
                "round {round}: killed after {delay:?}, yet images are {names:?}"
            );
        }
        let tmp = l.root.join("tmp");
        let leftovers = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            leftovers, 0,
            "round {round}: the next command cleans the dead import's temp dir"
        );
    }
    l.ok(["import".as_ref(), archive.as_os_str()]);
    assert_eq!(image_id(&l, "big:1"), img.image_id());
}

#[test]
fn save_then_import_gives_the_same_image_id() {
    let l = Lamina::new();
    let img = fixtures::rich_image();
    let archive = l.path("rich.tar");
    img.write_oci_layout_tar(&archive, Some("rich:v1")).unwrap();
    l.ok(["import".as_ref(), archive.as_os_str()]);
    let saved = l.path("saved.tar");
    l.ok([
        "save".as_ref(),
        "rich:v1".as_ref(),
        "-o".as_ref(),
        saved.as_os_str(),
    ]);
    let other = Lamina::new();
    other.ok(["import".as_ref(), saved.as_os_str()]);
    assert_eq!(image_id(&other, "rich:v1"), image_id(&l, "rich:v1"));
    assert_eq!(image_id(&other, "rich:v1"), img.image_id());
}

#[test]
fn rmi_untags_and_gc_removes_blobs_and_driver_data() {
    if !require_privileged("rmi_untags_and_gc_removes_blobs_and_driver_data") {
        return;
    }
    let l = Lamina::new();
    let img = fixtures::small_image();
    let archive = l.path("small.tar");
    img.write_docker_archive(&archive, &["small:1", "small:2"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), archive.as_os_str()]);
    l.ok(["create", "--driver", "vfs", "small:1", "c"]);
    let err = l.fails(["rmi", &img.image_id()]);
    assert!(
        err.contains('c'),
        "removing an image a container uses names the container: {err}"
    );
    l.ok(["rmi", "small:2"]);
    assert_eq!(image_names(&l), BTreeSet::from(["small:1".to_string()]));
    let vfs_layers = |l: &Lamina| {
        std::fs::read_dir(l.root.join("vfs/dir"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(
        vfs_layers(&l),
        img.layer_count() + 2,
        "image layers plus the container's init and writable layers"
    );
    l.ok(["rm", "c"]);
    l.ok(["rmi", "small:1"]);
    let out = l.ok(["gc"]);
    assert!(out.contains("Removed"), "{out}");
    assert_eq!(
        vfs_layers(&l),
        0,
        "gc removed the driver's copies of unreferenced layers"
    );
    let blobs = std::fs::read_dir(l.root.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "gc removed every unreferenced blob");
}

#[test]
fn df_counts_shared_layers_once() {
    let l = Lamina::new();
    let base = LayerBuilder::new().generated_file("base", 1 << 20, 1, 0o644);
    let a = ImageBuilder::new()
        .layer(base.clone(), Compression::None)
        .layer(LayerBuilder::new().file("a", "a", 0o644), Compression::None);
    let b = ImageBuilder::new().layer(base, Compression::None).layer(
        LayerBuilder::new().file("b", "bb", 0o644),
        Compression::None,
    );
    for (img, name) in [(&a, "a:1"), (&b, "b:1")] {
        let p = l.path(&format!("{}.tar", &name[..1]));
        img.write_docker_archive(&p, &[name], DockerArchiveForm::Legacy)
            .unwrap();
        l.ok(["import".as_ref(), p.as_os_str()]);
    }
    let v: serde_json::Value = serde_json::from_str(&l.ok(["df", "--format", "json"])).unwrap();
    assert_eq!(v["layers"], 3, "the shared base layer is stored once: {v}");
    let sizes: u64 = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["size"].as_u64().unwrap())
        .sum();
    let total = v["layers_size"].as_u64().unwrap();
    assert!(
        total < sizes,
        "total {total} counts the shared layer once, per-image sum is {sizes}"
    );
    for i in v["images"].as_array().unwrap() {
        assert!(i["shared_size"].as_u64().unwrap() >= 1 << 20, "{i}");
    }
    let table = l.ok(["df"]);
    assert!(table.contains("MiB"), "sizes are human-readable: {table}");
}

#[test]
fn a_second_mount_of_a_container_shares_the_first_and_the_last_umount_releases_it() {
    if !require_privileged("a_second_mount_of_a_container_shares_the_first") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    l.ok(["create", "img:1", "c"]);
    let (m1, m2) = (l.mountpoint("m1"), l.mountpoint("m2"));
    let g1 = l.mount(&["c"], &m1);
    let g2 = l.mount(&["c"], &m2);
    std::fs::write(m1.join("etc/new"), "via m1").unwrap();
    assert_eq!(
        std::fs::read_to_string(m2.join("etc/new")).unwrap(),
        "via m1"
    );
    let ps: Vec<serde_json::Value> =
        serde_json::from_str(&l.ok(["ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["mounts"].as_array().unwrap().len(), 2, "{ps:?}");
    let err = l.fails(["rm", "c"]);
    assert!(
        err.contains("mounted"),
        "rm refuses a mounted container: {err}"
    );
    g1.unmount();
    assert_eq!(
        std::fs::read_to_string(m2.join("etc/new")).unwrap(),
        "via m1",
        "still mounted at m2"
    );
    g2.unmount();
    assert!(!m2.join("etc").exists(), "the last umount unmounted it");
    assert_eq!(l.ok(["diff", "c"]), "C /etc\nA /etc/new\n");
    l.ok(["rm", "c"]);
}

#[test]
fn a_mountpoint_in_use_is_refused_and_stale_records_are_cleaned() {
    if !require_privileged("a_mountpoint_in_use_is_refused_and_stale_records_are_cleaned") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    let m = l.mountpoint("m");
    let g = l.mount(&["img:1"], &m);
    let err = l.fails(["mount".as_ref(), "img:1".as_ref(), m.as_os_str()]);
    assert!(err.contains("in use"), "{err}");
    // Someone unmounts behind Lamina's back (or the machine crashed): the next
    // command forgets the record, and the image can be mounted again.
    nix::mount::umount2(&m, nix::mount::MntFlags::empty()).unwrap();
    let _still_guarded = g;
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.root.join("mounts.json")).unwrap()).unwrap();
    assert_eq!(
        table.as_array().unwrap().len(),
        1,
        "recorded before the next command"
    );
    l.ok(["ps"]);
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.root.join("mounts.json")).unwrap()).unwrap();
    assert_eq!(
        table.as_array().unwrap().len(),
        0,
        "the stale record is gone"
    );
    let g = l.mount(&["img:1"], &m);
    assert!(m.join("etc/a").exists());
    g.unmount();
    let err = l.fails(["umount".as_ref(), m.as_os_str()]);
    assert!(err.contains("not a Lamina mount"), "{err}");
}

#[test]
fn layer_views_show_whiteouts_and_history_counts_them() {
    if !require_privileged("layer_views_show_whiteouts_and_history_counts_them") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    let m = l.mountpoint("m");
    let g = l.mount(&["--layer", "2", "img:1"], &m);
    let mut names: Vec<String> = std::fs::read_dir(m.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert_eq!(names, [".wh.b", "c"], "layer 2 alone, its whiteout visible");
    assert!(
        std::fs::write(m.join("x"), "y").is_err(),
        "layer views are read-only"
    );
    g.unmount();
    let g = l.mount(&["--upto", "1", "img:1"], &m);
    assert!(m.join("etc/b").exists() && !m.join("etc/c").exists());
    g.unmount();
    let err = l.fails([
        "mount".as_ref(),
        "--layer".as_ref(),
        "3".as_ref(),
        "img:1".as_ref(),
        m.as_os_str(),
    ]);
    assert!(err.contains("layers 1 to 2"), "{err}");

    let h: Vec<serde_json::Value> =
        serde_json::from_str(&l.ok(["history", "img:1", "--format", "json"])).unwrap();
    assert_eq!(
        (
            h[0]["added"].as_u64(),
            h[0]["changed"].as_u64(),
            h[0]["whited_out"].as_u64()
        ),
        (Some(3), Some(0), Some(0))
    );
    assert_eq!(
        (h[1]["added"].as_u64(), h[1]["whited_out"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(h[0]["diff_id"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn a_layer_cannot_write_outside_its_root() {
    if !require_privileged("a_layer_cannot_write_outside_its_root") {
        return;
    }
    let l = Lamina::new();
    let outside = l.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = outside.to_string_lossy().to_string();
    let evil = LayerBuilder::new()
        .symlink("escape", &target)
        .file("escape/pwned", "x", 0o644)
        .symlink("up", "../../../../../../../..")
        .file("up/pwned-too", "x", 0o644)
        .raw_file(
            b"../../../../../../../../tmp/lamina-dotdot-pwned",
            "x",
            0o644,
        );
    let img = ImageBuilder::new().layer(evil, Compression::None);
    let p = l.path("evil.tar");
    img.write_docker_archive(&p, &["evil:1"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    let _ = l.run(["create", "--driver", "vfs", "evil:1", "c"]);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
    assert!(!Path::new("/tmp/lamina-dotdot-pwned").exists());
    assert!(!Path::new("/pwned-too").exists());
}

#[test]
fn the_sample_image_has_a_working_shell() {
    if !require_privileged("the_sample_image_has_a_working_shell") {
        return;
    }
    if test_support::sample::find_busybox().is_none() {
        assert!(
            std::env::var("LAMINA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "CI installs busybox-static"
        );
        eprintln!("skipped: no static busybox");
        return;
    }
    let l = Lamina::new();
    l.ok(["sample"]);
    assert!(image_names(&l).contains("lamina-sample:latest"));
    l.ok(["create", "lamina-sample", "s"]);
    let m = l.mountpoint("m");
    let g = l.mount(&["s"], &m);
    let out = Command::new("chroot")
        .arg(&m)
        .args([
            "/bin/sh",
            "-c",
            "echo from-busybox > /tmp/proof; cat /tmp/proof",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-busybox\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.unmount();
    assert!(l.ok(["diff", "s"]).contains("A /tmp/proof"));
}

#[test]
fn export_of_an_image_is_its_merged_tree() {
    if !require_privileged("export_of_an_image_is_its_merged_tree") {
        return;
    }
    let l = Lamina::new();
    let img = fixtures::rich_image();
    let p = l.path("rich.tar");
    img.write_docker_archive(&p, &["rich:1"], DockerArchiveForm::Blobs)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    let out = l.path("export.tar");
    l.ok([
        "export".as_ref(),
        "rich:1".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    let dir = l.path("unpacked");
    std::fs::create_dir(&dir).unwrap();
    let mut f = std::fs::File::open(&out).unwrap();
    drivers::apply::apply_layer(&dir, &mut f, drivers::apply::WhiteoutMode::Remove).unwrap();
    let diffs = compare_trees(
        &img.expected_tree(),
        &scan_tree(&dir).unwrap(),
        CompareOptions::ignoring_dir_mtimes(),
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let mounts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.root.join("mounts.json")).unwrap()).unwrap();
    assert_eq!(
        mounts.as_array().unwrap().len(),
        0,
        "export left no mount behind"
    );
}

#[test]
fn the_default_driver_follows_what_the_kernel_offers() {
    let l = Lamina::new();
    let v: serde_json::Value =
        serde_json::from_str(&l.ok(["drivers", "--format", "json"])).unwrap();
    let rows = v["drivers"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "every driver × frontend is listed");
    let available = |d: &str, f: &str| {
        rows.iter()
            .any(|r| r["driver"] == d && r["frontend"] == f && r["available"] == true)
    };
    for r in rows.iter().filter(|r| r["available"] == false) {
        assert!(
            !r["reason"].as_str().unwrap_or("").is_empty(),
            "unavailable rows say why: {r}"
        );
    }
    if available("overlay2", "kernel") {
        assert_eq!(v["default"]["driver"], "overlay2");
        assert_eq!(v["default"]["frontend"], "kernel");
    }
    let hidden = Lamina::new().env("LAMINA_HIDE_KERNEL_OVERLAY", "1");
    let v: serde_json::Value =
        serde_json::from_str(&hidden.ok(["drivers", "--format", "json"])).unwrap();
    assert!(
        !(v["default"]["driver"] == "overlay2" && v["default"]["frontend"] == "kernel"),
        "with kernel overlay hidden the default is not kernel overlay: {v}"
    );
    if available("overlay2", "fuse") {
        assert_eq!(v["default"]["driver"], "overlay2");
        assert_eq!(v["default"]["frontend"], "fuse");
    } else {
        assert_eq!(v["default"]["driver"], "vfs");
    }
}

#[test]
fn unknown_names_give_clear_errors() {
    let l = Lamina::new();
    let err = l.fails(["inspect", "nope:1"]);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
    let err = l.fails(["create", "--driver", "zfs", "x", "y"]);
    assert!(err.contains("x") || err.contains("zfs"), "{err}");
    let err = l.fails(["diff", "ghost"]);
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn binary_xattrs_with_newline_bytes_survive_import_and_mount() {
    if !require_privileged("binary_xattrs_with_newline_bytes_survive_import_and_mount") {
        return;
    }
    // CAP_DAC_OVERRIDE | CAP_FOWNER = 0b1010: the capability value holds a 0x0a byte.
    let cap = fixtures::capability_xattr((1 << 1) | (1 << 3));
    assert!(cap.contains(&b'\n'));
    let layer = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/tool", "elf", 0o755)
        .xattr("security.capability", &cap)
        .xattr("user.note", b"line1\nline2");
    let l = Lamina::new();
    for (c, name) in [
        (Compression::None, "plain"),
        (Compression::Gzip, "gzip"),
        (Compression::Zstd, "zstd"),
    ] {
        let p = l.path(&format!("{name}.tar"));
        std::fs::write(&p, layer.to_blob(c)).unwrap();
        let tag = format!("caps:{name}");
        l.ok([
            "import".as_ref(),
            p.as_os_str(),
            "--name".as_ref(),
            tag.as_ref(),
        ]);
        let h: Vec<serde_json::Value> =
            serde_json::from_str(&l.ok(["history", &tag, "--format", "json"])).unwrap();
        assert_eq!(h[0]["added"], 2, "{h:?}");
        let m = l.mountpoint(name);
        let g = l.mount(&[&tag], &m);
        let tree = scan_tree(&m).unwrap();
        g.unmount();
        let node = tree.get("/bin/tool").unwrap();
        assert_eq!(node.xattrs.get("security.capability"), Some(&cap), "{name}");
        assert_eq!(
            node.xattrs.get("user.note").map(|v| &v[..]),
            Some(&b"line1\nline2"[..]),
            "{name}"
        );
    }
}

#[test]
fn imports_show_progress_on_a_terminal_only() {
    let l = Lamina::new();
    let img = fixtures::small_image();
    let p = l.path("small.tar");
    img.write_docker_archive(&p, &["small:1"], DockerArchiveForm::Legacy)
        .unwrap();
    let piped = l.run(["import".as_ref(), p.as_os_str()]);
    assert!(piped.status.success());
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("layer 1/"),
        "no bar when stderr is not a terminal"
    );
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped the terminal half: no script(1)");
        return;
    }
    // script(1) gives the command a pseudo-terminal.
    let command = format!(
        "{} --root {} import {} --name small:2",
        env!("CARGO_BIN_EXE_lamina"),
        l.path("tty-store").display(),
        p.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("layer 1/2"),
        "a progress bar on the terminal: {screen}"
    );
    assert!(screen.contains("Imported"), "{screen}");
}

/// What cannot work says so: no `/dev/fuse`, a kernel without overlay when the
/// kernel frontend is asked for, a mountpoint already in use.
#[test]
fn unworkable_mounts_give_clear_errors() {
    if !require_privileged("unworkable_mounts_give_clear_errors") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    let mnt = l.mountpoint("m");
    let m = mnt.to_str().unwrap();
    // No /dev/fuse: a private mount namespace whose /dev is an empty tmpfs.
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /dev && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lamina"))
        .arg("--root")
        .arg(&l.root)
        .args(["mount", "--frontend", "fuse", "img:1", m])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/dev/fuse does not exist"),
        "{stderr}"
    );
    let hidden = Lamina::new().env("LAMINA_HIDE_KERNEL_OVERLAY", "1");
    common::import_two_layer_image(&hidden);
    let hm = hidden.mountpoint("m");
    let err = hidden.fails([
        "mount",
        "--driver",
        "overlay2",
        "--frontend",
        "kernel",
        "img:1",
        hm.to_str().unwrap(),
    ]);
    assert!(
        err.contains("cannot use the kernel frontend") && err.contains("overlay"),
        "{err}"
    );
    let guard = l.mount(&["img:1"], &mnt);
    l.ok(["create", "img:1", "c"]);
    let err = l.fails(["mount", "c", m]);
    assert!(err.contains("already in use"), "{err}");
    let err = l.fails(["mount", "--frontend", "fuse", "c", m]);
    assert!(err.contains("already in use"), "{err}");
    drop(guard);
}
