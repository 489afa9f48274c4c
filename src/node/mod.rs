//! The one runtime of a consortium's processes, apart from I/O.
//!
//! A hospital runs [`medfl_client::Hospital`] (its agent and its own ledger copy); the
//! coordinator runs [`CoordinatorNode`] (the round state machine, its ledger, the members'
//! transaction pool, catch-up, round pacing and anchoring). Both are sans-IO in the sense of
//! quinn-proto: messages and time go in, messages and events come out, and the driver around
//! them only moves bytes. The drivers are thin and there are two kinds: `medfl coordinator` and
//! `medfl client` move messages over libp2p on the system clock; the simulator
//! ([`crate::consortium`]) moves them through in-memory queues on a virtual clock. Whatever
//! the simulator shows of catch-up, ordering of members' transactions, pacing and anchoring, a
//! deployment does, because it is this code.

pub mod catchup;
pub mod coordinator;
pub mod mempool;

pub use coordinator::{CoordinatorNode, NodeEvent, Pacing};
