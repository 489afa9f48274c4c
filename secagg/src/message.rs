//! Wire messages, as plain serde types, and their structural validation.
//!
//! Keys, signatures and ciphertexts are carried as byte vectors rather than
//! fixed arrays so that the receiver, not the decoder, decides what a wrong
//! length means: [`ClientMessage::validate`] and [`ServerMessage::validate`]
//! turn it into a typed [`SecAggError::Malformed`]. Validation here covers
//! everything checkable from the message and the plan alone (round, lengths,
//! ranges, sortedness, roster membership); the state machines check the rest
//! (stage, duplicates, neighbourhoods, signatures).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{ClientId, RoundPlan};
use crate::crypto::SHARE_CIPHERTEXT_LEN;
use crate::error::SecAggError;
use crate::packed::PackedVector;
use crate::shamir::SHARE_BYTES;

/// The six protocol stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// Clients publish signed X25519 public keys and commitments to a nonce and a self-mask seed.
    AdvertiseKeys,
    /// Clients, shown the key transcript, reveal the nonces that seed the neighbour graph.
    RevealNonces,
    /// Clients send encrypted Shamir shares to their neighbours via the server.
    ShareKeys,
    /// Clients send their masked inputs.
    MaskedInput,
    /// Clients sign the survivor set and check each other's signatures.
    ConsistencyCheck,
    /// Clients reveal the shares the server needs to remove masks.
    Unmask,
}

/// Signed advertisement of a client's two X25519 public keys and two commitments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiseKeys {
    /// Round id.
    pub round: u64,
    /// Advertising client (signed, so it can be forwarded verbatim).
    pub sender: ClientId,
    /// Public key `C_i` for pairwise mask agreement.
    pub mask_key: Vec<u8>,
    /// Public key `S_i` for share encryption.
    pub share_key: Vec<u8>,
    /// [`crate::crypto::nonce_commitment`] to the nonce revealed in [`Stage::RevealNonces`].
    pub nonce_commitment: Vec<u8>,
    /// [`crate::crypto::self_mask_commitment`] to the self-mask seed `b_i`.
    pub self_mask_commitment: Vec<u8>,
    /// ed25519 signature over [`crate::crypto::advertise_transcript`].
    pub signature: Vec<u8>,
}

/// One accepted advertisement in the key transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// The advertising client.
    pub client: ClientId,
    /// [`crate::crypto::advert_digest`] of its signed advertisement.
    pub advert: Vec<u8>,
    /// Its nonce commitment, repeated so every client can check every revealed nonce.
    pub nonce_commitment: Vec<u8>,
}

/// A dealer's commitments to the shares it dealt one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareCommitment {
    /// The holder.
    pub holder: ClientId,
    /// [`crate::crypto::share_commitment`] of the holder's self-mask share.
    pub self_mask: Vec<u8>,
    /// [`crate::crypto::share_commitment`] of the holder's mask-key share.
    pub mask_key: Vec<u8>,
}

/// A dealer's signed list of share commitments, one per holder, sorted by holder.
///
/// Holders check their decrypted shares against it (naming the dealer if they differ); the
/// server checks revealed shares against it (naming the holder if they differ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareCommitments {
    /// The dealer (signed, so the list can be forwarded verbatim).
    pub dealer: ClientId,
    /// One entry per holder, strictly increasing by holder.
    pub entries: Vec<ShareCommitment>,
    /// ed25519 signature over [`crate::crypto::share_commitments_transcript`].
    pub signature: Vec<u8>,
}

/// One encrypted share bundle addressed to a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    /// Recipient (when sent) or sender (when forwarded) of the ciphertext.
    pub peer: ClientId,
    /// ChaCha20-Poly1305 ciphertext of both shares for that neighbour.
    pub ciphertext: Vec<u8>,
}

/// Which of a neighbour's two secrets a share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShareKind {
    /// Share of the self-mask seed `b_j` (requested when `j` survived).
    SelfMask,
    /// Share of the mask secret key `c_j` (requested when `j` dropped).
    MaskKey,
}

/// A share revealed during unmasking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedShare {
    /// Whose secret this is a share of.
    pub owner: ClientId,
    /// Which secret.
    pub kind: ShareKind,
    /// Encoded [`crate::shamir::SecretShare`] (64 bytes).
    pub share: Vec<u8>,
}

