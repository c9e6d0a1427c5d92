//! Progress reports while layers stream into the store.

use crate::digest::Digest;

/// Where an import or commit stands: reported repeatedly while each layer streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 1-based number of the layer being streamed.
    pub layer: usize,
    /// How many layers this operation streams (shared layers counted once).
    pub layers: usize,
    /// The layer's blob digest when the input names it.
    pub digest: Option<Digest>,
    /// Bytes of this layer consumed so far (as stored, i.e. compressed).
    pub bytes_done: u64,
    /// Total bytes of this layer, when known (0 if not).
    pub bytes_total: u64,
}
