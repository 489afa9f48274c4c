//! FHIR R4 `AuditEvent` NDJSON: one `AuditEvent` resource per line, the form EHR audit trails
//! are exchanged in, so that a hospital can feed medfl its real export.
//!
//! # Mapping
//!
//! | [`AccessEvent`] field | `AuditEvent` element |
//! |---|---|
//! | `event_id` | `id` (decimal text) |
//! | (constant) | `type` = DICOM `110110` "Patient Record" (`http://dicom.nema.org/resources/ontology/DCM`) |
//! | `action` | `action`: view → `R`, edit → `U`, print → `R`, export → `E`; and `subtype[0]` in `https://medfl.invalid/fhir/CodeSystem/access-action` (`view`/`edit`/`print`/`export`), which is what tells print from view; export also carries DICOM `110106` "Export" as `subtype[1]` |
//! | `time_ms` | `recorded` (UTC instant, millisecond precision) |
//! | (constant) | `outcome` = `0` (success) |
//! | `user` | `agent[0].who.identifier.value`, with `agent[0].requestor` = `true` |
//! | `role` | `agent[0].role[0].coding[0]`, system `https://medfl.invalid/fhir/CodeSystem/staff-role` |
//! | `ip` | `agent[0].network.address`, `network.type` = `2` (IP address) |
//! | `break_glass` | `agent[0].purposeOfUse[0].coding[0]` = `BTG` (`http://terminology.hl7.org/CodeSystem/v3-ActReason`); absent when false |
//! | `workstation` | `source.observer.identifier.value`, `source.type[0]` = `1` (user device) |
//! | `patient` | `entity[0].what.reference` = `Patient/<id>`, `type` = `1` (person), `role` = `1` (patient) |
//! | `resource` | `entity[1].type` in `http://hl7.org/fhir/resource-types`: demographics → `Patient`, clinical_note → `DocumentReference`, medication → `MedicationRequest`, lab_result → `Observation`, imaging → `ImagingStudy`, billing → `Claim`; `entity[1].role` = `4` (domain resource) |
//! | `care_team`, `vip`, `family_link` | extensions `.../care-team`, `.../vip`, `.../family-link` (`valueBoolean`) |
//! | `user_department`, `patient_department` | extensions `.../user-department`, `.../patient-department` (`valueString`) |
//!
//! Extension URLs are `https://medfl.invalid/fhir/StructureDefinition/<name>`.
//!
//! The reader accepts what the writer writes and what a FHIR server would add around it: unknown
//! elements are ignored; the elements in the table must be present and well-formed (a missing
//! medfl extension is an error, as is a bad code), and each error names its line.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{FormatError, OnError, Parsed, RowError};
use crate::event::{AccessEvent, Action, Resource, StaffRole};
use crate::lines::Lines;
use crate::time::{format_instant, parse_instant};

/// Prefix of medfl's extension URLs.
pub const EXTENSION_BASE: &str = "https://medfl.invalid/fhir/StructureDefinition/";
/// Code system of the `subtype` that tells view, edit, print and export apart.
pub const ACTION_SYSTEM: &str = "https://medfl.invalid/fhir/CodeSystem/access-action";
/// Code system of staff roles.
pub const ROLE_SYSTEM: &str = "https://medfl.invalid/fhir/CodeSystem/staff-role";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Audit {
    resource_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    extension: Vec<Extension>,
    /// Extensions that change the meaning of the event: one not understood must not be
    /// ignored (FHIR R4 §2.4.0.1.2), and medfl understands none.
    #[serde(default, skip_serializing)]
    modifier_extension: Vec<serde::de::IgnoredAny>,
    /// FHIR R5's name for the purposes of use: refused, so that a purpose is never skipped.
    #[serde(default, skip_serializing)]
    authorization: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "type")]
    type_: Option<Coding>,
    #[serde(default)]
    subtype: Vec<Coding>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    recorded: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    purpose_of_event: Vec<CodeableConcept>,
    #[serde(default)]
    agent: Vec<Agent>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    entity: Vec<Entity>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Extension {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_boolean: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_string: Option<String>,
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct Coding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display: Option<String>,
}

