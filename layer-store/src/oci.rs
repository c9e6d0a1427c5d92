//! OCI image-layout documents: descriptors, indexes, manifests, `oci-layout`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::null_as_default;
use crate::digest::Digest;
use crate::platform::Platform;

/// The annotation naming a manifest in an index (a tag, or a full reference).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker use for the full image name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The layout version written to `oci-layout`.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    /// The blob's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    /// The blob's digest.
    pub(crate) digest: Digest,
    /// The blob's size in bytes.
    pub(crate) size: u64,
    /// For manifests in an index: the platform the image is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    /// Free-form annotations.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The name this descriptor carries in an index: the containerd full image
    /// name if present, else the OCI ref name.
    pub(crate) fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(IMAGE_NAME_ANNOTATION)
            .or_else(|| self.annotations.get(REF_NAME_ANNOTATION))
            .map(String::as_str)
            .filter(|name| !name.is_empty())
    }

    /// Where the blob lives in an image layout.
    pub(crate) fn blob_path(&self) -> String {
        blob_path(&self.digest)
    }
}

/// The path of blob `digest` inside an image layout (`blobs/sha256/<hex>`).
pub(crate) fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    /// Always 2.
    pub(crate) schema_version: u32,
    /// The index media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    /// The manifests (or nested indexes) it lists.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    /// Always 2.
    pub(crate) schema_version: u32,
    /// The manifest media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    /// The config blob.
    pub(crate) config: Descriptor,
    /// The layer blobs, bottom-most first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) layers: Vec<Descriptor>,
}

/// The `oci-layout` marker file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LayoutFile {
    /// The layout version (`1.0.0`).
    pub(crate) image_layout_version: String,
}
