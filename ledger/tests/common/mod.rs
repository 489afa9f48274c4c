//! Shared helpers: build ledgers on disk and reach into their redb file as an attacker would.

#![allow(dead_code)]

use std::path::Path;

use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{AuditAnchor, ConsentChoice, Pseudonym};
use medfl_ledger::{Hash, Ledger, Timestamp, TxBody};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// The `blocks` table as documented in `docs/ledger-design.md`.
pub const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

pub fn t(hours: u64) -> Timestamp {
    Timestamp(T0.0 + hours * HOUR)
}

/// Builds a ledger of `sizes.len()` blocks (block i holds `sizes[i]` transactions) mixing
/// consent changes, audit anchors and rounds; returns the fixture used.
pub fn build(dir: &Path, seed: u64, sizes: &[usize]) -> Fixture {
    let f = Fixture::new(seed, 3, 2);
    let mut ledger = Ledger::create(dir, &f.genesis).unwrap();
    let (coord, ckey) = f.coordinator();
    let hospitals: Vec<_> = (0..3)
        .map(|i| Fixture::id(&format!("hospital-{i}")))
        .collect();
    let mut counter = 0u64;
    let mut round = 0u64;
    let mut model = Hash::ZERO;
    for (b, &n) in sizes.iter().enumerate() {
        let time = t(b as u64 + 1);
        let mut txs = Vec::new();
        let mut round_in_block = false;
        for _ in 0..n {
            counter += 1;
            let who = &hospitals[(counter % 3) as usize];
            let body = match counter % 5 {
                0 if !round_in_block => {
                    round += 1;
                    round_in_block = true;
                    let r = f.round_on(ledger.state(), round, model, &hospitals);
                    model = r.model;
                    txs.push(f.tx(coord, time, TxBody::AnchorRound(r)));
                    continue;
                }
                1 | 2 => TxBody::AnchorAuditLog(AuditAnchor {
                    merkle_root: Hash::tagged(b"batch", &[&counter.to_le_bytes()]),
                    count: counter,
                    first_event_at: time,
                    last_event_at: time,
                }),
                _ => TxBody::Consent {
                    subject: Pseudonym(Hash::tagged(b"subject", &[&counter.to_le_bytes()])),
                    choice: ConsentChoice::OptOut,
                },
            };
            txs.push(f.tx(who, time, body));
        }
        ledger.append(txs, time, coord, ckey).unwrap();
    }
    f
}

/// Stored blocks as `(height, bytes)` rows.
pub type Rows = Vec<(u64, Vec<u8>)>;

/// Reads the raw stored bytes of every block.
pub fn raw_blocks(dir: &Path) -> Rows {
    let db = redb::Database::open(dir.join("ledger.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(BLOCKS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

/// Rewrites the blocks table: `f` gets the current rows and returns the new ones.
pub fn rewrite_blocks(dir: &Path, f: impl FnOnce(Rows) -> Rows) {
    let rows = f(raw_blocks(dir));
    let db = redb::Database::open(dir.join("ledger.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(BLOCKS).unwrap();
        table.retain(|_, _| false).unwrap();
        for (k, v) in &rows {
            table.insert(*k, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Copies a ledger directory.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