impl Coding {
    fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct CodeableConcept {
    #[serde(default)]
    coding: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Identifier {
    #[serde(default)]
    value: Option<String>,
}

/// A FHIR `Reference`: to a resource by `reference`, or to a person by `identifier`.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identifier: Option<Identifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display: Option<String>,
    /// `Reference.type`: the type of what is referred to, when the reference says.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<String>,
}

impl Reference {
    /// A reference by identifier value.
    pub(crate) fn by_identifier(value: &str) -> Reference {
        Reference {
            identifier: Some(Identifier {
                value: Some(value.to_owned()),
            }),
            ..Reference::default()
        }
    }

    /// A relative reference `<ty>/<id>`.
    pub(crate) fn to(ty: &str, id: &str) -> Reference {
        Reference {
            reference: Some(format!("{ty}/{id}")),
            ..Reference::default()
        }
    }

    /// The id of the person or resource this reference names, if it is one of `types`: the id
    /// in its literal `reference` (relative, absolute or versioned:
    /// `.../Practitioner/u1/_history/2`) when it has one, else its `identifier.value` (unless
    /// `Reference.type` says it is of another type). One rule for every feed, so that a person
    /// named both ways is the same person everywhere.
    pub(crate) fn id_of(&self, types: &[&str]) -> Option<&str> {
        if let Some((ty, id)) = self.typed() {
            return types.contains(&ty).then_some(id);
        }
        if self.declared_type().is_some_and(|t| !types.contains(&t)) {
            return None;
        }
        self.identifier
            .as_ref()
            .and_then(|i| i.value.as_deref())
            .filter(|v| !v.is_empty())
    }

    /// Every id the reference carries: its literal `reference`'s id and its `identifier.value`
    /// (whatever their types), for telling whether two references could name one person.
    pub(crate) fn all_ids(&self) -> impl Iterator<Item = &str> {
        let literal = self.typed().map(|(_, id)| id);
        let identifier = self
            .identifier
            .as_ref()
            .and_then(|i| i.value.as_deref())
            .filter(|v| !v.is_empty());
        literal.into_iter().chain(identifier)
    }

    /// The type the reference declares (`Reference.type`, or the type in its literal
    /// `reference`), if any.
    pub(crate) fn declared_type(&self) -> Option<&str> {
        self.typed().map(|(ty, _)| ty).or_else(|| {
            self.type_
                .as_deref()
                .map(|t| t.rsplit('/').next().unwrap_or(t))
        })
    }

    /// The resource type and id of a literal `reference`, if it has one.
    fn typed(&self) -> Option<(&str, &str)> {
        let r = self.reference.as_deref()?;
        let r = r.split(['?', '#']).next()?;
        let r = r.split("/_history/").next()?;
        let mut parts = r.rsplit('/');
        let id = parts.next()?;
        let ty = parts.next()?;
        let first = ty.chars().next()?;
        (first.is_ascii_uppercase() && !id.is_empty()).then_some((ty, id))
    }
}

/// A FHIR `Period` (bounds as `dateTime` text).
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Period {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) end: Option<String>,
}

