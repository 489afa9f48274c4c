//! The EHR's own audit feed: FHIR R4 `AuditEvent` resources, alone or in a `Bundle`, read as
//! access requests, and the FHIR answers (`OperationOutcome`, a response `Bundle`).
//!
//! An EHR writes its audit events without medfl's extensions: what they would carry (the
//! user's role and department, the patient's department, the care-team, VIP and family flags)
//! comes from the hospital's context feeds ([`Context`]), by the derivation training uses.
//!
//! A `transaction` Bundle is all or nothing (FHIR R4 §3.1.0.1.2, "http.html#transaction"): one
//! entry that cannot be read refuses the whole Bundle and nothing is decided. A `batch` is
//! entry by entry: the readable entries are decided, the others answered with their own
//! `OperationOutcome`. Pure: no HTTP and no clock here.

use medfl_accesslog::context::Context;
use medfl_accesslog::fhir::read_audit_value;
use serde_json::{Value, json};

use crate::decide::Decision;
use crate::request::{AccessRequest, Purpose};

/// Entries one Bundle may hold.
pub const MAX_BUNDLE_ENTRIES: usize = 1024;

/// The code system of medfl's decision codes in an `OperationOutcome.issue.details`.
pub const DECISION_SYSTEM: &str = "https://medfl.invalid/fhir/CodeSystem/access-decision";

/// An `OperationOutcome.issue` (FHIR R4 §6.1.1.1): how bad, what kind, what, where.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: &'static str,
    /// An `IssueType` code: `invalid`, `structure`, `required`, `value`, `not-supported`,
    /// `too-costly`, `throttled`, `exception`, `informational`, ...
    pub code: &'static str,
    /// The problem, in words.
    pub diagnostics: String,
    /// Where in the resource (a FHIRPath such as `Bundle.entry[3].resource`).
    pub expression: Option<String>,
}

impl Issue {
    /// An error of kind `code`.
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: "error",
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// The same issue, located at `expression`.
    pub fn at(mut self, expression: impl Into<String>) -> Issue {
        self.expression = Some(expression.into());
        self
    }
}

/// An `OperationOutcome` holding `issues`.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issue: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({
                "severity": i.severity,
                "code": i.code,
                "diagnostics": i.diagnostics,
            });
            if let Some(e) = &i.expression {
                v["expression"] = json!([e]);
            }
            v
        })
        .collect();
    json!({ "resourceType": "OperationOutcome", "issue": issue })
}

/// The `OperationOutcome` that answers a decided access: an `information` issue whose details
/// carry the verdict as a code (`allow`, `alert`, `deny`) and the explanation as text.
pub fn decision_outcome(record: u64, d: &Decision) -> Value {
    let verdict = d.verdict.as_str();
    let mut words = verdict.to_owned();
    if let Some(s) = d.score {
        words.push_str(&format!(" (score {s:.3}"));
        if let Some(t) = d.threshold {
            words.push_str(&format!(", threshold {t:.3}"));
        }
        words.push(')');
    }
    for r in &d.reasons {
        words.push_str("; ");
        words.push_str(r);
    }
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "information",
            "code": "informational",
            "details": {
                "coding": [{ "system": DECISION_SYSTEM, "code": verdict }],
                "text": d.explanation,
            },
            "diagnostics": format!("audit record {record}: {words}"),
        }],
    })
}

/// The purpose an access declares through its HL7 v3 ActReason codes: research if any code is
/// a research one (the strictest rules apply), else treatment, else operations.
pub fn purpose_of(codes: &[String]) -> Option<Purpose> {
    let any = |set: &[&str]| codes.iter().any(|c| set.contains(&c.as_str()));
    if any(&[
        "HRESCH", "CLINTRCH", "BIORCH", "PATRCH", "DRUGRSCH", "HTEST",
    ]) {
        Some(Purpose::Research)
    } else if any(&["TREAT", "ETREAT", "BTG", "CAREMGT", "POPHLTH", "CLINTRL"]) {
        Some(Purpose::Treatment)
    } else if any(&[
        "HOPERAT",
        "HPAYMT",
        "HMARKT",
        "HSYSADMIN",
        "OPERAT",
        "PATADMIN",
    ]) {
        Some(Purpose::Operations)
    } else {
        None
    }
}

/// Reads one `AuditEvent` value as the access it records.
///
/// # Errors
/// An [`Issue`] naming what is missing or malformed.
pub fn request_of(value: &Value, context: Option<&Context>) -> Result<AccessRequest, Issue> {
    let a = read_audit_value(value, context, 0).map_err(|e| Issue::error("invalid", e.0))?;
    let mut r = AccessRequest::from_event(&a.event);
    r.purpose = purpose_of(&a.purposes);
    Ok(r)
}

