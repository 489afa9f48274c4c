//! The attacker's side of signature malleability: a key holder (the ordering coordinator, or a
//! member) signs with a nonce point or a public key that carries a small-order (torsion)
//! component. Strict ed25519 verification (`verify_strict`, what a light client runs on an
//! inclusion proof) refuses such signatures; randomized batch verification accepts some of them,
//! so a ledger that batch-verifies its blocks would accept a chain that every light client
//! refuses. Full verification and proofs must agree: both refuse.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, IsIdentity};
use ed25519_dalek::SigningKey;
use medfl_ledger::block::{BLOCK_VERSION, Block, BlockHeader, SignedHeader};
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{
    BlockError, ChainState, ContractError, Genesis, Hash, InclusionProof, Ledger, Member, MemberId,
    PublicKey, Role, SharedCopies, Signature, Timestamp, Transaction, TxBody, codec, merkle,
};
use medfl_memo::SignatureCache;
use sha2::{Digest, Sha512};

/// A point of order 8 (from the small-order list of Chalkias, Garillot and Nikolaenko,
/// "Taming the many EdDSAs", 2020).
fn order_8_point() -> EdwardsPoint {
    let bytes: [u8; 32] =
        hex_bytes("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a");
    let t = CompressedEdwardsY(bytes).decompress().unwrap();
    assert!(t.is_small_order() && !(t + t + t + t).is_identity());
    t
}

