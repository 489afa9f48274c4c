//! Thin wrappers that fix how this protocol uses X25519, HKDF-SHA256,
//! ChaCha20-Poly1305 and ed25519: what is bound into each derivation and
//! signature. No primitive is implemented here.
//!
//! # Domain separation
//!
//! Every derivation and signature starts from the round's session tag (a hash
//! of the round id, all parameters and the roster, see
//! [`RoundPlan`](crate::config::RoundPlan)) and a distinct label. Hence a
//! signature, ciphertext or seed from one round is meaningless in any other,
//! and a pairwise mask seed can never equal a share-encryption key even though
//! both come from X25519 agreements.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use medfl_memo::{SignatureCache, SignatureRule};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::config::ClientId;
use crate::error::SecAggError;
use crate::message::{AdvertiseKeys, ShareCommitment, ShareKind, TranscriptEntry};
use crate::prg::Seed;
use crate::shamir::SHARE_BYTES;

/// Length of an encrypted share: 4+4 id bytes, two 64-byte shares, 16-byte tag.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + 16;
/// Length of the plaintext inside an encrypted share.
pub const SHARE_PLAINTEXT_LEN: usize = 8 + 2 * crate::shamir::SHARE_BYTES;

fn hkdf32(
    session: &[u8; 32],
    ikm: &[u8],
    info: &[&[u8]],
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let hk = Hkdf::<Sha256>::new(Some(session), ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(info, &mut okm[..])
        .map_err(|_| SecAggError::Internal("HKDF output length"))?;
    Ok(okm)
}

/// An X25519 shared secret that passed the contributory check; wiped on drop, never printed.
///
/// Computing an agreement once and deriving every key from it lets a client
/// check a neighbour's key, encrypt to it, decrypt from it and seed the
/// pairwise mask with one scalar multiplication per key instead of one each.
/// Clones are wiped on drop too.
#[derive(Clone)]
pub struct Agreement(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agreement").finish_non_exhaustive()
    }
}

/// `X25519(secret, peer_public)`, refusing a non-contributory (small-order) peer key.
pub fn agree(
    secret: &StaticSecret,
    peer_public: &PublicKey,
    peer: ClientId,
) -> Result<Agreement, SecAggError> {
    let shared = secret.diffie_hellman(peer_public);
    // A low-order peer key forces the shared secret to zero, which would make
    // the "secret" mask public; refuse it.
    if !shared.was_contributory() {
        return Err(SecAggError::NonContributoryKey(peer));
    }
    Ok(Agreement(Zeroizing::new(shared.to_bytes())))
}

/// Rejects public keys that cannot produce a contributory agreement.
pub fn check_public_key(key: &PublicKey, owner: ClientId) -> Result<(), SecAggError> {
    // Agreement with a fixed, valid scalar is all-zero iff the point has small order.
    let probe = StaticSecret::from([0x5a; 32]);
    agree(&probe, key, owner).map(drop)
}

/// Seed of the pairwise mask between `a` and `b`:
/// `HKDF(salt = session, ikm = X25519(c_a, C_b), info = "pair" || min || max)`.
///
/// Symmetric in `(a, b)` because X25519 is and the ids are ordered.
pub fn pairwise_seed(
    session: &[u8; 32],
    my_secret: &StaticSecret,
    peer_public: &PublicKey,
    me: ClientId,
    peer: ClientId,
) -> Result<Seed, SecAggError> {
    pairwise_seed_from(session, &agree(my_secret, peer_public, peer)?, me, peer)
}

/// [`pairwise_seed`] from an agreement already computed with [`agree`].
pub fn pairwise_seed_from(
    session: &[u8; 32],
    agreement: &Agreement,
    me: ClientId,
    peer: ClientId,
) -> Result<Seed, SecAggError> {
    let (lo, hi) = if me < peer { (me, peer) } else { (peer, me) };
    let okm = hkdf32(
        session,
        &agreement.0[..],
        &[
            b"medfl-secagg/v1/pairwise-mask",
            &lo.0.to_le_bytes(),
            &hi.0.to_le_bytes(),
        ],
    )?;
    Ok(Seed(*okm))
}

