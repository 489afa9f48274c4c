//! The monitor against the offline pipeline, its rules, and its audit trail under tampering.

use std::collections::BTreeSet;

use medfl_accesslog::consent::PseudonymKey;
use medfl_accesslog::{AccessEvent, StaffRole, extract};
use medfl_ledger::tx::AuditAnchor;
use medfl_model::modelfile::ModelFile;
use medfl_model::standardize::Standardizer;
use medfl_model::train::{score, training_device};
use medfl_model::{Autoencoder, AutoencoderConfig};
use medfl_monitor::audit::{AuditError, RecordBody, ReviewAction};
use medfl_monitor::decide::Consent;
use medfl_monitor::{AccessRequest, AuditLog, Monitor, Policy, Scorer, Verdict};

/// The first `n` events of a small simulated hospital's log.
fn events(n: usize) -> Vec<AccessEvent> {
    let mut sc =
        medfl_simulations::scenario::Scenario::from_toml(medfl_simulations::scenario::DEFAULT_TOML)
            .unwrap();
    sc.hospitals.truncate(1);
    sc.days = 7;
    let (events, _) = medfl_simulations::generate_hospital(&sc, 0).unwrap();
    events.into_iter().take(n).collect()
}

/// An untrained model over the access features, its threshold at `threshold`.
fn model(threshold: f32) -> (ModelFile, String) {
    let config = AutoencoderConfig::for_inputs(medfl_accesslog::N_FEATURES);
    let net = Autoencoder::new(config, 11, &training_device()).unwrap();
    let file = ModelFile {
        config,
        standardizer: Standardizer::identity(config.inputs),
        threshold,
        params: net.to_flat().unwrap(),
    };
    let hash = file.hash().unwrap();
    (file, hash)
}

#[test]
fn live_scores_equal_the_offline_scores_of_the_same_stream_bit_for_bit() {
    let events = events(1500);
    let (file, hash) = model(f32::MAX);
    // Offline: the whole log's features, scored as `medfl eval` scores them.
    let matrix = extract(&events);
    let device = training_device();
    let net = Autoencoder::new(file.config, 0, &device)
        .unwrap()
        .load_flat(file.config, &file.params)
        .unwrap();
    let offline = score(&net, &matrix.data, matrix.n_cols, &device).unwrap();
    // Live: one request at a time.
    let mut m = Monitor::new(Policy::default());
    m.swap_model(Scorer::new(file, hash.clone()).unwrap());
    let policy = medfl_model::policy::AlertPolicy::RoleNeeds;
    let mut by_policy = 0;
    for (i, e) in events.iter().enumerate() {
        let d = m.decide(&AccessRequest::from_event(e), e.time_ms).unwrap();
        assert_eq!(d.model.as_deref(), Some(hash.as_str()));
        // The role policy alerts on the rows the offline policy flags, and only those.
        let flagged = policy.flags(matrix.row(i));
        by_policy += usize::from(flagged);
        assert_eq!(
            d.reasons.iter().any(|r| r.starts_with("role policy")),
            flagged,
            "event {i}: {d:?}"
        );
        let live = d.score.unwrap();
        assert_eq!(
            live.to_bits(),
            offline[i].to_bits(),
            "event {i}: {live} vs {}",
            offline[i]
        );
    }
    assert!(
        by_policy > 0,
        "no access the role never needs in the stream"
    );
}

