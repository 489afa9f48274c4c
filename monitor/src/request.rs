//! What a caller asks the monitor: one access to one patient's record, about to happen or just
//! happened, as `POST /v1/access` carries it (JSON).
//!
//! Every field is checked before anything is decided or logged: identifiers are non-empty,
//! bounded and printable, the time is within a day of the monitor's clock (an access from far
//! in the past or future is a clock fault or a replay, not something to score), and unknown
//! fields are refused rather than ignored, so a misspelt `break_glass` cannot silently become
//! `false`.

use medfl_accesslog::{AccessEvent, Action, Resource, StaffRole};
use serde::{Deserialize, Serialize};

/// Longest identifier accepted (user, patient, department, workstation, IP), in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// How far in the past an access's time may be (an audit feed may deliver late).
pub const MAX_AGE_MS: u64 = 24 * 3_600_000;

/// How far in the future an access's time may be (clock skew between hosts).
pub const MAX_AHEAD_MS: u64 = 5 * 60_000;

/// One access to decide on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The hospital's pseudonymous staff id.
    pub user: String,
    /// The user's role.
    pub role: StaffRole,
    /// The user's department.
    pub department: String,
    /// The hospital's pseudonymous patient id.
    pub patient: String,
    /// The department treating the patient.
    pub patient_department: String,
    /// What is done.
    pub action: Action,
    /// To which part of the record.
    pub resource: Resource,
    /// When, in milliseconds since the Unix epoch (UTC).
    pub time_ms: u64,
    /// Source IP address.
    pub source_ip: String,
    /// Workstation id.
    pub workstation: String,
    /// Emergency ("break-the-glass") access.
    pub break_glass: bool,
    /// The user is on the patient's care team.
    pub care_team: bool,
    /// The patient is flagged VIP.
    pub vip: bool,
    /// User and patient are linked as family.
    pub family_link: bool,
    /// What the access is for, when the EHR knows; research by any role is held to the
    /// research rules (a researcher's access is research whatever it says).
    #[serde(default)]
    pub purpose: Option<Purpose>,
}

/// Why a record is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Care of the patient.
    Treatment,
    /// Billing, quality, administration.
    Operations,
    /// Research under a data-use agreement.
    Research,
}

/// Why a request is refused before any decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An identifier is empty, too long or holds control characters.
    #[error("{field}: {problem}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The access's time is too far from the monitor's clock.
    #[error(
        "time_ms {time_ms} is more than a day before or five minutes after the monitor's clock ({now_ms})"
    )]
    ClockSkew {
        /// The request's time.
        time_ms: u64,
        /// The monitor's clock.
        now_ms: u64,
    },
}

impl AccessRequest {
    /// Checks every field against the monitor's clock `now_ms`.
    ///
    /// # Errors
    /// The first [`RequestError`] found.
    pub fn check(&self, now_ms: u64) -> Result<(), RequestError> {
        // Identities are matched byte for byte (consent pseudonyms, blocks, the patient-access
        // report): only visible ASCII, so no look-alike or invisible character makes a second
        // name for one person.
        for (field, value) in [("user", &self.user), ("patient", &self.patient)] {
            check_identity(field, value)?;
        }
        for (field, value) in [
            ("department", &self.department),
            ("patient_department", &self.patient_department),
            ("source_ip", &self.source_ip),
            ("workstation", &self.workstation),
        ] {
            check_id(field, value)?;
        }
        if self.time_ms < now_ms.saturating_sub(MAX_AGE_MS)
            || self.time_ms > now_ms.saturating_add(MAX_AHEAD_MS)
        {
            return Err(RequestError::ClockSkew {
                time_ms: self.time_ms,
                now_ms,
            });
        }
        Ok(())
    }

    /// Whether the access is research: by a researcher, or declared so.
    pub fn is_research(&self) -> bool {
        self.role == StaffRole::Researcher || self.purpose == Some(Purpose::Research)
    }

    /// The access as the feature extractor and the training pipeline see it.
    pub fn to_event(&self, event_id: u64) -> AccessEvent {
        AccessEvent {
            event_id,
            time_ms: self.time_ms,
            user: self.user.clone(),
            role: self.role,
            user_department: self.department.clone(),
            patient: self.patient.clone(),
            patient_department: self.patient_department.clone(),
            action: self.action,
            resource: self.resource,
            workstation: self.workstation.clone(),
            ip: self.source_ip.clone(),
            break_glass: self.break_glass,
            care_team: self.care_team,
            vip: self.vip,
            family_link: self.family_link,
        }
    }

    /// The request an access event of a log makes (for replaying a log through the monitor).
    pub fn from_event(e: &AccessEvent) -> AccessRequest {
        AccessRequest {
            user: e.user.clone(),
            role: e.role,
            department: e.user_department.clone(),
            patient: e.patient.clone(),
            patient_department: e.patient_department.clone(),
            action: e.action,
            resource: e.resource,
            time_ms: e.time_ms,
            source_ip: e.ip.clone(),
            workstation: e.workstation.clone(),
            break_glass: e.break_glass,
            care_team: e.care_team,
            vip: e.vip,
            family_link: e.family_link,
            purpose: None,
        }
    }
}

