//! Ledger copies in one process (a simulated consortium's hospitals) share checked signatures,
//! equal states and block bytes, and a state shares privacy-loss values between members with
//! the same history. None of it may change a verdict: every copy still runs every rule on
//! every block.

use medfl_ledger::testkit::{Fixture, HOUR, T0};
use std::sync::Arc;

use medfl_ledger::{
    BlockError, ChainState, ContractError, Hash, Ledger, LedgerError, SharedCopies, Timestamp,
    TxBody,
};
use medfl_memo::SignatureCache;

fn t(hours: u64) -> Timestamp {
    Timestamp(T0.0 + hours * HOUR)
}

fn h(i: usize) -> medfl_ledger::MemberId {
    Fixture::id(&format!("hospital-{i}"))
}

fn copy(f: &Fixture, shared: &Arc<SharedCopies>) -> Ledger {
    Ledger::in_memory_shared(&f.genesis, shared).unwrap()
}

fn contract_error(result: Result<medfl_ledger::BlockReceipt, LedgerError>) -> ContractError {
    match result {
        Err(LedgerError::Rejected(BlockError::Contract { error, .. })) => error,
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[test]
fn a_signature_another_copy_checked_vouches_only_for_its_own_signer_and_bytes() {
    let f = Fixture::new(7, 3, 2);
    let shared = SharedCopies::new(SignatureCache::new(1024));
    let cache = shared.signatures();
    let (mut a, mut b) = (copy(&f, &shared), copy(&f, &shared));
    assert!(std::ptr::eq(a.state(), b.state()), "one genesis state");
    let all = [h(0), h(1), h(2)];
    let honest = f.round_on(a.state(), 1, Hash([0; 32]), &all);
    let (cid, _) = f.coordinator();
    let block = f.block(
        a.state(),
        vec![f.tx(cid, t(1), TxBody::AnchorRound(honest.clone()))],
        t(1),
    );
    a.append_block(&block).unwrap();
    assert_eq!(cache.len(), 5, "the header, the tx and three endorsements");

    // hospital-1's endorsement, checked and remembered by copy `a`, passed off as hospital-2's.
    let mut forged = honest;
    forged.endorsements[2].signature = forged.endorsements[1].signature;
    let bad = f.block(
        b.state(),
        vec![f.tx(cid, t(1), TxBody::AnchorRound(forged))],
        t(1),
    );
    let (held, as_it_was): (*const ChainState, ChainState) = (b.state(), b.state().clone());
    assert_eq!(
        contract_error(b.append_block(&bad)),
        ContractError::BadEndorsement(h(2))
    );
    assert_eq!(*b.state(), as_it_was, "a refused block changed the copy");
    assert!(
        std::ptr::eq(b.state(), held),
        "the copy holds the very state it held"
    );

    // The block `a` took, every signature remembered: `b` takes it once, by the rules, and
    // refuses it a second time.
    b.append_block(&block).unwrap();
    assert!(matches!(
        b.append_block(&block),
        Err(LedgerError::Rejected(_))
    ));
    assert_eq!(b.state().tip(), a.state().tip());
    assert!(
        std::ptr::eq(a.state(), b.state()),
        "equal states are held once"
    );
    assert_eq!(a.block(1).unwrap(), Some(block));
}

#[test]
fn members_with_different_histories_are_priced_apart() {
    let f = Fixture::new(7, 4, 2);
    let shared = SharedCopies::new(SignatureCache::new(1024));
    let mut ledger = copy(&f, &shared);
    // The same chain on a copy that shares nothing: the reference.
    let mut alone = Ledger::in_memory(&f.genesis).unwrap();
    let (cid, _) = f.coordinator();
    let mut previous = Hash([0; 32]);
    // Round 1: hospitals 0 and 1. Round 2: 0, 1 and 2 (2's first). Round 3: all four.
    for (round, joined) in [(1u64, 2usize), (2, 3), (3, 4)] {
        let participants: Vec<_> = (0..joined).map(h).collect();
        // Epsilons as the fixture computes them, member by member, from the unshared state;
        // the shared copy's memoised pricing must agree with each, or the anchor is refused.
        let anchor = f.round_on(alone.state(), round, previous, &participants);
        previous = anchor.model;
        let tx = f.tx(cid, t(round), TxBody::AnchorRound(anchor));
        let block = f.block(ledger.state(), vec![tx], t(round));
        ledger.append_block(&block).unwrap();
        alone.append_block(&block).unwrap();
    }
    let record = ledger.state().agreement(&Fixture::dua()).unwrap();
    let reference = alone.state().agreement(&Fixture::dua()).unwrap();
    for i in 0..4 {
        assert_eq!(record.loss[&h(i)], reference.loss[&h(i)], "{}", h(i));
    }
    assert_eq!(record, reference);
    // Three histories (3 rounds, 2 rounds, 1 round): hospitals 0 and 1 share one value.
    assert!(Arc::ptr_eq(&record.loss[&h(0)], &record.loss[&h(1)]));
    assert!(!Arc::ptr_eq(&record.loss[&h(1)], &record.loss[&h(2)]));
    assert_ne!(record.loss[&h(1)], record.loss[&h(2)]);
    assert_ne!(record.loss[&h(2)], record.loss[&h(3)]);
}

/// A block whose first three transactions write to the parts of the state that states share
/// (consent, an agreement's terms and acceptances, the member list) and whose fourth revokes a
/// member that does not exist, so the block is refused at index 3.
fn refused_at_its_last(f: &Fixture, state: &ChainState) -> medfl_ledger::Block {
    let (cid, _) = f.coordinator();
    f.block(
        state,
        vec![
            f.tx(
                &h(0),
                t(1),
                TxBody::Consent {
                    subject: medfl_ledger::tx::Pseudonym(Hash([9; 32])),
                    choice: medfl_ledger::tx::ConsentChoice::OptOut,
                },
            ),
            f.tx(
                cid,
                t(1),
                TxBody::ExtendAgreement {
                    agreement: Fixture::dua(),
                    expires_at: t(2 * 365 * 24),
                },
            ),
            f.tx(
                cid,
                t(1),
                TxBody::RevokeMember {
                    member: h(1),
                    reason: "written, then taken back".into(),
                },
            ),
            f.tx(
                cid,
                t(1),
                TxBody::RevokeMember {
                    member: Fixture::id("nobody"),
                    reason: "no such member: refuses the block".into(),
                },
            ),
        ],
        t(1),
    )
}

fn refused_at_index_3(result: Result<medfl_ledger::BlockReceipt, LedgerError>) -> bool {
    matches!(
        result,
        Err(LedgerError::Rejected(BlockError::Contract { index: 3, .. }))
    )
}

/// A block refused at its last transaction, after the earlier ones wrote to the parts of the
/// state that copies share, leaves every copy's state as it was, in content (compared in full,
/// through `Debug`) and in identity: the writes went to the refusing copy's own clone, never
/// to what it shared.
#[test]
fn a_block_refused_midway_leaves_the_shared_parts_of_every_copy_untouched() {
    let f = Fixture::new(11, 3, 2);
    let shared = SharedCopies::new(SignatureCache::new(1024));
    let (mut a, b) = (copy(&f, &shared), copy(&f, &shared));
    let before = format!("{:?}", a.state());
    let block = refused_at_its_last(&f, a.state());
    assert!(refused_at_index_3(a.append_block(&block)));
    assert_eq!(
        format!("{:?}", a.state()),
        before,
        "the refusing copy changed"
    );
    assert_eq!(format!("{:?}", b.state()), before, "another copy changed");
    assert!(
        std::ptr::eq(a.state(), b.state()),
        "the copies still share one state"
    );
}

/// The same in a daemon's ledger, which shares nothing with other copies and applies a block
/// to its own state in place: the refused block is undone, and a clone of the state held
/// aside (as the mempool's trial holds one) shares the written parts and must not see the
/// writes either.
#[test]
fn a_block_refused_midway_is_undone_in_place_and_a_held_clone_never_sees_it() {
    let f = Fixture::new(12, 3, 2);
    let mut ledger = Ledger::in_memory(&f.genesis).unwrap();
    let held: ChainState = ledger.state().clone();
    let before = format!("{:?}", ledger.state());
    let block = refused_at_its_last(&f, ledger.state());
    assert!(refused_at_index_3(ledger.append_block(&block)));
    assert_eq!(
        format!("{:?}", ledger.state()),
        before,
        "the refused block stayed"
    );
    assert_eq!(*ledger.state(), held);
    assert_eq!(format!("{:?}", held), before, "the held clone changed");
    // The same block without its bad last transaction is taken: the refusal was that one's.
    let mut good = refused_at_its_last(&f, ledger.state());
    good.txs.pop();
    let good = f.block(ledger.state(), good.txs, t(1));
    ledger.append_block(&good).unwrap();
    assert_ne!(format!("{:?}", ledger.state()), before);
    assert_eq!(format!("{:?}", held), before, "the held clone changed");
}
