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
//!
//! The file is input like any other, so it is opened defensively. Every open runs redb's own
//! integrity check (the checksum of every page of the committed trees) before anything is
//! read, and every call into redb runs under [`guarded`]: a panic inside the storage engine on
//! damaged pages becomes a typed "damaged" error, and the store refuses every later call. A
//! reader that must not touch the evidence (an auditor, `medfl ledger verify`, `show`,
//! `prove`) opens a [`RedbStore::open_snapshot`], a private copy checked the same way: the
//! original is only read, never locked or written, so it may sit on read-only media or belong
//! to a running daemon.

use std::cell::Cell;
use std::io::Write;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{BlockStore, StoreError};
use crate::tx::TxId;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const TX_INDEX: TableDefinition<[u8; 32], (u64, u32)> = TableDefinition::new("tx_index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const GENESIS_KEY: &str = "genesis";
const TIP_KEY: &str = "tip";

/// Copies a snapshot is retried while the file changes under it (a running daemon commits).
const SNAPSHOT_ATTEMPTS: u32 = 3;

fn ctx<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        redb::Error::DatabaseAlreadyOpen => StoreError::new(context, StorageFault::Locked),
        // Damage redb reports rather than panics on is damage all the same.
        redb::Error::Corrupted(why) => StoreError::new(context, StorageFault::Damaged(why)),
        e => StoreError::new(context, e),
    }
}

/// Why the database cannot be used, in words an operator acts on.
#[derive(Debug, thiserror::Error)]
pub enum StorageFault {
    /// The file is damaged: the storage engine's integrity check or its reading failed.
    #[error(
        "the database file is damaged ({0}); verify a copy held elsewhere, or recover it from another member's ledger"
    )]
    Damaged(String),
    /// Another process holds the file open for writing.
    #[error(
        "the database is locked by a running process (a medfl daemon?); `medfl ledger verify`, `show` and `prove` read a snapshot and need no lock"
    )]
    Locked,
    /// An earlier call found the file damaged; nothing more is read from it.
    #[error("an earlier read found the database damaged; reopen it after recovery")]
    Poisoned,
    /// The file changed while every copy was taken: a daemon is committing to it.
    #[error(
        "could not take a stable snapshot: the file changed during each of {0} copies (a daemon committing?); try again"
    )]
    Unstable(u32),
}

thread_local! {
    /// How many [`guarded`] calls are running on this thread (for [`quiet_storage_panics`]).
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Installs a panic hook that stays silent for panics [`guarded`] turns into errors, and
/// defers to the previous hook for every other panic. Binaries call it once at start.
pub fn quiet_storage_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if GUARDED.with(Cell::get) == 0 {
            previous(info);
        }
    }));
}

/// Runs `f`, turning a panic inside the storage engine into [`StorageFault::Damaged`].
///
/// redb trusts the pages it reads once a file has opened, and may index out of range on a
/// page damaged after its integrity check (a bit flip between check and read, or a kind of
/// damage the checksums miss). That is bad input, not a bug of ours, and must not crash a
/// verifier: it is reported as a damaged file, the last line of defence behind the check.
fn guarded<T>(
    context: &'static str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
    result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the storage engine failed".to_owned());
        Err(StoreError::new(
            context,
            StorageFault::Damaged(format!("storage engine panic: {what}")),
        ))
    })
}

/// Opens `path` for writing, after redb's integrity check of every committed page when
/// `check` is set.
fn open_checked(path: &Path, check: bool) -> Result<redb::Database, StoreError> {
    guarded("opening the database", || {
        redb::Builder::new()
            .set_check_integrity_on_open(check)
            .open(path)
            .map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
                    StoreError::new("checking the database", StorageFault::Damaged(why))
                }
                e => ctx("opening the database")(e),
            })
    })
}

/// The redb database holding one ledger.
pub struct RedbStore {
    /// Always `Some` until dropped: closing runs guarded too (see the `Drop` impl).
    db: Option<redb::Database>,
    /// Set once a call found the file damaged: later calls fail rather than read on.
    poisoned: AtomicBool,
    /// For a snapshot, the private directory holding the copy (removed on drop).
    _snapshot: Option<tempfile::TempDir>,
}

impl RedbStore {
    fn new(db: redb::Database, snapshot: Option<tempfile::TempDir>) -> RedbStore {
        RedbStore {
            db: Some(db),
            poisoned: AtomicBool::new(false),
            _snapshot: snapshot,
        }
    }

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
        Ok(RedbStore::new(db, None))
    }

    /// Opens an existing database for writing, after redb's integrity check.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        Ok(RedbStore::new(open_checked(path, true)?, None))
    }

    /// Opens a private, checked copy of the database at `path`, which is only read.
    ///
    /// The copy lives in a temporary directory removed when the store is dropped; anything
    /// appended goes to the copy. A commit by a daemon writing `path` while it is copied can
    /// tear a copy, so a copy during which the file changed is taken again, up to
    /// [`SNAPSHOT_ATTEMPTS`] times; a stable copy that fails redb's integrity check is damage.
    pub fn open_snapshot(path: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::snapshot(path, true)
    }

    /// A private copy of `path` opened without redb's integrity check, to locate damage the
    /// check found: reading it is still guarded, so damage is an error, never a crash.
    pub fn open_snapshot_unchecked(path: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::snapshot(path, false)
    }

    fn snapshot(path: &Path, check: bool) -> Result<RedbStore, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("medfl-ledger-snapshot")
            .tempdir()
            .map_err(|e| StoreError::new("making a directory for the snapshot", e))?;
        let copy = dir.path().join("ledger.redb");
        let mut attempt = 1;
        loop {
            // A copy is stable when the file's length and modification time are the same
            // after it as before: no commit landed while it was taken.
            let before = stamp(path)?;
            copy_file(path, &copy)?;
            if stamp(path)? == before {
                return Ok(RedbStore::new(open_checked(&copy, check)?, Some(dir)));
            }
            if attempt >= SNAPSHOT_ATTEMPTS {
                return Err(StoreError::new(
                    "copying the database",
                    StorageFault::Unstable(SNAPSHOT_ATTEMPTS),
                ));
            }
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs `f` on the database unless an earlier call found it damaged; see [`guarded`].
    fn with_db<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::new(context, StorageFault::Poisoned));
        }
        let db = self
            .db
            .as_ref()
            .ok_or(StoreError::new(context, StorageFault::Poisoned))?;
        let result = guarded(context, || f(db));
        if let Err(e) = &result
            && e.is_damage()
        {
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }
}