/// Key that encrypts the shares `sender` sends to `recipient`.
///
/// Directional (sender first), so each key encrypts exactly one message per
/// round, which is what makes the fixed all-zero nonce safe.
fn share_key(
    session: &[u8; 32],
    agreement: &Agreement,
    sender: ClientId,
    recipient: ClientId,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    hkdf32(
        session,
        &agreement.0[..],
        &[
            b"medfl-secagg/v1/share-key",
            &sender.0.to_le_bytes(),
            &recipient.0.to_le_bytes(),
        ],
    )
}

fn share_aad(session: &[u8; 32], sender: ClientId, recipient: ClientId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"medfl-secagg/v1/share-aad");
    aad.extend_from_slice(session);
    aad.extend_from_slice(&sender.0.to_le_bytes());
    aad.extend_from_slice(&recipient.0.to_le_bytes());
    aad
}

/// Encrypts `plaintext` from `sender` (holding `my_secret`) to `recipient`.
pub fn seal_share(
    session: &[u8; 32],
    my_secret: &StaticSecret,
    recipient_public: &PublicKey,
    sender: ClientId,
    recipient: ClientId,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let agreement = agree(my_secret, recipient_public, recipient)?;
    seal_share_with(session, &agreement, sender, recipient, plaintext)
}

/// [`seal_share`] with the sender's agreement with `recipient` already computed.
pub fn seal_share_with(
    session: &[u8; 32],
    agreement: &Agreement,
    sender: ClientId,
    recipient: ClientId,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let key = share_key(session, agreement, sender, recipient)?;
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let aad = share_aad(session, sender, recipient);
    aead.encrypt(
        &Nonce::default(),
        Payload {
            msg: plaintext,
            aad: &aad,
        },
    )
    .map_err(|_| SecAggError::Internal("AEAD encryption"))
}

/// Decrypts a share `sender` sent to `recipient` (who holds `my_secret`).
pub fn open_share(
    session: &[u8; 32],
    my_secret: &StaticSecret,
    sender_public: &PublicKey,
    sender: ClientId,
    recipient: ClientId,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    let agreement = agree(my_secret, sender_public, sender)?;
    open_share_with(session, &agreement, sender, recipient, ciphertext)
}

/// [`open_share`] with the recipient's agreement with `sender` already computed.
pub fn open_share_with(
    session: &[u8; 32],
    agreement: &Agreement,
    sender: ClientId,
    recipient: ClientId,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    let key = share_key(session, agreement, sender, recipient)?;
    let aead = ChaCha20Poly1305::new(&(*key).into());
    let aad = share_aad(session, sender, recipient);
    aead.decrypt(
        &Nonce::default(),
        Payload {
            msg: ciphertext,
            aad: &aad,
        },
    )
    .map(Zeroizing::new)
    .map_err(|_| SecAggError::DecryptionFailed(sender))
}

/// Bytes signed when advertising keys: session, sender, both public keys and both commitments.
pub fn advertise_transcript(
    session: &[u8; 32],
    sender: ClientId,
    mask_key: &[u8; 32],
    share_key: &[u8; 32],
    nonce_commitment: &[u8; 32],
    self_mask_commitment: &[u8; 32],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(192);
    t.extend_from_slice(b"medfl-secagg/v3/advertise");
    t.extend_from_slice(session);
    t.extend_from_slice(&sender.0.to_le_bytes());
    t.extend_from_slice(mask_key);
    t.extend_from_slice(share_key);
    t.extend_from_slice(nonce_commitment);
    t.extend_from_slice(self_mask_commitment);
    t
}

