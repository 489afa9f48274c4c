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
use medfl_accesslog::fhir::{AuditAccess, RawAuditEvent, read_audit_value};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::decide::Decision;
use crate::request::{AccessRequest, Delivery, DeliveryId, Purpose};

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

/// Purposes of use that are research (HL7 v3 ActReason, the `HRESCH` subtree, and the older
/// `RESCH` and `CLINTRL`).
const RESEARCH: [&str; 11] = [
    "HRESCH",
    "RESCH",
    "BIORCH",
    "CLINTRCH",
    "CLINTRCHNPC",
    "CLINTRCHPC",
    "PRECLINTRCH",
    "DSRCH",
    "POARCH",
    "TRANSRCH",
    "CLINTRL",
];

/// Purposes of use that are treatment (`TREAT` and its kinds; break-the-glass; continuity of
/// care).
const TREATMENT: [&str; 7] = [
    "TREAT", "ETREAT", "ERTREAT", "BTG", "CAREMGT", "POPHLTH", "COC",
];

/// Purposes of use that are neither treatment nor research: operations (`HOPERAT` and
/// `HPAYMT` with their kinds, marketing), public health, disclosures the patient or the law
/// asks for.
const OPERATIONS: &[&str] = &[
    "HOPERAT",
    "OPERAT",
    "DONAT",
    "FRAUD",
    "GOV",
    "HACCRED",
    "HCOMPL",
    "HDECD",
    "HDIRECT",
    "HDM",
    "HLEGAL",
    "HOUTCOMS",
    "HPRGRP",
    "HQUALIMP",
    "HSYSADMIN",
    "LABELING",
    "METAMGT",
    "MEMADMIN",
    "MILCDM",
    "PATADMIN",
    "PATSFTY",
    "PERFMSR",
    "RECORDMGT",
    "SYSDEV",
    "HTEST",
    "TRAIN",
    "HPAYMT",
    "CLMATTCH",
    "COVAUTH",
    "COVERAGE",
    "ELIGDTRM",
    "ELIGVER",
    "ENROLLM",
    "MILDCRG",
    "REMITADV",
    "HMARKT",
    "PUBHLTH",
    "PATRQT",
    "FAMRQT",
    "PWATRNY",
    "SUPNWK",
    "DISASTER",
    "THREAT",
    "HSPVR",
    "SYSADMN",
    "LEGAL",
    "HRISK",
];

/// The purpose an access declares through its HL7 v3 ActReason codes. Research if any code is
/// research, **or is one medfl does not know** (another code system, words only, a code
/// outside the lists): the consent and data-use rules then apply, so that no spelling of
/// research escapes them. Otherwise treatment, else operations; `None` when none is declared.
pub fn purpose_of(codes: &[String]) -> Option<Purpose> {
    let known = |c: &str| TREATMENT.contains(&c) || OPERATIONS.contains(&c);
    if codes
        .iter()
        .any(|c| RESEARCH.contains(&c.as_str()) || !known(c))
    {
        Some(Purpose::Research)
    } else if codes.iter().any(|c| TREATMENT.contains(&c.as_str())) {
        Some(Purpose::Treatment)
    } else if codes.is_empty() {
        None
    } else {
        Some(Purpose::Operations)
    }
}

/// Refuses an access by a user the hospital's staff directory does not list, or to a patient
/// its patient list does not hold (when the context feeds give them): a typo, a test account
/// or an invented id, each of which would otherwise start a feature history of its own.
///
/// # Errors
/// An [`Issue`] naming the unknown user or patient.
pub fn check_known(r: &AccessRequest, context: &Context) -> Result<(), Issue> {
    if context.knows_user(&r.user) == Some(false) {
        return Err(Issue::error(
            "not-found",
            format!(
                "unknown user {:?}: the staff directory does not list them",
                r.user
            ),
        ));
    }
    if context.knows_patient(&r.patient) == Some(false) {
        return Err(Issue::error(
            "not-found",
            format!(
                "unknown patient {:?}: the patient list does not hold them",
                r.patient
            ),
        ));
    }
    Ok(())
}

