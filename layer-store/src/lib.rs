//! Lamina's content-addressed layer store.
//!
//! The store keeps image layers as blobs addressed by their sha256 digest,
//! exactly as they arrived (plain, gzip or zstd), plus small JSON records:
//!
//! ```text
//! <root>/blobs/sha256/<hex>        blobs: layers, configs, manifests
//! <root>/layers/<chain-hex>.json   one record per chain ID (see [`Layer`])
//! <root>/images/<id-hex>.json      one record per image, id = config digest (see [`Image`])
//! <root>/repositories.json         tags: name:tag -> image id
//! <root>/containers/<name>.json    containers (see [`Container`])
//! <root>/store.lock                flock serialising metadata changes
//! <root>/tmp/<pid>-<random>/       staging space of running operations
//! ```
//!
//! [`Store::import`] reads `docker save` archives (legacy and `blobs/` forms),
//! OCI image layouts (directory or tar) and bare layer tars, detecting both
//! the format and any compression from content. Every blob is verified
//! against its descriptor and every layer's diff ID against the config before
//! anything is published; publishing runs under the store lock in the order
//! blobs → layer records → image records → tags, with every file written to a
//! temporary file, fsync'd and renamed. A crashed import therefore leaves at
//! most unreferenced complete blobs and records (removed by [`Store::gc`]);
//! its staging directory is removed by the next [`Store::open`].
//!
//! # Import formats
//!
//! The format is detected from content: a top-level `manifest.json` holding a
//! JSON array makes a docker-archive, an `oci-layout` file an OCI layout, and
//! any other tar (plain, gzip or zstd) is a bare layer. In an OCI layout,
//! indexes are followed (nested too) to the manifest for linux and the host
//! architecture; a lone manifest without a platform is taken as is.
//!
//! # Naming imported images
//!
//! * docker-archive: each image's `RepoTags`; the import name is added to
//!   them (allowed only when the archive holds one image). A single untagged
//!   image without an import name gets `<file stem>:latest`.
//! * OCI layout: each index entry with an `io.containerd.image.name` or
//!   `org.opencontainers.image.ref.name` annotation is imported under it. A
//!   ref name containing `:` or `/` is a full reference; a bare tag such as
//!   `v1` gives `NAME:v1`, NAME being the import name's repository if given,
//!   else the file stem. An import name not used that way is added when the
//!   layout yields one image. With no annotated entry, the one image for this
//!   platform is named by the import name, else `<file stem>:latest`.
//! * bare layer tar: the import name, else `<file stem>:latest`; the
//!   generated config's `created` is the file's mtime, so importing the same
//!   file twice gives the same image ID.
//!
//! The file stem is the file name without archive extensions (`.tar`,
//! `.tar.gz`, `.tgz`, `.tar.zst`, ...), lowercased and with other characters
//! replaced by `-`.
//!
//! # Layers shared between images
//!
//! Layers are deduplicated by chain ID: a layer already stored is kept as it
//! is even when a later import ships it with another compression.
//! [`Store::commit_layer`] stores committed layers as given (uncompressed
//! from the CLI).

mod blob;
mod chain;
mod commit;
mod compression;
mod config;
mod container;
mod digest;
mod error;
mod fsutil;
mod gc;
mod image;
mod import;
mod layer;
mod layout;
mod lock;
mod media_type;
mod oci;
mod platform;
mod progress;
mod reference;
mod root;
mod save;
mod staging;
mod store;
mod tags;
mod timestamp;
mod usage;

pub use chain::{chain_id, chain_ids};
pub use compression::{decompressing_reader, Compression};
pub use config::{ConfigChanges, ContainerConfig, HistoryEntry, ImageConfig, RootFs};
pub use container::{is_valid_container_name, Container};
pub use digest::{digest_reader, Digest, DigestWriter};
pub use error::{Result, StoreError};
pub use gc::GcReport;
pub use image::{Image, LayerHistory, MIN_ID_PREFIX};
pub use layer::Layer;
pub use lock::StoreLock;
pub use platform::{host_architecture, Platform};
pub use progress::Progress;
pub use reference::{Reference, DEFAULT_TAG};
pub use root::{default_root, root_from, ROOT_ENV, SYSTEM_ROOT};
pub use store::Store;
pub use tags::Removal;
pub use timestamp::{now_rfc3339, rfc3339};
pub use usage::{DiskUsage, ImageUsage};
