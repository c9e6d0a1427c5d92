//! The expected trees of the fixtures, checked by hand and against real
//! extractors (GNU tar and the `tar` crate) on layers without markers.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use test_support::sample::{
    find_busybox, is_static_elf, sample_image, SAMPLE_APPLETS, SAMPLE_DELETED_FILE,
};
use test_support::{
    assert_trees_match, expected_tree_of_layers, fixtures, generated_content, scan_tree,
    sha256_hex, sha256_hex_of_reader, CompareOptions, LayerBuilder, NodeKind, Tree,
};

fn file_kind(content: &[u8]) -> NodeKind {
    NodeKind::File {
        sha256: sha256_hex(content),
    }
}

#[test]
fn rich_image_expected_tree_spot_checks() {
    let image = fixtures::rich_image();
    let t = image.expected_tree();
    let get = |p: &str| {
        t.get(p)
            .unwrap_or_else(|| panic!("{p} missing from the expected tree:\n{t}"))
    };
    assert!(
        t.nodes.keys().all(|p| !p.contains(".wh.")),
        "markers never show"
    );

    // Whiteouts.
    assert!(!t.contains("/remove-me.txt"));
    // A directory deleted in layer 1 and recreated in layer 2 has only the new content.
    assert_eq!(t.children("/cache"), ["/cache/new-entry"]);
    assert_eq!(get("/cache").mode, 0o700);
    // Opaque dir: lower content hidden, same-layer content (before the marker) kept.
    assert_eq!(t.children("/data"), ["/data/new.txt"]);
    assert_eq!(get("/data").mode, 0o750);
    // Whiteout + recreate in the same layer.
    assert_eq!(get("/etc/replaced").kind, file_kind(b"now a file\n"));
    assert!(!t.contains("/etc/replaced/child"));
    // Modified in upper layers.
    assert_eq!(get("/etc/hostname").kind, file_kind(b"changed\n"));
    assert_eq!(get("/etc/hostname").mtime, 1_700_000_000);
    let config = get("/etc/config.txt");
    assert_eq!((config.mode, config.uid, config.gid), (0o600, 1000, 1000));
    assert_eq!(config.xattrs.get("user.comment").unwrap(), b"upper config");
    assert_eq!(
        get("/etc/motd").kind,
        NodeKind::Symlink {
            target: "hostname".into()
        }
    );
    // Hard links, one across directories, and one written with PAX names.
    assert_eq!(
        t.link_group_of("/usr/share/doc/readme"),
        [
            "/opt/readme-link",
            "/usr/share/doc/README",
            "/usr/share/doc/readme"
        ]
    );
    let pax = format!("/{}", fixtures::rich_pax_name_path());
    assert_eq!(t.link_group_of(&pax).len(), 2);
    assert_eq!(
        get(&pax).link_group,
        get(&format!("/long/{}.lnk", "h".repeat(110))).link_group
    );
    // Special bits, owners, devices.
    assert_eq!(get("/usr/bin/tool").mode, 0o4755);
    assert_eq!(get("/usr/bin/gtool").mode, 0o2755);
    assert_eq!(get("/tmp").mode, 0o1777);
    let www = get("/srv/www");
    assert_eq!((www.mode, www.uid, www.gid), (0o2775, 33, 33));
    assert_eq!(get("/home/bigid").uid, 100_000);
    assert_eq!(
        get("/dev/null-like").kind,
        NodeKind::CharDevice { major: 1, minor: 3 }
    );
    assert_eq!(
        get("/dev/loop-like").kind,
        NodeKind::BlockDevice { major: 7, minor: 0 }
    );
    assert_eq!(
        (get("/var/pipe").kind.clone(), get("/var/pipe").mode),
        (NodeKind::Fifo, 0o620)
    );
    assert_eq!(
        get("/usr/bin/ping")
            .xattrs
            .get("security.capability")
            .unwrap(),
        &fixtures::capability_xattr(1 << 13)
    );
    assert_eq!(
        get("/opt/tagged").xattrs.get("user.tag").unwrap(),
        b"dir-xattr"
    );
    // Symlinks.
    assert_eq!(
        get("/usr/bin/sh-abs").kind,
        NodeKind::Symlink {
            target: "/usr/bin/tool".into()
        }
    );
    assert_eq!(
        get("/lib").kind,
        NodeKind::Symlink {
            target: "usr/lib".into()
        }
    );
    assert_eq!(get("/lib").size, 7);
    // Sparse file content and size.
    let sparse = get("/var/lib/sparse.img");
    assert_eq!(sparse.size, fixtures::RICH_SPARSE_SIZE);
    let mut content = vec![0u8; fixtures::RICH_SPARSE_SIZE as usize];
    content[..4096].copy_from_slice(&b"HEAD".repeat(1024));
    content[1 << 20..(1 << 20) + 6].copy_from_slice(b"middle");
    assert_eq!(content[(3 << 20) + 100], 0, "checked below");
    for (i, b) in content[(3 << 20) + 100..(3 << 20) + 700]
        .iter_mut()
        .enumerate()
    {
        *b = (i % 251) as u8 + 1;
    }
    assert_eq!(sparse.kind, file_kind(&content));
    // Names.
    assert!(t.contains(&format!("/{}", fixtures::rich_long_name_path())));
    assert!(t.contains(&format!("/{}", fixtures::rich_long_path())));
    assert_eq!(
        get("/données/日本語.txt").kind,
        file_kind("こんにちは\n".as_bytes())
    );
    let deep = format!("/{}", fixtures::rich_deep_path());
    assert_eq!(get(&deep).kind, file_kind(b"deep\n"));
    let implied = get(deep.rsplit_once('/').unwrap().0);
    assert_eq!(
        (implied.kind.clone(), implied.mode, implied.uid),
        (NodeKind::Dir, 0o755, 0)
    );

    // Lower states.
    let first = image.expected_tree_upto(1);
    assert!(first.contains("/remove-me.txt") && first.contains("/cache/sub/old"));
    assert_eq!(first.children("/data").len(), 3);
    assert_eq!(image.expected_tree_upto(5), t);
    assert_eq!(image.expected_tree_upto(4), t, "the last layer is empty");
}

