//! Members' own transactions at the coordinator: what it admits for ordering, and how it
//! orders them into blocks.
//!
//! Without this, the coordinator is the only writer and can censor a hospital silently: a consent
//! change or a hospital leaving the consortium would simply never reach the ledger. A hospital
//! signs its own transactions and sends them with `ToCoordinator::SubmitTx`; the coordinator
//! admits each (its own, small, not yet ordered), queues it per member (bounded), and orders a
//! batch by trying it against the contracts on a copy of the state first, so one refused
//! transaction does not sink the others. The hospital's side (noticing censorship) is in
//! `daemon::submit`. Pure: no I/O.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use medfl_ledger::{BlockError, ChainState, Ledger, MemberId, Timestamp, Transaction, TxId, codec};

/// Largest encoded transaction a member may submit. The biggest a hospital can sign (a
/// revocation with its reason text) is far below; anything larger is abuse.
pub const MAX_TX_BYTES: usize = 16 * 1024;

/// Most transactions of one member waiting for the next block at the coordinator.
pub const MAX_PENDING_PER_MEMBER: usize = 16;

/// Most transactions one block orders from submissions.
pub const MAX_TXS_PER_BLOCK: usize = 64;

/// Why the coordinator will not order a submitted transaction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// A member may only submit transactions it signed itself.
    #[error("signed by {signer}, submitted by {from}: a member submits only its own transactions")]
    NotOwnTransaction {
        /// Who signed.
        signer: MemberId,
        /// Who sent it.
        from: MemberId,
    },
    /// The transaction is over [`MAX_TX_BYTES`].
    #[error("transaction of {size} bytes exceeds the limit of {MAX_TX_BYTES}")]
    TooLarge {
        /// Encoded size.
        size: usize,
    },
    /// It cannot be encoded (so it has no id).
    #[error("transaction cannot be encoded: {0}")]
    Malformed(String),
    /// It is already on the ledger.
    #[error("transaction {0} is already on the ledger")]
    AlreadyOrdered(TxId),
    /// The member has [`MAX_PENDING_PER_MEMBER`] transactions waiting already.
    #[error(
        "{0} has {MAX_PENDING_PER_MEMBER} transactions waiting; try again after the next block"
    )]
    Backlog(MemberId),
    /// A contract rule refuses it (the rule's name comes first).
    #[error("{0}")]
    Contract(String),
}

/// Checks a submitted transaction before it may wait for a block; returns its id.
///
/// # Errors
/// The [`SubmitError`] naming what is wrong with it.
pub fn admit(from: &MemberId, tx: &Transaction, chain: &ChainState) -> Result<TxId, SubmitError> {
    if &tx.signer != from {
        return Err(SubmitError::NotOwnTransaction {
            signer: tx.signer.clone(),
            from: from.clone(),
        });
    }
    let size = codec::encode(tx)
        .map_err(|e| SubmitError::Malformed(e.to_string()))?
        .len();
    if size > MAX_TX_BYTES {
        return Err(SubmitError::TooLarge { size });
    }
    let id = tx.id().map_err(|e| SubmitError::Malformed(e.to_string()))?;
    if chain.contains_tx(&id) {
        return Err(SubmitError::AlreadyOrdered(id));
    }
    Ok(id)
}

/// Why a trial block of submitted transactions failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialError {
    /// The transaction at `index` breaks a contract rule.
    Tx {
        /// Its position in the trial.
        index: usize,
        /// The rule broken.
        reason: String,
    },
    /// Something else (storage, encoding): try again later.
    Other(String),
}

/// Submitted transactions waiting for the coordinator's next block, per member, bounded.
#[derive(Debug, Default)]
pub struct Mempool {
    pending: BTreeMap<MemberId, Vec<(TxId, Transaction)>>,
}

impl Mempool {
    /// Queues an admitted transaction. A transaction already waiting is accepted again without
    /// a second copy (an agent re-sends what it suspects was dropped).
    ///
    /// # Errors
    /// [`SubmitError::Backlog`] if the member has too many waiting.
    pub fn offer(&mut self, id: TxId, tx: Transaction) -> Result<(), SubmitError> {
        let queue = self.pending.entry(tx.signer.clone()).or_default();
        if queue.iter().any(|(x, _)| *x == id) {
            return Ok(());
        }
        if queue.len() >= MAX_PENDING_PER_MEMBER {
            return Err(SubmitError::Backlog(tx.signer));
        }
        queue.push((id, tx));
        Ok(())
    }

    /// Transactions waiting, all members together.
    pub fn len(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.values().all(Vec::is_empty)
    }

    /// Takes up to [`MAX_TXS_PER_BLOCK`] transactions and keeps those `trial` accepts together,
    /// dropping each one it refuses. Returns the block's transactions and the refusals
    /// `(member, id, reason)`. On [`TrialError::Other`] everything stays queued.
    pub fn order(
        &mut self,
        mut trial: impl FnMut(&[Transaction]) -> Result<(), TrialError>,
    ) -> (Vec<Transaction>, Vec<(MemberId, TxId, String)>) {
        // Round-robin over members, so one member's backlog cannot crowd out the others.
        let mut batch: Vec<(TxId, Transaction)> = Vec::new();
        let mut depth = 0;
        while batch.len() < MAX_TXS_PER_BLOCK {
            let before = batch.len();
            for queue in self.pending.values() {
                if let Some(entry) = queue.get(depth)
                    && batch.len() < MAX_TXS_PER_BLOCK
                {
                    batch.push(entry.clone());
                }
            }
            if batch.len() == before {
                break;
            }
            depth += 1;
        }
        let mut refused = Vec::new();
        while !batch.is_empty() {
            let txs: Vec<Transaction> = batch.iter().map(|(_, t)| t.clone()).collect();
            match trial(&txs) {
                Ok(()) => break,
                Err(TrialError::Tx { index, reason }) if index < batch.len() => {
                    let (id, tx) = batch.remove(index);
                    self.remove(&tx.signer, &id);
                    refused.push((tx.signer, id, reason));
                }
                Err(TrialError::Tx { .. } | TrialError::Other(_)) => {
                    return (Vec::new(), refused);
                }
            }
        }
        for (id, tx) in &batch {
            self.remove(&tx.signer, id);
        }
        (batch.into_iter().map(|(_, t)| t).collect(), refused)
    }

