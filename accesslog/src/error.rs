//! Errors and the malformed-row policy shared by every reader.

use std::fmt;

/// What a reader does with a malformed row: skip it (and report it) or stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Skip malformed rows; they are returned in [`Parsed::skipped`] with their line numbers.
    Skip,
    /// Stop at the first malformed row with [`FormatError::Row`].
    #[default]
    Reject,
}

/// One malformed row: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line number in the input.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The input has no header row.
    #[error("line 1: missing header row")]
    MissingHeader,
    /// The header row is not the expected one.
    #[error("line 1: bad header: {0}")]
    BadHeader(String),
    /// A malformed row, under [`OnError::Reject`].
    #[error("{0}")]
    Row(RowError),
    /// An event cannot be written (e.g. a value the format cannot represent).
    #[error("cannot write event {event_id}: {message}")]
    Unwritable {
        /// The offending event.
        event_id: u64,
        /// Why.
        message: String,
    },
}

/// The records a reader accepted, and the rows it skipped under [`OnError::Skip`].
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed<T> {
    /// Accepted records, in input order.
    pub records: Vec<T>,
    /// Skipped rows (always empty under [`OnError::Reject`]).
    pub skipped: Vec<RowError>,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Parsed {
            records: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

impl<T> Parsed<T> {
    /// Applies the policy to a row error: records it (skip) or turns it into the error (reject).
    pub(crate) fn fail(&mut self, on_error: OnError, err: RowError) -> Result<(), FormatError> {
        match on_error {
            OnError::Skip => {
                self.skipped.push(err);
                Ok(())
            }
            OnError::Reject => Err(FormatError::Row(err)),
        }
    }
}
