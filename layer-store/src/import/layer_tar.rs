//! A bare layer tar (plain, gzip or zstd): imported as a one-layer image with
//! a generated config (host architecture, linux, the layer's diff ID, and a
//! history entry `lamina import <file name>`). The config's `created` is the
//! file's modification time, so importing the same file twice gives the same
//! image ID.

use std::fs::File;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::blob::stage_layer;
use crate::config::single_layer_config;
use crate::error::{IoContext, Result};
use crate::image::Image;
use crate::import::naming::fallback_reference;
use crate::import::publish::{publish, ReadyImage, ReadyLayer};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::staging::StagingDir;
use crate::store::Store;
use crate::timestamp::rfc3339;

/// Streams the layer file at `path` into the store as a new image.
pub(crate) fn import(
    store: &Store,
    staging: &StagingDir,
    path: &Path,
    name: Option<&Reference>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Image>> {
    let mut file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let metadata = file
        .metadata()
        .io_context(|| format!("reading {}", path.display()))?;
    let total = metadata.len();
    let mut report = |done: u64| {
        progress(&Progress {
            layer: 1,
            layers: 1,
            digest: None,
            bytes_done: done,
            bytes_total: total,
        })
    };
    report(0);
    let context = format!("layer tar {}", path.display());
    let blob = stage_layer(staging, &mut file, &mut report, &context)?;

    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let created = rfc3339(metadata.modified().unwrap_or(UNIX_EPOCH));
    let config = single_layer_config(
        &blob.diff_id,
        &created,
        &format!("lamina import {file_name}"),
    );
    let image = ReadyImage {
        config,
        created: Some(created),
        manifest: None,
        base_chain_ids: Vec::new(),
        layers: vec![ReadyLayer {
            blob: &blob,
            media_type: blob.compression.oci_layer_media_type().to_string(),
        }],
        names: vec![name.cloned().unwrap_or_else(|| fallback_reference(path))],
    };
    publish(store, staging, &[image])
}
