//! Layer records: one per chain ID, shared by every image that contains the layer.

use std::io::{BufReader, Read};

use serde::{Deserialize, Serialize};

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::Image;
use crate::store::Store;

/// A stored layer (`<root>/layers/<chain-hex>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Identity of this layer together with all layers below it.
    pub chain_id: Digest,
    /// Digest of the uncompressed layer tar.
    pub diff_id: Digest,
    /// Chain ID of the layer below, `None` for a bottom layer.
    pub parent: Option<Digest>,
    /// The blob holding the layer as it arrived.
    pub blob: Digest,
    /// Size of the blob in bytes.
    pub blob_size: u64,
    /// Compression of the blob.
    pub compression: Compression,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// Media type of the blob.
    pub media_type: String,
}

impl Store {
    /// The layer record of `chain_id`.
    pub fn layer(&self, chain_id: &Digest) -> Result<Layer> {
        self.read_layer_record(chain_id)?
            .ok_or_else(|| StoreError::LayerNotFound {
                chain_id: chain_id.clone(),
            })
    }

    /// Every layer record, ordered by chain ID.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        self.layer_records()
    }

    /// The layers of `image`, bottom-most first.
    pub fn image_layers(&self, image: &Image) -> Result<Vec<Layer>> {
        image
            .chain_ids
            .iter()
            .map(|chain_id| self.layer(chain_id))
            .collect()
    }

    /// The uncompressed tar stream of a stored layer (decompressed as read).
    pub fn layer_tar(&self, layer: &Layer) -> Result<Box<dyn Read + Send>> {
        let blob = self.open_blob(&layer.blob)?;
        layer
            .compression
            .decoder(BufReader::with_capacity(256 * 1024, blob))
            .map_err(|source| StoreError::Io {
                context: format!("decompressing layer {}", layer.chain_id),
                source,
            })
    }
}
