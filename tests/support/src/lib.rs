//! Writes real container images in code, for tests and for `lamina sample`.
//!
//! - [`LayerBuilder`] describes a layer's entries (every tar entry kind, xattrs,
//!   whiteouts, opaque markers, GNU sparse files, long names) and writes the tar.
//! - [`ImageBuilder`] stacks layers with their [`Compression`], computes DiffIDs,
//!   blob digests, ChainIDs and the image ID, and writes docker archives
//!   ([`DockerArchiveForm`]) and OCI layouts; [`OciLayoutBuilder`] writes layouts
//!   with several images or a multi-platform index; [`Corruption`] makes bad input.
//! - [`Tree`] describes a file tree; [`ImageBuilder::expected_tree`] computes the
//!   tree a correct importer must produce (OCI layer semantics), [`scan_tree`]
//!   reads a real directory and [`compare_trees`] lists the differences.
//! - [`fixtures`] holds ready-made images; [`sample`] builds `lamina sample`'s.
//!
//! Everything is deterministic (fixed mtimes, owners and timestamps), so digests
//! are stable across runs, and layers are streamed when written to files.
//!
//! ```
//! use test_support::{assert_trees_match, fixtures, scan_tree, CompareOptions};
//! let image = fixtures::small_image();
//! let dir = tempfile::tempdir().unwrap();
//! image.write_oci_layout_dir(dir.path().join("layout"), Some("latest")).unwrap();
//! let expected = image.expected_tree();
//! assert!(expected.contains("/etc/hello.txt") && !expected.contains("/bin/run-link"));
//! // An importer under test unpacks the layout into a rootfs, then:
//! let check = |rootfs: &std::path::Path| {
//!     let actual = scan_tree(rootfs).unwrap();
//!     assert_trees_match(&expected, &actual, CompareOptions::ignoring_dir_mtimes());
//! };
//! # let _ = check;
//! ```

#![warn(missing_docs)]

mod compression;
mod digest;
mod docker_archive;
pub mod fixtures;
mod image;
mod layer;
mod model;
mod oci_layout;
mod output;
pub mod privilege;
pub mod sample;
mod tar_out;
pub mod tree;

pub use compression::{compress, Compression};
pub use digest::{sha256_digest, sha256_hex, sha256_hex_of_reader};
pub use docker_archive::DockerArchiveForm;
pub use image::{
    host_arch, Corruption, ImageBuilder, LayerInfo, ANNOTATION_REF_NAME, CREATED,
    MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_UNKNOWN,
};
pub use layer::{generated_content, LayerBuilder, DEFAULT_MTIME, OPAQUE_MARKER, WHITEOUT_PREFIX};
pub use model::expected_tree_of_layers;
pub use oci_layout::{OciLayoutBuilder, OCI_LAYOUT_FILE};
pub use tar_out::LongNameFormat;
pub use tree::{
    assert_trees_match, compare_trees, scan_tree, CompareOptions, Node, NodeKind, Tree,
    IGNORED_XATTR_PREFIXES,
};
