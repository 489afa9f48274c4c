//! Feature extraction: always finite, and each behaviour moves the feature meant to catch it.

use medfl_accesslog::features::{
    FEATURE_MAX, FEATURE_NAMES, FeatureExtractor, N_FEATURES, extract, role_needs,
};
use medfl_accesslog::tabular::read_table;
use medfl_accesslog::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use medfl_accesslog::{AccessEvent, Action, Label, OnError, Resource, StaffRole};
use proptest::prelude::*;

const T0: u64 = 1_767_571_200_000; // 2026-01-05T00:00Z

fn col(name: &str) -> usize {
    FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
}

fn ev(t: u64, user: &str, patient: &str) -> AccessEvent {
    AccessEvent {
        event_id: t,
        time_ms: t,
        user: user.into(),
        role: StaffRole::Nurse,
        user_department: "icu".into(),
        patient: patient.into(),
        patient_department: "icu".into(),
        action: Action::View,
        resource: Resource::Medication,
        workstation: "ws-1".into(),
        ip: "10.0.0.1".into(),
        break_glass: false,
        care_team: true,
        vip: false,
        family_link: false,
    }
}

/// Ten days of a day-shift nurse: five patients, a few accesses an hour, 08:00-15:00.
fn routine(fx: &mut FeatureExtractor, user: &str) -> u64 {
    let mut last = 0;
    for day in 0..10 {
        for k in 0..20u64 {
            let t = T0 + day * DAY_MS + 8 * HOUR_MS + k * 20 * MINUTE_MS;
            fx.push(&ev(t, user, &format!("p{}", k % 5)));
            last = t;
        }
    }
    last
}

#[test]
fn names_match_width() {
    assert_eq!(FEATURE_NAMES.len(), N_FEATURES);
    let m = extract(&[ev(T0, "u", "p")]);
    assert_eq!(m.n_cols, N_FEATURES);
    assert_eq!(m.data.len(), N_FEATURES);
    assert_eq!(m.names.len(), N_FEATURES);
    assert_eq!(m.event_ids, vec![T0]);
}

#[test]
fn first_seen_ip_and_workstation_set_novelty_for_a_day() {
    let mut fx = FeatureExtractor::new();
    let last = routine(&mut fx, "u1");
    let known = fx.push(&ev(last + DAY_MS, "u1", "p1"));
    assert_eq!(known[col("new_ip")], 0.0);
    assert_eq!(known[col("new_workstation")], 0.0);
    let mut odd = ev(last + DAY_MS + MINUTE_MS, "u1", "p1");
    odd.ip = "203.0.113.9".into();
    odd.workstation = "ext-laptop".into();
    let f = fx.push(&odd);
    assert_eq!(f[col("new_ip")], 1.0);
    assert_eq!(f[col("new_workstation")], 1.0);
    // The same intruder's next access, an hour later, is still from a new place...
    odd.time_ms += HOUR_MS;
    assert_eq!(fx.push(&odd)[col("new_ip")], 1.0);
    // ...but after a day of use the address is familiar.
    odd.time_ms += 2 * DAY_MS;
    assert_eq!(fx.push(&odd)[col("new_ip")], 0.0);
    // Another user has their own history.
    let mut other = ev(last + 3 * DAY_MS + 2 * HOUR_MS, "u2", "p1");
    other.ip = "10.0.0.1".into();
    let f = fx.push(&other);
    assert_eq!(f[col("new_ip")], 1.0);
}

