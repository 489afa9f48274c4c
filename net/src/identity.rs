//! One identity per member: the libp2p identity is derived from the ledger key.
//!
//! A member's ledger key is an ed25519 [`SigningKey`]; its libp2p [`Keypair`] is built from the
//! same 32 secret bytes, so the [`PeerId`] a connection authenticates with (through the Noise
//! handshake) is a function of the member's ledger [`VerifyingKey`]. The allowlist can therefore
//! be computed from the ledger's member registry with [`peer_id_of`], without any extra mapping.

use ed25519_dalek::{SigningKey, VerifyingKey};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};

/// Builds the libp2p keypair that has the same ed25519 secret as the ledger `key`.
#[must_use]
pub fn keypair_from_signing_key(key: &SigningKey) -> Keypair {
    // `try_from_bytes` zeroizes the buffer it is given; the copy never outlives this call.
    let mut secret = key.to_bytes();
    // A 32-byte slice is always a valid ed25519 secret key, so this cannot fail.
    let secret = ed25519::SecretKey::try_from_bytes(&mut secret)
        .unwrap_or_else(|_| unreachable!("any 32 bytes are an ed25519 secret key"));
    Keypair::from(ed25519::Keypair::from(secret))
}

/// The libp2p public key with the same bytes as the ledger verifying key.
fn public_key_of(key: &VerifyingKey) -> PublicKey {
    // A `VerifyingKey` is a valid curve point by construction, so decoding cannot fail.
    let public = ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("a VerifyingKey is a valid ed25519 public key"));
    PublicKey::from(public)
}

/// The [`PeerId`] a member with ledger verifying key `key` authenticates as.
#[must_use]
pub fn peer_id_of(key: &VerifyingKey) -> PeerId {
    public_key_of(key).to_peer_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_from_public_key_matches_keypair() {
        for seed in [[0u8; 32], [7u8; 32], [255u8; 32]] {
            let key = SigningKey::from_bytes(&seed);
            let keypair = keypair_from_signing_key(&key);
            assert_eq!(
                keypair.public().to_peer_id(),
                peer_id_of(&key.verifying_key())
            );
        }
    }

    #[test]
    fn libp2p_signature_verifies_with_ledger_key() {
        let key = SigningKey::from_bytes(&[42u8; 32]);
        let keypair = keypair_from_signing_key(&key);
        let msg = b"round 3 anchor";
        let sig = keypair.sign(msg).expect("ed25519 signing does not fail");
        let sig = ed25519_dalek::Signature::from_slice(&sig).expect("64-byte signature");
        key.verifying_key()
            .verify_strict(msg, &sig)
            .expect("same key");
    }

    #[test]
    fn distinct_keys_give_distinct_peers() {
        let a = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[2u8; 32]).verifying_key();
        assert_ne!(peer_id_of(&a), peer_id_of(&b));
    }
}
