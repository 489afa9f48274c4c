//! File formats: round trips, line-numbered errors under both policies, and no panic on garbage.

use medfl_accesslog::csv::{read_events, read_labels, write_events, write_labels};
use medfl_accesslog::fhir::{read_audit_events, write_audit_events};
use medfl_accesslog::tabular::{Part, label_is_anomalous, read_table, read_table_split};
use medfl_accesslog::{
    AccessEvent, Action, AttackKind, FormatError, Label, OnError, Resource, StaffRole,
};
use proptest::prelude::*;

fn event(i: u64) -> AccessEvent {
    AccessEvent {
        event_id: i,
        time_ms: 1_767_571_200_000 + i * 61_001,
        user: format!("u{}", i % 7),
        role: StaffRole::ALL[i as usize % StaffRole::ALL.len()],
        user_department: "cardiology".into(),
        patient: format!("p{}", i * 13 % 17),
        patient_department: if i.is_multiple_of(3) {
            "oncology"
        } else {
            "cardiology"
        }
        .into(),
        action: Action::ALL[i as usize % Action::ALL.len()],
        resource: Resource::ALL[i as usize % Resource::ALL.len()],
        workstation: format!("ws-{}", i % 5),
        ip: format!("10.0.0.{}", i % 9),
        break_glass: i.is_multiple_of(5),
        care_team: i.is_multiple_of(2),
        vip: i.is_multiple_of(11),
        family_link: i.is_multiple_of(13),
    }
}

fn events(n: u64) -> Vec<AccessEvent> {
    (0..n).map(event).collect()
}

#[test]
fn csv_round_trip_with_awkward_text() {
    let mut evs = events(50);
    evs[3].user = "smith, j".into();
    evs[4].patient = "say \"hi\"".into();
    evs[5].user_department = "a,\"b\",c".into();
    let mut buf = Vec::new();
    write_events(&mut buf, &evs).unwrap();
    let text = String::from_utf8(buf.clone()).unwrap();
    assert!(text.starts_with(
        "event_id,time_ms,user,role,user_department,patient,patient_department,action,resource,workstation,ip,break_glass,care_team,vip,family_link\n"
    ));
    let back = read_events(buf.as_slice(), OnError::Reject).unwrap();
    assert_eq!(back.records, evs);
    assert!(back.skipped.is_empty());
}

#[test]
fn csv_line_breaks_inside_quoted_fields_round_trip() {
    let mut evs = events(3);
    evs[1].workstation = "ward 3\nbed 12".into();
    evs[2].user_department = "cardiology\r\n(night)".into();
    let mut buf = Vec::new();
    write_events(&mut buf, &evs).unwrap();
    let back = read_events(buf.as_slice(), OnError::Reject).unwrap();
    assert_eq!(back.records, evs);
}

#[test]
fn an_ehr_export_with_a_multi_line_quoted_field_is_read_and_errors_name_the_records_line() {
    let header = "event_id,time_ms,user,role,user_department,patient,patient_department,action,resource,workstation,ip,break_glass,care_team,vip,family_link";
    let text = format!(
        "{header}\r\n\
         1,1000,\"smith, j\",nurse,\"cardiology\nward 3\",p1,cardiology,view,lab_result,ws1,10.0.0.1,0,1,0,0\r\n\
         2,2000,u2,surgeon,cardiology,p2,cardiology,view,lab_result,ws1,10.0.0.1,0,1,0,0\r\n"
    );
    let parsed = read_events(text.as_bytes(), OnError::Skip).unwrap();
    assert_eq!(parsed.records.len(), 1);
    assert_eq!(parsed.records[0].user, "smith, j");
    assert_eq!(parsed.records[0].user_department, "cardiology\nward 3");
    // The bad row starts on line 4: the quoted field of the one before spans lines 2 and 3.
    assert_eq!(parsed.skipped.len(), 1);
    assert_eq!(parsed.skipped[0].line, 4, "{:?}", parsed.skipped);
}

