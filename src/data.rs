//! Reading a hospital's data for training and evaluation: the simulator's (or an EHR's) events
//! as CSV or FHIR `AuditEvent` NDJSON, turned into features; or a plain numeric table from the
//! hospital's own feature pipeline.
//!
//! Training goes through [`load_source`] and [`training_set`]: events are kept as events so
//! that each round can remove the patients who opted out (on the ledger, by their consent
//! pseudonym) before features are computed.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail};
use medfl_accesslog::consent::{self, PseudonymKey};
use medfl_accesslog::context::{self as feeds, Context as Feeds};
use medfl_accesslog::{AccessEvent, AttackKind, OnError, csv, extract, fhir, tabular};
use medfl_ledger::MemberId;
use medfl_ledger::tx::Pseudonym;
use medfl_model::EmployeeRows;
use medfl_model::cases::{CaseKey, Standing};
use medfl_model::policy::AlertPolicy;

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataFormat {
    /// Access events, CSV (the simulator's `events.csv`).
    Events,
    /// Access events, FHIR R4 AuditEvent NDJSON.
    Fhir,
    /// A numeric table: header row, one record per row.
    Tabular,
}

pub use medfl_model::evaluate::Labels;

/// Features (row-major) and optional labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Columns.
    pub n_cols: usize,
    /// Values.
    pub data: Vec<f32>,
    /// Labels, if given.
    pub labels: Option<Labels>,
    /// Who made each row and when (events only; empty for a table): what groups alerts into
    /// the cases an office reviews.
    pub keys: Vec<CaseKey>,
}

impl Dataset {
    /// The staff behind the rows: the distinct employees the file holds (0 for a table).
    pub fn employees(&self) -> usize {
        self.keys
            .iter()
            .map(|k| k.employee)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// What alerts besides the model's score: the role policy on access events (the rows
    /// whose makers are known), nothing on a table.
    pub fn policy(&self) -> AlertPolicy {
        if self.keys.is_empty() {
            AlertPolicy::ScoreOnly
        } else {
            AlertPolicy::RoleNeeds
        }
    }
}

impl Dataset {
    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.data.len().checked_div(self.n_cols).unwrap_or(0)
    }
}

/// Guesses the format from the extension and, for CSV, the header.
pub fn detect(path: &Path) -> Result<DataFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "ndjson" || ext == "jsonl" {
        return Ok(DataFormat::Fhir);
    }
    let mut first = Vec::new();
    std::io::BufRead::read_until(&mut BufReader::new(open(path)?), b'\n', &mut first)
        .with_context(|| format!("reading {}", path.display()))?;
    let first = std::str::from_utf8(&first).map_err(|e| {
        anyhow::anyhow!(
            "{}: line 1 is not UTF-8 text (byte {}): not an access-log CSV, NDJSON or table",
            path.display(),
            e.valid_up_to() + 1
        )
    })?;
    let header: Vec<&str> = first.trim_end().split(',').collect();
    Ok(if header == csv::EVENT_COLUMNS {
        DataFormat::Events
    } else {
        DataFormat::Tabular
    })
}

/// The hospital's context feeds for the log at `path`: the `context/` folder beside it, if any
/// (see [`medfl_accesslog::context`]).
pub fn context_beside(path: &Path) -> Result<Option<Feeds>> {
    let dir = path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(feeds::DIR);
    if !dir.is_dir() {
        return Ok(None);
    }
    Feeds::load_dir(&dir)
        .map(Some)
        .with_context(|| format!("reading the context feeds in {}", dir.display()))
}

/// Reads `AuditEvent` NDJSON; what an event lacks of medfl's extensions comes from the context
/// feeds beside it, by the derivation the live monitor uses.
fn read_fhir(
    path: &Path,
    on_error: OnError,
) -> Result<std::result::Result<medfl_accesslog::Parsed<AccessEvent>, medfl_accesslog::FormatError>>
{
    let context = context_beside(path)?;
    Ok(fhir::read_audit_events_with(
        BufReader::new(open(path)?),
        on_error,
        context.as_ref(),
    ))
}

fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// Loads `path` (format given or detected); `labels` is a labels CSV for events, `label_column`
/// names the label column of a table.
pub fn load(
    path: &Path,
    format: Option<DataFormat>,
    labels: Option<&Path>,
    label_column: Option<&str>,
    on_error: OnError,
) -> Result<Dataset> {
    let format = match format {
        Some(f) => f,
        None => detect(path)?,
    };
    let report = |skipped: &[medfl_accesslog::RowError]| {
        for e in skipped.iter().take(10) {
            eprintln!(
                "warning: {}: skipped line {}: {}",
                path.display(),
                e.line,
                e.message
            );
        }
        if skipped.len() > 10 {
            eprintln!(
                "warning: {}: {} more rows skipped",
                path.display(),
                skipped.len() - 10
            );
        }
    };
    let events = match format {
        DataFormat::Tabular => {
            if labels.is_some() {
                bail!("--labels is for event files; a table names its label column with --label-column");
            }
            let t = tabular::read_table(BufReader::new(open(path)?), label_column, on_error)
                .with_context(|| format!("reading {}", path.display()))?;
            report(&t.skipped);
            return Ok(Dataset {
                n_cols: t.n_cols,
                // Shaped from a flat vector, so in row-major order from offset 0.
                data: t.data.into_raw_vec_and_offset().0,
                labels: t.labels.map(Labels::Binary),
                keys: Vec::new(),
            });
        }
        DataFormat::Events => csv::read_events(BufReader::new(open(path)?), on_error),
        DataFormat::Fhir => read_fhir(path, on_error)?,
    }
    .with_context(|| format!("reading {}", path.display()))?;
    report(&events.skipped);
    if label_column.is_some() {
        bail!("--label-column is for tables; event files take a labels CSV with --labels");
    }
    let mut events = events.records;
    // Features are computed in time order; a log written out of order is sorted (stably).
    events.sort_by_key(|e| e.time_ms);
    let features = extract(&events);
    let labels = match labels {
        None => None,
        Some(lp) => {
            let parsed = csv::read_labels(BufReader::new(open(lp)?), on_error)
                .with_context(|| format!("reading {}", lp.display()))?;
            report(&parsed.skipped);
            let by_id: HashMap<u64, Option<AttackKind>> = parsed
                .records
                .iter()
                .map(|l| (l.event_id, l.attack))
                .collect();
            let per_row = events
                .iter()
                .map(|e| {
                    by_id.get(&e.event_id).copied().with_context(|| {
                        format!("{} has no label for event {}", lp.display(), e.event_id)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Labels::Typed(per_row))
        }
    };
    let keys = events
        .iter()
        .zip(&features.employees)
        .map(|(e, &employee)| CaseKey {
            employee,
            time_ms: e.time_ms,
            standing: Standing::of(e),
        })
        .collect();
    Ok(Dataset {
        n_cols: features.n_cols,
        data: features.data,
        labels,
        keys,
    })
}

/// The hospital's consent pseudonym key, derived from its ledger signing key and member id
/// (see `medfl_accesslog::consent` for why a key only the hospital holds).
pub fn pseudonym_key(key: &ed25519_dalek::SigningKey, member: &MemberId) -> Result<PseudonymKey> {
    let secret = zeroize::Zeroizing::new(key.to_bytes());
    PseudonymKey::derive(&secret, member.as_str()).context("deriving the consent pseudonym key")
}

/// The ledger pseudonym of the hospital's patient id `patient`.
pub fn pseudonym(key: &PseudonymKey, patient: &str) -> Pseudonym {
    Pseudonym(medfl_ledger::Hash(key.pseudonym(patient)))
}

/// What a hospital trains from: its access events in time order. A feature table cannot be
/// trained on in a consortium: its rows name no employee (so employee-level DP cannot group
/// them) and no patient (so consent cannot be applied).
pub type Source = Vec<AccessEvent>;

/// Loads a training source; unlike [`load`], events stay events (no labels: training never
/// sees them).
pub fn load_source(path: &Path, format: Option<DataFormat>, on_error: OnError) -> Result<Source> {
    let format = match format {
        Some(f) => f,
        None => detect(path)?,
    };
    let parsed = match format {
        DataFormat::Tabular => bail!(
            "{} is a feature table: its rows name no employee and no patient, so neither \
             employee-level privacy nor consent can be applied; train from the access events \
             (CSV or FHIR AuditEvent)",
            path.display()
        ),
        DataFormat::Events => csv::read_events(BufReader::new(open(path)?), on_error),
        DataFormat::Fhir => read_fhir(path, on_error)?,
    }
    .with_context(|| format!("reading {}", path.display()))?;
    if !parsed.skipped.is_empty() {
        eprintln!(
            "warning: {}: skipped {} malformed rows (first at line {})",
            path.display(),
            parsed.skipped.len(),
            parsed.skipped[0].line
        );
    }
    let mut events = parsed.records;
    events.sort_by_key(|e| e.time_ms);
    Ok(events)
}

/// A hospital's training rows under one consent set, each row tagged with its employee.
#[derive(Clone, Debug)]
pub struct TrainingSet {
    /// The opted-out pseudonyms it was built without.
    pub opted_out: BTreeSet<Pseudonym>,
    /// Columns.
    pub n_cols: usize,
    /// Row-major rows, on the features' fixed public scale.
    pub rows: Vec<f32>,
    /// The employee of each row (dense indices).
    pub employees: Vec<u64>,
    /// Events removed because their patient opted out.
    pub removed_events: usize,
}

impl TrainingSet {
    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.rows.len().checked_div(self.n_cols).unwrap_or(0)
    }

    /// Distinct employees (indices are dense, from 0).
    pub fn n_employees(&self) -> usize {
        self.employees.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// The rows grouped by employee, as DP-SGD takes them.
    pub fn by_employee(&self) -> Result<EmployeeRows<'_>> {
        Ok(EmployeeRows::new(&self.rows, self.n_cols, &self.employees)?)
    }
}

/// Builds the training rows of `events` without the patients in `opted_out` (pseudonyms under
/// `key`): their events are removed before features are computed.
pub fn training_set(
    events: &Source,
    key: &PseudonymKey,
    opted_out: &BTreeSet<Pseudonym>,
) -> Result<TrainingSet> {
    let out: BTreeSet<consent::Pseudonym> = opted_out.iter().map(|p| p.0.0).collect();
    let f = consent::training_features(events, key, &out, None);
    Ok(TrainingSet {
        opted_out: opted_out.clone(),
        n_cols: f.n_cols,
        rows: f.data,
        employees: f.employees,
        removed_events: f.removed_events,
    })
}
