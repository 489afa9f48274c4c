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

#[derive(Serialize, Deserialize, Default)]
struct CodeableConcept {
    #[serde(default)]
    coding: Vec<Coding>,
}

#[derive(Serialize, Deserialize, Default)]
struct Identifier {
    #[serde(default)]
    value: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identifier: Option<Identifier>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Agent {
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
    #[serde(default)]
    observer: Option<Reference>,
    #[serde(default, rename = "type")]
    type_: Vec<Coding>,
}

#[derive(Serialize, Deserialize, Default)]
struct Entity {
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
        agent: vec![Agent {
            who: Some(Reference {
                reference: None,
                identifier: Some(Identifier {
                    value: Some(e.user.clone()),
                }),
            }),
            role: vec![CodeableConcept {
                coding: vec![coding(ROLE_SYSTEM, e.role.as_str(), None)],
            }],
            requestor: Some(true),
            network: Some(Network {
                address: Some(e.ip.clone()),
                type_: Some("2".into()),
            }),
            purpose_of_use,
        }],
        source: Some(Source {
            observer: Some(Reference {
                reference: None,
                identifier: Some(Identifier {
                    value: Some(e.workstation.clone()),
                }),
            }),
            type_: vec![coding(SOURCE_TYPE, "1", Some("User Device"))],
        }),
        entity: vec![
            Entity {
                what: Some(Reference {
                    reference: Some(format!("Patient/{}", e.patient)),
                    identifier: None,
                }),
                type_: Some(coding(ENTITY_TYPE, "1", Some("Person"))),
                role: Some(coding(OBJECT_ROLE, "1", Some("Patient"))),
            },
            Entity {
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

fn from_audit(a: Audit) -> Result<AccessEvent, String> {
    if a.resource_type != "AuditEvent" {
        return Err(format!(
            "resourceType is {:?}, expected \"AuditEvent\"",
            a.resource_type
        ));
    }
    let id = req(a.id, "id")?;
    let event_id = id
        .parse::<u64>()
        .map_err(|_| format!("id {id:?} is not an unsigned integer"))?;
    let ty = req(a.type_, "type")?;
    if ty.system.as_deref() != Some(DCM) || ty.code.as_deref() != Some("110110") {
        return Err("type is not DICOM 110110 (Patient Record)".into());
    }
    let action_code = req(a.action, "action")?;
    let action = match a
        .subtype
        .iter()
        .find(|c| c.system.as_deref() == Some(ACTION_SYSTEM))
    {
        Some(c) => {
            let code = req(c.code.as_deref(), "subtype code")?;
            Action::parse(code).ok_or_else(|| format!("unknown action subtype {code:?}"))?
        }
        // Without medfl's subtype, fall back on the FHIR action code (print is then a read).
        None => match action_code.as_str() {
            "R" => Action::View,
            "U" | "C" => Action::Edit,
            "E" => Action::Export,
            other => return Err(format!("unsupported action code {other:?}")),
        },
    };
    if fhir_action_code(action) != action_code {
        return Err(format!(
            "action {action_code:?} does not match subtype {:?}",
            action.as_str()
        ));
    }
    let recorded = req(a.recorded, "recorded")?;
    let time_ms = parse_instant(&recorded)
        .ok_or_else(|| format!("recorded {recorded:?} is not an instant"))?;
    let agent = a
        .agent
        .into_iter()
        .find(|g| g.requestor == Some(true))
        .ok_or("no agent with requestor = true")?;
    let user = nonempty(
        req(
            req(agent.who, "agent.who")?.identifier,
            "agent.who.identifier",
        )?
        .value,
        "agent.who.identifier.value",
    )?;
    let role_code = agent
        .role
        .iter()
        .flat_map(|c| c.coding.iter())
        .find(|c| c.system.as_deref() == Some(ROLE_SYSTEM))
        .and_then(|c| c.code.as_deref())
        .ok_or("missing agent.role in the medfl staff-role system")?;
    let role = StaffRole::parse(role_code).ok_or_else(|| format!("unknown role {role_code:?}"))?;
    let ip = nonempty(
        req(agent.network, "agent.network")?.address,
        "agent.network.address",
    )?;
    let break_glass = agent
        .purpose_of_use
        .iter()
        .flat_map(|c| c.coding.iter())
        .any(|c| c.system.as_deref() == Some(ACT_REASON) && c.code.as_deref() == Some("BTG"));
    let workstation = nonempty(
        req(
            req(req(a.source, "source")?.observer, "source.observer")?.identifier,
            "source.observer.identifier",
        )?
        .value,
        "source.observer.identifier.value",
    )?;
    let mut patient = None;
    let mut resource = None;
    for ent in a.entity {
        if let Some(p) = ent
            .what
            .as_ref()
            .and_then(|w| w.reference.as_deref())
            .and_then(|r| r.strip_prefix("Patient/"))
        {
            if p.is_empty() {
                return Err("empty patient reference".into());
            }
            patient = Some(p.to_owned());
            continue;
        }
        if let Some(t) = ent.type_.as_ref()
            && t.system.as_deref() == Some(RESOURCE_TYPES)
        {
            let code = t.code.as_deref().unwrap_or("");
            resource = Some(
                resource_from_fhir(code)
                    .ok_or_else(|| format!("unknown resource type {code:?}"))?,
            );
        }
    }
    let patient = req(patient, "entity with what.reference Patient/<id>")?;
    let resource = req(resource, "entity with a resource-types type")?;
    let ext = |name: &str| {
        a.extension
            .iter()
            .find(|x| x.url.strip_prefix(EXTENSION_BASE) == Some(name))
    };
    let flag = |x: Option<&Extension>, name: &str| -> Result<bool, String> {
        req(x, &format!("extension {name}"))?
            .value_boolean
            .ok_or_else(|| format!("extension {name} has no valueBoolean"))
    };
    let text = |x: Option<&Extension>, name: &str| -> Result<String, String> {
        nonempty(
            req(x, &format!("extension {name}"))?.value_string.clone(),
            &format!("extension {name} valueString"),
        )
    };
    Ok(AccessEvent {
        event_id,
        time_ms,
        user,
        role,
        user_department: text(ext("user-department"), "user-department")?,
        patient,
        patient_department: text(ext("patient-department"), "patient-department")?,
        action,
        resource,
        workstation,
        ip,
        break_glass,
        care_team: flag(ext("care-team"), "care-team")?,
        vip: flag(ext("vip"), "vip")?,
        family_link: flag(ext("family-link"), "family-link")?,
    })
}

/// Reads FHIR R4 `AuditEvent` NDJSON (as written by [`write_audit_events`]); blank lines are
/// ignored, malformed lines skipped or rejected with their line numbers.
pub fn read_audit_events<R: BufRead>(
    r: R,
    on_error: OnError,
) -> Result<Parsed<AccessEvent>, FormatError> {
    let mut lines = Lines::new(r);
    let mut out = Parsed::default();
    while let Some((line, text)) = lines.next_line()? {
        let result = text.and_then(|text| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            serde_json::from_str::<Audit>(text)
                .map_err(|e| format!("not an AuditEvent JSON object: {e}"))
                .and_then(from_audit)
                .map(Some)
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
