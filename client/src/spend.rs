//! The hospital's own privacy ledger: every release of an update computed from its data is
//! charged here before the masked input leaves, against a budget the hospital sets itself.
//!
//! The consortium ledger's spend is kept per agreement and only counts anchored rounds; the
//! coordinator decides both. A hospital cannot rely on either: an attempt that fails after its
//! input was unmasked (an endorsement timeout, a refused anchor, a coordinator restart) still
//! released a noisy update, and a second agreement over the same logs does not make them new.
//! So the hospital charges each release here, whatever agreement or attempt it belongs to,
//! composes everything with one accountant, and refuses what would cross its budget. The
//! driver makes each charge durable (see [`crate::Agent::charge_recorded`]) before the input
//! goes out; a crash in between costs budget, never privacy.

use medfl_dp::MemberBudget;
pub use medfl_dp::{PrivacyBudget, PrivacyEvent};
use medfl_ledger::AgreementId;
use serde::{Deserialize, Serialize};

/// One release of an update derived from the hospital's data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// The agreement the round ran under (for the record; the budget spans all of them).
    pub agreement: AgreementId,
    /// The round.
    pub round: u64,
    /// The attempt: every attempt that reached the input stage is charged.
    pub session: u64,
    /// What the release costs, as the accountant composes it.
    pub event: PrivacyEvent,
}

/// Why the hospital will not release an update.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpendError {
    /// The release would take the hospital past its own budget.
    #[error(
        "the hospital's own budget: epsilon would reach {would_reach:.4}, the limit is {limit} (delta {delta:e})"
    )]
    OverBudget {
        /// `ε` after the release.
        would_reach: f64,
        /// The hospital's `ε`.
        limit: f64,
        /// The hospital's `δ`.
        delta: f64,
    },
    /// The event's parameters are invalid (an accountant error).
    #[error("privacy accounting: {0}")]
    Accounting(String),
}

/// Everything the hospital has released, composed, and the budget it holds itself to.
#[derive(Clone, Debug)]
pub struct PrivacySpend {
    budget: MemberBudget,
    charges: Vec<Charge>,
}

impl PrivacySpend {
    /// The hospital's budget and its charge history (from its durable store). A history over
    /// budget loads as it is; every further release is then refused.
    ///
    /// # Errors
    /// [`SpendError::Accounting`] if a stored charge is invalid.
    pub fn new(budget: PrivacyBudget, charges: Vec<Charge>) -> Result<Self, SpendError> {
        let mut composed = MemberBudget::new(budget);
        for c in &charges {
            composed.record(&c.event).map_err(accounting)?;
        }
        Ok(Self {
            budget: composed,
            charges,
        })
    }

    /// The hospital's budget.
    pub fn budget(&self) -> PrivacyBudget {
        self.budget.budget()
    }

    /// `ε` spent so far, at the budget's `δ`.
    ///
    /// # Errors
    /// [`SpendError::Accounting`] if the accountant fails.
    pub fn spent(&self) -> Result<f64, SpendError> {
        self.budget.spent().map_err(accounting)
    }

    /// Every charge, oldest first.
    pub fn charges(&self) -> &[Charge] {
        &self.charges
    }

    /// `ε` after `event`, or why it does not fit; nothing is charged.
    ///
    /// # Errors
    /// [`SpendError::OverBudget`] or [`SpendError::Accounting`].
    pub fn check(&self, event: &PrivacyEvent) -> Result<f64, SpendError> {
        let after = self.budget.epsilon_after(event).map_err(accounting)?;
        self.within(after)
    }

    /// Charges `charge` if it fits; returns `ε` spent after it.
    ///
    /// # Errors
    /// [`SpendError::OverBudget`] (nothing charged) or [`SpendError::Accounting`].
    pub fn charge(&mut self, charge: Charge) -> Result<f64, SpendError> {
        let after = self.check(&charge.event)?;
        self.budget.record(&charge.event).map_err(accounting)?;
        self.charges.push(charge);
        Ok(after)
    }

    fn within(&self, after: f64) -> Result<f64, SpendError> {
        let b = self.budget.budget();
        if after > b.epsilon() {
            return Err(SpendError::OverBudget {
                would_reach: after,
                limit: b.epsilon(),
                delta: b.delta(),
            });
        }
        Ok(after)
    }
}

fn accounting(e: medfl_dp::DpError) -> SpendError {
    SpendError::Accounting(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(session: u64, agreement: &str) -> Charge {
        Charge {
            agreement: AgreementId::new(agreement).unwrap(),
            round: 1,
            session,
            event: PrivacyEvent::PoissonGaussian {
                q: 0.01,
                noise_multiplier: 1.0,
                steps: 100,
            },
        }
    }

    #[test]
    fn charges_compose_across_attempts_and_agreements_until_the_budget() {
        // ε after 1, 2, 3 releases (composition is sublinear: not 1, 2, 3 times the first).
        let mut probe = PrivacySpend::new(PrivacyBudget::new(1e9, 1e-6).unwrap(), vec![]).unwrap();
        let e: Vec<f64> = (1..=3)
            .map(|n| probe.charge(round(n, "a")).unwrap())
            .collect();
        assert!(e[0] < e[1] && e[1] < e[2]);
        // Room for two releases, not three.
        let budget = PrivacyBudget::new((e[1] + e[2]) / 2.0, 1e-6).unwrap();
        let mut s = PrivacySpend::new(budget, vec![]).unwrap();
        s.charge(round(1, "a")).unwrap();
        s.charge(round(2, "b")).unwrap();
        let before = s.spent().unwrap();
        let err = s.charge(round(3, "c")).unwrap_err();
        assert!(matches!(err, SpendError::OverBudget { .. }), "{err}");
        assert_eq!(
            s.spent().unwrap(),
            before,
            "a refused charge changes nothing"
        );
        assert_eq!(s.charges().len(), 2);
        // Reloading the history gives the same spend.
        let again = PrivacySpend::new(budget, s.charges().to_vec()).unwrap();
        assert_eq!(again.spent().unwrap(), before);
        assert!(again.check(&round(3, "c").event).is_err());
    }
}
