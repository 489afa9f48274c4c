//! Line reading for the line-based formats (FHIR NDJSON, numeric tables), and field splitting
//! for numeric tables, whose fields are numbers and never quoted across lines. Event and label
//! CSV files are read by the `csv` crate (`crate::csv`).

use std::io::BufRead;

use crate::error::{FormatError, RowError};

/// Reads lines as raw bytes, counting them, so that invalid UTF-8 is a row error, not an abort.
pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    line: u64,
}

impl<R: BufRead> Lines<R> {
    /// Reads the header row into `fields` (a UTF-8 byte-order mark is dropped).
    pub(crate) fn read_header(&mut self, fields: &mut Vec<String>) -> Result<(), FormatError> {
        let header = match self.next_line()? {
            None => return Err(FormatError::MissingHeader),
            Some((_, Err(e))) => return Err(FormatError::BadHeader(e.message)),
            Some((_, Ok(h))) => h,
        };
        split_csv(header.trim_start_matches('\u{feff}'), fields).map_err(FormatError::BadHeader)
    }

    pub(crate) fn new(inner: R) -> Self {
        Lines {
            inner,
            buf: Vec::new(),
            line: 0,
        }
    }

    /// The next line (without `\n` or `\r\n`) and its 1-based number; `Ok(None)` at the end.
    /// The inner `Result` is a decoding error for that line.
    #[allow(clippy::type_complexity)]
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<(u64, Result<&str, RowError>)>> {
        self.buf.clear();
        let n = self.inner.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let line = self.line;
        let text = std::str::from_utf8(&self.buf).map_err(|e| RowError {
            line,
            message: format!("not valid UTF-8: {e}"),
        });
        Ok(Some((line, text)))
    }
}

/// Splits one CSV record into `out` (cleared first). Fails on a stray or unterminated quote.
pub(crate) fn split_csv(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    out.clear();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    loop {
        // At the start of a field.
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    out.push(std::mem::take(&mut field));
                    return Ok(());
                }
                Some(',') => out.push(std::mem::take(&mut field)),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(std::mem::take(&mut field));
                        return Ok(());
                    }
                    Some(',') => {
                        out.push(std::mem::take(&mut field));
                        break;
                    }
                    Some('"') => return Err("quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}
