//! Ground truth for simulated logs, stored apart from the events.

use serde::{Deserialize, Serialize};

/// The kind of abuse an access belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// Looking up a VIP without a reason.
    VipSnooping,
    /// Looking up a relative.
    FamilySnooping,
    /// Accessing patients outside the user's care team without a reason.
    OutsideCareTeam,
    /// Bulk access or export outside working hours.
    OffHoursExfiltration,
    /// A stolen credential used from a new IP or location.
    StolenCredentials,
    /// A compromised account hitting many patients fast.
    CompromisedAccount,
    /// A role reading what it has no need for (billing reading clinical notes).
    RoleMisuse,
    /// Slow, steady exfiltration over weeks, under rate thresholds.
    SlowDripExfiltration,
    /// A clinician looking up a co-worker treated in their own department: same ward, no
    /// VIP or family flag, only the care team missing (not one the model was designed around).
    CoworkerSnooping,
    /// A stolen account used only during its owner's working hours, at their pace, on the
    /// kinds of record their role opens, over the VPN as remote staff work (not one the model
    /// was designed around).
    MimickedAccount,
}

impl AttackKind {
    /// Every kind, in a fixed order (for tables).
    pub const ALL: [AttackKind; 10] = [
        AttackKind::VipSnooping,
        AttackKind::FamilySnooping,
        AttackKind::OutsideCareTeam,
        AttackKind::OffHoursExfiltration,
        AttackKind::StolenCredentials,
        AttackKind::CompromisedAccount,
        AttackKind::RoleMisuse,
        AttackKind::SlowDripExfiltration,
        AttackKind::CoworkerSnooping,
        AttackKind::MimickedAccount,
    ];
}

/// The label of one event: normal, or part of an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The event's id.
    pub event_id: u64,
    /// `None` for normal behaviour (legitimate exceptions included).
    pub attack: Option<AttackKind>,
}

impl AttackKind {
    /// The stable text name, as written in the labels CSV (the serde `snake_case` name).
    pub fn as_str(self) -> &'static str {
        match self {
            AttackKind::VipSnooping => "vip_snooping",
            AttackKind::FamilySnooping => "family_snooping",
            AttackKind::OutsideCareTeam => "outside_care_team",
            AttackKind::OffHoursExfiltration => "off_hours_exfiltration",
            AttackKind::StolenCredentials => "stolen_credentials",
            AttackKind::CompromisedAccount => "compromised_account",
            AttackKind::RoleMisuse => "role_misuse",
            AttackKind::SlowDripExfiltration => "slow_drip_exfiltration",
            AttackKind::CoworkerSnooping => "coworker_snooping",
            AttackKind::MimickedAccount => "mimicked_account",
        }
    }

    /// Parses a stable text name; `None` if it is not one.
    pub fn parse(s: &str) -> Option<AttackKind> {
        AttackKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AttackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
