//! Transactions: what members say on the ledger, each signed by the member who says it.
//!
//! A transaction's signature covers a domain tag, the genesis hash (so a transaction can never be
//! replayed into another consortium's ledger), the signer's id, the issue time and the body. Its
//! id is the hash of the whole signed encoding; the contracts refuse an id seen before, so a
//! signed transaction cannot be replayed within a ledger either.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use crate::bytes::{Hash, PublicKey, Signature};
use crate::codec::{self, CodecError};
use crate::member::{AgreementId, Member, MemberId};
use crate::privacy::{AggregationFloors, AggregationParams, DpParams, PrivacyBudget};
use crate::timestamp::Timestamp;

/// Longest free-text field (purpose, reason) we accept.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most members one agreement, one round or one genesis may list: room for a consortium of
/// 10,000 hospitals with its coordinator and officers, while every list stays bounded.
pub const MAX_LISTED_MEMBERS: usize = 16_384;

/// A data-use agreement: who may train on what, until when, with how much privacy each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataUseAgreement {
    /// Unique id.
    pub id: AgreementId,
    /// What the data may be used for, in words the hospitals' boards approved.
    pub purpose: String,
    /// The hospitals covered.
    pub members: Vec<MemberId>,
    /// After this instant no round may be anchored under the agreement.
    pub expires_at: Timestamp,
    /// Each member's privacy budget under it.
    pub budget: PrivacyBudget,
    /// The weakest secure-aggregation and noise parameters a round under it may run with: a
    /// hospital declines, and the contract refuses to anchor, anything weaker.
    pub floors: AggregationFloors,
    /// The server's update rule, fixed with its hyperparameters: the coordinator cannot pick
    /// another one to steer the model.
    pub strategy: Strategy,
}

/// How the coordinator turns the mean update into the next global model; fixed per agreement.
///
/// Externally tagged (`{ fedavg = { server_lr = 1.0 } }` in TOML): the wire codec is not
/// self-describing, so internally tagged enums cannot cross it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Weighted FedAvg (McMahan et al. 2017): `w + η·Δ`.
    FedAvg {
        /// Server learning rate `η` (1 is plain averaging).
        server_lr: f64,
    },
    /// FedProx (Li et al. 2020): clients add `μ/2·‖w − w_global‖²` to their loss; the server
    /// averages as FedAvg with `η = 1`.
    FedProx {
        /// Proximal weight `μ`.
        mu: f64,
    },
    /// FedAdam (Reddi et al. 2021): Adam on the server with the mean update as pseudo-gradient.
    FedAdam {
        /// Server learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Adaptivity `τ` (Adam's epsilon).
        tau: f64,
    },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::FedAvg { server_lr: 1.0 }
    }
}

impl Strategy {
    /// Checks every number is finite and in range.
    pub fn check(&self) -> Result<(), String> {
        let ok = match *self {
            Strategy::FedAvg { server_lr } => server_lr.is_finite() && server_lr > 0.0,
            Strategy::FedProx { mu } => mu.is_finite() && mu >= 0.0,
            Strategy::FedAdam {
                lr,
                beta1,
                beta2,
                tau,
            } => {
                lr.is_finite()
                    && lr > 0.0
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && tau.is_finite()
                    && tau > 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("strategy {self:?} has a parameter out of range"))
        }
    }
}

/// A salted, keyed pseudonym of a patient: 32 bytes, never the identity itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pseudonym(pub Hash);

/// A patient's choice about secondary use of their access records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentChoice {
    /// Exclude the patient's records from training.
    OptOut,
    /// Include them again.
    OptIn,
}

/// A participant's privacy spend as of a round.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpend {
    /// Cumulative epsilon under the agreement after this round, at the round's delta.
    pub epsilon_total: f64,
}

/// A participant's signature over a round's outcome: "I checked this model and accept it".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// Who endorses.
    pub member: MemberId,
    /// Signature over [`RoundAnchor::endorsement_message`].
    pub signature: Signature,
}