/// A mixed log of `users` employees over three days: shared patients, IPs and workstations,
/// bursts, exports and night work, from `seed`.
fn mixed_log(users: usize, seed: u64) -> Vec<AccessEvent> {
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64: enough to vary the log, and reproducible.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut events = Vec::new();
    let mut t = T0;
    for i in 0..users * 150 {
        t += next() % (20 * MINUTE_MS);
        let user = format!("u{}", next() as usize % users);
        let mut e = ev(t, &user, &format!("p{}", next() % 40));
        e.event_id = i as u64;
        e.ip = format!("10.0.{}.{}", next() % 3, next() % 4);
        e.workstation = format!("ws-{}", next() % 6);
        e.care_team = next() % 5 != 0;
        e.vip = next() % 17 == 0;
        if next() % 9 == 0 {
            e.action = Action::Export;
        }
        // Every habit feature varies: departments reached and kinds of record opened.
        if next() % 4 == 0 {
            e.patient_department = "oncology".into();
        }
        e.resource = Resource::ALL[next() as usize % Resource::ALL.len()];
        events.push(e);
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn removing_one_employee_leaves_every_other_employees_rows_unchanged(
        seed in 1u64..u64::MAX,
        users in 2usize..8,
        removed in 0usize..8,
    ) {
        // What employee-level DP needs of the features: a neighbouring log (one employee's
        // events gone) changes only that employee's rows.
        let removed = format!("u{}", removed % users);
        let log = mixed_log(users, seed);
        let all = extract(&log);
        let kept: Vec<AccessEvent> = log.iter().filter(|e| e.user != removed).cloned().collect();
        let without = extract(&kept);
        let others: Vec<&[f32]> = log
            .iter()
            .zip(all.data.chunks_exact(N_FEATURES))
            .filter(|(e, _)| e.user != removed)
            .map(|(_, row)| row)
            .collect();
        prop_assert_eq!(others.len(), without.n_rows());
        for (i, (a, b)) in others.iter().zip(without.data.chunks_exact(N_FEATURES)).enumerate() {
            prop_assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "row {} changed", i);
        }
    }
}

#[test]
fn every_feature_stays_within_its_public_bound_and_rows_name_their_employee() {
    let log = mixed_log(5, 42);
    let mut burst = log.clone();
    let last = burst.last().map_or(T0, |e| e.time_ms);
    // Ten thousand exports in ten minutes: every count far past its scale.
    for k in 0..10_000u64 {
        let mut e = ev(last + k * 60, "u0", &format!("q{k}"));
        e.action = Action::Export;
        // From a new workstation, and half of it outside the care team: every count, the
        // new-place one included, past its scale.
        e.workstation = "ws-burst".into();
        e.care_team = k % 2 == 0;
        burst.push(e);
    }
    let m = extract(&burst);
    assert!(m.data.iter().all(|&x| (0.0..=FEATURE_MAX).contains(&x)));
    assert!(m.data.contains(&FEATURE_MAX), "the cap is reached");
    let strangers = col("strangers_from_new_place");
    assert_eq!(m.row(m.n_rows() - 1)[strangers], FEATURE_MAX);
    assert_eq!(m.employees.len(), m.n_rows());
    for (e, &i) in burst.iter().zip(&m.employees) {
        let first = burst.iter().position(|x| x.user == e.user).unwrap();
        assert_eq!(i, m.employees[first], "one index per user");
    }
    assert_eq!(m.employees.iter().max(), Some(&4));
}

#[test]
fn first_access_to_a_patient_is_new() {
    let mut fx = FeatureExtractor::new();
    let last = routine(&mut fx, "u");
    assert_eq!(
        fx.push(&ev(last + MINUTE_MS, "u", "p3"))[col("new_patient")],
        0.0
    );
    assert_eq!(
        fx.push(&ev(last + 2 * MINUTE_MS, "u", "stranger"))[col("new_patient")],
        1.0
    );
    assert_eq!(
        fx.push(&ev(last + 3 * MINUTE_MS, "u", "stranger"))[col("new_patient")],
        0.0
    );
}

#[test]
fn a_burst_raises_rate_and_distinct_patient_features() {
    let mut fx = FeatureExtractor::new();
    let last = routine(&mut fx, "u");
    let t = last + DAY_MS;
    let calm = fx.push(&ev(t, "u", "p1"));
    let mut f = calm;
    for i in 0..200u64 {
        f = fx.push(&ev(t + 1000 + i * 3000, "u", &format!("x{i}")));
    }
    for name in [
        "rate_5m",
        "rate_1h",
        "rate_24h",
        "distinct_patients_1h",
        "distinct_patients_24h",
    ] {
        assert!(
            f[col(name)] > calm[col(name)] + 0.2,
            "{name}: {} -> {}",
            calm[col(name)],
            f[col(name)]
        );
    }
    assert!(f[col("rate_5m")] > 0.8, "{}", f[col("rate_5m")]);
    // Rates decay back after a quiet day.
    let later = fx.push(&ev(t + 3 * DAY_MS, "u", "p1"));
    assert!(later[col("rate_5m")] < 0.25 && later[col("rate_1h")] < 0.25);
}

