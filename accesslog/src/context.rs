//! The hospital's context feeds: what it knows about its staff and patients apart from the
//! audit trail, and the relation flags derived from it.
//!
//! An EHR's audit feed says who opened which record, when and from where. Whether that user is
//! on the patient's care team, whether the patient is a VIP, and whether user and patient are
//! family are not in it: the hospital derives them from its own records. [`Context`] holds those
//! records and [`Context::relation`] is the one derivation, used by the live monitor for an
//! `AuditEvent` without medfl's extensions, by the readers when a log is loaded with a context,
//! and by the simulator when it writes its logs, so training and the monitor agree.
//!
//! # The context folder
//! Every file is optional; a folder must hold at least one. Each CSV starts with its header.
//!
//! | file | content |
//! |---|---|
//! | `staff.csv` | `user,role,department`: the staff directory (role as in the events CSV) |
//! | `patients.csv` | `patient,department`: the department treating each patient |
//! | `vip.csv` | `patient`: patients flagged VIP (celebrities, staff, public figures) |
//! | `relationships.csv` | `user,patient`: declared family relationships |
//! | `care_team.csv` | `user,patient,start,end`: care assignments; `start`/`end` FHIR instants or empty (open) |
//! | `care_teams.ndjson` | FHIR R4 `CareTeam` resources, one per line (`subject`, `participant[].member`, `period`) |
//! | `encounters.ndjson` | FHIR R4 `Encounter` resources, one per line (`subject`, `participant[].individual`, `period`) |
//! | `appointments.ndjson` | FHIR R4 `Appointment` resources, one per line (`status`, `start`, `end`, `participant[].actor` and `.status`) |
//! | `service_requests.ndjson` | FHIR R4 `ServiceRequest` resources, one per line: consult orders and referrals (`status`, `intent`, `subject`, `requester`, `performer[]`, `occurrencePeriod`, `occurrenceDateTime` or `authoredOn`) |
//!
//! People are matched by id, by one rule in every feed and in `AuditEvent`s: a FHIR `Reference`
//! names a person by the id in its literal `reference` (`Practitioner/<id>`, `Patient/<id>`,
//! relative, absolute or versioned) when it has one, else by its `identifier.value`. Only
//! practitioners are staff: a relative, an organisation or the patient on a care team is left
//! out (and counted, [`Context::n_skipped`]), as is a team for a group.
//!
//! A care assignment holds from its start (inclusive) to its end (exclusive); a participant's
//! own `period` narrows its team's. A `CareTeam` that is `inactive`, `suspended`, `proposed` or
//! `entered-in-error` holds for no one. An `Encounter` that never was (`planned`, `cancelled`,
//! `entered-in-error`, `unknown`) is left out; one without a `period` says nothing; one that is
//! over but has no end counts for a day from its start.
//!
//! An order or referral (`ServiceRequest`) explains its performer's accesses to the patient the
//! way a care assignment does, from its occurrence for three days (or over its
//! `occurrencePeriod`, at most 30 days), never from before it was written (`authoredOn`,
//! required here, taken at the latest instant it can mean: a date at the end of its day): a
//! consulting physician reads the chart because they were asked to.
//! Fabbri and LeFevre (PVLDB 2011, section 5) found consult and order records among the
//! reasons that explain most accesses outside a care team. Only a request in force (`active`,
//! `completed`) that asks (intent `order` or `directive` and their kinds, not `proposal`,
//! `plan`, `option`) explains; a status or intent missing or not in R4 is malformed, whatever
//! the status. The requester must be a reference that says it is a practitioner
//! (`Practitioner/<id>` or `type`), and a performer who is not one (a department, a care
//! team, an untyped identifier) or who shares any id with the requester is left out and
//! counted: an order to oneself,
//! or one nobody can be seen to have placed, would let anyone who can place orders explain
//! their own curiosity.
//!
//! A booked (or arrived, checked-in, fulfilled) `Appointment` explains each attending
//! practitioner's accesses to each attending patient from a day before it starts to a day
//! after it ends (chart preparation and notes; an appointment is held to a day at most).
//! `start` and `end` are instants; a participant needs an R4 status, and one who `declined`
//! is no participant; an actor counts as staff only when typed `Practitioner`. An appointment has no second person who
//! asked for it, so one an insider books for themselves with a patient explains their access:
//! the scheduling system's own audit trail is where that shows.
//!
//! Any malformed line fails the whole load, naming its file and line: a context read in part
//! would mark legitimate care as unexplained, or hide a VIP.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::csv::{csv_error, nonempty, parse_enum, read_csv};
use crate::error::{FormatError, OnError};
use crate::event::{AccessEvent, StaffRole};
use crate::fhir::{Period as FhirPeriod, Reference};
use crate::lines::Lines;
use crate::time::{DAY_MS, format_instant, parse_date, parse_instant};

/// The context folder's name beside a hospital's log (and in its member folder).
pub const DIR: &str = "context";
/// The staff directory file.
pub const STAFF_FILE: &str = "staff.csv";
/// The patients' departments file.
pub const PATIENTS_FILE: &str = "patients.csv";
/// The VIP list.
pub const VIP_FILE: &str = "vip.csv";
/// Declared family relationships.
pub const RELATIONSHIPS_FILE: &str = "relationships.csv";
/// Care assignments as CSV.
pub const CARE_TEAM_CSV: &str = "care_team.csv";
/// Care teams as FHIR `CareTeam` NDJSON.
pub const CARE_TEAMS_NDJSON: &str = "care_teams.ndjson";
/// Encounters as FHIR `Encounter` NDJSON.
pub const ENCOUNTERS_NDJSON: &str = "encounters.ndjson";
/// Consult orders and referrals as FHIR `ServiceRequest` NDJSON.
pub const SERVICE_REQUESTS_NDJSON: &str = "service_requests.ndjson";
/// Appointments as FHIR `Appointment` NDJSON.
pub const APPOINTMENTS_NDJSON: &str = "appointments.ndjson";

/// Every file a context folder may hold.
pub const FILES: [&str; 9] = [
    STAFF_FILE,
    PATIENTS_FILE,
    VIP_FILE,
    RELATIONSHIPS_FILE,
    CARE_TEAM_CSV,
    CARE_TEAMS_NDJSON,
    ENCOUNTERS_NDJSON,
    SERVICE_REQUESTS_NDJSON,
    APPOINTMENTS_NDJSON,
];

/// A time span in milliseconds since the epoch: `start_ms` inclusive, `end_ms` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First instant covered.
    pub start_ms: u64,
    /// First instant no longer covered.
    pub end_ms: u64,
}

impl Span {
    /// All time.
    pub const ALWAYS: Span = Span {
        start_ms: 0,
        end_ms: u64::MAX,
    };

    /// Whether `t_ms` falls in the span.
    pub fn contains(self, t_ms: u64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }

    /// The overlap of two spans (empty spans are kept empty).
    fn within(self, outer: Span) -> Span {
        Span {
            start_ms: self.start_ms.max(outer.start_ms),
            end_ms: self.end_ms.min(outer.end_ms),
        }
    }
}

/// A staff member as the directory lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffEntry {
    /// Their role.
    pub role: StaffRole,
    /// Their department.
    pub department: String,
}

/// The three relations between a user and a patient that an access is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Relation {
    /// The user is on the patient's care team at that time.
    pub care_team: bool,
    /// The patient is flagged VIP.
    pub vip: bool,
    /// User and patient are declared family.
    pub family_link: bool,
}

