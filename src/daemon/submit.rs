//! A hospital's own transactions over the network: how it notices that the coordinator does
//! not order what it sent.
//!
//! The hospital's agent watches its own ledger copy: a transaction neither in a block nor
//! refused by a contract rule within the deadline is reported as censored and sent again, and a
//! refusal it cannot reproduce on its own copy is not believed. The coordinator's side is
//! `node::mempool`. Pure: time is passed in, no I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{ContractError, Timestamp, Transaction, TxBody, TxId};
use serde::Serialize;

pub use crate::node::mempool::{MAX_PENDING_PER_MEMBER, MAX_TX_BYTES};

/// A transaction the hospital sent and has not yet seen in a block.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// The signed transaction.
    pub tx: Transaction,
    /// Its file in the outbox.
    pub path: PathBuf,
    /// When it was last sent.
    pub sent_ms: u64,
    /// How many times the deadline passed and it was sent again.
    pub resent: u32,
    /// A refusal was disputed since it was last sent: later refusals are not re-checked (each
    /// check copies the ledger state) until it is sent again.
    pub disputed: bool,
}

/// One line of the censorship record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Censored {
    /// The transaction id (hex).
    pub tx: String,
    /// Its kind.
    pub kind: &'static str,
    /// Deadlines missed so far.
    pub missed_deadlines: u32,
    /// Whether it is still not in a block (false once a later block carried it).
    pub outstanding: bool,
    /// The refusal the coordinator claimed, if it sent one the hospital's own contract check
    /// does not reproduce (a refusal is no excuse for not ordering a valid transaction).
    pub unconfirmed_refusal: Option<String>,
    /// An audit batch's anchor the contracts now refuse for good because a later anchor of
    /// this hospital's was ordered first (the contract's reason). The agent sends one batch
    /// anchor at a time, so only a coordinator that held the later one (or a hand-made
    /// submission) can cause this: the batch is left without an anchor of its own.
    pub overtaken: Option<String>,
}

/// A coordinator's refusal, after the hospital checked it on its own ledger copy.
#[derive(Debug)]
pub enum Refusal {
    /// The contracts refuse it here too: the submission is over, with the local reason.
    Confirmed(Box<Submitted>, String),
    /// The contracts accept it here (or the coordinator refused for its own reasons: a full
    /// queue, a transaction it says is ordered but no block shows): it stays pending, is
    /// recorded as not ordered, and goes out again at its deadline.
    Disputed,
    /// An audit batch's anchor the contracts refuse only because a later one of the
    /// hospital's own was ordered first (`audit-sequence`): it can never be ordered now, and
    /// it is recorded as censored, for the batch lost its anchor to the order the coordinator
    /// chose.
    Overtaken(Box<Submitted>, String),
}

/// The hospital's side: every transaction it submitted, until a block carries it or a contract
/// refuses it.
#[derive(Debug)]
pub struct Submissions {
    deadline_ms: u64,
    pending: BTreeMap<TxId, Submitted>,
    /// Transactions that missed a deadline, newest last (bounded).
    censored: VecDeque<Censored>,
    /// Transactions seen in blocks, newest last (bounded).
    included: VecDeque<TxId>,
    /// Audit-batch anchors waiting in the outbox for the one in flight.
    anchors_waiting: usize,
}

/// Most entries kept in each of the status lists.
const STATUS_HISTORY: usize = 64;

/// Most transactions the agent keeps in flight; further outbox files wait their turn. No more
/// than the coordinator queues for one member, so an honest hospital never fills its queue.
pub const MAX_IN_FLIGHT: usize = MAX_PENDING_PER_MEMBER;

/// Longest refusal reason from the coordinator kept in the status.
const MAX_CLAIMED_REASON: usize = 1024;

impl Submissions {
    /// Tracking with a deadline of `deadline_ms` from sending to inclusion.
    pub fn new(deadline_ms: u64) -> Submissions {
        Submissions {
            deadline_ms,
            pending: BTreeMap::new(),
            censored: VecDeque::new(),
            included: VecDeque::new(),
            anchors_waiting: 0,
        }
    }

    /// Notes how many audit-batch anchors wait in the outbox for the one in flight: a backlog
    /// that grows while one is in flight is the coordinator's doing, and shows in the status.
    pub fn anchors_waiting(&mut self, n: usize) {
        self.anchors_waiting = n;
    }

    /// Whether `id` is being tracked.
    pub fn contains(&self, id: &TxId) -> bool {
        self.pending.contains_key(id)
    }

    /// Whether another transaction may be sent.
    pub fn has_room(&self) -> bool {
        self.pending.len() < MAX_IN_FLIGHT
    }

