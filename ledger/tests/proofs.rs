//! Inclusion proofs check with nothing but the genesis, and any change to one breaks it.

mod common;

use medfl_ledger::testkit::Fixture;
use medfl_ledger::tx::{
    AlertAnchor, AuditAnchor, ConsentChoice, DataUseAgreement, Pseudonym, Severity,
};
use medfl_ledger::{
    AgreementId, Hash, InclusionProof, Ledger, Member, PrivacyBudget, ProofError, Role, TxBody,
};

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

/// Every kind of transaction (all ten), with floats a text format could re-encode differently, proves
/// through the JSON `medfl ledger prove` prints, because the proof carries canonical bytes.
#[test]
fn every_kind_of_transaction_proves_through_json() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(11, 3, 2);
    let mut ledger = Ledger::create(dir.path(), &f.genesis).unwrap();
    let (coord, ckey) = f.coordinator();
    let h = |i: usize| Fixture::id(&format!("hospital-{i}"));
    let newcomer_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let newcomer = Member {
        id: Fixture::id("newcomer"),
        role: Role::Hospital,
        public_key: newcomer_key.verifying_key().into(),
        address: "/ip4/127.0.0.1/tcp/4001".into(),
    };
    let study = AgreementId::new("study-2").unwrap();
    let agreement = DataUseAgreement {
        id: study.clone(),
        purpose: "a second study".into(),
        members: vec![h(0), h(1)],
        expires_at: common::t(100),
        // Neither value has a short exact decimal form.
        budget: PrivacyBudget {
            epsilon: 0.1 + 0.2,
            delta: 3.0 * 1e-7,
        },
        floors: Fixture::floors(),
        strategy: Default::default(),
    };
    let t1 = common::t(1);
    ledger
        .append(
            vec![
                f.tx(coord, t1, TxBody::AddMember(newcomer.clone())),
                f.tx(coord, t1, TxBody::RegisterAgreement(agreement)),
                f.tx(
                    &h(1),
                    t1,
                    TxBody::Consent {
                        subject: Pseudonym(Hash::tagged(b"subject", &[b"1"])),
                        choice: ConsentChoice::OptOut,
                    },
                ),
                f.tx(
                    &h(2),
                    t1,
                    TxBody::AnchorAuditLog(AuditAnchor {
                        merkle_root: Hash::tagged(b"batch", &[b"1"]),
                        count: 3,
                        first_event_at: t1,
                        last_event_at: t1,
                    }),
                ),
                f.tx(
                    &h(0),
                    t1,
                    TxBody::AnchorAlert(AlertAnchor {
                        alert: Hash::tagged(b"alert", &[b"1"]),
                        severity: Severity::High,
                        raised_at: t1,
                        model: None,
                    }),
                ),
            ],
            t1,
            coord,
            ckey,
        )
        .unwrap();
    let t2 = common::t(2);
    let round = f.round_on(ledger.state(), 1, Hash::ZERO, &[h(0), h(1), h(2)]);
    ledger
        .append(
            vec![
                f.tx(
                    &h(0),
                    t2,
                    TxBody::AcceptAgreement {
                        agreement: study.clone(),
                    },
                ),
                f.tx(
                    coord,
                    t2,
                    TxBody::ExtendAgreement {
                        agreement: study.clone(),
                        expires_at: common::t(200),
                    },
                ),
                f.tx(
                    &h(0),
                    t2,
                    TxBody::AcceptTerms {
                        agreement: study,
                        expires_at: common::t(200),
                    },
                ),
                f.tx(
                    coord,
                    t2,
                    TxBody::RevokeMember {
                        member: newcomer.id.clone(),
                        reason: "left the consortium".into(),
                    },
                ),
                f.tx(coord, t2, TxBody::AnchorRound(round)),
            ],
            t2,
            coord,
            ckey,
        )
        .unwrap();

    let mut kinds = std::collections::BTreeSet::new();
    for height in 1..=2 {
        let block = ledger.block(height).unwrap().unwrap();
        for id in block.tx_ids().unwrap() {
            let proof = ledger.prove(&id).unwrap();
            let json = serde_json::to_value(&proof).unwrap();
            // The transaction is its canonical bytes, not a re-encoding of its fields.
            let canonical = hex::encode(medfl_ledger::codec::encode(&proof.tx).unwrap());
            assert_eq!(json["tx"].as_str(), Some(canonical.as_str()));
            let back: InclusionProof = serde_json::from_value(json).unwrap();
            let proven = back.verify(&f.genesis).unwrap();
            assert_eq!((proven.id, proven.height), (id, height));
            kinds.insert(proven.kind);
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "accept-agreement",
            "accept-terms",
            "add-member",
            "anchor-alert",
            "anchor-audit-log",
            "anchor-round",
            "consent",
            "extend-agreement",
            "register-agreement",
            "revoke-member",
        ]
    );

    // Bytes that are not a canonical transaction are refused when the proof is read.
    let proof = ledger.prove(&ledger.block(1).unwrap().unwrap().tx_ids().unwrap()[0]);
    let mut json = serde_json::to_value(proof.unwrap()).unwrap();
    let hex_tx = json["tx"].as_str().unwrap().to_owned();
    json["tx"] = serde_json::Value::String(format!("{hex_tx}00"));
    let err = serde_json::from_value::<InclusionProof>(json).unwrap_err();
    assert!(err.to_string().contains("do not decode"), "{err}");
}
