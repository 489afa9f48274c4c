//! Every contract rule: a transaction that breaks it is refused with the error naming that rule,
//! and the state is exactly what it was before.

use ed25519_dalek::SigningKey;
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{
    AlertAnchor, AuditAnchor, ConsentChoice, DataUseAgreement, Pseudonym, Severity,
};
use medfl_ledger::{
    BlockError, ChainState, ContractError, Hash, Member, PrivacyBudget, Role, Timestamp,
    Transaction, TxBody,
};

fn t(hours: u64) -> Timestamp {
    Timestamp(T0.0 + hours * HOUR)
}

/// A fixture with 3 hospitals (quorum 2) and its state after genesis.
fn setup() -> (Fixture, ChainState) {
    let f = Fixture::new(7, 3, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    (f, state)
}

fn apply(
    f: &Fixture,
    state: &mut ChainState,
    txs: Vec<Transaction>,
    time: Timestamp,
) -> Result<(), BlockError> {
    let block = f.block(state, txs, time);
    state.apply_block(&block)
}

/// Applies `tx` expecting a contract error; checks the state did not change.
fn refused(f: &Fixture, state: &mut ChainState, tx: Transaction, time: Timestamp) -> ContractError {
    let before = state.clone();
    let err = apply(f, state, vec![tx], time).expect_err("the transaction should be refused");
    assert_eq!(*state, before, "a refused transaction changed the state");
    match err {
        BlockError::Contract { error, .. } => error,
        other => panic!("expected a contract error, got {other}"),
    }
}

fn h(i: usize) -> medfl_ledger::MemberId {
    Fixture::id(&format!("hospital-{i}"))
}

fn new_member(f: &Fixture, id: &str, role: Role, seed: u8) -> (Member, SigningKey) {
    let _ = f;
    let key = SigningKey::from_bytes(&[seed; 32]);
    let m = Member {
        id: Fixture::id(id),
        role,
        public_key: key.verifying_key().into(),
        address: String::new(),
    };
    (m, key)
}

#[test]
fn signer_rules() {
    let (f, mut s) = setup();
    let coord = f.coordinator().0.clone();
    // signer-is-member
    let (stranger, key) = new_member(&f, "stranger", Role::Hospital, 9);
    let tx = f.tx_with_key(
        &stranger.id,
        &key,
        t(1),
        TxBody::AcceptAgreement {
            agreement: Fixture::dua(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::UnknownSigner(_)
    ));
    // signer-role: a hospital cannot add members, an auditor cannot record consent
    let tx = f.tx(&h(0), t(1), TxBody::AddMember(stranger.clone()));
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::WrongRole { .. }
    ));
    let tx = f.tx(
        &Fixture::id("auditor"),
        t(1),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::WrongRole { .. }
    ));
    // signature: signed with another member's key
    let tx = f.tx_with_key(
        &h(0),
        f.key(&h(1)),
        t(1),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::BadSignature(_)
    ));
    // issued-before-block
    let tx = f.tx(
        &h(0),
        t(5),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::IssuedInFuture { .. }
    ));
    // no-replay: the same signed transaction twice
    let tx = f.tx(
        &h(0),
        t(1),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
    );
    apply(&f, &mut s, vec![tx.clone()], t(1)).unwrap();
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::Replayed(_)
    ));
    // signer-active: a revoked member can do nothing, not even leave again
    let revoke = f.tx(
        &coord,
        t(2),
        TxBody::RevokeMember {
            member: h(2),
            reason: "left".into(),
        },
    );
    apply(&f, &mut s, vec![revoke], t(2)).unwrap();
    for body in [
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
        TxBody::RevokeMember {
            member: h(2),
            reason: String::new(),
        },
    ] {
        let tx = f.tx(&h(2), t(3), body);
        assert!(matches!(
            refused(&f, &mut s, tx, t(3)),
            ContractError::SignerRevoked(_)
        ));
    }
}