impl Drop for RedbStore {
    /// Closing writes redb's allocator state, which reads the (possibly damaged) file again:
    /// it runs guarded like every other call. A failure to close is not reported: a snapshot
    /// is discarded anyway, and the owner's committed blocks are already durable.
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = guarded("closing the database", || {
                drop(db);
                Ok(())
            });
        }
    }
}

/// The length and modification time of `path`.
fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>), StoreError> {
    let meta = std::fs::metadata(path).map_err(|e| StoreError::new("reading the database", e))?;
    Ok((meta.len(), meta.modified().ok()))
}

/// Copies `from` to a new file `to` by reading it: the copy is writable whatever the
/// original's permissions, and the original's metadata is untouched.
fn copy_file(from: &Path, to: &Path) -> Result<(), StoreError> {
    let mut src =
        std::fs::File::open(from).map_err(|e| StoreError::new("reading the database", e))?;
    let mut dst =
        std::fs::File::create(to).map_err(|e| StoreError::new("writing the snapshot", e))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| StoreError::new("copying the database", e))?;
    dst.flush()
        .map_err(|e| StoreError::new("writing the snapshot", e))
}

impl BlockStore for RedbStore {
    /// The stored genesis encoding.
    fn genesis(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db("reading the genesis", |db| {
            let txn = db.begin_read().map_err(ctx("starting a read"))?;
            let meta = txn.open_table(META).map_err(ctx("opening meta"))?;
            Ok(meta
                .get(GENESIS_KEY)
                .map_err(ctx("reading the genesis"))?
                .map(|v| v.value().to_vec()))
        })
    }

    /// The stored tip record `(height, hash)`, if any block was appended.
    fn tip_record(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db("reading the tip", |db| {
            let txn = db.begin_read().map_err(ctx("starting a read"))?;
            let meta = txn.open_table(META).map_err(ctx("opening meta"))?;
            Ok(meta
                .get(TIP_KEY)
                .map_err(ctx("reading the tip"))?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Appends one block and its index entries in one durable write transaction.
    fn append(
        &mut self,
        height: u64,
        block: &[u8],
        tx_ids: &[TxId],
        tip_record: &[u8],
    ) -> Result<(), StoreError> {
        self.with_db("appending a block", |db| {
            let mut txn = db.begin_write().map_err(ctx("starting a block write"))?;
            // Two-phase: if the newest commit is later damaged, opening fails as damaged
            // instead of falling back to the commit before it, which would silently drop the
            // last block (and with it the tip record that would have shown the loss).
            txn.set_two_phase_commit(true);
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
        })
    }

    /// The stored bytes of the block at `height`.
    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db("reading a block", |db| {
            let txn = db.begin_read().map_err(ctx("starting a read"))?;
            let blocks = txn.open_table(BLOCKS).map_err(ctx("opening blocks"))?;
            Ok(blocks
                .get(height)
                .map_err(ctx("reading a block"))?
                .map(|v| v.value().to_vec()))
        })
    }

    fn for_each_block(
        &self,
        visit: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), (u64, StoreError)> {
        // Only the reads run guarded: a panic in `visit` is ours, not the file's.
        let blocks = self
            .with_db("listing blocks", |db| {
                let txn = db.begin_read().map_err(ctx("starting a read"))?;
                txn.open_table(BLOCKS).map_err(ctx("opening blocks"))
            })
            .map_err(|e| (0, e))?;
        let mut iter = self
            .with_db("listing blocks", |_| {
                blocks.iter().map_err(ctx("listing blocks"))
            })
            .map_err(|e| (0, e))?;
        let mut last = 0;
        loop {
            let entry = self
                .with_db("reading a block", |_| {
                    iter.next()
                        .transpose()
                        .map_err(ctx("reading a block"))?
                        .map(|(k, v)| Ok((k.value(), v.value().to_vec())))
                        .transpose()
                })
                .map_err(|e| (last + 1, e))?;
            let Some((height, bytes)) = entry else {
                return Ok(());
            };
            last = height;
            if visit(height, &bytes).is_break() {
                return Ok(());
            }
        }
    }

    /// Where a transaction is: `(height, position)`.
    fn tx_location(&self, id: &TxId) -> Result<Option<(u64, u32)>, StoreError> {
        self.with_db("reading tx_index", |db| {
            let txn = db.begin_read().map_err(ctx("starting a read"))?;
            let index = txn.open_table(TX_INDEX).map_err(ctx("opening tx_index"))?;
            Ok(index
                .get(id.0)
                .map_err(ctx("reading tx_index"))?
                .map(|v| v.value()))
        })
    }

    /// Number of entries in the transaction index.
    fn tx_index_len(&self) -> Result<u64, StoreError> {
        self.with_db("counting tx_index", |db| {
            let txn = db.begin_read().map_err(ctx("starting a read"))?;
            let index = txn.open_table(TX_INDEX).map_err(ctx("opening tx_index"))?;
            index.len().map_err(ctx("counting tx_index"))
        })
    }
}