/// Deciding a group at once (one pass through the network) gives the decisions, scores to the
/// bit, of deciding one by one; a malformed request in the group changes nothing for the others.
#[test]
fn a_group_is_decided_as_its_requests_one_by_one() {
    let events = events(600);
    let (file, hash) = model(0.05);
    let mut one = Monitor::new(Policy::default());
    one.swap_model(Scorer::new(file.clone(), hash.clone()).unwrap());
    let mut group = Monitor::new(Policy::default());
    group.swap_model(Scorer::new(file, hash).unwrap());
    let mut reqs: Vec<AccessRequest> = events.iter().map(AccessRequest::from_event).collect();
    reqs[7].patient.clear();
    let now = events.last().unwrap().time_ms;
    let mut singles = Vec::new();
    for r in &reqs {
        singles.push(one.decide(r, now).ok());
    }
    let mut grouped = Vec::new();
    for chunk in reqs.chunks(97) {
        grouped.extend(group.decide_all(chunk, now).into_iter().map(Result::ok));
    }
    assert!(singles[7].is_none() && grouped[7].is_none());
    for (i, (a, b)) in singles.iter().zip(&grouped).enumerate() {
        let (a, b) = (
            a.as_ref()
                .map(|d| (d.verdict, d.score.map(f32::to_bits), &d.reasons)),
            b.as_ref()
                .map(|d| (d.verdict, d.score.map(f32::to_bits), &d.reasons)),
        );
        assert_eq!(a, b, "request {i}");
    }
    assert_eq!(one.blocks(), group.blocks());
}

fn request(user: &str, patient: &str, role: StaffRole, time_ms: u64) -> AccessRequest {
    let mut e = events(1).remove(0);
    (e.user, e.patient, e.role, e.time_ms) = (user.into(), patient.into(), role, time_ms);
    // A kind of record every role needs: the role policy stays out of these tests' way.
    e.resource = medfl_accesslog::Resource::Demographics;
    e.break_glass = false;
    AccessRequest::from_event(&e)
}

#[test]
fn contracts_and_break_the_glass_decide_whatever_the_score() {
    let t = 1_767_225_600_000;
    let key = PseudonymKey::derive(&[7; 32], "h").unwrap();
    let mut m = Monitor::new(Policy::default());
    // A model that scores every access far below its threshold: only the contracts deny.
    let (file, hash) = model(f32::MAX);
    m.swap_model(Scorer::new(file, hash).unwrap());
    // Without what the ledger says, research access is denied.
    let r = request("res-1", "p-1", StaffRole::Researcher, t);
    let d = m.decide(&r, t).unwrap();
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    m.set_consent(Consent {
        key: key.clone(),
        opted_out: BTreeSet::from([key.pseudonym("p-out")]),
        agreement_until: Some(t + 1_000),
        height: 3,
    });
    let d = m.decide(&r, t).unwrap();
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(d.consent_height, Some(3));
    // Declared research by a physician is research too.
    let mut declared = request("doc-1", "p-out", StaffRole::Physician, t);
    declared.purpose = Some(medfl_monitor::request::Purpose::Research);
    assert_eq!(m.decide(&declared, t).unwrap().verdict, Verdict::Deny);
    let out = request("res-1", "p-out", StaffRole::Researcher, t);
    let d = m.decide(&out, t).unwrap();
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(d.reasons[0].contains("opted out"), "{:?}", d.reasons);
    // After the agreement expires, research access is denied again, even dated before it.
    let late = request("res-1", "p-1", StaffRole::Researcher, t + 2_000);
    assert_eq!(m.decide(&late, t + 2_000).unwrap().verdict, Verdict::Deny);
    let backdated = request("res-1", "p-1", StaffRole::Researcher, t);
    assert_eq!(
        m.decide(&backdated, t + 2_000).unwrap().verdict,
        Verdict::Deny
    );
    // Contract denials never add up to a block.
    for _ in 0..10 {
        m.decide(&out, t).unwrap();
    }
    assert!(m.blocks().is_empty());
    // A nurse's access to the opted-out patient is care, not research.
    let care = request("n-1", "p-out", StaffRole::Nurse, t);
    assert_eq!(m.decide(&care, t).unwrap().verdict, Verdict::Allow);
    // Break-the-glass is let through and always reviewed.
    let mut glass = request("n-2", "p-9", StaffRole::Nurse, t);
    glass.break_glass = true;
    let d = m.decide(&glass, t).unwrap();
    assert_eq!(d.verdict, Verdict::Alert);
    // A malformed request changes nothing and is refused.
    let mut bad = request("n-3", "p-9", StaffRole::Nurse, t);
    bad.patient.clear();
    assert!(m.decide(&bad, t).is_err());
}

