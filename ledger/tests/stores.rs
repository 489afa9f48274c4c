//! The in-memory store admits, refuses and proves exactly what the redb store does: the rules
//! live in the state, not in the store.

mod common;

use medfl_ledger::{Ledger, LedgerError};

#[test]
fn an_in_memory_copy_agrees_with_the_disk_ledger_block_for_block() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::build(dir.path(), 11, &[2, 5, 1, 6]);
    let disk = Ledger::open(dir.path()).unwrap();
    let mut copy = Ledger::in_memory(&f.genesis).unwrap();
    for height in 1..=disk.state().height() {
        let block = disk.block(height).unwrap().unwrap();
        let receipt = copy.append_block(&block).unwrap();
        assert_eq!(receipt.height, height);
        // A block already admitted is refused a second time, and changes nothing.
        assert!(matches!(
            copy.append_block(&block),
            Err(LedgerError::Rejected(_))
        ));
    }
    assert_eq!(copy.state().tip(), disk.state().tip());
    assert_eq!(copy.state().height(), disk.state().height());
    let last = disk.block(4).unwrap().unwrap();
    for id in last.tx_ids().unwrap() {
        assert_eq!(copy.prove(&id).unwrap(), disk.prove(&id).unwrap());
    }
}

#[test]
fn an_in_memory_copy_refuses_a_block_signed_by_an_outsider() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::build(dir.path(), 12, &[3, 2]);
    let disk = Ledger::open(dir.path()).unwrap();
    let mut copy = Ledger::in_memory(&f.genesis).unwrap();
    copy.append_block(&disk.block(1).unwrap().unwrap()).unwrap();
    let mut forged = disk.block(2).unwrap().unwrap();
    forged.header = forged
        .header
        .header
        .clone()
        .sign(
            &f.genesis.hash().unwrap(),
            &ed25519_dalek::SigningKey::from_bytes(&[66; 32]),
        )
        .unwrap();
    assert!(matches!(
        copy.append_block(&forged),
        Err(LedgerError::Rejected(_))
    ));
    assert_eq!(copy.state().height(), 1);
    // What it holds verifies from the genesis alone, and from no other.
    assert_eq!(copy.verify_from(&f.genesis).unwrap().height, 1);
    let other = medfl_ledger::testkit::Fixture::new(13, 3, 2);
    assert_eq!(copy.verify_from(&other.genesis).unwrap_err().height, 0);
}
