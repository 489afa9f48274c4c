//! Full verification: re-check a stored ledger from genesis, byte by byte.
//!
//! Every block is read back, decoded canonically (so no byte of it can change unnoticed), and
//! run through the same [`ChainState::apply_block`] that admitted it: hash links, proposer
//! signature, Merkle root, every transaction signature and every contract rule. The derived
//! data (transaction index, tip record) is checked against the blocks. The first failure is
//! reported with its height.
//!
//! A ledger only proves itself against a genesis its verifier already holds: a whole other
//! chain (another genesis, other keys, re-signed throughout) is correct within itself.
//! [`verify_dir_from`] pins verification to the caller's genesis and is what members, auditors
//! and daemons use; [`verify_dir`] checks consistency with the genesis stored in the ledger,
//! and so says nothing about whose ledger it is.
//!
//! What verification cannot see alone: a ledger cut short at its end is a valid, shorter
//! ledger. The tip record catches a block deleted by accident; against a deliberate truncation,
//! compare the tip with one held elsewhere (`--tip`, or the hash a member last endorsed).
//!
//! [`verify_dir`] and [`verify_dir_from`] read a private snapshot of the database (see
//! [`crate::store::RedbStore::open_snapshot`]): the evidence is never written, locked or
//! repaired, and a damaged file is a verification error at height 0, never a crash.

#[cfg(feature = "redb")]
use std::path::Path;

use crate::block::Block;
use crate::bytes::Hash;
use crate::codec;
use crate::genesis::Genesis;
#[cfg(feature = "redb")]
use crate::ledger::{Access, LedgerError, open_parts};
use crate::state::ChainState;
use crate::store::{BlockStore, tip_record, try_for_each_block};

/// A ledger that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Genesis hash.
    pub genesis: Hash,
    /// Blocks checked.
    pub height: u64,
    /// Hash of the last block.
    pub tip: Hash,
    /// Transactions checked.
    pub transactions: u64,
}

/// The first broken height and why.
#[derive(Debug, thiserror::Error)]
#[error("height {height}: {reason}")]
pub struct VerifyError {
    /// The first height that fails (0: the genesis or the database itself).
    pub height: u64,
    /// Why.
    pub reason: String,
}

impl VerifyError {
    fn at(height: u64, reason: impl ToString) -> VerifyError {
        VerifyError {
            height,
            reason: reason.to_string(),
        }
    }
}

/// Verifies the ledger in `dir` against the genesis stored in it; with `expected_tip`, also
/// that it ends at that block hash. This shows the ledger is consistent, not whose it is: use
/// [`verify_dir_from`] with the genesis you hold.
#[cfg(feature = "redb")]
pub fn verify_dir(dir: &Path, expected_tip: Option<Hash>) -> Result<VerifyReport, VerifyError> {
    verify_snapshot(dir, None, expected_tip)
}

/// Verifies the ledger in `dir` from `genesis`, the one the caller holds: a ledger that starts
/// from any other genesis (another consortium's chain, however consistent) is refused at
/// height 0 before anything else is read.
#[cfg(feature = "redb")]
pub fn verify_dir_from(
    dir: &Path,
    genesis: &Genesis,
    expected_tip: Option<Hash>,
) -> Result<VerifyReport, VerifyError> {
    verify_snapshot(dir, Some(genesis), expected_tip)
}

/// Verifies a private snapshot of `dir`: the storage engine's integrity check, then every
/// block. When the check finds the file damaged, the blocks are still read (guarded) to name
/// the first height the damage breaks.
#[cfg(feature = "redb")]
fn verify_snapshot(
    dir: &Path,
    pinned: Option<&Genesis>,
    expected_tip: Option<Hash>,
) -> Result<VerifyReport, VerifyError> {
    let run = |access| {
        let (store, stored) = open_parts(dir, access).map_err(|e| match e {
            LedgerError::Damaged { height, source } => VerifyError::at(height, source),
            e => VerifyError::at(0, e),
        })?;
        verify_parts(&store, &stored, pinned, expected_tip).map(|(report, _)| report)
    };
    match open_parts(dir, Access::Snapshot) {
        Ok((store, stored)) => {
            verify_parts(&store, &stored, pinned, expected_tip).map(|(report, _)| report)
        }
        Err(LedgerError::Store(damage)) if damage.is_damage() => {
            Err(match run(Access::SnapshotUnchecked) {
                Err(located) => VerifyError::at(
                    located.height,
                    format!(
                        "{}; the storage engine's integrity check fails too: {damage}",
                        located.reason
                    ),
                ),
                Ok(_) => VerifyError::at(
                    0,
                    format!(
                        "{damage}; every block still reads back and verifies, so the damage \
                         is outside the chain's data"
                    ),
                ),
            })
        }
        Err(LedgerError::Damaged { height, source }) => Err(VerifyError::at(height, source)),
        Err(e) => Err(VerifyError::at(0, e)),
    }
}

