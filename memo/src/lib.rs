//! What members sharing one process compute once: signature checks and equal values,
//! answered from the same bytes.
//!
//! A simulated consortium runs every hospital in one process, and every hospital validates for
//! itself, as the daemons do. Much of that work is the same pure function of the same bytes in
//! every member: the check of one endorsement, the neighbour graph of one session, the nonces
//! one server sent everyone. Its answer can be shared without sharing trust: every member still
//! runs every rule, and the first to need an answer computes it. The tools here are handles a
//! driver passes in, never globals: a daemon (one member to a process) gains nothing from them,
//! and a benchmark of one member's cost must not borrow another's work.

mod by_address;
mod interner;
mod signatures;

pub use by_address::ByAddress;
pub use interner::Interner;
pub use signatures::{SignatureCache, SignatureRule};
