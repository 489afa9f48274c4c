//! What a medfl model is, without a tensor backend: the network's shape and flat parameter
//! layout, the model file whose SHA-256 a round anchors, and the DP-SGD plan with its privacy
//! cost.
//!
//! The protocol, the coordinator and each hospital's agent need all of this and none of the
//! training; keeping it apart lets them build without burn (CI checks the
//! crate graph). `medfl-model` trains and scores on burn and re-exports these types.
//!
//! # Layout
//! - [`shape`]: layer widths, parameter count, the seeded initial parameters.
//! - [`modelfile`]: the model file, its byte layout and atomic save.
//! - [`standardize`]: the feature transform a model file carries (the identity: public scale).
//! - [`plan`]: DP-SGD hyperparameters, their checks, and their cost ([`plan::DpAccounting`]).

#![warn(missing_docs, unreachable_pub)]

pub mod modelfile;
pub mod plan;
pub mod shape;
pub mod standardize;

pub use modelfile::ModelFile;
pub use plan::{DpOptimizer, DpSgdConfig, DpSgdError};
pub use shape::AutoencoderConfig;

/// Why a model operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Training blew up (a loss that is not finite); the model is not usable.
    #[error("training diverged: {0}")]
    Diverged(String),
}
