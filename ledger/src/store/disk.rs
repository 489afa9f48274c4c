//! The on-disk block store: three redb tables, one write transaction per block.
//!
//! | table      | key                  | value                                   |
//! |------------|----------------------|-----------------------------------------|
//! | `blocks`   | height (`u64`)       | the block's canonical encoding          |
//! | `tx_index` | transaction id       | `(height, position in block)`           |
//! | `meta`     | `"genesis"`, `"tip"` | genesis encoding; `(height, block hash)` |
//!
//! Only `blocks` and the genesis are evidence; `tx_index` and the tip record are derived and
//! rebuilt or checked by verification. redb commits are durable by default: when
//! [`RedbStore::append`](BlockStore::append) returns, the block survives a crash or power loss.

use std::ops::ControlFlow;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{BlockStore, StoreError};
use crate::tx::TxId;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const TX_INDEX: TableDefinition<[u8; 32], (u64, u32)> = TableDefinition::new("tx_index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const GENESIS_KEY: &str = "genesis";
const TIP_KEY: &str = "tip";

fn ctx<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::new(context, e.into())
}

/// The redb database holding one ledger.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    /// Creates a new database at `path` holding only the genesis.
    pub fn create(path: &Path, genesis: &[u8]) -> Result<RedbStore, StoreError> {
        let db = redb::Database::create(path).map_err(ctx("creating the database"))?;
        let txn = db
            .begin_write()
            .map_err(ctx("starting the genesis write"))?;
        {
            let mut meta = txn.open_table(META).map_err(ctx("opening meta"))?;
            meta.insert(GENESIS_KEY, genesis)
                .map_err(ctx("writing the genesis"))?;
            txn.open_table(BLOCKS).map_err(ctx("creating blocks"))?;
            txn.open_table(TX_INDEX).map_err(ctx("creating tx_index"))?;
        }
        txn.commit().map_err(ctx("committing the genesis"))?;
        Ok(RedbStore { db })
    }

    /// Opens an existing database.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = redb::Database::open(path).map_err(ctx("opening the database"))?;
        Ok(RedbStore { db })
    }
}

impl BlockStore for RedbStore {
    /// The stored genesis encoding.
    fn genesis(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(ctx("starting a read"))?;
        let meta = txn.open_table(META).map_err(ctx("opening meta"))?;
        Ok(meta
            .get(GENESIS_KEY)
            .map_err(ctx("reading the genesis"))?
            .map(|v| v.value().to_vec()))
    }

    /// The stored tip record `(height, hash)`, if any block was appended.
    fn tip_record(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(ctx("starting a read"))?;
        let meta = txn.open_table(META).map_err(ctx("opening meta"))?;
        Ok(meta
            .get(TIP_KEY)
            .map_err(ctx("reading the tip"))?
            .map(|v| v.value().to_vec()))
    }

    /// Appends one block and its index entries in one durable write transaction.
    fn append(
        &mut self,
        height: u64,
        block: &[u8],
        tx_ids: &[TxId],
        tip_record: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(ctx("starting a block write"))?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(ctx("opening blocks"))?;
            blocks
                .insert(height, block)
                .map_err(ctx("writing the block"))?;
            let mut index = txn.open_table(TX_INDEX).map_err(ctx("opening tx_index"))?;
            // Blocks hold at most MAX_BLOCK_TXS (10,000) transactions: positions fit in u32.
            for (position, id) in (0u32..).zip(tx_ids) {
                index
                    .insert(id.0, (height, position))
                    .map_err(ctx("indexing a transaction"))?;
            }
            let mut meta = txn.open_table(META).map_err(ctx("opening meta"))?;
            meta.insert(TIP_KEY, tip_record)
                .map_err(ctx("writing the tip"))?;
        }
        txn.commit().map_err(ctx("committing the block"))
    }

    /// The stored bytes of the block at `height`.
    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(ctx("starting a read"))?;
        let blocks = txn.open_table(BLOCKS).map_err(ctx("opening blocks"))?;
        Ok(blocks
            .get(height)
            .map_err(ctx("reading a block"))?
            .map(|v| v.value().to_vec()))
    }

    fn for_each_block(
        &self,
        visit: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), (u64, StoreError)> {
        let blocks = self
            .db
            .begin_read()
            .map_err(ctx("starting a read"))
            .and_then(|txn| txn.open_table(BLOCKS).map_err(ctx("opening blocks")))
            .map_err(|e| (0, e))?;
        let iter = blocks.iter().map_err(|e| (0, ctx("listing blocks")(e)))?;
        let mut last = 0;
        for entry in iter {
            let (k, v) = entry.map_err(|e| (last + 1, ctx("reading a block")(e)))?;
            last = k.value();
            if visit(last, v.value()).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Where a transaction is: `(height, position)`.
    fn tx_location(&self, id: &TxId) -> Result<Option<(u64, u32)>, StoreError> {
        let txn = self.db.begin_read().map_err(ctx("starting a read"))?;
        let index = txn.open_table(TX_INDEX).map_err(ctx("opening tx_index"))?;
        Ok(index
            .get(id.0)
            .map_err(ctx("reading tx_index"))?
            .map(|v| v.value()))
    }

    /// Number of entries in the transaction index.
    fn tx_index_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(ctx("starting a read"))?;
        let index = txn.open_table(TX_INDEX).map_err(ctx("opening tx_index"))?;
        index.len().map_err(ctx("counting tx_index"))
    }
}
