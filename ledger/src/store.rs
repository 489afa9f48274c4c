//! Where a ledger's blocks live: a small trait, an in-memory store, and (with the `redb`
//! feature, on by default) the durable redb store.
//!
//! A store holds bytes and an index, nothing more: it never decodes or judges a block. Every
//! rule lives in [`crate::state::ChainState`], so whatever holds the bytes, a block is admitted
//! by the same code. The in-memory store holds a copy that needs no database file: for tests,
//! and for a simulated member's own copy.
//!
//! Only the blocks and the genesis are evidence; the transaction index and the tip record are
//! derived, rebuilt or checked by verification.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::bytes::Hash;
use crate::shared::SharedCopies;
use crate::tx::TxId;

#[cfg(feature = "redb")]
mod disk;
#[cfg(feature = "redb")]
pub use disk::{RedbStore, StorageFault, quiet_storage_panics};

/// A storage failure, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("ledger storage: {context}: {source}")]
pub struct StoreError {
    context: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// A failure while doing `context`.
    pub fn new(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError {
            context,
            source: source.into(),
        }
    }

    /// Whether the store found its file damaged (as opposed to, say, unreadable or locked).
    pub fn is_damage(&self) -> bool {
        #[cfg(feature = "redb")]
        if let Some(fault) = self.source.downcast_ref::<StorageFault>() {
            return matches!(fault, StorageFault::Damaged(_) | StorageFault::Poisoned);
        }
        false
    }
}

/// The bytes of one ledger: its genesis, its blocks by height, and the derived index.
pub trait BlockStore: Send + Sync {
    /// The stored genesis encoding.
    fn genesis(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// The stored tip record `(height, hash)`, if any block was appended.
    fn tip_record(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Appends one block and its index entries, all or nothing; durable when the store is.
    fn append(
        &mut self,
        height: u64,
        block: &[u8],
        tx_ids: &[TxId],
        tip_record: &[u8],
    ) -> Result<(), StoreError>;

    /// The stored bytes of the block at `height`.
    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `visit(height, bytes)` for every block in height order until it breaks; a storage
    /// failure names the height it was reading.
    fn for_each_block(
        &self,
        visit: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), (u64, StoreError)>;

    /// Where a transaction is: `(height, position)`.
    fn tx_location(&self, id: &TxId) -> Result<Option<(u64, u32)>, StoreError>;

    /// Number of entries in the transaction index.
    fn tx_index_len(&self) -> Result<u64, StoreError>;
}

/// Runs `f` over every block, stopping at its first error; a storage failure at height `h`
/// becomes `storage_error(h, e)`.
pub fn try_for_each_block<E>(
    store: &dyn BlockStore,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    storage_error: impl Fn(u64, StoreError) -> E,
) -> Result<(), E> {
    let mut failed = None;
    store
        .for_each_block(&mut |height, bytes| match f(height, bytes) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })
        .map_err(|(height, e)| storage_error(height, e))?;
    failed.map_or(Ok(()), Err)
}

/// A ledger's bytes in memory: for simulated members and tests. Lost when dropped.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    genesis: Arc<[u8]>,
    blocks: BTreeMap<u64, Arc<[u8]>>,
    tx_index: BTreeMap<[u8; 32], (u64, u32)>,
    tip: Option<Vec<u8>>,
    /// Other copies' stores in this process, whose equal bytes this one holds instead of its own.
    shared: Option<Arc<SharedCopies>>,
}

impl MemStore {
    /// A store holding only the genesis.
    pub fn new(genesis: &[u8]) -> MemStore {
        MemStore {
            genesis: Arc::from(genesis),
            ..MemStore::default()
        }
    }

    /// A store holding only the genesis, which keeps one copy of bytes equal to another
    /// store's of `shared`.
    pub fn shared(genesis: &[u8], shared: Arc<SharedCopies>) -> MemStore {
        MemStore {
            genesis: shared.bytes(genesis),
            shared: Some(shared),
            ..MemStore::default()
        }
    }
}

impl BlockStore for MemStore {
    fn genesis(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(Some(self.genesis.to_vec()))
    }

    fn tip_record(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tip.clone())
    }

    fn append(
        &mut self,
        height: u64,
        block: &[u8],
        tx_ids: &[TxId],
        tip_record: &[u8],
    ) -> Result<(), StoreError> {
        let block = match &self.shared {
            Some(shared) => shared.bytes(block),
            None => Arc::from(block),
        };
        self.blocks.insert(height, block);
        for (position, id) in (0u32..).zip(tx_ids) {
            self.tx_index.insert(id.0, (height, position));
        }
        self.tip = Some(tip_record.to_vec());
        Ok(())
    }

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(&height).map(|b| b.to_vec()))
    }

    fn for_each_block(
        &self,
        visit: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), (u64, StoreError)> {
        for (&height, bytes) in &self.blocks {
            if visit(height, bytes).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn tx_location(&self, id: &TxId) -> Result<Option<(u64, u32)>, StoreError> {
        Ok(self.tx_index.get(&id.0).copied())
    }

    fn tx_index_len(&self) -> Result<u64, StoreError> {
        Ok(self.tx_index.len() as u64)
    }
}

/// Encodes the tip record.
pub(crate) fn tip_record(height: u64, hash: &Hash) -> Vec<u8> {
    let mut v = height.to_le_bytes().to_vec();
    v.extend_from_slice(&hash.0);
    v
}