#[test]
fn small_image_expected_tree() {
    let t = fixtures::small_image().expected_tree();
    let paths: Vec<&str> = t.nodes.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/bin",
            "/bin/run",
            "/data",
            "/data/x.txt",
            "/etc",
            "/etc/hello.txt"
        ]
    );
    assert_eq!(
        t.get("/etc/hello.txt").unwrap().kind,
        file_kind(b"hello again\n")
    );
}

fn extract_with_gnu_tar(layer: &LayerBuilder, into: &Path) {
    let tar_path = into.with_extension("tar");
    fs::write(&tar_path, layer.to_tar()).unwrap();
    fs::create_dir_all(into).unwrap();
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(into)
        .status()
        .expect("GNU tar runs");
    assert!(status.success());
}

/// The oracle agrees with GNU tar on every layer of the rich image extracted
/// alone (as far as a layer alone has a meaning: markers are plain files there).
#[test]
fn oracle_agrees_with_gnu_tar_on_single_layers() {
    let image = fixtures::rich_image();
    let tmp = tempfile::tempdir().unwrap();
    for (i, layer) in image.layers().into_iter().enumerate() {
        let root = tmp.path().join(format!("layer{i}"));
        extract_with_gnu_tar(layer, &root);
        let mut actual = scan_tree(&root).unwrap();
        // GNU tar writes markers as the plain files they are.
        actual
            .nodes
            .retain(|p, _| !p.rsplit('/').next().unwrap().starts_with(".wh."));
        let expected = expected_tree_of_layers(&[layer]);
        assert_trees_match(&expected, &actual, CompareOptions::ignoring_dir_mtimes());
    }
}

/// Applying the layers of a rich image one by one with GNU tar plus a tiny
/// marker handler (whiteouts remove, opaque markers clear lower content) gives
/// the expected tree.
#[test]
fn oracle_agrees_with_a_naive_reference_applier() {
    let image = fixtures::rich_image();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    for (i, layer) in image.layers().into_iter().enumerate() {
        let staging = tmp.path().join(format!("stage{i}"));
        extract_with_gnu_tar(layer, &staging);
        let staged = scan_tree(&staging).unwrap();
        // Markers first (they act on lower layers only) ...
        for path in staged.nodes.keys() {
            let (dir, name) = path.rsplit_once('/').unwrap();
            let target = if name == ".wh..wh..opq" {
                let lower = root.join(dir.trim_start_matches('/'));
                if lower.is_dir() {
                    for child in fs::read_dir(&lower).unwrap() {
                        let child = child.unwrap().path();
                        if child.is_dir() && !child.is_symlink() {
                            fs::remove_dir_all(child).unwrap();
                        } else {
                            fs::remove_file(child).unwrap();
                        }
                    }
                }
                continue;
            } else if let Some(victim) = name.strip_prefix(".wh.") {
                root.join(dir.trim_start_matches('/')).join(victim)
            } else {
                continue;
            };
            if let Ok(meta) = fs::symlink_metadata(&target) {
                if meta.is_dir() {
                    fs::remove_dir_all(&target).unwrap();
                } else {
                    fs::remove_file(&target).unwrap();
                }
            }
        }
        // ... then the layer's content, by extracting it again over the root
        // (GNU tar replaces entries, keeps directories) and dropping the markers.
        let status = Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "--recursive-unlink",
                "-xpf",
            ])
            .arg(staging.with_extension("tar"))
            .arg("-C")
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        for path in staged.nodes.keys().filter(|p| p.contains("/.wh.")) {
            fs::remove_file(root.join(path.trim_start_matches('/'))).unwrap();
        }
        let actual = scan_tree(&root).unwrap();
        let expected = image.expected_tree_upto(i + 1);
        assert_trees_match(&expected, &actual, CompareOptions::ignoring_dir_mtimes());
    }
}

