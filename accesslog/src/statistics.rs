//! The figures by which a log is held against published statistics of real EHR audit logs:
//! how much each user reads in a day, how many patients, how many people read each patient,
//! when, and how much of it the hospital's records explain.
//!
//! A simulator is only worth its detection figures if its normal traffic looks like a
//! hospital's; `medfl logs` prints these beside the published figures (with their sources) so
//! a reader can see where the generator sits. Each figure is a plain count over the events, so
//! the same function summarises a real export (`medfl logs` on generated logs, or a test on a
//! hospital's own file).
//!
//! Days are UTC days, as everywhere in medfl (hospitals log local time as UTC, see
//! [`crate::features`]); "night" is 22:00-06:00, the off-hours default of feature 10;
//! a weekend is Saturday and Sunday.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::event::{AccessEvent, StaffRole};
use crate::explained::Explained;

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;

/// One role's daily activity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoleStatistics {
    /// The role.
    pub role: StaffRole,
    /// Users of this role with at least one access.
    pub users: usize,
    /// Median accesses per user on the days the user accessed anything.
    pub accesses_per_user_day: f64,
    /// Median distinct patients per user on those days.
    pub patients_per_user_day: f64,
}

/// A log's figures (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogStatistics {
    /// Accesses counted.
    pub events: usize,
    /// Distinct users.
    pub users: usize,
    /// Distinct patients.
    pub patients: usize,
    /// Median accesses per user on the days the user accessed anything.
    pub accesses_per_user_day: f64,
    /// Median distinct patients per user on those days.
    pub patients_per_user_day: f64,
    /// Mean distinct users per patient on the days the patient's record was read (a mean, so
    /// that it compares with published per-stay counts divided by the stay's days).
    pub users_per_patient_day: f64,
    /// The same counting clinicians only (physicians, nurses, pharmacists, students), over the
    /// patient-days a clinician read the record: what studies of care teams count.
    pub clinicians_per_patient_day: f64,
    /// Per role, in [`StaffRole::ALL`] order, roles without accesses left out.
    pub by_role: Vec<RoleStatistics>,
    /// Share of accesses between 22:00 and 06:00.
    pub night_share: f64,
    /// Share of accesses on Saturdays and Sundays.
    pub weekend_share: f64,
    /// Share of accesses by a member of the patient's care team.
    pub care_team_share: f64,
    /// Share of accesses with a reason in the hospital's records ([`crate::explained`]).
    pub explained_share: f64,
    /// Share of break-the-glass accesses.
    pub break_glass_share: f64,
}

/// Counts over one user's (or patient's) day.
#[derive(Default)]
struct Day<'a> {
    accesses: usize,
    others: HashSet<&'a str>,
}

/// The figures of `events` (`None` without any).
pub fn statistics<'a>(events: impl IntoIterator<Item = &'a AccessEvent>) -> Option<LogStatistics> {
    let mut user_days: HashMap<(&str, u64), Day> = HashMap::new();
    let mut patient_days: HashMap<(&str, u64), HashSet<&str>> = HashMap::new();
    let mut clinician_days: HashMap<(&str, u64), HashSet<&str>> = HashMap::new();
    let mut roles: HashMap<&str, StaffRole> = HashMap::new();
    let mut patients: HashSet<&str> = HashSet::new();
    let (mut night, mut weekend, mut break_glass) = (0usize, 0usize, 0usize);
    let mut explained = Explained::default();
    for e in events {
        let day = e.time_ms / DAY_MS;
        let d = user_days.entry((&e.user, day)).or_default();
        d.accesses += 1;
        d.others.insert(&e.patient);
        patient_days
            .entry((&e.patient, day))
            .or_default()
            .insert(&e.user);
        if is_clinician(e.role) {
            clinician_days
                .entry((&e.patient, day))
                .or_default()
                .insert(&e.user);
        }
        // A user's role is the one of their first access (a directory gives one per user).
        roles.entry(&e.user).or_insert(e.role);
        patients.insert(&e.patient);
        let hour = (e.time_ms % DAY_MS) / HOUR_MS;
        night += usize::from(!(6..22).contains(&hour));
        // 1 January 1970 was a Thursday: (day + 3) % 7 is 0 on Mondays.
        weekend += usize::from((day + 3) % 7 >= 5);
        break_glass += usize::from(e.break_glass);
        explained.add(e);
    }
    let n = explained.events;
    if n == 0 {
        return None;
    }
    let share = |k: usize| k as f64 / n as f64;
    let by_role = StaffRole::ALL
        .iter()
        .filter_map(|&role| {
            let days: Vec<&Day> = user_days
                .iter()
                .filter(|((u, _), _)| roles.get(u) == Some(&role))
                .map(|(_, d)| d)
                .collect();
            let users = roles.values().filter(|r| **r == role).count();
            (!days.is_empty()).then(|| RoleStatistics {
                role,
                users,
                accesses_per_user_day: median(days.iter().map(|d| d.accesses as f64)),
                patients_per_user_day: median(days.iter().map(|d| d.others.len() as f64)),
            })
        })
        .collect();
    Some(LogStatistics {
        events: n,
        users: roles.len(),
        patients: patients.len(),
        accesses_per_user_day: median(user_days.values().map(|d| d.accesses as f64)),
        patients_per_user_day: median(user_days.values().map(|d| d.others.len() as f64)),
        users_per_patient_day: mean(patient_days.values().map(|u| u.len() as f64)),
        clinicians_per_patient_day: mean(clinician_days.values().map(|u| u.len() as f64)),
        by_role,
        night_share: share(night),
        weekend_share: share(weekend),
        care_team_share: share(explained.care_team),
        explained_share: explained.share().unwrap_or(0.0),
        break_glass_share: share(break_glass),
    })
}