#[test]
fn night_access_deviates_from_a_day_worker_baseline() {
    let mut fx = FeatureExtractor::new();
    let last = routine(&mut fx, "u");
    let day = fx.push(&ev(last - last % DAY_MS + DAY_MS + 10 * HOUR_MS, "u", "p1"));
    assert_eq!(day[col("off_hours")], 0.0);
    assert!(
        day[col("tod_deviation")] < 0.05,
        "{}",
        day[col("tod_deviation")]
    );
    // A burst at 03:00 stays off-hours throughout: the baseline learns hours, not events.
    let night = last - last % DAY_MS + 2 * DAY_MS + 3 * HOUR_MS;
    for i in 0..100 {
        let f = fx.push(&ev(night + i * 10_000, "u", &format!("n{i}")));
        assert_eq!(f[col("off_hours")], 1.0, "event {i}");
        assert!(
            f[col("tod_deviation")] > 0.5,
            "event {i}: {}",
            f[col("tod_deviation")]
        );
    }
    assert!(day[col("tod_spread")] < 0.3);
}

#[test]
fn a_user_is_measured_against_their_own_habits() {
    let mut fx = FeatureExtractor::new();
    // A nurse whose work keeps her on her care team, in her ward, on medication records.
    let t = routine(&mut fx, "nurse");
    let mut snoop = ev(t + MINUTE_MS, "nurse", "stranger");
    snoop.care_team = false;
    snoop.patient_department = "oncology".into();
    snoop.resource = Resource::ClinicalNote;
    let f = fx.push(&snoop);
    assert!(f[col("unusual_outside_team")] > 0.99, "{f:?}");
    assert!(f[col("unusual_department")] > 0.99, "{f:?}");
    assert!(f[col("unusual_resource")] > 0.99, "{f:?}");

    // A consultant who is outside his teams and his department half the time, reading notes.
    let mut fx = FeatureExtractor::new();
    let mut last = T0;
    for k in 0..200u64 {
        let mut e = ev(T0 + k * 10 * MINUTE_MS, "consultant", &format!("p{k}"));
        e.role = StaffRole::Physician;
        e.resource = Resource::ClinicalNote;
        e.care_team = k % 2 == 0;
        if k % 2 == 1 {
            e.patient_department = "cardiology".into();
        }
        fx.push(&e);
        last = e.time_ms;
    }
    let mut consult = ev(last + MINUTE_MS, "consultant", "another");
    consult.role = StaffRole::Physician;
    consult.resource = Resource::ClinicalNote;
    consult.care_team = false;
    consult.patient_department = "cardiology".into();
    let f = fx.push(&consult);
    for name in ["unusual_outside_team", "unusual_department"] {
        let v = f[col(name)];
        assert!((0.4..0.6).contains(&v), "{name} = {v}");
    }
    assert!(f[col("unusual_resource")] < 0.01, "{f:?}");
    // The plain flags do not tell the two apart: the habits do.
    assert_eq!(f[col("not_care_team")], 1.0);
    assert_eq!(f[col("dept_mismatch")], 1.0);
}

#[test]
fn a_new_place_reaching_strangers_lifts_the_whole_session() {
    // The owner moves to another workstation and works on her own patients: a new place,
    // nothing more, and the feature stays at 0.
    let mut fx = FeatureExtractor::new();
    let t = routine(&mut fx, "nurse");
    for k in 0..10u64 {
        let mut e = ev(t + HOUR_MS + k * MINUTE_MS, "nurse", &format!("p{}", k % 5));
        e.workstation = "ws-7".into();
        e.ip = "10.0.0.7".into();
        let f = fx.push(&e);
        assert_eq!(f[col("new_workstation")], 1.0);
        assert_eq!(f[col("strangers_from_new_place")], 0.0, "{k}: {f:?}");
    }

    // Her stolen password from an outside address: a few strangers, then her own patients,
    // which still stand out because of what the session did before them.
    let mut fx = FeatureExtractor::new();
    let t = routine(&mut fx, "nurse");
    let thief = |k: u64, patient: &str, team: bool| {
        let mut e = ev(t + HOUR_MS + k * 2 * MINUTE_MS, "nurse", patient);
        e.workstation = "ext-1".into();
        e.ip = "185.1.2.3".into();
        e.care_team = team;
        e
    };
    let mut last = 0.0;
    for k in 0..5u64 {
        let f = fx.push(&thief(k, &format!("s{k}"), false));
        let v = f[col("strangers_from_new_place")];
        assert!(v > last, "rises with each stranger: {last} -> {v}");
        last = v;
    }
    let own = fx.push(&thief(5, "p1", true))[col("strangers_from_new_place")];
    assert!(
        own > 0.5,
        "the owner's own patient in the thief's session: {own}"
    );
    // An hour is the time constant: a day later it has faded.
    let mut later = thief(6, "p1", true);
    later.time_ms += DAY_MS;
    later.ip = "10.0.0.1".into();
    later.workstation = "ws-1".into();
    let f = fx.push(&later);
    assert!(f[col("strangers_from_new_place")] < 0.01, "{f:?}");
}