/// How a Bundle's entries are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleKind {
    /// All or nothing.
    Transaction,
    /// Entry by entry.
    Batch,
}

impl BundleKind {
    /// The response Bundle's type.
    pub fn response_type(self) -> &'static str {
        match self {
            BundleKind::Transaction => "transaction-response",
            BundleKind::Batch => "batch-response",
        }
    }
}

/// What a POST to the FHIR endpoint carries.
#[derive(Debug)]
pub enum Submission {
    /// One `AuditEvent`.
    Single(AccessRequest),
    /// A Bundle's entries, in order; each the access it records or why it cannot be read.
    Bundle {
        /// Transaction or batch.
        kind: BundleKind,
        /// One per entry.
        entries: Vec<Result<AccessRequest, Issue>>,
    },
}

/// Reads a POSTed body: one `AuditEvent`, or a `transaction` or `batch` Bundle of them.
///
/// # Errors
/// An [`Issue`] refusing the whole body: not JSON, another resource type, a Bundle of another
/// type or over [`MAX_BUNDLE_ENTRIES`], an entry that is not a POSTed `AuditEvent`; for a
/// transaction, also any entry that cannot be read.
pub fn read_submission(body: &[u8], context: Option<&Context>) -> Result<Submission, Vec<Issue>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        vec![Issue::error(
            "structure",
            format!("not a JSON resource: {e}"),
        )]
    })?;
    match value.get("resourceType").and_then(Value::as_str) {
        Some("AuditEvent") => request_of(&value, context)
            .map(Submission::Single)
            .map_err(|i| vec![i.at("AuditEvent")]),
        Some("Bundle") => read_bundle(&value, context),
        Some(other) => Err(vec![Issue::error(
            "not-supported",
            format!("a {other} cannot be posted here: send an AuditEvent or a Bundle of them"),
        )]),
        None => Err(vec![Issue::error("required", "missing resourceType")]),
    }
}

fn read_bundle(value: &Value, context: Option<&Context>) -> Result<Submission, Vec<Issue>> {
    let kind = match value.get("type").and_then(Value::as_str) {
        Some("transaction") => BundleKind::Transaction,
        Some("batch") => BundleKind::Batch,
        other => {
            return Err(vec![
                Issue::error(
                    "not-supported",
                    format!("Bundle.type is {other:?}: only transaction and batch are accepted"),
                )
                .at("Bundle.type"),
            ]);
        }
    };
    let entries = match value.get("entry") {
        None => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(vec![Issue::error(
                "structure",
                "Bundle.entry is not a list",
            )]);
        }
    };
    if entries.len() > MAX_BUNDLE_ENTRIES {
        return Err(vec![Issue::error(
            "too-costly",
            format!(
                "{} entries, over the limit of {MAX_BUNDLE_ENTRIES}: split the Bundle",
                entries.len()
            ),
        )]);
    }
    let mut read = Vec::with_capacity(entries.len());
    let mut refused = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("Bundle.entry[{i}]");
        // An entry that is not a POST of an AuditEvent is a malformed Bundle, whatever its type.
        if let Some(req) = entry.get("request") {
            let method = req.get("method").and_then(Value::as_str);
            let url = req.get("url").and_then(Value::as_str).unwrap_or("");
            if method != Some("POST") || url.trim_end_matches('/') != "AuditEvent" {
                return Err(vec![
                    Issue::error(
                        "not-supported",
                        format!(
                            "request {} {url:?}: only POST AuditEvent is accepted",
                            method.unwrap_or("(no method)")
                        ),
                    )
                    .at(format!("{at}.request")),
                ]);
            }
        }
        let result = match entry.get("resource") {
            None => Err(Issue::error("required", "the entry has no resource")),
            Some(r) if r.get("resourceType").and_then(Value::as_str) != Some("AuditEvent") => {
                return Err(vec![
                    Issue::error("not-supported", "only AuditEvent entries are accepted")
                        .at(format!("{at}.resource")),
                ]);
            }
            Some(r) => request_of(r, context),
        }
        .map_err(|issue| issue.at(format!("{at}.resource")));
        if let Err(issue) = &result {
            refused.push(issue.clone());
        }
        read.push(result);
    }
    if kind == BundleKind::Transaction && !refused.is_empty() {
        return Err(refused);
    }
    Ok(Submission::Bundle {
        kind,
        entries: read,
    })
}

