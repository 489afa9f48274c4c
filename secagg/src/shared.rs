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
//! Three checks every client makes of what the server sent everyone are `O(n)` each: the key
//! transcript's hash, the nonces against their commitments (`n` hashes), and the consistency
//! proof (a quorum of signatures over the survivor set). A simulated server
//! sends every session the same `Arc`, so each answer is remembered under that allocation
//! ([`ByAddress`]) and computed by the first session that asks. A session sent a list of its
//! own (as a server that shows different clients different transcripts would) computes its own.
//!
//! A daemon (one session to a process) does not use this.

use std::sync::Arc;

use medfl_memo::{ByAddress, Interner, SignatureCache};

use crate::config::{ClientId, RoundPlan};
use crate::error::SecAggError;
use crate::graph::NeighbourGraph;
use crate::message::TranscriptEntry;

/// The secure-aggregation sessions of one process: hand the same `Arc` to each
/// ([`crate::ClientSession::share`]).
#[derive(Debug)]
pub struct SharedSessions {
    signatures: SignatureCache,
    /// Plans by session tag (a hash of the configuration and roster).
    plans: Interner<[u8; 32], RoundPlan>,
    /// Graphs by session tag and graph seed.
    graphs: Interner<([u8; 32], [u8; 32]), NeighbourGraph>,
    /// Key-transcript hashes by session tag and transcript allocation.
    transcripts: ByAddress<[u8; 32], [TranscriptEntry], [u8; 32]>,
    /// Graph seeds (or why the nonces fail) by session tag, key-transcript hash and nonce list.
    seeds: ByAddress<([u8; 32], [u8; 32]), [ByClient], SeedOrRefusal>,
    /// Consistency proofs checked, by session tag, key-transcript hash, survivor-set digest,
    /// quorum ([`ProofKey`]) and signature list.
    proofs: ByAddress<ProofKey, [ByClient], Result<(), SecAggError>>,
}

/// Session tag, key-transcript hash, survivor-set digest and quorum: everything a
/// consistency proof's verdict depends on besides the signatures. The tag already binds the
/// roster and the resolved threshold (so the quorum); the quorum is named as well, so a future
/// knob that moves it without moving the tag cannot share a verdict across it.
type ProofKey = ([u8; 32], [u8; 32], [u8; 32], usize);

/// A graph seed, or why the nonces it would come from are refused.
type SeedOrRefusal = Result<[u8; 32], SecAggError>;

/// Bytes of one client as the server forwards them: a revealed nonce, or a consistency
/// signature.
pub(crate) type ByClient = (ClientId, Vec<u8>);

impl SharedSessions {
    /// Sessions that also share `signatures` (with whatever else in the process checks them).
    pub fn new(signatures: SignatureCache) -> Arc<SharedSessions> {
        Arc::new(SharedSessions {
            signatures,
            plans: Interner::default(),
            graphs: Interner::default(),
            transcripts: ByAddress::default(),
            seeds: ByAddress::default(),
            proofs: ByAddress::default(),
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

    /// The hash of `entries` under `session`, computed by `hash` for the first session sent
    /// this allocation.
    pub(crate) fn transcript_hash(
        &self,
        session: [u8; 32],
        entries: &Arc<[TranscriptEntry]>,
        hash: impl FnOnce() -> [u8; 32],
    ) -> [u8; 32] {
        self.transcripts.get_or_compute(session, entries, hash)
    }

    /// The graph seed from `nonces` checked against the transcript `key_transcript` names,
    /// computed by `check` for the first session sent this allocation.
    pub(crate) fn graph_seed(
        &self,
        session: [u8; 32],
        key_transcript: [u8; 32],
        nonces: &Arc<[ByClient]>,
        check: impl FnOnce() -> Result<[u8; 32], SecAggError>,
    ) -> Result<[u8; 32], SecAggError> {
        self.seeds
            .get_or_compute((session, key_transcript), nonces, check)
    }

    /// Whether `signatures` prove the survivor set `key.2` (under session `key.0`, key
    /// transcript `key.1` and quorum `key.3`), computed by `check` for the first session sent
    /// this allocation.
    pub(crate) fn consistency_proof(
        &self,
        key: ProofKey,
        signatures: &Arc<[ByClient]>,
        check: impl FnOnce() -> Result<(), SecAggError>,
    ) -> Result<(), SecAggError> {
        self.proofs.get_or_compute(key, signatures, check)
    }
}
