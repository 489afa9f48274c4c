//! The coordinator's signed answer to a peer it will not talk to: a revoked member learns that
//! it was revoked, by whom, when and why, and an outsider that it is not a member of this
//! consortium, instead of a connection that closes for no stated reason. Signed, so the peer
//! can keep it as evidence and check it against its own copy of the ledger.

use ed25519_dalek::Signer;
use medfl_ledger::state::ChainState;
use medfl_ledger::{Hash, MemberId, Role, Signature, Timestamp, codec};
use serde::{Deserialize, Serialize};

/// Why the coordinator refuses a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The member is revoked on the ledger.
    Revoked {
        /// The revoked member.
        member: MemberId,
        /// Height of the block that holds the revocation.
        height: u64,
        /// Who signed the revocation.
        by: MemberId,
        /// Time of the block that holds it.
        at: Timestamp,
        /// The reason it gives.
        reason: String,
    },
    /// The peer's key belongs to no member of this consortium.
    NotAMember,
}

/// A refusal, as signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The consortium.
    pub genesis: Hash,
    /// The coordinator's ledger height when it refused.
    pub height: u64,
    /// Why.
    pub reason: RefusalReason,
}

/// A [`Refusal`] with its signer and signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRefusal {
    /// What was said.
    pub refusal: Refusal,
    /// The coordinator who said it.
    pub signer: MemberId,
    /// Its signature over [`Refusal::signing_message`].
    pub signature: Signature,
}

/// Why a refusal cannot be believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalError {
    /// It is for another consortium.
    #[error("the refusal is for another consortium (genesis {0})")]
    OtherConsortium(Hash),
    /// Its signer is not an active coordinator on the reader's copy of the ledger.
    #[error("the refusal is signed by {0}, not an active coordinator on our ledger")]
    NotACoordinator(MemberId),
    /// The signature does not verify.
    #[error("the refusal's signature does not verify")]
    BadSignature,
    /// It could not be encoded.
    #[error("the refusal cannot be encoded: {0}")]
    Codec(String),
}

impl Refusal {
    /// The bytes a coordinator signs: a domain tag and the canonical encoding.
    pub fn signing_message(&self) -> Result<Vec<u8>, RefusalError> {
        let body = codec::encode(self).map_err(|e| RefusalError::Codec(e.to_string()))?;
        let mut message = b"medfl/refusal/v1".to_vec();
        message.extend_from_slice(&body);
        Ok(message)
    }

    /// Signs the refusal as coordinator `signer`.
    pub fn sign(
        self,
        signer: MemberId,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<SignedRefusal, RefusalError> {
        let signature = key.sign(&self.signing_message()?).into();
        Ok(SignedRefusal {
            refusal: self,
            signer,
            signature,
        })
    }
}

impl SignedRefusal {
    /// Checks the refusal against the reader's own copy of the ledger: same consortium, signed
    /// by a coordinator active on it. The reason itself is the coordinator's word; a revocation
    /// it names is proven only once its block is on the reader's copy.
    pub fn verify(&self, chain: &ChainState) -> Result<&Refusal, RefusalError> {
        if self.refusal.genesis != chain.genesis_hash() {
            return Err(RefusalError::OtherConsortium(self.refusal.genesis));
        }
        let key = match chain.member(&self.signer) {
            Some(r) if !r.revoked && r.member.role == Role::Coordinator => r.member.public_key,
            _ => return Err(RefusalError::NotACoordinator(self.signer.clone())),
        };
        if !key.verify(&self.refusal.signing_message()?, &self.signature) {
            return Err(RefusalError::BadSignature);
        }
        Ok(&self.refusal)
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::Revoked {
                member,
                height,
                by,
                at,
                reason,
            } => write!(
                f,
                "{member} was revoked by {by} at {at} (block {height}): {}",
                printable(reason)
            ),
            RefusalReason::NotAMember => {
                f.write_str("this key belongs to no member of the consortium")
            }
        }
    }
}

/// A reason as it may be logged: at most [`MAX_REASON_SHOWN`] characters, control characters
/// escaped (a coordinator's claim is not trusted to be short or printable).
fn printable(reason: &str) -> String {
    let shown: String = reason.chars().take(MAX_REASON_SHOWN).collect();
    let mut out = shown.escape_debug().to_string();
    if reason.chars().count() > MAX_REASON_SHOWN {
        out.push('…');
    }
    out
}

/// Characters of a refusal's reason shown in logs.
pub const MAX_REASON_SHOWN: usize = 200;

impl RefusalReason {
    /// Whether `chain` records this very revocation: the member revoked at that height, by
    /// that signer, at that time, for that reason. Only then is a revocation claim proven to
    /// the reader (the coordinator's signature alone proves only that it said so).
    pub fn proven_on(&self, chain: &ChainState) -> bool {
        match self {
            RefusalReason::Revoked {
                member,
                height,
                by,
                at,
                reason,
            } => chain
                .member(member)
                .and_then(|m| m.revocation.as_ref())
                .is_some_and(|r| {
                    r.height == *height && r.by == *by && r.at == *at && r.reason == *reason
                }),
            RefusalReason::NotAMember => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_ledger::testkit::Fixture;

    #[test]
    fn a_refusal_verifies_only_from_an_active_coordinator_of_this_consortium() {
        let f = Fixture::new(1, 2, 1);
        let chain = ChainState::from_genesis(&f.genesis).unwrap();
        let (coord, key) = f.coordinator();
        let refusal = Refusal {
            genesis: f.genesis_hash,
            height: 0,
            reason: RefusalReason::NotAMember,
        };
        let signed = refusal.clone().sign(coord.clone(), key).unwrap();
        assert_eq!(signed.verify(&chain), Ok(&refusal));

        // Signed by a hospital: refused.
        let h = Fixture::id("hospital-0");
        let by_hospital = refusal.clone().sign(h.clone(), f.key(&h)).unwrap();
        assert_eq!(
            by_hospital.verify(&chain),
            Err(RefusalError::NotACoordinator(h))
        );
        // Altered after signing: refused.
        let mut altered = signed.clone();
        altered.refusal.height = 9;
        assert_eq!(altered.verify(&chain), Err(RefusalError::BadSignature));
        // Another consortium's: refused.
        let other = Fixture::new(2, 2, 1);
        let other_chain = ChainState::from_genesis(&other.genesis).unwrap();
        assert!(matches!(
            signed.verify(&other_chain),
            Err(RefusalError::OtherConsortium(_))
        ));
    }
}