/// Messages from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Stage 0: signed public keys and commitments.
    AdvertiseKeys(AdvertiseKeys),
    /// Stage 1: the nonce committed to in the advertisement.
    RevealNonce {
        /// Round id.
        round: u64,
        /// 32 bytes.
        nonce: Vec<u8>,
    },
    /// Stage 2: encrypted shares, one per neighbour (`peer` = recipient), and their commitments.
    ShareKeys {
        /// Round id.
        round: u64,
        /// The ciphertexts.
        shares: Vec<EncryptedShare>,
        /// The signed commitments to every share dealt.
        commitments: ShareCommitments,
    },
    /// Stage 2: the masked input `y_i` over `Z_{2^b}`.
    MaskedInput {
        /// Round id.
        round: u64,
        /// `x_i + PRG(b_i) + Σ ± PRG(s_ij) mod 2^b`, packed to `b` bits per
        /// coordinate (`ceil(d*b/8)` bytes, see [`crate::packed`]).
        masked: PackedVector,
    },
    /// Stage 3: signature over the survivor set the server announced.
    ConsistencySignature {
        /// Round id.
        round: u64,
        /// ed25519 signature over [`crate::crypto::consistency_transcript`].
        signature: Vec<u8>,
    },
    /// Stage 4: revealed shares.
    UnmaskShares {
        /// Round id.
        round: u64,
        /// One share per neighbour the server asked about.
        shares: Vec<RevealedShare>,
    },
}

/// Messages from the server to one client.
///
/// What every client is sent alike (the key transcript, the nonces, the survivor set, the
/// consistency proof) is held in an `Arc`: the server builds it once and every outgoing message
/// points at it, so a server of `n` clients holds one copy, not `n`. On the wire an `Arc<[T]>`
/// is the plain sequence, so this costs the format nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Every advertisement the server accepted, as digests: the key transcript.
    KeyTranscript {
        /// Round id.
        round: u64,
        /// Strictly increasing by client.
        entries: Arc<[TranscriptEntry]>,
    },
    /// Every revealed nonce, and the advertisements of the recipient's neighbours.
    KeyRoster {
        /// Round id.
        round: u64,
        /// `(client, nonce)` for every member of the key transcript, strictly increasing.
        nonces: Arc<[(ClientId, Vec<u8>)]>,
        /// Signed advertisements, forwarded verbatim.
        keys: Vec<AdvertiseKeys>,
    },
    /// Ciphertexts neighbours addressed to the recipient (`peer` = sender).
    ForwardShares {
        /// Round id.
        round: u64,
        /// The ciphertexts.
        shares: Vec<EncryptedShare>,
        /// The senders' signed share commitments (each shared by its dealer's recipients).
        commitments: Vec<Arc<ShareCommitments>>,
    },
    /// The set `U3` of clients whose masked inputs the server accepted.
    SurvivorSet {
        /// Round id.
        round: u64,
        /// Sorted, duplicate-free.
        survivors: Arc<[ClientId]>,
    },
    /// Consistency signatures of all responders, and which shares to reveal.
    UnmaskRequest {
        /// Round id.
        round: u64,
        /// `(signer, signature)` pairs collected in the consistency stage.
        signatures: Arc<[(ClientId, Vec<u8>)]>,
        /// `(neighbour, kind)`: reveal that neighbour's share of that secret.
        reveal: Vec<(ClientId, ShareKind)>,
    },
}

fn check_len(field: &'static str, got: usize, expected: usize) -> Result<(), SecAggError> {
    if got == expected {
        Ok(())
    } else {
        Err(SecAggError::Malformed {
            field,
            expected,
            got,
        })
    }
}

fn check_bounded(field: &'static str, got: usize, max: usize) -> Result<(), SecAggError> {
    if got <= max {
        Ok(())
    } else {
        Err(SecAggError::Malformed {
            field,
            expected: max,
            got,
        })
    }
}

fn check_increasing(
    field: &'static str,
    ids: impl Iterator<Item = ClientId>,
) -> Result<(), SecAggError> {
    let mut prev: Option<ClientId> = None;
    for id in ids {
        if prev.is_some_and(|p| p >= id) {
            return Err(SecAggError::Unsorted(field));
        }
        prev = Some(id);
    }
    Ok(())
}