#[test]
fn membership_rules() {
    let (f, mut s) = setup();
    let coord = f.coordinator().0.clone();
    let (m, _) = new_member(&f, "hospital-new", Role::Hospital, 11);
    apply(
        &f,
        &mut s,
        vec![f.tx(&coord, t(1), TxBody::AddMember(m.clone()))],
        t(1),
    )
    .unwrap();
    // unique-member
    let (mut again, _) = new_member(&f, "hospital-new", Role::Hospital, 12);
    let tx = f.tx(&coord, t(2), TxBody::AddMember(again.clone()));
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::MemberExists(_)
    ));
    // unique-key
    again.id = Fixture::id("other-name");
    again.public_key = m.public_key;
    let tx = f.tx(&coord, t(2), TxBody::AddMember(again.clone()));
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::KeyInUse(_)
    ));
    // well-formed: a bad address
    let (mut bad, _) = new_member(&f, "badaddr", Role::Hospital, 13);
    bad.address = "not a multiaddr".into();
    let tx = f.tx(&coord, t(2), TxBody::AddMember(bad));
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::Malformed(_)
    ));
    // member-exists
    let tx = f.tx(
        &coord,
        t(2),
        TxBody::RevokeMember {
            member: Fixture::id("nobody"),
            reason: String::new(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::UnknownMember(_)
    ));
    // keeps-a-coordinator
    let tx = f.tx(
        &coord,
        t(2),
        TxBody::RevokeMember {
            member: coord.clone(),
            reason: String::new(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::LastCoordinator(_)
    ));
    // member-active: revoking twice
    apply(
        &f,
        &mut s,
        vec![f.tx(
            &coord,
            t(3),
            TxBody::RevokeMember {
                member: m.id.clone(),
                reason: String::new(),
            },
        )],
        t(3),
    )
    .unwrap();
    let tx = f.tx(
        &coord,
        t(4),
        TxBody::RevokeMember {
            member: m.id.clone(),
            reason: "again".into(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(4)),
        ContractError::MemberRevoked(_)
    ));
    // A revoked id is never reused.
    let (reuse, _) = new_member(&f, "hospital-new", Role::Hospital, 14);
    let tx = f.tx(&coord, t(4), TxBody::AddMember(reuse));
    assert!(matches!(
        refused(&f, &mut s, tx, t(4)),
        ContractError::MemberExists(_)
    ));
}

fn agreement(
    id: &str,
    members: Vec<medfl_ledger::MemberId>,
    expires: Timestamp,
) -> DataUseAgreement {
    DataUseAgreement {
        id: medfl_ledger::AgreementId::new(id).unwrap(),
        purpose: "a second study".into(),
        members,
        expires_at: expires,
        budget: PrivacyBudget {
            epsilon: 4.0,
            delta: 1e-6,
        },
        floors: Fixture::floors(),
        strategy: Default::default(),
    }
}

#[test]
fn agreement_rules() {
    let (f, mut s) = setup();
    let coord = f.coordinator().0.clone();
    // unique-agreement
    let tx = f.tx(
        &coord,
        t(1),
        TxBody::RegisterAgreement(agreement("dua", vec![h(0)], t(100))),
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::AgreementExists(_)
    ));
    // member-is-hospital
    let tx = f.tx(
        &coord,
        t(1),
        TxBody::RegisterAgreement(agreement("dua2", vec![Fixture::id("auditor")], t(100))),
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::NotAHospital(_)
    ));
    // agreement-unexpired at registration
    let tx = f.tx(
        &coord,
        t(1),
        TxBody::RegisterAgreement(agreement("dua2", vec![h(0)], t(1))),
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::AgreementExpired { .. }
    ));
    // well-formed: a bad budget
    let mut a = agreement("dua2", vec![h(0)], t(100));
    a.budget.epsilon = f64::NAN;
    let tx = f.tx(&coord, t(1), TxBody::RegisterAgreement(a));
    assert!(matches!(
        refused(&f, &mut s, tx, t(1)),
        ContractError::Malformed(_)
    ));

    apply(
        &f,
        &mut s,
        vec![f.tx(
            &coord,
            t(1),
            TxBody::RegisterAgreement(agreement("dua2", vec![h(0), h(1)], t(100))),
        )],
        t(1),
    )
    .unwrap();
    let dua2 = medfl_ledger::AgreementId::new("dua2").unwrap();
    // agreement-exists
    let tx = f.tx(
        &h(0),
        t(2),
        TxBody::AcceptAgreement {
            agreement: medfl_ledger::AgreementId::new("nope").unwrap(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::UnknownAgreement(_)
    ));
    // agreement-lists-member
    let tx = f.tx(
        &h(2),
        t(2),
        TxBody::AcceptAgreement {
            agreement: dua2.clone(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(2)),
        ContractError::NotInAgreement { .. }
    ));
    // agreement-accepted: a round under dua2 with a member that has not accepted
    apply(
        &f,
        &mut s,
        vec![f.tx(
            &h(0),
            t(2),
            TxBody::AcceptAgreement {
                agreement: dua2.clone(),
            },
        )],
        t(2),
    )
    .unwrap();
    let mut r = f.round(1, Hash::ZERO, &[h(0), h(1)], 1.0);
    r.agreement = dua2.clone();
    r.dp.delta = 1e-6;
    f.set_epsilons(&s, &mut r);
    let tx = f.tx(&coord, t(3), TxBody::AnchorRound(r));
    assert!(matches!(
        refused(&f, &mut s, tx, t(3)),
        ContractError::NotAccepted { .. }
    ));
    // accept-once
    let tx = f.tx(
        &h(0),
        t(3),
        TxBody::AcceptAgreement {
            agreement: dua2.clone(),
        },
    );
    assert!(matches!(
        refused(&f, &mut s, tx, t(3)),
        ContractError::AlreadyAccepted { .. }
    ));
    // agreement-unexpired: accepting after expiry
    let tx = f.tx(&h(1), t(100), TxBody::AcceptAgreement { agreement: dua2 });
    assert!(matches!(
        refused(&f, &mut s, tx, t(100)),
        ContractError::AgreementExpired { .. }
    ));
}