    /// Whether `tx` may be sent now: there is room, and it is not an audit batch's anchor
    /// while another is in flight. Batch anchors go one at a time, oldest first: a
    /// coordinator holding the anchors of batches k and k+1 together could order k+1 first,
    /// and the contracts would then refuse k's for good (`audit-sequence`), a refusal the
    /// hospital's own copy confirms. Holding only k's, it can order it or be seen not to.
    pub fn may_send(&self, tx: &Transaction) -> bool {
        self.has_room()
            && !(is_audit_anchor(tx) && self.pending.values().any(|s| is_audit_anchor(&s.tx)))
    }

    /// Starts tracking `tx`, sent at `now_ms`.
    pub fn sent(&mut self, id: TxId, tx: Transaction, path: PathBuf, now_ms: u64) {
        self.pending.entry(id).or_insert(Submitted {
            tx,
            path,
            sent_ms: now_ms,
            resent: 0,
            disputed: false,
        });
    }

    /// A block carried `id`: it is done.
    pub fn included(&mut self, id: &TxId) -> Option<Submitted> {
        let done = self.pending.remove(id)?;
        for c in &mut self.censored {
            if c.tx == id.to_string() {
                c.outstanding = false;
            }
        }
        push_bounded(&mut self.included, *id);
        Some(done)
    }

    /// The coordinator says it will not order `id` because of `claimed`; `local` is the
    /// hospital's own verdict on the transaction from its ledger copy
    /// (`ChainState::check_tx`). Only a refusal the hospital reproduces ends the submission:
    /// the coordinator's word alone would let it drop any transaction with a made-up reason.
    /// `None` if `id` is not pending.
    pub fn refused(
        &mut self,
        id: &TxId,
        claimed: &str,
        local: impl FnOnce(&Transaction) -> Result<(), ContractError>,
    ) -> Option<Refusal> {
        let s = self.pending.get_mut(id)?;
        if s.disputed {
            return Some(Refusal::Disputed);
        }
        match local(&s.tx) {
            Ok(()) => {}
            // The chain's latest batch end is set by this hospital's anchors alone.
            Err(e @ ContractError::AuditOverlap { .. }) if is_audit_anchor(&s.tx) => {
                let s = self.pending.remove(id)?;
                let reason = e.to_string();
                censored_entry(&mut self.censored, id, &s).overtaken = Some(reason.clone());
                return Some(Refusal::Overtaken(Box::new(s), reason));
            }
            Err(e) => {
                let s = self.pending.remove(id)?;
                return Some(Refusal::Confirmed(Box::new(s), e.to_string()));
            }
        }
        s.disputed = true;
        let claimed: String = claimed.chars().take(MAX_CLAIMED_REASON).collect();
        censored_entry(&mut self.censored, id, s).unconfirmed_refusal = Some(claimed);
        Some(Refusal::Disputed)
    }

    /// Transactions whose deadline passed by `now_ms`: recorded as censored and due to be sent
    /// again (their clock restarts now).
    pub fn overdue(&mut self, now_ms: u64) -> Vec<(TxId, Transaction, u32)> {
        let mut out = Vec::new();
        for (id, s) in &mut self.pending {
            if now_ms.saturating_sub(s.sent_ms) < self.deadline_ms {
                continue;
            }
            s.resent = s.resent.saturating_add(1);
            s.sent_ms = now_ms;
            censored_entry(&mut self.censored, id, s).missed_deadlines = s.resent;
            s.disputed = false;
            out.push((*id, s.tx.clone(), s.resent));
        }
        out.sort_by_key(|(_, tx, _)| tx.issued_at);
        out
    }

    /// Subjects this hospital opted out in a transaction in flight (see [`opt_outs`]).
    pub fn pending_opt_outs(&self) -> BTreeSet<Pseudonym> {
        opt_outs(self.pending.values().map(|s| &s.tx))
    }

    /// Everything still waiting, to send again after a reconnection (the clock is kept),
    /// oldest issued first: consent choices must reach the orderer in the order they were made.
    pub fn outstanding(&self) -> Vec<Transaction> {
        let mut txs: Vec<Transaction> = self.pending.values().map(|s| s.tx.clone()).collect();
        txs.sort_by_key(|t| t.issued_at);
        txs
    }

