//! The aufs driver: OCI whiteouts stored as they come, AUFS housekeeping names
//! hidden, `.wh.` names refused in the merged view, a clear kernel-frontend
//! error on kernels without aufs, and diffs identical to overlay2's.

mod common;

use std::path::Path;

use common::{require_privileged, Lamina};
use test_support::{Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};

fn import(l: &Lamina) {
    let img = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/a", "a", 0o644)
                .file("etc/b", "b", 0o644)
                .dir("d", 0o755)
                .file("d/x", "x", 0o644)
                .file(".wh..wh.aufs", "", 0o600)
                .dir(".wh..wh.plnk", 0o700)
                .file(".wh..wh.plnk/123.456", "", 0o600),
            Compression::Gzip,
        )
        .layer(
            LayerBuilder::new()
                .whiteout("etc/b")
                .file("etc/c", "c", 0o644),
            Compression::None,
        );
    let p = l.path("img.tar");
    img.write_docker_archive(&p, &["img:1"], DockerArchiveForm::Blobs)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
}

/// The entries of a committed image's top layer: name, type, mode, size, content.
fn top_layer_entries(l: &Lamina, image: &str) -> Vec<(String, u8, u32, u64, Vec<u8>)> {
    let inspect: serde_json::Value = serde_json::from_str(&l.ok(["inspect", image])).unwrap();
    let layers = inspect["layers"].as_array().unwrap();
    let blob = layers.last().unwrap()["blob"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = std::fs::read(l.root.join("blobs/sha256").join(blob)).unwrap();
    let mut out = Vec::new();
    for e in tar::Archive::new(&data[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut content).unwrap();
        let h = e.header();
        out.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            h.entry_type().as_byte(),
            h.mode().unwrap(),
            h.size().unwrap(),
            content,
        ));
    }
    out
}

fn change_things(m: &Path) {
    std::fs::write(m.join("etc/a"), "changed").unwrap();
    std::fs::remove_file(m.join("etc/c")).unwrap();
    std::fs::remove_dir_all(m.join("d")).unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("d/y"), "y").unwrap();
    std::fs::create_dir(m.join("new")).unwrap();
    std::fs::write(m.join("new/f"), "f").unwrap();
}

#[test]
fn aufs_and_overlay2_write_identical_diffs() {
    if !require_privileged("aufs_and_overlay2_write_identical_diffs") {
        return;
    }
    let l = Lamina::new();
    import(&l);
    let m = l.mountpoint("m");
    let mut diffs = Vec::new();
    for driver in ["overlay2", "aufs"] {
        let c = format!("c-{driver}");
        l.ok(["create", "--driver", driver, "img:1", &c]);
        let g = l.mount(&["--frontend", "fuse", &c], &m);
        change_things(&m);
        g.unmount();
        diffs.push(l.ok(["diff", &c]));
        l.ok(["commit", &c, &format!("out:{driver}")]);
    }
    assert_eq!(diffs[0], diffs[1], "lamina diff agrees");
    let overlay = top_layer_entries(&l, "out:overlay2");
    let aufs = top_layer_entries(&l, "out:aufs");
    let names: Vec<&str> = aufs.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"d/.wh..wh..opq"), "{names:?}");
    assert!(names.contains(&"etc/.wh.c"), "{names:?}");
    assert_eq!(overlay, aufs, "same entries, same order, same content");
}

#[test]
fn housekeeping_names_never_show_and_wh_names_are_refused() {
    if !require_privileged("housekeeping_names_never_show_and_wh_names_are_refused") {
        return;
    }
    let l = Lamina::new();
    import(&l);
    l.ok(["create", "--driver", "aufs", "img:1", "c"]);
    let m = l.mountpoint("m");
    let g = l.mount(&["c"], &m);
    let mut root: Vec<String> = std::fs::read_dir(&m)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    root.sort();
    assert_eq!(
        root,
        ["d", "dev", "etc", "proc", "sys"],
        "AUFS housekeeping names are hidden (dev, proc, sys: the init layer)"
    );
    let err = std::fs::write(m.join("etc/.wh.sneaky"), "x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EINVAL),
        "a .wh. name is refused like AUFS does: {err}"
    );
    std::fs::write(m.join("etc/plain"), "p").unwrap();
    g.unmount();
    assert_eq!(
        l.ok(["diff", "c"]),
        "C /etc\nA /etc/plain\n",
        "housekeeping never leaks into a diff"
    );
    let upper = l.root.join("aufs/diff");
    assert!(upper.is_dir());
    let err = l.fails(["mount", "--frontend", "kernel", "c", m.to_str().unwrap()]);
    if !drivers::kernel::kernel_has_filesystem("aufs") {
        assert!(
            err.contains("no aufs") && err.contains("--frontend fuse"),
            "{err}"
        );
    }
}