#[test]
fn tar_crate_unpack_matches_the_oracle_on_the_base_layer() {
    let image = fixtures::rich_image();
    let layer = image.layers()[0];
    let tmp = tempfile::tempdir().unwrap();
    let tar = layer.to_tar();
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.unpack(tmp.path()).unwrap();
    let actual = scan_tree(tmp.path()).unwrap();
    let expected = expected_tree_of_layers(&[layer]);
    let opts = CompareOptions {
        ignore_dir_mtimes: true,
        ignore_symlink_mtimes: true,
        ..CompareOptions::default()
    };
    assert_trees_match(&expected, &actual, opts);
}

#[test]
fn generated_files_hash_like_their_content() {
    let layer = LayerBuilder::new().generated_file("g", 100_000, 3, 0o644);
    let t: Tree = expected_tree_of_layers(&[&layer]);
    let (sha, len) = sha256_hex_of_reader(generated_content(100_000, 3)).unwrap();
    assert_eq!(t.get("/g").unwrap().kind, NodeKind::File { sha256: sha });
    assert_eq!(len, 100_000);
}

#[test]
fn sample_image_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("busybox");
    fs::write(&fake, b"\x7fELF not really busybox").unwrap();
    let image = sample_image(&fake).unwrap();
    assert_eq!(image.layer_count(), 2);
    let t = image.expected_tree();
    let bb = t.get("/bin/busybox").unwrap();
    assert_eq!(
        (bb.kind.clone(), bb.mode),
        (file_kind(b"\x7fELF not really busybox"), 0o755)
    );
    for applet in SAMPLE_APPLETS {
        assert_eq!(
            t.get(&format!("/bin/{applet}")).unwrap().kind,
            NodeKind::Symlink {
                target: "busybox".into()
            }
        );
    }
    assert!(!t.contains(SAMPLE_DELETED_FILE));
    assert!(image.expected_tree_upto(1).contains(SAMPLE_DELETED_FILE));
    assert_eq!(t.get("/app/run.sh").unwrap().mode, 0o755);
    assert_eq!(t.get("/tmp").unwrap().mode, 0o1777);
    assert!(t.contains("/etc/motd") && t.contains("/app/hello.txt") && t.contains("/etc/passwd"));
    let config: serde_json::Value = serde_json::from_slice(&image.config_json()).unwrap();
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "cat /etc/motd; ls /app"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert!(config["config"]["Env"][0]
        .as_str()
        .unwrap()
        .starts_with("PATH="));
    // The host file is streamed at write time: its content is in the blob.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&image.layers()[0].to_blob(test_support::Compression::Gzip)[..])
        .read_to_end(&mut tar)
        .unwrap();
    assert!(tar.windows(23).any(|w| w == b"\x7fELF not really busybox"));
}

#[test]
fn find_busybox_finds_a_static_one() {
    if let Some(found) = find_busybox() {
        assert!(is_static_elf(&found).unwrap(), "{}", found.display());
    }
    let debian = Path::new("/bin/busybox");
    if debian.is_file() && is_static_elf(debian).unwrap() {
        let found = find_busybox().expect("busybox-static is installed");
        let image = sample_image(&found).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        image
            .write_docker_archive(
                tmp.path().join("sample.tar"),
                &["lamina/sample:latest"],
                test_support::DockerArchiveForm::Legacy,
            )
            .unwrap();
        let size = fs::metadata(&found).unwrap().len();
        assert_eq!(
            image.expected_tree().get("/bin/busybox").unwrap().size,
            size
        );
    }
}