    /// The earliest time [`Self::overdue`] has something to report.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending
            .values()
            .map(|s| s.sent_ms.saturating_add(self.deadline_ms))
            .min()
    }

    /// What `status.json` shows.
    pub fn status(&self) -> SubmissionStatus {
        SubmissionStatus {
            pending: self.pending.keys().map(ToString::to_string).collect(),
            censored: self
                .censored
                .iter()
                .filter(|c| c.outstanding)
                .cloned()
                .collect(),
            censored_then_included: self
                .censored
                .iter()
                .filter(|c| !c.outstanding)
                .cloned()
                .collect(),
            included: self.included.iter().map(ToString::to_string).collect(),
            anchors_waiting: self.anchors_waiting,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// Subjects a set of this hospital's own consent transactions leaves opted out: the newest
/// choice per subject decides (a later opt-in undoes an opt-out). The hospital applies these
/// at once: a coordinator that does not order an opt-out must not keep the patient's records
/// in training.
pub fn opt_outs<'a>(txs: impl IntoIterator<Item = &'a Transaction>) -> BTreeSet<Pseudonym> {
    let mut newest: BTreeMap<Pseudonym, (Timestamp, ConsentChoice)> = BTreeMap::new();
    for tx in txs {
        if let TxBody::Consent { subject, choice } = &tx.body {
            let e = newest.entry(*subject).or_insert((tx.issued_at, *choice));
            if tx.issued_at > e.0 {
                *e = (tx.issued_at, *choice);
            }
        }
    }
    newest
        .into_iter()
        .filter(|(_, (_, c))| *c == ConsentChoice::OptOut)
        .map(|(p, _)| p)
        .collect()
}

/// How far after this hospital's clock its own transaction may be dated before the agent
/// warns that its clock was wrong when it was issued.
pub const MAX_OWN_CLOCK_AHEAD_MS: u64 = 10 * 60_000;

/// The time at which the hospital checks a refusal of its own `tx` at its clock's `now`: the
/// later of `now` and the transaction's own date, so that a refusal for its date alone (a
/// clock stepped back, a coordinator's behind) is never believed, while one by any other rule
/// is. A transaction dated ahead stays pending until the clocks reach its date: an opt-out
/// must never be dropped for the time it was issued at.
pub fn checked_at(tx: &Transaction, now: Timestamp) -> Timestamp {
    now.max(tx.issued_at)
}

/// Whether `tx` anchors a batch of the hospital's audit log.
fn is_audit_anchor(tx: &Transaction) -> bool {
    matches!(tx.body, TxBody::AnchorAuditLog(_))
}

/// The censorship record of `id`, added (bounded) if it has none yet.
fn censored_entry<'a>(
    censored: &'a mut VecDeque<Censored>,
    id: &TxId,
    s: &Submitted,
) -> &'a mut Censored {
    let hex = id.to_string();
    let at = match censored.iter().position(|c| c.tx == hex) {
        Some(at) => at,
        None => {
            push_bounded(
                censored,
                Censored {
                    tx: hex,
                    kind: s.tx.body.kind(),
                    missed_deadlines: s.resent,
                    outstanding: true,
                    unconfirmed_refusal: None,
                    overtaken: None,
                },
            );
            censored.len() - 1
        }
    };
    &mut censored[at]
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() >= STATUS_HISTORY {
        list.pop_front();
    }
    list.push_back(item);
}

