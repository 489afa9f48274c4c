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
pub use medfl_dp::{DdgPrivacy, PrivacyBudget, PrivacyEvent};
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
    /// What the release costs each employee, as the accountant composes it.
    pub event: PrivacyEvent,
    /// What the aggregate it went into reveals about the hospital's whole update: the
    /// distributed discrete Gaussian, before any colluder assumption (that is the hospital's
    /// own, applied when composing). `None` in a history kept before it was recorded.
    #[serde(default)]
    pub aggregate: Option<DdgPrivacy>,
}

/// A hospital-level budget a hospital may hold itself to, on top of the employee-level one:
/// what the consortium learns about its whole update, protected only by the aggregate's
/// distributed noise, with `colluders` of each round's minimum survivors assumed to conspire
/// with the coordinator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HospitalBudget {
    /// The hospital-level `(ε, δ)`.
    pub budget: PrivacyBudget,
    /// Survivors assumed hostile in every round.
    pub colluders: u64,
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
    /// The release would take the hospital past its own hospital-level budget.
    #[error(
        "the hospital's own hospital-level budget ({colluders} colluders assumed): epsilon would reach {would_reach:.4}, the limit is {limit} (delta {delta:e})"
    )]
    OverHospitalBudget {
        /// Colluders assumed.
        colluders: u64,
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
    hospital: Option<(MemberBudget, u64)>,
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
            hospital: None,
            charges,
        })
    }

    /// Also holds the hospital to `level` from now on, composing the history's aggregates
    /// under its colluder assumption.
    ///
    /// # Errors
    /// [`SpendError::Accounting`] if a stored aggregate is invalid or missing (a release
    /// recorded before aggregates were, which cannot be priced at the hospital level: such a
    /// history cannot take on a hospital-level budget), or leaves no honest noise share.
    pub fn with_hospital_budget(mut self, level: HospitalBudget) -> Result<Self, SpendError> {
        let mut composed = MemberBudget::new(level.budget);
        for c in &self.charges {
            composed
                .record(&hospital_event(c.aggregate.as_ref(), level.colluders)?)
                .map_err(accounting)?;
        }
        self.hospital = Some((composed, level.colluders));
        Ok(self)
    }

    /// `ε` spent at the hospital level so far, if the hospital holds itself to a budget there.
    ///
    /// # Errors
    /// [`SpendError::Accounting`] if the accountant fails.
    pub fn hospital_spent(&self) -> Result<Option<f64>, SpendError> {
        self.hospital
            .as_ref()
            .map(|(b, _)| b.spent().map_err(accounting))
            .transpose()
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

    /// The employee-level `ε` after a release costing `event` into an aggregate with noise
    /// `aggregate`, or why it does not fit (either budget); nothing is charged.
    ///
    /// # Errors
    /// [`SpendError::OverBudget`], [`SpendError::OverHospitalBudget`] or
    /// [`SpendError::Accounting`].
    pub fn check(
        &self,
        event: &PrivacyEvent,
        aggregate: Option<&DdgPrivacy>,
    ) -> Result<f64, SpendError> {
        let after = self.budget.epsilon_after(event).map_err(accounting)?;
        let after = self.within(after)?;
        if let Some((budget, colluders)) = &self.hospital {
            let reach = budget
                .epsilon_after(&hospital_event(aggregate, *colluders)?)
                .map_err(accounting)?;
            let b = budget.budget();
            if reach > b.epsilon() {
                return Err(SpendError::OverHospitalBudget {
                    colluders: *colluders,
                    would_reach: reach,
                    limit: b.epsilon(),
                    delta: b.delta(),
                });
            }
        }
        Ok(after)
    }

    /// Charges `charge` if both its employee-level cost and, where the hospital holds itself to
    /// one, its hospital-level cost fit; returns the employee-level `ε` spent after it.
    ///
    /// # Errors
    /// As [`PrivacySpend::check`]; a refused charge changes nothing.
    pub fn charge(&mut self, charge: Charge) -> Result<f64, SpendError> {
        let after = self.check(&charge.event, charge.aggregate.as_ref())?;
        // Both records are built before either is kept: a failure leaves both as they were.
        let mut budget = self.budget.clone();
        budget.record(&charge.event).map_err(accounting)?;
        let hospital = match &self.hospital {
            Some((h, colluders)) => {
                let mut h = h.clone();
                h.record(&hospital_event(charge.aggregate.as_ref(), *colluders)?)
                    .map_err(accounting)?;
                Some((h, *colluders))
            }
            None => None,
        };
        self.budget = budget;
        self.hospital = hospital;
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

/// The hospital-level event of one release under a colluder assumption. A release without a
/// recorded aggregate, or with fewer honest shares than colluders, is charged as unprotected
/// (an error: the accountant has no finite figure for it).
fn hospital_event(
    aggregate: Option<&DdgPrivacy>,
    colluders: u64,
) -> Result<PrivacyEvent, SpendError> {
    let aggregate = aggregate.ok_or_else(|| {
        SpendError::Accounting("a release without its aggregate's noise on record".into())
    })?;
    Ok(PrivacyEvent::DistributedDiscreteGaussian {
        privacy: aggregate.with_colluders(colluders).map_err(accounting)?,
        rounds: 1,
    })
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
            aggregate: Some(aggregate()),
        }
    }

    /// A sum over at least 3 survivors, noise large enough for a finite hospital-level figure.
    fn aggregate() -> DdgPrivacy {
        DdgPrivacy {
            l2_sensitivity: 100.0,
            l1_sensitivity: 1000.0,
            local_sigma: 200.0,
            clients: 3,
            dim: 1024,
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
        assert!(again.check(&round(3, "c").event, None).is_err());
    }

    #[test]
    fn the_hospital_level_budget_is_charged_and_enforced_with_its_colluders() {
        let roomy = PrivacyBudget::new(1e9, 1e-6).unwrap();
        let spent = |colluders, releases| {
            let mut p = PrivacySpend::new(roomy, vec![])
                .unwrap()
                .with_hospital_budget(HospitalBudget {
                    budget: roomy,
                    colluders,
                })
                .unwrap();
            for n in 0..releases {
                p.charge(round(n, "a")).unwrap();
            }
            p.hospital_spent().unwrap().unwrap()
        };
        // Each colluder removes a noise share: the same release costs more.
        let (e0, e1, e2) = (spent(0, 1), spent(1, 1), spent(2, 1));
        assert!(0.0 < e0 && e0 < e1 && e1 < e2, "{e0} {e1} {e2}");

        // Room for one release at the hospital level: the second is refused, nothing charged,
        // although the employee-level budget has room.
        let level = HospitalBudget {
            budget: PrivacyBudget::new((e1 + spent(1, 2)) / 2.0, 1e-6).unwrap(),
            colluders: 1,
        };
        let mut s = PrivacySpend::new(roomy, vec![])
            .unwrap()
            .with_hospital_budget(level)
            .unwrap();
        s.charge(round(1, "a")).unwrap();
        let err = s.charge(round(2, "b")).unwrap_err();
        assert!(
            matches!(err, SpendError::OverHospitalBudget { .. }),
            "{err}"
        );
        assert_eq!(s.charges().len(), 1);
        // Reloaded, the history is charged again under the same assumption.
        let again = PrivacySpend::new(roomy, s.charges().to_vec())
            .unwrap()
            .with_hospital_budget(level)
            .unwrap();
        assert_eq!(again.hospital_spent().unwrap(), s.hospital_spent().unwrap());

        // As many colluders as survivors: no honest share, nothing can be released.
        let mut none = PrivacySpend::new(roomy, vec![])
            .unwrap()
            .with_hospital_budget(HospitalBudget {
                budget: roomy,
                colluders: 3,
            })
            .unwrap();
        assert!(none.charge(round(1, "a")).is_err());
        assert!(none.charges().is_empty());
    }
}