fn corrupt_csv() -> Vec<u8> {
    let mut buf = Vec::new();
    write_events(&mut buf, &events(5)).unwrap();
    let mut lines: Vec<String> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[2] = lines[2].replace(",nurse,", ",surgeon,"); // line 3: unknown role
    lines[4] = "1,2,3".into(); // line 5: too few columns
    lines.push(String::new()); // blank lines are ignored
    lines.push("7,xx,u,nurse,d,p,d,view,imaging,w,i,0,0,0,0".into()); // line 8: bad time
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out.extend_from_slice(b"8,1,u,nurse,d,p,d,view,imaging,w,i,0,0,0,\xff\n"); // line 9: bad UTF-8
    out
}

#[test]
fn csv_malformed_rows_are_skipped_or_rejected_with_line_numbers() {
    let data = corrupt_csv();
    let parsed = read_events(data.as_slice(), OnError::Skip).unwrap();
    assert_eq!(parsed.records.len(), 3);
    let lines: Vec<u64> = parsed.skipped.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 5, 8, 9], "{:?}", parsed.skipped);
    assert!(
        parsed.skipped[0].message.contains("role"),
        "{}",
        parsed.skipped[0]
    );
    assert!(parsed.skipped[1].message.contains("columns"));
    assert!(parsed.skipped[2].message.contains("time_ms"));
    assert!(parsed.skipped[3].message.contains("UTF-8"));

    let err = read_events(data.as_slice(), OnError::Reject).unwrap_err();
    match err {
        FormatError::Row(e) => assert_eq!(e.line, 3),
        other => panic!("expected a row error, got {other}"),
    }
    assert!(err_string(&data).starts_with("line 3:"));
}

fn err_string(data: &[u8]) -> String {
    read_events(data, OnError::Reject).unwrap_err().to_string()
}

#[test]
fn csv_header_is_checked() {
    assert!(matches!(
        read_events(&b""[..], OnError::Skip),
        Err(FormatError::MissingHeader)
    ));
    assert!(matches!(
        read_events(&b"event_id,time\n1,2\n"[..], OnError::Skip),
        Err(FormatError::BadHeader(_))
    ));
    assert!(matches!(
        read_labels(&b"id,attack\n"[..], OnError::Skip),
        Err(FormatError::BadHeader(_))
    ));
}

#[test]
fn labels_round_trip_and_errors() {
    let labels: Vec<Label> = (0..40)
        .map(|i| Label {
            event_id: i,
            attack: if i.is_multiple_of(4) {
                Some(AttackKind::ALL[i as usize / 4 % AttackKind::ALL.len()])
            } else {
                None
            },
        })
        .collect();
    let mut buf = Vec::new();
    write_labels(&mut buf, &labels).unwrap();
    assert_eq!(
        read_labels(buf.as_slice(), OnError::Reject)
            .unwrap()
            .records,
        labels
    );
    let bad = b"event_id,attack\n1,\n2,martian_invasion\nx,vip_snooping\n3,role_misuse\n";
    let p = read_labels(&bad[..], OnError::Skip).unwrap();
    assert_eq!(p.records.len(), 2);
    assert_eq!(
        p.skipped.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![3, 4]
    );
}

#[test]
fn fhir_round_trip_and_shape() {
    let evs = events(60);
    let mut buf = Vec::new();
    write_audit_events(&mut buf, &evs).unwrap();
    let text = String::from_utf8(buf.clone()).unwrap();
    assert_eq!(text.lines().count(), 60);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["resourceType"], "AuditEvent");
    assert_eq!(first["type"]["code"], "110110");
    assert_eq!(first["agent"][0]["requestor"], true);
    assert_eq!(
        first["agent"][0]["purposeOfUse"][0]["coding"][0]["code"],
        "BTG"
    ); // event 0 is BTG
    assert_eq!(first["entity"][0]["what"]["reference"], "Patient/p0");
    assert_eq!(first["recorded"], "2026-01-05T00:00:00.000Z");
    let back = read_audit_events(buf.as_slice(), OnError::Reject).unwrap();
    assert_eq!(back.records, evs);
}