/// The submission part of the client's `status.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubmissionStatus {
    /// Sent, not yet in a block (ids).
    pub pending: Vec<String>,
    /// Not in a block although the deadline passed: the coordinator is censoring them.
    pub censored: Vec<Censored>,
    /// Missed a deadline but were ordered later.
    pub censored_then_included: Vec<Censored>,
    /// Recently seen in blocks (ids).
    pub included: Vec<String>,
    /// Audit-batch anchors waiting in the outbox behind the one in flight (they go one at a
    /// time); a number that keeps growing means the coordinator is slow to order them.
    pub anchors_waiting: usize,
    /// The deadline, in milliseconds.
    pub deadline_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_ledger::testkit::{Fixture, HOUR, T0};
    use medfl_ledger::{ChainState, Hash};

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

    /// Attack, from the hospital's side: the coordinator never orders the transaction. Each
    /// deadline that passes reports it censored and sends it again; a late block clears it.
    #[test]
    fn a_transaction_missing_its_deadline_is_reported_censored_and_resent() {
        let f = Fixture::new(2, 3, 2);
        let tx = consent(&f, "hospital-0", 1);
        let id = tx.id().unwrap();
        let mut s = Submissions::new(1_000);
        s.sent(id, tx, PathBuf::from("x.tx"), 0);
        assert!(s.overdue(999).is_empty());
        assert_eq!(s.next_deadline(), Some(1_000));
        let due = s.overdue(1_000);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].2), (id, 1));
        assert_eq!(s.status().censored.len(), 1);
        assert!(
            s.overdue(1_500).is_empty(),
            "the clock restarted at the resend"
        );
        assert_eq!(s.overdue(2_000)[0].2, 2);
        assert_eq!(s.status().censored[0].missed_deadlines, 2);
        assert!(s.included(&id).is_some());
        let status = s.status();
        assert!(status.censored.is_empty() && status.pending.is_empty());
        assert_eq!(status.censored_then_included.len(), 1);
        assert_eq!(status.included, vec![id.to_string()]);
    }

    #[test]
    fn a_refusal_the_hospital_reproduces_ends_the_submission() {
        let f = Fixture::new(2, 3, 2);
        let tx = consent(&f, "hospital-0", 1);
        let id = tx.id().unwrap();
        let mut s = Submissions::new(1_000);
        s.sent(id, tx, PathBuf::from("x.tx"), 0);
        let verdict = s.refused(&id, "consent-changes: no", |_| {
            Err(ContractError::Malformed("consent-changes".into()))
        });
        assert!(
            matches!(verdict, Some(Refusal::Confirmed(_, ref why)) if why.contains("consent-changes"))
        );
        assert!(s.overdue(5_000).is_empty());
        assert!(s.status().censored.is_empty());
    }

    /// Attack, from the hospital's side: the coordinator answers a valid transaction with a
    /// made-up refusal (or a full queue, or "already ordered" with no block to show). The
    /// hospital's own contract check accepts it, so it stays pending, is shown as not ordered
    /// with the claimed reason, and goes out again at its deadline.
    #[test]
    fn a_refusal_the_hospital_cannot_reproduce_is_censorship() {
        let f = Fixture::new(2, 3, 2);
        let state = ChainState::from_genesis(&f.genesis).unwrap();
        let tx = consent(&f, "hospital-0", 1);
        let id = tx.id().unwrap();
        let mut s = Submissions::new(1_000);
        s.sent(id, tx, PathBuf::from("x.tx"), 0);
        let local = |tx: &Transaction| state.check_tx(tx, Timestamp(T0.0 + HOUR));
        let verdict = s.refused(&id, "consent-changes: trust me", local);
        assert!(matches!(verdict, Some(Refusal::Disputed)), "{verdict:?}");
        assert!(s.contains(&id));
        let status = s.status();
        assert_eq!(status.censored.len(), 1);
        assert_eq!(
            status.censored[0].unconfirmed_refusal.as_deref(),
            Some("consent-changes: trust me")
        );
        // Refusals repeated before it is sent again are not re-checked (each check copies the
        // ledger state).
        let again = s.refused(&id, "again", |_| unreachable!("re-checked before a resend"));
        assert!(matches!(again, Some(Refusal::Disputed)));
        let due = s.overdue(1_000);
        assert_eq!(due.len(), 1, "sent again at the deadline");
        assert_eq!(s.status().censored[0].missed_deadlines, 1);
        let rechecked = s.refused(&id, "x", |_| {
            Err(ContractError::Malformed("contract-rule".into()))
        });
        assert!(
            matches!(rechecked, Some(Refusal::Confirmed(..))),
            "checked again after the resend"
        );
        assert!(s.refused(&TxId::default(), "x", |_| Ok(())).is_none());
    }

    fn audit_anchor(f: &Fixture, first: u64, last: u64) -> Transaction {
        f.tx(
            &Fixture::id("hospital-0"),
            Timestamp(last),
            TxBody::AnchorAuditLog(medfl_ledger::tx::AuditAnchor {
                merkle_root: Hash([first as u8; 32]),
                count: 3,
                first_event_at: Timestamp(first),
                last_event_at: Timestamp(last),
            }),
        )
    }

    /// Attack: a coordinator holding the anchors of batches k and k+1 orders k+1 first, and
    /// the contracts then refuse k's for good. The agent never lets it hold both: a batch
    /// anchor goes out only when none is in flight, whatever else is sent meanwhile.
    #[test]
    fn one_batch_anchor_is_in_flight_at_a_time() {
        let f = Fixture::new(2, 3, 2);
        let (k, next) = (
            audit_anchor(&f, T0.0, T0.0 + 10),
            audit_anchor(&f, T0.0 + 10, T0.0 + 20),
        );
        let mut s = Submissions::new(1_000);
        assert!(s.may_send(&k));
        s.sent(k.id().unwrap(), k.clone(), PathBuf::from("k.tx"), 0);
        assert!(!s.may_send(&next), "k+1 waits while k is unordered");
        assert!(
            s.may_send(&consent(&f, "hospital-0", 1)),
            "other kinds go on"
        );
        s.overdue(5_000);
        assert!(
            !s.may_send(&next),
            "still waiting after k missed its deadline"
        );
        let refused = s.refused(&k.id().unwrap(), "made up", |_| Ok(()));
        assert!(matches!(refused, Some(Refusal::Disputed)));
        assert!(
            !s.may_send(&next),
            "a refusal our copy disputes does not free the slot"
        );
        s.included(&k.id().unwrap());
        assert!(s.may_send(&next), "k is ordered: k+1 may go");
    }

    /// Attack: the coordinator did obtain a later anchor (a hand-made submission) and ordered
    /// it first. The refusal of the earlier batch is one the hospital's copy reproduces, yet
    /// it is reported as censorship, for the batch has lost its own anchor.
    #[test]
    fn a_batch_anchor_overtaken_by_our_own_later_one_is_censorship() {
        let f = Fixture::new(2, 3, 2);
        let mut state = ChainState::from_genesis(&f.genesis).unwrap();
        let (k, next) = (
            audit_anchor(&f, T0.0 + 1, T0.0 + 10),
            audit_anchor(&f, T0.0 + 10, T0.0 + 20),
        );
        let block = f.block(&state, vec![next], Timestamp(T0.0 + HOUR));
        state.apply_block(&block).unwrap();
        let id = k.id().unwrap();
        let mut s = Submissions::new(1_000);
        s.sent(id, k, PathBuf::from("k.tx"), 0);
        let verdict = s.refused(&id, "audit-sequence", |tx| {
            state.check_tx(tx, Timestamp(T0.0 + HOUR))
        });
        assert!(
            matches!(verdict, Some(Refusal::Overtaken(_, ref why)) if why.contains("audit-sequence")),
            "{verdict:?}"
        );
        assert!(!s.contains(&id), "it can never be ordered: not sent again");
        let status = s.status();
        assert_eq!(status.censored.len(), 1);
        assert!(status.censored[0].outstanding);
        assert!(status.censored[0].overtaken.is_some());
    }

    /// A clock stepped back dates the hospital's own anchor after its clock: the refusal the
    /// coordinator sends for its time alone is not believed, however far ahead (an opt-out
    /// must not be dropped for its date); another rule's refusal is believed either way.
    #[test]
    fn a_refusal_for_a_date_a_little_ahead_is_not_believed() {
        let f = Fixture::new(2, 3, 2);
        let state = ChainState::from_genesis(&f.genesis).unwrap();
        let now = Timestamp(T0.0 + HOUR);
        let check = |tx: &Transaction| state.check_tx(tx, checked_at(tx, now));
        let soon = audit_anchor(&f, now.0, now.0 + 60_000);
        assert!(state.check_tx(&soon, now).is_err(), "refused at our clock");
        assert_eq!(check(&soon), Ok(()), "but only for its time");
        let far = audit_anchor(&f, now.0, now.0 + 7 * 24 * HOUR);
        assert_eq!(
            check(&far),
            Ok(()),
            "however far ahead: it waits for the clocks"
        );
        let mut empty = audit_anchor(&f, now.0, now.0 + 60_000);
        if let TxBody::AnchorAuditLog(a) = &mut empty.body {
            a.count = 0;
        }
        let empty = f.tx(&Fixture::id("hospital-0"), empty.issued_at, empty.body);
        assert!(
            matches!(check(&empty), Err(ContractError::Malformed(_))),
            "another rule still refuses it"
        );
    }

    /// Attack: the coordinator sits on a patient's opt-out. The hospital stops training on the
    /// patient at once; an opt-in issued later (also pending) takes the patient back.
    #[test]
    fn an_opt_out_not_yet_ordered_is_applied_by_the_hospital() {
        let f = Fixture::new(2, 3, 2);
        let choice = |n: u8, choice, at| {
            f.tx(
                &Fixture::id("hospital-0"),
                Timestamp(T0.0 + at),
                TxBody::Consent {
                    subject: Pseudonym(Hash([n; 32])),
                    choice,
                },
            )
        };
        let mut s = Submissions::new(1_000);
        for tx in [
            choice(1, ConsentChoice::OptOut, 10),
            choice(2, ConsentChoice::OptOut, 10),
            choice(2, ConsentChoice::OptIn, 20),
        ] {
            s.sent(tx.id().unwrap(), tx, PathBuf::from("x.tx"), 0);
        }
        let out = s.pending_opt_outs();
        assert_eq!(out, BTreeSet::from([Pseudonym(Hash([1; 32]))]));
        let ordered = choice(1, ConsentChoice::OptOut, 10).id().unwrap();
        s.included(&ordered);
        assert!(s.pending_opt_outs().is_empty(), "the ledger holds it now");
    }
}
