//! Shared helpers for the integration tests: a reference model of when a
//! round must succeed, written from the protocol rules rather than from the
//! implementation's code paths.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use medfl_secagg::ClientId;
use medfl_secagg::graph::NeighbourGraph;
use medfl_secagg::sim::DropPoint;

/// Why the oracle expects an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Fewer than `t` clients in some stage.
    TooFewSurvivors,
    /// Some secret has fewer than `t` live shareholders.
    TooFewShares,
    /// A client advertised but never revealed its nonce.
    MissingNonce,
    /// The round should have fixed a graph but the server reports none.
    NoGraph,
}

fn live_neighbours(g: &NeighbourGraph, i: ClientId, set: &BTreeSet<ClientId>) -> usize {
    g.neighbours(i).iter().filter(|j| set.contains(j)).count()
}

/// Survivor set the round must produce, or the kind of abort it must end in.
pub fn oracle(
    g: Option<&NeighbourGraph>,
    n: u32,
    t: usize,
    drops: &BTreeMap<ClientId, DropPoint>,
) -> Result<BTreeSet<ClientId>, Expect> {
    let alive_at = |set: &BTreeSet<ClientId>, p: DropPoint| -> BTreeSet<ClientId> {
        set.iter()
            .copied()
            .filter(|i| drops.get(i).is_none_or(|d| *d > p))
            .collect()
    };
    let all: BTreeSet<ClientId> = (0..n).map(ClientId).collect();
    // U1: advertised.
    let u1 = alive_at(&all, DropPoint::BeforeAdvertise);
    if u1.len() < t {
        return Err(Expect::TooFewSurvivors);
    }
    // Every advertiser must reveal its nonce, or nobody learns the graph.
    if u1.len() != alive_at(&u1, DropPoint::BeforeRevealNonce).len() {
        return Err(Expect::MissingNonce);
    }
    let Some(g) = g else {
        return Err(Expect::NoGraph);
    };
    // U2: sent shares; a client with fewer than t advertised neighbours refuses to.
    let u2: BTreeSet<ClientId> = alive_at(&u1, DropPoint::BeforeShareKeys)
        .into_iter()
        .filter(|&i| live_neighbours(g, i, &u1) >= t)
        .collect();
    if u2.len() < t {
        return Err(Expect::TooFewSurvivors);
    }
    // U3: sent masked input; a client with fewer than t mask partners refuses to.
    let u3: BTreeSet<ClientId> = alive_at(&u2, DropPoint::BeforeMaskedInput)
        .into_iter()
        .filter(|&i| live_neighbours(g, i, &u2) >= t)
        .collect();
    // Clients sign only a survivor set that leaves at most `degree - t` clients out, so the
    // honest survivors stay connected in the graph (see `on_survivor_set`).
    let connected = (n as usize).saturating_sub(g.min_degree().saturating_sub(t));
    if u3.len() < connected.max(t) {
        return Err(Expect::TooFewSurvivors);
    }
    // U4: signed the survivor set; a quorum of the roster must (see `consistency_quorum`).
    let u4 = alive_at(&u3, DropPoint::BeforeConsistency);
    let quorum = (n as usize + t - 1) / 2 + 1;
    if u4.len() < quorum.max(t) {
        return Err(Expect::TooFewSurvivors);
    }
    let u5 = alive_at(&u4, DropPoint::BeforeUnmask);
    if u5.len() < t {
        return Err(Expect::TooFewSurvivors);
    }
    for &i in &u3 {
        if live_neighbours(g, i, &u5) < t {
            return Err(Expect::TooFewShares);
        }
    }
    for &d in u2.difference(&u3) {
        let has_survivor_partner = g.neighbours(d).iter().any(|j| u3.contains(j));
        if has_survivor_partner && live_neighbours(g, d, &u5) < t {
            return Err(Expect::TooFewShares);
        }
    }
    Ok(u3)
}

/// `Σ_{i ∈ who} inputs[i] mod 2^bits`, computed the obvious way.
pub fn plain_sum(
    inputs: &BTreeMap<ClientId, Vec<u64>>,
    who: &BTreeSet<ClientId>,
    bits: u32,
    d: usize,
) -> Vec<u64> {
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut s = vec![0u64; d];
    for i in who {
        for (a, x) in s.iter_mut().zip(&inputs[i]) {
            *a = a.wrapping_add(*x);
        }
    }
    s.iter().map(|x| x & mask).collect()
}