#[test]
fn fhir_malformed_lines_are_reported_with_line_numbers() {
    let mut buf = Vec::new();
    write_audit_events(&mut buf, &events(4)).unwrap();
    let mut lines: Vec<String> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[1] = lines[1].replace(
        "\"resourceType\":\"AuditEvent\"",
        "\"resourceType\":\"Patient\"",
    );
    lines[2] = lines[2].replace("care-team", "care-teem");
    lines.insert(3, "{not json".into());
    lines.insert(4, "".into());
    lines.push(lines[0].replace(
        "\"recorded\":\"2026-01-05T00:00:00.000Z\"",
        "\"recorded\":\"yesterday\"",
    ));
    let data = lines.join("\n");
    let p = read_audit_events(data.as_bytes(), OnError::Skip).unwrap();
    assert_eq!(p.records.len(), 2);
    let got: Vec<u64> = p.skipped.iter().map(|e| e.line).collect();
    assert_eq!(got, vec![2, 3, 4, 7], "{:?}", p.skipped);
    assert!(p.skipped[0].message.contains("resourceType"));
    assert!(p.skipped[1].message.contains("care-team"));
    assert!(p.skipped[3].message.contains("recorded"));
    let err = read_audit_events(data.as_bytes(), OnError::Reject).unwrap_err();
    assert!(err.to_string().starts_with("line 2:"), "{err}");
}

#[test]
fn table_reads_numbers_and_labels() {
    let data = "a,b,label,c\n1,2,0,3\n4.5,-1e-3,attack,6\n\n7,8,normal,9\n0,0,1,0\n";
    let t = read_table(data.as_bytes(), Some("label"), OnError::Reject).unwrap();
    assert_eq!(t.columns, vec!["a", "b", "c"]);
    assert_eq!(t.n_cols, 3);
    assert_eq!(t.n_rows(), 4);
    assert_eq!(t.row(1).to_vec(), [4.5, -1e-3, 6.0]);
    assert_eq!(t.labels, Some(vec![false, true, false, true]));
    // Without a label column, the text label cells are not numbers.
    let t = read_table(data.as_bytes(), None, OnError::Skip).unwrap();
    assert_eq!(t.labels, None);
    assert_eq!(
        t.skipped.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![3, 5]
    );
    assert!(
        label_is_anomalous("yes")
            && !label_is_anomalous(" 0.0 ")
            && !label_is_anomalous("NORMAL")
            && !label_is_anomalous("Benign")
            && !label_is_anomalous("false")
            && label_is_anomalous("outlier")
    );
}

#[test]
fn a_split_column_names_each_rows_part() {
    let data = "a,part,label\n1,train,0\n2,Validation,0\n3,TEST,1\n4,test,0\n";
    let t = read_table_split(
        data.as_bytes(),
        Some("label"),
        Some("part"),
        OnError::Reject,
    )
    .unwrap();
    assert_eq!(t.columns, vec!["a"]);
    assert_eq!(
        t.parts,
        Some(vec![Part::Train, Part::Validation, Part::Test, Part::Test])
    );
    assert_eq!(t.labels, Some(vec![false, false, true, false]));
    // Any other word is a row error with its line; a missing or shared column, a header error.
    let bad = "a,part\n1,train\n2,holdout\n";
    let err = read_table_split(bad.as_bytes(), None, Some("part"), OnError::Reject).unwrap_err();
    assert!(err.to_string().starts_with("line 3:"), "{err}");
    assert!(err.to_string().contains("holdout"), "{err}");
    let t = read_table_split(bad.as_bytes(), None, Some("part"), OnError::Skip).unwrap();
    assert_eq!((t.n_rows(), t.parts.map(|p| p.len())), (1, Some(1)));
    for (label, split) in [(None, Some("fold")), (Some("part"), Some("part"))] {
        assert!(matches!(
            read_table_split(bad.as_bytes(), label, split, OnError::Skip),
            Err(FormatError::BadHeader(_))
        ));
    }
}