fn tagged_hash(label: &[u8], session: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(session);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `H(session, client, nonce)`: the commitment to the nonce a client reveals for the graph seed.
pub fn nonce_commitment(session: &[u8; 32], client: ClientId, nonce: &[u8; 32]) -> [u8; 32] {
    tagged_hash(
        b"medfl-secagg/v3/nonce-commitment",
        session,
        &[&client.0.to_le_bytes(), nonce],
    )
}

/// `H(session, client, b)`: the commitment to a client's self-mask seed `b`.
///
/// `b` is 256 uniform bits, so the hash hides it; it lets the server tell a dealer who shared
/// a polynomial that does not open to `b` from an honest one.
pub fn self_mask_commitment(session: &[u8; 32], client: ClientId, seed: &Seed) -> [u8; 32] {
    tagged_hash(
        b"medfl-secagg/v3/self-mask-commitment",
        session,
        &[&client.0.to_le_bytes(), &seed.0],
    )
}

/// Digest of a signed advertisement (every field, the signature included), for the key
/// transcript. Callers pass a validated advertisement (fixed-length fields).
pub fn advert_digest(session: &[u8; 32], adv: &AdvertiseKeys) -> [u8; 32] {
    tagged_hash(
        b"medfl-secagg/v3/advert-digest",
        session,
        &[
            &adv.round.to_le_bytes(),
            &adv.sender.0.to_le_bytes(),
            &adv.mask_key,
            &adv.share_key,
            &adv.nonce_commitment,
            &adv.self_mask_commitment,
            &adv.signature,
        ],
    )
}

/// Hash of the key transcript: every accepted advertisement's digest and nonce commitment,
/// in client order. Every consistency signature covers it. Entries are validated (32-byte
/// fields), so the concatenation is unambiguous.
pub fn key_transcript_hash(session: &[u8; 32], entries: &[TranscriptEntry]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medfl-secagg/v3/key-transcript");
    h.update(session);
    h.update((entries.len() as u64).to_le_bytes());
    for e in entries {
        h.update(e.client.0.to_le_bytes());
        h.update(&e.advert);
        h.update(&e.nonce_commitment);
    }
    h.finalize().into()
}

/// The neighbour-graph seed: `H(session, key transcript, every revealed nonce)`, nonces in
/// client order. Each honest client's nonce was hidden when the transcript was fixed.
pub fn graph_seed(
    session: &[u8; 32],
    key_transcript: &[u8; 32],
    nonces: &[(ClientId, [u8; 32])],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medfl-secagg/v3/graph-seed");
    h.update(session);
    h.update(key_transcript);
    h.update((nonces.len() as u64).to_le_bytes());
    for (id, nonce) in nonces {
        h.update(id.0.to_le_bytes());
        h.update(nonce);
    }
    h.finalize().into()
}

/// `H(session, dealer, holder, kind, share)`: a dealer's commitment to one share it dealt.
///
/// A share is a uniformly random field element pair whenever `t >= 2` (and the secret's own
/// encoding when `t = 1`, which the seed commitment already binds), so the hash hides it.
pub fn share_commitment(
    session: &[u8; 32],
    dealer: ClientId,
    holder: ClientId,
    kind: ShareKind,
    share: &[u8; SHARE_BYTES],
) -> [u8; 32] {
    let kind = match kind {
        ShareKind::SelfMask => [0u8],
        ShareKind::MaskKey => [1u8],
    };
    tagged_hash(
        b"medfl-secagg/v3/share-commitment",
        session,
        &[
            &dealer.0.to_le_bytes(),
            &holder.0.to_le_bytes(),
            &kind,
            share,
        ],
    )
}

/// Bytes a dealer signs over its share commitments: session, key transcript, dealer, entries.
pub fn share_commitments_transcript(
    session: &[u8; 32],
    key_transcript: &[u8; 32],
    dealer: ClientId,
    entries: &[ShareCommitment],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(112 + 68 * entries.len());
    t.extend_from_slice(b"medfl-secagg/v3/share-commitments");
    t.extend_from_slice(session);
    t.extend_from_slice(key_transcript);
    t.extend_from_slice(&dealer.0.to_le_bytes());
    t.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        t.extend_from_slice(&e.holder.0.to_le_bytes());
        t.extend_from_slice(&e.self_mask);
        t.extend_from_slice(&e.mask_key);
    }
    t
}

