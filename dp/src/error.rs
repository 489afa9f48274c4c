//! The crate's single typed error.
//!
//! Every check on caller-supplied parameters returns one of these variants instead of panicking,
//! so a coordinator can refuse a round (and log why) before any data is touched.

use thiserror::Error;

/// Everything that can go wrong in `medfl-dp`; each variant names the offending value.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DpError {
    /// A real parameter was NaN, infinite, or outside its allowed range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// The value passed (as f64 for reporting).
        value: f64,
        /// What range was expected.
        reason: &'static str,
    },
    /// A count (clients, dimension, steps) was zero or too large.
    #[error("invalid count `{name}` = {value}: {reason}")]
    InvalidCount {
        /// Which count.
        name: &'static str,
        /// The value passed.
        value: u64,
        /// What range was expected.
        reason: &'static str,
    },
    /// Two vectors that must have the same length do not.
    #[error("length mismatch: expected {expected}, got {got}")]
    LengthMismatch {
        /// The length the plan was built for.
        expected: usize,
        /// The length supplied.
        got: usize,
    },
    /// The modular bit width cannot hold the noisy sum with the required probability.
    #[error(
        "bit width {bits} too small: the sum wraps modulo 2^{bits} with probability up to {wrap_bound:e} (allowed {allowed:e})"
    )]
    BitWidthTooSmall {
        /// The bit width requested (or the largest tried).
        bits: u32,
        /// The tail bound on the wrap probability at that width.
        wrap_bound: f64,
        /// The largest wrap probability the caller accepts.
        allowed: f64,
    },
    /// Conditional randomized rounding failed to meet the norm bound after many retries.
    #[error("conditional rounding did not meet the norm bound after {attempts} attempts")]
    RoundingFailed {
        /// How many roundings were tried.
        attempts: u32,
    },
    /// A modular input value does not lie in `Z_{2^b}`.
    #[error("value {value} at index {index} is not below 2^{bits}")]
    OutOfRange {
        /// Position in the vector.
        index: usize,
        /// The offending value.
        value: u64,
        /// The modulus bit width.
        bits: u32,
    },
    /// Charging this event would take the member past its agreed budget.
    #[error(
        "privacy budget exceeded: epsilon would reach {would_reach} > limit {limit} at delta {delta:e}"
    )]
    BudgetExceeded {
        /// Epsilon after the refused event.
        would_reach: f64,
        /// The agreed epsilon.
        limit: f64,
        /// The agreed delta.
        delta: f64,
    },
}

/// Checks that `value` is finite and lies in `[lo, hi]`, naming it in the error otherwise.
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    reason: &'static str,
) -> Result<f64, DpError> {
    // NaN is not finite, so it is rejected here too.
    if !(value.is_finite() && (lo..=hi).contains(&value)) {
        return Err(DpError::InvalidParameter {
            name,
            value,
            reason,
        });
    }
    Ok(value)
}
