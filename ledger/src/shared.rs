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
//! interned the same way. A copy that validated differently (a bug, or a refused block) never
//! meets an equal state and keeps its own: sharing changes what is held, never a verdict.
//!
//! A daemon (one member to a process) has nothing to share and does not use this.

use std::sync::{Arc, Mutex, PoisonError};

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
    genesis: Mutex<Vec<Arc<Genesis>>>,
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
            genesis: Mutex::new(Vec::new()),
            states: Interner::default(),
            bytes: Interner::default(),
        })
    }

    /// The signatures the copies have checked.
    pub fn signatures(&self) -> &SignatureCache {
        &self.signatures
    }

    /// The one held genesis equal to `genesis`.
    pub(crate) fn genesis(&self, genesis: &Genesis) -> Arc<Genesis> {
        let mut held = self.genesis.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = held.iter().find(|g| ***g == *genesis) {
            return Arc::clone(g);
        }
        let g = Arc::new(genesis.clone());
        held.push(Arc::clone(&g));
        g
    }

    /// The held state equal to `state` if there is one, else `state`, now held.
    pub(crate) fn state(&self, state: Arc<ChainState>) -> Arc<ChainState> {
        self.states.intern((state.height(), state.tip()), state)
    }

    /// The held bytes equal to `bytes` if there are any, else `bytes`, now held.
    pub(crate) fn bytes(&self, bytes: &[u8]) -> Arc<[u8]> {
        self.bytes
            .intern(Sha256::digest(bytes).into(), Arc::from(bytes))
    }
}
