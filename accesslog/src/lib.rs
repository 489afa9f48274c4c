//! EHR access-audit events: what a hospital's audit trail records about each access to a
//! patient's chart, in the form medfl's anomaly model learns from.
//!
//! # Layout
//! - [`event`]: the event schema ([`AccessEvent`]) and its vocabularies.
//! - [`label`]: ground-truth labels ([`AttackKind`]), kept apart from the events so that they
//!   never leak into training input.
//! - [`context`]: the hospital's context feeds (staff, care teams, VIPs, family) and the one
//!   derivation of the relation flags from them.
//! - [`consent`]: patients' consent pseudonyms and the opt-out filter applied before features.
//! - [`csv`]: events CSV and labels CSV.
//! - [`fhir`]: FHIR R4 `AuditEvent` NDJSON.
//! - [`tabular`]: plain numeric CSV tables (third-party data sets, exported features).
//! - [`features`]: streaming per-user feature extraction.
//! - [`explained`]: whether an access has a reason in the hospital's records (care team,
//!   department), explanations first as in explanation-based auditing.
//! - [`statistics`]: a log's figures (accesses and patients per user-day, users per patient,
//!   night and weekend shares, explained share), held against published real-world ones.
//! - [`error`]: the errors and the malformed-row policy ([`OnError`]) shared by the readers.
//! - [`time`]: FHIR instants.

#![warn(missing_docs, unreachable_pub)]

pub mod consent;
pub mod context;
pub mod csv;
pub mod error;
pub mod event;
pub mod explained;
pub mod features;
pub mod fhir;
pub mod label;
mod lines;
pub mod statistics;
pub mod tabular;
pub mod time;

pub use error::{FormatError, OnError, Parsed, RowError};
pub use event::{AccessEvent, Action, Resource, StaffRole};
pub use features::{
    EmployeeIndex, FEATURE_MAX, FEATURE_NAMES, FeatureExtractor, FeatureMatrix, N_FEATURES, extract,
};
pub use label::{AttackKind, Label};