    /// Drops a member's waiting transactions (it was revoked).
    pub fn forget(&mut self, member: &MemberId) {
        self.pending.remove(member);
    }

    fn remove(&mut self, member: &MemberId, id: &TxId) {
        if let Some(queue) = self.pending.get_mut(member) {
            queue.retain(|(x, _)| x != id);
            if queue.is_empty() {
                self.pending.remove(member);
            }
        }
    }
}

/// Whether `txs`, in this order, would pass every rule as the next block: proposes it and applies
/// it to a copy of the state, so nothing is stored.
pub fn trial(
    ledger: &Ledger,
    txs: &[Transaction],
    now: Timestamp,
    me: &MemberId,
    key: &SigningKey,
) -> Result<(), TrialError> {
    let block = ledger
        .propose(txs.to_vec(), now, me, key)
        .map_err(|e| TrialError::Other(e.to_string()))?;
    let mut state = ledger.state().clone();
    match state.apply_block(&block) {
        Ok(()) => Ok(()),
        Err(BlockError::Contract { index, error, .. }) => Err(TrialError::Tx {
            index,
            reason: error.to_string(),
        }),
        Err(e) => Err(TrialError::Other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_ledger::Hash;
    use medfl_ledger::TxBody;
    use medfl_ledger::testkit::{Fixture, HOUR, T0};
    use medfl_ledger::tx::{ConsentChoice, Pseudonym};

    fn consent(f: &Fixture, who: &str, n: u8) -> Transaction {
        f.tx(
            &Fixture::id(who),
            Timestamp(T0.0 + HOUR),
            TxBody::Consent {
                subject: Pseudonym(Hash([n; 32])),
                choice: ConsentChoice::OptOut,
            },
        )
    }

    #[test]
    fn a_member_submits_only_its_own_small_transactions() {
        let f = Fixture::new(2, 3, 2);
        let state = ChainState::from_genesis(&f.genesis).unwrap();
        let tx = consent(&f, "hospital-0", 1);
        assert!(admit(&Fixture::id("hospital-0"), &tx, &state).is_ok());
        assert!(matches!(
            admit(&Fixture::id("hospital-1"), &tx, &state),
            Err(SubmitError::NotOwnTransaction { .. })
        ));
        let big = f.tx(
            &Fixture::id("hospital-0"),
            Timestamp(T0.0 + HOUR),
            TxBody::RevokeMember {
                member: Fixture::id("hospital-0"),
                reason: "x".repeat(MAX_TX_BYTES),
            },
        );
        assert!(matches!(
            admit(&Fixture::id("hospital-0"), &big, &state),
            Err(SubmitError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_mempool_is_bounded_per_member_and_deduplicates() {
        let f = Fixture::new(2, 3, 2);
        let mut pool = Mempool::default();
        for n in 0..40u8 {
            let tx = consent(&f, "hospital-0", n);
            let id = tx.id().unwrap();
            let r = pool.offer(id, tx.clone());
            assert_eq!(r.is_ok(), usize::from(n) < MAX_PENDING_PER_MEMBER, "{n}");
            if n == 0 {
                pool.offer(id, tx).unwrap();
            }
        }
        assert_eq!(pool.len(), MAX_PENDING_PER_MEMBER);
        let other = consent(&f, "hospital-1", 0);
        pool.offer(other.id().unwrap(), other).unwrap();
        assert_eq!(pool.len(), MAX_PENDING_PER_MEMBER + 1);
    }

    #[test]
    fn ordering_drops_refused_transactions_and_keeps_the_rest() {
        let f = Fixture::new(2, 3, 2);
        let mut pool = Mempool::default();
        let txs: Vec<Transaction> = (0..3).map(|n| consent(&f, "hospital-0", n)).collect();
        for tx in &txs {
            pool.offer(tx.id().unwrap(), tx.clone()).unwrap();
        }
        let bad = txs[1].id().unwrap();
        let (block, refused) =
            pool.order(
                |batch| match batch.iter().position(|t| t.id().unwrap() == bad) {
                    Some(index) => Err(TrialError::Tx {
                        index,
                        reason: "consent: no".into(),
                    }),
                    None => Ok(()),
                },
            );
        assert_eq!(block, vec![txs[0].clone(), txs[2].clone()]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].1, bad);
        assert!(pool.is_empty());
        // A storage failure keeps everything for the next try.
        let tx = consent(&f, "hospital-1", 9);
        pool.offer(tx.id().unwrap(), tx).unwrap();
        let (block, refused) = pool.order(|_| Err(TrialError::Other("disk".into())));
        assert!(block.is_empty() && refused.is_empty());
        assert_eq!(pool.len(), 1);
    }
}