/// The record of one federated round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundAnchor {
    /// The agreement the round ran under.
    pub agreement: AgreementId,
    /// Round number under the agreement, from 1.
    pub round: u64,
    /// Hash of the global model the round started from.
    pub previous_model: Hash,
    /// Hash of the new global model (stored off-chain, content-addressed).
    pub model: Hash,
    /// Hospitals whose updates are in the aggregate, with their privacy spend.
    pub participants: Vec<(MemberId, PrivacySpend)>,
    /// Hospitals selected for the round that dropped out.
    pub dropped: Vec<MemberId>,
    /// The DP parameters of the round.
    pub dp: DpParams,
    /// The secure-aggregation and distributed-noise parameters the round ran with.
    pub aggregation: AggregationParams,
    /// The server update rule the new model was computed with.
    pub strategy: Strategy,
    /// Hash of the server optimizer's state after the round (FedAdam's moments; the empty
    /// state for the others): the next round's endorsers check the state they are shown
    /// against it.
    pub server_state: Hash,
    /// Hash of the secure-aggregation transcript.
    pub secagg_transcript: Hash,
    /// Participants' signatures over the outcome.
    pub endorsements: Vec<Endorsement>,
}

/// Everything in a [`RoundAnchor`] but the endorsements: what an endorser signs.
#[derive(Serialize)]
struct EndorsedOutcome<'a> {
    agreement: &'a AgreementId,
    round: u64,
    previous_model: &'a Hash,
    model: &'a Hash,
    participants: &'a [(MemberId, PrivacySpend)],
    dropped: &'a [MemberId],
    dp: &'a DpParams,
    aggregation: &'a AggregationParams,
    strategy: &'a Strategy,
    server_state: &'a Hash,
    secagg_transcript: &'a Hash,
}

impl RoundAnchor {
    /// The bytes an endorser signs: every field of the anchor but the endorsements, bound to
    /// the ledger, so a coordinator cannot anchor a participant list, a dropped list, a spend
    /// or a server state other than the one the hospitals checked.
    ///
    /// The fields enter as one tagged hash: each of a round's `n` endorsements is checked
    /// against the same message by every ledger copy, and a message that carries the
    /// participant list made each check hash `O(n)` bytes again.
    pub fn endorsement_message(&self, genesis: &Hash) -> Result<Vec<u8>, CodecError> {
        let outcome = EndorsedOutcome {
            agreement: &self.agreement,
            round: self.round,
            previous_model: &self.previous_model,
            model: &self.model,
            participants: &self.participants,
            dropped: &self.dropped,
            dp: &self.dp,
            aggregation: &self.aggregation,
            strategy: &self.strategy,
            server_state: &self.server_state,
            secagg_transcript: &self.secagg_transcript,
        };
        let outcome = Hash::tagged(b"medfl/endorsed-outcome/v1", &[&codec::encode(&outcome)?]);
        let mut m = b"medfl/endorse/v3".to_vec();
        m.extend_from_slice(&genesis.0);
        m.extend_from_slice(&outcome.0);
        Ok(m)
    }
}

/// The record of a batch of off-chain access events, so later tampering with them shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// Merkle root over the batch's event hashes.
    pub merkle_root: Hash,
    /// Number of events in the batch.
    pub count: u64,
    /// Time of the first event.
    pub first_event_at: Timestamp,
    /// Time of the last event.
    pub last_event_at: Timestamp,
}

/// How serious an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Logged for review.
    Low,
    /// Reviewed within a day.
    Medium,
    /// Reviewed now.
    High,
    /// The account was blocked.
    Critical,
}

/// The record that the access monitor raised an alert (the alert itself stays off-chain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertAnchor {
    /// Hash of the off-chain alert record.
    pub alert: Hash,
    /// Severity.
    pub severity: Severity,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// The anchored global model that raised it, if any.
    pub model: Option<Hash>,
}

