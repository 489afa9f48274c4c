//! A member's privacy budget under a data-use agreement, checked before any data is touched.
//!
//! Each hospital agrees to an `(ε, δ)` budget. Every round that uses its data is a
//! [`PrivacyEvent`]; [`MemberBudget::would_exceed`] composes the event into a *copy* of the
//! member's accountant ([`PrivacyLoss`]: the tighter of RDP and PLD) and converts to `ε` at the agreed `δ`, and [`MemberBudget::charge`]
//! commits it only if the result stays within the agreement. A refused round leaves the state
//! unchanged, so the coordinator can refuse the round before clients compute anything.

use serde::{Deserialize, Serialize};

use crate::accountant::{DdgPrivacy, check_delta, check_noise, check_q};
use crate::error::{DpError, check_range};
use crate::loss::PrivacyLoss;

/// An agreed `(ε, δ)` budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyBudget {
    /// Total `ε` the member allows.
    epsilon: f64,
    /// The `δ` at which `ε` is measured.
    delta: f64,
}

impl PrivacyBudget {
    /// A budget with `ε > 0` finite and `δ ∈ (0, 1)`.
    pub fn new(epsilon: f64, delta: f64) -> Result<Self, DpError> {
        check_range(
            "epsilon",
            epsilon,
            f64::MIN_POSITIVE,
            f64::MAX,
            "must be finite and positive",
        )?;
        check_delta(delta)?;
        Ok(Self { epsilon, delta })
    }

    /// The agreed `ε`.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The agreed `δ`.
    pub fn delta(&self) -> f64 {
        self.delta
    }
}

/// One use of a member's data, as the accountant sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PrivacyEvent {
    /// `steps` DP-SGD steps: Poisson sampling rate `q`, Gaussian noise multiplier `σ`.
    PoissonGaussian {
        /// Sampling rate in `(0, 1]`.
        q: f64,
        /// Noise std over the clipping bound.
        noise_multiplier: f64,
        /// Number of steps.
        steps: u64,
    },
    /// `rounds` sums under the distributed discrete Gaussian.
    DistributedDiscreteGaussian {
        /// The per-round parameters from [`crate::ddp::DdpPlan::privacy`].
        privacy: DdgPrivacy,
        /// Number of rounds.
        rounds: u64,
    },
}

impl PrivacyEvent {
    /// Checks the event's parameters (rate in `(0, 1]`, non-negative σ, non-zero counts).
    pub fn validate(&self) -> Result<(), DpError> {
        match *self {
            Self::PoissonGaussian {
                q,
                noise_multiplier,
                steps,
            } => {
                check_q(q)?;
                if q == 0.0 {
                    return Err(DpError::InvalidParameter {
                        name: "q",
                        value: q,
                        reason: "sampling rate must be in (0, 1]",
                    });
                }
                check_noise(noise_multiplier)?;
                nonzero("steps", steps)
            }
            Self::DistributedDiscreteGaussian { privacy, rounds } => {
                privacy.validate()?;
                nonzero("rounds", rounds)
            }
        }
    }

    /// Composes the event into `acc`.
    fn apply(&self, acc: &mut PrivacyLoss) -> Result<(), DpError> {
        self.validate()?;
        match *self {
            Self::PoissonGaussian {
                q,
                noise_multiplier,
                steps,
            } => acc.compose_poisson_gaussian(q, noise_multiplier, steps),
            Self::DistributedDiscreteGaussian { privacy, rounds } => {
                acc.compose_ddg(&privacy, rounds)
            }
        }
    }
}

/// Rejects a zero count.
fn nonzero(name: &'static str, value: u64) -> Result<(), DpError> {
    if value == 0 {
        return Err(DpError::InvalidCount {
            name,
            value,
            reason: "must be positive",
        });
    }
    Ok(())
}

/// A member's agreed budget and everything charged against it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberBudget {
    /// The agreement.
    budget: PrivacyBudget,
    /// The composition of all charged events (priced by the tighter of RDP and PLD).
    accountant: PrivacyLoss,
}

impl MemberBudget {
    /// A fresh budget with nothing spent.
    pub fn new(budget: PrivacyBudget) -> Self {
        Self {
            budget,
            accountant: PrivacyLoss::new(),
        }
    }

    /// The agreement.
    pub fn budget(&self) -> PrivacyBudget {
        self.budget
    }