/// A kind of record the role never needs is alerted at any score, and only that: the same
/// clerk reading the patient's bill is let through, and policy alerts add up to no block.
#[test]
fn the_role_policy_alerts_a_record_the_role_never_needs_whatever_the_score() {
    use medfl_accesslog::Resource;
    let t = 1_767_225_600_000;
    let mut m = Monitor::new(Policy::default());
    let (file, hash) = model(f32::MAX);
    m.swap_model(Scorer::new(file, hash).unwrap());
    let mut note = request("clerk-1", "p-1", StaffRole::Billing, t);
    note.resource = Resource::ClinicalNote;
    let mut bill = note.clone();
    bill.resource = Resource::Billing;
    assert_eq!(m.decide(&bill, t).unwrap().verdict, Verdict::Allow);
    for i in 0..10 {
        let d = m.decide(&note, t + i).unwrap();
        assert_eq!(d.verdict, Verdict::Alert, "{d:?}");
        assert_eq!(
            d.reasons,
            ["role policy: the billing role does not need clinical_note records"]
        );
        assert!(d.score.is_some_and(|s| s < f32::MAX) && !d.blocks_user);
    }
    assert!(m.blocks().is_empty());
    // A physician reading the same note is care.
    let mut doc = note.clone();
    (doc.user, doc.role) = ("doc-1".into(), StaffRole::Physician);
    assert_eq!(m.decide(&doc, t).unwrap().verdict, Verdict::Allow);
}

/// Claiming the researcher role, or declaring research, never widens what a role may read
/// unalerted: the directory's role is held to its own needs and research to research's.
#[test]
fn a_claimed_researcher_role_or_research_purpose_does_not_escape_the_role_policy() {
    use medfl_accesslog::Resource;
    use medfl_accesslog::context::Context;
    use medfl_monitor::request::Purpose;
    let t = 1_767_225_600_000;
    let key = PseudonymKey::derive(&[7; 32], "h").unwrap();
    let mut m = Monitor::new(Policy::default());
    let (file, hash) = model(f32::MAX);
    m.swap_model(Scorer::new(file, hash).unwrap());
    m.set_consent(Consent {
        key,
        opted_out: BTreeSet::new(),
        agreement_until: Some(t + 60_000),
        height: 1,
    });
    let mut ctx = Context::new();
    ctx.add_staff("clerk-1", StaffRole::Billing, "billing");
    ctx.add_staff("doc-1", StaffRole::Physician, "icu");
    // A billing clerk whose request says researcher, reading medication (which research needs
    // and billing does not): the clerk's role stands, so the policy alerts; research rules hold.
    let mut claimed = request("clerk-1", "p-1", StaffRole::Researcher, t);
    claimed.resource = Resource::Medication;
    medfl_monitor::intake::apply_context(&mut claimed, &ctx);
    assert_eq!(
        (claimed.role, claimed.purpose),
        (StaffRole::Billing, Some(Purpose::Research))
    );
    let d = m.decide(&claimed, t).unwrap();
    assert_eq!(d.verdict, Verdict::Alert, "{d:?}");
    assert_eq!(
        d.reasons,
        ["role policy: the billing role does not need medication records"]
    );
    // Research by a physician is held to research's needs: structured data, not notes.
    let mut declared = request("doc-1", "p-1", StaffRole::Physician, t);
    declared.resource = Resource::ClinicalNote;
    declared.purpose = Some(Purpose::Research);
    medfl_monitor::intake::apply_context(&mut declared, &ctx);
    let d = m.decide(&declared, t + 1).unwrap();
    assert_eq!(
        d.reasons,
        ["role policy: research does not need clinical_note records"]
    );
    assert!(d.by_role_policy() && !d.blocks_user);
    // The same note read for care is care.
    declared.purpose = Some(Purpose::Treatment);
    assert_eq!(m.decide(&declared, t + 2).unwrap().verdict, Verdict::Allow);
}