impl AdvertiseKeys {
    /// Checks round, roster membership and field lengths.
    pub fn validate(&self, plan: &RoundPlan) -> Result<(), SecAggError> {
        plan.check_round(self.round)?;
        plan.check_member(self.sender)?;
        check_len("mask_key", self.mask_key.len(), 32)?;
        check_len("share_key", self.share_key.len(), 32)?;
        check_len("nonce_commitment", self.nonce_commitment.len(), 32)?;
        check_len("self_mask_commitment", self.self_mask_commitment.len(), 32)?;
        check_len("signature", self.signature.len(), 64)
    }
}

impl ShareCommitments {
    /// Checks membership, lengths, order, and that the list is no longer than a neighbourhood.
    pub fn validate(&self, plan: &RoundPlan) -> Result<(), SecAggError> {
        plan.check_member(self.dealer)?;
        check_bounded("share commitments", self.entries.len(), plan.degree)?;
        for e in &self.entries {
            plan.check_member(e.holder)?;
            check_len("self_mask commitment", e.self_mask.len(), 32)?;
            check_len("mask_key commitment", e.mask_key.len(), 32)?;
        }
        check_increasing("share commitments", self.entries.iter().map(|e| e.holder))?;
        check_len("signature", self.signature.len(), 64)
    }
}

impl ClientMessage {
    /// The stage this message belongs to.
    pub fn stage(&self) -> Stage {
        match self {
            ClientMessage::AdvertiseKeys(_) => Stage::AdvertiseKeys,
            ClientMessage::RevealNonce { .. } => Stage::RevealNonces,
            ClientMessage::ShareKeys { .. } => Stage::ShareKeys,
            ClientMessage::MaskedInput { .. } => Stage::MaskedInput,
            ClientMessage::ConsistencySignature { .. } => Stage::ConsistencyCheck,
            ClientMessage::UnmaskShares { .. } => Stage::Unmask,
        }
    }

    /// Structural checks a server runs before touching any state.
    pub fn validate(&self, plan: &RoundPlan) -> Result<(), SecAggError> {
        let n = plan.roster.len();
        match self {
            ClientMessage::AdvertiseKeys(a) => a.validate(plan),
            ClientMessage::RevealNonce { round, nonce } => {
                plan.check_round(*round)?;
                check_len("nonce", nonce.len(), 32)
            }
            ClientMessage::ShareKeys {
                round,
                shares,
                commitments,
            } => {
                plan.check_round(*round)?;
                check_bounded("shares", shares.len(), plan.degree)?;
                for s in shares {
                    plan.check_member(s.peer)?;
                    check_len("ciphertext", s.ciphertext.len(), SHARE_CIPHERTEXT_LEN)?;
                }
                commitments.validate(plan)
            }
            ClientMessage::MaskedInput { round, masked } => {
                plan.check_round(*round)?;
                // Exact byte length and zero padding: every coordinate is in Z_{2^b} by construction.
                masked.validate(plan.config.vector_len, plan.config.bits)
            }
            ClientMessage::ConsistencySignature { round, signature } => {
                plan.check_round(*round)?;
                check_len("signature", signature.len(), 64)
            }
            ClientMessage::UnmaskShares { round, shares } => {
                plan.check_round(*round)?;
                check_bounded("shares", shares.len(), n)?;
                for s in shares {
                    plan.check_member(s.owner)?;
                    check_len("share", s.share.len(), SHARE_BYTES)?;
                }
                Ok(())
            }
        }
    }
}

impl ServerMessage {
    /// The stage a client must be in to accept this message.
    pub fn stage(&self) -> Stage {
        match self {
            ServerMessage::KeyTranscript { .. } => Stage::AdvertiseKeys,
            ServerMessage::KeyRoster { .. } => Stage::RevealNonces,
            ServerMessage::ForwardShares { .. } => Stage::ShareKeys,
            ServerMessage::SurvivorSet { .. } => Stage::MaskedInput,
            ServerMessage::UnmaskRequest { .. } => Stage::ConsistencyCheck,
        }
    }

