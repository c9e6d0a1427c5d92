//! How imported images are named; the rules are in the crate documentation
//! ("Naming imported images").

use std::path::Path;

use crate::error::{Result, StoreError};
use crate::reference::{is_valid_tag, repository_from_text, Reference, DEFAULT_TAG};

const ARCHIVE_EXTENSIONS: &[&str] = &[
    ".tar.gz",
    ".tar.zst",
    ".tar.zstd",
    ".tgz",
    ".tzst",
    ".tar",
    ".gz",
    ".zst",
    ".zstd",
];

/// The input's file name without archive extensions.
pub(crate) fn input_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    for extension in ARCHIVE_EXTENSIONS {
        if let Some(stem) = name.strip_suffix(extension) {
            if !stem.is_empty() {
                return stem.to_string();
            }
        }
    }
    name
}

/// The repository derived from the input's file stem.
pub(crate) fn stem_repository(path: &Path) -> String {
    repository_from_text(&input_stem(path))
}

/// `<file stem>:latest`, the name of an otherwise unnamed import.
pub(crate) fn fallback_reference(path: &Path) -> Reference {
    Reference::new(&stem_repository(path), DEFAULT_TAG)
        .expect("a sanitised repository and the default tag are valid")
}

/// The reference for an OCI ref-name annotation, and whether the import name
/// was used as its repository.
pub(crate) fn reference_for_ref_name(
    ref_name: &str,
    name: Option<&Reference>,
    path: &Path,
) -> Result<(Reference, bool)> {
    if ref_name.contains(':') || ref_name.contains('/') {
        return Ok((Reference::parse(ref_name)?, false));
    }
    if !is_valid_tag(ref_name) {
        return Err(StoreError::InvalidReference {
            reference: ref_name.to_string(),
            reason: "an OCI ref name must be a tag or a full name:tag reference".to_string(),
        });
    }
    match name {
        Some(name) => Ok((name.with_tag(ref_name)?, true)),
        None => Ok((Reference::new(&stem_repository(path), ref_name)?, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drop_archive_extensions() {
        assert_eq!(input_stem(Path::new("/x/alpine.tar.gz")), "alpine");
        assert_eq!(input_stem(Path::new("busybox.tar")), "busybox");
        assert_eq!(input_stem(Path::new("layout")), "layout");
        assert_eq!(input_stem(Path::new("rootfs.tzst")), "rootfs");
        assert_eq!(
            fallback_reference(Path::new("My Image.tar")).to_string(),
            "my-image:latest"
        );
    }

    #[test]
    fn ref_names_become_references() {
        let layout = Path::new("/in/app-layout.tar");
        let name = Reference::parse("mine:x").unwrap();
        let cases = [
            ("busybox:1.36", None, "busybox:1.36", false),
            (
                "reg.io/team/app",
                Some(&name),
                "reg.io/team/app:latest",
                false,
            ),
            ("v1", Some(&name), "mine:v1", true),
            ("v1", None, "app-layout:v1", false),
        ];
        for (ref_name, given, expected, used) in cases {
            let (reference, name_used) = reference_for_ref_name(ref_name, given, layout).unwrap();
            assert_eq!(
                (reference.to_string().as_str(), name_used),
                (expected, used),
                "{ref_name}"
            );
        }
        assert!(reference_for_ref_name("-bad", None, layout).is_err());
    }
}
