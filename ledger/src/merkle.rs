//! Merkle trees over a block's transactions, in the RFC 6962 (Certificate Transparency) form.
//!
//! Leaves are hashed as `H(0x00 || leaf)` and inner nodes as `H(0x01 || left || right)`, so a leaf
//! can never pass for an inner node. An unbalanced tree splits at the largest power of two below
//! the leaf count instead of duplicating the last leaf: Bitcoin's duplication let two different
//! transaction lists share one root (CVE-2012-2459); this form does not.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bytes::Hash;

/// The hash of one leaf.
pub fn leaf_hash(leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf.0);
    Hash(h.finalize().into())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The largest power of two strictly below `n` (for `n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root over `leaves` (transaction ids); the empty tree's root is `SHA-256("")`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash(Sha256::digest([]).into()),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The sibling hashes from a leaf up to the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerklePath {
    /// Position of the leaf among `leaf_count`.
    pub index: u64,
    /// Number of leaves in the tree.
    pub leaf_count: u64,
    /// Siblings, from the leaf's level upwards.
    pub siblings: Vec<Hash>,
}

/// The path for leaf `index`, or `None` if out of range.
pub fn path(leaves: &[Hash], index: usize) -> Option<MerklePath> {
    if index >= leaves.len() {
        return None;
    }
    let mut siblings = Vec::new();
    collect_path(leaves, index, &mut siblings);
    Some(MerklePath {
        index: index as u64,
        leaf_count: leaves.len() as u64,
        siblings,
    })
}

fn collect_path(leaves: &[Hash], index: usize, out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    if index < k {
        collect_path(&leaves[..k], index, out);
        out.push(root(&leaves[k..]));
    } else {
        collect_path(&leaves[k..], index - k, out);
        out.push(root(&leaves[..k]));
    }
}

impl MerklePath {
    /// The root this path leads to from `leaf`, or `None` if the path's shape does not fit its
    /// claimed index and leaf count (RFC 9162, section 2.1.3.2).
    pub fn root_from(&self, leaf: &Hash) -> Option<Hash> {
        if self.index >= self.leaf_count {
            return None;
        }
        let (mut fn_, mut sn) = (self.index, self.leaf_count - 1);
        let mut r = leaf_hash(leaf);
        for p in &self.siblings {
            if sn == 0 {
                return None;
            }
            if fn_ & 1 == 1 || fn_ == sn {
                r = node_hash(p, &r);
                if fn_ & 1 == 0 {
                    while fn_ & 1 == 0 && fn_ != 0 {
                        fn_ >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, p);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        (sn == 0).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| Hash::tagged(b"leaf", &[&i.to_le_bytes()]))
            .collect()
    }

    #[test]
    fn every_path_leads_to_the_root() {
        for n in 1..=33 {
            let ls = leaves(n);
            let r = root(&ls);
            for i in 0..n {
                let p = path(&ls, i).unwrap();
                assert_eq!(p.root_from(&ls[i]), Some(r), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn no_duplicate_last_leaf_collision() {
        // With Bitcoin's rule, [a, b, c] and [a, b, c, c] share a root.
        let ls = leaves(3);
        let mut dup = ls.clone();
        dup.push(ls[2]);
        assert_ne!(root(&ls), root(&dup));
    }

    proptest! {
        #[test]
        fn wrong_leaf_or_index_fails(n in 1usize..64, i in 0usize..64, j in 0usize..64) {
            let ls = leaves(n);
            let (i, j) = (i % n, j % n);
            let r = root(&ls);
            let p = path(&ls, i).unwrap();
            if i != j {
                prop_assert_ne!(p.root_from(&ls[j]), Some(r));
                let moved = MerklePath { index: j as u64, ..p.clone() };
                prop_assert_ne!(moved.root_from(&ls[i]), Some(r));
            }
            // The root does not commit to the leaf count (a 17-leaf path for leaf 0 also fits
            // 18 leaves), which is why proofs compare it with the signed header's tx_count.
        }
    }
}
