//! A plain numeric table in CSV: a header row, then one record per row of numbers, with an
//! optional label column. This is how third-party anomaly data sets (and medfl's own exported
//! feature matrices) come in, so the model can be trained and compared on them too.

use std::io::BufRead;

use ndarray::{Array2, ArrayView1};

use crate::error::{FormatError, OnError, RowError};
use crate::lines::{Lines, split_csv};

/// A numeric table read from CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Names of the numeric columns, in order (the label column excluded).
    pub columns: Vec<String>,
    /// Number of numeric columns (`columns.len()`).
    pub n_cols: usize,
    /// The values, a row per record; every value is finite.
    pub data: Array2<f32>,
    /// One label per row (`true` = anomalous) when a label column was named.
    pub labels: Option<Vec<bool>>,
    /// Which part of an experiment each row belongs to, when a split column was named.
    pub parts: Option<Vec<Part>>,
    /// Rows skipped under [`OnError::Skip`].
    pub skipped: Vec<RowError>,
}

impl Table {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.data.nrows()
    }

    /// Row `i` (panics if out of range, like slice indexing).
    pub fn row(&self, i: usize) -> ArrayView1<'_, f32> {
        self.data.row(i)
    }
}

/// The part of an experiment a row is for, as a table's split column names it (`train`,
/// `validation` or `test`, any case): how a data set's published split is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Training rows (used unlabelled).
    Train,
    /// Rows whose normal ones set the alert threshold.
    Validation,
    /// Rows judged.
    Test,
}

impl Part {
    fn parse(cell: &str) -> Option<Part> {
        let c = cell.trim();
        [
            ("train", Part::Train),
            ("validation", Part::Validation),
            ("test", Part::Test),
        ]
        .into_iter()
        .find_map(|(name, part)| c.eq_ignore_ascii_case(name).then_some(part))
    }
}

/// The words a label cell may use for a normal row (any case), beside empty and 0.
pub const NORMAL_LABELS: [&str; 7] = [
    "normal", "benign", "inlier", "negative", "false", "no", "nominal",
];

/// Whether a label cell means anomalous: anything but empty, `0` (or a number equal to 0) and
/// one of [`NORMAL_LABELS`].
pub fn label_is_anomalous(cell: &str) -> bool {
    let c = cell.trim();
    if c.is_empty() || NORMAL_LABELS.iter().any(|w| c.eq_ignore_ascii_case(w)) {
        return false;
    }
    match c.parse::<f64>() {
        Ok(v) => v != 0.0,
        Err(_) => true,
    }
}

/// Reads a numeric CSV table. `label` names the label column, which must then exist in the
/// header; every other column must hold finite numbers. Blank lines are ignored.
pub fn read_table<R: BufRead>(
    r: R,
    label: Option<&str>,
    on_error: OnError,
) -> Result<Table, FormatError> {
    read_table_split(r, label, None, on_error)
}

/// [`read_table`], with `split` naming a column of [`Part`]s (which must then exist, and be
/// another column than the label's).
pub fn read_table_split<R: BufRead>(
    r: R,
    label: Option<&str>,
    split: Option<&str>,
    on_error: OnError,
) -> Result<Table, FormatError> {
    let mut lines = Lines::new(r);
    let mut fields = Vec::new();
    lines.read_header(&mut fields)?;
    let header: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
    if header.iter().any(String::is_empty) {
        return Err(FormatError::BadHeader("empty column name".into()));
    }
    // Two columns of one name: which one is the label, and which the other table's column of
    // that name lines up with, would be a guess.
    let mut seen = std::collections::HashMap::with_capacity(header.len());
    for (i, h) in header.iter().enumerate() {
        if let Some(first) = seen.insert(h.as_str(), i) {
            return Err(FormatError::BadHeader(format!(
                "column {h:?} is named twice (columns {} and {})",
                first + 1,
                i + 1
            )));
        }
    }
    let find = |name: Option<&str>, what: &str| match name {
        None => Ok(None),
        Some(name) => header
            .iter()
            .position(|h| h == name)
            .map(Some)
            .ok_or_else(|| FormatError::BadHeader(format!("no {what} column {name:?}"))),
    };
    let label_idx = find(label, "label")?;
    let split_idx = find(split, "split")?;
    if split_idx.is_some() && split_idx == label_idx {
        return Err(FormatError::BadHeader(
            "the split column cannot be the label column".into(),
        ));
    }
    let columns: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != label_idx && Some(*i) != split_idx)
        .map(|(_, h)| h.clone())
        .collect();
    if columns.is_empty() {
        return Err(FormatError::BadHeader("no numeric columns".into()));
    }
    let n_cols = columns.len();
    let mut table = Table {
        columns,
        n_cols,
        data: Array2::zeros((0, n_cols)),
        labels: label_idx.map(|_| Vec::new()),
        parts: split_idx.map(|_| Vec::new()),
        skipped: Vec::new(),
    };
    let mut row = Vec::with_capacity(n_cols);
    // Rows are gathered flat, then shaped once.
    let mut values = Vec::new();
    while let Some((line, text)) = lines.next_line()? {
        let parsed = text.and_then(|text| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            let fail = |message: String| RowError { line, message };
            split_csv(text, &mut fields).map_err(fail)?;
            if fields.len() != header.len() {
                return Err(fail(format!(
                    "expected {} columns, found {}",
                    header.len(),
                    fields.len()
                )));
            }
            row.clear();
            let (mut lab, mut part) = (false, Part::Train);
            for (i, cell) in fields.iter().enumerate() {
                if Some(i) == label_idx {
                    lab = label_is_anomalous(cell);
                    continue;
                }
                if Some(i) == split_idx {
                    part = Part::parse(cell).ok_or_else(|| {
                        fail(format!(
                            "column {:?}: {cell:?} is not train, validation or test",
                            header[i]
                        ))
                    })?;
                    continue;
                }
                let v: f32 = cell.trim().parse().map_err(|_| {
                    fail(format!("column {:?}: {cell:?} is not a number", header[i]))
                })?;
                if !v.is_finite() {
                    return Err(fail(format!(
                        "column {:?}: {cell:?} is not finite",
                        header[i]
                    )));
                }
                row.push(v);
            }
            Ok(Some((lab, part)))
        });
        match parsed {
            Ok(Some((lab, part))) => {
                values.extend_from_slice(&row);
                if let Some(l) = table.labels.as_mut() {
                    l.push(lab);
                }
                if let Some(p) = table.parts.as_mut() {
                    p.push(part);
                }
            }
            Ok(None) => {}
            Err(e) => match on_error {
                OnError::Skip => table.skipped.push(e),
                OnError::Reject => return Err(FormatError::Row(e)),
            },
        }
    }
    let rows = values.len() / n_cols;
    table.data = Array2::from_shape_vec((rows, n_cols), values)
        .map_err(|e| FormatError::BadHeader(format!("{rows} rows of {n_cols} columns: {e}")))?;
    Ok(table)
}