    /// `ε` spent so far, at the agreed `δ`.
    pub fn spent(&self) -> Result<f64, DpError> {
        self.accountant.epsilon(self.budget.delta)
    }

    /// `ε` the member would have spent after `event` (state unchanged).
    pub fn epsilon_after(&self, event: &PrivacyEvent) -> Result<f64, DpError> {
        let mut acc = self.accountant.clone();
        event.apply(&mut acc)?;
        acc.epsilon(self.budget.delta)
    }

    /// Whether `event` would take the member past the agreed `ε` (bad parameters are errors).
    pub fn would_exceed(&self, event: &PrivacyEvent) -> Result<bool, DpError> {
        Ok(self.epsilon_after(event)? > self.budget.epsilon)
    }

    /// Composes an event that already happened, fitting or not (a history being reloaded);
    /// returns the new `ε` spent.
    pub fn record(&mut self, event: &PrivacyEvent) -> Result<f64, DpError> {
        event.apply(&mut self.accountant)?;
        self.spent()
    }

    /// Commits `event` if it fits, returning the new `ε` spent; refuses (unchanged) otherwise.
    pub fn charge(&mut self, event: &PrivacyEvent) -> Result<f64, DpError> {
        let mut acc = self.accountant.clone();
        event.apply(&mut acc)?;
        let eps = acc.epsilon(self.budget.delta)?;
        if eps > self.budget.epsilon {
            return Err(DpError::BudgetExceeded {
                would_reach: eps,
                limit: self.budget.epsilon,
                delta: self.budget.delta,
            });
        }
        self.accountant = acc;
        Ok(eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_charge_leaves_state_unchanged() {
        let mut m = MemberBudget::new(PrivacyBudget::new(1.0, 1e-5).unwrap());
        let round = PrivacyEvent::PoissonGaussian {
            q: 0.01,
            noise_multiplier: 1.0,
            steps: 1000,
        };
        // ε ≈ 0.68 per 1000 steps at q = 0.001 in the reference table; here q = 0.01 costs more.
        assert!(m.would_exceed(&round).unwrap());
        let before = m.clone();
        assert!(matches!(
            m.charge(&round),
            Err(DpError::BudgetExceeded { .. })
        ));
        assert_eq!(m, before);
        let small = PrivacyEvent::PoissonGaussian {
            q: 0.001,
            noise_multiplier: 1.0,
            steps: 100,
        };
        let e1 = m.charge(&small).unwrap();
        let e2 = m.charge(&small).unwrap();
        assert!(e1 > 0.0 && e2 > e1 && e2 <= 1.0);
        assert_eq!(m.spent().unwrap(), e2);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        assert!(PrivacyBudget::new(-1.0, 1e-5).is_err());
        assert!(PrivacyBudget::new(f64::NAN, 1e-5).is_err());
        assert!(PrivacyBudget::new(1.0, 1.0).is_err());
        assert!(PrivacyBudget::new(1.0, 0.0).is_err());
        assert!(PrivacyBudget::new(1.0, 1.5).is_err());
        let m = MemberBudget::new(PrivacyBudget::new(1.0, 1e-5).unwrap());
        let bad = [
            PrivacyEvent::PoissonGaussian {
                q: 0.0,
                noise_multiplier: 1.0,
                steps: 1,
            },
            PrivacyEvent::PoissonGaussian {
                q: 1.1,
                noise_multiplier: 1.0,
                steps: 1,
            },
            PrivacyEvent::PoissonGaussian {
                q: 0.1,
                noise_multiplier: -1.0,
                steps: 1,
            },
            PrivacyEvent::PoissonGaussian {
                q: 0.1,
                noise_multiplier: f64::NAN,
                steps: 1,
            },
            PrivacyEvent::PoissonGaussian {
                q: 0.1,
                noise_multiplier: 1.0,
                steps: 0,
            },
            PrivacyEvent::DistributedDiscreteGaussian {
                privacy: DdgPrivacy {
                    l2_sensitivity: 1.0,
                    l1_sensitivity: 1.0,
                    local_sigma: 2.0,
                    clients: 0,
                    dim: 4,
                },
                rounds: 1,
            },
        ];
        for e in bad {
            assert!(m.would_exceed(&e).is_err(), "{e:?}");
        }
    }
}