fn hex_bytes(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// An ed25519 signature by `key` whose nonce point is `r·B + torsion`: `s = r + H(R‖A‖M)·a`.
/// Only the key holder can make it; cofactored or randomized batch checks cannot tell it apart
/// from an honest one (the torsion vanishes when the batch coefficient is a multiple of its
/// order), while strict verification recomputes `R` and sees the difference.
fn sign_with_torsion(key: &SigningKey, message: &[u8], r: u64, torsion: EdwardsPoint) -> Signature {
    let r = Scalar::from(r);
    let big_r = (ED25519_BASEPOINT_POINT * r + torsion).compress();
    let k: [u8; 64] = Sha512::new()
        .chain_update(big_r.as_bytes())
        .chain_update(key.verifying_key().as_bytes())
        .chain_update(message)
        .finalize()
        .into();
    let s = r + Scalar::from_bytes_mod_order_wide(&k) * key.to_scalar();
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(big_r.as_bytes());
    bytes[32..].copy_from_slice(s.as_bytes());
    Signature(bytes)
}

fn consent(f: &Fixture, i: u64, at: Timestamp) -> Transaction {
    let who = Fixture::id("hospital-0");
    let subject = Pseudonym(Hash::tagged(b"torsion", &[&i.to_le_bytes()]));
    f.tx(
        &who,
        at,
        TxBody::Consent {
            subject,
            choice: ConsentChoice::OptOut,
        },
    )
}

/// Block 1 of `f` holding `txs`, its header signed by `sign(message)`.
fn block_signed_by(f: &Fixture, txs: Vec<Transaction>, sign: impl Fn(&[u8]) -> Signature) -> Block {
    let ids: Vec<Hash> = txs.iter().map(|t| t.id().unwrap()).collect();
    let header = BlockHeader {
        version: BLOCK_VERSION,
        height: 1,
        previous: f.genesis_hash,
        tx_root: merkle::root(&ids),
        tx_count: txs.len() as u32,
        timestamp: Timestamp(T0.0 + HOUR),
        proposer: f.coordinator().0.clone(),
    };
    let signature = sign(&header.signing_message(&f.genesis_hash).unwrap());
    Block {
        header: SignedHeader { header, signature },
        txs,
    }
}

/// What a light client given `block`'s first transaction concludes.
fn proof_of_first_tx(f: &Fixture, block: &Block) -> Result<(), medfl_ledger::ProofError> {
    let ids = block.tx_ids().unwrap();
    let proof = InclusionProof {
        genesis: f.genesis_hash,
        tx: block.txs[0].clone(),
        path: merkle::path(&ids, 0).unwrap(),
        headers: vec![block.header.clone()],
    };
    proof.verify(&f.genesis).map(drop)
}

#[test]
fn a_header_signed_with_a_small_order_nonce_is_refused_by_full_verification_and_proofs() {
    let f = Fixture::new(41, 3, 1);
    let (_, key) = f.coordinator();
    let coordinator_key = PublicKey::from(key.verifying_key());
    let at = Timestamp(T0.0 + HOUR);
    // r = 0 and no torsion: R is the identity, a small-order point; s = H(R‖A‖M)·a.
    let block = block_signed_by(&f, vec![consent(&f, 1, at), consent(&f, 2, at)], |m| {
        sign_with_torsion(key, m, 0, EdwardsPoint::identity())
    });
    let message = block
        .header
        .header
        .signing_message(&f.genesis_hash)
        .unwrap();
    assert!(
        !coordinator_key.verify(&message, &block.header.signature),
        "strict verification refuses a small-order R"
    );
    assert!(proof_of_first_tx(&f, &block).is_err(), "light client");
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    let before = state.clone();
    assert!(
        matches!(state.apply_block(&block), Err(BlockError::Signature)),
        "full verification must refuse what the light client refuses"
    );
    assert_eq!(state, before);
}

#[test]
fn headers_signed_with_a_mixed_torsion_nonce_are_all_refused() {
    let f = Fixture::new(42, 3, 1);
    let (_, key) = f.coordinator();
    let coordinator_key = PublicKey::from(key.verifying_key());
    let at = Timestamp(T0.0 + HOUR);
    let t8 = order_8_point();
    // The batch coefficient is a multiple of 8 for about one nonce in eight: the attacker
    // only has to try a few. Every one must be refused.
    let mut accepted = Vec::new();
    let mut accepted_shared = Vec::new();
    let shared = SharedCopies::new(SignatureCache::new(1024));
    for r in 1..=48u64 {
        let block = block_signed_by(&f, vec![consent(&f, r, at)], |m| {
            sign_with_torsion(key, m, r, t8)
        });
        let message = block
            .header
            .header
            .signing_message(&f.genesis_hash)
            .unwrap();
        assert!(!coordinator_key.verify(&message, &block.header.signature));
        assert!(
            proof_of_first_tx(&f, &block).is_err(),
            "light client, r = {r}"
        );
        let mut state = ChainState::from_genesis(&f.genesis).unwrap();
        if state.apply_block(&block).is_ok() {
            accepted.push(r);
        }
        // Two copies sharing checks, as a simulation's hospitals do: neither may accept it,
        // whichever sees it first.
        let mut first = Ledger::in_memory_shared(&f.genesis, &shared).unwrap();
        let mut second = Ledger::in_memory_shared(&f.genesis, &shared).unwrap();
        if first.append_block(&block).is_ok() || second.append_block(&block).is_ok() {
            accepted_shared.push(r);
        }
    }
    assert!(
        accepted.is_empty(),
        "full verification accepted torsioned header signatures (nonces {accepted:?}) that \
         strict verification and inclusion proofs refuse"
    );
    assert!(
        accepted_shared.is_empty(),
        "shared copies accepted torsioned header signatures (nonces {accepted_shared:?})"
    );
}

#[test]
fn a_member_transaction_signed_with_a_small_order_nonce_is_refused() {
    let f = Fixture::new(43, 3, 1);
    let who = Fixture::id("hospital-1");
    let at = Timestamp(T0.0 + HOUR);
    let mut tx = f.tx(
        &who,
        at,
        TxBody::Consent {
            subject: Pseudonym(Hash::tagged(b"torsion", &[b"tx"])),
            choice: ConsentChoice::OptOut,
        },
    );
    tx.signature = sign_with_torsion(
        f.key(&who),
        &tx.signing_message(&f.genesis_hash).unwrap(),
        0,
        EdwardsPoint::identity(),
    );
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let block = f.block(&state, vec![tx], at);
    assert!(
        proof_of_first_tx(&f, &block).is_err(),
        "the light client checks a founding member's signature strictly"
    );
    let mut state = state;
    let err = state.apply_block(&block).unwrap_err();
    assert!(
        matches!(
            &err,
            BlockError::Contract {
                error: ContractError::BadSignature(m),
                ..
            } if m == &who
        ),
        "{err}"
    );
}

/// `a·B + T8`: a key whose holder knows `a`, with a torsion component; not of small order, so
/// `is_weak` alone does not catch it.
fn mixed_torsion_key(seed: u8) -> [u8; 32] {
    let a = SigningKey::from_bytes(&[seed; 32]).to_scalar();
    (ED25519_BASEPOINT_POINT * a + order_8_point())
        .compress()
        .to_bytes()
}

#[test]
fn keys_with_a_torsion_component_are_refused_at_genesis_and_add_member() {
    let bad = mixed_torsion_key(9);
    assert!(
        !ed25519_dalek::VerifyingKey::from_bytes(&bad)
            .unwrap()
            .is_weak(),
        "not small order: only a torsion check sees it"
    );
    assert!(PublicKey::from_bytes(&bad).is_err());

    // In a genesis file.
    let f = Fixture::new(44, 2, 1);
    let good = f.genesis.members[1].public_key.to_string();
    let text = f
        .genesis
        .to_file()
        .to_toml()
        .unwrap()
        .replace(&good, &hex_string(&bad));
    assert!(Genesis::from_toml(&text).is_err());
    // Small-order keys too.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let text = f
        .genesis
        .to_file()
        .to_toml()
        .unwrap()
        .replace(&good, &hex_string(&identity));
    assert!(Genesis::from_toml(&text).is_err());

    // In an AddMember transaction as stored or sent: the key bytes do not decode.
    let placeholder = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let (coordinator, key) = f.coordinator();
    for bytes in [bad, identity] {
        let tx = Transaction::sign(
            &f.genesis_hash,
            coordinator.clone(),
            key,
            Timestamp(T0.0 + HOUR),
            TxBody::AddMember(Member {
                id: MemberId::new("newcomer").unwrap(),
                role: Role::Hospital,
                public_key: placeholder.into(),
                address: String::new(),
            }),
        )
        .unwrap();
        let mut encoded = codec::encode(&tx).unwrap();
        let at = encoded
            .windows(32)
            .position(|w| w == placeholder.as_bytes())
            .unwrap();
        encoded[at..at + 32].copy_from_slice(&bytes);
        assert!(codec::decode::<Transaction>(&encoded).is_err());
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