impl Period {
    /// The period of a span; `None` for all time.
    pub(crate) fn of(span: crate::context::Span) -> Option<Period> {
        let start = (span.start_ms > 0).then(|| format_instant(span.start_ms));
        let end = (span.end_ms < u64::MAX).then(|| format_instant(span.end_ms));
        (start.is_some() || end.is_some()).then_some(Period { start, end })
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Agent {
    #[serde(default, skip_serializing)]
    modifier_extension: Vec<serde::de::IgnoredAny>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<CodeableConcept>,
    #[serde(default)]
    who: Option<Reference>,
    #[serde(default)]
    role: Vec<CodeableConcept>,
    #[serde(default)]
    requestor: Option<bool>,
    #[serde(default)]
    network: Option<Network>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    purpose_of_use: Vec<CodeableConcept>,
}

#[derive(Serialize, Deserialize, Default)]
struct Network {
    #[serde(default)]
    address: Option<String>,
    #[serde(default, rename = "type")]
    type_: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Source {
    #[serde(default, skip_serializing)]
    modifier_extension: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    observer: Option<Reference>,
    #[serde(default, rename = "type")]
    type_: Vec<Coding>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Entity {
    #[serde(default, skip_serializing)]
    modifier_extension: Vec<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    what: Option<Reference>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Coding>,
}

fn coding(system: &str, code: &str, display: Option<&str>) -> Coding {
    Coding {
        system: Some(system.into()),
        code: Some(code.into()),
        display: display.map(Into::into),
    }
}

/// The FHIR resource type that holds each part of the record.
pub fn fhir_resource_type(r: Resource) -> &'static str {
    match r {
        Resource::Demographics => "Patient",
        Resource::ClinicalNote => "DocumentReference",
        Resource::Medication => "MedicationRequest",
        Resource::LabResult => "Observation",
        Resource::Imaging => "ImagingStudy",
        Resource::Billing => "Claim",
    }
}

fn resource_from_fhir(s: &str) -> Option<Resource> {
    Resource::ALL
        .iter()
        .copied()
        .find(|r| fhir_resource_type(*r) == s)
}

/// The FHIR `AuditEvent.action` code (C/R/U/D/E) of an action.
pub fn fhir_action_code(a: Action) -> &'static str {
    match a {
        Action::View | Action::Print => "R",
        Action::Edit => "U",
        Action::Export => "E",
    }
}

fn ext_bool(name: &str, v: bool) -> Extension {
    Extension {
        url: format!("{EXTENSION_BASE}{name}"),
        value_boolean: Some(v),
        value_string: None,
    }
}

fn ext_string(name: &str, v: &str) -> Extension {
    Extension {
        url: format!("{EXTENSION_BASE}{name}"),
        value_boolean: None,
        value_string: Some(v.into()),
    }
}

fn to_audit(e: &AccessEvent) -> Audit {
    let mut subtype = vec![coding(ACTION_SYSTEM, e.action.as_str(), None)];
    if e.action == Action::Export {
        subtype.push(coding(DCM, "110106", Some("Export")));
    }
    let purpose_of_use = if e.break_glass {
        vec![CodeableConcept {
            coding: vec![coding(ACT_REASON, "BTG", Some("break the glass"))],
            text: None,
        }]
    } else {
        Vec::new()
    };
    Audit {
        resource_type: "AuditEvent".into(),
        id: Some(e.event_id.to_string()),
        extension: vec![
            ext_bool("care-team", e.care_team),
            ext_bool("vip", e.vip),
            ext_bool("family-link", e.family_link),
            ext_string("user-department", &e.user_department),
            ext_string("patient-department", &e.patient_department),
        ],
        type_: Some(coding(DCM, "110110", Some("Patient Record"))),
        subtype,
        action: Some(fhir_action_code(e.action).into()),
        recorded: Some(format_instant(e.time_ms)),
        outcome: Some("0".into()),
        modifier_extension: Vec::new(),
        authorization: Vec::new(),
        purpose_of_event: Vec::new(),
        agent: vec![Agent {
            modifier_extension: Vec::new(),
            type_: None,
            who: Some(Reference::by_identifier(&e.user)),
            role: vec![CodeableConcept {
                coding: vec![coding(ROLE_SYSTEM, e.role.as_str(), None)],
                text: None,
            }],
            requestor: Some(true),
            network: Some(Network {
                address: Some(e.ip.clone()),
                type_: Some("2".into()),
            }),
            purpose_of_use,
        }],
        source: Some(Source {
            modifier_extension: Vec::new(),
            observer: Some(Reference::by_identifier(&e.workstation)),
            type_: vec![coding(SOURCE_TYPE, "1", Some("User Device"))],
        }),
        entity: vec![
            Entity {
                modifier_extension: Vec::new(),
                what: Some(Reference::to("Patient", &e.patient)),
                type_: Some(coding(ENTITY_TYPE, "1", Some("Person"))),
                role: Some(coding(OBJECT_ROLE, "1", Some("Patient"))),
            },
            Entity {
                modifier_extension: Vec::new(),
                what: None,
                type_: Some(coding(RESOURCE_TYPES, fhir_resource_type(e.resource), None)),
                role: Some(coding(OBJECT_ROLE, "4", Some("Domain Resource"))),
            },
        ],
    }
}

/// Writes events as FHIR R4 `AuditEvent` NDJSON, one resource per line.
pub fn write_audit_events<W: Write>(mut w: W, events: &[AccessEvent]) -> Result<(), FormatError> {
    let mut buf = Vec::with_capacity(1024);
    for e in events {
        buf.clear();
        serde_json::to_writer(&mut buf, &to_audit(e)).map_err(|err| FormatError::Unwritable {
            event_id: e.event_id,
            message: err.to_string(),
        })?;
        buf.push(b'\n');
        w.write_all(&buf)?;
    }
    w.flush()?;
    Ok(())
}

/// `AuditEvent.type` of a RESTful operation (FHIR R4 audit-event-type).
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// `AuditEvent.subtype` of a RESTful operation (FHIR R4 restful-interaction).
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
/// DICOM "Source Role ID": the agent that is the user's device (IHE BALP).
const DCM_SOURCE_ROLE: &str = "110153";
/// The names of HL7 v3 ActReason: its URI, its OID, and the URI FHIR STU3 used.
const ACT_REASON_SYSTEMS: [&str; 3] = [
    ACT_REASON,
    "urn:oid:2.16.840.1.113883.5.8",
    "http://hl7.org/fhir/v3/ActReason",
];
/// What [`AuditAccess::purposes`] holds for a purpose medfl cannot read (another code system,
/// or words only).
pub const UNREADABLE_PURPOSE: &str = "?";
/// The purpose [`AuditAccess::purposes`] gains when an event claims the researcher role for a
/// user the staff directory lists in another: HL7 v3 ActReason `HRESCH`, healthcare research.
pub const CLAIMED_RESEARCH: &str = "HRESCH";

/// An `AuditEvent` read as an access, with what it says beyond the event schema.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditAccess {
    /// The access.
    pub event: AccessEvent,
    /// The resource's own `id`, as the EHR wrote it (a UUID, say), if it has one.
    pub id: Option<String>,
    /// Its purpose-of-use codes in HL7 v3 ActReason (`TREAT`, `HRESCH`, `HOPERAT`, ...), from
    /// the event's `purposeOfEvent` and every agent's `purposeOfUse`, sorted, each once; a
    /// purpose in another code system or in words only is [`UNREADABLE_PURPOSE`].
    pub purposes: Vec<String>,
}

/// Why an `AuditEvent` is not an access medfl can judge; the message names the element.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuditEventError(pub String);

/// Reads one `AuditEvent` (a parsed JSON value) as an access.
///
/// The event's relation flags, the user's role and department and the patient's department
/// come from medfl's extensions and codings when present, and otherwise from `context` (the
/// hospital's context feeds, [`Context`]); without either, the event is refused naming what is
/// missing. A numeric `id` becomes the event id; any other (a UUID) is kept in
/// [`AuditAccess::id`] and the event takes `fallback_id`.
///
/// # Errors
/// [`AuditEventError`] naming the first element that is missing or malformed.
pub fn read_audit_value(
    value: &serde_json::Value,
    context: Option<&Context>,
    fallback_id: u64,
) -> Result<AuditAccess, AuditEventError> {
    let audit = Audit::deserialize(value)
        .map_err(|e| AuditEventError(format!("not an AuditEvent: {e}")))?;
    from_audit(audit, context, fallback_id).map_err(AuditEventError)
}

/// An `AuditEvent` parsed from JSON but not yet read as an access: the form a Bundle's entries
/// are deserialized into, straight from the bytes (unknown elements are skipped, not kept).
#[derive(Deserialize)]
#[serde(transparent)]
pub struct RawAuditEvent(Audit);

impl RawAuditEvent {
    /// Its `resourceType` (another resource deserializes too, and is refused when read).
    pub fn resource_type(&self) -> &str {
        &self.0.resource_type
    }

