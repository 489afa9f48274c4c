//! EHR access-audit events: what a hospital's audit trail records about each access to a
//! patient's chart, in the form medfl's anomaly model learns from.
//!
//! # Layout
//! - [`event`]: the event schema ([`AccessEvent`]) and its vocabularies.
//! - [`label`]: ground-truth labels ([`AttackKind`]), kept apart from the events so that they
//!   never leak into training input.

#![warn(missing_docs, unreachable_pub)]

pub mod event;
pub mod label;

pub use event::{AccessEvent, Action, Resource, StaffRole};
pub use label::{AttackKind, Label};
