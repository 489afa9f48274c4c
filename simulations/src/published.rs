//! Published figures of real EHR audit logs, with their sources, that the generator's normal
//! traffic is held against (`medfl logs` prints both; `docs/realism.md` quotes the sources).
//!
//! Each range is what the cited study reports for its own hospital and setting; real
//! hospitals differ, so a range is a sanity bound, not a target to fit to the decimal.

use std::fmt;

use medfl_accesslog::StaffRole;
use medfl_accesslog::statistics::LogStatistics;

/// A figure of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// Median accesses per user on the days the user accessed anything.
    AccessesPerUserDay,
    /// The same for one role.
    RoleAccessesPerUserDay(StaffRole),
    /// Median distinct patients per user-day.
    PatientsPerUserDay,
    /// The same for one role.
    RolePatientsPerUserDay(StaffRole),
    /// Mean distinct users per patient-day.
    UsersPerPatientDay,
    /// Mean distinct clinicians per patient-day.
    CliniciansPerPatientDay,
    /// Share of accesses at night (22:00-06:00).
    NightShare,
    /// Share of accesses on weekends.
    WeekendShare,
    /// Share of accesses by the patient's care team.
    CareTeamShare,
    /// Share of accesses with a reason in the hospital's records.
    ExplainedShare,
    /// Share of break-the-glass accesses.
    BreakGlassShare,
}

impl Statistic {
    /// This figure of `s` (`None` when the log has no user of the role).
    pub fn of(self, s: &LogStatistics) -> Option<f64> {
        let role = |role: StaffRole| s.by_role.iter().find(|r| r.role == role);
        Some(match self {
            Statistic::AccessesPerUserDay => s.accesses_per_user_day,
            Statistic::RoleAccessesPerUserDay(r) => role(r)?.accesses_per_user_day,
            Statistic::PatientsPerUserDay => s.patients_per_user_day,
            Statistic::RolePatientsPerUserDay(r) => role(r)?.patients_per_user_day,
            Statistic::UsersPerPatientDay => s.users_per_patient_day,
            Statistic::CliniciansPerPatientDay => s.clinicians_per_patient_day,
            Statistic::NightShare => s.night_share,
            Statistic::WeekendShare => s.weekend_share,
            Statistic::CareTeamShare => s.care_team_share,
            Statistic::ExplainedShare => s.explained_share,
            Statistic::BreakGlassShare => s.break_glass_share,
        })
    }

    /// Whether the figure is a share (shown as a percentage).
    fn is_share(self) -> bool {
        matches!(
            self,
            Statistic::NightShare
                | Statistic::WeekendShare
                | Statistic::CareTeamShare
                | Statistic::ExplainedShare
                | Statistic::BreakGlassShare
        )
    }

    /// A value of this figure, as a table shows it.
    pub fn show(self, v: f64) -> String {
        if self.is_share() {
            let pct = 100.0 * v;
            if pct != 0.0 && pct.abs() < 1.0 {
                format!("{pct:.2}%")
            } else {
                format!("{pct:.1}%")
            }
        } else {
            format!("{v:.1}")
        }
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statistic::AccessesPerUserDay => f.write_str("accesses per user-day (median)"),
            Statistic::RoleAccessesPerUserDay(role) => {
                write!(f, "accesses per {role} user-day (median)")
            }
            Statistic::PatientsPerUserDay => f.write_str("patients per user-day (median)"),
            Statistic::RolePatientsPerUserDay(role) => {
                write!(f, "patients per {role} user-day (median)")
            }
            Statistic::UsersPerPatientDay => f.write_str("users per patient-day (mean)"),
            Statistic::CliniciansPerPatientDay => f.write_str("clinicians per patient-day (mean)"),
            Statistic::NightShare => f.write_str("accesses at night, 22:00-06:00"),
            Statistic::WeekendShare => f.write_str("accesses on weekends"),
            Statistic::CareTeamShare => f.write_str("accesses by the care team"),
            Statistic::ExplainedShare => f.write_str("accesses explained"),
            Statistic::BreakGlassShare => f.write_str("break-the-glass accesses"),
        }
    }
}