#[test]
fn consent_rules() {
    let (f, mut s) = setup();
    let subject = Pseudonym(Hash::tagged(b"salted-patient", &[b"42"]));
    let consent = |at, choice| f.tx(&h(0), t(at), TxBody::Consent { subject, choice });
    // Opting in a subject never opted out is recorded (with its time) and changes nothing else.
    let changed = s.consent_changed_at();
    apply(&f, &mut s, vec![consent(1, ConsentChoice::OptIn)], t(1)).unwrap();
    assert!(!s.is_opted_out(&h(0), &subject));
    assert_eq!(s.consent_changed_at(), changed, "no choice changed");
    apply(&f, &mut s, vec![consent(2, ConsentChoice::OptOut)], t(2)).unwrap();
    assert!(s.is_opted_out(&h(0), &subject));
    assert!(!s.is_opted_out(&h(1), &subject), "consent is per hospital");
    let changed = s.consent_changed_at();
    // The same choice again, issued later: recorded, no change.
    apply(&f, &mut s, vec![consent(3, ConsentChoice::OptOut)], t(3)).unwrap();
    assert_eq!(s.consent_changed_at(), changed);
    // consent-order: issued no later than the recorded choice.
    assert!(matches!(
        refused(&f, &mut s, consent(3, ConsentChoice::OptIn), t(4)),
        ContractError::ConsentOutOfOrder { .. }
    ));
    apply(&f, &mut s, vec![consent(4, ConsentChoice::OptIn)], t(4)).unwrap();
    assert!(!s.is_opted_out(&h(0), &subject));
}

