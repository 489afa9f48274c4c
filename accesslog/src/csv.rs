//! CSV files of access events and, separately, of labels.
//!
//! # Events CSV
//! A header row, then one event per line, columns in this fixed order:
//!
//! | # | column | type | example |
//! |---|--------|------|---------|
//! | 1 | `event_id` | u64 | `1042` |
//! | 2 | `time_ms` | u64, ms since the Unix epoch (UTC) | `1767600000000` |
//! | 3 | `user` | text | `h0-u00017` |
//! | 4 | `role` | `physician`, `nurse`, `pharmacist`, `billing`, `it`, `researcher`, `student` | `nurse` |
//! | 5 | `user_department` | text | `cardiology` |
//! | 6 | `patient` | text | `h0-p000311` |
//! | 7 | `patient_department` | text | `cardiology` |
//! | 8 | `action` | `view`, `edit`, `print`, `export` | `view` |
//! | 9 | `resource` | `demographics`, `clinical_note`, `medication`, `lab_result`, `imaging`, `billing` | `lab_result` |
//! | 10 | `workstation` | text | `h0-ws-cardiology-03` |
//! | 11 | `ip` | text | `10.0.4.17` |
//! | 12 | `break_glass` | `0`/`1` (`true`/`false` also read) | `0` |
//! | 13 | `care_team` | `0`/`1` | `1` |
//! | 14 | `vip` | `0`/`1` | `0` |
//! | 15 | `family_link` | `0`/`1` | `0` |
//!
//! # Labels CSV
//! Kept in its own file so that ground truth never rides along with training input: header
//! `event_id,attack`, then one row per event; `attack` is empty for normal events or an
//! [`AttackKind`] name (`vip_snooping`, ...).
//!
//! Reading and writing is the `csv` crate's (RFC 4180): a text field is quoted when it holds a
//! comma, a quote or a line break, so the quoted multi-line fields real EHR exports contain
//! are read; an error names the line its record starts on.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::rc::Rc;

use crate::error::{FormatError, OnError, Parsed, RowError};
use crate::event::{AccessEvent, Action, Resource, StaffRole};
use crate::label::{AttackKind, Label};

/// The events CSV header, in column order.
pub const EVENT_COLUMNS: [&str; 15] = [
    "event_id",
    "time_ms",
    "user",
    "role",
    "user_department",
    "patient",
    "patient_department",
    "action",
    "resource",
    "workstation",
    "ip",
    "break_glass",
    "care_team",
    "vip",
    "family_link",
];

/// The labels CSV header.
pub const LABEL_COLUMNS: [&str; 2] = ["event_id", "attack"];

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

pub(crate) fn csv_error(e: csv::Error) -> FormatError {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(e) => FormatError::Io(e),
        _ => FormatError::Io(std::io::Error::other(message)),
    }
}

/// Writes events as CSV with the header.
pub fn write_events<W: Write>(w: W, events: &[AccessEvent]) -> Result<(), FormatError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(EVENT_COLUMNS).map_err(csv_error)?;
    for e in events {
        let (id, time) = (e.event_id.to_string(), e.time_ms.to_string());
        out.write_record([
            id.as_str(),
            time.as_str(),
            &e.user,
            e.role.as_str(),
            &e.user_department,
            &e.patient,
            &e.patient_department,
            e.action.as_str(),
            e.resource.as_str(),
            &e.workstation,
            &e.ip,
            flag(e.break_glass),
            flag(e.care_team),
            flag(e.vip),
            flag(e.family_link),
        ])
        .map_err(csv_error)?;
    }
    out.flush()?;
    Ok(())
}

fn parse_u64(col: &str, s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{col}: {s:?} is not an unsigned integer"))
}

fn parse_bool(col: &str, s: &str) -> Result<bool, String> {
    match s {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{col}: {s:?} is not 0/1/true/false")),
    }
}

pub(crate) fn parse_enum<T>(col: &str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T, String> {
    parse(s).ok_or_else(|| format!("{col}: unknown value {s:?}"))
}

pub(crate) fn nonempty(col: &str, s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err(format!("{col}: empty"))
    } else {
        Ok(s.to_owned())
    }
}

fn parse_event(f: &[String]) -> Result<AccessEvent, String> {
    if f.len() != EVENT_COLUMNS.len() {
        return Err(format!(
            "expected {} columns, found {}",
            EVENT_COLUMNS.len(),
            f.len()
        ));
    }
    Ok(AccessEvent {
        event_id: parse_u64("event_id", &f[0])?,
        time_ms: parse_u64("time_ms", &f[1])?,
        user: nonempty("user", &f[2])?,
        role: parse_enum("role", &f[3], StaffRole::parse)?,
        user_department: nonempty("user_department", &f[4])?,
        patient: nonempty("patient", &f[5])?,
        patient_department: nonempty("patient_department", &f[6])?,
        action: parse_enum("action", &f[7], Action::parse)?,
        resource: parse_enum("resource", &f[8], Resource::parse)?,
        workstation: nonempty("workstation", &f[9])?,
        ip: nonempty("ip", &f[10])?,
        break_glass: parse_bool("break_glass", &f[11])?,
        care_team: parse_bool("care_team", &f[12])?,
        vip: parse_bool("vip", &f[13])?,
        family_link: parse_bool("family_link", &f[14])?,
    })
}

