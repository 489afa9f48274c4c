//! The monitor's audit trail: every request and its decision, and every officer's review, in a
//! local append-only log that is hash-chained, durable before the answer leaves, and sealed in
//! batches whose Merkle roots the hospital anchors on the ledger.
//!
//! Each record carries the hash of the one before it, so a record changed in place breaks the
//! chain at the next one, and verification names it. A batch's root (RFC 6962 form, as the
//! ledger's blocks use) goes into an `AnchorAuditLog` transaction the hospital signs itself; a
//! log rewritten from some record on, chain and all, no longer matches the root anchored for
//! that batch, and a log cut short holds fewer batches than the ledger anchors. What is not yet
//! sealed is protected by the chain alone, and verification says how much that is.
//!
//! The file is redb's, opened with its integrity check; every call into the engine is guarded,
//! so a damaged file is an error, never a crash.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use medfl_ledger::tx::{AlertAnchor, AuditAnchor, Severity};
use medfl_ledger::{Hash, Timestamp, codec, merkle};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::decide::Decision;
use crate::request::{AccessRequest, DeliveryId, MAX_AGE_MS, MAX_AHEAD_MS};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Named deliveries of the last day: (the access's time, [`delivery_key`]) to the record that
/// decided it. An index into the records, kept in the same commits; never part of the chain.
const DELIVERIES: TableDefinition<DeliveryKey, u64> = TableDefinition::new("deliveries");

/// How long a named delivery is remembered, by the clock of the appends: longer than any
/// retry can be decided (an access more than [`MAX_AGE_MS`] old is refused, not decided).
const DELIVERY_WINDOW_MS: u64 = MAX_AGE_MS + 2 * MAX_AHEAD_MS;

/// How often, by the log's clock, deliveries past the window are dropped (in an append).
const PRUNE_EVERY_MS: u64 = 60_000;

/// Most records one sealed batch holds.
pub const MAX_BATCH: usize = 4096;

/// Why the audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The storage engine failed or found the file damaged.
    #[error("audit log storage: {0}")]
    Storage(String),
    /// A record or batch does not verify; `seq` is the first bad record.
    #[error("record {seq}: {problem}")]
    Bad {
        /// The first record that fails.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
    /// An alert anchor the hospital signed names no block this log raised (or names one at
    /// another time): the log was rewritten, or the anchor is false.
    #[error(
        "the ledger's alert anchor {alert} (raised at {raised_at}) matches no block this log raised at that time"
    )]
    UnmatchedAlert {
        /// The anchor's record hash.
        alert: Hash,
        /// The time it claims.
        raised_at: Timestamp,
    },
    /// The ledger anchors more batches than the log holds: records were lost.
    #[error(
        "the ledger anchors {anchored} batches of this log, the log holds {held}: records were lost"
    )]
    Truncated {
        /// Anchors on the ledger.
        anchored: usize,
        /// Batches held.
        held: usize,
    },
}

/// What happened, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecordBody {
    /// An access was decided.
    Decision {
        /// The request as received.
        request: Box<AccessRequest>,
        /// The answer sent.
        decision: Box<Decision>,
    },
    /// A security officer reviewed something.
    Review {
        /// The officer (as authenticated).
        officer: String,
        /// What the officer did.
        action: ReviewAction,
        /// Free text.
        note: String,
    },
    /// An access its sender named was decided: the same access delivered again under the
    /// same id is answered from this record, not decided again. (Last, so that records
    /// written before it existed still decode.)
    Delivered {
        /// The sender's id for the delivery (a FHIR `AuditEvent.id`, an `Idempotency-Key`).
        id: DeliveryId,
        /// The request as received.
        request: Box<AccessRequest>,
        /// The answer sent.
        decision: Box<Decision>,
    },
}

impl RecordBody {
    /// The access and its decision, if the record is one.
    pub fn decision(&self) -> Option<(&AccessRequest, &Decision)> {
        match self {
            RecordBody::Decision { request, decision }
            | RecordBody::Delivered {
                request, decision, ..
            } => Some((request, decision)),
            RecordBody::Review { .. } => None,
        }
    }
}

