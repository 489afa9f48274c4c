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
//! Text fields are quoted RFC 4180-style only when they hold a comma or a quote; line breaks
//! inside fields are not allowed (see the reader's notes on line numbers).

use std::io::{BufRead, Write};

use crate::error::{FormatError, OnError, Parsed, RowError};
use crate::event::{AccessEvent, Action, Resource, StaffRole};
use crate::label::{AttackKind, Label};
use crate::lines::{Lines, split_csv, write_field};

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

fn check_text(event_id: u64, name: &str, value: &str) -> Result<(), FormatError> {
    if value.contains(['\n', '\r']) {
        return Err(FormatError::Unwritable {
            event_id,
            message: format!("{name} contains a line break"),
        });
    }
    Ok(())
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Writes events as CSV with the header; fails on a text field holding a line break.
pub fn write_events<W: Write>(mut w: W, events: &[AccessEvent]) -> Result<(), FormatError> {
    let mut line = String::with_capacity(256);
    line.push_str(&EVENT_COLUMNS.join(","));
    line.push('\n');
    w.write_all(line.as_bytes())?;
    for e in events {
        line.clear();
        for (name, v) in [
            ("user", &e.user),
            ("user_department", &e.user_department),
            ("patient", &e.patient),
            ("patient_department", &e.patient_department),
            ("workstation", &e.workstation),
            ("ip", &e.ip),
        ] {
            check_text(e.event_id, name, v)?;
        }
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = write!(line, "{},{},", e.event_id, e.time_ms);
        write_field(&mut line, &e.user);
        line.push(',');
        line.push_str(e.role.as_str());
        line.push(',');
        write_field(&mut line, &e.user_department);
        line.push(',');
        write_field(&mut line, &e.patient);
        line.push(',');
        write_field(&mut line, &e.patient_department);
        line.push(',');
        line.push_str(e.action.as_str());
        line.push(',');
        line.push_str(e.resource.as_str());
        line.push(',');
        write_field(&mut line, &e.workstation);
        line.push(',');
        write_field(&mut line, &e.ip);
        for b in [e.break_glass, e.care_team, e.vip, e.family_link] {
            line.push(',');
            line.push_str(flag(b));
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()?;
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

fn parse_enum<T>(col: &str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T, String> {
    parse(s).ok_or_else(|| format!("{col}: unknown value {s:?}"))
}

fn nonempty(col: &str, s: &str) -> Result<String, String> {
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

/// Shared driver: checks the header, then parses each non-empty line with `parse`.
fn read_csv<R: BufRead, T>(
    r: R,
    columns: &[&str],
    on_error: OnError,
    parse: impl Fn(&[String]) -> Result<T, String>,
) -> Result<Parsed<T>, FormatError> {
    let mut lines = Lines::new(r);
    let mut fields = Vec::with_capacity(columns.len());
    lines.read_header(&mut fields)?;
    if fields
        .iter()
        .map(String::as_str)
        .ne(columns.iter().copied())
    {
        return Err(FormatError::BadHeader(format!(
            "expected {:?}, found {:?}",
            columns.join(","),
            fields.join(",")
        )));
    }
    let mut out = Parsed::default();
    while let Some((line, text)) = lines.next_line()? {
        let result = text.and_then(|text| {
            if text.is_empty() {
                return Ok(None);
            }
            split_csv(text, &mut fields)
                .and_then(|()| parse(&fields))
                .map(Some)
                .map_err(|message| RowError { line, message })
        });
        match result {
            Ok(Some(rec)) => out.records.push(rec),
            Ok(None) => {}
            Err(e) => out.fail(on_error, e)?,
        }
    }
    Ok(out)
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
pub fn write_labels<W: Write>(mut w: W, labels: &[Label]) -> Result<(), FormatError> {
    let mut buf = String::with_capacity(labels.len() * 12 + 16);
    buf.push_str("event_id,attack\n");
    for l in labels {
        use std::fmt::Write as _;
        let _ = writeln!(
            buf,
            "{},{}",
            l.event_id,
            l.attack.map_or("", AttackKind::as_str)
        );
    }
    w.write_all(buf.as_bytes())?;
    w.flush()?;
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
