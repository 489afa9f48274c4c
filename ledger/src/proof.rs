//! Inclusion proofs: evidence that a transaction is on the ledger, checkable by a light client
//! that holds nothing but the genesis.
//!
//! A proof carries the transaction, its Merkle path to its block's transaction root, and every
//! signed header from height 1 to that block. The light client checks that the headers chain
//! from the genesis hash, that each is signed by a coordinator named in the genesis, and that the
//! path leads from the transaction id to the root in the last header.
//!
//! Limits, stated plainly: the proof grows with the height (about 200 bytes a block), and a
//! light client can only follow proposers it knows from the genesis; a chain whose blocks are
//! proposed by a coordinator admitted later is refused with [`ProofError::UnknownProposer`].

use serde::{Deserialize, Serialize};

use crate::block::SignedHeader;
use crate::bytes::Hash;
use crate::codec::CodecError;
use crate::genesis::Genesis;
use crate::member::{MemberId, Role};
use crate::merkle::MerklePath;
use crate::timestamp::Timestamp;
use crate::tx::{Transaction, TxId};

/// Evidence that a transaction is in a block of the ledger.
///
/// In JSON the transaction travels as the hex of its canonical bytes, the very bytes its id
/// hashes: a proof must not depend on a text format re-encoding every value (a float, say)
/// exactly as the ledger did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The genesis the chain starts from.
    pub genesis: Hash,
    /// The transaction.
    #[serde(with = "canonical_tx")]
    pub tx: Transaction,
    /// Its Merkle path in its block.
    pub path: MerklePath,
    /// Signed headers from height 1 up to the block holding the transaction.
    pub headers: Vec<SignedHeader>,
}

/// Serde for the proven transaction: canonical bytes (hex in human-readable formats), decoded
/// canonically, so what is read back is exactly what was hashed.
mod canonical_tx {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::codec;
    use crate::tx::Transaction;

    pub(super) fn serialize<S: Serializer>(tx: &Transaction, s: S) -> Result<S::Ok, S::Error> {
        let bytes = codec::encode(tx).map_err(serde::ser::Error::custom)?;
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            bytes.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transaction, D::Error> {
        let bytes = if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            hex::decode(text.trim())
                .map_err(|e| serde::de::Error::custom(format!("the transaction is not hex: {e}")))?
        } else {
            Vec::<u8>::deserialize(d)?
        };
        codec::decode(&bytes).map_err(|e| {
            serde::de::Error::custom(format!("the transaction's bytes do not decode: {e}"))
        })
    }
}

/// What a checked proof establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenTx {
    /// The transaction id.
    pub id: TxId,
    /// Its kind, as `medfl ledger show` names it.
    pub kind: &'static str,
    /// Who signed it.
    pub signer: MemberId,
    /// Height of its block.
    pub height: u64,
    /// Time of its block.
    pub block_time: Timestamp,
    /// Whether the signer's own signature was checked too (only possible for founding members).
    pub signer_checked: bool,
}

/// Why a proof does not hold.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProofError {
    /// The proof is for another ledger.
    #[error("the proof is for genesis {proof}, not {genesis}")]
    WrongGenesis {
        /// Genesis hash in the proof.
        proof: Hash,
        /// Genesis hash of the light client.
        genesis: Hash,
    },
    /// No headers.
    #[error("the proof carries no block header")]
    NoHeaders,
    /// A header does not follow its predecessor.
    #[error("header {index}: {reason}")]
    BrokenChain {
        /// Position in the proof.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A header was proposed by someone the genesis does not name as a coordinator.
    #[error("header at height {height}: proposer {proposer} is not a founding coordinator")]
    UnknownProposer {
        /// Height.
        height: u64,
        /// Proposer.
        proposer: MemberId,
    },
    /// A header's signature does not verify.
    #[error("header at height {0}: the proposer's signature does not verify")]
    BadHeaderSignature(u64),
    /// The Merkle path does not lead to the block's root.
    #[error("the Merkle path does not lead to the transaction root of block {0}")]
    NotInBlock(u64),
    /// A founding member's transaction signature does not verify.
    #[error("the transaction's signature by {0} does not verify")]
    BadTxSignature(MemberId),
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl InclusionProof {
    /// Checks the proof against `genesis` alone.
    pub fn verify(&self, genesis: &Genesis) -> Result<ProvenTx, ProofError> {
        let genesis_hash = genesis.hash()?;
        if self.genesis != genesis_hash {
            return Err(ProofError::WrongGenesis {
                proof: self.genesis,
                genesis: genesis_hash,
            });
        }
        let mut previous = genesis_hash;
        let mut previous_time = genesis.created_at;
        for (index, signed) in self.headers.iter().enumerate() {
            let h = &signed.header;
            let broken = |reason: String| ProofError::BrokenChain { index, reason };
            if h.height != index as u64 + 1 {
                return Err(broken(format!(
                    "height {} where {} was expected",
                    h.height,
                    index + 1
                )));
            }
            if h.previous != previous {
                return Err(broken("does not link to the header before it".into()));
            }
            if h.timestamp < previous_time {
                return Err(broken("time goes backwards".into()));
            }
            let key = match genesis.member(&h.proposer) {
                Some(m) if m.role == Role::Coordinator => m.public_key,
                _ => {
                    return Err(ProofError::UnknownProposer {
                        height: h.height,
                        proposer: h.proposer.clone(),
                    });
                }
            };
            if !key.verify(&h.signing_message(&genesis_hash)?, &signed.signature) {
                return Err(ProofError::BadHeaderSignature(h.height));
            }
            previous = signed.hash()?;
            previous_time = h.timestamp;
        }
        let last = &self.headers.last().ok_or(ProofError::NoHeaders)?.header;
        let id = self.tx.id()?;
        if self.path.leaf_count != u64::from(last.tx_count)
            || self.path.root_from(&id) != Some(last.tx_root)
        {
            return Err(ProofError::NotInBlock(last.height));
        }
        let signer_checked = match genesis.member(&self.tx.signer) {
            Some(m) => {
                if !self.tx.verify_signature(&genesis_hash, &m.public_key)? {
                    return Err(ProofError::BadTxSignature(self.tx.signer.clone()));
                }
                true
            }
            None => false,
        };
        Ok(ProvenTx {
            id,
            kind: self.tx.body.kind(),
            signer: self.tx.signer.clone(),
            height: last.height,
            block_time: last.timestamp,
            signer_checked,
        })
    }
}
