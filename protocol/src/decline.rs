//! Why an agent declines a round: a typed reason the `Decline` message carries, so a
//! coordinator, a metrics reader or a test can tell a weak parameter from a ledger mismatch.

use medfl_ledger::FloorViolation;
use serde::{Deserialize, Serialize};

/// Why an agent will not take part in an announced attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum DeclineReason {
    /// The agent already joined or declined this session id: taking part twice in one
    /// session would hand the coordinator two sets of keys under one secure-aggregation tag.
    #[error("session {session} was already announced to this hospital")]
    SessionReused {
        /// The repeated id.
        session: u64,
    },
    /// A secure-aggregation or noise parameter is weaker than the agreement allows.
    #[error("below the agreement's floors: {0}")]
    BelowFloor(FloorViolation),
    /// The round's server strategy is not the one the agreement fixes.
    #[error("strategy {announced} announced, the agreement fixes {agreed}")]
    StrategyMismatch {
        /// The config's strategy.
        announced: String,
        /// The agreement's.
        agreed: String,
    },
    /// The config is malformed (a field out of range, inconsistent lengths).
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The config does not check out against the agent's copy of the ledger (agreement,
    /// round number, previous model, privacy spend, budget).
    #[error("{0}")]
    Ledger(String),
    // New variants go last: bincode encodes the variant index on the wire.
    /// The round was already attempted as often as a hospital allows; every attempt that
    /// reaches the input stage releases another noisy update of the same data.
    #[error("round {round} was already attempted {max} times")]
    TooManyAttempts {
        /// The round.
        round: u64,
        /// The hospital's limit.
        max: u32,
    },
    /// Releasing this round's update would take the hospital past its own privacy budget,
    /// which counts every release under every agreement, anchored or not.
    #[error("{0}")]
    OwnBudget(String),
}
