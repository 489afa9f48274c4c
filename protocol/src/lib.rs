//! The federated round protocol: what the coordinator and the hospital agents say to each other,
//! and the arithmetic both sides must agree on bit for bit.
//!
//! A round, from the coordinator's side:
//!
//! 1. **Start.** It picks the participants (connected, covered by the agreement, budget left),
//!    and sends each a [`RoundConfig`]: the previous model's hash, the training, DP and
//!    secure-aggregation parameters, the cumulative epsilon each participant will have spent.
//!    Then the previous global model, in [`ToAgent::ModelChunk`]s.
//! 2. **Train and aggregate.** Each agent checks the config against its copy of the ledger,
//!    trains with DP-SGD, turns its update into a vector over `Z_{2^b}` with distributed discrete
//!    Gaussian noise ([`update`]), and runs a SecAgg+ client; the coordinator runs the server.
//! 3. **Endorse.** The coordinator sends the aggregate to the survivors; each recomputes the new
//!    model with the round's [`Strategy`] (the arithmetic is deterministic, so it gets the same
//!    bytes) and signs the ledger's endorsement message over its hash.
//! 4. **Anchor.** With a quorum of endorsements the coordinator anchors the round on the ledger
//!    and ships the block to every member.
//!
//! Nothing here does I/O or reads a clock: the state machines in `medfl-coordinator` and
//! `medfl-client` use these types, and the network daemons and the simulator drive them.

#![warn(missing_docs, unreachable_pub)]

pub mod anchor;
pub mod config;
pub mod decline;
pub mod error;
pub mod message;
pub mod model;
pub mod privacy;
pub mod refusal;
pub mod strategy;
pub mod transcript;
pub mod update;

pub use config::{
    DdgParams, MAX_CLOCK_SKEW_MS, RoundConfig, SecAggParams, Strategy, TrainingParams,
};
pub use decline::DeclineReason;
pub use error::ProtocolError;
pub use message::{Envelope, ToAgent, ToCoordinator};
pub use model::GlobalModel;
pub use refusal::{Refusal, RefusalReason, SignedRefusal};
