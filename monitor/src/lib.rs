//! The access monitor: what the consortium trains its model for.
//!
//! Each hospital's agent applies the current anchored model to its live stream of accesses to
//! health records: every access is scored with the features training uses, checked against the
//! ledger's contracts (consent, data-use agreements) and the user's standing, and answered allow,
//! alert or deny with the reason in words ([`decide`], [`explain`]). Every request and its
//! decision is appended to a local, hash-chained audit log made durable before the answer
//! leaves; batches of it are sealed under a Merkle root that the hospital anchors on the ledger
//! itself, so the log can later be proven complete and unaltered, record by record ([`audit`]).
//!
//! The EHR's own audit feed comes in as FHIR `AuditEvent`s, over HTTP or in IHE ATNA syslog
//! messages ([`intake`], [`syslog`]), completed from the hospital's context feeds.
//!
//! This crate is the monitor without its edges: no HTTP, no sockets, no clock. `medfl monitor`
//! serves it.

#![warn(missing_docs, unreachable_pub)]

pub mod audit;
pub mod decide;
pub mod explain;
pub mod intake;
pub mod request;
pub mod syslog;

pub use audit::{AuditLog, AuditRecord, RecordBody};
pub use decide::{Decision, Monitor, Policy, Scorer, Verdict};
pub use request::{AccessRequest, Delivery, DeliveryId};