#[test]
fn table_errors_carry_line_numbers() {
    let data = "x,y\n1,2\n1,NaN\n1,inf\n1\n1,2,3\n1,abc\n1e40,1\n3,4\n";
    let t = read_table(data.as_bytes(), None, OnError::Skip).unwrap();
    assert_eq!(t.n_rows(), 2);
    let lines: Vec<u64> = t.skipped.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
    assert!(t.skipped[0].message.contains("finite"));
    assert!(t.skipped[2].message.contains("columns"));
    assert!(t.skipped[4].message.contains("not a number"));
    let err = read_table(data.as_bytes(), None, OnError::Reject).unwrap_err();
    assert!(err.to_string().starts_with("line 3:"), "{err}");
    assert!(matches!(
        read_table("x,y\n".as_bytes(), Some("label"), OnError::Skip),
        Err(FormatError::BadHeader(_))
    ));
    // A name given twice is refused, naming both columns: which is the label would be a guess.
    let twice = read_table(
        "x,label,label\n1,0,1\n".as_bytes(),
        Some("label"),
        OnError::Skip,
    );
    match twice {
        Err(FormatError::BadHeader(m)) => assert!(m.contains("columns 2 and 3"), "{m}"),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn readers_never_panic_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        for policy in [OnError::Skip, OnError::Reject] {
            let _ = read_events(data.as_slice(), policy);
            let _ = read_labels(data.as_slice(), policy);
            let _ = read_audit_events(data.as_slice(), policy);
            let _ = read_table(data.as_slice(), None, policy);
            let _ = read_table(data.as_slice(), Some("label"), policy);
        }
    }

    #[test]
    fn readers_never_panic_on_mangled_valid_files(
        n in 1u64..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let evs = events(n);
        let mut csv = Vec::new();
        write_events(&mut csv, &evs).unwrap();
        let mut nd = Vec::new();
        write_audit_events(&mut nd, &evs).unwrap();
        for (at, byte) in edits {
            let i = at.index(csv.len());
            csv[i] = byte;
            let j = at.index(nd.len());
            nd[j] = byte;
        }
        for policy in [OnError::Skip, OnError::Reject] {
            if let Ok(p) = read_events(csv.as_slice(), policy) {
                // Every line is accounted for once at most: accepted, skipped, or blank (an
                // edit to a newline splits a record's line in two).
                let lines = csv.iter().filter(|b| **b == b'\n').count() + 1;
                prop_assert!(p.records.len() + p.skipped.len() <= lines);
            }
            let _ = read_audit_events(nd.as_slice(), policy);
        }
    }

    #[test]
    fn csv_round_trips_arbitrary_text(user in "[^\r\n]{1,20}", patient in "[^\r\n]{1,20}") {
        let mut e = event(1);
        e.user = user;
        e.patient = patient;
        let mut buf = Vec::new();
        write_events(&mut buf, std::slice::from_ref(&e)).unwrap();
        let back = read_events(buf.as_slice(), OnError::Reject).unwrap();
        prop_assert_eq!(back.records, vec![e]);
    }
}