/// Verifies every byte `store` holds from `genesis`, the one the caller holds: the stored
/// genesis is read from the store itself and must be `genesis`, then every block is checked.
pub fn verify_store(
    store: &dyn BlockStore,
    genesis: &Genesis,
    expected_tip: Option<Hash>,
) -> Result<VerifyReport, VerifyError> {
    let bytes = store
        .genesis()
        .map_err(|e| VerifyError::at(0, e))?
        .ok_or_else(|| VerifyError::at(0, "no genesis stored"))?;
    let stored: Genesis = codec::decode(&bytes).map_err(|e| VerifyError::at(0, e))?;
    verify_parts(store, &stored, Some(genesis), expected_tip).map(|(report, _)| report)
}

/// Verifies an open store whose stored genesis is `stored`, pinned to `pinned` if given;
/// returns the report and the state after the last block.
pub(crate) fn verify_parts(
    store: &dyn BlockStore,
    stored: &Genesis,
    pinned: Option<&Genesis>,
    expected_tip: Option<Hash>,
) -> Result<(VerifyReport, ChainState), VerifyError> {
    let mut state = ChainState::from_genesis(stored).map_err(|e| VerifyError::at(0, e))?;
    if let Some(pinned) = pinned {
        let ours = pinned.hash().map_err(|e| VerifyError::at(0, e))?;
        if ours != state.genesis_hash() {
            return Err(VerifyError::at(
                0,
                format!(
                    "the ledger starts from genesis {}, not the genesis you hold ({ours}): it is \
                     another chain, whatever it proves about itself",
                    state.genesis_hash()
                ),
            ));
        }
    }
    let transactions = verify_blocks(store, &mut state)?;

    let (height, tip) = (state.height(), state.tip());
    let next = height + 1;
    match store.tip_record().map_err(|e| VerifyError::at(next, e))? {
        None if height == 0 => {}
        Some(r) if r == tip_record(height, &tip) => {}
        _ => {
            return Err(VerifyError::at(
                next,
                "the stored tip record names a block that is not the last one: blocks are missing",
            ));
        }
    }
    let indexed = store.tx_index_len().map_err(|e| VerifyError::at(next, e))?;
    if indexed != transactions {
        return Err(VerifyError::at(
            next,
            format!("the transaction index has {indexed} entries for {transactions} transactions"),
        ));
    }
    if let Some(expected) = expected_tip
        && expected != tip
    {
        return Err(VerifyError::at(
            next,
            format!("the ledger ends at {tip}, not at the expected tip {expected}"),
        ));
    }
    let report = VerifyReport {
        genesis: state.genesis_hash(),
        height,
        tip,
        transactions,
    };
    Ok((report, state))
}

/// Checks every block in order against `state`; returns the number of transactions.
fn verify_blocks(store: &dyn BlockStore, state: &mut ChainState) -> Result<u64, VerifyError> {
    let mut transactions = 0u64;
    try_for_each_block(
        store,
        |height, bytes| {
            let expected = state.height() + 1;
            if height != expected {
                return Err(VerifyError::at(
                    expected,
                    format!("missing (the next stored block is at height {height})"),
                ));
            }
            let block: Block = codec::decode(bytes).map_err(|e| VerifyError::at(height, e))?;
            let ids = block.tx_ids().map_err(|e| VerifyError::at(height, e))?;
            state
                .apply_block(&block)
                .map_err(|e| VerifyError::at(height, e))?;
            for (position, id) in (0u32..).zip(&ids) {
                match store.tx_location(id) {
                    Ok(Some(loc)) if loc == (height, position) => {}
                    Ok(_) => {
                        return Err(VerifyError::at(
                            height,
                            format!("transaction {id} is not indexed at its position"),
                        ));
                    }
                    Err(e) => return Err(VerifyError::at(height, e)),
                }
            }
            transactions += ids.len() as u64;
            Ok(())
        },
        VerifyError::at,
    )?;
    Ok(transactions)
}
