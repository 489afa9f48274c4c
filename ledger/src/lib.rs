//! medfl's permissioned ledger: a small blockchain that records who may take part, what they
//! agreed to, what privacy they spent, and each federated round's outcome, so that no single
//! party can rewrite what happened.
//!
//! It plays the role Hyperledger Fabric plays in the paper medfl comes from, small enough to
//! embed: one ordering coordinator signs blocks, every member signs its own transactions, and
//! anyone holding the genesis can verify the whole ledger or a single transaction's inclusion.
//! No health data is ever on it: hashes, pseudonyms, parameters and signatures only.
//!
//! # Layout
//! - [`genesis`]: the consortium file (TOML) and the genesis built from it.
//! - [`tx`]: transaction types, signing, ids. [`member`], [`privacy`]: what they refer to.
//! - [`block`]: headers, blocks, hashing. [`merkle`]: RFC 6962 trees and paths.
//! - [`state`] and `contract`: the world state and the rules every transaction must pass.
//!   Pure and deterministic: no I/O, no clock.
//! - [`store`]: where blocks live (a small trait; in memory, or redb with the default `redb`
//!   feature). [`ledger`]: a store + genesis + state, on disk or in memory.
//! - [`keyfile`]: a member's secret key on disk (PKCS#8 PEM, mode 0600).
//! - [`verify`]: full re-verification from a genesis the verifier holds. [`proof`]: inclusion proofs for light clients.
//! - [`codec`]: the one canonical byte format everything is hashed and signed in.
//!
//! The byte layouts and invariants are in `docs/ledger-design.md`.

#![warn(missing_docs, unreachable_pub)]

pub mod block;
pub mod bytes;
pub mod codec;
mod contract;
pub mod error;
pub mod genesis;
pub mod keyfile;
pub mod ledger;
pub mod member;
pub mod merkle;
pub mod privacy;
pub mod proof;
pub mod shared;
mod sigs;
pub mod state;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod timestamp;
pub mod tx;
pub mod verify;

pub use block::{Block, BlockHeader, SignedHeader};
pub use bytes::{Hash, PublicKey, Signature};
pub use contract::{ENDORSE_TOLERANCE, EPSILON_TOLERANCE, endorsements_needed};
pub use error::{BlockError, ContractError};
pub use genesis::{ConsortiumFile, Genesis, GenesisError};
pub use ledger::{BlockReceipt, Ledger, LedgerError};
pub use member::{AgreementId, Member, MemberId, Role};
pub use privacy::{
    AggregationFloors, AggregationParams, DpMechanism, DpParams, Floor, FloorViolation,
    PrivacyBudget,
};
pub use proof::{InclusionProof, ProofError, ProvenTx};
pub use shared::SharedCopies;
pub use state::ChainState;
pub use timestamp::Timestamp;
pub use tx::{Transaction, TxBody, TxId};
pub use verify::{VerifyError, VerifyReport, verify_store};
#[cfg(feature = "redb")]
pub use verify::{verify_dir, verify_dir_from};