/// What identifies a named delivery: the access's time, and a hash of its id with the whole
/// access as it was decided (every field, the flags the context completed included). An id
/// sent first with an access differing in anything cannot stand in for the real one; the
/// price is that a retry after a context refresh changed a flag is decided again.
pub type DeliveryKey = (u64, [u8; 32]);

/// The [`DeliveryKey`] of `r` delivered under `id`.
///
/// # Errors
/// The access cannot be encoded.
pub fn delivery_key(id: &DeliveryId, r: &AccessRequest) -> Result<DeliveryKey, AuditError> {
    let bytes = codec::encode(&(id, r)).map_err(|e| AuditError::Storage(e.to_string()))?;
    Ok((r.time_ms, Hash::of_bytes(&bytes).0))
}

/// A security officer's review.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReviewAction {
    /// The alert of record `seq` was looked at.
    Acknowledge {
        /// The record of the alert.
        seq: u64,
    },
    /// The user's block is lifted.
    Unblock {
        /// The user.
        user: String,
    },
    /// A patient's consent choice was recorded on the patient's behalf, and the hospital's
    /// consent transaction queued for the ledger. (After the others, so that records written
    /// before it existed still decode.)
    Consent {
        /// The patient (the hospital's own id for them; the ledger gets a salted pseudonym).
        patient: String,
        /// `true` for an opt-out, `false` for an opt-in.
        opt_out: bool,
        /// The consent transaction's id on the ledger.
        transaction: Hash,
    },
    /// The officer read who accessed this patient's record (the patient-access report):
    /// logged, sealed and anchored before the report is sent, so every reading of it is on
    /// the record. (Last, so that records written before it existed still decode.)
    ReadPatientReport {
        /// The patient.
        patient: String,
    },
    /// The officer read this user's recent activity; logged like a patient report.
    ReadUserActivity {
        /// The user.
        user: String,
    },
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its position, from 0, without gaps.
    pub seq: u64,
    /// When the monitor recorded it (ms since the epoch; never earlier than the record before).
    pub at_ms: u64,
    /// The hash of the record before (zero for the first).
    pub prev: Hash,
    /// What happened.
    pub body: RecordBody,
}

/// A sealed batch: records `first..=last` under `root`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedBatch {
    /// Its position among batches, from 0.
    pub index: u64,
    /// Its first record.
    pub first: u64,
    /// Its last record.
    pub last: u64,
    /// The Merkle root over its records' hashes.
    pub root: Hash,
    /// Its first record's time.
    pub first_at: u64,
    /// Its last record's time.
    pub last_at: u64,
}

/// A block a decision raised: the alert a hospital anchors on the ledger on its own (the
/// record stays in the log; the anchor commits to its hash), so that when an employee was
/// blocked can be proved to someone who does not trust the hospital's disk (with the record,
/// its Merkle path and its batch's anchor).
/// Denials because a block already stands, and alerts that block no one, are covered by their
/// batch's audit anchor only: anchoring each would put the hospital's alert rate on the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct RaisedBlock {
    /// The record's position.
    pub seq: u64,
    /// The record's hash (a leaf of its batch's Merkle tree).
    pub record: Hash,
    /// When the monitor recorded it.
    pub at_ms: u64,
    /// The model that scored it (its hash, as the decision names it).
    pub model: Option<String>,
}

/// What [`AuditLog::check_alert_anchors`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertReport {
    /// Blocks raised by decisions in sealed batches.
    pub raised: u64,
    /// Of those, how many an alert anchor on the ledger covers.
    pub anchored: u64,
    /// Alert anchors not shaped as the monitor's (another severity, or a model named).
    pub other: u64,
}

impl RaisedBlock {
    /// The ledger transaction body that anchors it; `anchored` is the anchored round's model
    /// that raised it, if known (the contract refuses a model no round anchored).
    pub fn anchor(&self, anchored: Option<Hash>) -> AlertAnchor {
        AlertAnchor {
            alert: self.record,
            severity: Severity::Critical,
            raised_at: Timestamp(self.at_ms),
            model: anchored,
        }
    }
}

