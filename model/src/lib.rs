//! The access-anomaly model: an autoencoder in burn scoring events by reconstruction error, an
//! isolation-forest baseline, employee-level DP-SGD, and the metrics detection is judged by.
//!
//! # Layout
//! - [`autoencoder`]: the network, its flat parameter vector.
//! - [`train`]: the training loop and scoring. [`dpsgd`]: employee-level DP-SGD (per-employee
//!   sampling and clipping, calibrated noise) over [`employees`]' grouped rows.
//! - [`experiment`]: local, federated and centralized training on a simulated consortium.
//! - [`standardize`]: the feature transform a model file carries (the identity: public scale).
//! - [`iforest`]: the isolation-forest baseline.
//! - [`metrics`]: AUROC, AUPRC, thresholds and rates. [`evaluate`]: per attack type.
//! - [`modelfile`]: the model file and its hash.

#![warn(missing_docs, unreachable_pub)]

pub mod autoencoder;
pub mod dpsgd;
pub mod employees;
pub mod evaluate;
pub mod experiment;
pub mod iforest;
pub mod metrics;
pub mod modelfile;
pub mod standardize;
pub mod train;

pub use autoencoder::{Autoencoder, AutoencoderConfig};
pub use employees::EmployeeRows;

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Shapes or widths do not fit.
    #[error("model shape: {0}")]
    Shape(String),
    /// The tensor backend failed.
    #[error("tensor backend: {0}")]
    Backend(String),
    /// Bad training parameters.
    #[error("training parameters: {0}")]
    Config(String),
}
