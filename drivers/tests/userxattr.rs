//! The unprivileged overlay form: opaque markers as `user.overlay.opaque`, and a
//! kernel overlay mounted with `userxattr` honours them.

use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use drivers::apply::{apply_layer, WhiteoutMode};
use drivers::kernel::{overlay_mount, unmount};

fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn getxattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[test]
fn userxattr_layers_mark_opaque_dirs_in_the_user_namespace_and_stack() {
    if !test_support::privilege::require_privileged(
        "userxattr_layers_mark_opaque_dirs_in_the_user_namespace_and_stack",
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, m) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("m"),
    );
    for d in [&lower, &upper, &m] {
        std::fs::create_dir(d).unwrap();
    }
    let base = layer(&[("d/", None), ("d/old", Some("old")), ("gone", Some("x"))]);
    apply_layer(
        &lower,
        &mut Cursor::new(base),
        WhiteoutMode::Overlay { userxattr: true },
    )
    .unwrap();
    let top = layer(&[
        ("d/", None),
        ("d/.wh..wh..opq", Some("")),
        ("d/new", Some("new")),
        (".wh.gone", Some("")),
    ]);
    apply_layer(
        &upper,
        &mut Cursor::new(top),
        WhiteoutMode::Overlay { userxattr: true },
    )
    .unwrap();

    assert_eq!(
        getxattr(&upper.join("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(getxattr(&upper.join("d"), "trusted.overlay.opaque"), None);
    let wh = std::fs::symlink_metadata(upper.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);

    overlay_mount(
        &[upper.clone(), lower.clone()],
        None,
        &["userxattr".to_string()],
        &m,
    )
    .unwrap();
    let names: Vec<_> = std::fs::read_dir(m.join("d"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    let gone = m.join("gone").exists();
    unmount(&m).unwrap();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("new")],
        "the user.overlay.opaque dir hides the lower entries"
    );
    assert!(!gone, "the whiteout hides the lower file");
}