impl SealedBatch {
    /// The ledger transaction body that anchors it.
    pub fn anchor(&self) -> AuditAnchor {
        AuditAnchor {
            merkle_root: self.root,
            count: self.last.saturating_sub(self.first).saturating_add(1),
            first_event_at: Timestamp(self.first_at),
            last_event_at: Timestamp(self.last_at),
        }
    }
}

/// What verification found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Sealed batches.
    pub batches: usize,
    /// Batches the ledger anchors.
    pub anchored: usize,
    /// Records not yet in a sealed batch (protected by the hash chain only).
    pub unsealed: u64,
}

/// The audit log (see the module docs).
pub struct AuditLog {
    db: Arc<redb::Database>,
    /// The next record's position, and the hash and time of the last record.
    next: u64,
    last_hash: Hash,
    last_at: u64,
    /// The log's time when deliveries past the window were last dropped.
    pruned_at: u64,
    /// A write failed: the file is not written again.
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("records", &self.next)
            .finish_non_exhaustive()
    }
}

/// Runs a call into the storage engine, turning a panic on a damaged page into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, AuditError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| AuditError::Storage(format!("{what}: {e}"))),
        Err(_) => Err(AuditError::Storage(format!(
            "{what}: the storage engine failed on a damaged file"
        ))),
    }
}

/// Refused after the engine failed once: nothing more is written to a file it may have torn.
const POISONED: &str = "an earlier write failed; restart the monitor (it replays the log)";

