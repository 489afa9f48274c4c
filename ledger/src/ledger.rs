//! A ledger: a block store, the genesis, and the state rebuilt from the blocks.
//!
//! On disk (feature `redb`) a ledger is a directory holding the database and the genesis file;
//! in memory ([`Ledger::in_memory`]) it is a copy that needs no file (tests today; each
//! simulated member's own copy once the simulator keeps one per member). Either way every block
//! is admitted by the same [`ChainState`] rules.

#[cfg(feature = "redb")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use crate::block::{BLOCK_VERSION, Block, BlockHeader};
use crate::bytes::Hash;
use crate::codec::{self, CodecError};
use crate::error::BlockError;
use crate::genesis::{Genesis, GenesisError};
use crate::member::MemberId;
use crate::merkle;
use crate::proof::InclusionProof;
use crate::shared::SharedCopies;
use crate::state::{ChainState, Signatures};
#[cfg(feature = "redb")]
use crate::store::RedbStore;
use crate::store::{self, BlockStore, MemStore, StoreError};
use crate::timestamp::Timestamp;
use crate::tx::{Transaction, TxId};

/// File name of the database inside a ledger directory.
pub const DB_FILE: &str = "ledger.redb";
/// File name of the genesis inside a ledger directory.
pub const GENESIS_FILE: &str = "genesis.toml";

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The genesis is invalid.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// The block was refused; the ledger is unchanged.
    #[error("block refused: {0}")]
    Rejected(#[from] BlockError),
    /// Stored bytes could not be decoded.
    #[error("stored data at height {height} is damaged: {source} (run `medfl ledger verify`)")]
    Damaged {
        /// Where.
        height: u64,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The directory already holds a ledger.
    #[error("{0} already holds a ledger")]
    Exists(PathBuf),
    /// The directory holds no ledger.
    #[error("{0} holds no ledger (expected {DB_FILE}); create one with `medfl ledger init`")]
    Missing(PathBuf),
    /// The ledger's genesis differs from the genesis file beside it.
    #[error("the database's genesis {stored} differs from {GENESIS_FILE} ({file})")]
    GenesisMismatch {
        /// Hash of the stored genesis.
        stored: Hash,
        /// Hash of the file.
        file: Hash,
    },
    /// Full verification from the caller's genesis failed.
    #[error("the ledger does not verify: {0}")]
    Unverified(#[from] crate::verify::VerifyError),
    /// No such transaction.
    #[error("transaction {0} is not on the ledger")]
    UnknownTx(TxId),
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// What an append produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockReceipt {
    /// Height of the new block.
    pub height: u64,
    /// Its hash.
    pub hash: Hash,
    /// Ids of its transactions, in order.
    pub tx_ids: Vec<TxId>,
}

/// An open ledger.
pub struct Ledger {
    store: Box<dyn BlockStore>,
    genesis: Arc<Genesis>,
    /// Shared only with the other copies of [`Ledger::in_memory_shared`]; a daemon's is its own
    /// and changes in place.
    state: Arc<ChainState>,
    /// The process's other copies of this chain (a simulation's hospitals); none in a daemon.
    shared: Option<Arc<SharedCopies>>,
}

impl Ledger {
    /// A ledger in memory holding only `genesis`, validated like any other.
    pub fn in_memory(genesis: &Genesis) -> Result<Ledger, LedgerError> {
        genesis.check()?;
        Ok(Ledger {
            store: Box::new(MemStore::new(&codec::encode(genesis)?)),
            genesis: Arc::new(genesis.clone()),
            state: Arc::new(ChainState::from_genesis(genesis)?),
            shared: None,
        })
    }

    /// [`Ledger::in_memory`], one of several copies of the chain in this process: it validates
    /// everything itself, and holds states, bytes and signature checks equal to another
    /// copy's only once (see [`SharedCopies`]).
    pub fn in_memory_shared(
        genesis: &Genesis,
        shared: &Arc<SharedCopies>,
    ) -> Result<Ledger, LedgerError> {
        genesis.check()?;
        let state = Arc::new(ChainState::from_genesis(genesis)?);
        let encoded = codec::encode(genesis)?;
        Ok(Ledger {
            store: Box::new(MemStore::shared(&encoded, Arc::clone(shared))),
            genesis: shared.genesis(genesis, &encoded),
            state: shared.state(state),
            shared: Some(Arc::clone(shared)),
        })
    }

    /// Creates a ledger in `dir` (made if absent) holding only `genesis`.
    #[cfg(feature = "redb")]
    pub fn create(dir: &Path, genesis: &Genesis) -> Result<Ledger, LedgerError> {
        genesis.check()?;
        let io = |path: PathBuf| move |source| LedgerError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let db_path = dir.join(DB_FILE);
        if db_path.exists() {
            return Err(LedgerError::Exists(dir.to_path_buf()));
        }
        let text = genesis.to_file().to_toml()?;
        let genesis_path = dir.join(GENESIS_FILE);
        std::fs::write(&genesis_path, text).map_err(io(genesis_path))?;
        let store = RedbStore::create(&db_path, &codec::encode(genesis)?)?;
        Ok(Ledger {
            store: Box::new(store),
            genesis: Arc::new(genesis.clone()),
            state: Arc::new(ChainState::from_genesis(genesis)?),
            shared: None,
        })
    }

    /// Opens a ledger this process cannot vouch for (someone else may have written it, or
    /// changed it since) and verifies it in full from `genesis`, the one the caller holds:
    /// every signature, hash link, contract rule, the index and the tip record. A ledger of
    /// another genesis, or one that fails any check, is refused with the first failing height.
    #[cfg(feature = "redb")]
    pub fn open_verified(dir: &Path, genesis: &Genesis) -> Result<Ledger, LedgerError> {
        let (store, stored) = open_parts(dir, Access::Owner)?;
        let (_, state) = crate::verify::verify_parts(&store, &stored, Some(genesis), None)?;
        Ok(Ledger {
            store: Box::new(store),
            genesis: Arc::new(stored),
            state: Arc::new(state),
            shared: None,
        })
    }

    /// Opens the ledger in `dir` and rebuilds its state.
    ///
    /// Every block is decoded and run through the contracts, but signatures are not re-checked:
    /// use it only on a ledger this process wrote and nobody else could have changed. For any
    /// other, [`Ledger::open_verified`].
    #[cfg(feature = "redb")]
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, Access::Owner)
    }

    /// Opens a private snapshot of the ledger in `dir`, which is only read: never locked,
    /// written or repaired, so it may be evidence on read-only media or the ledger of a running
    /// daemon. Appends go to the snapshot and vanish with it. Like [`Ledger::open`], it trusts
    /// the signatures; what an auditor trusts is [`crate::verify_dir_from`].
    #[cfg(feature = "redb")]
    pub fn open_snapshot(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, Access::Snapshot)
    }

    #[cfg(feature = "redb")]
    fn open_with(dir: &Path, access: Access) -> Result<Ledger, LedgerError> {
        let (store, genesis) = open_parts(dir, access)?;
        let mut state = ChainState::from_genesis(&genesis)?;
        store::try_for_each_block(
            &store,
            |height, bytes| {
                let damaged = |e: Box<dyn std::error::Error + Send + Sync>| LedgerError::Damaged {
                    height,
                    source: e,
                };
                let block: Block = codec::decode(bytes).map_err(|e| damaged(e.into()))?;
                let ids = block.tx_ids()?;
                state
                    .apply_block_trusting_signatures(&block, &ids)
                    .map_err(|e| damaged(e.into()))
            },
            |_, e| LedgerError::Store(e),
        )?;
        Ok(Ledger {
            store: Box::new(store),
            genesis: Arc::new(genesis),
            state: Arc::new(state),
            shared: None,
        })
    }

    /// Builds and signs a block of `txs` on top of the tip, without appending it.
    pub fn propose(
        &self,
        txs: Vec<Transaction>,
        timestamp: Timestamp,
        proposer: &MemberId,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<Block, LedgerError> {
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect::<Result<_, _>>()?;
        let header = BlockHeader {
            version: BLOCK_VERSION,
            height: self.state.height() + 1,
            previous: self.state.tip(),
            tx_root: merkle::root(&ids),
            tx_count: u32::try_from(txs.len()).unwrap_or(u32::MAX),
            timestamp,
            proposer: proposer.clone(),
        };
        let header = header.sign(&self.state.genesis_hash(), key)?;
        Ok(Block { header, txs })
    }

    /// Proposes a block of `txs` and appends it; returns once it is durable.
    pub fn append(
        &mut self,
        txs: Vec<Transaction>,
        timestamp: Timestamp,
        proposer: &MemberId,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<BlockReceipt, LedgerError> {
        let block = self.propose(txs, timestamp, proposer, key)?;
        self.append_block(&block)
    }

    /// Validates a block against every rule and, if it passes, stores it durably.
    /// A refused block leaves the ledger unchanged.
    pub fn append_block(&mut self, block: &Block) -> Result<BlockReceipt, LedgerError> {
        let ids = block.tx_ids()?;
        let bytes = codec::encode(block)?;
        // In place for a daemon's own state. A shared one is copied first, and the state it
        // was copied from is kept: a refused block puts it back as it was, and an accepted one
        // leaves a copy that another ledger copy may already hold (then that one is kept).
        let before = self.shared.is_some().then(|| Arc::clone(&self.state));
        let state = Arc::make_mut(&mut self.state);
        let signatures = self.shared.as_ref().map(|s| s.signatures());
        let applied = match state.apply_block_with_ids(block, &ids, Signatures::Check(signatures)) {
            Ok(applied) => applied,
            Err(e) => {
                if let Some(before) = before {
                    self.state = before;
                }
                return Err(e.into());
            }
        };
        let (height, hash) = (state.height(), state.tip());
        if let Err(e) = self
            .store
            .append(height, &bytes, &ids, &store::tip_record(height, &hash))
        {
            // Not on disk, so not on the ledger: take the block back out of the state.
            state.revert(applied);
            if let Some(before) = before {
                self.state = before;
            }
            return Err(e.into());
        }
        drop((applied, before));
        if let Some(shared) = &self.shared {
            self.state = shared.state(Arc::clone(&self.state));
        }
        Ok(BlockReceipt {
            height,
            hash,
            tx_ids: ids,
        })
    }

    /// Re-verifies every stored byte, the stored genesis included, from `genesis`, the one the
    /// caller holds (see [`crate::verify`]): what an auditor runs on a copy, whatever store
    /// holds it.
    pub fn verify_from(
        &self,
        genesis: &Genesis,
    ) -> Result<crate::verify::VerifyReport, crate::verify::VerifyError> {
        crate::verify::verify_store(&*self.store, genesis, None)
    }

    /// The state after the last block.
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, LedgerError> {
        match self.store.block(height)? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| LedgerError::Damaged {
                    height,
                    source: e.into(),
                }),
        }
    }

    /// An inclusion proof for a transaction, checkable with nothing but the genesis.
    pub fn prove(&self, id: &TxId) -> Result<InclusionProof, LedgerError> {
        let (height, position) = self
            .store
            .tx_location(id)?
            .ok_or(LedgerError::UnknownTx(*id))?;
        let block = self.block(height)?.ok_or(LedgerError::UnknownTx(*id))?;
        let ids = block.tx_ids()?;
        let position = position as usize;
        if ids.get(position) != Some(id) {
            return Err(LedgerError::Damaged {
                height,
                source: "transaction index points at the wrong transaction".into(),
            });
        }
        let path = merkle::path(&ids, position).ok_or(LedgerError::UnknownTx(*id))?;
        let mut headers = Vec::with_capacity(height as usize);
        for h in 1..=height {
            let b = self.block(h)?.ok_or_else(|| LedgerError::Damaged {
                height: h,
                source: "block missing".into(),
            })?;
            headers.push(b.header);
        }
        let tx = block
            .txs
            .into_iter()
            .nth(position)
            .ok_or(LedgerError::UnknownTx(*id))?;
        Ok(InclusionProof {
            genesis: self.state.genesis_hash(),
            tx,
            path,
            headers,
        })
    }
}