/// An `AuditEvent` as an EHR writes it under IHE BALP: a UUID id, a RESTful read of an
/// `Observation`, the user by `Practitioner` reference, the device as a source agent, and no
/// medfl extension or code.
const PLAIN_AUDIT_EVENT: &str = r#"{
  "resourceType": "AuditEvent",
  "id": "0b9d1f0e-6a51-4e1c-9d55-2f0f3c1b7a11",
  "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
  "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
  "action": "R",
  "recorded": "2026-01-05T02:14:00+01:00",
  "outcome": "0",
  "agent": [
    {"who": {"reference": "https://ehr.example/fhir/Practitioner/u7"}, "requestor": true,
     "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}]},
    {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153"}]},
     "who": {"display": "ws-icu-3"}, "requestor": false, "network": {"address": "10.1.2.3", "type": "2"}}
  ],
  "source": {"observer": {"display": "EHR server"}},
  "entity": [
    {"what": {"reference": "Observation/obs-1"}},
    {"what": {"reference": "Patient/p42"}, "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}
  ]
}"#;

#[test]
fn a_standard_audit_event_is_read_with_the_hospitals_context() {
    use medfl_accesslog::context::{CARE_TEAM_CSV, Context, PATIENTS_FILE, STAFF_FILE};
    use medfl_accesslog::fhir::read_audit_value;
    let v: serde_json::Value = serde_json::from_str(PLAIN_AUDIT_EVENT).unwrap();
    let err = read_audit_value(&v, None, 9).unwrap_err();
    assert!(err.to_string().contains("no role for \"u7\""), "{err}");
    let mut ctx = Context::new();
    ctx.read(
        STAFF_FILE,
        "user,role,department\nu7,nurse,icu\n".as_bytes(),
    )
    .unwrap();
    let err = read_audit_value(&v, Some(&ctx), 9).unwrap_err();
    assert!(err.to_string().contains("patient-department"), "{err}");
    ctx.read(PATIENTS_FILE, "patient,department\np42,icu\n".as_bytes())
        .unwrap();
    ctx.read(
        CARE_TEAM_CSV,
        "user,patient,start,end\nu7,p42,,\n".as_bytes(),
    )
    .unwrap();
    let a = read_audit_value(&v, Some(&ctx), 9).unwrap();
    assert_eq!(
        a.id.as_deref(),
        Some("0b9d1f0e-6a51-4e1c-9d55-2f0f3c1b7a11")
    );
    assert_eq!(a.purposes, vec!["TREAT".to_owned()]);
    let e = a.event;
    assert_eq!(e.event_id, 9);
    assert_eq!(e.time_ms, 1_767_575_640_000, "01:14 UTC");
    assert_eq!((e.user.as_str(), e.role), ("u7", StaffRole::Nurse));
    assert_eq!((e.action, e.resource), (Action::View, Resource::LabResult));
    assert_eq!(
        (e.workstation.as_str(), e.ip.as_str()),
        ("ws-icu-3", "10.1.2.3")
    );
    assert_eq!(e.patient, "p42");
    assert!(e.care_team && !e.vip && !e.family_link && !e.break_glass);

    // Not a record access, or no patient: refused, saying why.
    let mut login = v.clone();
    login["type"] = serde_json::json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114"});
    let err = read_audit_value(&login, Some(&ctx), 9).unwrap_err();
    assert!(
        err.to_string()
            .contains("not an access to a patient's record"),
        "{err}"
    );
    let mut no_patient = v.clone();
    no_patient["entity"].as_array_mut().unwrap().pop();
    let err = read_audit_value(&no_patient, Some(&ctx), 9).unwrap_err();
    assert!(err.to_string().contains("naming the patient"), "{err}");
    // An update is an edit; a break-the-glass purpose is break-the-glass.
    let mut btg = v.clone();
    btg["subtype"][0]["code"] = "update".into();
    btg["action"] = "U".into();
    btg["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] = "BTG".into();
    let e = read_audit_value(&btg, Some(&ctx), 9).unwrap().event;
    assert_eq!(e.action, Action::Edit);
    assert!(e.break_glass);
}

/// Pieces of order and appointment lines, valid and not, for the context feeds' properties.
mod context_feeds {
    use medfl_accesslog::context::{APPOINTMENTS_NDJSON, Context, SERVICE_REQUESTS_NDJSON};
    use medfl_accesslog::time::{DAY_MS, parse_instant};
    use proptest::prelude::*;

    const TIMES: [&str; 9] = [
        "2026-01-05T09:00:00Z",
        "2026-01-05T09:00:00+14:00",
        "2026-01-05",
        "2026-01",
        "2026",
        "2026-13",
        "9999-12-31",
        "1969-12-31",
        "yesterday",
    ];
    const REFS: [&str; 6] = [
        r#"{"reference":"Practitioner/u1"}"#,
        r#"{"reference":"Practitioner/u2"}"#,
        r#"{"identifier":{"value":"u1"}}"#,
        r#"{"identifier":{"value":"u2"},"type":"Practitioner"}"#,
        r#"{"reference":"PractitionerRole/u1-er"}"#,
        r#"{"reference":"Organization/o1"}"#,
    ];

    fn field(name: &str, value: Option<String>) -> String {
        value.map_or_else(String::new, |v| format!(r#","{name}":{v}"#))
    }

    fn quoted(s: &str) -> String {
        format!("{s:?}")
    }

    prop_compose! {
        fn service_request()(
            // Weighted towards well-formed values, so that some orders do explain.
            status in prop::option::weighted(0.9, prop::sample::select(vec!["active", "active", "completed", "draft", "cancelled"])),
            intent in prop::option::weighted(0.9, prop::sample::select(vec!["order", "order", "order", "proposal", "BOGUS"])),
            requester in prop::option::weighted(0.9, prop::sample::select(REFS.to_vec())),
            performers in prop::collection::vec(prop::sample::select(REFS.to_vec()), 0..3),
            authored in prop::option::weighted(0.9, prop::sample::select(vec![
                "2026-01-05T09:00:00Z", "2026-01-05T09:00:00Z", "2026-01-05T09:00:00+14:00",
                "2026-01-05", "2026-01", "yesterday",
            ])),
            at in prop::option::weighted(0.3, prop::sample::select(TIMES.to_vec())),
            period in prop::option::weighted(0.3, (prop::option::of(prop::sample::select(TIMES.to_vec())), prop::option::of(prop::sample::select(TIMES.to_vec())))),
        ) -> String {
            let period = period.map(|(s, e)| {
                format!("{{{}}}", [field("start", s.map(quoted)), field("end", e.map(quoted))].concat().trim_start_matches(','))
            });
            format!(
                r#"{{"resourceType":"ServiceRequest","subject":{{"reference":"Patient/p1"}}{}{}{}{}{}{}{}}}"#,
                field("status", status.map(quoted)),
                field("intent", intent.map(quoted)),
                field("requester", requester.map(str::to_owned)),
                field("performer", Some(format!("[{}]", performers.join(",")))),
                field("authoredOn", authored.map(quoted)),
                field("occurrenceDateTime", at.map(quoted)),
                field("occurrencePeriod", period),
            )
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever an order line holds, reading it never panics, and an order that loads
        /// explains nothing before it was written nor more than 30 days after.
        #[test]
        fn an_order_explains_only_after_it_was_written_and_for_30_days_at_most(line in service_request()) {
            let mut ctx = Context::new();
            if ctx.read(SERVICE_REQUESTS_NDJSON, line.as_bytes()).is_err() {
                return Ok(());
            }
            // When the order was written at the latest: a date, by the end of its day; a
            // month, by the end of its month.
            let authored = [
                ("2026-01-05T09:00:00Z", "2026-01-05T09:00:00Z"),
                ("2026-01-05T09:00:00+14:00", "2026-01-04T19:00:00Z"),
                ("2026-01-05", "2026-01-06T00:00:00Z"),
                ("2026-01", "2026-02-01T00:00:00Z"),
            ]
            .iter()
            .find(|(t, _)| line.contains(&format!(r#""authoredOn":"{t}""#)))
            .and_then(|(_, latest)| parse_instant(latest));
            for u in ["u1", "u2", "u1-er", "o1"] {
                for step in 0..160u64 {
                    let t = parse_instant("2025-12-20T00:00:00Z").unwrap() + step * DAY_MS / 2;
                    if ctx.relation(u, "p1", t).care_team {
                        // Only after a readable authoredOn, and only a typed practitioner.
                        let written = authored.expect("explained without a readable authoredOn");
                        prop_assert!(t >= written && t < written + 30 * DAY_MS, "{u} at {t}: {line}");
                        prop_assert!(["u1", "u2"].contains(&u), "{u}: {line}");
                    }
                }
            }
        }

        /// Whatever an appointment line holds, reading it never panics.
        #[test]
        fn no_appointment_line_panics(
            status in prop::sample::select(vec!["booked", "cancelled", "confirmed", ""]),
            start in prop::sample::select(TIMES.to_vec()),
            end in prop::sample::select(TIMES.to_vec()),
            actor in prop::sample::select(REFS.to_vec()),
            p_status in prop::sample::select(vec!["accepted", "declined", "Declined", ""]),
        ) {
            let line = format!(
                r#"{{"resourceType":"Appointment","status":"{status}","start":"{start}","end":"{end}","participant":[{{"actor":{{"reference":"Patient/p1"}},"status":"accepted"}},{{"actor":{actor},"status":"{p_status}"}}]}}"#
            );
            let _ = Context::new().read(APPOINTMENTS_NDJSON, line.as_bytes());
        }
    }

    /// The property above is not vacuous: a well-formed order in its space explains.
    #[test]
    fn a_well_formed_order_of_the_property_space_explains() {
        let line = r#"{"resourceType":"ServiceRequest","subject":{"reference":"Patient/p1"},"status":"active","intent":"order","requester":{"reference":"Practitioner/u1"},"performer":[{"reference":"Practitioner/u2"}],"authoredOn":"2026-01-05T09:00:00Z"}"#;
        let mut ctx = Context::new();
        ctx.read(SERVICE_REQUESTS_NDJSON, line.as_bytes()).unwrap();
        let t = parse_instant("2026-01-06T00:00:00Z").unwrap();
        assert!(ctx.relation("u2", "p1", t).care_team);
    }
}
