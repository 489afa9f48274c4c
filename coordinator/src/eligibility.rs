//! Who may join the next round, and why each other member may not: an operator seeing "waiting
//! for hospitals" must also see that one hospital's privacy budget is spent and another never
//! accepted the agreement.

use std::collections::BTreeMap;
use std::fmt;

use medfl_ledger::MemberId;
use serde::Serialize;

/// Why a member cannot join the next round.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Ineligible {
    /// Revoked on the ledger (or not on it at all).
    Revoked,
    /// Not a hospital: coordinators and auditors train nothing.
    NotAHospital,
    /// The agreement rounds run under does not list it.
    NotInAgreement,
    /// Listed by the agreement, but it has not accepted it on the ledger.
    NotAccepted,
    /// Secure aggregation proved it cheated; left out until an operator decides.
    Excluded {
        /// The proof's description.
        proof: String,
    },
    /// One more round would take it past its privacy budget.
    BudgetSpent {
        /// Its epsilon after one more round.
        epsilon_after: f64,
        /// The agreement's budget.
        budget: f64,
    },
    /// Eligible, but not connected.
    NotConnected,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::Revoked => f.write_str("revoked on the ledger"),
            Ineligible::NotAHospital => f.write_str("not a hospital"),
            Ineligible::NotInAgreement => f.write_str("not a member of the agreement"),
            Ineligible::NotAccepted => f.write_str("has not accepted the agreement"),
            Ineligible::Excluded { proof } => write!(f, "excluded: {proof}"),
            Ineligible::BudgetSpent {
                epsilon_after,
                budget,
            } => write!(
                f,
                "privacy budget spent (epsilon {epsilon_after:.3} after one more round, budget {budget})"
            ),
            Ineligible::NotConnected => f.write_str("not connected"),
        }
    }
}

/// The members who may join the next round, and why the others may not.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Eligibility {
    /// Eligible connected members with their epsilon after the round, in id order.
    pub eligible: Vec<(MemberId, f64)>,
    /// Every other member of the agreement, and every other connected member, with the first
    /// reason that rules it out.
    pub ineligible: BTreeMap<MemberId, Ineligible>,
}

/// `member: reason` pairs, joined for a log line or an error.
pub fn describe_ineligible(ineligible: &BTreeMap<MemberId, Ineligible>) -> String {
    ineligible
        .iter()
        .map(|(m, why)| format!("{m}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}
