//! The access-anomaly model: an autoencoder in burn scoring events by reconstruction error, an
//! isolation-forest baseline, employee-level DP-SGD, and the metrics detection is judged by.
//!
//! # Layout
//! - [`autoencoder`]: the network, its flat parameter vector.
//! - [`train`]: the training loop and scoring. [`dpsgd`]: employee-level DP-SGD (per-employee
//!   sampling and clipping, calibrated noise) over [`employees`]' grouped rows.
//! - [`local`]: one hospital's training for one round (what an agent's driver runs).
//! - [`experiment`]: local, federated and centralized training on a simulated consortium.
//! - [`iforest`]: the isolation-forest baseline. [`ensemble`]: it and the autoencoder as one
//!   detector, each score calibrated on normal rows.
//! - [`metrics`]: AUROC, AUPRC, thresholds and rates. [`evaluate`]: per attack type.
//!   [`cases`]: alerts grouped into the cases an office reviews, judged at a review budget.
//!   [`policy`]: what alerts whatever the score (a record the role never needs).
//! - The shape, the model file and the DP-SGD plan are `medfl-modelspec`'s, re-exported here.

#![warn(missing_docs, unreachable_pub)]

pub mod autoencoder;
pub mod cases;
pub mod dpsgd;
pub mod employees;
pub mod ensemble;
pub mod evaluate;
pub mod experiment;
pub mod iforest;
pub mod local;
pub mod metrics;
pub mod policy;
pub mod train;

pub use autoencoder::Autoencoder;
pub use employees::EmployeeRows;
pub use medfl_modelspec::{AutoencoderConfig, ModelError, modelfile, standardize};
