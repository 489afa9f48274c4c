//! The messages of a round, both directions. Every one names its attempt (`session`), so a
//! message from an old attempt can never be taken for one of the current attempt.

use medfl_ledger::{Block, Hash, Signature};
use medfl_secagg::{ClientId, ClientMessage, PackedVector, ServerMessage};
use serde::{Deserialize, Serialize};

use crate::config::RoundConfig;

/// From the coordinator to one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToAgent {
    /// A new round attempt; the previous global model follows in chunks.
    RoundStart(Box<RoundConfig>),
    /// A piece of the previous global model's file.
    ModelChunk {
        /// The attempt.
        session: u64,
        /// Where the chunk starts in the file.
        offset: u64,
        /// The file's length.
        total: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A secure-aggregation message.
    SecAgg {
        /// The attempt.
        session: u64,
        /// The message.
        msg: ServerMessage,
    },
    /// The outcome to check and endorse.
    EndorseRequest {
        /// The attempt.
        session: u64,
        /// Clients whose inputs are in the sum.
        survivors: Vec<ClientId>,
        /// The modular sum, `b` bits per value.
        aggregate: PackedVector,
        /// The server optimizer's state before the round (FedAdam), `2·d` values or none.
        server_state: Vec<f32>,
    },
    /// A ledger block to append (the coordinator orders; every member keeps a copy).
    Block(Box<Block>),
    /// The attempt is over without a result.
    Abort {
        /// The attempt.
        session: u64,
        /// Why.
        reason: String,
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
        reason: String,
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
        }
    }
}