/// A published range of one figure.
#[derive(Clone, Copy, Debug)]
pub struct Published {
    /// The figure.
    pub statistic: Statistic,
    /// Lowest plausible value.
    pub low: f64,
    /// Highest plausible value.
    pub high: f64,
    /// Where it comes from (short; `docs/realism.md` has the quotes).
    pub source: &'static str,
}

impl Published {
    /// Whether `v` is within the range.
    pub fn contains(&self, v: f64) -> bool {
        (self.low..=self.high).contains(&v)
    }
}

/// The published ranges `medfl logs` holds each hospital against: only figures a study reports
/// for access events (not for time spent in the EHR, which is what most workload studies
/// measure), each bound derived as its comment says.
pub const PUBLISHED: &[Published] = &[
    // Explanation-based auditing explained "over 94%" of a year's accesses at the University of
    // Michigan (Fabbri and LeFevre, PVLDB 2011; JAMIA 2013), "over 90%" with fewer kinds of
    // explanation (Fabbri, LeFevre and Hanauer, DMMH 2011); at the Hospital Italiano de Buenos
    // Aires 85% of 20.5 M accesses needed no justification (Alassia et al., MEDINFO 2015).
    Published {
        statistic: Statistic::ExplainedShare,
        low: 0.85,
        high: 1.0,
        source: "Fabbri & LeFevre PVLDB 2011 (>94%); Alassia et al. MEDINFO 2015 (85%)",
    },
    // Record accesses per patient were 1.14 (night) to 1.76 (day) times as many on weekdays
    // as at weekends (Blecker et al., J Hosp Med 2013, census-adjusted). With a steady census
    // the weekend share is 2 / (2 + 5r): 18.5% at r = 1.76, 26.0% at r = 1.14.
    Published {
        statistic: Statistic::WeekendShare,
        low: 0.185,
        high: 0.26,
        source: "Blecker et al. J Hosp Med 2013 (weekday/weekend 1.14-1.76x)",
    },
    // 30.8 clinicians opened the chart of a patient staying 3 to 5 days (Vawdrey et al., Appl
    // Clin Inform 2011): the distinct clinicians of a patient-day average at least 30.8 / 5 =
    // 6.2 (each seen on one day only) and at most 30.8 (all of them every day).
    Published {
        statistic: Statistic::CliniciansPerPatientDay,
        low: 6.2,
        high: 30.8,
        source: "Vawdrey et al. Appl Clin Inform 2011 (30.8 per 3-5-day stay)",
    },
    // Hospitalists saw 17 patients a day on average (SHM annual meeting abstract,
    // "Hospitalists and the Electronic Medical Record", 24 hospitalists, 2,191 workdays); seeing
    // means signing a note, so records opened are at least as many. The bound is a factor of
    // two either side, a sanity check rather than a fit.
    Published {
        statistic: Statistic::RolePatientsPerUserDay(StaffRole::Physician),
        low: 8.5,
        high: 34.0,
        source: "SHM abstract (hospitalists: 17 patients/day), factor 2",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_ordered_and_bounds_inclusive() {
        for p in PUBLISHED {
            assert!(p.low <= p.high, "{}", p.statistic);
            assert!(p.contains(p.low) && p.contains(p.high));
            assert!(!p.contains(p.low - 1e-9) && !p.contains(p.high + 1e-9));
            assert!(!p.source.is_empty());
        }
    }

    #[test]
    fn shares_show_as_percentages_and_counts_with_one_decimal() {
        assert_eq!(Statistic::WeekendShare.show(0.185), "18.5%");
        assert_eq!(Statistic::BreakGlassShare.show(0.0018), "0.18%");
        assert_eq!(Statistic::CliniciansPerPatientDay.show(6.25), "6.2");
        assert_eq!(
            Statistic::RolePatientsPerUserDay(StaffRole::Physician).to_string(),
            "patients per physician user-day (median)"
        );
    }
}
