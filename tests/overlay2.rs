//! overlay2-specific behaviour: deep images, the kernel's stacking limit, layers
//! that try to smuggle overlay metadata, the on-disk layout, and OCI opaque
//! markers in diffs.

mod common;

use std::os::unix::fs::FileTypeExt;

use common::{require_privileged, Lamina};
use test_support::{Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};

fn deep_image(layers: usize) -> ImageBuilder {
    let mut img = ImageBuilder::new();
    for i in 0..layers {
        let mut layer = LayerBuilder::new().dir("layers", 0o755).file(
            &format!("layers/{i:03}"),
            format!("{i}"),
            0o644,
        );
        if i > 0 {
            // Every layer also replaces the previous layer's marker file.
            layer = layer.file("top", format!("{i}"), 0o644);
        }
        img = img.layer(layer, Compression::None);
    }
    img
}

#[test]
fn an_image_of_200_layers_mounts_with_the_kernel() {
    if !require_privileged("an_image_of_200_layers_mounts_with_the_kernel") {
        return;
    }
    let l = Lamina::new();
    let p = l.path("deep.tar");
    deep_image(200)
        .write_docker_archive(&p, &["deep:200"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    let m = l.mountpoint("m");
    let g = l.mount(
        &["--driver", "overlay2", "--frontend", "kernel", "deep:200"],
        &m,
    );
    assert_eq!(std::fs::read_dir(m.join("layers")).unwrap().count(), 200);
    assert_eq!(std::fs::read_to_string(m.join("top")).unwrap(), "199");
    g.unmount();
    // A container on it, too.
    l.ok(["create", "--driver", "overlay2", "deep:200", "c"]);
    let g = l.mount(&["c"], &m);
    std::fs::write(m.join("top"), "mine").unwrap();
    g.unmount();
    assert_eq!(l.ok(["diff", "c"]), "C /top\n");
}

#[test]
fn past_the_kernels_stacking_limit_the_error_suggests_fuse() {
    if !require_privileged("past_the_kernels_stacking_limit_the_error_suggests_fuse") {
        return;
    }
    let l = Lamina::new();
    let p = l.path("deeper.tar");
    deep_image(501)
        .write_docker_archive(&p, &["deep:501"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    let m = l.mountpoint("m");
    let err = l.fails([
        "mount".as_ref(),
        "--driver".as_ref(),
        "overlay2".as_ref(),
        "deep:501".as_ref(),
        m.as_os_str(),
    ]);
    assert!(
        err.contains("500") && err.contains("--frontend fuse"),
        "{err}"
    );
    let mounts = std::fs::read(l.root.join("mounts.json")).unwrap_or_else(|_| b"[]".to_vec());
    let mounts: serde_json::Value = serde_json::from_slice(&mounts).unwrap();
    assert_eq!(
        mounts.as_array().unwrap().len(),
        0,
        "no record of a failed mount"
    );
}

#[test]
fn a_layer_cannot_smuggle_overlay_metadata() {
    if !require_privileged("a_layer_cannot_smuggle_overlay_metadata") {
        return;
    }
    let l = Lamina::new();
    let base = LayerBuilder::new()
        .dir("data", 0o755)
        .file("data/kept", "kept", 0o644)
        .file("victim", "still here", 0o644);
    // The upper layer carries a directory marked opaque and a 0/0 character
    // device over a lower file: both would hide lower content if applied as is.
    let evil = LayerBuilder::new()
        .dir("data", 0o755)
        .xattr("trusted.overlay.opaque", "y")
        .file("data/new", "new", 0o644)
        .xattr("trusted.overlay.redirect", "/elsewhere")
        .char_device("victim", 0, 0);
    let img = ImageBuilder::new()
        .layer(base, Compression::None)
        .layer(evil, Compression::None);
    let p = l.path("evil.tar");
    img.write_docker_archive(&p, &["evil:1"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    let m = l.mountpoint("m");
    let g = l.mount(
        &["--driver", "overlay2", "--frontend", "kernel", "evil:1"],
        &m,
    );
    assert_eq!(
        std::fs::read_to_string(m.join("data/kept")).unwrap(),
        "kept",
        "the opaque xattr was dropped"
    );
    assert_eq!(std::fs::read_to_string(m.join("data/new")).unwrap(), "new");
    assert_eq!(
        std::fs::read_to_string(m.join("victim")).unwrap(),
        "still here",
        "the 0/0 device was not applied as a whiteout"
    );
    g.unmount();
}

#[test]
fn the_layout_is_dockers_overlay2() {
    if !require_privileged("the_layout_is_dockers_overlay2") {
        return;
    }
    let l = Lamina::new();
    let img = ImageBuilder::new()
        .layer(LayerBuilder::new().file("a", "a", 0o644), Compression::Gzip)
        .layer(
            LayerBuilder::new()
                .whiteout("a")
                .dir("d", 0o755)
                .opaque("d"),
            Compression::None,
        );
    let p = l.path("img.tar");
    img.write_docker_archive(&p, &["img:1"], DockerArchiveForm::Blobs)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    l.ok(["create", "--driver", "overlay2", "img:1", "c"]);
    let home = l.root.join("overlay2");
    let chain = img.chain_ids();
    let top = home.join(chain[1].trim_start_matches("sha256:"));
    let bottom = home.join(chain[0].trim_start_matches("sha256:"));
    let short = std::fs::read_to_string(bottom.join("link")).unwrap();
    assert_eq!(short.len(), 26);
    assert_eq!(
        std::fs::read_link(home.join("l").join(&short)).unwrap(),
        std::path::Path::new("..")
            .join(bottom.file_name().unwrap())
            .join("diff")
    );
    assert_eq!(
        std::fs::read_to_string(top.join("lower")).unwrap(),
        format!("l/{short}")
    );
    let wh = std::fs::symlink_metadata(top.join("diff/a")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteouts are 0/0 character devices"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&wh), 0);
    let opaque = nix_getxattr(&top.join("diff/d"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    let containers: Vec<serde_json::Value> =
        serde_json::from_str(&l.ok(["ps", "--format", "json"])).unwrap();
    let cid = containers[0]["id"].as_str().unwrap();
    assert!(home.join(cid).join("work").is_dir() && home.join(cid).join("diff").is_dir());
    let lower = std::fs::read_to_string(home.join(cid).join("lower")).unwrap();
    assert_eq!(
        lower.split(':').count(),
        3,
        "a container's lower chain names its init layer and both image layers: {lower}"
    );
}

fn nix_getxattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

#[test]
fn a_recreated_directory_is_an_opaque_marker_in_the_diff() {
    if !require_privileged("a_recreated_directory_is_an_opaque_marker_in_the_diff") {
        return;
    }
    let l = Lamina::new();
    let img = ImageBuilder::new().layer(
        LayerBuilder::new()
            .dir("d", 0o755)
            .file("d/old1", "1", 0o644)
            .file("d/old2", "2", 0o644)
            .file("f", "f", 0o644),
        Compression::None,
    );
    let p = l.path("img.tar");
    img.write_docker_archive(&p, &["img:1"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
    l.ok(["create", "--driver", "overlay2", "img:1", "c"]);
    let m = l.mountpoint("m");
    let g = l.mount(&["c"], &m);
    std::fs::remove_dir_all(m.join("d")).unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("d/new"), "n").unwrap();
    std::fs::remove_file(m.join("f")).unwrap();
    g.unmount();
    let saved = l.path("c.tar");
    l.ok(["commit", "c", "c:1"]);
    l.ok([
        "save".as_ref(),
        "c:1".as_ref(),
        "-o".as_ref(),
        saved.as_os_str(),
    ]);
    // Read the committed layer back out of the saved archive.
    let inspect: serde_json::Value = serde_json::from_str(&l.ok(["inspect", "c:1"])).unwrap();
    let blob = inspect["layers"][1]["blob"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = std::fs::read(l.root.join("blobs/sha256").join(blob)).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&data[..]).entries().unwrap() {
        names.push(
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    assert!(
        names.iter().any(|n| n == "d/.wh..wh..opq"),
        "opaque marker in {names:?}"
    );
    assert!(names.iter().any(|n| n == ".wh.f"), "whiteout in {names:?}");
    assert!(
        !names.iter().any(|n| n.contains(".wh.old")),
        "the opaque marker replaces per-file whiteouts: {names:?}"
    );
    assert_eq!(
        l.ok(["diff", "c"]),
        "C /d\nA /d/new\nD /d/old1\nD /d/old2\nD /f\n"
    );
}