#[derive(Clone, Debug, Default)]
struct PatientContext {
    department: Option<String>,
    vip: bool,
    /// Care assignments by user.
    care: HashMap<String, Vec<Span>>,
    /// Orders and referrals by performer, with who asked: kept apart from care so that they
    /// are written back as what they are.
    orders: HashMap<String, Vec<Span>>,
    /// The requester of each order in `orders` (same keys, same order).
    requesters: HashMap<String, Vec<String>>,
    /// Users declared family of this patient.
    family: HashSet<String>,
}

/// What the hospital knows about its staff and patients (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Context {
    staff: HashMap<String, StaffEntry>,
    patients: HashMap<String, PatientContext>,
    /// Resources and participants read but naming no staff-patient relation (a group's care
    /// team, a family member on a team, an encounter without a time).
    skipped: usize,
    /// Whether patients' departments were given (so that a patient without one is unknown).
    lists_patients: bool,
    /// Whether care assignments were given (so that no assignment means no care).
    lists_care: bool,
}

/// Why a context could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A file is malformed.
    #[error("{}: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        source: FormatError,
    },
    /// The folder holds none of the context files.
    #[error("{} holds none of the context files ({})", dir.display(), FILES.join(", "))]
    Empty {
        /// The folder.
        dir: PathBuf,
    },
}

impl Context {
    /// An empty context: no staff, no patients, no relations.
    pub fn new() -> Context {
        Context::default()
    }

    /// Lists a staff member; a second listing of the same user replaces the first.
    pub fn add_staff(&mut self, user: &str, role: StaffRole, department: &str) {
        self.staff.insert(
            user.to_owned(),
            StaffEntry {
                role,
                department: department.to_owned(),
            },
        );
    }

    fn patient_mut(&mut self, patient: &str) -> &mut PatientContext {
        self.patients.entry(patient.to_owned()).or_default()
    }

    /// Records the department treating `patient`.
    pub fn set_patient_department(&mut self, patient: &str, department: &str) {
        self.lists_patients = true;
        self.patient_mut(patient).department = Some(department.to_owned());
    }

    /// Flags `patient` VIP.
    pub fn add_vip(&mut self, patient: &str) {
        self.patient_mut(patient).vip = true;
    }

    /// Declares `user` family of `patient`.
    pub fn add_family(&mut self, user: &str, patient: &str) {
        self.patient_mut(patient).family.insert(user.to_owned());
    }

    /// Assigns `user` to `patient`'s care for `span`.
    pub fn add_care(&mut self, user: &str, patient: &str, span: Span) {
        self.lists_care = true;
        if span.start_ms < span.end_ms {
            self.patient_mut(patient)
                .care
                .entry(user.to_owned())
                .or_default()
                .push(span);
        }
    }

    /// Records an order or referral for `patient` from `requester` to `user`, explaining
    /// `user`'s accesses during `span` as care does. An order to oneself explains nothing.
    pub fn add_order(&mut self, requester: &str, user: &str, patient: &str, span: Span) {
        self.lists_care = true;
        if requester == user {
            self.skipped += 1;
            return;
        }
        if span.start_ms < span.end_ms {
            let p = self.patient_mut(patient);
            p.orders.entry(user.to_owned()).or_default().push(span);
            p.requesters
                .entry(user.to_owned())
                .or_default()
                .push(requester.to_owned());
        }
    }

    /// The directory's entry for `user`, if listed.
    pub fn staff(&self, user: &str) -> Option<&StaffEntry> {
        self.staff.get(user)
    }

    /// The department treating `patient`, if known.
    pub fn patient_department(&self, patient: &str) -> Option<&str> {
        self.patients.get(patient)?.department.as_deref()
    }

    /// How `user` relates to `patient` at `time_ms`: the one derivation of the flags.
    pub fn relation(&self, user: &str, patient: &str, time_ms: u64) -> Relation {
        let Some(p) = self.patients.get(patient) else {
            return Relation::default();
        };
        let holds = |by_user: &HashMap<String, Vec<Span>>| {
            by_user
                .get(user)
                .is_some_and(|spans| spans.iter().any(|s| s.contains(time_ms)))
        };
        Relation {
            care_team: holds(&p.care) || holds(&p.orders),
            vip: p.vip,
            family_link: p.family.contains(user),
        }
    }

    /// Sets `event`'s relation flags from the context (replacing what it carried).
    pub fn apply(&self, event: &mut AccessEvent) {
        let r = self.relation(&event.user, &event.patient, event.time_ms);
        event.care_team = r.care_team;
        event.vip = r.vip;
        event.family_link = r.family_link;
    }

    /// Users listed in the staff directory.
    pub fn n_staff(&self) -> usize {
        self.staff.len()
    }

    /// Patients the context knows anything about.
    pub fn n_patients(&self) -> usize {
        self.patients.len()
    }

    /// Care-feed resources and participants that named no staff-patient relation and were
    /// left out (a care team of a group, a relative on a team, an encounter without a time).
    pub fn n_skipped(&self) -> usize {
        self.skipped
    }

    /// Whether the context gives care assignments at all (without them, it says nothing about
    /// care, and an event's own care flag stands).
    pub fn lists_care(&self) -> bool {
        self.lists_care
    }

    /// Whether `user` is a member of staff: `None` when no staff directory was given.
    pub fn knows_user(&self, user: &str) -> Option<bool> {
        (!self.staff.is_empty()).then(|| self.staff.contains_key(user))
    }

    /// Whether `patient` is a patient of the hospital: `None` when no patients' departments
    /// were given.
    pub fn knows_patient(&self, patient: &str) -> Option<bool> {
        self.lists_patients.then(|| {
            self.patients
                .get(patient)
                .is_some_and(|p| p.department.is_some())
        })
    }