/// What the hospital's own records say, applied to a request that carries its own flags (the
/// JSON API), by the rules the `AuditEvent` reader uses: the directory's role, with a claimed
/// researcher role kept as a research purpose; the context's departments; VIP and family if
/// either says so; care only if both do (when the context gives care assignments at all).
pub fn apply_context(r: &mut AccessRequest, context: &Context) {
    use medfl_accesslog::StaffRole;
    if let Some(staff) = context.staff(&r.user) {
        if r.role == StaffRole::Researcher && staff.role != StaffRole::Researcher {
            r.purpose = Some(Purpose::Research);
        }
        r.role = staff.role;
        r.department.clone_from(&staff.department);
    }
    if let Some(d) = context.patient_department(&r.patient) {
        r.patient_department = d.to_owned();
    }
    let rel = context.relation(&r.user, &r.patient, r.time_ms);
    r.vip |= rel.vip;
    r.family_link |= rel.family_link;
    if context.lists_care() {
        r.care_team &= rel.care_team;
    }
}

/// The access an `AuditEvent` records, with its declared purpose and its id. An id medfl
/// cannot use (see [`DeliveryId`]) only costs the event its protection against being decided
/// twice: the access is still judged.
fn delivery_from(a: AuditAccess) -> Delivery {
    let mut request = AccessRequest::from_event(&a.event);
    request.purpose = purpose_of(&a.purposes);
    let id = a.id.as_deref().and_then(|id| DeliveryId::new(id).ok());
    Delivery { request, id }
}

/// Reads one `AuditEvent` value as the access it records.
///
/// # Errors
/// An [`Issue`] naming what is missing or malformed.
pub fn request_of(value: &Value, context: Option<&Context>) -> Result<AccessRequest, Issue> {
    delivery_of(value, context).map(|d| d.request)
}

/// Reads one `AuditEvent` value as the access it records, with the event's `id`.
///
/// # Errors
/// An [`Issue`] naming what is missing or malformed.
pub fn delivery_of(value: &Value, context: Option<&Context>) -> Result<Delivery, Issue> {
    let d = read_audit_value(value, context, 0)
        .map_err(|e| Issue::error("invalid", e.0))
        .map(delivery_from)?;
    if let Some(c) = context {
        check_known(&d.request, c)?;
    }
    Ok(d)
}

/// Reads one `AuditEvent` straight from its JSON bytes (a syslog MSG), with the event's `id`.
///
/// # Errors
/// An [`Issue`] naming what is missing or malformed.
pub fn delivery_of_json(json: &[u8], context: Option<&Context>) -> Result<Delivery, Issue> {
    let raw: RawAuditEvent = serde_json::from_slice(json)
        .map_err(|e| Issue::error("structure", format!("not an AuditEvent JSON object: {e}")))?;
    read_raw(raw, context)
}

/// [`delivery_of_json`] without the id.
///
/// # Errors
/// An [`Issue`] naming what is missing or malformed.
pub fn request_of_json(json: &[u8], context: Option<&Context>) -> Result<AccessRequest, Issue> {
    delivery_of_json(json, context).map(|d| d.request)
}

fn read_raw(raw: RawAuditEvent, context: Option<&Context>) -> Result<Delivery, Issue> {
    if raw.resource_type() != "AuditEvent" {
        return Err(Issue::error(
            "not-supported",
            format!(
                "a {} cannot be posted here: send an AuditEvent or a Bundle of them",
                raw.resource_type()
            ),
        ));
    }
    let d = raw
        .read(context, 0)
        .map_err(|e| Issue::error("invalid", e.0))
        .map(delivery_from)?;
    if let Some(c) = context {
        check_known(&d.request, c)?;
    }
    Ok(d)
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
    Single(Delivery),
    /// A Bundle's entries, in order; each the access it records or why it cannot be read.
    Bundle {
        /// Transaction or batch.
        kind: BundleKind,
        /// One per entry.
        entries: Vec<Result<Delivery, Issue>>,
    },
}

/// Only the `resourceType` of a body (every other element skipped unread).
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
}

/// A Bundle as far as it is read: its type and its entries, at most
/// [`MAX_BUNDLE_ENTRIES`] (counted while parsing, so a huge Bundle costs nothing to refuse).
#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default, deserialize_with = "bounded_entries")]
    entry: Vec<Entry>,
}