#[test]
fn round_rules() {
    let (f, mut s) = setup();
    let coord = f.coordinator().0.clone();
    let all = [h(0), h(1), h(2)];
    let anchor = |r| f.tx(&coord, t(2), TxBody::AnchorRound(r));
    let reason = |s: &mut ChainState, r| refused(&f, s, anchor(r), t(2));
    // Honest epsilons on the current state (what the contract recomputes).
    let on = |s: &ChainState, round, previous, who: &[medfl_ledger::MemberId]| {
        f.round_on(s, round, previous, who)
    };

    // round-sequence: the first round is 1
    assert!(matches!(
        {
            let r = on(&s, 2, Hash::ZERO, &all);
            reason(&mut s, r)
        },
        ContractError::RoundOutOfOrder {
            expected: 1,
            got: 2,
            ..
        }
    ));
    // has-participants
    assert!(matches!(
        {
            let r = on(&s, 1, Hash::ZERO, &[]);
            reason(&mut s, r)
        },
        ContractError::NoParticipants
    ));
    // listed-once
    let mut r = on(&s, 1, Hash::ZERO, &all);
    r.dropped = vec![h(0)];
    assert!(matches!(reason(&mut s, r), ContractError::ListedTwice(_)));
    // member-is-hospital: the auditor cannot take part
    let mut r = on(&s, 1, Hash::ZERO, &all[..2]);
    r.participants
        .push((Fixture::id("auditor"), r.participants[0].1));
    assert!(matches!(reason(&mut s, r), ContractError::NotAHospital(_)));
    // within-budget (epsilon, delta)
    let mut r = on(&s, 1, Hash::ZERO, &all);
    r.dp.steps = 1_000_000;
    f.set_epsilons(&s, &mut r);
    assert!(matches!(
        reason(&mut s, r),
        ContractError::BudgetExceeded { .. }
    ));
    let mut r = on(&s, 1, Hash::ZERO, &all);
    r.dp.delta = 1e-3;
    f.endorse(&mut r, &all);
    assert!(matches!(
        reason(&mut s, r),
        ContractError::DeltaExceeded { .. }
    ));
    // well-formed: NaN epsilon, bad DP parameters
    assert!(matches!(
        reason(&mut s, f.round(1, Hash::ZERO, &all, f64::NAN)),
        ContractError::Malformed(_)
    ));
    let mut r = on(&s, 1, Hash::ZERO, &all);
    r.dp.sampling_rate = 0.0;
    assert!(matches!(reason(&mut s, r), ContractError::Malformed(_)));
    // endorser-participated
    let mut r = on(&s, 1, Hash::ZERO, &all[..2]);
    f.endorse(&mut r, &all);
    assert!(matches!(
        reason(&mut s, r),
        ContractError::EndorserNotParticipant(_)
    ));
    // quorum (2 of 3)
    let mut r = on(&s, 1, Hash::ZERO, &all);
    f.endorse(&mut r, &all[..1]);
    assert!(matches!(
        reason(&mut s, r),
        ContractError::QuorumNotReached { have: 1, need: 2 }
    ));
    // endorsement-signature: an endorsement over another model
    let mut r = on(&s, 1, Hash::ZERO, &all);
    r.model = Hash::tagged(b"swapped", &[]);
    assert!(matches!(
        reason(&mut s, r),
        ContractError::BadEndorsement(_)
    ));

    // A valid round 1, then rules that depend on history.
    let r1 = on(&s, 1, Hash::ZERO, &all);
    let m1 = r1.model;
    apply(&f, &mut s, vec![anchor(r1)], t(2)).unwrap();
    // model-chain
    assert!(matches!(
        {
            let r = on(&s, 2, Hash::ZERO, &all);
            reason(&mut s, r)
        },
        ContractError::PreviousModelMismatch { .. }
    ));
    // round-sequence: round 1 again
    assert!(matches!(
        {
            let r = on(&s, 1, m1, &all);
            reason(&mut s, r)
        },
        ContractError::RoundOutOfOrder { expected: 2, .. }
    ));
    // privacy-recomputed: round 1's epsilon again, as if round 2 cost nothing
    let mut r = on(&s, 2, m1, &all);
    let first = s.agreement(&Fixture::dua()).unwrap().spent[&h(0)];
    for (_, spend) in &mut r.participants {
        spend.epsilon_total = first;
    }
    f.endorse(&mut r, &all);
    assert!(matches!(
        reason(&mut s, r),
        ContractError::EpsilonMismatch { .. }
    ));
    // member-active: a revoked hospital cannot take part
    apply(
        &f,
        &mut s,
        vec![f.tx(
            &coord,
            t(2),
            TxBody::RevokeMember {
                member: h(2),
                reason: String::new(),
            },
        )],
        t(2),
    )
    .unwrap();
    assert!(matches!(
        {
            let r = on(&s, 2, m1, &all);
            reason(&mut s, r)
        },
        ContractError::MemberRevoked(_)
    ));
    let mut r2 = on(&s, 2, m1, &all[..2]);
    r2.dropped = vec![h(2)];
    // The dropped list is part of what the endorsers sign.
    f.endorse(&mut r2, &all[..2]);
    apply(&f, &mut s, vec![anchor(r2)], t(2)).unwrap();
    assert_eq!(s.agreement(&Fixture::dua()).unwrap().last_round, 2);
    // agreement-unexpired
    let r3 = on(
        &s,
        3,
        s.agreement(&Fixture::dua()).unwrap().last_model.unwrap(),
        &all[..2],
    );
    let late = t(366 * 24);
    assert!(matches!(
        refused(
            &f,
            &mut s,
            f.tx(&coord, late, TxBody::AnchorRound(r3)),
            late
        ),
        ContractError::AgreementExpired { .. }
    ));
}

