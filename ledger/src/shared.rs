//! What the ledger copies of one process share: identical bytes and identical states held once,
//! signatures checked once. Every copy still validates every block for itself.
//!
//! A simulated consortium of `n` hospitals keeps `n + 1` copies of one chain, each validated
//! by its own member, as the daemons do. Held apart, the copies cost `O(n)` each (every state
//! lists every member, every anchor every participant), `O(n^2)` in all: most of a
//! thousand-hospital simulation's memory. But a validated state is a pure function of the
//! chain it validated, named by its height and tip hash, and a block's bytes are the same in
//! every copy. So a copy applies each block to its own state as always, and then, if an equal
//! state already exists in the process, keeps that one and drops its own; block bytes are
//! interned the same way. A copy that refuses a block keeps the state it held before it; one
//! that validated differently (a bug) never meets an equal state and keeps its own: sharing
//! changes what is held, never a verdict.
//!
//! Within a state, the parts few blocks change (the member list and its keys, consent
//! choices, an agreement's terms, covered and accepted members) sit behind `Arc`s and
//! [`crate::MemberId`] is an `Arc<str>`: a copy's private clone of the state it applies a
//! block to shares them with its parent, and comparing it with an equal state finds the same
//! pointers. What a round anchor changes (each participant's spend, rounds joined and privacy
//! loss) is cloned, applied and compared per copy: `O(participants)` for each of the `n`
//! copies, which no sharing removes while every copy validates for itself.
//!
//! A daemon (one member to a process) has nothing to share and does not use this.

use std::sync::Arc;

use medfl_memo::{Interner, SignatureCache};
use sha2::{Digest, Sha256};

use crate::bytes::Hash;
use crate::genesis::Genesis;
use crate::state::ChainState;

/// The ledger copies of one process: hand the same `Arc` to each
/// ([`crate::Ledger::in_memory_shared`]).
#[derive(Debug)]
pub struct SharedCopies {
    signatures: SignatureCache,
    /// Genesis documents by the SHA-256 of their encoding.
    genesis: Interner<[u8; 32], Genesis>,
    /// Validated states by height and tip hash.
    states: Interner<(u64, Hash), ChainState>,
    /// Block and genesis bytes by their SHA-256.
    bytes: Interner<[u8; 32], [u8]>,
}

impl SharedCopies {
    /// Copies that also share `signatures` (with whatever else in the process checks them).
    pub fn new(signatures: SignatureCache) -> Arc<SharedCopies> {
        Arc::new(SharedCopies {
            signatures,
            genesis: Interner::default(),
            states: Interner::default(),
            bytes: Interner::default(),
        })
    }

    /// The signatures the copies have checked.
    pub fn signatures(&self) -> &SignatureCache {
        &self.signatures
    }

    /// The held genesis equal to `genesis`, whose encoding is `encoded`, else `genesis`.
    pub(crate) fn genesis(&self, genesis: &Genesis, encoded: &[u8]) -> Arc<Genesis> {
        self.genesis
            .intern(Sha256::digest(encoded).into(), Arc::new(genesis.clone()))
    }

    /// The held state equal to `state` if there is one, else `state` (see [`Interner::intern`]).
    pub(crate) fn state(&self, state: Arc<ChainState>) -> Arc<ChainState> {
        self.states.intern((state.height(), state.tip()), state)
    }

    /// The held bytes equal to `bytes` if there are any, else `bytes` (see [`Interner::intern`]).
    pub(crate) fn bytes(&self, bytes: &[u8]) -> Arc<[u8]> {
        self.bytes
            .intern(Sha256::digest(bytes).into(), Arc::from(bytes))
    }
}
