//! The access-event schema.
//!
//! One event is one access by one staff account to one patient's record. The fields are what
//! EHR audit trails (and FHIR R4 `AuditEvent`) carry, plus three relations a hospital derives
//! from its own EHR data at logging time: whether the user is on the patient's care team, whether
//! the patient is flagged VIP, and whether user and patient are linked as family (same surname
//! and address, or a declared relationship). Identifiers are the hospital's own pseudonymous ids;
//! no name or clinical content appears.

use serde::{Deserialize, Serialize};

/// A staff member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Attending or resident physician.
    Physician,
    /// Nurse.
    Nurse,
    /// Pharmacist.
    Pharmacist,
    /// Billing and coding staff.
    Billing,
    /// IT and EHR support.
    It,
    /// Researcher with approved access.
    Researcher,
    /// Medical or nursing student.
    Student,
}

/// What the user did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Opened and read.
    View,
    /// Changed.
    Edit,
    /// Printed.
    Print,
    /// Exported or downloaded.
    Export,
}

/// Which part of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Name, address, contacts.
    Demographics,
    /// Physician and nursing notes.
    ClinicalNote,
    /// Medication orders and administration.
    Medication,
    /// Laboratory results.
    LabResult,
    /// Imaging reports.
    Imaging,
    /// Claims, charges, insurance.
    Billing,
}

/// One access to one patient's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessEvent {
    /// Unique id within the hospital's log.
    pub event_id: u64,
    /// When, in milliseconds since the Unix epoch (UTC).
    pub time_ms: u64,
    /// The hospital's pseudonymous staff id.
    pub user: String,
    /// The user's role.
    pub role: StaffRole,
    /// The user's department.
    pub user_department: String,
    /// The hospital's pseudonymous patient id.
    pub patient: String,
    /// The department currently treating the patient.
    pub patient_department: String,
    /// What was done.
    pub action: Action,
    /// To which part of the record.
    pub resource: Resource,
    /// Workstation id.
    pub workstation: String,
    /// Source IP address.
    pub ip: String,
    /// The user invoked emergency ("break-the-glass") access.
    pub break_glass: bool,
    /// The user is on the patient's care team at the time: the treatment team, or an assigned
    /// worklist that documents a need (the patient's pharmacist, billing account, research
    /// cohort), as the hospital's EHR records it.
    pub care_team: bool,
    /// The patient is flagged VIP (celebrity, staff member, public figure).
    pub vip: bool,
    /// User and patient are linked as family.
    pub family_link: bool,
}

/// Implements the stable text names (the serde `snake_case` names) used by every file format,
/// so that CSV, FHIR and serde agree on one spelling.
macro_rules! names {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $ty {
            /// Every variant, in declaration order (for tables and for sampling).
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stable text name, as written in files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// Parses a stable text name; `None` if it is not one.
            pub fn parse(s: &str) -> Option<$ty> {
                match s {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }

            /// What the value is, for error messages.
            pub const KIND: &'static str = $what;
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(StaffRole, "role",
    Physician => "physician",
    Nurse => "nurse",
    Pharmacist => "pharmacist",
    Billing => "billing",
    It => "it",
    Researcher => "researcher",
    Student => "student",
);

names!(Action, "action",
    View => "view",
    Edit => "edit",
    Print => "print",
    Export => "export",
);

names!(Resource, "resource",
    Demographics => "demographics",
    ClinicalNote => "clinical_note",
    Medication => "medication",
    LabResult => "lab_result",
    Imaging => "imaging",
    Billing => "billing",
);