    /// Loads a context folder (see the module documentation for its files).
    ///
    /// # Errors
    /// [`ContextError`] naming the file (and line) that cannot be read, or
    /// [`ContextError::Empty`] if the folder holds none of the files.
    pub fn load_dir(dir: &Path) -> Result<Context, ContextError> {
        let mut ctx = Context::new();
        let mut found = 0;
        for name in FILES {
            let path = dir.join(name);
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ContextError::Io { path, source }),
            };
            found += 1;
            let r = std::io::BufReader::new(file);
            ctx.read(name, r)
                .map_err(|source| ContextError::Format { path, source })?;
        }
        if found == 0 {
            return Err(ContextError::Empty {
                dir: dir.to_owned(),
            });
        }
        Ok(ctx)
    }

    /// Reads one context file, named as in the folder (`staff.csv`, `care_teams.ndjson`, ...),
    /// into this context.
    ///
    /// # Errors
    /// The first malformed line, or [`FormatError::BadHeader`] for an unknown file name.
    pub fn read<R: BufRead>(&mut self, name: &str, r: R) -> Result<(), FormatError> {
        match name {
            STAFF_FILE => {
                for (user, role, dept) in read_rows(r, &["user", "role", "department"], |f| {
                    Ok((
                        nonempty("user", &f[0])?,
                        parse_enum("role", &f[1], StaffRole::parse)?,
                        nonempty("department", &f[2])?,
                    ))
                })? {
                    self.add_staff(&user, role, &dept);
                }
            }
            PATIENTS_FILE => {
                for (p, dept) in read_rows(r, &["patient", "department"], |f| {
                    Ok((nonempty("patient", &f[0])?, nonempty("department", &f[1])?))
                })? {
                    self.set_patient_department(&p, &dept);
                }
            }
            VIP_FILE => {
                for p in read_rows(r, &["patient"], |f| nonempty("patient", &f[0]))? {
                    self.add_vip(&p);
                }
            }
            RELATIONSHIPS_FILE => {
                for (u, p) in read_rows(r, &["user", "patient"], |f| {
                    Ok((nonempty("user", &f[0])?, nonempty("patient", &f[1])?))
                })? {
                    self.add_family(&u, &p);
                }
            }
            CARE_TEAM_CSV => {
                self.lists_care = true;
                for (u, p, span) in read_rows(r, &["user", "patient", "start", "end"], |f| {
                    let span = span_of(
                        Some(f[2].as_str()).filter(|s| !s.is_empty()),
                        Some(f[3].as_str()).filter(|s| !s.is_empty()),
                    )?;
                    Ok((nonempty("user", &f[0])?, nonempty("patient", &f[1])?, span))
                })? {
                    self.add_care(&u, &p, span);
                }
            }
            CARE_TEAMS_NDJSON => {
                self.lists_care = true;
                read_ndjson(r, |line| self.add_care_team(line))?;
            }
            ENCOUNTERS_NDJSON => {
                self.lists_care = true;
                read_ndjson(r, |line| self.add_encounter(line))?;
            }
            SERVICE_REQUESTS_NDJSON => {
                self.lists_care = true;
                read_ndjson(r, |line| self.add_service_request(line))?;
            }
            APPOINTMENTS_NDJSON => {
                self.lists_care = true;
                read_ndjson(r, |line| self.add_appointment(line))?;
            }
            other => {
                return Err(FormatError::BadHeader(format!(
                    "{other:?} is not a context file ({})",
                    FILES.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn add_care_team(&mut self, line: &str) -> Result<(), String> {
        let team: CareTeam = fhir_resource(line)?;
        if team_not_holding(team.status.as_deref()) {
            return Ok(());
        }
        // A team for a group or with no subject assigns no one to a patient's care.
        let Some(patient) = subject_patient(team.subject.as_ref()) else {
            self.skipped += 1;
            return Ok(());
        };
        let span = fhir_span(team.period.as_ref())?;
        for part in &team.participant {
            let own = fhir_span(part.period.as_ref())?;
            match practitioner(part.member.as_ref()) {
                Some(user) => self.add_care(user, &patient, own.within(span)),
                // A family member, an organisation or the patient on the team is no staff.
                None => self.skipped += 1,
            }
        }
        Ok(())
    }

    fn add_appointment(&mut self, line: &str) -> Result<(), String> {
        let appt: Appointment = fhir_resource(line)?;
        // Every field is checked before the appointment is judged, so a malformed line is
        // refused whatever its status. `start` and `end` are R4 instants, not dates.
        let holds = appointment_holds(appt.status.as_deref())?;
        let instant = |t: &Option<String>, what: &str| {
            t.as_deref()
                .map(|t| parse_instant(t).ok_or_else(|| format!("{what} {t:?} is not an instant")))
                .transpose()
        };
        let (start, end) = (instant(&appt.start, "start")?, instant(&appt.end, "end")?);
        let mut attending = Vec::with_capacity(appt.participant.len());
        for p in &appt.participant {
            attending.push(participant_attends(p.status.as_deref())?);
        }
        if !holds {
            return Ok(());
        }
        let (Some(start), Some(end)) = (start, end) else {
            // R4 lets only proposed or cancelled appointments go without times (app-3).
            return Err("a booked appointment without start and end".into());
        };
        if end < start {
            return Err("appointment ends before it starts".into());
        }
        // The chart is read the day before (preparation) and the day after (notes); an
        // appointment longer than a day is held to one, so a mistyped end explains no year.
        let span = Span {
            start_ms: start.saturating_sub(APPOINTMENT_MARGIN_MS),
            end_ms: end
                .min(start.saturating_add(DAY_MS))
                .saturating_add(APPOINTMENT_MARGIN_MS),
        };
        let actors = appt
            .participant
            .iter()
            .zip(attending)
            .filter(|(_, attends)| *attends)
            .filter_map(|(p, _)| p.actor.as_ref());
        let (mut patients, mut staff) = (Vec::new(), Vec::new());
        for actor in actors {
            if actor.declared_type() == Some("Patient") {
                match subject_patient(Some(actor)) {
                    Some(p) => patients.push(p),
                    None => self.skipped += 1,
                }
            } else {
                // Actors of every kind meet here: only one that says it is a practitioner is
                // staff (an untyped identifier could be anyone's); a location, a device or a
                // related person explains nothing.
                match typed_practitioner(Some(actor)) {
                    Some(user) => staff.push(user),
                    None => self.skipped += 1,
                }
            }
        }
        if patients.is_empty() {
            self.skipped += staff.len().max(1);
            return Ok(());
        }
        for user in staff {
            for patient in &patients {
                self.add_care(user, patient, span);
            }
        }
        Ok(())
    }

    fn add_encounter(&mut self, line: &str) -> Result<(), String> {
        let enc: Encounter = fhir_resource(line)?;
        if encounter_never_was(enc.status.as_deref()) {
            return Ok(());
        }
        let (Some(patient), Some(period)) = (subject_patient(enc.subject.as_ref()), &enc.period)
        else {
            // An encounter with no patient or no time says nothing about a care relation.
            self.skipped += 1;
            return Ok(());
        };
        let mut span = fhir_span(Some(period))?;
        let ongoing = matches!(
            enc.status.as_deref(),
            Some("in-progress" | "arrived" | "triaged" | "onleave")
        );
        if period.end.is_none() && !ongoing {
            // Finished (or otherwise over) without an end: care for a day, not for ever.
            span.end_ms = span.start_ms.saturating_add(OPEN_FINISHED_ENCOUNTER_MS);
        }
        for part in &enc.participant {
            let own = fhir_span(part.period.as_ref())?;
            match practitioner(part.individual.as_ref()) {
                Some(user) => self.add_care(user, &patient, own.within(span)),
                None => self.skipped += 1,
            }
        }
        Ok(())
    }

    fn add_service_request(&mut self, line: &str) -> Result<(), String> {
        let req: ServiceRequest = fhir_resource(line)?;
        // Every field is checked before the request is judged, so a malformed line is
        // refused whatever its status.
        let in_force = request_in_force(req.status.as_deref())?;
        let asks = request_asks(req.intent.as_deref())?;
        let span = order_span(&req)?;
        if !in_force || !asks {
            return Ok(());
        }
        let Some(patient) = subject_patient(req.subject.as_ref()) else {
            self.skipped += 1;
            return Ok(());
        };
        // Who asked must be a practitioner we can name: an order nobody can be seen to have
        // placed could be anyone's order to themselves.
        let (Some(requester_ref), Some(requester)) = (
            req.requester.as_ref(),
            typed_practitioner(req.requester.as_ref()),
        ) else {
            self.skipped += req.performer.len().max(1);
            return Ok(());
        };
        let Some(span) = span.filter(|s| s.start_ms < s.end_ms) else {
            // No time, or none after it was written: it explains nothing.
            self.skipped += 1;
            return Ok(());
        };
        for performer in &req.performer {
            // An order to oneself would let anyone who can place orders explain their own
            // curiosity: any id the two references share makes them one person.
            let to_self = performer
                .all_ids()
                .any(|id| requester_ref.all_ids().any(|r| r == id));
            match typed_practitioner(Some(performer)) {
                Some(user) if !to_self => self.add_order(requester, user, &patient, span),
                _ => self.skipped += 1,
            }
        }
        Ok(())
    }

    /// Writes the context as a folder [`Context::load_dir`] reads back (care assignments as
    /// `care_teams.ndjson`, one `CareTeam` per patient; orders as `service_requests.ndjson`,
    /// one `ServiceRequest` per order), for the simulator's hospitals.
    ///
    /// # Errors
    /// The first file that cannot be written.
    pub fn write_dir(&self, dir: &Path) -> Result<(), ContextError> {
        std::fs::create_dir_all(dir).map_err(|source| ContextError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let write = |name: &str, f: &dyn Fn(&mut dyn Write) -> Result<(), FormatError>| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).map_err(|source| ContextError::Io {
                path: path.clone(),
                source,
            })?;
            let mut w = std::io::BufWriter::new(file);
            f(&mut w)
                .and_then(|()| w.flush().map_err(FormatError::Io))
                .map_err(|source| ContextError::Format { path, source })
        };
        // Sorted, so that the same context always writes the same bytes.
        let mut users: Vec<(&String, &StaffEntry)> = self.staff.iter().collect();
        users.sort_unstable_by_key(|(u, _)| *u);
        let mut patients: Vec<(&String, &PatientContext)> = self.patients.iter().collect();
        patients.sort_unstable_by_key(|(p, _)| *p);
        write(STAFF_FILE, &|w| {
            let mut out = csv::Writer::from_writer(w);
            out.write_record(["user", "role", "department"])
                .map_err(csv_error)?;
            for (u, s) in &users {
                out.write_record([u.as_str(), s.role.as_str(), s.department.as_str()])
                    .map_err(csv_error)?;
            }
            out.flush().map_err(FormatError::Io)
        })?;
        write(PATIENTS_FILE, &|w| {
            let mut out = csv::Writer::from_writer(w);
            out.write_record(["patient", "department"])
                .map_err(csv_error)?;
            for (p, c) in &patients {
                if let Some(d) = &c.department {
                    out.write_record([p.as_str(), d.as_str()])
                        .map_err(csv_error)?;
                }
            }
            out.flush().map_err(FormatError::Io)
        })?;
        write(VIP_FILE, &|w| {
            let mut out = csv::Writer::from_writer(w);
            out.write_record(["patient"]).map_err(csv_error)?;
            for (p, _) in patients.iter().filter(|(_, c)| c.vip) {
                out.write_record([p.as_str()]).map_err(csv_error)?;
            }
            out.flush().map_err(FormatError::Io)
        })?;
        write(RELATIONSHIPS_FILE, &|w| {
            let mut out = csv::Writer::from_writer(w);
            out.write_record(["user", "patient"]).map_err(csv_error)?;
            for (p, c) in &patients {
                let mut family: Vec<&String> = c.family.iter().collect();
                family.sort_unstable();
                for u in family {
                    out.write_record([u.as_str(), p.as_str()])
                        .map_err(csv_error)?;
                }
            }
            out.flush().map_err(FormatError::Io)
        })?;
        write(CARE_TEAMS_NDJSON, &|w| {
            for (p, c) in patients.iter().filter(|(_, c)| !c.care.is_empty()) {
                let mut members: Vec<(&String, &Vec<Span>)> = c.care.iter().collect();
                members.sort_unstable_by_key(|(u, _)| *u);
                let participant = members
                    .into_iter()
                    .flat_map(|(u, spans)| spans.iter().map(move |s| (u, *s)))
                    .map(|(u, s)| Participant {
                        member: Some(Reference::by_identifier(u)),
                        individual: None,
                        period: FhirPeriod::of(s),
                    })
                    .collect();
                let team = CareTeam {
                    resource_type: "CareTeam".into(),
                    status: Some("active".into()),
                    subject: Some(Reference::to("Patient", p)),
                    period: None,
                    participant,
                };
                serde_json::to_writer(&mut *w, &team)
                    .map_err(|e| FormatError::Io(std::io::Error::other(e)))?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        if patients.iter().any(|(_, c)| !c.orders.is_empty()) {
            write(SERVICE_REQUESTS_NDJSON, &|w| {
                for (p, c) in &patients {
                    let mut performers: Vec<(&String, &Vec<Span>)> = c.orders.iter().collect();
                    performers.sort_unstable_by_key(|(u, _)| *u);
                    for (u, spans) in performers {
                        let requesters = c.requesters.get(u).map_or(&[][..], Vec::as_slice);
                        for (&span, requester) in spans.iter().zip(requesters) {
                            let req = ServiceRequest {
                                resource_type: "ServiceRequest".into(),
                                status: Some("active".into()),
                                intent: Some("order".into()),
                                subject: Some(Reference::to("Patient", p)),
                                requester: Some(Reference::to("Practitioner", requester)),
                                performer: vec![Reference::to("Practitioner", u)],
                                occurrence_period: Some(FhirPeriod::of(span).unwrap_or_default()),
                                occurrence_date_time: None,
                                authored_on: Some(format_instant(span.start_ms)),
                            };
                            serde_json::to_writer(&mut *w, &req)
                                .map_err(|e| FormatError::Io(std::io::Error::other(e)))?;
                            w.write_all(b"\n")?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Whether a `CareTeam` status says the team does not hold: it never did, or it is no longer
/// (or not yet) caring for the patient.
fn team_not_holding(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("entered-in-error" | "proposed" | "inactive" | "suspended")
    )
}

/// Whether an `Encounter` status says it never happened.
fn encounter_never_was(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("entered-in-error" | "cancelled" | "planned" | "unknown")
    )
}

/// Whether a `ServiceRequest`'s status puts it in force (`active`, `completed`), as opposed
/// to not yet, suspended, withdrawn, never, or not known. The status is required (1..1 in R4):
/// a request without one, or with one R4 does not define, is malformed.
fn request_in_force(status: Option<&str>) -> Result<bool, String> {
    match status {
        Some("active" | "completed") => Ok(true),
        Some("draft" | "on-hold" | "revoked" | "entered-in-error" | "unknown") => Ok(false),
        Some(other) => Err(format!("status {other:?} is not an R4 request status")),
        None => Err("no status (required in R4)".into()),
    }
}

/// When an order explains its performer's accesses: from its occurrence (the period's start,
/// the occurrence time, else when it was written) but never before it was written
/// (`authoredOn`, required here), since an order entered after the fact must not explain what
/// came before it; until the period's end, else for [`ORDER_MS`]; and for at most
/// [`ORDER_MAX_MS`], since an order left `active` for years would otherwise explain for years.
/// `None` when it does not say when it was written.
fn order_span(req: &ServiceRequest) -> Result<Option<Span>, String> {
    // The latest instant `authoredOn` can mean (a date: the end of its day), so that an order
    // written in the evening explains nothing of its morning.
    let authored = req
        .authored_on
        .as_deref()
        .map(|a| bound(a, true))
        .transpose()?;
    let (start, end) = match (&req.occurrence_period, &req.occurrence_date_time) {
        (Some(period), _) => {
            let span = span_of(period.start.as_deref(), period.end.as_deref())
                .map_err(|e| format!("occurrencePeriod: {e}"))?;
            (
                period.start.as_ref().map(|_| span.start_ms),
                period.end.as_ref().map(|_| span.end_ms),
            )
        }
        (None, Some(at)) => (Some(bound(at, false)?), None),
        (None, None) => (None, None),
    };
    // An order that does not say when it was written cannot be placed before what it
    // explains: it explains nothing.
    let Some(authored) = authored else {
        return Ok(None);
    };
    let start = start.unwrap_or(authored).max(authored);
    let end = end
        .unwrap_or(start.saturating_add(ORDER_MS))
        .min(start.saturating_add(ORDER_MAX_MS));
    // An order whose whole period came before it was written is empty.
    Ok(Some(Span {
        start_ms: start,
        end_ms: end.max(start),
    }))
}

/// Whether a `ServiceRequest`'s intent asks a performer to act (an order or a directive), as
/// opposed to suggesting it (`proposal`, `plan`, `option`). The intent is required (1..1 in
/// R4): a request without one, or with one R4 does not define, is malformed.
fn request_asks(intent: Option<&str>) -> Result<bool, String> {
    match intent {
        Some(
            "order" | "original-order" | "reflex-order" | "filler-order" | "instance-order"
            | "directive",
        ) => Ok(true),
        Some("proposal" | "plan" | "option") => Ok(false),
        Some(other) => Err(format!("intent {other:?} is not an R4 request intent")),
        None => Err("no intent (required in R4)".into()),
    }
}

/// How long an order or referral without an end explains its performer's accesses: a consult is
/// usually answered within one to three days of the request.
const ORDER_MS: u64 = 3 * DAY_MS;

/// Whether an `Appointment`'s status says it holds (`booked`, `arrived`, `fulfilled`,
/// `checked-in`), as opposed to not yet agreed, called off, missed or never. The status is
/// required (1..1 in R4): missing or not an R4 code is malformed.
fn appointment_holds(status: Option<&str>) -> Result<bool, String> {
    match status {
        Some("booked" | "arrived" | "fulfilled" | "checked-in") => Ok(true),
        Some("proposed" | "pending" | "cancelled" | "noshow" | "entered-in-error" | "waitlist") => {
            Ok(false)
        }
        Some(other) => Err(format!("status {other:?} is not an R4 appointment status")),
        None => Err("no status (required in R4)".into()),
    }
}

/// Whether an `Appointment.participant` takes part: all but one who `declined`. The status is
/// required (1..1 in R4): missing or not an R4 code is malformed.
fn participant_attends(status: Option<&str>) -> Result<bool, String> {
    match status {
        Some("accepted" | "tentative" | "needs-action") => Ok(true),
        Some("declined") => Ok(false),
        Some(other) => Err(format!(
            "participant status {other:?} is not an R4 participation status"
        )),
        None => Err("a participant without a status (required in R4)".into()),
    }
}

/// How long before and after an appointment its practitioners' accesses are explained.
const APPOINTMENT_MARGIN_MS: u64 = DAY_MS;

/// The longest an order explains, whatever its period says: a referral's episode of care
/// rarely runs past a month, and a longer one should be a care team.
const ORDER_MAX_MS: u64 = 30 * DAY_MS;

/// How long a finished encounter without an end counts as care, from its start.
const OPEN_FINISHED_ENCOUNTER_MS: u64 = DAY_MS;

/// The user a participant names: a practitioner, by reference or by identifier (a reference
/// typed as anything else, a patient or an organisation, names no user).
fn practitioner(r: Option<&Reference>) -> Option<&str> {
    let r = r?;
    if r.declared_type().is_some_and(|t| t != "Practitioner") {
        return None;
    }
    r.id_of(&["Practitioner"])
}

/// A practitioner named by a reference that says it is one (a literal `Practitioner/<id>` or
/// `Reference.type`): where several kinds of actor meet, an untyped identifier could be
/// anyone's.
fn typed_practitioner(r: Option<&Reference>) -> Option<&str> {
    let r = r?;
    (r.declared_type() == Some("Practitioner"))
        .then(|| practitioner(Some(r)))
        .flatten()
}

fn subject_patient(subject: Option<&Reference>) -> Option<String> {
    let s = subject?;
    if s.declared_type().is_some_and(|t| t != "Patient") {
        return None;
    }
    s.id_of(&["Patient"]).map(str::to_owned)
}

/// A FHIR `dateTime` bound as milliseconds: a full instant, or a date, year-month or year
/// (its first instant, UTC; as an end, the first instant after it, so it covers its whole
/// day, month or year).
fn bound(s: &str, end: bool) -> Result<u64, String> {
    if let Some(t) = parse_instant(s) {
        return Ok(t);
    }
    let invalid = || format!("{s:?} is not a FHIR instant or date");
    if let Some(d) = parse_date(s) {
        return Ok(if end { d.saturating_add(DAY_MS) } else { d });
    }
    // `YYYY-MM` or `YYYY`: the first day of the month or year, or of the next one.
    let (year, month) = match s.split_once('-') {
        Some((y, m)) if y.len() == 4 && m.len() == 2 => (y, Some(m)),
        None if s.len() == 4 => (s, None),
        _ => return Err(invalid()),
    };
    let year: u16 = year.parse().map_err(|_| invalid())?;
    let month: Option<u8> = month.map(str::parse).transpose().map_err(|_| invalid())?;
    let (y, m) = match (month, end) {
        (Some(m), false) => (year, m),
        (Some(12), true) => (year.saturating_add(1), 1),
        (Some(m), true) => (year, m.saturating_add(1)),
        (None, false) => (year, 1),
        (None, true) => (year.saturating_add(1), 1),
    };
    parse_date(&format!("{y:04}-{m:02}-01")).ok_or_else(invalid)
}

fn span_of(start: Option<&str>, end: Option<&str>) -> Result<Span, String> {
    let span = Span {
        start_ms: start.map(|s| bound(s, false)).transpose()?.unwrap_or(0),
        end_ms: end.map(|s| bound(s, true)).transpose()?.unwrap_or(u64::MAX),
    };
    if span.end_ms < span.start_ms {
        return Err("period ends before it starts".into());
    }
    Ok(span)
}

fn fhir_span(p: Option<&FhirPeriod>) -> Result<Span, String> {
    match p {
        None => Ok(Span::ALWAYS),
        Some(p) => span_of(p.start.as_deref(), p.end.as_deref()),
    }
}

/// Reads a context CSV with exactly `columns`, every row or none.
fn read_rows<R: BufRead, T>(
    r: R,
    columns: &[&str],
    parse: impl Fn(&[String]) -> Result<T, String>,
) -> Result<Vec<T>, FormatError> {
    let n = columns.len();
    let checked = |f: &[String]| {
        if f.len() != n {
            return Err(format!("expected {n} columns, found {}", f.len()));
        }
        parse(f)
    };
    Ok(read_csv(r, columns, OnError::Reject, checked)?.records)
}

/// Reads NDJSON line by line (blank lines ignored); the first bad line stops it.
fn read_ndjson<R: BufRead>(
    r: R,
    mut each: impl FnMut(&str) -> Result<(), String>,
) -> Result<(), FormatError> {
    let mut lines = Lines::new(r);
    while let Some((line, text)) = lines.next_line()? {
        let text = text.map_err(FormatError::Row)?;
        if !text.trim().is_empty() {
            each(text).map_err(|message| FormatError::Row(crate::RowError { line, message }))?;
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CareTeam {
    resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default)]
    subject: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<FhirPeriod>,
    #[serde(default)]
    participant: Vec<Participant>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Encounter {
    resource_type: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    subject: Option<Reference>,
    #[serde(default)]
    period: Option<FhirPeriod>,
    #[serde(default)]
    participant: Vec<Participant>,
}

/// A FHIR resource a feed holds one of per line.
trait FhirResource: serde::de::DeserializeOwned {
    /// Its `resourceType`.
    const TYPE: &'static str;
    /// The `resourceType` the line said.
    fn resource_type(&self) -> &str;
}

/// One NDJSON line read as a `T`: JSON of the right shape and of `T`'s `resourceType`.
fn fhir_resource<T: FhirResource>(line: &str) -> Result<T, String> {
    let r: T = serde_json::from_str(line).map_err(|e| format!("not a {} as JSON: {e}", T::TYPE))?;
    if r.resource_type() != T::TYPE {
        return Err(format!(
            "resourceType is {:?}, expected {:?}",
            r.resource_type(),
            T::TYPE
        ));
    }
    Ok(r)
}

macro_rules! fhir_resource {
    ($($ty:ident),*) => {$(
        impl FhirResource for $ty {
            const TYPE: &'static str = stringify!($ty);
            fn resource_type(&self) -> &str {
                &self.resource_type
            }
        }
    )*};
}
fhir_resource!(CareTeam, Encounter, Appointment, ServiceRequest);

/// A FHIR R4 `Appointment` (section 12.10 of the R4 specification), the elements medfl reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Appointment {
    resource_type: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    participant: Vec<AppointmentParticipant>,
}

/// An `Appointment.participant`: who (`actor`) and whether they take part (`status`).
#[derive(Deserialize)]
struct AppointmentParticipant {
    #[serde(default)]
    actor: Option<Reference>,
    #[serde(default)]
    status: Option<String>,
}

/// A FHIR R4 `ServiceRequest` (section 12.3 of the R4 specification), the elements medfl reads.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceRequest {
    resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intent: Option<String>,
    #[serde(default)]
    subject: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requester: Option<Reference>,
    #[serde(default)]
    performer: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    occurrence_period: Option<FhirPeriod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    occurrence_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authored_on: Option<String>,
}

/// A `CareTeam.participant` (`member`) or an `Encounter.participant` (`individual`).
#[derive(Serialize, Deserialize)]
struct Participant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    individual: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<FhirPeriod>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn care_assignments_hold_within_their_periods_only() {
        let mut ctx = Context::new();
        let teams = concat!(
            r#"{"resourceType":"CareTeam","status":"active","subject":{"reference":"Patient/p1","identifier":{"value":"MRN-1"}},"#,
            r#""period":{"start":"2026-01-01","end":"2026-01-02"},"participant":["#,
            r#"{"member":{"reference":"https://ehr.example/fhir/Practitioner/u1/_history/3"}},"#,
            r#"{"member":{"identifier":{"value":"u2"}},"period":{"start":"2026-01-01T12:00:00Z"}}]}"#,
            "\n\n",
            r#"{"resourceType":"CareTeam","status":"entered-in-error","subject":{"reference":"Patient/p1"},"participant":[{"member":{"identifier":{"value":"u3"}}}]}"#,
            "\n",
            r#"{"resourceType":"CareTeam","status":"inactive","subject":{"reference":"Patient/p1"},"participant":[{"member":{"identifier":{"value":"u5"}}}]}"#,
            "\n",
            r#"{"resourceType":"CareTeam","subject":{"reference":"Patient/p1"},"participant":[{"member":{"reference":"RelatedPerson/r1"}},{"member":{"identifier":{"value":"u6"},"type":"Organization"}},{"member":{"identifier":{"value":"u7"}}}]}"#,
            "\n",
            r#"{"resourceType":"CareTeam","subject":{"reference":"Group/g1"},"participant":[{"member":{"identifier":{"value":"u8"}}}]}"#,
            "\n"
        );
        ctx.read(CARE_TEAMS_NDJSON, teams.as_bytes()).unwrap();
        let enc = concat!(
            r#"{"resourceType":"Encounter","status":"finished","subject":{"reference":"Patient/p2"},"period":{"start":"2026-01-01T08:00:00Z","end":"2026-01-01T09:00:00Z"},"participant":[{"individual":{"reference":"Practitioner/u4"}}]}"#,
            "\n",
            r#"{"resourceType":"Encounter","status":"finished","subject":{"reference":"Patient/p3"},"period":{"start":"2026-01-01T08:00:00Z"},"participant":[{"individual":{"reference":"Practitioner/u4"}}]}"#,
            "\n",
            r#"{"resourceType":"Encounter","status":"finished","subject":{"reference":"Patient/p4"},"participant":[{"individual":{"reference":"Practitioner/u4"}}]}"#,
            "\n"
        );
        ctx.read(ENCOUNTERS_NDJSON, enc.as_bytes()).unwrap();
        let care = |u: &str, p: &str, t: u64| ctx.relation(u, p, t).care_team;
        assert!(care("u1", "p1", T));
        assert!(
            care("u1", "p1", T + DAY_MS + DAY_MS - 1),
            "an end date covers its day"
        );
        assert!(!care("u1", "p1", T + 2 * DAY_MS));
        assert!(
            !care("u2", "p1", T),
            "the participant's period narrows the team's"
        );
        assert!(care("u2", "p1", T + 12 * 3_600_000));
        assert!(!care("u3", "p1", T), "an entered-in-error team never held");
        assert!(care("u4", "p2", T + 8 * 3_600_000));
        assert!(!care("u4", "p2", T + 9 * 3_600_000), "the end is exclusive");
        assert!(!care("u1", "p2", T + 8 * 3_600_000));
        assert!(
            !care("u1", "MRN-1", T),
            "the literal reference names the patient"
        );
        assert!(!care("u5", "p1", T), "an inactive team holds for no one");
        assert!(care("u7", "p1", T));
        assert!(!care("u6", "p1", T), "an organisation is no staff");
        assert!(!care("r1", "p1", T), "a relative is no staff");
        assert!(care("u4", "p3", T + 8 * 3_600_000));
        assert!(
            !care("u4", "p3", T + 8 * 3_600_000 + DAY_MS),
            "a finished encounter without an end counts for a day"
        );
        assert!(
            !care("u4", "p4", T),
            "an encounter without a time says nothing"
        );
        // The relative, the organisation, the group's team and the timeless encounter.
        assert_eq!(ctx.n_skipped(), 4);
    }

    #[test]
    fn orders_and_referrals_explain_their_performers_accesses_while_they_hold() {
        let h = 3_600_000;
        // One request a line: `fields` after the common head (status active, intent order,
        // requester r1, subject `patient`).
        let req = |patient: &str, fields: &str| {
            format!(
                r#"{{"resourceType":"ServiceRequest","status":"active","intent":"order","requester":{{"reference":"Practitioner/r1"}},"subject":{{"reference":"Patient/{patient}"}},{fields}}}"#
            )
        };
        let lines = [
            // A consult ordered at a time: explains u1's accesses to p1 for three days.
            req(
                "p1",
                r#""authoredOn":"2026-01-01T00:00:00Z","performer":[{"reference":"Practitioner/u1"},{"reference":"Organization/cardio"}]"#,
            ),
            // A referral over a period.
            req(
                "p2",
                r#""authoredOn":"2026-01-01T00:00:00Z","occurrencePeriod":{"start":"2026-01-01T08:00:00Z","end":"2026-01-01T10:00:00Z"},"performer":[{"identifier":{"value":"u2"},"type":"Practitioner"},{"identifier":{"value":"u2b"}}]"#,
            ),
            // The occurrence wins over the authoring time when it is later.
            req(
                "p3",
                r#""occurrenceDateTime":"2026-01-05T00:00:00Z","authoredOn":"2026-01-01T00:00:00Z","performer":[{"reference":"Practitioner/u3"}]"#,
            ),
            // Withdrawn or drafted: explains nothing.
            req(
                "p4",
                r#""authoredOn":"2026-01-01","performer":[{"reference":"Practitioner/u4"}]"#,
            )
            .replace("active", "revoked"),
            req(
                "p4",
                r#""authoredOn":"2026-01-01","performer":[{"reference":"Practitioner/u5"}]"#,
            )
            .replace("active", "draft"),
            // Not saying when it was written: says nothing.
            req(
                "p4",
                r#""occurrenceDateTime":"2026-01-01T00:00:00Z","performer":[{"reference":"Practitioner/u6"}]"#,
            ),
            // A proposal asks no one.
            req(
                "p5",
                r#""authoredOn":"2026-01-01","performer":[{"reference":"Practitioner/u7"}]"#,
            )
            .replace("\"order\"", "\"proposal\""),
            // An order to oneself explains nothing, by the same id or by any shared id; one to
            // another does.
            req(
                "p5",
                r#""authoredOn":"2026-01-01","performer":[{"reference":"Practitioner/r1"},{"identifier":{"value":"r1"}},{"reference":"Practitioner/u8"}]"#,
            ),
            // No requester, or one that is not a practitioner: nobody can be seen to ask.
            req(
                "p6",
                r#""authoredOn":"2026-01-01","performer":[{"reference":"Practitioner/u9"}]"#,
            )
            .replace(r#""requester":{"reference":"Practitioner/r1"},"#, ""),
            req(
                "p6",
                r#""authoredOn":"2026-01-01","performer":[{"reference":"Practitioner/u9"}]"#,
            )
            .replace("Practitioner/r1", "PractitionerRole/r1-er"),
            // Backdated: written on the 10th for the 1st, it explains from the 10th only.
            req(
                "p7",
                r#""occurrenceDateTime":"2026-01-01T00:00:00Z","authoredOn":"2026-01-10T00:00:00Z","performer":[{"reference":"Practitioner/u10"}]"#,
            ),
            // Open or endless periods explain for 3 and 30 days from their start.
            req(
                "p8",
                r#""authoredOn":"2026-01-01T00:00:00Z","occurrencePeriod":{"start":"2026-01-01T00:00:00Z"},"performer":[{"reference":"Practitioner/u11"}]"#,
            ),
            req(
                "p8",
                r#""authoredOn":"2026-01-01T00:00:00Z","occurrencePeriod":{"start":"2026-01-01T00:00:00Z","end":"9999-12-31"},"performer":[{"reference":"Practitioner/u12"}]"#,
            ),
            // Written some time in January (a partial date): explains from February only; a
            // period wholly before it explains nothing.
            req(
                "p9",
                r#""authoredOn":"2026-01","performer":[{"reference":"Practitioner/u13"}]"#,
            ),
            req(
                "p9",
                r#""authoredOn":"2026-01-10T00:00:00Z","occurrencePeriod":{"end":"2026-01-02"},"performer":[{"reference":"Practitioner/u14"}]"#,
            ),
        ];
        let mut ctx = Context::new();
        ctx.read(SERVICE_REQUESTS_NDJSON, lines.join("\n").as_bytes())
            .unwrap();
        let care = |u: &str, p: &str, t: u64| ctx.relation(u, p, t).care_team;
        assert!(!care("u1", "p1", T - 1));
        assert!(care("u1", "p1", T));
        assert!(care("u1", "p1", T + 3 * DAY_MS - 1));
        assert!(
            !care("u1", "p1", T + 3 * DAY_MS),
            "an order holds three days"
        );
        assert!(!care("cardio", "p1", T), "a department is no performer");
        assert!(
            care("u2", "p2", T + 9 * h),
            "a typed identifier names a practitioner"
        );
        assert!(
            !care("u2b", "p2", T + 9 * h),
            "an untyped one could be anyone's"
        );
        assert!(
            !care("u2", "p2", T + 10 * h),
            "the period's end is exclusive"
        );
        assert!(!care("u3", "p3", T));
        assert!(care("u3", "p3", T + 4 * DAY_MS));
        assert!(
            !care("u4", "p4", T + DAY_MS),
            "a revoked request explains nothing"
        );
        assert!(!care("u5", "p4", T + DAY_MS), "a draft explains nothing");
        assert!(!care("u6", "p4", T));
        assert!(!care("u7", "p5", T + DAY_MS), "a proposal explains nothing");
        assert!(
            !care("r1", "p5", T + DAY_MS),
            "an order to oneself explains nothing"
        );
        assert!(
            !care("u8", "p5", T),
            "a date says the order was written by its end"
        );
        assert!(care("u8", "p5", T + DAY_MS));
        assert!(
            !care("u9", "p6", T),
            "an order nobody placed explains nothing"
        );
        assert!(!care("u10", "p7", T + DAY_MS), "backdated");
        assert!(care("u10", "p7", T + 9 * DAY_MS));
        assert!(care("u11", "p8", T + 3 * DAY_MS - 1));
        assert!(
            !care("u11", "p8", T + 3 * DAY_MS),
            "an open period holds 3 days"
        );
        assert!(care("u12", "p8", T + 30 * DAY_MS - 1));
        assert!(
            !care("u12", "p8", T + 30 * DAY_MS),
            "no order holds past 30 days"
        );
        assert!(!care("u13", "p9", T + 30 * DAY_MS));
        assert!(
            care("u13", "p9", T + 31 * DAY_MS),
            "from the end of January"
        );
        assert!(
            !care("u14", "p9", T + DAY_MS),
            "wholly before it was written"
        );
        // The organisation and untyped performers, the request not saying when it was
        // written, the two orders to oneself, the two without a practitioner requester, the
        // one wholly before it was written.
        assert_eq!(ctx.n_skipped(), 8);
        assert!(ctx.lists_care());

        for (line, error) in [
            (req("p1", r#""authoredOn":"yesterday""#), "yesterday"),
            (
                r#"{"resourceType":"Encounter"}"#.to_owned(),
                "ServiceRequest",
            ),
            (
                req("p1", r#""authoredOn":"2026-01-01""#).replace(r#""intent":"order","#, ""),
                "intent",
            ),
            (
                req("p1", r#""authoredOn":"2026-01-01""#).replace(r#""status":"active","#, ""),
                "status",
            ),
            (
                req("p1", r#""authoredOn":"2026-01-01""#).replace("active", "cancelled"),
                "cancelled",
            ),
            // Malformed whatever the status: checked before the request is judged.
            (
                req("p1", r#""authoredOn":"2026-01-01""#)
                    .replace("active", "revoked")
                    .replace("\"order\"", "\"BOGUS\""),
                "BOGUS",
            ),
            (
                req("p1", r#""authoredOn":"2026-13""#).replace("active", "draft"),
                "2026-13",
            ),
            (
                req(
                    "p1",
                    r#""authoredOn":"2026-01-01","occurrencePeriod":{"start":"2026-01-05","end":"2026-01-02"}"#,
                ),
                "ends before it starts",
            ),
        ] {
            let err = ctx
                .read(SERVICE_REQUESTS_NDJSON, line.as_bytes())
                .unwrap_err();
            assert!(err.to_string().contains("line 1"), "{err}");
            assert!(err.to_string().contains(error), "{error}: {err}");
        }
    }

    #[test]
    fn appointments_explain_their_practitioners_accesses_around_them() {
        let appt = |status: &str, times: &str, participants: &str| {
            format!(
                r#"{{"resourceType":"Appointment","status":"{status}",{times}"participant":[{participants}]}}"#
            )
        };
        let at = r#""start":"2026-01-05T09:00:00Z","end":"2026-01-05T09:30:00Z","#;
        let pat = r#"{"actor":{"reference":"Patient/p1"},"status":"accepted"}"#;
        let doc = |u: &str, st: &str| {
            format!(r#"{{"actor":{{"reference":"Practitioner/{u}"}},"status":"{st}"}}"#)
        };
        let lines = [
            appt(
                "booked",
                at,
                &format!("{pat},{},{}", doc("u1", "accepted"), doc("u2", "declined")),
            ),
            appt("cancelled", at, &format!("{pat},{}", doc("u3", "accepted"))),
            // Untyped, a location: no one to explain.
            appt(
                "fulfilled",
                at,
                &format!(
                    r#"{pat},{{"actor":{{"identifier":{{"value":"u4"}}}},"status":"accepted"}},{{"actor":{{"reference":"Location/room1"}},"status":"accepted"}}"#
                ),
            ),
            // A mistyped end: held to a day.
            appt(
                "booked",
                r#""start":"2026-01-05T09:00:00Z","end":"2027-01-05T09:00:00Z","#,
                &format!("{pat},{}", doc("u5", "accepted")),
            ),
        ];
        let mut ctx = Context::new();
        ctx.read(APPOINTMENTS_NDJSON, lines.join("\n").as_bytes())
            .unwrap();
        let care = |u: &str, t: u64| ctx.relation(u, "p1", t).care_team;
        let start = T + 4 * DAY_MS + 9 * 3_600_000;
        assert!(!care("u1", start - DAY_MS - 1));
        assert!(care("u1", start - DAY_MS), "a day before: preparation");
        assert!(
            care("u1", start + DAY_MS + 30 * 60_000 - 1),
            "a day after: notes"
        );
        assert!(!care("u1", start + DAY_MS + 30 * 60_000));
        assert!(!care("u2", start), "a participant who declined");
        assert!(!care("u3", start), "a cancelled appointment");
        assert!(!care("u4", start), "an untyped actor is no one's");
        assert!(care("u5", start + 2 * DAY_MS - 1));
        assert!(
            !care("u5", start + 2 * DAY_MS),
            "held to a day and its margin"
        );
        assert_eq!(ctx.n_skipped(), 2);
        for (line, error) in [
            (appt("booked", "", pat), "without start and end"),
            (appt("confirmed", at, pat), "confirmed"),
            (
                appt("booked", at, r#"{"actor":{"reference":"Patient/p1"}}"#),
                "participant without a status",
            ),
            (
                appt(
                    "cancelled",
                    r#""start":"garbage","end":"2026-01-05T09:30:00Z","#,
                    pat,
                ),
                "garbage",
            ),
            (
                appt("booked", r#""start":"2026-01-05","end":"2026-01-06","#, pat),
                "not an instant",
            ),
            (
                appt(
                    "booked",
                    r#""start":"2026-01-05T09:00:00Z","end":"2026-01-04T09:00:00Z","#,
                    pat,
                ),
                "ends before",
            ),
        ] {
            let err = ctx.read(APPOINTMENTS_NDJSON, line.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("line 1"), "{err}");
            assert!(err.to_string().contains(error), "{error}: {err}");
        }
    }

    #[test]
    fn csv_feeds_give_staff_departments_vips_and_family() {
        let mut ctx = Context::new();
        ctx.read(
            STAFF_FILE,
            "user,role,department\nu1,nurse,icu\n".as_bytes(),
        )
        .unwrap();
        ctx.read(
            PATIENTS_FILE,
            "patient,department\np1,cardiology\n".as_bytes(),
        )
        .unwrap();
        ctx.read(VIP_FILE, "patient\np1\n".as_bytes()).unwrap();
        ctx.read(RELATIONSHIPS_FILE, "user,patient\nu1,p2\n".as_bytes())
            .unwrap();
        ctx.read(
            CARE_TEAM_CSV,
            "user,patient,start,end\nu1,p1,2026-01-01T00:00:00Z,\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(
            ctx.staff("u1"),
            Some(&StaffEntry {
                role: StaffRole::Nurse,
                department: "icu".into()
            })
        );
        assert_eq!(ctx.patient_department("p1"), Some("cardiology"));
        let r = ctx.relation("u1", "p1", T);
        assert!(r.care_team && r.vip && !r.family_link);
        assert!(!ctx.relation("u1", "p1", T - 1).care_team);
        assert!(ctx.relation("u1", "p2", T).family_link);
        assert_eq!(ctx.relation("u9", "p9", T), Relation::default());
    }

    #[test]
    fn a_bad_line_fails_the_load_naming_it() {
        let mut ctx = Context::new();
        let err = ctx
            .read(
                STAFF_FILE,
                "user,role,department\nu1,nurse,icu\nu2,surgeon,icu\n".as_bytes(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = ctx
            .read(STAFF_FILE, "user,role,department\nu1,nurse\n".as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("expected 3 columns"), "{err}");
        let err = ctx
            .read(
                CARE_TEAMS_NDJSON,
                "{\"resourceType\":\"Patient\"}\n".as_bytes(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = ctx
            .read(
                CARE_TEAM_CSV,
                "user,patient,start,end\nu1,p1,2026-01-02,2025-12-31\n".as_bytes(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("ends before"), "{err}");
    }

    #[test]
    fn a_written_folder_reads_back_the_same_relations() {
        let mut ctx = Context::new();
        ctx.add_staff("u1", StaffRole::Physician, "icu");
        ctx.add_staff("u2", StaffRole::Billing, "billing");
        ctx.set_patient_department("p1", "icu");
        ctx.add_vip("p1");
        ctx.add_family("u2", "p1");
        ctx.add_care("u1", "p1", Span::ALWAYS);
        ctx.add_care(
            "u2",
            "p2",
            Span {
                start_ms: T,
                end_ms: T + 1000,
            },
        );
        ctx.add_order(
            "u9",
            "u1",
            "p3",
            Span {
                start_ms: T + 500,
                end_ms: T + 2000,
            },
        );
        let dir = std::env::temp_dir().join(format!("medfl-context-{}", std::process::id()));
        ctx.write_dir(&dir).unwrap();
        let back = Context::load_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        for (u, p, t) in [
            ("u1", "p1", T),
            ("u2", "p1", T),
            ("u2", "p2", T),
            ("u2", "p2", T + 1000),
            ("u1", "p2", T),
            ("u1", "p3", T + 499),
            ("u1", "p3", T + 500),
            ("u1", "p3", T + 1999),
            ("u1", "p3", T + 2000),
        ] {
            assert_eq!(back.relation(u, p, t), ctx.relation(u, p, t), "{u} {p} {t}");
        }
        assert_eq!(back.staff("u2"), ctx.staff("u2"));
        assert_eq!(back.patient_department("p1"), Some("icu"));
    }
}
