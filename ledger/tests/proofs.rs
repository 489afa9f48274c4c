//! Inclusion proofs check with nothing but the genesis, and any change to one breaks it.

mod common;

use medfl_ledger::testkit::Fixture;
use medfl_ledger::{Hash, InclusionProof, Ledger, ProofError};

#[test]
fn every_transaction_has_a_proof_that_checks_and_tampering_breaks_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::build(dir.path(), 8, &[1, 4, 3, 7]);
    let ledger = Ledger::open(dir.path()).unwrap();
    for height in 1..=4 {
        let block = ledger.block(height).unwrap().unwrap();
        for id in block.tx_ids().unwrap() {
            let proof = ledger.prove(&id).unwrap();
            let proven = proof.verify(&f.genesis).unwrap();
            assert_eq!((proven.id, proven.height), (id, height));
            assert!(proven.signer_checked);
            // JSON round trip: what `medfl ledger prove` prints is what the light client reads.
            let json = serde_json::to_string(&proof).unwrap();
            let back: InclusionProof = serde_json::from_str(&json).unwrap();
            assert_eq!(back.verify(&f.genesis).unwrap(), proven);
        }
    }

    let id = ledger.block(4).unwrap().unwrap().tx_ids().unwrap()[5];
    let proof = ledger.prove(&id).unwrap();
    let broken = |edit: &dyn Fn(&mut InclusionProof)| {
        let mut p = proof.clone();
        edit(&mut p);
        p.verify(&f.genesis).unwrap_err()
    };
    assert!(matches!(
        broken(&|p| p.tx.issued_at.0 += 1),
        ProofError::NotInBlock(4)
    ));
    assert!(matches!(
        broken(&|p| p.path.siblings[0] = Hash::ZERO),
        ProofError::NotInBlock(4)
    ));
    assert!(matches!(
        broken(&|p| p.path.index ^= 1),
        ProofError::NotInBlock(4)
    ));
    assert!(matches!(
        broken(&|p| p.headers[1].header.timestamp.0 += 1),
        ProofError::BadHeaderSignature(2)
    ));
    assert!(matches!(
        broken(&|p| {
            p.headers.remove(1);
        }),
        ProofError::BrokenChain { .. }
    ));
    assert!(matches!(
        broken(&|p| p.headers[3].header.tx_count += 1),
        ProofError::BadHeaderSignature(4)
    ));
    assert!(matches!(
        broken(&|p| p.headers.clear()),
        ProofError::NoHeaders
    ));

    // Another consortium's genesis refuses the proof.
    let other = Fixture::new(9, 3, 2);
    assert!(matches!(
        proof.verify(&other.genesis),
        Err(ProofError::WrongGenesis { .. })
    ));
    // An unknown transaction has no proof.
    assert!(ledger.prove(&Hash::ZERO).is_err());
}