#[test]
fn a_high_score_blocks_the_user_until_an_officer_lifts_it() {
    let events = events(50);
    // Every score is far above a tiny threshold: at least 4 times it blocks.
    let (file, hash) = model(f32::MIN_POSITIVE);
    let mut m = Monitor::new(Policy::default());
    m.swap_model(Scorer::new(file, hash).unwrap());
    let e = &events[0];
    let d = m.decide(&AccessRequest::from_event(e), e.time_ms).unwrap();
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert!(d.blocks_user);
    assert!(
        !d.top_features.is_empty() && !d.explanation.is_empty(),
        "{d:?}"
    );
    assert!(m.blocks().contains_key(&e.user));
    // The same user's next access is denied as blocked, whatever it is.
    let d = m.decide(&AccessRequest::from_event(e), e.time_ms).unwrap();
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("blocked pending review")),
        "{d:?}"
    );
    assert!(m.unblock(&e.user));
    assert!(!m.unblock(&e.user));
    // A threshold that is not positive is refused: it would block everyone.
    let (file, hash) = model(0.0);
    assert!(Scorer::new(file, hash).is_err());
}

/// A block recorded in the log stands again after a restart (the monitor replays its log).
#[test]
fn a_block_survives_a_restart_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(5);
    let (file, hash) = model(f32::MIN_POSITIVE);
    let mut log = AuditLog::open(&dir.path().join("audit.redb")).unwrap();
    let mut m = Monitor::new(Policy::default());
    m.swap_model(Scorer::new(file.clone(), hash.clone()).unwrap());
    let e = &events[0];
    let request = AccessRequest::from_event(e);
    let decision = m.decide(&request, e.time_ms).unwrap();
    assert!(decision.blocks_user);
    log.append(
        e.time_ms,
        RecordBody::Decision {
            request: Box::new(request),
            decision: Box::new(decision),
        },
    )
    .unwrap();
    drop(log);
    let log = AuditLog::open(&dir.path().join("audit.redb")).unwrap();
    let mut restarted = Monitor::new(Policy::default());
    for r in log.records(0, 100).unwrap() {
        if let RecordBody::Decision { request, decision } = &r.body {
            restarted.replay(request, decision, r.at_ms);
        }
    }
    assert!(restarted.blocks().contains_key(&e.user));
    restarted.swap_model(Scorer::new(file, hash).unwrap());
    let mut later = AccessRequest::from_event(&events[1]);
    later.user = e.user.clone();
    let d = restarted.decide(&later, later.time_ms).unwrap();
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("blocked pending review")),
        "{d:?}"
    );
}

/// The block a decision raised is found in its sealed batch and anchored by the record's hash,
/// a leaf of the batch's Merkle root; the denials that follow it (the block standing) are not.
#[test]
fn a_raised_block_is_anchored_by_its_records_hash() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(6);
    let (file, hash) = model(f32::MIN_POSITIVE);
    let mut log = AuditLog::open(&dir.path().join("audit.redb")).unwrap();
    log_decisions(&mut log, &events[..2]);
    let mut m = Monitor::new(Policy::default());
    m.swap_model(Scorer::new(file, hash.clone()).unwrap());
    // The same user four times: the first blocks; the rest are denied as blocked, and still
    // say they would block (the score stays high), which must not raise a block again.
    let mut would_block = Vec::new();
    for e in &events[2..] {
        let mut request = AccessRequest::from_event(e);
        request.user = events[2].user.clone();
        let decision = m.decide(&request, e.time_ms).unwrap();
        let blocks = decision.blocks_user;
        let r = append_decision(&mut log, e.time_ms, request, decision);
        if blocks {
            would_block.push(r);
        }
    }
    assert_eq!(would_block.len(), 4, "the tiny threshold blocks every time");
    let blocking = would_block[0].clone();
    let batch = log.seal().unwrap().unwrap();
    let raised: Vec<_> = (batch.first..=batch.last)
        .filter_map(|seq| log.raised_block(seq).unwrap())
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let b = &raised[0];
    assert_eq!(b.seq, blocking.seq);
    assert_eq!(b.at_ms, blocking.at_ms);
    assert_eq!(b.model.as_deref(), Some(hash.as_str()));
    // The anchored hash is the record's own: the next record links to it.
    let next = log.records(blocking.seq + 1, 1).unwrap();
    assert_eq!(next[0].prev, b.record);
    let anchor = b.anchor(None);
    assert_eq!(anchor.alert, b.record);
    assert_eq!(anchor.severity, medfl_ledger::tx::Severity::Critical);
    assert_eq!(anchor.raised_at.0, blocking.at_ms);
    // Checked against the log: covered once anchored; an anchor for another record, or one
    // that moves the block's time, matches nothing.
    let report = log.check_alert_anchors(&[]).unwrap();
    assert_eq!((report.raised, report.anchored), (1, 0));
    let report = log
        .check_alert_anchors(std::slice::from_ref(&anchor))
        .unwrap();
    assert_eq!((report.raised, report.anchored), (1, 1));
    // The same anchor twice counts once; one made by hand (another severity) is counted
    // apart, not matched.
    let mut by_hand = anchor.clone();
    by_hand.severity = medfl_ledger::tx::Severity::High;
    by_hand.alert = medfl_ledger::Hash::of_bytes(b"an alert from elsewhere");
    let report = log
        .check_alert_anchors(&[anchor.clone(), anchor.clone(), by_hand])
        .unwrap();
    assert_eq!((report.raised, report.anchored, report.other), (1, 1, 1));
    let mut moved = anchor.clone();
    moved.raised_at.0 -= 60_000;
    let mut other = anchor.clone();
    other.alert = log.records(1, 1).unwrap()[0].prev;
    for false_anchor in [moved, other] {
        let e = log.check_alert_anchors(&[anchor.clone(), false_anchor]);
        assert!(
            matches!(
                e,
                Err(medfl_monitor::audit::AuditError::UnmatchedAlert { .. })
            ),
            "{e:?}"
        );
    }
}

