//! medfl: federated learning of EHR access-anomaly models across hospitals, with secure
//! aggregation, differential privacy and a permissioned ledger.
//!
//! This package holds the `medfl` command line and re-exports the member crates, so that a
//! program embedding medfl depends on one crate.
//!
//! # Layout
//! - [`ledger`]: the permissioned ledger (`medfl-ledger`).
//! - [`secagg`]: SecAgg+ secure aggregation, sans-IO (`medfl-secagg`).
//! - [`data`]: reading events (CSV, FHIR NDJSON) and tables for training and evaluation.
//! - [`detection`]: the detection experiment on a simulated consortium; [`tables`]: on
//!   hospitals' own numeric tables.
//! - [`model_store`]: models under their hash, and the one rule for writing a file.
//! - [`local`]: runs an agent's training task on the model crate.
//! - [`node`]: the coordinator's runtime apart from I/O, which every driver runs.
//! - [`console`]: the web console over a run (`medfl simulate --serve`).
//! - [`consortium`]: a whole consortium in one process, on in-memory queues.
//! - [`simulate`]: `medfl simulate` and `medfl replay`. [`plot`]: their SVG charts;
//!   [`progress`]: their progress bar.
//! - [`settings`]: the one configuration of a consortium's rounds and its defaults.
//! - [`provision`]: startup folders for every member of a consortium.
//! - [`report`]: what `medfl ledger show` and `verify` print.

#![warn(missing_docs, unreachable_pub)]

pub use medfl_ledger as ledger;
pub use medfl_secagg as secagg;

pub mod console;
pub mod consortium;
pub mod daemon;
pub mod data;
pub mod detection;
pub mod local;
pub mod model_store;
pub mod node;
pub mod plot;
pub mod progress;
pub mod provision;
pub mod report;
pub mod settings;
pub mod simulate;
pub mod standalone;
pub mod tables;
