//! Why a score is high, in words a security officer reads.
//!
//! An alert names the features whose removal takes most of its score away: each feature put
//! back, alone, to what the model expected of it, and the score recomputed
//! (`Scorer::occlusion`). That is what raised the score, so the explanation is faithful: put
//! the first named feature back and the score falls (a test checks it on a trained model).
//! A decision below the threshold names features by their squared reconstruction errors, the
//! terms the score is the mean of, which costs no extra pass; they are not always the cause
//! (putting the feature with the largest error back lowered the score in 86% of the default
//! scenario's alerts). Either way the features with the largest parts are named
//! with what their values mean for this access ("first access to this patient", "a patient
//! outside the user's care team", "38 accesses in the last 5 minutes"): the features'
//! definitions are in `medfl_accesslog::features`, and the counts are read back through their
//! fixed public scales.

use medfl_accesslog::explained::reason;
use medfl_accesslog::{AccessEvent, FEATURE_MAX, FEATURE_NAMES, N_FEATURES};
use serde::Serialize;

/// Features named in an explanation, at most.
pub const TOP_FEATURES: usize = 3;

/// One feature's part in a score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contribution {
    /// The feature's name (`medfl_accesslog::FEATURE_NAMES`).
    pub feature: &'static str,
    /// Its value for this access.
    pub value: f32,
    /// Its share (0 to 1) of the named parts: for an alert, of the summed occlusion drops (how
    /// much of the score each removal takes away); otherwise of the squared reconstruction
    /// error.
    pub share: f32,
    /// What it means, in words.
    pub words: String,
}