    /// Reads it as an access, as [`read_audit_value`] does.
    ///
    /// # Errors
    /// [`AuditEventError`] naming the first element that is missing or malformed.
    pub fn read(
        self,
        context: Option<&Context>,
        fallback_id: u64,
    ) -> Result<AuditAccess, AuditEventError> {
        from_audit(self.0, context, fallback_id).map_err(AuditEventError)
    }
}

fn req<T>(v: Option<T>, what: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("missing {what}"))
}

fn nonempty(v: Option<String>, what: &str) -> Result<String, String> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("{what} is empty")),
        None => Err(format!("missing {what}")),
    }
}

/// Where in the record a FHIR resource type belongs: the six types the writer uses, and the
/// others an EHR's RESTful audit names.
fn resource_of_type(ty: &str) -> Option<Resource> {
    if let Some(r) = resource_from_fhir(ty) {
        return Some(r);
    }
    Some(match ty {
        "RelatedPerson" => Resource::Demographics,
        "Composition"
        | "Condition"
        | "Procedure"
        | "Encounter"
        | "AllergyIntolerance"
        | "CarePlan"
        | "ClinicalImpression"
        | "Binary"
        | "QuestionnaireResponse"
        | "ServiceRequest"
        | "FamilyMemberHistory"
        | "Goal"
        | "RiskAssessment"
        | "Flag"
        | "DetectedIssue"
        | "NutritionOrder"
        | "DeviceRequest"
        | "CareTeam" => Resource::ClinicalNote,
        "MedicationAdministration"
        | "MedicationStatement"
        | "MedicationDispense"
        | "Immunization" => Resource::Medication,
        "DiagnosticReport" | "Specimen" => Resource::LabResult,
        "Media" => Resource::Imaging,
        "Coverage" | "ExplanationOfBenefit" | "Account" | "Invoice" | "ChargeItem" => {
            Resource::Billing
        }
        _ => return None,
    })
}

