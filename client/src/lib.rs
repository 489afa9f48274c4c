//! The hospital agent: takes part in federated rounds as a sans-IO state machine.
//!
//! [`Agent`] checks every round the coordinator announces against the hospital's own copy of
//! the ledger (agreement accepted and live, round number, previous model, privacy spend within
//! budget, the agreement's floors under the secure-aggregation and noise parameters and its
//! strategy) and takes part at most once per session id; it asks its driver to train
//! ([`AgentEvent::Train`], run by the driver with `medfl_model::local`), encodes the update with distributed noise
//! and runs the SecAgg+ client under a session context it computes itself, then checks the
//! aggregate is in the range its survivors can reach and the server state is the anchored one,
//! recomputes the new model and endorses the whole outcome. It adopts a model only once the
//! ledger anchors it.
//!
//! [`Hospital`] is what every driver runs: the agent with the hospital's own ledger copy, which
//! checks each block the coordinator sends before appending it and asks again for missed ones.
//!
//! It must never send anything derived from its data except through secure aggregation, and
//! never endorse a model it did not recompute itself.

#![warn(missing_docs, unreachable_pub)]

mod agent;
pub mod hospital;
pub mod spend;

pub use agent::{
    Agent, AgentError, AgentEvent, MAX_ATTEMPTS_PER_ROUND, RoundMismatch, TrainingTask,
};
pub use hospital::{Hospital, HospitalEvent};
