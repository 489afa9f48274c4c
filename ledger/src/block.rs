//! Blocks: a signed header over a list of transactions, chained by hash.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use crate::bytes::{Hash, Signature};
use crate::codec::{self, CodecError};
use crate::member::MemberId;
use crate::merkle;
use crate::timestamp::Timestamp;
use crate::tx::{Transaction, TxId};

/// The block format this code writes and reads.
pub const BLOCK_VERSION: u16 = 1;
/// Most transactions one block may carry.
pub const MAX_BLOCK_TXS: usize = 10_000;

/// What the proposer signs about a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Format version, [`BLOCK_VERSION`].
    pub version: u16,
    /// Height: 1 for the first block after genesis.
    pub height: u64,
    /// Hash of the previous block's signed header (the genesis hash for height 1).
    pub previous: Hash,
    /// Merkle root over the transaction ids.
    pub tx_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
    /// When the block was proposed; never earlier than its predecessor.
    pub timestamp: Timestamp,
    /// The coordinator that proposed and signed it.
    pub proposer: MemberId,
}

/// A header with the proposer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeader {
    /// The header.
    pub header: BlockHeader,
    /// The proposer's signature over [`BlockHeader::signing_message`].
    pub signature: Signature,
}

/// A block as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The signed header.
    pub header: SignedHeader,
    /// The transactions, in order.
    pub txs: Vec<Transaction>,
}

impl BlockHeader {
    /// The bytes the proposer signs, bound to the ledger's genesis.
    pub fn signing_message(&self, genesis: &Hash) -> Result<Vec<u8>, CodecError> {
        let mut m = b"medfl/header/v1".to_vec();
        m.extend_from_slice(&genesis.0);
        m.extend_from_slice(&codec::encode(self)?);
        Ok(m)
    }

    /// Signs the header.
    pub fn sign(
        self,
        genesis: &Hash,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<SignedHeader, CodecError> {
        let signature = key.sign(&self.signing_message(genesis)?).into();
        Ok(SignedHeader {
            header: self,
            signature,
        })
    }
}

impl SignedHeader {
    /// The block hash: covers the header and its signature, so the chain commits to both.
    pub fn hash(&self) -> Result<Hash, CodecError> {
        Ok(Hash::tagged(b"medfl/block/v1", &[&codec::encode(self)?]))
    }
}

impl Block {
    /// The ids of the transactions, in order.
    pub fn tx_ids(&self) -> Result<Vec<TxId>, CodecError> {
        self.txs.iter().map(Transaction::id).collect()
    }

    /// The Merkle root the header should carry.
    pub fn compute_tx_root(&self) -> Result<Hash, CodecError> {
        Ok(merkle::root(&self.tx_ids()?))
    }
}