/// `H(session, survivors)`: the survivor set as one digest, so that a consistency signature
/// covers a fixed-size message.
///
/// Every client checks up to a quorum of signatures over the same set; signing the set itself
/// made each check hash the whole list again (`O(n)` per signature, `O(n^2)` per client). The
/// list is sorted and duplicate-free (validated), and its length is bound, so the digest names
/// exactly one set.
pub fn survivor_set_digest(session: &[u8; 32], survivors: &[ClientId]) -> [u8; 32] {
    debug_assert!(
        survivors.windows(2).all(|w| w[0] < w[1]),
        "a survivor set is validated sorted and duplicate-free before it is hashed"
    );
    let mut h = Sha256::new();
    h.update(b"medfl-secagg/v4/survivor-set");
    h.update(session);
    h.update((survivors.len() as u64).to_le_bytes());
    for s in survivors {
        h.update(s.0.to_le_bytes());
    }
    h.finalize().into()
}

/// Bytes signed in the consistency check: session, key transcript, signer, and the
/// [`survivor_set_digest`] of the survivor set.
///
/// Binding the key transcript (the digests of every advertisement of this attempt, with
/// their fresh keys) makes a signature from any other attempt of the same session useless.
pub fn consistency_transcript(
    session: &[u8; 32],
    key_transcript: &[u8; 32],
    signer: ClientId,
    survivor_set: &[u8; 32],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(27 + 32 + 32 + 4 + 32);
    t.extend_from_slice(b"medfl-secagg/v4/consistency");
    t.extend_from_slice(session);
    t.extend_from_slice(key_transcript);
    t.extend_from_slice(&signer.0.to_le_bytes());
    t.extend_from_slice(survivor_set);
    t
}

/// Signs `transcript` with the identity key.
pub fn sign(key: &SigningKey, transcript: &[u8]) -> Vec<u8> {
    key.sign(transcript).to_bytes().to_vec()
}

/// Verifies a 64-byte ed25519 signature by `signer` (strict: no malleability).
pub fn verify(
    key: &VerifyingKey,
    signer: ClientId,
    transcript: &[u8],
    signature: &[u8],
) -> Result<(), SecAggError> {
    let sig = Signature::from_slice(signature).map_err(|_| SecAggError::Malformed {
        field: "signature",
        expected: 64,
        got: signature.len(),
    })?;
    key.verify_strict(transcript, &sig)
        .map_err(|_| SecAggError::InvalidSignature(signer))
}

/// Checks many signatures at once, naming the first bad signer.
///
/// Alone (a daemon), ed25519 batch verification costs about half as much per signature as
/// single checks (one multiscalar multiplication); it binds coefficients to every input, so a
/// forged signature passes with negligible probability. When the batch fails, each signature is
/// checked strictly on its own to name the culprit; that path only runs on an attack.
///
/// With a `cache` (a simulation's sessions, see [`crate::SharedSessions`]), each signature is
/// checked strictly and the pass remembered: a batch verdict depends on the rest of the batch
/// (a signature with a torsion component passes some batches and fails others), so it cannot
/// be shared between members without making one member's verdict depend on another's. Strict
/// is the stricter rule; the two differ only on such signatures, which no honest signer makes.
pub fn verify_all(
    items: &[(ClientId, &VerifyingKey, &[u8], &[u8])],
    cache: Option<&SignatureCache>,
) -> Result<(), SecAggError> {
    if let Some(cache) = cache {
        for (signer, key, transcript, sig) in items {
            let bytes: &[u8; 64] = (*sig).try_into().map_err(|_| SecAggError::Malformed {
                field: "signature",
                expected: 64,
                got: sig.len(),
            })?;
            if !cache.verify::<StrictRule>(key, transcript, bytes) {
                return Err(SecAggError::InvalidSignature(*signer));
            }
        }
        return Ok(());
    }
    let mut signatures = Vec::with_capacity(items.len());
    for (_, _, _, sig) in items {
        signatures.push(
            Signature::from_slice(sig).map_err(|_| SecAggError::Malformed {
                field: "signature",
                expected: 64,
                got: sig.len(),
            })?,
        );
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, _, m, _)| *m).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(_, k, _, _)| **k).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Ok(());
    }
    for (signer, key, transcript, sig) in items {
        verify(key, *signer, transcript, sig)?;
    }
    Ok(())
}

/// [`verify`], as the sessions of one process share its passes.
struct StrictRule;

