//! The SecAgg+ neighbour graph: who exchanges keys, masks and shares with whom.
//!
//! # Choice: a Harary graph on a seeded ring
//!
//! Clients are placed on a ring in the order of `SHA-256(seed || id)`, and each
//! is linked to its `floor(k/2)` nearest ring positions on either side; when `k`
//! is odd and `N` even, also to the diametrically opposite position. This is the
//! Harary graph `H_{k,N}`, the sparsest `k`-connected graph on `N` vertices:
//!
//! * **Connectivity.** Removing any `k-1` vertices leaves it connected, so the
//!   dropout pattern has to be very adversarial before the survivors' masks
//!   split into components; and since each survivor must keep `t` live
//!   neighbours (or the round aborts), every surviving input is masked against
//!   at least `t` other survivors and hides inside a sum of at least `t+1`
//!   inputs.
//! * **Determinism.** Every party derives the same graph from the revealed
//!   nonces; the hash ordering (rather than id order) makes the
//!   neighbourhoods unrelated to how ids were assigned.
//! * **Exact degree.** Every vertex has degree exactly `k` (or `k+1` when both
//!   `k` and `N` are odd, where a `k`-regular graph cannot exist), so cost per
//!   client is flat in `N`.
//!
//! With `k = N-1` this is the complete graph: classic SecAgg.
//!
//! Bell et al. analyse an Erdős–Rényi graph chosen after the adversary commits
//! to its corruptions. Here the seed is likewise out of the server's reach: it is
//! `H(session, key transcript, every client's nonce)` ([`crate::crypto::graph_seed`]),
//! each nonce committed to in a signed advertisement before any is revealed, and
//! every client checks the nonces and derives the graph itself (see the crate docs).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::config::ClientId;

/// An undirected graph over the roster, stored as sorted adjacency sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourGraph {
    adjacency: BTreeMap<ClientId, BTreeSet<ClientId>>,
}

static EMPTY: BTreeSet<ClientId> = BTreeSet::new();

impl NeighbourGraph {
    /// Builds the Harary graph `H_{k,N}` over `ids`, ring order drawn from `seed`.
    ///
    /// `k` is clamped to `N-1`; duplicate ids are ignored.
    pub fn harary(ids: &[ClientId], k: usize, seed: &[u8; 32]) -> Self {
        let mut ring: Vec<([u8; 32], ClientId)> = ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|id| {
                let mut h = Sha256::new();
                h.update(b"medfl-secagg/v1/graph");
                h.update(seed);
                h.update(id.0.to_le_bytes());
                (h.finalize().into(), id)
            })
            .collect();
        ring.sort();
        let n = ring.len();
        let mut adjacency: BTreeMap<ClientId, BTreeSet<ClientId>> =
            ring.iter().map(|&(_, id)| (id, BTreeSet::new())).collect();
        if n < 2 {
            return Self { adjacency };
        }
        let mut k = k.min(n - 1);
        if k % 2 == 1 && n % 2 == 1 {
            k += 1; // k ≤ n-2 here, so k+1 ≤ n-1 still
        }
        let half = k / 2;
        let mut link = |a: usize, b: usize| {
            let (ia, ib) = (ring[a].1, ring[b].1);
            if ia != ib {
                adjacency.entry(ia).or_default().insert(ib);
                adjacency.entry(ib).or_default().insert(ia);
            }
        };
        for pos in 0..n {
            for step in 1..=half {
                link(pos, (pos + step) % n);
            }
            if k % 2 == 1 {
                link(pos, (pos + n / 2) % n);
            }
        }
        Self { adjacency }
    }

    /// Neighbours of `id` (empty if `id` is not in the graph).
    pub fn neighbours(&self, id: ClientId) -> &BTreeSet<ClientId> {
        self.adjacency.get(&id).unwrap_or(&EMPTY)
    }

    /// Whether `a` and `b` are linked.
    pub fn are_neighbours(&self, a: ClientId, b: ClientId) -> bool {
        self.neighbours(a).contains(&b)
    }

    /// Smallest degree over all vertices.
    pub fn min_degree(&self) -> usize {
        self.adjacency
            .values()
            .map(BTreeSet::len)
            .min()
            .unwrap_or(0)
    }

    /// Largest degree over all vertices.
    pub fn max_degree(&self) -> usize {
        self.adjacency
            .values()
            .map(BTreeSet::len)
            .max()
            .unwrap_or(0)
    }

    /// All vertices, ascending.
    pub fn vertices(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.adjacency.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u32) -> Vec<ClientId> {
        (0..n).map(ClientId).collect()
    }

    fn connected_without(g: &NeighbourGraph, removed: &BTreeSet<ClientId>) -> bool {
        let alive: Vec<ClientId> = g.vertices().filter(|v| !removed.contains(v)).collect();
        let Some(&start) = alive.first() else {
            return true;
        };
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            for &w in g.neighbours(v) {
                if !removed.contains(&w) && seen.insert(w) {
                    stack.push(w);
                }
            }
        }
        seen.len() == alive.len()
    }

    #[test]
    fn degrees_are_k_or_k_plus_one() {
        for n in 2..40u32 {
            for k in 1..n as usize {
                let g = NeighbourGraph::harary(&ids(n), k, &[7; 32]);
                assert!(g.min_degree() >= k, "n={n} k={k}");
                let odd_odd = k % 2 == 1 && n % 2 == 1;
                assert_eq!(
                    g.max_degree(),
                    if odd_odd { k + 1 } else { k },
                    "n={n} k={k}"
                );
                for v in g.vertices() {
                    for &w in g.neighbours(v) {
                        assert!(g.are_neighbours(w, v), "symmetric");
                        assert_ne!(v, w, "no self loops");
                    }
                }
            }
        }
    }

    #[test]
    fn complete_when_k_is_n_minus_one() {
        let g = NeighbourGraph::harary(&ids(9), 8, &[1; 32]);
        assert_eq!(g.min_degree(), 8);
    }

    #[test]
    fn survives_removal_of_k_minus_one_vertices() {
        let n = 20u32;
        let k = 4;
        let g = NeighbourGraph::harary(&ids(n), k, &[3; 32]);
        for a in 0..n {
            for b in a + 1..n {
                for c in b + 1..n {
                    let removed = BTreeSet::from([ClientId(a), ClientId(b), ClientId(c)]);
                    assert!(connected_without(&g, &removed));
                }
            }
        }
    }

    #[test]
    fn seed_changes_the_graph_deterministically() {
        let a = NeighbourGraph::harary(&ids(30), 6, &[1; 32]);
        let b = NeighbourGraph::harary(&ids(30), 6, &[1; 32]);
        let c = NeighbourGraph::harary(&ids(30), 6, &[2; 32]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
