//! Committing a layer on top of an image (e.g. a container's changes).
//!
//! The layer tar is stored as it is given (the CLI passes an uncompressed
//! tar, which is stored uncompressed so committing needs no compression CPU
//! time); its diff ID is computed while it streams in.

use std::io::Read;

use crate::blob::stage_layer;
use crate::config::{derive_child_config, ConfigChanges};
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::Image;
use crate::import::{publish, ReadyImage, ReadyLayer};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::Store;
use crate::timestamp::now_rfc3339;

impl Store {
    /// Stores `layer_tar` as a new layer on top of `base` and registers the
    /// resulting image under `reference`. Its config is the base config with
    /// the layer's diff ID appended to `rootfs.diff_ids`, a history entry
    /// (`created_by`, and `changes.comment`) appended, `created` set to now and
    /// `changes` applied; its ID is the digest of that config.
    pub fn commit_layer(
        &self,
        base: &Image,
        layer_tar: &mut dyn Read,
        reference: &str,
        created_by: &str,
        changes: &ConfigChanges,
    ) -> Result<Image> {
        self.commit_layer_with_progress(
            base,
            layer_tar,
            reference,
            created_by,
            changes,
            &mut |_| {},
        )
    }

    /// [`Store::commit_layer`], reporting the bytes streamed so far.
    pub fn commit_layer_with_progress(
        &self,
        base: &Image,
        layer_tar: &mut dyn Read,
        reference: &str,
        created_by: &str,
        changes: &ConfigChanges,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let base_config = self.read_blob(&base.config_digest)?;
        let actual = Digest::of_bytes(&base_config);
        if actual != base.config_digest {
            return Err(StoreError::DigestMismatch {
                context: format!("stored config of image {}", base.id),
                expected: base.config_digest.clone(),
                actual,
            });
        }
        let staging = self.staging()?;
        let mut report = |done: u64| {
            progress(&Progress {
                layer: 1,
                layers: 1,
                digest: None,
                bytes_done: done,
                bytes_total: 0,
            })
        };
        let blob = stage_layer(&staging, layer_tar, &mut report, "committed layer")?;
        let created = now_rfc3339();
        let config =
            derive_child_config(&base_config, &blob.diff_id, &created, created_by, changes)?;
        let image = ReadyImage {
            config,
            created: Some(created),
            manifest: None,
            base_chain_ids: base.chain_ids.clone(),
            layers: vec![ReadyLayer {
                blob: &blob,
                media_type: blob.compression.oci_layer_media_type().to_string(),
            }],
            names: vec![reference],
        };
        let mut images = publish(self, &staging, &[image])?;
        Ok(images.remove(0))
    }
}
