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

/// The run directory of a simulation, going on or finished.
pub struct RunDir {
    dir: PathBuf,
    ledger: Mutex<Option<(Stamp, Ledger)>>,
}

impl RunDir {
    /// The run in `dir` (it may not have started yet).
    pub fn new(dir: PathBuf) -> RunDir {
        RunDir {
            dir,
            ledger: Mutex::new(None),
        }
    }

    /// Whether the run has finished (its summary, `metrics.json`, is written).
    pub fn finished(&self) -> bool {
        self.dir.join("metrics.json").is_file()
    }

    /// Every step recorded so far, oldest first: `rounds.jsonl` as the run appends it (a line
    /// still being written, without its newline, is left for the next read), or, for a run
    /// recorded before that file existed, `metrics.json`.
    pub fn rounds(&self) -> Result<Vec<serde_json::Value>, RunError> {
        let lines = self.dir.join(crate::simulate::ROUNDS_FILE);
        match std::fs::read_to_string(&lines) {
            Ok(text) => {
                let complete = text.rfind('\n').map_or("", |end| &text[..end]);
                complete
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        serde_json::from_str(l).map_err(|source| RunError::Round {
                            path: lines.clone(),
                            line: i + 1,
                            source,
                        })
                    })
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.rounds_of_summary(),
            Err(source) => Err(RunError::Io {
                path: lines,
                source,
            }),
        }
    }

    fn rounds_of_summary(&self) -> Result<Vec<serde_json::Value>, RunError> {
        let path = self.dir.join("metrics.json");
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
        let dir = self.dir.join("ledger");
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
            let ledger = Ledger::open_snapshot(&dir).map_err(RunError::from)?;
            *cache = Some((stamp, ledger));
        }
        match &*cache {
            Some((_, ledger)) => f(ledger).map(Some),
            None => Ok(None),
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn stamp(file: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(file)?;
    Ok((meta.len(), meta.modified().ok()))
}
