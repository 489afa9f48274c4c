//! The coordinator: the round state machine, aggregation strategies, and anchoring each round on
//! the ledger.
//!
//! Not yet written (issue 6). Its ledger side exists: `medfl_ledger::Ledger::append` with a
//! `TxBody::AnchorRound`.