/// Shared driver: checks the header, then parses each record with `parse`; a row error names
/// the line the record starts on.
pub(crate) fn read_csv<R: BufRead, T>(
    r: R,
    columns: &[&str],
    on_error: OnError,
    parse: impl Fn(&[String]) -> Result<T, String>,
) -> Result<Parsed<T>, FormatError> {
    let newlines = Rc::new(RefCell::new(NewlineIndex::default()));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Column counts are checked per row, so a short row is a row error, not an abort.
        .flexible(true)
        .from_reader(CountingReader {
            inner: r,
            offset: 0,
            newlines: Rc::clone(&newlines),
        });
    // The line a record starts on, from its byte offset: the csv crate's own line count skips
    // blank lines and line breaks inside quoted fields.
    let line_of = |byte: u64| newlines.borrow_mut().line_of(byte);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => return Err(FormatError::MissingHeader),
        Some(Err(e)) => return Err(FormatError::BadHeader(e.to_string())),
        Some(Ok(h)) => h,
    };
    let header: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let first = header.first().map(|h| h.trim_start_matches('\u{feff}'));
    let matches = header.len() == columns.len()
        && first == columns.first().copied()
        && header
            .iter()
            .skip(1)
            .map(String::as_str)
            .eq(columns.iter().skip(1).copied());
    if !matches {
        return Err(FormatError::BadHeader(format!(
            "expected {:?}, found {:?}",
            columns.join(","),
            header.join(",")
        )));
    }
    let mut out = Parsed::default();
    let mut fields = Vec::with_capacity(columns.len());
    for record in records {
        let result = match record {
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(csv_error(e)),
            Err(e) => Err(RowError {
                line: e.position().map_or(0, |p| line_of(p.byte())),
                message: e.to_string(),
            }),
            Ok(rec) => {
                let line = rec.position().map_or(0, |p| line_of(p.byte()));
                fields.clear();
                let decoded = rec.iter().try_for_each(|f| {
                    std::str::from_utf8(f)
                        .map(|s| fields.push(s.to_owned()))
                        .map_err(|e| format!("not valid UTF-8: {e}"))
                });
                decoded
                    .and_then(|()| parse(&fields))
                    .map_err(|message| RowError { line, message })
            }
        };
        match result {
            Ok(rec) => out.records.push(rec),
            Err(e) => out.fail(on_error, e)?,
        }
    }
    Ok(out)
}

/// The offsets of the `\r` and `\n` bytes read but not yet passed (with whether each is a
/// `\n`), and how many line breaks were passed.
#[derive(Default)]
struct NewlineIndex {
    pending: VecDeque<(u64, bool)>,
    passed: u64,
}

impl NewlineIndex {
    /// The 1-based line of the record the csv crate places at `byte` (records come in order, so
    /// offsets only grow). The crate places a record just after the previous record's first
    /// terminator byte, before any rest of a `\r\n` and any blank lines, so the run of line-break
    /// bytes starting there is passed too.
    fn line_of(&mut self, byte: u64) -> u64 {
        let mut cursor = byte;
        while let Some(&(at, newline)) = self.pending.front() {
            if at > cursor {
                break;
            }
            if at == cursor {
                cursor += 1;
            }
            self.pending.pop_front();
            self.passed += u64::from(newline);
        }
        self.passed + 1
    }
}

/// Passes bytes through to the csv reader, noting where each line break is. It holds only the
/// breaks of what the csv reader has buffered but not yet returned.
struct CountingReader<R> {
    inner: R,
    offset: u64,
    newlines: Rc<RefCell<NewlineIndex>>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut index = self.newlines.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            if matches!(b, b'\r' | b'\n') {
                index
                    .pending
                    .push_back((self.offset + i as u64, *b == b'\n'));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Reads an events CSV written by [`write_events`]; malformed rows are skipped or rejected with
/// their line numbers, and blank lines are ignored.
pub fn read_events<R: BufRead>(
    r: R,
    on_error: OnError,
) -> Result<Parsed<AccessEvent>, FormatError> {
    read_csv(r, &EVENT_COLUMNS, on_error, parse_event)
}

/// Writes labels as CSV (`event_id,attack`), empty `attack` meaning normal.
pub fn write_labels<W: Write>(w: W, labels: &[Label]) -> Result<(), FormatError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(LABEL_COLUMNS).map_err(csv_error)?;
    for l in labels {
        let id = l.event_id.to_string();
        out.write_record([id.as_str(), l.attack.map_or("", AttackKind::as_str)])
            .map_err(csv_error)?;
    }
    out.flush()?;
    Ok(())
}

fn parse_label(f: &[String]) -> Result<Label, String> {
    if f.len() != 2 {
        return Err(format!("expected 2 columns, found {}", f.len()));
    }
    let attack = if f[1].is_empty() {
        None
    } else {
        Some(parse_enum("attack", &f[1], AttackKind::parse)?)
    };
    Ok(Label {
        event_id: parse_u64("event_id", &f[0])?,
        attack,
    })
}

/// Reads a labels CSV written by [`write_labels`].
pub fn read_labels<R: BufRead>(r: R, on_error: OnError) -> Result<Parsed<Label>, FormatError> {
    read_csv(r, &LABEL_COLUMNS, on_error, parse_label)
}