fn log_with(dir: &std::path::Path, n: u64) -> AuditLog {
    let mut log = AuditLog::open(&dir.join("audit.redb")).unwrap();
    log_decisions(&mut log, &events(n as usize));
    log
}

/// Decides each event with a fresh history and appends it; checks the positions follow on.
fn log_decisions(log: &mut AuditLog, events: &[AccessEvent]) {
    let mut m = Monitor::new(Policy::default());
    for e in events {
        let request = AccessRequest::from_event(e);
        let decision = m.decide(&request, e.time_ms).unwrap();
        let before = log.len();
        let r = append_decision(log, e.time_ms, request, decision);
        assert_eq!(r.seq, before);
    }
}

/// Appends one decision record at `at_ms`.
fn append_decision(
    log: &mut AuditLog,
    at_ms: u64,
    request: AccessRequest,
    decision: medfl_monitor::Decision,
) -> medfl_monitor::AuditRecord {
    log.append(
        at_ms,
        RecordBody::Decision {
            request: Box::new(request),
            decision: Box::new(decision),
        },
    )
    .unwrap()
}

#[test]
fn the_log_verifies_against_its_anchors_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 30);
    let b0 = log.seal().unwrap().unwrap();
    assert_eq!((b0.first, b0.last), (0, 29));
    assert!(log.seal().unwrap().is_none());
    log.append(
        u64::MAX / 2,
        RecordBody::Review {
            officer: "officer-1".into(),
            action: ReviewAction::Unblock { user: "u".into() },
            note: "spoke to them".into(),
        },
    )
    .unwrap();
    let anchors: Vec<AuditAnchor> = vec![b0.anchor()];
    drop(log);
    let log = AuditLog::open(&dir.path().join("audit.redb")).unwrap();
    assert_eq!(log.len(), 31);
    let report = log.verify(&anchors).unwrap();
    assert_eq!(
        (
            report.records,
            report.batches,
            report.anchored,
            report.unsealed
        ),
        (31, 1, 1, 1)
    );
    // The patient-access report lists exactly the decisions on that patient.
    let patient = events(30)[3].patient.clone();
    let expected = events(30).iter().filter(|e| e.patient == patient).count();
    let history = log.history(&patient).unwrap();
    assert_eq!(history.len(), expected);
    // The console's bounded reads agree with it: the report's tail, a user's latest.
    let reader = log.reader();
    let (total, tail) = reader.history_tail(&patient, 1).unwrap();
    assert_eq!((total, tail.len()), (expected, 1));
    assert_eq!(tail[0], *history.last().unwrap());
    let user = events(30)[5].user.clone();
    let by_user: Vec<u64> = log
        .records(0, 100)
        .unwrap()
        .iter()
        .filter(|r| r.body.decision().is_some_and(|(q, _)| q.user == user))
        .map(|r| r.seq)
        .rev()
        .collect();
    let latest: Vec<u64> = reader
        .recent_of_user(&user, 2, 1000)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(latest, by_user[..by_user.len().min(2)]);
    // The window bounds the look back: the last record is the review, so a window of one
    // finds nothing.
    assert!(reader.recent_of_user(&user, 2, 1).unwrap().is_empty());
    // An anchor for records the log does not hold: records were lost.
    let mut ghost = b0.anchor();
    ghost.count += 1;
    assert!(matches!(
        log.verify(&[b0.anchor(), ghost]),
        Err(AuditError::Truncated { .. })
    ));
}

