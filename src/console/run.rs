//! A simulation's run directory, as the console reads it: the rounds so far and the ledger,
//! whether the run is going on or long finished.
//!
//! A running simulation appends each step to `rounds.jsonl` and commits each block to
//! `ledger/ledger.redb`; the console reads both without disturbing the writer. The ledger is
//! read through a private snapshot (a copy, never locked), taken again only when the file
//! changed, so a finished run's ledger is opened once however many pages are served.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use medfl_ledger::Ledger;

/// Why the run directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A round's line is not JSON.
    #[error("{path} line {line}: not a JSON round: {source}")]
    Round {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// The ledger could not be opened.
    #[error("the run's ledger: {0}")]
    Ledger(#[from] medfl_ledger::LedgerError),
}

/// When a file last changed, as far as a reader can tell: its length and modification time.
type Stamp = (u64, Option<SystemTime>);

/// The rounds and ledger of a simulation's run directory, going on or finished, or of a
/// running coordinator's folder.
pub struct RunDir {
    /// Where each round is appended as it ends, one JSON line each.
    rounds: PathBuf,
    /// The run's summary, written when it finishes (a simulation's `metrics.json`).
    summary: Option<PathBuf>,
    /// The ledger's directory.
    ledger_dir: PathBuf,
    ledger: Mutex<Option<(Stamp, Ledger)>>,
    /// The rounds read so far, and how many bytes of the rounds file they came from: a poll
    /// reads only what was appended since.
    read: Mutex<(u64, Vec<serde_json::Value>)>,
    /// Answers computed from the ledger as it stood at a stamp (the privacy series walk every
    /// block), kept until the ledger changes.
    derived: Mutex<
        Option<(
            Stamp,
            std::collections::HashMap<&'static str, serde_json::Value>,
        )>,
    >,
}

impl RunDir {
    /// The simulation run in `dir` (it may not have started yet).
    pub fn new(dir: PathBuf) -> RunDir {
        RunDir {
            rounds: dir.join(crate::simulate::ROUNDS_FILE),
            summary: Some(dir.join("metrics.json")),
            ledger_dir: dir.join("ledger"),
            ledger: Mutex::new(None),
            read: Mutex::new((0, Vec::new())),
            derived: Mutex::new(None),
        }
    }

    /// A running coordinator: the rounds its daemon appends to `metrics_file`, and the ledger
    /// in `ledger_dir`. It never finishes.
    pub fn coordinator(metrics_file: PathBuf, ledger_dir: PathBuf) -> RunDir {
        RunDir {
            rounds: metrics_file,
            summary: None,
            ledger_dir,
            ledger: Mutex::new(None),
            read: Mutex::new((0, Vec::new())),
            derived: Mutex::new(None),
        }
    }

    /// Whether the run has finished (its summary is written).
    pub fn finished(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.is_file())
    }

    /// The steps after step `after`, oldest first, in the form of a simulation's `metrics.json`
    /// rows: the rounds file as it is appended (a line still being written, without its
    /// newline, is left for the next read), or the summary of a run recorded before that file
    /// existed. A coordinator's lines (its round metrics, flat) are put in the same form, each
    /// a step; its lines saying no round could start are left out.
    pub fn rounds_after(&self, after: u64) -> Result<Vec<serde_json::Value>, RunError> {
        self.with_rounds(|rows| {
            rows.iter()
                .filter(|r| r.get("step").and_then(serde_json::Value::as_u64) > Some(after))
                .cloned()
                .collect()
        })
    }

    /// How many steps are recorded so far (what the page polls; nothing is copied).
    pub fn steps(&self) -> Result<usize, RunError> {
        self.with_rounds(<[serde_json::Value]>::len)
    }

    /// Runs `f` on the steps recorded so far, reading only what was appended since the last
    /// call.
    fn with_rounds<T>(&self, f: impl FnOnce(&[serde_json::Value]) -> T) -> Result<T, RunError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |source| RunError::Io {
            path: self.rounds.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&self.rounds) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.rounds_of_summary().map(|rows| f(&rows));
            }
            Err(source) => return Err(io(source)),
        };
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let len = file.metadata().map_err(io)?.len();
        if len < read.0 {
            // The file was replaced by a shorter one: read it afresh.
            *read = (0, Vec::new());
        }
        let mut text = String::new();
        file.seek(SeekFrom::Start(read.0)).map_err(io)?;
        file.take(len - read.0)
            .read_to_string(&mut text)
            .map_err(io)?;
        // A line still being written, without its newline, is left for the next read.
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        let first_line = read.1.len();
        for (i, line) in complete.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|source| RunError::Round {
                    path: self.rounds.clone(),
                    line: first_line + i + 1,
                    source,
                })?;
            if value.get("step").is_some() {
                read.1.push(value);
            } else if let Some(row) = coordinator_row(value, read.1.len() as u64 + 1) {
                read.1.push(row);
            }
        }
        read.0 += complete.len() as u64;
        Ok(f(&read.1))
    }

    fn rounds_of_summary(&self) -> Result<Vec<serde_json::Value>, RunError> {
        let Some(path) = self.summary.clone() else {
            return Ok(Vec::new());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| RunError::Round {
                path,
                line: 1,
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(RunError::Io { path, source }),
        }
    }

    /// Runs `f` on the run's ledger as it stands now, or answers `None` if the run has no
    /// ledger yet (it is still generating its data).
    pub fn with_ledger<T, E: From<RunError>>(
        &self,
        f: impl FnOnce(&Ledger) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        let dir = &self.ledger_dir;
        let file = dir.join("ledger.redb");
        let stamp = match stamp(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RunError::Io { path: file, source }.into()),
        };
        // A poisoned lock only means another request panicked mid-read: the cache is then
        // dropped and the ledger opened afresh.
        let mut cache = self.ledger.lock().unwrap_or_else(|p| {
            let mut guard = p.into_inner();
            *guard = None;
            guard
        });
        let fresh = matches!(&*cache, Some((s, _)) if *s == stamp);
        if !fresh {
            *cache = None;
            let ledger = Ledger::open_snapshot(dir).map_err(RunError::from)?;
            *cache = Some((stamp, ledger));
        }
        match &*cache {
            Some((_, ledger)) => f(ledger).map(Some),
            None => Ok(None),
        }
    }

    /// The answer `name` computes from the ledger, computed once for each state of the
    /// ledger file; `None` before the run has a ledger.
    pub fn derived<E: From<RunError>>(
        &self,
        name: &'static str,
        f: impl FnOnce(&Ledger) -> Result<serde_json::Value, E>,
    ) -> Result<Option<serde_json::Value>, E> {
        let file = self.ledger_dir.join("ledger.redb");
        let now = match stamp(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RunError::Io { path: file, source }.into()),
        };
        {
            let derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, values)) = &*derived
                && *at == now
                && let Some(v) = values.get(name)
            {
                return Ok(Some(v.clone()));
            }
        }
        let Some(value) = self.with_ledger(f)? else {
            return Ok(None);
        };
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *derived {
            Some((at, values)) if *at == now => {
                values.insert(name, value.clone());
            }
            _ => *derived = Some((now, [(name, value.clone())].into_iter().collect())),
        }
        Ok(Some(value))
    }
}

/// A coordinator's `metrics.jsonl` round line as a simulation's row: its round metrics under
/// `metrics`, its outcome beside them, as step `step`. `None` for a line that is not a
/// round's (one saying no round could start).
fn coordinator_row(mut line: serde_json::Value, step: u64) -> Option<serde_json::Value> {
    let fields = line.as_object_mut()?;
    fields.get("round")?;
    let model = fields.remove("model").unwrap_or(serde_json::Value::Null);
    let failure = fields.remove("failure").unwrap_or(serde_json::Value::Null);
    let bytes_out = fields.remove("bytes_out");
    let bytes_in = fields.remove("bytes_in");
    fields.remove("ledger_ms");
    Some(serde_json::json!({
        "step": step,
        "metrics": line,
        "model": model,
        "failure": failure,
        "attempts": 1,
        "bytes_out": bytes_out,
        "bytes_in": bytes_in,
        "auroc": null,
    }))
}

fn stamp(file: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(file)?;
    Ok((meta.len(), meta.modified().ok()))
}