    /// Structural checks a client runs before touching any state.
    pub fn validate(&self, plan: &RoundPlan) -> Result<(), SecAggError> {
        let n = plan.roster.len();
        match self {
            ServerMessage::KeyTranscript { round, entries } => {
                plan.check_round(*round)?;
                check_bounded("key transcript", entries.len(), n)?;
                for e in entries.iter() {
                    plan.check_member(e.client)?;
                    check_len("advert digest", e.advert.len(), 32)?;
                    check_len("nonce_commitment", e.nonce_commitment.len(), 32)?;
                }
                check_increasing("key transcript", entries.iter().map(|e| e.client))
            }
            ServerMessage::KeyRoster {
                round,
                nonces,
                keys,
            } => {
                plan.check_round(*round)?;
                check_bounded("nonces", nonces.len(), n)?;
                for (id, nonce) in nonces.iter() {
                    plan.check_member(*id)?;
                    check_len("nonce", nonce.len(), 32)?;
                }
                check_increasing("nonces", nonces.iter().map(|(id, _)| *id))?;
                check_bounded("keys", keys.len(), plan.degree)?;
                keys.iter().try_for_each(|k| k.validate(plan))
            }
            ServerMessage::ForwardShares {
                round,
                shares,
                commitments,
            } => {
                plan.check_round(*round)?;
                check_bounded("shares", shares.len(), plan.degree)?;
                for s in shares {
                    plan.check_member(s.peer)?;
                    check_len("ciphertext", s.ciphertext.len(), SHARE_CIPHERTEXT_LEN)?;
                }
                check_bounded("commitments", commitments.len(), plan.degree)?;
                commitments.iter().try_for_each(|c| c.validate(plan))
            }
            ServerMessage::SurvivorSet { round, survivors } => {
                plan.check_round(*round)?;
                check_bounded("survivors", survivors.len(), n)?;
                survivors.iter().try_for_each(|&s| plan.check_member(s))?;
                if survivors.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(SecAggError::Unsorted("survivors"));
                }
                Ok(())
            }
            ServerMessage::UnmaskRequest {
                round,
                signatures,
                reveal,
            } => {
                plan.check_round(*round)?;
                check_bounded("signatures", signatures.len(), n)?;
                check_bounded("reveal", reveal.len(), 2 * n)?;
                for (id, sig) in signatures.iter() {
                    plan.check_member(*id)?;
                    check_len("signature", sig.len(), 64)?;
                }
                reveal.iter().try_for_each(|&(id, _)| plan.check_member(id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Roster, SecAggConfig};

    fn plan(d: usize, bits: u32) -> RoundPlan {
        let roster: Roster = (0..4u32)
            .map(|i| {
                let sk = ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 1; 32]);
                (ClientId(i), sk.verifying_key())
            })
            .collect();
        let mut c = SecAggConfig::new(3, d);
        c.bits = bits;
        RoundPlan::new(&c, &roster).unwrap()
    }

    #[test]
    fn masked_input_costs_d_b_over_8_bytes_plus_a_small_header() {
        let cfg = bincode::config::standard();
        for (d, bits) in [(10_000usize, 32u32), (10_000, 20), (100_000, 64), (999, 7)] {
            let p = plan(d, bits);
            let v: Vec<u64> = (0..d as u64).map(|i| !i & p.modulus_mask).collect();
            let msg = ClientMessage::MaskedInput {
                round: 3,
                masked: PackedVector::pack(&v, bits).unwrap(),
            };
            msg.validate(&p).unwrap();
            let enc = bincode::serde::encode_to_vec(&msg, cfg).unwrap();
            let payload = (d * bits as usize).div_ceil(8);
            // Variant tag + round varint + length varint: at most 1 + 9 + 9 bytes.
            assert!(
                enc.len() >= payload && enc.len() <= payload + 19,
                "{d} {bits}: {}",
                enc.len()
            );
            let (back, _): (ClientMessage, usize) =
                bincode::serde::decode_from_slice(&enc, cfg).unwrap();
            let ClientMessage::MaskedInput { masked, .. } = back else {
                panic!("wrong variant");
            };
            assert_eq!(masked.unpack(d, bits).unwrap(), v);
        }
    }

    #[test]
    fn masked_input_with_set_padding_bits_is_refused() {
        // 5 coordinates of 12 bits: 60 bits in 8 bytes, the top 4 bits are padding.
        let p = plan(5, 12);
        let mut bytes = PackedVector::pack(&[0xFFF; 5], 12)
            .unwrap()
            .as_bytes()
            .to_vec();
        bytes[7] |= 0x10;
        let msg = ClientMessage::MaskedInput {
            round: 3,
            masked: PackedVector::from_bytes(bytes),
        };
        assert_eq!(msg.validate(&p), Err(SecAggError::NonZeroPadding));
    }
}