/// What a transaction says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TxBody {
    /// Admit a member.
    AddMember(Member),
    /// Revoke a member for good (by a coordinator, or by the member itself).
    RevokeMember {
        /// Who.
        member: MemberId,
        /// Why, for the record.
        reason: String,
    },
    /// Register a data-use agreement.
    RegisterAgreement(DataUseAgreement),
    /// A listed hospital accepts an agreement registered (or extended) after genesis.
    AcceptAgreement {
        /// Which agreement.
        agreement: AgreementId,
    },
    /// Record a patient's consent choice at the signing hospital.
    Consent {
        /// The patient's pseudonym.
        subject: Pseudonym,
        /// The choice.
        choice: ConsentChoice,
    },
    /// Anchor a federated round.
    AnchorRound(RoundAnchor),
    /// Anchor a batch of audit-log events.
    AnchorAuditLog(AuditAnchor),
    /// Anchor an alert.
    AnchorAlert(AlertAnchor),
    /// Move an agreement's expiry later. Every member's acceptance lapses with it: a hospital
    /// is bound to the longer term only once it accepts it ([`TxBody::AcceptTerms`]).
    ExtendAgreement {
        /// Which agreement.
        agreement: AgreementId,
        /// The new expiry, later than the current one.
        expires_at: Timestamp,
    },
    /// A listed hospital accepts an agreement on the terms it names: valid only while they are
    /// the agreement's current terms, so no acceptance can be carried onto a later extension.
    AcceptTerms {
        /// Which agreement.
        agreement: AgreementId,
        /// The expiry the hospital accepts.
        expires_at: Timestamp,
    },
}

impl TxBody {
    /// A short name of the kind, for listings.
    pub fn kind(&self) -> &'static str {
        match self {
            TxBody::AddMember(_) => "add-member",
            TxBody::RevokeMember { .. } => "revoke-member",
            TxBody::RegisterAgreement(_) => "register-agreement",
            TxBody::AcceptAgreement { .. } => "accept-agreement",
            TxBody::Consent { .. } => "consent",
            TxBody::AnchorRound(_) => "anchor-round",
            TxBody::AnchorAuditLog(_) => "anchor-audit-log",
            TxBody::AnchorAlert(_) => "anchor-alert",
            TxBody::ExtendAgreement { .. } => "extend-agreement",
            TxBody::AcceptTerms { .. } => "accept-terms",
        }
    }
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// The member who signs.
    pub signer: MemberId,
    /// When the signer issued it (no later than the block that includes it).
    pub issued_at: Timestamp,
    /// What it says.
    pub body: TxBody,
    /// The signer's signature over [`Transaction::signing_message`].
    pub signature: Signature,
}

/// A transaction id: the hash of the transaction's canonical encoding.
pub type TxId = Hash;

impl Transaction {
    /// Builds and signs a transaction.
    pub fn sign(
        genesis: &Hash,
        signer: MemberId,
        key: &ed25519_dalek::SigningKey,
        issued_at: Timestamp,
        body: TxBody,
    ) -> Result<Transaction, CodecError> {
        let message = signing_message(genesis, &signer, issued_at, &body)?;
        let signature = key.sign(&message).into();
        Ok(Transaction {
            signer,
            issued_at,
            body,
            signature,
        })
    }

    /// The bytes the signer signed.
    pub fn signing_message(&self, genesis: &Hash) -> Result<Vec<u8>, CodecError> {
        signing_message(genesis, &self.signer, self.issued_at, &self.body)
    }

    /// The id: hash of the canonical encoding, signature included.
    pub fn id(&self) -> Result<TxId, CodecError> {
        Ok(Hash::tagged(b"medfl/tx-id/v1", &[&codec::encode(self)?]))
    }

    /// Checks the signature against `key` (single verification; blocks batch them).
    pub fn verify_signature(&self, genesis: &Hash, key: &PublicKey) -> Result<bool, CodecError> {
        Ok(key.verify(&self.signing_message(genesis)?, &self.signature))
    }
}

fn signing_message(
    genesis: &Hash,
    signer: &MemberId,
    issued_at: Timestamp,
    body: &TxBody,
) -> Result<Vec<u8>, CodecError> {
    let mut m = b"medfl/tx/v1".to_vec();
    m.extend_from_slice(&genesis.0);
    m.extend_from_slice(&codec::encode(&(signer, issued_at, body))?);
    Ok(m)
}
