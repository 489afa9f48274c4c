//! The coordinator: runs federated rounds as a sans-IO state machine.
//!
//! [`Coordinator`] takes messages from agents and the time in, and gives messages to agents and
//! [`CoordinatorEvent`]s out. It selects each round's participants from the ledger state it is
//! shown, drives the SecAgg+ server, applies the strategy to the decoded aggregate, collects
//! endorsements, and hands the driver a signed `AnchorRound` transaction. It never touches the
//! disk, the network or a clock: the daemon (`medfl coordinator`) and the simulator
//! (`medfl simulate`) do, around the very same machine.
//!
//! It must never see an individual update (only the secure-aggregation sum), never adopt a model
//! the ledger has not anchored, and never anchor a round twice: a round's number comes from the
//! ledger, so a restarted coordinator simply runs the next one.

#![warn(missing_docs, unreachable_pub)]

mod eligibility;
mod machine;
mod metrics;

pub use eligibility::{Eligibility, Ineligible, describe_ineligible};
pub use machine::{
    Coordinator, CoordinatorConfig, CoordinatorError, CoordinatorEvent, MAX_DECLINE_REASON,
    RoundOutcome, Timeouts,
};
pub use metrics::RoundMetrics;