/// The action: medfl's subtype, else a RESTful interaction, else the FHIR action code.
fn action_of(a: &Audit, restful: bool) -> Result<Action, String> {
    let code = a.action.as_deref();
    if let Some(c) = a
        .subtype
        .iter()
        .find(|c| c.system.as_deref() == Some(ACTION_SYSTEM))
    {
        let sub = req(c.code.as_deref(), "subtype code")?;
        let action = Action::parse(sub).ok_or_else(|| format!("unknown action subtype {sub:?}"))?;
        let code = req(code, "action")?;
        if fhir_action_code(action) != code {
            return Err(format!(
                "action {code:?} does not match subtype {:?}",
                action.as_str()
            ));
        }
        return Ok(action);
    }
    if restful
        && let Some(i) = a
            .subtype
            .iter()
            .find(|c| c.system.as_deref() == Some(RESTFUL_INTERACTION))
            .and_then(|c| c.code.as_deref())
    {
        return match i {
            "read" | "vread" | "history-instance" | "history-type" | "history-system"
            | "search-type" | "search-system" | "search" => Ok(Action::View),
            "create" | "update" | "patch" | "delete" => Ok(Action::Edit),
            other => Err(format!(
                "RESTful interaction {other:?} is not a record access"
            )),
        };
    }
    // DICOM 110106 "Export" says the data left the record; without it, FHIR's E is Execute
    // (a query or an operation), which reads.
    if a.subtype.iter().any(|c| c.is(DCM, "110106")) {
        return Ok(Action::Export);
    }
    match req(code, "action")? {
        "R" | "E" => Ok(Action::View),
        "C" | "U" | "D" => Ok(Action::Edit),
        other => Err(format!("unsupported action code {other:?}")),
    }
}