/// [`guarded`] for a write: a failure of the engine poisons the log.
fn guarded_mut<T>(
    poisoned: &mut bool,
    what: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, AuditError> {
    if *poisoned {
        return Err(AuditError::Storage(POISONED.into()));
    }
    let r = guarded(what, f);
    if r.is_err() {
        *poisoned = true;
    }
    r
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, checking the file's integrity.
    ///
    /// # Errors
    /// The file is damaged, locked by another process, or its last record does not decode.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let db = guarded("opening the audit log", || {
            redb::Builder::new()
                .set_check_integrity_on_open(true)
                .create(path)
                .map_err(s)
        })?;
        guarded("creating the tables", || {
            let txn = db.begin_write().map_err(s)?;
            txn.open_table(RECORDS).map_err(s)?;
            txn.open_table(BATCHES).map_err(s)?;
            txn.open_table(DELIVERIES).map_err(s)?;
            txn.commit().map_err(s)
        })?;
        let mut log = AuditLog {
            db: Arc::new(db),
            next: 0,
            last_hash: Hash::default(),
            last_at: 0,
            pruned_at: 0,
            poisoned: false,
        };
        let last = guarded("reading the last record", || {
            let txn = log.db.begin_read().map_err(s)?;
            let t = txn.open_table(RECORDS).map_err(s)?;
            let last = t.last().map_err(s)?;
            Ok(last.map(|(k, v)| (k.value(), v.value().to_vec())))
        })?;
        if let Some((seq, bytes)) = last {
            let record = decode_record(seq, &bytes)?;
            log.next = seq.checked_add(1).ok_or_else(|| AuditError::Bad {
                seq,
                problem: "position out of range".into(),
            })?;
            log.last_hash = Hash::of_bytes(&bytes);
            log.last_at = record.at_ms;
        }
        Ok(log)
    }

    /// Records in the log.
    pub fn len(&self) -> u64 {
        self.next
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }

    /// Appends `body` at `at_ms` (raised to the last record's time if earlier) and commits it
    /// durably before returning the record.
    ///
    /// # Errors
    /// Storage failed; nothing was appended.
    pub fn append(&mut self, at_ms: u64, body: RecordBody) -> Result<AuditRecord, AuditError> {
        let mut records = self.append_all(vec![(at_ms, body)])?;
        records
            .pop()
            .ok_or_else(|| AuditError::Storage("nothing appended".into()))
    }

    /// Appends every `(at_ms, body)` in order, in one durable commit (group commit: one fsync
    /// for the lot), and returns the records.
    ///
    /// # Errors
    /// Storage failed; none was appended.
    pub fn append_all(
        &mut self,
        items: Vec<(u64, RecordBody)>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let (mut next, mut last_hash, mut last_at) = (self.next, self.last_hash, self.last_at);
        let mut records = Vec::with_capacity(items.len());
        let mut encoded = Vec::with_capacity(items.len());
        let mut named = Vec::new();
        // Reviews carry the wall clock even in a replay: only decisions set the pruning clock.
        let items_now = items
            .iter()
            .filter(|(_, body)| body.decision().is_some())
            .map(|(at, _)| *at)
            .max();
        for (at_ms, body) in items {
            if let RecordBody::Delivered { id, request, .. } = &body {
                named.push((delivery_key(id, request)?, next));
            }
            let record = AuditRecord {
                seq: next,
                at_ms: at_ms.max(last_at),
                prev: last_hash,
                body,
            };
            let bytes = codec::encode(&record).map_err(|e| AuditError::Storage(e.to_string()))?;
            last_hash = Hash::of_bytes(&bytes);
            last_at = record.at_ms;
            next = next.checked_add(1).ok_or_else(|| AuditError::Bad {
                seq: next,
                problem: "position out of range".into(),
            })?;
            encoded.push((record.seq, bytes));
            records.push(record);
        }
        // By the appends' own clock, the one requests are checked against: the log's time
        // never goes back, and after the clock steps back it would drop deliveries still due.
        let now = items_now.unwrap_or(0);
        let prune = items_now.is_some() && now.saturating_sub(self.pruned_at) >= PRUNE_EVERY_MS;
        let poisoned = &mut self.poisoned;
        let db = &self.db;
        guarded_mut(poisoned, "appending records", || {
            let mut txn = db.begin_write().map_err(s)?;
            // Two-phase: a damaged newest commit is an error on open, never a silent fall-back
            // to the one before (which would drop answered decisions).
            txn.set_two_phase_commit(true);
            {
                let mut t = txn.open_table(RECORDS).map_err(s)?;
                for (seq, bytes) in &encoded {
                    t.insert(*seq, bytes.as_slice()).map_err(s)?;
                }
                let mut d = txn.open_table(DELIVERIES).map_err(s)?;
                for (key, seq) in &named {
                    d.insert(key, seq).map_err(s)?;
                }
                if prune {
                    let cutoff = (now.saturating_sub(DELIVERY_WINDOW_MS), [0u8; 32]);
                    d.retain_in(..cutoff, |_, _| false).map_err(s)?;
                }
            }
            txn.commit().map_err(s)
        })?;
        (self.next, self.last_hash, self.last_at) = (next, last_hash, last_at);
        if prune {
            self.pruned_at = now;
        }
        Ok(records)
    }

    /// The record that decided the access `request` delivered under `id`, and its decision,
    /// if this log decided it within the last day.
    ///
    /// # Errors
    /// Storage failed, or the index names a record that does not decode or is not that
    /// delivery.
    pub fn delivered(
        &self,
        id: &DeliveryId,
        request: &AccessRequest,
    ) -> Result<Option<(u64, Decision)>, AuditError> {
        let key = delivery_key(id, request)?;
        let seq = guarded("looking up a delivery", || {
            let txn = self.db.begin_read().map_err(s)?;
            let t = txn.open_table(DELIVERIES).map_err(s)?;
            Ok(t.get(&key).map_err(s)?.map(|v| v.value()))
        })?;
        let Some(seq) = seq else {
            return Ok(None);
        };
        let Some((_, bytes)) = self.raw(seq, 1)?.into_iter().find(|(at, _)| *at == seq) else {
            return Err(AuditError::Bad {
                seq,
                problem: "the delivery index names a record the log does not hold".into(),
            });
        };
        match decode_record(seq, &bytes)?.body {
            RecordBody::Delivered {
                id: held,
                request: was,
                decision,
            } if held == *id && *was == *request => Ok(Some((seq, *decision))),
            _ => Err(AuditError::Bad {
                seq,
                problem: format!("the delivery index names it for {id}, which it does not record"),
            }),
        }
    }

    /// Records `from..` in order, at most `limit`.
    ///
    /// # Errors
    /// Storage failed or a record does not decode.
    pub fn records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.reader().records(from, limit)
    }

    fn raw(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        raw(&self.db, from, limit)
    }

    /// A reader of the log for reports that scan it while it is written: it holds no lock of
    /// the log's, so a long report never delays a decision (redb serves each read from a
    /// snapshot of the last commit).
    pub fn reader(&self) -> AuditReader {
        AuditReader {
            db: Arc::clone(&self.db),
        }
    }

    /// The block raised by the decision at `seq`, if it raised one (see [`RaisedBlock`]).
    ///
    /// # Errors
    /// Storage failed or the record does not decode.
    pub fn raised_block(&self, seq: u64) -> Result<Option<RaisedBlock>, AuditError> {
        let Some((_, bytes)) = self.raw(seq, 1)?.into_iter().find(|(s, _)| *s == seq) else {
            return Ok(None);
        };
        let record = decode_record(seq, &bytes)?;
        Ok(match record.body.decision() {
            Some((_, decision)) if decision.raises_block() => Some(RaisedBlock {
                seq,
                record: Hash::of_bytes(&bytes),
                at_ms: record.at_ms,
                model: decision.model.clone(),
            }),
            _ => None,
        })
    }
    /// Checks the hospital's alert anchors against the blocks this log raised: every anchor
    /// shaped as the monitor's (critical, no model) must name a raised block's record, at its
    /// time; returns how many blocks were raised in
    /// sealed batches and how many of those the anchors cover.
    ///
    /// # Errors
    /// An anchor matches no raised block ([`AuditError::UnmatchedAlert`]), or storage failed.
    pub fn check_alert_anchors(&self, anchors: &[AlertAnchor]) -> Result<AlertReport, AuditError> {
        let sealed = self.first_unsealed()?;
        let mut raised = std::collections::HashMap::new();
        let mut from = 0u64;
        while from < sealed {
            let raw = self.raw(from, MAX_BATCH)?;
            let Some(next) = raw.last().and_then(|(last, _)| last.checked_add(1)) else {
                break;
            };
            from = next;
            for (seq, bytes) in raw.into_iter().filter(|(seq, _)| *seq < sealed) {
                let record = decode_record(seq, &bytes)?;
                if let Some((_, decision)) = record.body.decision()
                    && decision.raises_block()
                {
                    raised.insert(Hash::of_bytes(&bytes), record.at_ms);
                }
            }
        }
        let mut covered = std::collections::HashSet::new();
        let mut other = 0u64;
        for a in anchors {
            // The monitor's anchors are critical and name no model; others (made by hand
            // with `medfl ledger submit alert`) are counted, not matched.
            if a.severity != Severity::Critical || a.model.is_some() {
                other += 1;
                continue;
            }
            match raised.get(&a.alert) {
                Some(at) if *at == a.raised_at.0 => {
                    covered.insert(a.alert);
                }
                _ => {
                    return Err(AuditError::UnmatchedAlert {
                        alert: a.alert,
                        raised_at: a.raised_at,
                    });
                }
            }
        }
        Ok(AlertReport {
            raised: raised.len() as u64,
            anchored: covered.len() as u64,
            other,
        })
    }

    /// The first record no sealed batch holds yet.
    ///
    /// # Errors
    /// Storage failed or a batch does not decode.
    pub fn first_unsealed(&self) -> Result<u64, AuditError> {
        Ok(self.last_batch()?.map_or(0, |b| b.last.saturating_add(1)))
    }

    /// The latest sealed batch, if any (one read, however many there are).
    ///
    /// # Errors
    /// Storage failed or the batch does not decode.
    pub fn last_batch(&self) -> Result<Option<SealedBatch>, AuditError> {
        let raw = guarded("reading the last batch", || {
            let txn = self.db.begin_read().map_err(s)?;
            let t = txn.open_table(BATCHES).map_err(s)?;
            let last = t.last().map_err(s)?;
            Ok(last.map(|(_, v)| v.value().to_vec()))
        })?;
        raw.map(|b| decode_batch(&b)).transpose()
    }

    /// Every sealed batch, in order.
    ///
    /// # Errors
    /// Storage failed or a batch does not decode.
    pub fn batches(&self) -> Result<Vec<SealedBatch>, AuditError> {
        let raw = guarded("reading batches", || {
            let txn = self.db.begin_read().map_err(s)?;
            let t = txn.open_table(BATCHES).map_err(s)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(s)? {
                let (_, v) = entry.map_err(s)?;
                out.push(v.value().to_vec());
            }
            Ok(out)
        })?;
        raw.iter().map(|b| decode_batch(b)).collect()
    }

    /// Seals every record after the last sealed batch, [`MAX_BATCH`] at a time; returns the
    /// new batches.
    ///
    /// # Errors
    /// As [`Self::seal`]; the batches sealed before the failure stay sealed.
    pub fn seal_all(&mut self) -> Result<Vec<SealedBatch>, AuditError> {
        let mut out = Vec::new();
        while let Some(b) = self.seal()? {
            out.push(b);
        }
        Ok(out)
    }

    /// Seals the records after the last sealed batch (at most [`MAX_BATCH`]) into a new batch,
    /// stored durably; `None` if there are none.
    ///
    /// # Errors
    /// Storage failed, or a record does not decode.
    pub fn seal(&mut self) -> Result<Option<SealedBatch>, AuditError> {
        // The last batch only: a monitor seals every minute for years, under its state lock.
        let previous = self.last_batch()?;
        let (first, index) = match &previous {
            Some(b) => {
                let out_of_range = || AuditError::Bad {
                    seq: b.last,
                    problem: "batch bounds out of range".into(),
                };
                (
                    b.last.checked_add(1).ok_or_else(out_of_range)?,
                    b.index.checked_add(1).ok_or_else(out_of_range)?,
                )
            }
            None => (0, 0),
        };
        let raw = self.raw(first, MAX_BATCH)?;
        let (Some((_, first_bytes)), Some((last, last_bytes))) = (raw.first(), raw.last()) else {
            return Ok(None);
        };
        let leaves: Vec<Hash> = raw.iter().map(|(_, b)| Hash::of_bytes(b)).collect();
        let batch = SealedBatch {
            index,
            first,
            last: *last,
            root: merkle::root(&leaves),
            first_at: decode_record(first, first_bytes)?.at_ms,
            last_at: decode_record(*last, last_bytes)?.at_ms,
        };
        let bytes = codec::encode(&batch).map_err(|e| AuditError::Storage(e.to_string()))?;
        let poisoned = &mut self.poisoned;
        let db = &self.db;
        guarded_mut(poisoned, "sealing a batch", || {
            let mut txn = db.begin_write().map_err(s)?;
            txn.set_two_phase_commit(true);
            {
                let mut t = txn.open_table(BATCHES).map_err(s)?;
                t.insert(batch.index, bytes.as_slice()).map_err(s)?;
            }
            txn.commit().map_err(s)
        })?;
        Ok(Some(batch))
    }

    /// Checks the whole log against `anchors` (the hospital's audit anchors on its ledger
    /// copy): first every record's position and hash link, which names a record changed in
    /// place; then every sealed batch's root recomputed from its records; then the anchors.
    /// A batch is anchored when the ledger holds an anchor equal to its own (root, count,
    /// times); an anchor that matches no batch means records were lost or rewritten, and is
    /// blamed on the batch covering the same times if there is one. A batch with no anchor
    /// (its anchor not yet ordered, or never sent) is reported, not blamed.
    ///
    /// # Errors
    /// The first record that fails ([`AuditError::Bad`]), or [`AuditError::Truncated`] when
    /// the ledger anchors batches the log does not hold.
    pub fn verify(&self, anchors: &[AuditAnchor]) -> Result<VerifyReport, AuditError> {
        // Pass 1: positions, times and links.
        let mut leaves: Vec<Hash> = Vec::new();
        let mut prev_at = 0;
        let mut seq = 0u64;
        loop {
            let chunk = self.raw(seq, MAX_BATCH)?;
            if chunk.is_empty() {
                break;
            }
            for (key, bytes) in chunk {
                if key != seq {
                    return Err(AuditError::Bad {
                        seq,
                        problem: format!("missing (the next record held is {key})"),
                    });
                }
                let record = decode_record(seq, &bytes)?;
                let expected = leaves.last().copied().unwrap_or_default();
                if record.prev != expected {
                    // The record before changed after this one was written: this one's link
                    // still holds the hash that record had.
                    return Err(AuditError::Bad {
                        seq: seq.saturating_sub(1),
                        problem: format!(
                            "altered after it was written: record {seq} holds a different hash of it"
                        ),
                    });
                }
                if record.seq != seq || record.at_ms < prev_at {
                    return Err(AuditError::Bad {
                        seq,
                        problem: "altered: its position or time is out of order".into(),
                    });
                }
                prev_at = record.at_ms;
                leaves.push(Hash::of_bytes(&bytes));
                seq += 1;
            }
        }
        // Pass 2: the seals.
        let batches = self.batches()?;
        let mut next_first = 0u64;
        for (position, b) in batches.iter().enumerate() {
            let bad = |problem: String| AuditError::Bad {
                seq: b.first,
                problem,
            };
            if b.index != position as u64 || b.first != next_first || b.last < b.first {
                return Err(bad(format!(
                    "batch {position} is out of order (it claims index {}, records {}..={})",
                    b.index, b.first, b.last
                )));
            }
            let (Ok(first), Ok(last)) = (usize::try_from(b.first), usize::try_from(b.last)) else {
                return Err(bad("batch bounds out of range".into()));
            };
            let Some(covered) = leaves.get(first..=last) else {
                return Err(bad(format!(
                    "batch {position} is sealed but its records {}..={} are missing",
                    b.first, b.last
                )));
            };
            if merkle::root(covered) != b.root {
                return Err(bad(format!(
                    "batch {position} (records {}..={}) does not match its own seal",
                    b.first, b.last
                )));
            }
            next_first = b.last.saturating_add(1);
        }
        // Pass 3: the anchors.
        for a in anchors {
            if batches.iter().any(|b| b.anchor() == *a) {
                continue;
            }
            let same_span = batches.iter().find(|b| {
                let mine = b.anchor();
                mine.count == a.count
                    && mine.first_event_at == a.first_event_at
                    && mine.last_event_at == a.last_event_at
            });
            return Err(match same_span {
                Some(b) => AuditError::Bad {
                    seq: b.first,
                    problem: format!(
                        "batch {} (records {}..={}) does not match the root the ledger anchors for its span: a record in it was altered, or the log rewritten from it on",
                        b.index, b.first, b.last
                    ),
                },
                None => AuditError::Truncated {
                    anchored: anchors.len(),
                    held: batches.len(),
                },
            });
        }
        let anchored = batches
            .iter()
            .filter(|b| anchors.contains(&b.anchor()))
            .count();
        Ok(VerifyReport {
            records: seq,
            batches: batches.len(),
            anchored,
            unsealed: seq.saturating_sub(next_first),
        })
    }

    /// Every decision on `patient`'s record, oldest first: who, when, from where, what was
    /// decided (the patient-access report).
    ///
    /// # Errors
    /// Storage failed or a record does not decode.
    pub fn history(&self, patient: &str) -> Result<Vec<AuditRecord>, AuditError> {
        self.reader().history(patient)
    }
}