#[test]
fn a_new_users_first_day_is_not_a_new_place() {
    // A new employee's first day: every place is new to them, and a float nurse's first
    // patients are outside her teams. Nothing to count yet.
    let mut fx = FeatureExtractor::new();
    for k in 0..20u64 {
        let mut e = ev(T0 + k * 10 * MINUTE_MS, "new-nurse", &format!("p{k}"));
        e.care_team = false;
        let f = fx.push(&e);
        assert_eq!(f[col("strangers_from_new_place")], 0.0, "{k}: {f:?}");
    }
    // A workstation first used late on her first day is still new the next morning, but it
    // was first used on that first day: it does not count either.
    let mut e = ev(T0 + 23 * HOUR_MS, "new-nurse", "p50");
    e.care_team = false;
    e.workstation = "ws-late".into();
    fx.push(&e);
    let mut e = ev(T0 + DAY_MS + HOUR_MS, "new-nurse", "p51");
    e.care_team = false;
    e.workstation = "ws-late".into();
    let f = fx.push(&e);
    assert_eq!(f[col("new_workstation")], 1.0);
    assert_eq!(f[col("strangers_from_new_place")], 0.0, "{f:?}");
    // A place first used after her first day is new, and counts.
    let mut e = ev(T0 + DAY_MS + 2 * HOUR_MS, "new-nurse", "p99");
    e.care_team = false;
    e.ip = "185.9.9.9".into();
    assert!(fx.push(&e)[col("strangers_from_new_place")] > 0.0);
}

#[test]
fn a_steady_share_of_exports_shows_over_the_week() {
    let mut fx = FeatureExtractor::new();
    let t = routine(&mut fx, "u");
    assert_eq!(
        fx.push(&ev(t + MINUTE_MS, "u", "p1"))[col("export_share_7d")],
        0.0
    );
    // A week of one export in four accesses, well under any rate threshold.
    let mut share = 0.0;
    for k in 0..7 * 24u64 {
        let mut e = ev(t + HOUR_MS + k * HOUR_MS, "u", "p1");
        if k % 4 == 0 {
            e.action = Action::Export;
        }
        share = fx.push(&e)[col("export_share_7d")];
    }
    assert!((0.15..0.3).contains(&share), "export share {share}");
    // A week of plain views at the same pace leaves e^-1 of the export week's weight (τ = 7
    // days): about a quarter of the share, where a one-day τ would leave almost nothing.
    let start = t + HOUR_MS + 7 * 24 * HOUR_MS;
    let mut after = share;
    for k in 0..7 * 24u64 {
        after = fx.push(&ev(start + k * HOUR_MS, "u", "p1"))[col("export_share_7d")];
    }
    let ratio = after / share;
    assert!((0.2..0.35).contains(&ratio), "{share} -> {after} ({ratio})");
    // A first event has no habits to be measured against.
    let f = FeatureExtractor::new().push(&ev(T0, "new", "p"));
    assert_eq!(f[col("unusual_resource")], 0.0);
}