#[test]
fn audit_and_alert_rules() {
    let (f, mut s) = setup();
    let audit = |first, last, count| {
        TxBody::AnchorAuditLog(AuditAnchor {
            merkle_root: Hash::ZERO,
            count,
            first_event_at: t(first),
            last_event_at: t(last),
        })
    };
    // well-formed: empty batch, reversed range, a range in the future
    for body in [audit(1, 2, 0), audit(2, 1, 5), audit(1, 9, 5)] {
        assert!(matches!(
            refused(&f, &mut s, f.tx(&h(0), t(3), body), t(3)),
            ContractError::Malformed(_)
        ));
    }
    apply(&f, &mut s, vec![f.tx(&h(0), t(3), audit(1, 2, 10))], t(3)).unwrap();
    // audit-sequence
    assert!(matches!(
        refused(&f, &mut s, f.tx(&h(0), t(4), audit(1, 3, 10)), t(4)),
        ContractError::AuditOverlap { .. }
    ));
    // ...per member: another hospital's batch may cover the same hours
    apply(&f, &mut s, vec![f.tx(&h(1), t(4), audit(1, 3, 10))], t(4)).unwrap();
    // model-anchored
    let alert = AlertAnchor {
        alert: Hash::ZERO,
        severity: Severity::High,
        raised_at: t(4),
        model: Some(Hash::tagged(b"never", &[])),
    };
    assert!(matches!(
        refused(
            &f,
            &mut s,
            f.tx(&h(0), t(4), TxBody::AnchorAlert(alert.clone())),
            t(4)
        ),
        ContractError::UnknownModel(_)
    ));
    apply(
        &f,
        &mut s,
        vec![f.tx(
            &h(0),
            t(4),
            TxBody::AnchorAlert(AlertAnchor {
                model: None,
                ..alert
            }),
        )],
        t(4),
    )
    .unwrap();
}

