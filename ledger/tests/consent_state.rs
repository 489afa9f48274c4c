//! The consent part of the state: each hospital's opt-out set and the height of the newest
//! consent change, which agents compare with a round's consent height.

use medfl_ledger::testkit::{Fixture, T0};
use medfl_ledger::tx::{ConsentChoice, Pseudonym, TxBody};
use medfl_ledger::{ChainState, Hash, Timestamp};

fn subject(n: u8) -> Pseudonym {
    Pseudonym(Hash::tagged(b"consent-state-subject", &[&[n]]))
}

fn consent(
    f: &Fixture,
    hospital: &str,
    n: u8,
    choice: ConsentChoice,
    at: u64,
) -> medfl_ledger::Transaction {
    f.tx(
        &Fixture::id(hospital),
        Timestamp(T0.0 + at),
        TxBody::Consent {
            subject: subject(n),
            choice,
        },
    )
}

#[test]
fn the_newest_consent_change_and_each_hospitals_opt_outs_follow_the_blocks() {
    let f = Fixture::new(3, 2, 1);
    let mut s = ChainState::from_genesis(&f.genesis).unwrap();
    assert_eq!(s.consent_changed_at(), 0);

    let b = f.block(
        &s,
        vec![consent(&f, "hospital-0", 1, ConsentChoice::OptOut, 10)],
        Timestamp(T0.0 + 10),
    );
    s.apply_block(&b).unwrap();
    // A block without consent leaves the height of the last change alone.
    let b = f.block(
        &s,
        vec![f.tx(
            &Fixture::id("hospital-1"),
            Timestamp(T0.0 + 20),
            TxBody::RevokeMember {
                member: Fixture::id("hospital-1"),
                reason: "leaving".into(),
            },
        )],
        Timestamp(T0.0 + 20),
    );
    s.apply_block(&b).unwrap();
    assert_eq!(s.height(), 2);
    assert_eq!(s.consent_changed_at(), 1);
    assert_eq!(s.opted_out(&Fixture::id("hospital-0")), [subject(1)].into());
    assert!(s.opted_out(&Fixture::id("hospital-1")).is_empty());

    let b = f.block(
        &s,
        vec![
            consent(&f, "hospital-0", 2, ConsentChoice::OptOut, 30),
            consent(&f, "hospital-0", 1, ConsentChoice::OptIn, 30),
        ],
        Timestamp(T0.0 + 30),
    );
    s.apply_block(&b).unwrap();
    assert_eq!(s.consent_changed_at(), 3);
    assert_eq!(s.opted_out(&Fixture::id("hospital-0")), [subject(2)].into());

    // A refused block (its second consent is older than the recorded choice) leaves the state
    // as it was, the consent height included.
    let before = s.clone();
    let b = f.block(
        &s,
        vec![
            consent(&f, "hospital-0", 3, ConsentChoice::OptOut, 40),
            consent(&f, "hospital-0", 2, ConsentChoice::OptIn, 20),
        ],
        Timestamp(T0.0 + 40),
    );
    assert!(s.apply_block(&b).is_err());
    assert_eq!(s, before);
    assert_eq!(s.consent_changed_at(), 3);
}

/// Attack: the ledger has a patient opted out (issued at 5). The patient opts in (10), then
/// out again (20). The orderer holds back the opt-in, orders the opt-out, then the stale
/// opt-in, hoping the patient ends up opted in against their latest choice. The opt-out at 20
/// is recorded although it changes nothing, so the opt-in at 10 is refused as out of order.
#[test]
fn an_older_consent_choice_ordered_after_a_newer_one_is_refused() {
    let f = Fixture::new(3, 2, 1);
    let mut s = ChainState::from_genesis(&f.genesis).unwrap();
    let hospital = Fixture::id("hospital-0");
    let first_out = consent(&f, "hospital-0", 1, ConsentChoice::OptOut, 5);
    s.apply_block(&f.block(&s, vec![first_out], Timestamp(T0.0 + 5)))
        .unwrap();
    let held_in = consent(&f, "hospital-0", 1, ConsentChoice::OptIn, 10);
    let newest_out = consent(&f, "hospital-0", 1, ConsentChoice::OptOut, 20);
    s.apply_block(&f.block(&s, vec![newest_out], Timestamp(T0.0 + 30)))
        .unwrap();
    let stale = f.block(&s, vec![held_in.clone()], Timestamp(T0.0 + 31));
    let err = s.apply_block(&stale).unwrap_err();
    assert!(err.to_string().contains("consent-order"), "{err}");
    assert!(
        s.is_opted_out(&hospital, &subject(1)),
        "the latest choice stands"
    );
    // The same verdict without a block, as a hospital checks a refusal on its own copy.
    let err = s.check_tx(&held_in, Timestamp(T0.0 + 31)).unwrap_err();
    assert!(err.to_string().starts_with("consent-order"), "{err}");
    // Consent is ordered per subject: another patient's older change is still fine.
    let other = consent(&f, "hospital-0", 2, ConsentChoice::OptOut, 1);
    s.check_tx(&other, Timestamp(T0.0 + 31)).unwrap();
}

/// `check_tx` is a dry run: it judges like a block would, signature included, and changes
/// nothing.
#[test]
fn checking_a_transaction_changes_nothing_and_checks_its_signature() {
    let f = Fixture::new(3, 2, 1);
    let s = ChainState::from_genesis(&f.genesis).unwrap();
    let tx = consent(&f, "hospital-0", 1, ConsentChoice::OptOut, 5);
    s.check_tx(&tx, Timestamp(T0.0 + 5)).unwrap();
    s.check_tx(&tx, Timestamp(T0.0 + 5)).unwrap();
    assert!(!s.is_opted_out(&Fixture::id("hospital-0"), &subject(1)));
    let mut forged = tx.clone();
    forged.issued_at = Timestamp(T0.0 + 6);
    let err = s.check_tx(&forged, Timestamp(T0.0 + 6)).unwrap_err();
    assert!(
        matches!(err, medfl_ledger::ContractError::BadSignature(_)),
        "{err}"
    );
}