#[test]
fn flags_and_tables() {
    let mut e = ev(T0, "billing-1", "p");
    e.role = StaffRole::Billing;
    e.user_department = "billing".into();
    e.resource = Resource::ClinicalNote;
    e.action = Action::Export;
    e.care_team = false;
    e.vip = true;
    e.break_glass = true;
    let f = FeatureExtractor::new().push(&e);
    for name in [
        "role_resource_mismatch",
        "not_care_team",
        "vip",
        "break_glass",
        "print_export",
        "dept_mismatch",
        "sensitive_outside_team",
    ] {
        assert_eq!(f[col(name)], 1.0, "{name}");
    }
    assert_eq!(f[col("family_link")], 0.0);
    assert_eq!(f[col("history_len")], 0.0);
    assert!(f[col("export_volume_24h")] > 0.1);
    assert!(role_needs(StaffRole::Billing, Resource::Billing));
    assert!(!role_needs(StaffRole::It, Resource::ClinicalNote));
    assert!(role_needs(StaffRole::Physician, Resource::Imaging));
}

#[test]
fn extraction_is_reproducible_and_exports_as_a_table() {
    let evs: Vec<AccessEvent> = (0..500u64)
        .map(|i| {
            ev(
                T0 + i * 37_000,
                &format!("u{}", i % 7),
                &format!("p{}", i % 31),
            )
        })
        .collect();
    let a = extract(&evs);
    let b = extract(&evs);
    assert_eq!(a, b);
    let labels: Vec<Label> = evs
        .iter()
        .map(|e| Label {
            event_id: e.event_id,
            attack: None,
        })
        .collect();
    let mut buf = Vec::new();
    a.write_csv(&mut buf, Some(&labels)).unwrap();
    let t = read_table(buf.as_slice(), Some("label"), OnError::Reject).unwrap();
    assert_eq!(t.columns, FEATURE_NAMES.to_vec());
    assert_eq!(
        t.data.iter().copied().collect::<Vec<f32>>(),
        a.data,
        "f32 Display round-trips exactly"
    );
    assert_eq!(t.labels.unwrap().len(), 500);
}

#[test]
fn patient_memory_false_positive_rate_is_small() {
    // 1000 distinct patients, then 1000 never-seen ones: how many look already seen?
    let mut fx = FeatureExtractor::new();
    for i in 0..1000u64 {
        fx.push(&ev(T0 + i * 1000, "u", &format!("seen-{i}")));
    }
    let mut false_seen = 0;
    for i in 0..1000u64 {
        let f = fx.push(&ev(T0 + DAY_MS + i * 1000, "u", &format!("fresh-{i}")));
        if f[col("new_patient")] == 0.0 {
            false_seen += 1;
        }
    }
    assert!(
        false_seen < 50,
        "{false_seen} of 1000 fresh patients looked seen"
    );
}

fn arb_event() -> impl Strategy<Value = AccessEvent> {
    (
        (0u64..u64::MAX, 0usize..7, 0usize..4, 0usize..6),
        (
            "[a-c]{0,3}",
            "[a-c]{0,3}",
            "[a-c]{0,2}",
            "[a-c]{0,2}",
            "[ab]{0,2}",
            "[ab]{0,2}",
        ),
        any::<[bool; 4]>(),
    )
        .prop_map(|((t, r, a, res), (u, p, ud, pd, ws, ip), b)| AccessEvent {
            event_id: t,
            time_ms: t,
            user: u,
            role: StaffRole::ALL[r],
            user_department: ud,
            patient: p,
            patient_department: pd,
            action: Action::ALL[a],
            resource: Resource::ALL[res],
            workstation: ws,
            ip,
            break_glass: b[0],
            care_team: b[1],
            vip: b[2],
            family_link: b[3],
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn instant_parsing_never_panics(s in "\\PC{0,40}", ms in 0u64..8_000_000_000_000) {
        let _ = medfl_accesslog::time::parse_instant(&s);
        let text = medfl_accesslog::time::format_instant(ms);
        prop_assert_eq!(medfl_accesslog::time::parse_instant(&text), Some(ms));
    }

    #[test]
    fn features_are_finite_and_bounded(mut evs in proptest::collection::vec(arb_event(), 1..80), sorted in any::<bool>()) {
        // Both time-ordered and arbitrary orders (including huge jumps) must stay finite.
        if sorted {
            evs.sort_by_key(|e| e.time_ms);
        }
        let m = extract(&evs);
        for v in &m.data {
            prop_assert!(v.is_finite() && *v >= 0.0 && *v <= 2.0, "{v}");
        }
    }
}