/// Whether `c` is invisible or reorders text: control, format (zero-width, bidirectional
/// overrides, byte-order mark) or line and paragraph separators.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// The sender's own name for one delivery of an access: a FHIR `AuditEvent.id`, or the
/// `Idempotency-Key` header of a `POST /v1/access`. The same access delivered again under the
/// same id (a retry after a lost answer, a syslog resend after a reconnect) is answered from
/// the first delivery's record, not decided, and counted in the user's history, a second time.
/// Visible ASCII only, at most [`MAX_ID_BYTES`].
///
/// Read back from a record it is not checked again: the rules may tighten, old logs must still
/// read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeliveryId(String);

impl DeliveryId {
    /// Checks `id` as a delivery id.
    ///
    /// # Errors
    /// Empty, too long, or not visible ASCII.
    pub fn new(id: &str) -> Result<DeliveryId, RequestError> {
        check_id("id", id)?;
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RequestError::BadField {
                field: "id",
                problem: "only visible ASCII characters, no spaces".into(),
            });
        }
        Ok(DeliveryId(id.to_owned()))
    }

    /// The id as the sender wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An access as its sender delivered it: the request, and the sender's id for this delivery
/// if it gave one.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The access.
    pub request: AccessRequest,
    /// The sender's id for it.
    pub id: Option<DeliveryId>,
}

impl From<AccessRequest> for Delivery {
    fn from(request: AccessRequest) -> Delivery {
        Delivery { request, id: None }
    }
}

/// Checks a user or patient id as an access must carry it: 1 to [`MAX_ID_BYTES`] bytes of
/// visible ASCII. Identities are matched byte for byte (consent pseudonyms, blocks, the
/// patient-access report), so anything that names a person to the monitor (a consent choice,
/// a report) is held to the same rule: no look-alike or invisible character makes a second
/// name for one person.
///
/// # Errors
/// [`RequestError::BadField`] naming `field` and what is wrong.
pub fn check_identity(field: &'static str, value: &str) -> Result<(), RequestError> {
    check_id(field, value)?;
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::BadField {
            field,
            problem: "only visible ASCII characters, no spaces".into(),
        });
    }
    Ok(())
}

fn check_id(field: &'static str, value: &str) -> Result<(), RequestError> {
    let problem = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > MAX_ID_BYTES {
        format!("{} bytes, over the limit of {MAX_ID_BYTES}", value.len())
    } else if value.chars().any(invisible) {
        "holds a control, invisible or direction-changing character".to_owned()
    } else if value.trim() != value {
        "has leading or trailing spaces".to_owned()
    } else {
        return Ok(());
    };
    Err(RequestError::BadField { field, problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AccessRequest {
        AccessRequest {
            user: "u1".into(),
            role: StaffRole::Nurse,
            department: "icu".into(),
            patient: "p1".into(),
            patient_department: "icu".into(),
            action: Action::View,
            resource: Resource::ClinicalNote,
            time_ms: 1_000_000_000,
            source_ip: "10.0.0.1".into(),
            workstation: "ws-1".into(),
            break_glass: false,
            care_team: true,
            vip: false,
            family_link: false,
            purpose: None,
        }
    }

    #[test]
    fn bad_fields_and_far_times_are_refused_with_the_field_named() {
        let r = request();
        assert_eq!(r.check(r.time_ms), Ok(()));
        let mut empty = r.clone();
        empty.patient.clear();
        assert!(matches!(
            empty.check(r.time_ms),
            Err(RequestError::BadField {
                field: "patient",
                ..
            })
        ));
        let mut long = r.clone();
        long.user = "x".repeat(MAX_ID_BYTES + 1);
        assert!(matches!(
            long.check(r.time_ms),
            Err(RequestError::BadField { field: "user", .. })
        ));
        let mut control = r.clone();
        control.workstation = "ws\n1".into();
        assert!(control.check(r.time_ms).is_err());
        assert!(matches!(
            r.check(r.time_ms + MAX_AGE_MS + 1),
            Err(RequestError::ClockSkew { .. })
        ));
        assert!(matches!(
            r.check(r.time_ms - MAX_AHEAD_MS - 1),
            Err(RequestError::ClockSkew { .. })
        ));
        // Look-alike identities are refused: invisible characters, spaces, non-ASCII ids.
        for (field, value) in [
            ("patient", "p1\u{200B}"),
            ("patient", "p1 "),
            ("user", "u\u{202E}1"),
            ("patient", "p\u{0430}1"),
            ("workstation", "ws\u{FEFF}"),
        ] {
            let mut x = r.clone();
            match field {
                "patient" => x.patient = value.into(),
                "user" => x.user = value.into(),
                _ => x.workstation = value.into(),
            }
            assert!(x.check(r.time_ms).is_err(), "{field} {value:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(request()).unwrap();
        v["break_glas"] = serde_json::Value::Bool(true);
        assert!(serde_json::from_value::<AccessRequest>(v).is_err());
    }

    #[test]
    fn an_event_round_trips_through_a_request() {
        let r = request();
        assert_eq!(AccessRequest::from_event(&r.to_event(7)), r);
    }
}
