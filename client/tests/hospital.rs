//! A hospital keeps its own ledger copy: it appends only blocks that pass every check, asks
//! again for blocks it missed, and a forged block leaves its copy unchanged.

use medfl_client::{Agent, Hospital, HospitalEvent};
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{Block, ChainState, Hash, Ledger, Timestamp, TxBody};
use medfl_protocol::{ToAgent, ToCoordinator};

fn hospital(f: &Fixture) -> Hospital {
    let id = Fixture::id("hospital-0");
    let budget = medfl_client::spend::PrivacyBudget::new(1e9, 1e-6).unwrap();
    let spend = medfl_client::spend::PrivacySpend::new(budget, Vec::new()).unwrap();
    let agent = Agent::new(
        id.clone(),
        f.key(&id).clone(),
        f.genesis_hash,
        spend,
        [3; 32],
    );
    Hospital::new(agent, Ledger::in_memory(&f.genesis).unwrap())
}

/// Three consecutive consent blocks, as the coordinator's ledger would hold them.
fn chain(f: &Fixture) -> Vec<Block> {
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    let who = Fixture::id("hospital-1");
    (1..=3u64)
        .map(|i| {
            let time = Timestamp(T0.0 + i * HOUR);
            let tx = f.tx(
                &who,
                time,
                TxBody::Consent {
                    subject: Pseudonym(Hash::tagged(b"subject", &[&i.to_le_bytes()])),
                    choice: ConsentChoice::OptOut,
                },
            );
            let block = f.block(&state, vec![tx], time);
            state.apply_block(&block).unwrap();
            block
        })
        .collect()
}

/// `block` with its header re-signed by a key outside the consortium.
fn signed_by_an_outsider(f: &Fixture, block: &Block) -> Block {
    let outsider = ed25519_dalek::SigningKey::from_bytes(&[66; 32]);
    let mut forged = block.clone();
    forged.header = block
        .header
        .header
        .clone()
        .sign(&f.genesis_hash, &outsider)
        .unwrap();
    forged
}

fn events(h: &mut Hospital) -> Vec<HospitalEvent> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

const NOW: Timestamp = Timestamp(T0.0 + 10 * HOUR);

#[test]
fn blocks_in_order_are_appended_to_the_hospitals_own_copy() {
    let f = Fixture::new(5, 3, 2);
    let mut h = hospital(&f);
    for b in chain(&f) {
        h.handle(ToAgent::Block(std::sync::Arc::new(b)), NOW)
            .unwrap();
    }
    let appended = events(&mut h)
        .into_iter()
        .filter(|e| matches!(e, HospitalEvent::Appended(_)))
        .count();
    assert_eq!(appended, 3);
    assert_eq!(h.ledger().state().height(), 3);
    assert_eq!(h.ledger().verify_from(&f.genesis).unwrap().height, 3);
}

#[test]
fn a_missed_block_makes_the_hospital_ask_again_from_its_own_height() {
    let f = Fixture::new(5, 3, 2);
    let blocks = chain(&f);
    let mut h = hospital(&f);
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[0].clone())), NOW)
        .unwrap();
    // Block 2 is lost; block 3 arrives.
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[2].clone())), NOW)
        .unwrap();
    let evs = events(&mut h);
    assert!(
        evs.iter()
            .any(|e| matches!(e, HospitalEvent::Behind { height: 3, ours: 1 })),
        "{evs:?}"
    );
    assert!(matches!(
        h.poll_outgoing(),
        Some(ToCoordinator::Hello { height: 1 })
    ));
    assert_eq!(h.ledger().state().height(), 1);
    // The catch-up resends 2 and 3 (3 a second time is harmless).
    for b in &blocks[1..] {
        h.handle(ToAgent::Block(std::sync::Arc::new(b.clone())), NOW)
            .unwrap();
    }
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[2].clone())), NOW)
        .unwrap();
    assert_eq!(h.ledger().state().height(), 3);
    assert_eq!(h.ledger().state().tip(), blocks[2].header.hash().unwrap());
}

#[test]
fn a_block_the_copy_refuses_changes_nothing() {
    let f = Fixture::new(5, 3, 2);
    let blocks = chain(&f);
    let mut h = hospital(&f);
    // Signed by a key outside the consortium.
    let forged = signed_by_an_outsider(&f, &blocks[0]);
    h.handle(ToAgent::Block(std::sync::Arc::new(forged)), NOW)
        .unwrap();
    // A transaction changed after the header was signed.
    let mut altered = blocks[0].clone();
    altered.txs[0].issued_at.0 += 1;
    h.handle(ToAgent::Block(std::sync::Arc::new(altered)), NOW)
        .unwrap();
    let refused = events(&mut h)
        .into_iter()
        .filter(|e| matches!(e, HospitalEvent::BlockRefused { height: 1, .. }))
        .count();
    assert_eq!(refused, 2);
    assert_eq!(h.ledger().state().height(), 0);
    // The genuine block still goes in.
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[0].clone())), NOW)
        .unwrap();
    assert_eq!(h.ledger().state().height(), 1);
}

#[test]
fn a_second_block_signed_at_a_held_height_is_kept_as_proof_of_a_fork() {
    let f = Fixture::new(5, 3, 2);
    let blocks = chain(&f);
    let mut h = hospital(&f);
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[0].clone())), NOW)
        .unwrap();
    events(&mut h);
    // The coordinator signs another block 1 (another transaction) and sends it too.
    let genesis = ChainState::from_genesis(&f.genesis).unwrap();
    let time = Timestamp(T0.0 + HOUR);
    let other = f.tx(
        &Fixture::id("hospital-2"),
        time,
        TxBody::Consent {
            subject: Pseudonym(Hash::tagged(b"other", &[])),
            choice: ConsentChoice::OptOut,
        },
    );
    let fork = f.block(&genesis, vec![other], time);
    h.handle(ToAgent::Block(std::sync::Arc::new(fork.clone())), NOW)
        .unwrap();
    let evs = events(&mut h);
    assert!(
        matches!(&evs[..], [HospitalEvent::Equivocation { height: 1, theirs, .. }] if **theirs == fork),
        "{evs:?}"
    );
    // The copy keeps its own block; the same block again, or one no coordinator signed, is
    // no evidence.
    assert_eq!(h.ledger().state().tip(), blocks[0].header.hash().unwrap());
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[0].clone())), NOW)
        .unwrap();
    let forged = signed_by_an_outsider(&f, &fork);
    h.handle(ToAgent::Block(std::sync::Arc::new(forged)), NOW)
        .unwrap();
    assert!(events(&mut h).is_empty());
}

#[test]
fn a_batch_past_a_gap_asks_once_until_the_copy_moves() {
    let f = Fixture::new(5, 3, 2);
    let blocks = chain(&f);
    let mut h = hospital(&f);
    for _ in 0..3 {
        h.handle(ToAgent::Block(std::sync::Arc::new(blocks[2].clone())), NOW)
            .unwrap();
    }
    let hellos = std::iter::from_fn(|| h.poll_outgoing())
        .filter(|m| matches!(m, ToCoordinator::Hello { height: 0 }))
        .count();
    assert_eq!(hellos, 1);
    // Once the copy moves, a new gap asks again.
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[0].clone())), NOW)
        .unwrap();
    h.handle(ToAgent::Block(std::sync::Arc::new(blocks[2].clone())), NOW)
        .unwrap();
    assert!(matches!(
        h.poll_outgoing(),
        Some(ToCoordinator::Hello { height: 1 })
    ));
}
