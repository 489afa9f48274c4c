//! What the secure-aggregation sessions of one process share: round plans, neighbour graphs and
//! signature checks, each computed once from the same inputs.
//!
//! In a simulated consortium every hospital's session builds the same plan (the whole roster,
//! `O(n)`) and, once the nonces are out, the same neighbour graph (`O(n * degree)`): `O(n^2)`
//! memory and time a round, for `n` copies of one value. Each session still builds and checks
//! its own plan from the configuration and roster its agent validated; an equal plan held by
//! another session is then kept instead (compared in full). The graph is a pure function of the
//! plan and the graph seed, which each session derives and checks itself; it is computed by the
//! first session to need it.
//!
//! A daemon (one session to a process) does not use this.

use std::sync::Arc;

use medfl_memo::{Interner, SignatureCache};

use crate::config::RoundPlan;
use crate::graph::NeighbourGraph;

/// The secure-aggregation sessions of one process: hand the same `Arc` to each
/// ([`crate::ClientSession::share`]).
#[derive(Debug)]
pub struct SharedSessions {
    signatures: SignatureCache,
    /// Plans by session tag (a hash of the configuration and roster).
    plans: Interner<[u8; 32], RoundPlan>,
    /// Graphs by session tag and graph seed.
    graphs: Interner<([u8; 32], [u8; 32]), NeighbourGraph>,
}

impl SharedSessions {
    /// Sessions that also share `signatures` (with whatever else in the process checks them).
    pub fn new(signatures: SignatureCache) -> Arc<SharedSessions> {
        Arc::new(SharedSessions {
            signatures,
            plans: Interner::default(),
            graphs: Interner::default(),
        })
    }

    /// The signatures the sessions have checked.
    pub fn signatures(&self) -> &SignatureCache {
        &self.signatures
    }

    /// The held plan equal to `plan` if there is one, else `plan` (see [`Interner::intern`]).
    pub(crate) fn plan(&self, plan: Arc<RoundPlan>) -> Arc<RoundPlan> {
        self.plans.intern(plan.session, plan)
    }

    /// `plan`'s neighbour graph for `seed`, built by the first session that asked.
    pub(crate) fn graph(&self, plan: &RoundPlan, seed: &[u8; 32]) -> Arc<NeighbourGraph> {
        let key = (plan.session, *seed);
        match self.graphs.get(&key) {
            Some(graph) => graph,
            None => self.graphs.intern(key, Arc::new(plan.graph(seed))),
        }
    }
}
