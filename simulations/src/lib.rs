//! A deterministic simulator of hospitals' EHR access-audit logs, with labelled attacks.
//!
//! A [`Scenario`] (TOML, see `scenarios/default.toml`) describes a consortium of hospitals that
//! differ in size, departments, shifts, networks and attack rates. [`generate_hospital`] turns
//! one hospital into its access log and labels; [`write_consortium`] writes every hospital's
//! events CSV, FHIR `AuditEvent` NDJSON, (separately) labels CSV, and the context feeds its
//! relation flags are derived from (staff directory, care teams, VIPs, family links).
//!
//! # What is simulated
//! - Staff with roles, departments, shifts (day, evening, night, office) and usual
//!   workstations; patients with admissions, departments, care teams (treatment team plus
//!   assigned pharmacist, billing and research worklists), VIP flags and family links to staff.
//! - Normal behaviour: chart sessions on one's own patients during one's shift, from one's
//!   usual workstations, fewer on weekends.
//! - Legitimate exceptions, which look like abuse on purpose: cover shifts at other hours on
//!   colleagues' patients, consults outside the care team, break-the-glass emergencies at any
//!   hour, remote (VPN) work, roaming to other workstations, new staff with no history, coders
//!   reading notes, billing batch exports.
//! - Attacks ([`medfl_accesslog::AttackKind`]): VIP and family snooping, curiosity outside the
//!   care team, off-hours bulk exfiltration, stolen credentials from a new device and address,
//!   a compromised account hitting hundreds of patients within minutes, role misuse, and
//!   slow-drip exfiltration on every worked day.
//!
//! Times are written as UTC but mean the hospital's local clock (shifts start at 07:00, 15:00
//! and 23:00 "UTC"), which is what the feature extractor's hour-of-day features assume.
//!
//! Same scenario (seed included) in, byte-identical files out (on one platform: the generator
//! uses `f64::ln`/`exp`/`cos`, whose last bits may in principle differ between libms).

#![warn(missing_docs, unreachable_pub)]

mod generate;
pub mod published;
pub mod scenario;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use medfl_accesslog::explained::Explained;
use medfl_accesslog::statistics::{LogStatistics, statistics};
use medfl_accesslog::{AccessEvent, AttackKind, FormatError, Label};

pub use generate::{generate_hospital, generate_hospital_with_context, opt_out_patients};
pub use scenario::{
    AttackConfig, ConsentConfig, ExceptionConfig, HospitalConfig, Scenario, ScenarioError,
};

/// Why writing a consortium failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A file could not be created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An event could not be encoded.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The error.
        source: FormatError,
    },
    /// The context feeds could not be written.
    #[error(transparent)]
    Context(medfl_accesslog::context::ContextError),
}

/// What was generated for one hospital (for tables and sanity checks).
#[derive(Clone, Debug, PartialEq)]
pub struct HospitalSummary {
    /// The hospital's name (and output directory).
    pub name: String,
    /// Staff accounts.
    pub staff: u32,
    /// Patients (admissions).
    pub patients: u32,
    /// Simulated days.
    pub days: u32,
    /// Events generated.
    pub events: usize,
    /// Attack events per kind, in [`AttackKind::ALL`] order.
    pub attack_events: [usize; AttackKind::ALL.len()],
    /// What the hospital's records explain of its normal accesses.
    pub normal_explained: Explained,
    /// The same of its attack accesses.
    pub attack_explained: Explained,
    /// The figures of its normal accesses, to hold against real logs' (`None` without any).
    pub normal_statistics: Option<LogStatistics>,
}

impl HospitalSummary {
    /// Summarises a generated hospital: its `events` and their `labels`, one each.
    pub fn new(
        scenario: &Scenario,
        index: usize,
        events: &[AccessEvent],
        labels: &[Label],
    ) -> Option<HospitalSummary> {
        let h = scenario.hospitals.get(index)?;
        let mut attack_events = [0; AttackKind::ALL.len()];
        let (mut normal_explained, mut attack_explained) =
            (Explained::default(), Explained::default());
        for (e, l) in events.iter().zip(labels) {
            match l.attack {
                None => normal_explained.add(e),
                Some(k) => {
                    attack_explained.add(e);
                    if let Some(i) = AttackKind::ALL.iter().position(|x| *x == k) {
                        attack_events[i] += 1;
                    }
                }
            }
        }
        let normal_statistics = statistics(
            events
                .iter()
                .zip(labels)
                .filter(|(_, l)| l.attack.is_none())
                .map(|(e, _)| e),
        );
        Some(HospitalSummary {
            name: h.name.clone(),
            staff: h.staff,
            patients: h.patients,
            days: scenario.days,
            events: labels.len(),
            attack_events,
            normal_explained,
            attack_explained,
            normal_statistics,
        })
    }
}

/// The files written for one hospital, under `<out_dir>/<hospital name>/`.
pub const EVENTS_FILE: &str = "events.csv";
/// FHIR R4 `AuditEvent` NDJSON of the same events.
pub const AUDIT_FILE: &str = "audit_events.ndjson";
/// Ground truth, kept apart from the events.
pub const LABELS_FILE: &str = "labels.csv";
/// The hospital's context feeds (staff directory, care teams, VIPs, family), from which its
/// events' relation flags are derived.
pub const CONTEXT_DIR: &str = medfl_accesslog::context::DIR;

fn create(path: &Path) -> Result<BufWriter<File>, SimError> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|source| SimError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Generates every hospital and writes `<out_dir>/<name>/{events.csv, audit_events.ndjson,
/// labels.csv, context/}`; returns one summary per hospital.
pub fn write_consortium(
    scenario: &Scenario,
    out_dir: &Path,
) -> Result<Vec<HospitalSummary>, SimError> {
    scenario.validate()?;
    let mut summaries = Vec::with_capacity(scenario.hospitals.len());
    for (i, h) in scenario.hospitals.iter().enumerate() {
        let (events, labels, context) = generate::generate_hospital_with_context(scenario, i)?;
        let dir = out_dir.join(&h.name);
        std::fs::create_dir_all(&dir).map_err(|source| SimError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(EVENTS_FILE);
        medfl_accesslog::csv::write_events(create(&path)?, &events)
            .map_err(|source| SimError::Format { path, source })?;
        let path = dir.join(AUDIT_FILE);
        medfl_accesslog::fhir::write_audit_events(create(&path)?, &events)
            .map_err(|source| SimError::Format { path, source })?;
        let path = dir.join(LABELS_FILE);
        medfl_accesslog::csv::write_labels(create(&path)?, &labels)
            .map_err(|source| SimError::Format { path, source })?;
        context
            .write_dir(&dir.join(CONTEXT_DIR))
            .map_err(SimError::Context)?;
        summaries.extend(HospitalSummary::new(scenario, i, &events, &labels));
    }
    Ok(summaries)
}
