//! Explanations first: whether an access has a reason the hospital's own records give.
//!
//! Explanation-based auditing (Fabbri and LeFevre, PVLDB 2011) starts from the observation that
//! nearly every access to a chart has a reason in the hospital's records: the user treats the
//! patient, or works where the patient is being treated. With care relationships and the
//! responsibility of departments it explained over 94% of a hospital's accesses (PVLDB 2011;
//! JAMIA 2013); simple reasons alone explain far fewer (16-43% in Hedda et al., AMIA 2017). An
//! access with no reason is the one an officer should look at first.
//!
//! medfl's reasons are the two its context feeds carry: the user is on the patient's care team
//! at that moment (`care_team`, from `CareTeam`/`Encounter` assignments, from the consult
//! orders and referrals a `ServiceRequest` names them to perform, and from the `Appointment`s
//! they attend, see [`crate::context`]), or the user works in the department responsible for
//! the patient (`patient_department`). A consult nobody ordered reads as unexplained.
//!
//! The reason is a function of the event alone, so it reads the same in `medfl logs` (the
//! shares per hospital) and in the live monitor (the first line of an alert's explanation).
//! It is not a model feature.

use serde::Serialize;

use crate::event::AccessEvent;

/// Why an access is explained, strongest reason first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The user is on the patient's care team at that time.
    CareTeam,
    /// The user works in the department responsible for the patient.
    Department,
}

impl Reason {
    /// The reason in words, for an officer.
    pub fn words(self) -> &'static str {
        match self {
            Reason::CareTeam => "the user is on the patient's care team",
            Reason::Department => "the user works in the patient's department",
        }
    }
}

/// The reason the hospital's records give for `e`, if any.
pub fn reason(e: &AccessEvent) -> Option<Reason> {
    if e.care_team {
        Some(Reason::CareTeam)
    } else if e.user_department == e.patient_department {
        Some(Reason::Department)
    } else {
        None
    }
}

/// How many accesses each reason explains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Explained {
    /// Accesses counted.
    pub events: usize,
    /// Explained by the care team.
    pub care_team: usize,
    /// Explained by the department (and not the care team).
    pub department: usize,
}

impl Explained {
    /// Counts `events`.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a AccessEvent>) -> Explained {
        let mut out = Explained::default();
        for e in events {
            out.add(e);
        }
        out
    }

    /// Counts one more access.
    pub fn add(&mut self, e: &AccessEvent) {
        self.events += 1;
        match reason(e) {
            Some(Reason::CareTeam) => self.care_team += 1,
            Some(Reason::Department) => self.department += 1,
            None => {}
        }
    }

    /// Accesses with no reason.
    pub fn unexplained(&self) -> usize {
        self.events
            .saturating_sub(self.care_team)
            .saturating_sub(self.department)
    }

    /// The share explained by any reason (`None` without accesses).
    pub fn share(&self) -> Option<f64> {
        (self.events > 0).then(|| (self.care_team + self.department) as f64 / self.events as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Resource, StaffRole};

    fn access(care_team: bool, user_dept: &str, patient_dept: &str) -> AccessEvent {
        AccessEvent {
            event_id: 1,
            time_ms: 0,
            user: "u".into(),
            role: StaffRole::Nurse,
            user_department: user_dept.into(),
            patient: "p".into(),
            patient_department: patient_dept.into(),
            action: Action::View,
            resource: Resource::ClinicalNote,
            workstation: "ws".into(),
            ip: "10.0.0.1".into(),
            break_glass: false,
            care_team,
            vip: false,
            family_link: false,
        }
    }

    #[test]
    fn the_care_team_explains_first_then_the_department() {
        assert_eq!(
            reason(&access(true, "icu", "oncology")),
            Some(Reason::CareTeam)
        );
        assert_eq!(reason(&access(true, "icu", "icu")), Some(Reason::CareTeam));
        assert_eq!(
            reason(&access(false, "icu", "icu")),
            Some(Reason::Department)
        );
        assert_eq!(reason(&access(false, "icu", "oncology")), None);
    }

    #[test]
    fn shares_count_each_access_once() {
        let events = [
            access(true, "icu", "icu"),
            access(false, "icu", "icu"),
            access(false, "icu", "oncology"),
            access(false, "lab", "oncology"),
        ];
        let e = Explained::of(&events);
        assert_eq!(
            (e.events, e.care_team, e.department, e.unexplained()),
            (4, 1, 1, 2)
        );
        assert_eq!(e.share(), Some(0.5));
        assert_eq!(Explained::default().share(), None);
    }
}