#[test]
fn a_block_is_all_or_nothing() {
    let (f, mut s) = setup();
    let before = s.clone();
    let ok = f.tx(
        &h(0),
        t(1),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
    );
    // The same hospital's choice for the same subject, issued at the same instant: out of order.
    let bad = f.tx(
        &h(0),
        t(1),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptIn,
        },
    );
    let err = apply(&f, &mut s, vec![ok.clone(), bad], t(1)).unwrap_err();
    assert!(
        matches!(err, BlockError::Contract { index: 1, .. }),
        "{err}"
    );
    assert_eq!(s, before);
    // A bad signature is found by the batch check after all contracts passed: still nothing.
    let forged = f.tx_with_key(
        &h(1),
        f.key(&h(0)),
        t(1),
        TxBody::Consent {
            subject: Pseudonym(Hash::ZERO),
            choice: ConsentChoice::OptOut,
        },
    );
    let err = apply(&f, &mut s, vec![ok.clone(), forged], t(1)).unwrap_err();
    assert!(
        matches!(
            err,
            BlockError::Contract {
                index: 1,
                error: ContractError::BadSignature(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s, before);
    // A block may admit a member and carry its first transaction.
    let (m, key) = new_member(&f, "hospital-new", Role::Hospital, 21);
    let add = f.tx(f.coordinator().0, t(1), TxBody::AddMember(m.clone()));
    let audit = f.tx_with_key(
        &m.id,
        &key,
        t(1),
        TxBody::AnchorAuditLog(AuditAnchor {
            merkle_root: Hash::ZERO,
            count: 1,
            first_event_at: t(0),
            last_event_at: t(1),
        }),
    );
    apply(&f, &mut s, vec![add, audit], t(1)).unwrap();
    assert_eq!(s.height(), 1);
}

#[test]
fn block_rules() {
    let (f, mut s) = setup();
    let tx = |hour| {
        f.tx(
            &h(0),
            t(hour),
            TxBody::AnchorAuditLog(AuditAnchor {
                merkle_root: Hash::ZERO,
                count: 1,
                first_event_at: t(hour),
                last_event_at: t(hour),
            }),
        )
    };
    apply(&f, &mut s, vec![tx(2)], t(2)).unwrap();
    let before = s.clone();
    let check = |s: &mut ChainState, block: medfl_ledger::Block| {
        let err = s.apply_block(&block).unwrap_err();
        assert_eq!(*s, before);
        err
    };
    // Time may not go backwards.
    assert!(matches!(
        check(&mut s, f.block(&before, vec![tx(1)], t(1))),
        BlockError::TimeTravel { .. }
    ));
    // No empty block; the header's count must match.
    assert!(matches!(
        check(&mut s, f.block(&before, vec![], t(3))),
        BlockError::TxCount { .. }
    ));
    let mut b = f.block(&before, vec![tx(3)], t(3));
    b.txs.push(tx(4));
    assert!(matches!(check(&mut s, b), BlockError::TxCount { .. }));
    // Height and previous hash follow the tip.
    let mut b = f.block(&before, vec![tx(3)], t(3));
    b.header.header.height = 5;
    assert!(matches!(check(&mut s, b), BlockError::Height { .. }));
    let mut b = f.block(&before, vec![tx(3)], t(3));
    b.header.header.previous = Hash::ZERO;
    assert!(matches!(check(&mut s, b), BlockError::Previous { .. }));
    // The transaction root covers the transactions.
    let mut b = f.block(&before, vec![tx(3)], t(3));
    b.txs[0] = tx(4);
    assert!(matches!(check(&mut s, b), BlockError::TxRoot { .. }));
    // The proposer signs; a hospital cannot propose.
    let mut b = f.block(&before, vec![tx(3)], t(3));
    b.header.signature.0[0] ^= 1;
    assert!(matches!(check(&mut s, b), BlockError::Signature));
    let mut b = f.block(&before, vec![tx(3)], t(3));
    b.header.header.proposer = h(0);
    assert!(matches!(check(&mut s, b), BlockError::Proposer(_)));
}

#[test]
fn an_extension_moves_expiry_later_and_every_acceptance_lapses() {
    let (f, mut s) = setup();
    let coord = f.coordinator().0.clone();
    let dua = Fixture::dua();
    let expires = s.agreement(&dua).unwrap().agreement.expires_at;
    let later = Timestamp(expires.0 + 100 * HOUR);
    let extend = |until| TxBody::ExtendAgreement {
        agreement: dua.clone(),
        expires_at: until,
    };
    // coordinator only; later only; an existing agreement only
    assert!(matches!(
        refused(&f, &mut s, f.tx(&h(0), t(1), extend(later)), t(1)),
        ContractError::WrongRole { .. }
    ));
    assert!(matches!(
        refused(&f, &mut s, f.tx(&coord, t(1), extend(expires)), t(1)),
        ContractError::NotLater { .. }
    ));
    let unknown = TxBody::ExtendAgreement {
        agreement: medfl_ledger::AgreementId::new("nope").unwrap(),
        expires_at: later,
    };
    assert!(matches!(
        refused(&f, &mut s, f.tx(&coord, t(1), unknown), t(1)),
        ContractError::UnknownAgreement(_)
    ));

    assert!(!s.agreement(&dua).unwrap().accepted.is_empty());
    apply(&f, &mut s, vec![f.tx(&coord, t(1), extend(later))], t(1)).unwrap();
    let a = s.agreement(&dua).unwrap();
    assert_eq!(a.agreement.expires_at, later);
    assert!(a.accepted.is_empty(), "acceptances of the old term lapse");
    // An acceptance that names no term, or the old one, cannot be carried onto the new term.
    let plain = TxBody::AcceptAgreement {
        agreement: dua.clone(),
    };
    assert!(matches!(
        refused(&f, &mut s, f.tx(&h(0), t(2), plain), t(2)),
        ContractError::NotCurrentTerms { .. }
    ));
    let old_terms = TxBody::AcceptTerms {
        agreement: dua.clone(),
        expires_at: expires,
    };
    assert!(matches!(
        refused(&f, &mut s, f.tx(&h(0), t(2), old_terms), t(2)),
        ContractError::NotCurrentTerms { .. }
    ));
    // A member accepts the longer term, by name.
    let new_terms = TxBody::AcceptTerms {
        agreement: dua.clone(),
        expires_at: later,
    };
    apply(&f, &mut s, vec![f.tx(&h(0), t(2), new_terms)], t(2)).unwrap();
    assert!(s.agreement(&dua).unwrap().accepted.contains(&h(0)));
}