/// The features with the largest parts in the score, largest first (those with a share of
/// at least a tenth of an even split); `errors` holds each feature's part (its occlusion drop
/// or its squared reconstruction error), none negative.
pub fn top_contributions(
    features: &[f32; N_FEATURES],
    errors: &[f32],
    event: &AccessEvent,
) -> Vec<Contribution> {
    let total: f32 = errors.iter().sum();
    if errors.len() != N_FEATURES || total.is_nan() || total <= 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..N_FEATURES).collect();
    order.sort_by(|&a, &b| errors[b].total_cmp(&errors[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(TOP_FEATURES)
        .filter(|&i| errors[i] / total >= 0.1 / N_FEATURES as f32)
        .map(|i| Contribution {
            feature: FEATURE_NAMES[i],
            value: features[i],
            share: errors[i] / total,
            words: words(i, features[i], event),
        })
        .collect()
}

/// One sentence: for an alert or a denial (`raised`), first whether the hospital's records
/// explain the access (explanations first, `medfl_accesslog::explained`); then the top
/// features' words and the access's time of day (UTC).
pub fn summary(contributions: &[Contribution], event: &AccessEvent, raised: bool) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(contributions.len() + 1);
    if raised && reason(event).is_none() {
        parts.push(UNEXPLAINED);
    }
    parts.extend(contributions.iter().map(|c| c.words.as_str()));
    let at = clock(event.time_ms);
    if parts.is_empty() {
        parts.push("no feature stands out");
    }
    format!("{}, {at}", parts.join("; "))
}

/// How the explanation of an access the hospital's records give no reason for begins.
pub const UNEXPLAINED: &str = "unexplained access: the user is not on the patient's care team nor in the patient's department";

/// `HH:MM` of a time in milliseconds since the epoch (UTC).
pub fn clock(time_ms: u64) -> String {
    let minutes = (time_ms / 60_000) % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A count read back from its feature `ln1p(c) / ln1p(k)`.
fn count(value: f32, k: f32) -> f32 {
    ((value * k.ln_1p()).exp() - 1.0).max(0.0)
}

fn words(feature: usize, v: f32, e: &AccessEvent) -> String {
    let on = v >= 0.5;
    let n = |k: f32| count(v, k).round();
    match feature {
        0 if on => format!(
            "from an IP address the user had not used in the last day ({})",
            e.ip
        ),
        0 => "from a familiar IP address".into(),
        1 if on => format!(
            "from a workstation the user had not used in the last day ({})",
            e.workstation
        ),
        1 => "from a familiar workstation".into(),
        2 if on => "first access by this user to this patient".into(),
        2 => "a patient this user has accessed before".into(),
        3 => format!(
            "about {} accesses by this user in the last 5 minutes",
            n(50.0)
        ),
        4 => format!("about {} accesses by this user in the last hour", n(200.0)),
        5 => format!("about {} accesses by this user in the last day", n(1000.0)),
        6 => format!("about {} different patients in the last hour", n(100.0)),
        7 => format!("about {} different patients in the last day", n(500.0)),
        8 => "at a time of day far from the user's usual hours".into(),
        9 if v >= 0.5 => "a user with irregular working hours".into(),
        9 => "a user with regular working hours".into(),
        10 if on => "at an hour the user rarely works".into(),
        10 => "at an hour the user usually works".into(),
        11 if on => format!(
            "a {} opening {}, which the role does not normally need",
            e.role, e.resource
        ),
        11 => format!("a {} opening {}, as the role does", e.role, e.resource),
        12 if on => "a patient outside the user's care team".into(),
        12 => "a patient on the user's care team".into(),
        13 if on => "a VIP patient".into(),
        13 => "a patient not flagged VIP".into(),
        14 if on => "a patient linked to the user as family".into(),
        14 => "no family link between user and patient".into(),
        15 if on => "break-the-glass emergency access".into(),
        15 => "no emergency access invoked".into(),
        16 if on => format!("the record was {}ed", e.action),
        16 => format!("the record was {}ed, not printed or exported", e.action),
        17 => format!(
            "about {} prints or exports by this user in the last day",
            n(100.0)
        ),
        18 if on => format!(
            "a patient of {} while the user works in {}",
            e.patient_department, e.user_department
        ),
        18 => "a patient of the user's own department".into(),
        19 => format!("a user with about {} earlier accesses", n(10_000.0)),
        20 if on => "a VIP or family patient outside the care team".into(),
        20 => "no VIP or family patient outside the care team".into(),
        21 if on => "outside the care team, where this user seldom works".into(),
        21 if e.care_team => "a patient on the user's care team".into(),
        21 => "outside the care team, as this user often is".into(),
        22 if on => format!(
            "a patient of {}, a department this user seldom reaches",
            e.patient_department
        ),
        22 if e.user_department == e.patient_department => {
            "a patient of the user's own department".into()
        }
        22 => format!(
            "a patient of {}, outside the user's department as they often are",
            e.patient_department
        ),
        23 if on => format!(
            "opening {}, a kind of record this user rarely opens",
            e.resource
        ),
        23 => format!(
            "opening {}, a kind of record this user often opens",
            e.resource
        ),
        24 => format!(
            "{:.0}% of this user's accesses in the last week were prints or exports",
            100.0 * v
        ),
        25 if v == 0.0 => "no recent access from an IP address or workstation new to this user \
                           to a patient outside their care team"
            .into(),
        25 => {
            let c = count(v, 20.0);
            let place = "from an IP address or workstation new to this user to patients outside \
                         their care team";
            if c < 1.5 {
                // One access, or one fading over the hour.
                format!("an access in the last hour {place}")
            } else if v >= FEATURE_MAX {
                format!("at least {} accesses in the last hour {place}", c.round())
            } else {
                format!("about {} accesses in the last hour {place}", c.round())
            }
        }
        _ => FEATURE_NAMES
            .get(feature)
            .copied()
            .unwrap_or("?")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_accesslog::{Action, Resource, StaffRole};

    fn event() -> AccessEvent {
        AccessEvent {
            event_id: 1,
            time_ms: 2 * 3_600_000 + 14 * 60_000,
            user: "u".into(),
            role: StaffRole::Billing,
            user_department: "billing".into(),
            patient: "p".into(),
            patient_department: "cardiology".into(),
            action: Action::Export,
            resource: Resource::ClinicalNote,
            workstation: "ws-9".into(),
            ip: "10.9.9.9".into(),
            break_glass: false,
            care_team: false,
            vip: true,
            family_link: false,
        }
    }

    #[test]
    fn the_largest_shares_are_named_in_words_with_the_time() {
        let mut f = [0.0; N_FEATURES];
        let mut err = vec![0.001; N_FEATURES];
        f[12] = 1.0;
        err[12] = 0.5;
        f[1] = 1.0;
        err[1] = 0.3;
        f[3] = 0.8;
        err[3] = 0.1;
        let top = top_contributions(&f, &err, &event());
        let names: Vec<&str> = top.iter().map(|c| c.feature).collect();
        assert_eq!(names, ["not_care_team", "new_workstation", "rate_5m"]);
        assert!(top[0].share > top[1].share);
        let s = summary(&top, &event(), true);
        // The billing clerk has no reason on record to open a cardiology chart: that comes
        // first, then the features.
        assert!(
            s.starts_with(&format!(
                "{UNEXPLAINED}; a patient outside the user's care team; from a workstation"
            )),
            "{s}"
        );
        let mut on_team = event();
        on_team.care_team = true;
        let s = summary(&top, &on_team, true);
        assert!(s.starts_with("a patient outside"), "{s}");
        // An access allowed says nothing of its explanation.
        let s = summary(&top, &event(), false);
        assert!(s.starts_with("a patient outside"), "{s}");
        assert!(s.ends_with(", 02:14"), "{s}");
        // 0.8 of ln1p(50) reads back as about 22 accesses.
        assert!(
            top[2].words.contains("about 22 accesses"),
            "{}",
            top[2].words
        );
    }

    #[test]
    fn every_feature_has_words_either_way() {
        for (i, name) in FEATURE_NAMES.iter().enumerate() {
            for v in [0.0, 1.0] {
                let w = words(i, v, &event());
                assert!(
                    !w.is_empty() && w != *name,
                    "feature {i} ({name}) at {v}: {w:?}"
                );
            }
        }
        assert_eq!(
            words(24, 0.25, &event()),
            "25% of this user's accesses in the last week were prints or exports"
        );
        // A habit feature near 0 says why: the access is inside the team or department, or
        // outside it as the user often is.
        let mut on_team = event();
        on_team.care_team = true;
        on_team.patient_department = on_team.user_department.clone();
        assert_eq!(
            words(21, 0.0, &on_team),
            "a patient on the user's care team"
        );
        assert_eq!(
            words(22, 0.0, &on_team),
            "a patient of the user's own department"
        );
        assert!(words(21, 0.0, &event()).contains("as this user often is"));
        assert!(words(25, 0.0, &event()).starts_with("no recent access"));
        // ln1p(3) / ln1p(20): three such accesses in the hour.
        let three = 3f32.ln_1p() / 20f32.ln_1p();
        assert!(words(25, three, &event()).starts_with("about 3 accesses"));
        // One access 45 minutes ago, faded to about half: still named, never as "no access".
        let faded = 0.47f32.ln_1p() / 20f32.ln_1p();
        assert!(words(25, faded, &event()).starts_with("an access in the last hour"));
        assert!(words(25, FEATURE_MAX, &event()).starts_with("at least 440 accesses"));
        assert!(words(22, 0.1, &event()).contains("outside the user's department"));
    }

    #[test]
    fn nothing_is_named_without_error() {
        let f = [0.0; N_FEATURES];
        assert!(top_contributions(&f, &[0.0; N_FEATURES], &event()).is_empty());
        assert!(top_contributions(&f, &[1.0; 3], &event()).is_empty());
    }
}
