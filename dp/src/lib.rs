//! Differential privacy for medfl: clipping, exact noise samplers, distributed DP under secure
//! aggregation, and the privacy accountant.
//!
//! Not yet written (issue 4). The ledger already records what this crate will compute: each
//! round's DP parameters and every participant's cumulative epsilon (`medfl_ledger::privacy`).