fn from_audit(a: Audit, ctx: Option<&Context>, fallback_id: u64) -> Result<AuditAccess, String> {
    if a.resource_type != "AuditEvent" {
        return Err(format!(
            "resourceType is {:?}, expected \"AuditEvent\"",
            a.resource_type
        ));
    }
    if !a.authorization.is_empty() {
        return Err(
            "the event carries `authorization` (FHIR R5): send it as R4, with \
                    `purposeOfUse`"
                .into(),
        );
    }
    let nested = a.agent.iter().any(|g| !g.modifier_extension.is_empty())
        || a.entity.iter().any(|e| !e.modifier_extension.is_empty())
        || a.source
            .as_ref()
            .is_some_and(|s| !s.modifier_extension.is_empty());
    if !a.modifier_extension.is_empty() || nested {
        return Err(
            "the event carries a modifierExtension, which changes its meaning in a way \
                    medfl does not know"
                .into(),
        );
    }
    let id = a.id.clone().filter(|s| !s.is_empty());
    let event_id = id
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(fallback_id);
    let ty = req(a.type_.as_ref(), "type")?;
    let restful = ty.is(AUDIT_EVENT_TYPE, "rest");
    if !ty.is(DCM, "110110") && !restful {
        return Err(format!(
            "type {}|{} is not an access to a patient's record (DICOM 110110, or a RESTful \
             operation)",
            ty.system.as_deref().unwrap_or(""),
            ty.code.as_deref().unwrap_or("")
        ));
    }
    let action = action_of(&a, restful)?;
    let recorded = req(a.recorded.as_deref(), "recorded")?;
    let time_ms = parse_instant(recorded)
        .ok_or_else(|| format!("recorded {recorded:?} is not an instant"))?;
    let mut purposes: Vec<String> = Vec::new();
    for concept in a
        .purpose_of_event
        .iter()
        .chain(a.agent.iter().flat_map(|g| g.purpose_of_use.iter()))
    {
        // The codings of one concept are translations of one purpose: the ActReason ones say
        // it; only a concept with none (another system alone, or words) is unreadable.
        let act_reason: Vec<String> = concept
            .coding
            .iter()
            .filter(|c| {
                c.system
                    .as_deref()
                    .is_some_and(|s| ACT_REASON_SYSTEMS.contains(&s))
            })
            .filter_map(|c| c.code.clone())
            .collect();
        // A translation or the concept's words hinting at research make it unreadable too:
        // codings that disagree are read the strict way.
        let words = concept.text.iter().chain(
            concept
                .coding
                .iter()
                .filter(|c| {
                    !c.system
                        .as_deref()
                        .is_some_and(|s| ACT_REASON_SYSTEMS.contains(&s))
                })
                .flat_map(|c| c.code.iter().chain(c.display.iter())),
        );
        let hints_research = words.into_iter().any(|w| {
            let w = w.to_ascii_lowercase();
            ["research", "resch", "rsch", "study", "trial"]
                .iter()
                .any(|h| w.contains(h))
        });
        if act_reason.is_empty() || hints_research {
            purposes.push(UNREADABLE_PURPOSE.to_owned());
        }
        purposes.extend(act_reason);
    }
    purposes.sort_unstable();
    purposes.dedup();
    let break_glass = purposes.iter().any(|p| p == "BTG");
    // The user's device: medfl's own source (a user device), else the agent IHE BALP names as
    // the source, else the requestor's address.
    let device_agent = a.agent.iter().find(|g| {
        g.type_
            .iter()
            .flat_map(|t| t.coding.iter())
            .any(|c| c.is(DCM, DCM_SOURCE_ROLE))
    });
    let mut requestors = a.agent.iter().filter(|g| g.requestor == Some(true));
    let agent = requestors.next().ok_or("no agent with requestor = true")?;
    if requestors.next().is_some() {
        return Err(
            "the event names more than one requestor: medfl decides one user's access".into(),
        );
    }
    let who = req(agent.who.as_ref(), "agent.who")?;
    // One person is one user (the unit of privacy): a PractitionerRole would make a clinician
    // with two roles two users.
    let user = who
        .id_of(&["Practitioner"])
        .ok_or(
            "agent.who names no practitioner (a Practitioner reference or an identifier; a \
             PractitionerRole must be resolved to its Practitioner)",
        )?
        .to_owned();
    let ip = agent
        .network
        .as_ref()
        .or(device_agent.and_then(|g| g.network.as_ref()))
        .and_then(|n| n.address.clone())
        .filter(|s| !s.is_empty())
        .ok_or("missing agent.network.address (the user's IP address)")?;
    let source = req(a.source.as_ref(), "source")?;
    let user_device = source.type_.iter().any(|c| c.is(SOURCE_TYPE, "1"));
    let workstation = if user_device {
        let observer = req(source.observer.as_ref(), "source.observer")?;
        nonempty(
            observer
                .identifier
                .as_ref()
                .and_then(|i| i.value.clone())
                .or_else(|| observer.typed().map(|(_, id)| id.to_owned()))
                .or_else(|| observer.display.clone()),
            "source.observer.identifier.value",
        )?
    } else if let Some(g) = device_agent {
        let who = g.who.as_ref();
        who.and_then(|w| w.identifier.as_ref().and_then(|i| i.value.clone()))
            .or_else(|| who.and_then(|w| w.display.clone()))
            .or_else(|| g.network.as_ref().and_then(|n| n.address.clone()))
            .filter(|s| !s.is_empty())
            .ok_or("the source agent names no device")?
    } else {
        ip.clone()
    };
    let mut patient = None;
    let mut explicit_resource = None;
    let mut implied_resource = None;
    let mut unknown_type = None;
    for ent in &a.entity {
        let what = ent.what.as_ref();
        let patient_role = ent.role.as_ref().is_some_and(|r| r.is(OBJECT_ROLE, "1"));
        match what.and_then(Reference::typed) {
            Some(("Patient", p)) => {
                if patient.as_deref().is_some_and(|q: &str| q != p) {
                    return Err("the event names more than one patient: medfl decides one \
                                access to one patient's record (one AuditEvent per patient)"
                        .into());
                }
                patient = Some(p.to_owned());
                continue;
            }
            Some((ty, _)) => match resource_of_type(ty) {
                Some(r) if implied_resource.is_none() => implied_resource = Some(r),
                Some(_) => {}
                None => unknown_type = Some(ty.to_owned()),
            },
            None => {
                if patient_role && let Some(p) = what.and_then(|w| w.id_of(&["Patient"])) {
                    if patient.as_deref().is_some_and(|q: &str| q != p) {
                        return Err("the event names more than one patient".into());
                    }
                    patient = Some(p.to_owned());
                    continue;
                }
            }
        }
        if let Some(t) = ent.type_.as_ref()
            && t.system.as_deref() == Some(RESOURCE_TYPES)
        {
            let code = t.code.as_deref().unwrap_or("");
            explicit_resource = Some(
                resource_of_type(code).ok_or_else(|| format!("unknown resource type {code:?}"))?,
            );
        }
    }
    let patient = req(
        patient,
        "entity naming the patient (what.reference Patient/<id>)",
    )?;
    let resource = match (explicit_resource.or(implied_resource), unknown_type) {
        (Some(r), _) => r,
        (None, Some(ty)) => {
            return Err(format!(
                "the event reads a {ty}, which medfl does not place in the record"
            ));
        }
        // A read of the Patient resource itself.
        (None, None) => Resource::Demographics,
    };
    let staff = ctx.and_then(|c| c.staff(&user));
    // The staff directory, when it lists the user, is the authority on their role: it decides
    // which records the role needs (`role_needs`), so a clerk who claims to be a researcher is
    // still held to a clerk's needs. Research is research whoever says so, though: a claimed
    // researcher the directory lists otherwise is read as declaring a research purpose, which
    // no source can take out of the research rules.
    let claimed = agent
        .role
        .iter()
        .flat_map(|c| c.coding.iter())
        .find(|c| c.system.as_deref() == Some(ROLE_SYSTEM))
        .and_then(|c| c.code.as_deref())
        .map(|code| StaffRole::parse(code).ok_or_else(|| format!("unknown role {code:?}")))
        .transpose()?;
    let role = staff.map(|s| s.role).or(claimed).ok_or_else(|| {
        format!(
            "no role for {user:?}: agent.role has no medfl staff-role code and the staff \
             directory does not list them"
        )
    })?;
    if claimed == Some(StaffRole::Researcher) && role != StaffRole::Researcher {
        purposes.push(CLAIMED_RESEARCH.to_owned());
        purposes.sort_unstable();
        purposes.dedup();
    }
    let ext = |name: &str| {
        a.extension
            .iter()
            .find(|x| x.url.strip_prefix(EXTENSION_BASE) == Some(name))
    };
    // What the hospital's own records say wins over what an event claims: the context's
    // departments when it has them; a flag that marks an access as sensitive (VIP, family)
    // holds if either says so, and care if both do.
    let text = |name: &str, from_context: Option<&str>| -> Result<String, String> {
        if let Some(v) = from_context {
            return Ok(v.to_owned());
        }
        match ext(name) {
            Some(x) => nonempty(
                x.value_string.clone(),
                &format!("extension {name} valueString"),
            ),
            None => Err(format!(
                "missing extension {name}, and the context feeds do not give it"
            )),
        }
    };
    let user_department = text("user-department", staff.map(|s| s.department.as_str()))?;
    let patient_department = text(
        "patient-department",
        ctx.and_then(|c| c.patient_department(&patient)),
    )?;
    let derived = ctx.map(|c| c.relation(&user, &patient, time_ms));
    let claimed = |name: &str| -> Result<Option<bool>, String> {
        ext(name)
            .map(|x| {
                x.value_boolean
                    .ok_or_else(|| format!("extension {name} has no valueBoolean"))
            })
            .transpose()
    };
    let flag = |name: &str,
                from_context: Option<bool>,
                both: fn(bool, bool) -> bool|
     -> Result<bool, String> {
        match (claimed(name)?, from_context) {
            (Some(e), Some(c)) => Ok(both(e, c)),
            (Some(v), None) | (None, Some(v)) => Ok(v),
            (None, None) => Err(format!(
                "missing extension {name}, and no context feeds to derive it from"
            )),
        }
    };
    let and = |x: bool, y: bool| x && y;
    let or = |x: bool, y: bool| x || y;
    // A context without care assignments says nothing about care.
    let care_from_context = ctx
        .filter(|c| c.lists_care())
        .and(derived.map(|r| r.care_team));
    let care_team = flag("care-team", care_from_context, and)?;
    let vip = flag("vip", derived.map(|r| r.vip), or)?;
    let family_link = flag("family-link", derived.map(|r| r.family_link), or)?;
    let event = AccessEvent {
        event_id,
        time_ms,
        role,
        user_department,
        patient_department,
        action,
        resource,
        workstation,
        ip,
        break_glass,
        care_team,
        vip,
        family_link,
        user,
        patient,
    };
    Ok(AuditAccess {
        event,
        id,
        purposes,
    })
}