/// Whether `role` gives care (and so counts in [`LogStatistics::clinicians_per_patient_day`]).
fn is_clinician(role: StaffRole) -> bool {
    matches!(
        role,
        StaffRole::Physician | StaffRole::Nurse | StaffRole::Pharmacist | StaffRole::Student
    )
}

/// The mean of `values` (0 for none).
fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    if n == 0 {
        0.0
    } else {
        values.sum::<f64>() / n as f64
    }
}

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Resource};

    fn access(user: &str, role: StaffRole, patient: &str, time_ms: u64) -> AccessEvent {
        AccessEvent {
            event_id: 1,
            time_ms,
            user: user.into(),
            role,
            user_department: "icu".into(),
            patient: patient.into(),
            patient_department: "icu".into(),
            action: Action::View,
            resource: Resource::ClinicalNote,
            workstation: "ws".into(),
            ip: "10.0.0.1".into(),
            break_glass: false,
            care_team: true,
            vip: false,
            family_link: false,
        }
    }

    // Monday 5 January 2026, 00:00 UTC.
    const MONDAY: u64 = 1_767_571_200_000;

    #[test]
    fn counts_per_user_day_per_patient_day_and_by_hour_and_weekday() {
        let h = HOUR_MS;
        let mut events = vec![
            // Nurse n1 on Monday: three accesses to two patients, one at 23:00.
            access("n1", StaffRole::Nurse, "p1", MONDAY + 9 * h),
            access("n1", StaffRole::Nurse, "p1", MONDAY + 10 * h),
            access("n1", StaffRole::Nurse, "p2", MONDAY + 23 * h),
            // Physician d1 on Monday: one access; on Saturday: one.
            access("d1", StaffRole::Physician, "p1", MONDAY + 11 * h),
            access(
                "d1",
                StaffRole::Physician,
                "p3",
                MONDAY + 5 * DAY_MS + 12 * h,
            ),
        ];
        events[4].break_glass = true;
        events[4].care_team = false;
        events[4].patient_department = "oncology".into();
        let s = statistics(&events).unwrap();
        assert_eq!((s.events, s.users, s.patients), (5, 2, 3));
        // User-days: n1 Monday (3 accesses, 2 patients), d1 Monday (1, 1), d1 Saturday (1, 1).
        assert_eq!(
            (s.accesses_per_user_day, s.patients_per_user_day),
            (1.0, 1.0)
        );
        // Patient-days: p1 Monday (n1, d1), p2 Monday (n1), p3 Saturday (d1).
        assert_eq!(s.users_per_patient_day, 4.0 / 3.0);
        assert_eq!(s.clinicians_per_patient_day, 4.0 / 3.0);
        // A biller's look after discharge is a patient-day of users, not of clinicians.
        let mut billed = events.clone();
        billed.push(access(
            "b1",
            StaffRole::Billing,
            "p2",
            MONDAY + DAY_MS + 9 * h,
        ));
        let b = statistics(&billed).unwrap();
        assert_eq!(b.users_per_patient_day, 5.0 / 4.0);
        assert_eq!(b.clinicians_per_patient_day, 4.0 / 3.0);
        assert_eq!(s.night_share, 0.2);
        assert_eq!(s.weekend_share, 0.2);
        assert_eq!(s.break_glass_share, 0.2);
        assert_eq!((s.care_team_share, s.explained_share), (0.8, 0.8));
        let roles: Vec<_> = s
            .by_role
            .iter()
            .map(|r| {
                (
                    r.role,
                    r.users,
                    r.accesses_per_user_day,
                    r.patients_per_user_day,
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                (StaffRole::Physician, 1, 1.0, 1.0),
                (StaffRole::Nurse, 1, 3.0, 2.0)
            ]
        );
    }

    #[test]
    fn an_empty_log_has_no_figures_and_medians_take_the_middle() {
        assert_eq!(statistics(&[]), None);
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