/// Rewrites record `seq` of the log file in place with `edit` applied (an attacker with the
/// disk), keeping or re-chaining the records after it.
fn tamper(
    path: &std::path::Path,
    seq: u64,
    rechain: bool,
    edit: impl Fn(&mut medfl_monitor::AuditRecord),
) {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
    let db = redb::Database::open(path).unwrap();
    let mut all: Vec<(u64, Vec<u8>)> = {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(RECORDS).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect()
    };
    let mut prev = None;
    for (k, bytes) in all.iter_mut() {
        if *k < seq {
            continue;
        }
        let mut r: medfl_monitor::AuditRecord = medfl_ledger::codec::decode(bytes).unwrap();
        if *k == seq {
            edit(&mut r);
        } else if !rechain {
            break;
        }
        if let Some(p) = prev {
            r.prev = p;
        }
        *bytes = medfl_ledger::codec::encode(&r).unwrap();
        prev = Some(medfl_ledger::Hash::of_bytes(bytes));
    }
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(RECORDS).unwrap();
        for (k, v) in &all {
            t.insert(*k, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn hide_the_access(r: &mut medfl_monitor::AuditRecord) {
    if let RecordBody::Decision { request, .. } = &mut r.body {
        request.user = "someone-else".into();
    }
}

#[test]
fn an_altered_record_is_named_and_a_rewritten_batch_fails_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.redb");
    let mut log = log_with(dir.path(), 40);
    let b0 = log.seal().unwrap().unwrap();
    drop(log);
    let anchors = vec![b0.anchor()];
    // Changed in place: the next record's link names it.
    tamper(&path, 12, false, hide_the_access);
    let log = AuditLog::open(&path).unwrap();
    match log.verify(&anchors) {
        Err(AuditError::Bad { seq, problem }) => assert_eq!(seq, 12, "{problem}"),
        other => panic!("{other:?}"),
    }
    drop(log);
    // Rewritten with the whole chain after it and sealed again: the chain and the local seal
    // hold; the root the ledger anchors does not.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.redb");
    let mut log = log_with(dir.path(), 40);
    let b0 = log.seal().unwrap().unwrap();
    drop(log);
    tamper(&path, 12, true, hide_the_access);
    reseal(&path, |_| {});
    let log = AuditLog::open(&path).unwrap();
    assert!(
        log.verify(&[]).is_ok(),
        "without the ledger the forgery is consistent"
    );
    match log.verify(&[b0.anchor()]) {
        Err(AuditError::Bad { seq, problem }) => {
            assert_eq!(seq, 0, "{problem}");
            assert!(problem.contains("the ledger anchors"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // A forged batch index does not dodge the check.
    drop(log);
    reseal(&path, |b| b.index = 1000);
    let log = AuditLog::open(&path).unwrap();
    assert!(log.verify(&[b0.anchor()]).is_err());
}

/// A sealed batch whose anchor never reached the ledger is reported, not blamed; an anchor
/// for records the log no longer holds is.
#[test]
fn a_missing_anchor_is_not_tampering_and_lost_records_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 20);
    let b0 = log.seal().unwrap().unwrap();
    log_decisions(&mut log, &events(25)[20..]);
    let b1 = log.seal().unwrap().unwrap();
    // Only the second batch's anchor made it to the ledger.
    let report = log.verify(&[b1.anchor()]).unwrap();
    assert_eq!((report.batches, report.anchored), (2, 1));
    // An anchor for a batch of records the log does not hold.
    let mut ghost = b0.anchor();
    ghost.count = 7;
    assert!(matches!(
        log.verify(&[ghost]),
        Err(AuditError::Truncated { .. })
    ));
}

/// Rewrites the sealed batches from the records as they now are, with `edit` applied to each
/// (an attacker covering a rewrite).
fn reseal(path: &std::path::Path, edit: impl Fn(&mut medfl_monitor::audit::SealedBatch)) {
    use redb::{ReadableTable, TableDefinition};
    const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
    const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let records = txn.open_table(RECORDS).unwrap();
        let mut batches = txn.open_table(BATCHES).unwrap();
        let all: Vec<(u64, Vec<u8>)> = batches
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect();
        for (k, v) in all {
            let mut b: medfl_monitor::audit::SealedBatch = medfl_ledger::codec::decode(&v).unwrap();
            let leaves: Vec<medfl_ledger::Hash> = (b.first..=b.last)
                .map(|i| medfl_ledger::Hash::of_bytes(records.get(i).unwrap().unwrap().value()))
                .collect();
            b.root = medfl_ledger::merkle::root(&leaves);
            edit(&mut b);
            batches
                .insert(k, medfl_ledger::codec::encode(&b).unwrap().as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

/// A delivery its sender names (a FHIR `AuditEvent.id`, an `Idempotency-Key`) is found again
/// by the same id and the same access, across a reopening; another access under the same id
/// is not it (an id sent first cannot stand in for the real access); and the index forgets a
/// delivery once no retry of it could be accepted (over a day old by the log's clock).
#[test]
fn a_named_delivery_is_found_again_only_as_the_same_access_and_for_a_day() {
    use medfl_monitor::DeliveryId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.redb");
    let e = events(2);
    let (first, other) = (
        AccessRequest::from_event(&e[0]),
        AccessRequest::from_event(&e[1]),
    );
    let id = DeliveryId::new("8f2b7c1e-0d4a-4e59-9a3b-2c1d5e6f7a80").unwrap();
    let mut m = Monitor::new(Policy::default());
    let decision = m.decide(&first, first.time_ms).unwrap();
    let seq = {
        let mut log = AuditLog::open(&path).unwrap();
        append_decision(&mut log, first.time_ms, other.clone(), decision.clone());
        assert_eq!(log.delivered(&id, &first).unwrap(), None);
        let r = log
            .append(
                first.time_ms,
                RecordBody::Delivered {
                    id: id.clone(),
                    request: Box::new(first.clone()),
                    decision: Box::new(decision.clone()),
                },
            )
            .unwrap();
        assert_eq!(
            r.body.decision(),
            Some((&first, &decision)),
            "a delivery is a decision"
        );
        r.seq
    };
    let mut log = AuditLog::open(&path).unwrap();
    assert_eq!(
        log.delivered(&id, &first).unwrap(),
        Some((seq, decision.clone())),
        "found again after reopening"
    );
    assert_eq!(log.delivered(&id, &other).unwrap(), None, "another access");
    let mut moved = first.clone();
    moved.time_ms += 1;
    assert_eq!(log.delivered(&id, &moved).unwrap(), None, "another time");
    let other_id = DeliveryId::new("another").unwrap();
    assert_eq!(log.delivered(&other_id, &first).unwrap(), None);
    // Nor is the same access with a milder flag (an id sent first cannot shadow it).
    let mut milder = first.clone();
    milder.vip = !milder.vip;
    assert_eq!(log.delivered(&id, &milder).unwrap(), None);
    assert_eq!(log.verify(&[]).unwrap().records, 2);
    // A day and more later by the log's clock, the delivery is forgotten.
    let later = first.time_ms + 25 * 3_600_000;
    append_decision(&mut log, later, other, decision);
    assert_eq!(log.delivered(&id, &first).unwrap(), None);
    assert!(DeliveryId::new("").is_err());
    assert!(DeliveryId::new("has space").is_err());
    assert!(DeliveryId::new(&"x".repeat(257)).is_err());
}
