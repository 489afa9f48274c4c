//! Privacy budgets and the DP parameters a round anchor records.
//!
//! Budgets are `(epsilon, delta)` per member per data-use agreement. A round anchor records each
//! participant's *cumulative* epsilon under the agreement, as computed by the accountant over all
//! its rounds so far, not a per-round increment: Rényi-DP composition is not additive in epsilon,
//! so summing per-round epsilons would overstate the spend, and the ledger must not do privacy
//! accounting of its own. The contract checks that the cumulative figure never goes down and never
//! exceeds the budget; the DP parameters beside it let an auditor recompute it.

use serde::{Deserialize, Serialize};

/// Checks that a float is finite and within `[lo, hi]`.
pub(crate) fn check_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(format!(
            "{name} = {v} must be a finite number in [{lo}, {hi}]"
        ));
    }
    Ok(())
}

/// An `(epsilon, delta)` differential-privacy budget.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBudget {
    /// Total epsilon a member may spend under the agreement.
    pub epsilon: f64,
    /// The delta every round's guarantee is stated at.
    pub delta: f64,
}

impl PrivacyBudget {
    /// Checks `0 < epsilon <= 1000` and `0 <= delta < 1`.
    pub fn check(&self) -> Result<(), String> {
        check_range("epsilon", self.epsilon, f64::MIN_POSITIVE, 1000.0)?;
        check_range("delta", self.delta, 0.0, 1.0)?;
        if self.delta >= 1.0 {
            return Err("delta must be below 1".into());
        }
        Ok(())
    }
}

/// Which mechanism protected a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpMechanism {
    /// Record-level DP-SGD inside each hospital (Abadi et al. 2016).
    DpSgd,
    /// Member-level distributed discrete Gaussian noise summed under secure aggregation
    /// (Kairouz, Liu & Steinke 2021).
    DistributedDiscreteGaussian,
    /// Both of the above.
    DpSgdAndDistributedDiscreteGaussian,
}

/// The DP parameters of a round, enough for an auditor to recompute the spend.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpParams {
    /// Which mechanism.
    pub mechanism: DpMechanism,
    /// Noise standard deviation divided by the clipping norm.
    pub noise_multiplier: f64,
    /// Poisson sampling rate of DP-SGD (1 for the distributed mechanism alone).
    pub sampling_rate: f64,
    /// Noisy steps taken in the round.
    pub steps: u64,
    /// L2 clipping norm.
    pub clip_norm: f64,
    /// The delta the epsilons are stated at.
    pub delta: f64,
}

impl DpParams {
    /// Checks ranges: multiplier and clip norm positive, rate in `(0, 1]`, delta in `[0, 1)`.
    pub fn check(&self) -> Result<(), String> {
        check_range(
            "noise_multiplier",
            self.noise_multiplier,
            f64::MIN_POSITIVE,
            1e6,
        )?;
        check_range("sampling_rate", self.sampling_rate, f64::MIN_POSITIVE, 1.0)?;
        check_range("clip_norm", self.clip_norm, f64::MIN_POSITIVE, 1e12)?;
        check_range("delta", self.delta, 0.0, 1.0)?;
        if self.delta >= 1.0 {
            return Err("delta must be below 1".into());
        }
        if self.steps == 0 {
            return Err("steps must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_budgets_and_params_are_refused() {
        assert!(
            PrivacyBudget {
                epsilon: 8.0,
                delta: 1e-5
            }
            .check()
            .is_ok()
        );
        for (e, d) in [
            (0.0, 1e-5),
            (f64::NAN, 1e-5),
            (8.0, 1.0),
            (8.0, -1e-9),
            (f64::INFINITY, 0.0),
        ] {
            assert!(
                PrivacyBudget {
                    epsilon: e,
                    delta: d
                }
                .check()
                .is_err(),
                "{e} {d}"
            );
        }
        let ok = DpParams {
            mechanism: DpMechanism::DpSgd,
            noise_multiplier: 1.1,
            sampling_rate: 0.01,
            steps: 100,
            clip_norm: 1.0,
            delta: 1e-5,
        };
        assert!(ok.check().is_ok());
        assert!(
            DpParams {
                sampling_rate: 1.5,
                ..ok
            }
            .check()
            .is_err()
        );
        assert!(
            DpParams {
                noise_multiplier: -1.0,
                ..ok
            }
            .check()
            .is_err()
        );
        assert!(DpParams { steps: 0, ..ok }.check().is_err());
    }
}