/// Reads an [`AuditLog`] while it is written (see [`AuditLog::reader`]); it never writes.
#[derive(Clone)]
pub struct AuditReader {
    db: Arc<redb::Database>,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader").finish_non_exhaustive()
    }
}

impl AuditReader {
    /// Records `from..` in order, at most `limit`.
    ///
    /// # Errors
    /// Storage failed or a record does not decode.
    pub fn records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        raw(&self.db, from, limit)?
            .into_iter()
            .map(|(seq, bytes)| decode_record(seq, &bytes))
            .collect()
    }

    /// Every decision on `patient`'s record, oldest first: who, when, from where, what was
    /// decided (the patient-access report).
    ///
    /// # Errors
    /// Storage failed or a record does not decode.
    pub fn history(&self, patient: &str) -> Result<Vec<AuditRecord>, AuditError> {
        let mut out = Vec::new();
        let mut seq = 0;
        loop {
            let chunk = self.records(seq, MAX_BATCH)?;
            let Some(last) = chunk.last() else {
                return Ok(out);
            };
            seq = last.seq + 1;
            out.extend(chunk.into_iter().filter(|r| {
                r.body
                    .decision()
                    .is_some_and(|(request, _)| request.patient == patient)
            }));
        }
    }

    /// The decisions on `patient`'s record: how many there are, and the latest `limit` of
    /// them, oldest first. Memory holds `limit` records at most, however long the log.
    ///
    /// # Errors
    /// Storage failed or a record does not decode.
    pub fn history_tail(
        &self,
        patient: &str,
        limit: usize,
    ) -> Result<(usize, Vec<AuditRecord>), AuditError> {
        let mut total = 0;
        let mut tail = std::collections::VecDeque::with_capacity(limit.min(MAX_BATCH));
        let mut seq = 0;
        loop {
            let chunk = self.records(seq, MAX_BATCH)?;
            let Some(last) = chunk.last() else {
                return Ok((total, tail.into()));
            };
            seq = last.seq + 1;
            for r in chunk {
                if r.body
                    .decision()
                    .is_some_and(|(request, _)| request.patient == patient)
                {
                    total += 1;
                    if limit > 0 {
                        if tail.len() == limit {
                            tail.pop_front();
                        }
                        tail.push_back(r);
                    }
                }
            }
        }
    }

    /// `user`'s latest decisions, newest first: at most `limit`, found among the last
    /// `window` records (a bound on the work one request can ask for). Records are decoded
    /// one at a time inside the read: memory holds the matches only.
    ///
    /// # Errors
    /// Storage failed or a record does not decode.
    pub fn recent_of_user(
        &self,
        user: &str,
        limit: usize,
        window: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut found = Vec::new();
        let mut bad = None;
        guarded("reading records", || {
            let txn = self.db.begin_read().map_err(s)?;
            let t = txn.open_table(RECORDS).map_err(s)?;
            for entry in t.iter().map_err(s)?.rev().take(window) {
                let (k, v) = entry.map_err(s)?;
                let record = match decode_record(k.value(), v.value()) {
                    Ok(r) => r,
                    Err(e) => {
                        bad = Some(e);
                        return Ok(());
                    }
                };
                if record
                    .body
                    .decision()
                    .is_some_and(|(request, _)| request.user == user)
                {
                    found.push(record);
                    if found.len() >= limit {
                        break;
                    }
                }
            }
            Ok(())
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }
}

/// Records `from..` of `db` as stored, at most `limit`.
fn raw(db: &redb::Database, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    guarded("reading records", || {
        let txn = db.begin_read().map_err(s)?;
        let t = txn.open_table(RECORDS).map_err(s)?;
        let mut out = Vec::new();
        for entry in t.range(from..).map_err(s)?.take(limit) {
            let (k, v) = entry.map_err(s)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    })
}

fn decode_batch(bytes: &[u8]) -> Result<SealedBatch, AuditError> {
    codec::decode::<SealedBatch>(bytes)
        .map_err(|e| AuditError::Storage(format!("a sealed batch does not decode: {e}")))
}

fn decode_record(seq: u64, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    codec::decode::<AuditRecord>(bytes).map_err(|e| AuditError::Bad {
        seq,
        problem: format!("does not decode: {e}"),
    })
}