/// How a ledger directory is opened.
#[cfg(feature = "redb")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The file itself, for writing: the process that keeps this ledger.
    Owner,
    /// A private copy of the file, which is only read: auditors and inspection.
    Snapshot,
    /// A private copy read without the storage engine's integrity check, to locate damage.
    SnapshotUnchecked,
}

/// Opens the store and its genesis, checking the genesis file beside it agrees.
#[cfg(feature = "redb")]
pub(crate) fn open_parts(dir: &Path, access: Access) -> Result<(RedbStore, Genesis), LedgerError> {
    let db_path = dir.join(DB_FILE);
    if !db_path.is_file() {
        return Err(LedgerError::Missing(dir.to_path_buf()));
    }
    let store = match access {
        Access::Owner => RedbStore::open(&db_path)?,
        Access::Snapshot => RedbStore::open_snapshot(&db_path)?,
        Access::SnapshotUnchecked => RedbStore::open_snapshot_unchecked(&db_path)?,
    };
    let bytes = store.genesis()?.ok_or_else(|| LedgerError::Damaged {
        height: 0,
        source: "no genesis stored".into(),
    })?;
    let genesis: Genesis = codec::decode(&bytes).map_err(|e| LedgerError::Damaged {
        height: 0,
        source: e.into(),
    })?;
    genesis.check()?;
    let genesis_path = dir.join(GENESIS_FILE);
    if genesis_path.exists() {
        let text = std::fs::read_to_string(&genesis_path).map_err(|source| LedgerError::Io {
            path: genesis_path.clone(),
            source,
        })?;
        let file = Genesis::from_toml(&text)?;
        let (stored, file) = (genesis.hash()?, file.hash()?);
        if stored != file {
            return Err(LedgerError::GenesisMismatch { stored, file });
        }
    }
    Ok((store, genesis))
}