impl SignatureRule for StrictRule {
    type Key = VerifyingKey;
    const NAME: &'static str = "medfl-secagg/verify-strict";
    fn key_bytes(key: &VerifyingKey) -> [u8; 32] {
        key.to_bytes()
    }
    fn check(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
        key.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// Reads a 32-byte field (a digest, nonce or commitment).
pub fn array32(bytes: &[u8], field: &'static str) -> Result<[u8; 32], SecAggError> {
    bytes.try_into().map_err(|_| SecAggError::Malformed {
        field,
        expected: 32,
        got: bytes.len(),
    })
}

/// Parses a 32-byte X25519 public key field.
pub fn parse_public_key(bytes: &[u8], field: &'static str) -> Result<PublicKey, SecAggError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| SecAggError::Malformed {
        field,
        expected: 32,
        got: bytes.len(),
    })?;
    Ok(PublicKey::from(arr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_consistency_signature_covers_exactly_one_survivor_set() {
        let ids = |v: &[u32]| v.iter().map(|&i| ClientId(i)).collect::<Vec<_>>();
        let set = ids(&[1, 2, 3, 4]);
        let digest = survivor_set_digest(&[0; 32], &set);
        for other in [
            ids(&[1, 2, 3]),
            ids(&[1, 2, 3, 5]),
            ids(&[0, 1, 2, 3, 4]),
            ids(&[]),
        ] {
            assert_ne!(survivor_set_digest(&[0; 32], &other), digest, "{other:?}");
        }
        assert_ne!(
            survivor_set_digest(&[1; 32], &set),
            digest,
            "another round's session"
        );

        let key = SigningKey::from_bytes(&[7; 32]);
        let signed = consistency_transcript(&[0; 32], &[9; 32], ClientId(1), &digest);
        let signature = sign(&key, &signed);
        let vk = key.verifying_key();
        verify(&vk, ClientId(1), &signed, &signature).unwrap();
        let smaller = survivor_set_digest(&[0; 32], &ids(&[1, 2, 3]));
        let shown = consistency_transcript(&[0; 32], &[9; 32], ClientId(1), &smaller);
        assert!(verify(&vk, ClientId(1), &shown, &signature).is_err());
    }

    #[test]
    fn pairwise_seed_is_symmetric_and_round_bound() {
        let mut rng = chacha20::ChaCha20Rng::from_seed([1; 32]);
        let a = StaticSecret::random_from_rng(&mut rng);
        let b = StaticSecret::random_from_rng(&mut rng);
        let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
        let s1 = pairwise_seed(&[0; 32], &a, &pb, ClientId(1), ClientId(2)).unwrap();
        let s2 = pairwise_seed(&[0; 32], &b, &pa, ClientId(2), ClientId(1)).unwrap();
        let s3 = pairwise_seed(&[1; 32], &a, &pb, ClientId(1), ClientId(2)).unwrap();
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
    }

    #[test]
    fn share_encryption_roundtrip_and_binding() {
        let mut rng = chacha20::ChaCha20Rng::from_seed([2; 32]);
        let a = StaticSecret::random_from_rng(&mut rng);
        let b = StaticSecret::random_from_rng(&mut rng);
        let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
        let (ia, ib) = (ClientId(4), ClientId(9));
        let ct = seal_share(&[3; 32], &a, &pb, ia, ib, b"hello").unwrap();
        assert_eq!(
            &open_share(&[3; 32], &b, &pa, ia, ib, &ct).unwrap()[..],
            b"hello"
        );
        // Wrong round, wrong direction, tampering: all rejected.
        assert!(open_share(&[4; 32], &b, &pa, ia, ib, &ct).is_err());
        assert!(open_share(&[3; 32], &b, &pa, ib, ia, &ct).is_err());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open_share(&[3; 32], &b, &pa, ia, ib, &bad).is_err());
    }

    #[test]
    fn low_order_key_rejected() {
        let zero = PublicKey::from([0u8; 32]);
        assert_eq!(
            check_public_key(&zero, ClientId(3)),
            Err(SecAggError::NonContributoryKey(ClientId(3)))
        );
    }
}
