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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use medfl_sigcache::SignatureCache;
use sha2::{Digest, Sha256};

use crate::bytes::Hash;
use crate::genesis::Genesis;
use crate::state::ChainState;

/// How many interned values a table holds before its dead entries are swept.
const SWEEP_EVERY: usize = 1024;

/// The ledger copies of one process: hand the same `Arc` to each
/// ([`crate::Ledger::in_memory_shared`]).
#[derive(Debug)]
pub struct SharedCopies {
    signatures: SignatureCache,
    genesis: Mutex<Vec<Arc<Genesis>>>,
    states: Mutex<Table<(u64, Hash), ChainState>>,
    bytes: Mutex<Table<[u8; 32], [u8]>>,
}

impl SharedCopies {
    /// Copies that also share `signatures` (with whatever else in the process checks them).
    pub fn new(signatures: SignatureCache) -> Arc<SharedCopies> {
        Arc::new(SharedCopies {
            signatures,
            genesis: Mutex::new(Vec::new()),
            states: Mutex::new(Table::default()),
            bytes: Mutex::new(Table::default()),
        })
    }

    /// The signatures the copies have checked.
    pub fn signatures(&self) -> &SignatureCache {
        &self.signatures
    }

    /// The one held genesis equal to `genesis`.
    pub(crate) fn genesis(&self, genesis: &Genesis) -> Arc<Genesis> {
        let mut held = lock(&self.genesis);
        if let Some(g) = held.iter().find(|g| ***g == *genesis) {
            return Arc::clone(g);
        }
        let g = Arc::new(genesis.clone());
        held.push(Arc::clone(&g));
        g
    }

    /// The held state equal to `state` if there is one, else `state`, now held.
    pub(crate) fn state(&self, state: Arc<ChainState>) -> Arc<ChainState> {
        let key = (state.height(), state.tip());
        lock(&self.states).intern(key, state)
    }

    /// The held bytes equal to `bytes` if there are any, else `bytes`, now held.
    pub(crate) fn bytes(&self, bytes: &[u8]) -> Arc<[u8]> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        lock(&self.bytes).intern(key, Arc::from(bytes))
    }
}

/// Weakly held values by key: a value lives as long as some copy holds it.
#[derive(Debug)]
struct Table<K, V: ?Sized> {
    held: HashMap<K, Weak<V>>,
    inserted: usize,
}

impl<K, V: ?Sized> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            held: HashMap::new(),
            inserted: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq, V: ?Sized + PartialEq> Table<K, V> {
    fn intern(&mut self, key: K, value: Arc<V>) -> Arc<V> {
        if let Some(held) = self.held.get(&key).and_then(Weak::upgrade) {
            // Equal keys should mean equal values; compared anyway, so that a copy whose state
            // differs (it would be a bug) keeps its own instead of silently adopting another's.
            if Arc::ptr_eq(&held, &value) || *held == *value {
                return held;
            }
            return value;
        }
        self.inserted += 1;
        if self.inserted.is_multiple_of(SWEEP_EVERY) {
            self.held.retain(|_, v| v.strong_count() > 0);
        }
        self.held.insert(key, Arc::downgrade(&value));
        value
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Interned values are immutable; a panicking holder cannot have left one half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
