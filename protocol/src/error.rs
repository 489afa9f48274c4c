//! Why a protocol step was refused.

use medfl_ledger::Hash;

/// A refused message, config or computation; the string says which field and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// A field is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A model's bytes do not hash to what was announced.
    #[error("model hash mismatch: expected {expected}, got {got}")]
    ModelMismatch {
        /// Announced.
        expected: Hash,
        /// Computed.
        got: Hash,
    },
    /// The DP layer refused (parameters or lengths).
    #[error("differential privacy: {0}")]
    Dp(#[from] medfl_dp::DpError),
    /// The model layer refused (shapes, values).
    #[error("model: {0}")]
    Model(#[from] medfl_modelspec::ModelError),
}

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ProtocolError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