/// An entry, its resource kept as the raw JSON text it was (read on its own, so that one
/// malformed entry of a batch is that entry's error, not the Bundle's).
#[derive(Deserialize)]
struct Entry {
    resource: Option<Box<serde_json::value::RawValue>>,
    request: Option<EntryRequest>,
}

#[derive(Deserialize)]
struct EntryRequest {
    method: Option<String>,
    url: Option<String>,
}

fn bounded_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Entry>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_BUNDLE_ENTRIES} entries")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Entry>, A::Error> {
            let mut out = Vec::new();
            while let Some(e) = seq.next_element()? {
                if out.len() == MAX_BUNDLE_ENTRIES {
                    return Err(serde::de::Error::custom(format!(
                        "over {MAX_BUNDLE_ENTRIES} entries: split the Bundle"
                    )));
                }
                out.push(e);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// Reads a POSTed body: one `AuditEvent`, or a `transaction` or `batch` Bundle of them. The
/// body is deserialized straight into the elements medfl reads; nothing else is kept.
///
/// # Errors
/// The [`Issue`]s refusing the whole body: not JSON, another resource type, a Bundle of another
/// type or over [`MAX_BUNDLE_ENTRIES`], an entry that is not a POSTed `AuditEvent`; for a
/// transaction, also every entry that cannot be read.
pub fn read_submission(body: &[u8], context: Option<&Context>) -> Result<Submission, Vec<Issue>> {
    let head: Head = serde_json::from_slice(body).map_err(|e| {
        vec![Issue::error(
            "structure",
            format!("not a JSON resource: {e}"),
        )]
    })?;
    match head.resource_type.as_deref() {
        Some("AuditEvent") => delivery_of_json(body, context)
            .map(Submission::Single)
            .map_err(|i| vec![i.at("AuditEvent")]),
        Some("Bundle") => {
            let bundle: Bundle = serde_json::from_slice(body).map_err(|e| {
                let code = if e.to_string().contains("split the Bundle") {
                    "too-costly"
                } else {
                    "structure"
                };
                vec![Issue::error(
                    code,
                    format!("not a Bundle of AuditEvents: {e}"),
                )]
            })?;
            read_bundle(bundle, context)
        }
        Some(other) => Err(vec![Issue::error(
            "not-supported",
            format!("a {other} cannot be posted here: send an AuditEvent or a Bundle of them"),
        )]),
        None => Err(vec![Issue::error("required", "missing resourceType")]),
    }
}

fn read_bundle(bundle: Bundle, context: Option<&Context>) -> Result<Submission, Vec<Issue>> {
    let kind = match bundle.type_.as_deref() {
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
    let mut read = Vec::with_capacity(bundle.entry.len());
    let mut refused = Vec::new();
    for (i, entry) in bundle.entry.into_iter().enumerate() {
        let at = format!("Bundle.entry[{i}]");
        // An entry that is not a POST of an AuditEvent is a malformed Bundle, whatever its type.
        if let Some(req) = &entry.request {
            let method = req.method.as_deref();
            let url = req.url.as_deref().unwrap_or("");
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
        let result = match entry.resource {
            None => Err(Issue::error("required", "the entry has no resource")),
            Some(raw) => {
                let head: Head = serde_json::from_str(raw.get()).map_err(|e| {
                    vec![
                        Issue::error("structure", format!("not a resource: {e}"))
                            .at(format!("{at}.resource")),
                    ]
                })?;
                if head.resource_type.as_deref() != Some("AuditEvent") {
                    return Err(vec![
                        Issue::error("not-supported", "only AuditEvent entries are accepted")
                            .at(format!("{at}.resource")),
                    ]);
                }
                delivery_of_json(raw.get().as_bytes(), context)
            }
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
            Submission::Single(d) => {
                assert_eq!(d.request, AccessRequest::from_event(&event(1)));
                assert_eq!(
                    d.id.as_ref().map(DeliveryId::as_str),
                    Some("1"),
                    "the event's id"
                );
            }
            other => panic!("{other:?}"),
        }
        let b = bundle("transaction", vec![audit(1), audit(2)]);
        match read_submission(&b, None).unwrap() {
            Submission::Bundle { kind, entries } => {
                assert_eq!(kind, BundleKind::Transaction);
                assert_eq!(entries.len(), 2);
                let second = entries[1].as_ref().map(|d| &d.request);
                assert_eq!(second, Ok(&AccessRequest::from_event(&event(2))));
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
    fn a_purpose_with_a_local_translation_is_read_and_research_is_research_whoever_says_so() {
        let mut v = audit(1);
        v["agent"][0]["purposeOfUse"] = json!([{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ERTREAT"},
            {"system": "https://ehr.example/local", "code": "ER"}
        ]}]);
        assert_eq!(
            request_of(&v, None).unwrap().purpose,
            Some(Purpose::Treatment)
        );
        // A translation that says research is read the strict way.
        v["agent"][0]["purposeOfUse"][0]["coding"][1] =
            json!({"system": "https://ehr.example/local", "code": "RESEARCH-ONC"});
        assert_eq!(
            request_of(&v, None).unwrap().purpose,
            Some(Purpose::Research)
        );
        // The directory lists a physician; the event says researcher: research rules apply.
        let mut ctx = Context::new();
        ctx.add_staff("u1", medfl_accesslog::StaffRole::Physician, "icu");
        ctx.set_patient_department("p1", "icu");
        let mut v = audit(1);
        v["agent"][0]["role"][0]["coding"][0]["code"] = "researcher".into();
        let r = request_of(&v, Some(&ctx)).unwrap();
        assert!(r.is_research(), "{r:?}");
        // ... but the role, and so the records it needs, is the directory's.
        assert_eq!(r.role, medfl_accesslog::StaffRole::Physician);
        // And a researcher in the directory stays one whatever the event claims.
        ctx.add_staff("u1", medfl_accesslog::StaffRole::Researcher, "icu");
        assert!(request_of(&audit(1), Some(&ctx)).unwrap().is_research());
    }

    #[test]
    fn meaning_medfl_cannot_read_is_refused() {
        let mut two = audit(1);
        let mut second = two["agent"][0].clone();
        second["who"]["identifier"]["value"] = "u2".into();
        two["agent"].as_array_mut().unwrap().push(second);
        let nested = |path: &str| {
            let mut v = audit(1);
            v[path][0]["modifierExtension"] = json!([{"url": "https://x", "valueBoolean": true}]);
            v
        };
        let mut r5 = audit(1);
        r5["authorization"] = json!([{"coding": [{"code": "HRESCH"}]}]);
        for (v, says) in [
            (two, "more than one requestor"),
            (nested("agent"), "modifierExtension"),
            (nested("entity"), "modifierExtension"),
            (r5, "R5"),
        ] {
            let err = request_of(&v, None).unwrap_err();
            assert!(err.diagnostics.contains(says), "{err:?}");
        }
    }

    #[test]
    fn a_user_or_patient_the_context_does_not_know_is_refused_even_with_a_role() {
        let mut ctx = Context::new();
        ctx.add_staff("u-other", medfl_accesslog::StaffRole::Nurse, "icu");
        ctx.set_patient_department("p1", "icu");
        let err = request_of(&audit(1), Some(&ctx)).unwrap_err();
        assert!(err.diagnostics.contains("unknown user"), "{err:?}");
        let raw = serde_json::to_vec(&audit(1)).unwrap();
        let err = request_of_json(&raw, Some(&ctx)).unwrap_err();
        assert!(err.diagnostics.contains("unknown user"), "{err:?}");
    }

    #[test]
    fn the_context_tightens_a_json_request_and_says_nothing_of_care_without_care_feeds() {
        let mut ctx = Context::new();
        ctx.add_staff("u1", medfl_accesslog::StaffRole::Researcher, "lab");
        ctx.add_vip("p1");
        let mut r = AccessRequest::from_event(&event(1));
        apply_context(&mut r, &ctx);
        assert_eq!(r.role, medfl_accesslog::StaffRole::Researcher);
        assert_eq!(r.department, "lab");
        assert!(r.vip, "VIP if either says so");
        assert!(
            r.care_team,
            "no care feeds: the request's own care flag stands"
        );
        ctx.add_care("u2", "p1", medfl_accesslog::context::Span::ALWAYS);
        apply_context(&mut r, &ctx);
        assert!(!r.care_team, "care only if both say so");
        // Through the AuditEvent reader too: no care feeds, the extension stands.
        let mut plain = Context::new();
        plain.add_staff("u1", medfl_accesslog::StaffRole::Nurse, "icu");
        assert!(request_of(&audit(1), Some(&plain)).unwrap().care_team);
        // A clerk who claims to be a researcher keeps the clerk's role (and so the records a
        // clerk needs) and is held to the research rules.
        let mut clerk = Context::new();
        clerk.add_staff("u1", medfl_accesslog::StaffRole::Billing, "billing");
        let mut r = AccessRequest::from_event(&event(1));
        r.role = medfl_accesslog::StaffRole::Researcher;
        r.purpose = Some(Purpose::Treatment);
        apply_context(&mut r, &clerk);
        assert_eq!(r.role, medfl_accesslog::StaffRole::Billing);
        assert_eq!(r.purpose, Some(Purpose::Research));
    }

    #[test]
    fn a_batch_entry_of_the_wrong_shape_is_that_entrys_error() {
        let mut bad = audit(2);
        bad["recorded"] = json!(123);
        bad["agent"] = json!({});
        match read_submission(&bundle("batch", vec![audit(1), bad, audit(3)]), None).unwrap() {
            Submission::Bundle { entries, .. } => {
                assert!(entries[0].is_ok() && entries[2].is_ok());
                let issue = entries[1].as_ref().unwrap_err();
                assert_eq!(
                    issue.expression.as_deref(),
                    Some("Bundle.entry[1].resource")
                );
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
    fn purposes_map_strictest_first_and_unknown_purposes_are_research() {
        let codes = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for r in RESEARCH {
            assert_eq!(
                purpose_of(&codes(&["TREAT", r])),
                Some(Purpose::Research),
                "{r}"
            );
        }
        assert_eq!(purpose_of(&codes(&["BTG"])), Some(Purpose::Treatment));
        assert_eq!(
            purpose_of(&codes(&["HPAYMT", "HOPERAT"])),
            Some(Purpose::Operations)
        );
        assert_eq!(
            purpose_of(&codes(&["TREAT", "XYZ"])),
            Some(Purpose::Research)
        );
        assert_eq!(
            purpose_of(&codes(&[medfl_accesslog::fhir::UNREADABLE_PURPOSE])),
            Some(Purpose::Research)
        );
        assert_eq!(purpose_of(&[]), None);
    }

    #[test]
    fn research_in_any_spelling_is_research() {
        for (system, code) in [
            (
                "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "DSRCH",
            ),
            ("urn:oid:2.16.840.1.113883.5.8", "TRANSRCH"),
            ("http://hl7.org/fhir/v3/ActReason", "HRESCH"),
            ("https://ehr.example/purposes", "TREAT"),
        ] {
            let mut v = audit(1);
            v["agent"][0]["purposeOfUse"] = json!([{"coding": [{"system": system, "code": code}]}]);
            assert_eq!(
                request_of(&v, None).unwrap().purpose,
                Some(Purpose::Research),
                "{system} {code}"
            );
        }
        let mut v = audit(1);
        v["purposeOfEvent"] = json!([{"text": "a study"}]);
        assert_eq!(
            request_of(&v, None).unwrap().purpose,
            Some(Purpose::Research)
        );
    }

    #[test]
    fn an_event_naming_two_patients_or_a_practitioner_role_is_refused() {
        let mut two = audit(1);
        two["entity"]
            .as_array_mut()
            .unwrap()
            .push(json!({"what": {"reference": "Patient/p9"}}));
        let err = request_of(&two, None).unwrap_err();
        assert!(err.diagnostics.contains("more than one patient"), "{err:?}");
        let mut role = audit(1);
        role["agent"][0]["who"] = json!({"reference": "PractitionerRole/r1"});
        let err = request_of(&role, None).unwrap_err();
        assert!(err.diagnostics.contains("PractitionerRole"), "{err:?}");
    }
}
