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

    // A refused block (its second consent changes nothing) leaves the state as it was,
    // the consent height included.
    let before = s.clone();
    let b = f.block(
        &s,
        vec![
            consent(&f, "hospital-0", 3, ConsentChoice::OptOut, 40),
            consent(&f, "hospital-0", 2, ConsentChoice::OptOut, 40),
        ],
        Timestamp(T0.0 + 40),
    );
    assert!(s.apply_block(&b).is_err());
    assert_eq!(s, before);
    assert_eq!(s.consent_changed_at(), 3);
}
