//! The messages of a round, both directions. Every one names its attempt (`session`), so a
//! message from an old attempt can never be taken for one of the current attempt.

use std::sync::Arc;

use medfl_ledger::{Block, Hash, Signature, Transaction, TxId};
use medfl_secagg::{ClientId, ClientMessage, PackedVector, ServerMessage};
use serde::{Deserialize, Serialize};

use crate::config::RoundConfig;
use crate::decline::DeclineReason;
use crate::refusal::SignedRefusal;

/// From the coordinator to one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToAgent {
    /// A new round attempt; the previous global model follows in chunks. Every participant is
    /// sent the same configuration (it lists them all), so it is built once and shared.
    RoundStart(Arc<RoundConfig>),
    /// A piece of the previous global model's file.
    ModelChunk {
        /// The attempt.
        session: u64,
        /// Where the chunk starts in the file.
        offset: u64,
        /// The file's length.
        total: u64,
        /// The bytes (the same chunk for every participant, so shared).
        bytes: Arc<[u8]>,
    },
    /// A secure-aggregation message.
    SecAgg {
        /// The attempt.
        session: u64,
        /// The message.
        msg: ServerMessage,
    },
    /// The outcome to check and endorse (the same for every survivor, so shared).
    EndorseRequest {
        /// The attempt.
        session: u64,
        /// Clients whose inputs are in the sum.
        survivors: Arc<[ClientId]>,
        /// The modular sum, `b` bits per value.
        aggregate: Arc<PackedVector>,
        /// The server optimizer's state before the round (FedAdam), `2·d` values or none.
        server_state: Arc<[f32]>,
    },
    /// A ledger block to append (the coordinator orders; every member keeps a copy).
    Block(Arc<Block>),
    /// The attempt is over without a result.
    Abort {
        /// The attempt.
        session: u64,
        /// Why.
        reason: String,
    },
    /// A transaction the agent submitted will not be ordered: the contract's refusal. Silence
    /// is not refusal: an agent that hears nothing and sees no block treats it as censored.
    TxRefused {
        /// The refused transaction.
        id: TxId,
        /// The contract rule it breaks (or why it was not accepted for ordering).
        reason: String,
    },
    /// The coordinator will not talk to this peer, and says why; the connection closes after.
    Refused {
        /// The signed notice.
        notice: Box<SignedRefusal>,
        /// For a revocation: the block that holds it, so a member whose copy ends just before
        /// it can check the claim against its own ledger.
        block: Option<Box<Block>>,
    },
}

/// From an agent to the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// Sent on connecting: the agent's ledger height, so the coordinator sends what it lacks.
    Hello {
        /// Blocks the agent has.
        height: u64,
    },
    /// The agent will not take part in this attempt.
    Decline {
        /// The attempt.
        session: u64,
        /// Why.
        reason: DeclineReason,
    },
    /// A secure-aggregation message.
    SecAgg {
        /// The attempt.
        session: u64,
        /// The message.
        msg: ClientMessage,
    },
    /// The agent's signature over the round outcome (the ledger's endorsement message).
    Endorse {
        /// The attempt.
        session: u64,
        /// The model hash the agent computed.
        model: Hash,
        /// Signature over `RoundAnchor::endorsement_message`.
        signature: Signature,
    },
    /// A transaction the member signed itself, for the coordinator to order into a block
    /// (consent, agreement acceptance, leaving, audit and alert anchors).
    SubmitTx(Box<Transaction>),
}

impl ToAgent {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ToAgent::RoundStart(_) => "round_start",
            ToAgent::ModelChunk { .. } => "model_chunk",
            ToAgent::SecAgg { .. } => "secagg",
            ToAgent::EndorseRequest { .. } => "endorse_request",
            ToAgent::Block(_) => "block",
            ToAgent::Abort { .. } => "abort",
            ToAgent::TxRefused { .. } => "tx_refused",
            ToAgent::Refused { .. } => "refused",
        }
    }
}

impl ToCoordinator {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ToCoordinator::Hello { .. } => "hello",
            ToCoordinator::Decline { .. } => "decline",
            ToCoordinator::SecAgg { .. } => "secagg",
            ToCoordinator::Endorse { .. } => "endorse",
            ToCoordinator::SubmitTx(_) => "submit_tx",
        }
    }
}

/// What travels between members: one type for the transport, either direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope {
    /// Coordinator to agent.
    ToAgent(ToAgent),
    /// Agent to coordinator.
    ToCoordinator(ToCoordinator),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DdgParams, SecAggParams, Strategy, TrainingParams};
    use medfl_ledger::{AgreementId, MemberId, Timestamp, codec};
    use medfl_modelspec::AutoencoderConfig;

    /// The wire codec is bincode, which is not self-describing: every message must round-trip.
    #[test]
    fn every_message_round_trips_through_a_non_self_describing_codec() {
        for strategy in [
            Strategy::FedAvg { server_lr: 1.0 },
            Strategy::FedProx { mu: 0.1 },
            Strategy::FedAdam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3,
            },
        ] {
            let config = RoundConfig {
                agreement: AgreementId::new("a").unwrap(),
                round: 1,
                session: 2,
                issued_at: Timestamp(3),
                previous_model: Hash([4; 32]),
                model: AutoencoderConfig {
                    inputs: 3,
                    hidden: 2,
                    latent: 1,
                },
                participants: vec![MemberId::new("h1").unwrap(), MemberId::new("h2").unwrap()],
                epsilon_after: vec![0.5, 0.5],
                training: TrainingParams::default(),
                ddg: DdgParams::default(),
                secagg: SecAggParams {
                    neighbours: Some(1),
                    threshold: None,
                },
                strategy,
                public_seed: [5; 32],
                consent_height: 0,
            };
            let messages = [
                Envelope::ToAgent(ToAgent::RoundStart(Arc::new(config))),
                Envelope::ToAgent(ToAgent::ModelChunk {
                    session: 1,
                    offset: 0,
                    total: 3,
                    bytes: vec![1, 2, 3].into(),
                }),
                Envelope::ToAgent(ToAgent::Abort {
                    session: 1,
                    reason: "x".into(),
                }),
                Envelope::ToCoordinator(ToCoordinator::Hello { height: 9 }),
                Envelope::ToCoordinator(ToCoordinator::Decline {
                    session: 1,
                    reason: DeclineReason::Ledger("budget".into()),
                }),
                Envelope::ToCoordinator(ToCoordinator::Decline {
                    session: 1,
                    reason: DeclineReason::BelowFloor(medfl_ledger::FloorViolation {
                        floor: medfl_ledger::Floor::Threshold,
                        value: 1.0,
                        minimum: 2.0,
                    }),
                }),
                Envelope::ToCoordinator(ToCoordinator::SubmitTx(Box::new(Transaction {
                    signer: MemberId::new("h1").unwrap(),
                    issued_at: Timestamp(8),
                    body: medfl_ledger::TxBody::AcceptAgreement {
                        agreement: AgreementId::new("a").unwrap(),
                    },
                    signature: Signature([7; 64]),
                }))),
                Envelope::ToAgent(ToAgent::TxRefused {
                    id: Hash([9; 32]),
                    reason: "consent: no".into(),
                }),
            ];
            for m in messages {
                let bytes = codec::encode(&m).unwrap();
                let back: Envelope = codec::decode(&bytes).unwrap();
                assert_eq!(back, m);
            }
        }
    }
}