/// Reads FHIR R4 `AuditEvent` NDJSON (as written by [`write_audit_events`]); blank lines are
/// ignored, malformed lines skipped or rejected with their line numbers.
pub fn read_audit_events<R: BufRead>(
    r: R,
    on_error: OnError,
) -> Result<Parsed<AccessEvent>, FormatError> {
    read_audit_events_with(r, on_error, None)
}

/// Reads `AuditEvent` NDJSON as EHRs write it: what medfl's extensions would carry is taken
/// from `context` when they are absent (see [`read_audit_value`]). An event whose `id` is not
/// a number takes its line number as event id.
pub fn read_audit_events_with<R: BufRead>(
    r: R,
    on_error: OnError,
    context: Option<&Context>,
) -> Result<Parsed<AccessEvent>, FormatError> {
    let mut lines = Lines::new(r);
    let mut out = Parsed::default();
    // Labels are joined on event ids: two events with one id would be mislabelled.
    let mut seen = std::collections::HashSet::new();
    while let Some((line, text)) = lines.next_line()? {
        let result = text.and_then(|text| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            serde_json::from_str::<Audit>(text)
                .map_err(|e| format!("not an AuditEvent JSON object: {e}"))
                .and_then(|a| from_audit(a, context, line))
                .and_then(|a| {
                    if seen.insert(a.event.event_id) {
                        Ok(Some(a.event))
                    } else {
                        Err(format!(
                            "event id {} appears twice (an id that is not a number takes its \
                             line number)",
                            a.event.event_id
                        ))
                    }
                })
                .map_err(|message| RowError { line, message })
        });
        match result {
            Ok(Some(e)) => out.records.push(e),
            Ok(None) => {}
            Err(e) => out.fail(on_error, e)?,
        }
    }
    Ok(out)
}
