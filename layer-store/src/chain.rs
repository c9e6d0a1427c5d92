//! Chain IDs: the identity of a layer *together with* all layers below it.
//!
//! As the OCI image spec defines them: `ChainID(L0) = DiffID(L0)` and
//! `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`, hashing the
//! `sha256:<hex>` spellings.

use crate::digest::Digest;

/// The chain ID of a layer with diff ID `diff_id` on top of the layer whose chain ID is `parent`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => Digest::of_bytes(format!("{parent} {diff_id}").as_bytes()),
    }
}

/// The chain IDs of a stack of layers given bottom-most first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(chain.last(), diff_id);
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let c = Digest::of_bytes(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let ab = Digest::of_bytes(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes());
        let abc = Digest::of_bytes(format!("sha256:{} sha256:{}", ab.hex(), c.hex()).as_bytes());
        assert_eq!(ids, vec![a, ab, abc]);
        assert!(chain_ids(&[]).is_empty());
    }
}