/// One entry of a response Bundle: `status` (`"201 Created"`, `"400 Bad Request"`), the
/// created record's location, and its `OperationOutcome`.
pub fn response_entry(status: &str, record: Option<u64>, outcome: Value) -> Value {
    let mut response = json!({ "status": status, "outcome": outcome });
    if let Some(seq) = record {
        response["location"] = json!(format!("AuditEvent/{seq}"));
    }
    json!({ "response": response })
}

/// A response Bundle of `kind` holding `entries`.
pub fn response_bundle(kind: BundleKind, entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": kind.response_type(),
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_accesslog::AccessEvent;
    use medfl_accesslog::fhir::write_audit_events;

    fn event(i: u64) -> AccessEvent {
        AccessEvent {
            event_id: i,
            time_ms: 1_767_600_000_000 + i,
            user: "u1".into(),
            role: medfl_accesslog::StaffRole::Nurse,
            user_department: "icu".into(),
            patient: format!("p{i}"),
            patient_department: "icu".into(),
            action: medfl_accesslog::Action::View,
            resource: medfl_accesslog::Resource::LabResult,
            workstation: "ws1".into(),
            ip: "10.0.0.1".into(),
            break_glass: false,
            care_team: true,
            vip: false,
            family_link: false,
        }
    }

    fn audit(i: u64) -> Value {
        let mut buf = Vec::new();
        write_audit_events(&mut buf, &[event(i)]).unwrap();
        serde_json::from_slice(&buf).unwrap()
    }

    fn bundle(kind: &str, entries: Vec<Value>) -> Vec<u8> {
        let entry: Vec<Value> = entries
            .into_iter()
            .map(|r| json!({"resource": r, "request": {"method": "POST", "url": "AuditEvent"}}))
            .collect();
        serde_json::to_vec(&json!({"resourceType": "Bundle", "type": kind, "entry": entry}))
            .unwrap()
    }

    #[test]
    fn a_single_event_and_a_bundle_read_as_their_accesses() {
        let one = serde_json::to_vec(&audit(1)).unwrap();
        match read_submission(&one, None).unwrap() {
            Submission::Single(r) => assert_eq!(r, AccessRequest::from_event(&event(1))),
            other => panic!("{other:?}"),
        }
        let b = bundle("transaction", vec![audit(1), audit(2)]);
        match read_submission(&b, None).unwrap() {
            Submission::Bundle { kind, entries } => {
                assert_eq!(kind, BundleKind::Transaction);
                assert_eq!(entries.len(), 2);
                assert_eq!(entries[1], Ok(AccessRequest::from_event(&event(2))));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_with_one_bad_entry_is_refused_whole_and_a_batch_entry_by_entry() {
        let mut bad = audit(2);
        bad["recorded"] = json!("yesterday");
        let issues = read_submission(
            &bundle("transaction", vec![audit(1), bad.clone(), audit(3)]),
            None,
        )
        .unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Bundle.entry[1].resource")
        );
        assert!(issues[0].diagnostics.contains("recorded"));
        match read_submission(&bundle("batch", vec![audit(1), bad, audit(3)]), None).unwrap() {
            Submission::Bundle { entries, .. } => {
                assert!(entries[0].is_ok() && entries[1].is_err() && entries[2].is_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_resources_bundle_types_and_methods_are_refused() {
        for (body, says) in [
            (b"{not json".to_vec(), "not a JSON"),
            (br#"{"resourceType":"Patient"}"#.to_vec(), "Patient cannot"),
            (bundle("collection", vec![audit(1)]), "only transaction"),
            (
                serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "batch",
                    "entry": [{"resource": audit(1), "request": {"method": "DELETE", "url": "AuditEvent"}}]}))
                .unwrap(),
                "only POST AuditEvent",
            ),
            (
                bundle("batch", vec![json!({"resourceType": "Patient"})]),
                "only AuditEvent",
            ),
        ] {
            let issues = read_submission(&body, None).unwrap_err();
            assert!(issues[0].diagnostics.contains(says), "{:?}", issues);
        }
        let many = bundle("batch", vec![audit(1); MAX_BUNDLE_ENTRIES + 1]);
        assert_eq!(
            read_submission(&many, None).unwrap_err()[0].code,
            "too-costly"
        );
    }

    #[test]
    fn purposes_map_strictest_first() {
        let codes = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            purpose_of(&codes(&["TREAT", "HRESCH"])),
            Some(Purpose::Research)
        );
        assert_eq!(purpose_of(&codes(&["BTG"])), Some(Purpose::Treatment));
        assert_eq!(purpose_of(&codes(&["HPAYMT"])), Some(Purpose::Operations));
        assert_eq!(purpose_of(&codes(&["XYZ"])), None);
    }
}
