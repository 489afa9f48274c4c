//! What a round did, for the structured log and the metrics file.

use medfl_protocol::update::RangeCheck;
use serde::Serialize;

/// One round attempt's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RoundMetrics {
    /// Round number under the agreement.
    pub round: u64,
    /// The attempt id.
    pub session: u64,
    /// Members selected.
    pub selected: usize,
    /// Members of the agreement (and connected members) not selected, and why.
    pub left_out: std::collections::BTreeMap<String, String>,
    /// Members whose updates are in the aggregate.
    pub participants: usize,
    /// Selected members whose updates are not.
    pub dropped: Vec<String>,
    /// Members that declined the round, one entry each (`member: reason`, the reason cut to
    /// [`crate::MAX_DECLINE_REASON`] bytes).
    pub declined: Vec<String>,
    /// Selected members whose connection closed or who were revoked during the attempt, in
    /// the order the coordinator learned it: dropped at once, not at a deadline.
    pub gone: Vec<String>,
    /// Declines beyond each member's first in this attempt: counted, not stored, so a member
    /// repeating itself cannot grow the coordinator's memory.
    pub declines_repeated: u64,
    /// Largest cumulative epsilon among the participants after the round.
    pub max_epsilon: f64,
    /// Milliseconds spent in each stage, in order.
    pub stage_ms: Vec<(String, u64)>,
    /// Milliseconds from start to the anchor transaction.
    pub duration_ms: u64,
    /// Milliseconds the round state machine computed in the attempt (decode, strategy,
    /// hashing, signatures), timed by the driver around each call on its own clock.
    pub compute_ms: u64,
    /// Whether the aggregate was in the range its survivors' updates can reach, and which
    /// coordinates were not (`None` before aggregation).
    pub range: Option<RangeCheck>,
}
