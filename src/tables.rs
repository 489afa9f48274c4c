//! A consortium of hospital tables (`medfl experiment --tables`): each CSV is one hospital's
//! numeric table with a label column, judged by the same comparison as a simulated
//! consortium's access logs.
//!
//! What a table brings that a log does not, and how it is handled:
//! - **Its width.** The network takes the tables' width; every table must have the same
//!   columns in the same order, and one that does not is refused by name.
//! - **No time.** A log splits by day; a table's rows are shuffled with the seed and split
//!   60/20/20 into training (used unlabelled, anomalies and all), validation (its normal rows
//!   set each hospital's threshold) and test rows. A split column (`--split-column`) keeps a
//!   data set's own split instead.
//! - **No scale.** Access features have a fixed public scale; a table's columns may be
//!   millimetres beside counts. The consortium's scale is fitted on the training rows of all
//!   hospitals together from each hospital's column sums and sums of squares
//!   ([`Moments`]), which is what one secure-aggregation round of them would release: no row
//!   leaves a hospital, but the experiment is not under DP.
//! - **No employees.** A row names nobody, so there are no cases to review and the unit a DP
//!   run would protect is the row. The networked consortium trains on access events only,
//!   where the unit is the employee (`medfl client` refuses a table, saying why).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use medfl_accesslog::OnError;
use medfl_accesslog::tabular::{Part, Table, read_table_split};
use medfl_model::evaluate::Labels;
use medfl_model::experiment::HospitalData;
use medfl_model::policy::AlertPolicy;
use medfl_model::standardize::{Moments, Standardizer};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How hospital tables are read and split.
#[derive(Clone, Copy, Debug)]
pub struct TableSplit<'a> {
    /// The label column (anomalous or not): needed to judge.
    pub label_column: &'a str,
    /// A column of `train`/`validation`/`test`; `None`: a seeded 60/20/20 shuffle.
    pub split_column: Option<&'a str>,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Whether a malformed row refuses its file or is skipped (and reported).
    pub on_error: OnError,
}

/// Reads `paths` (one hospital each, named by file stem), splits and scales them; returns the
/// hospitals' experiment inputs and the scale their rows were put through.
pub fn consortium_tables(
    paths: &[PathBuf],
    split: TableSplit<'_>,
) -> Result<(Vec<HospitalData>, Standardizer)> {
    if paths.len() < 2 {
        bail!("a consortium needs at least two hospital tables");
    }
    let mut read: Vec<(PathBuf, Table, String)> = Vec::with_capacity(paths.len());
    for path in paths {
        let table = read_one(path, split)?;
        if let Some((first_path, first, _)) = read.first()
            && first.columns != table.columns
        {
            bail!(
                "{} has columns {:?}; {} has {:?}: every hospital's table needs the same \
                 columns in the same order",
                path.display(),
                table.columns,
                first_path.display(),
                first.columns
            );
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        if read.iter().any(|(_, _, n)| *n == name) {
            bail!("two tables are named {name:?}: rename one, hospitals are told apart by name");
        }
        read.push((path.clone(), table, name));
    }
    let mut hospitals = Vec::with_capacity(read.len());
    for (i, (path, table, name)) in read.into_iter().enumerate() {
        let seed = split.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = split_one(table, name, seed)
            .with_context(|| format!("splitting {}", path.display()))?;
        hospitals.push(h);
    }
    let n_cols = hospitals.first().map_or(0, |h| h.n_cols);
    let mut moments = Moments::new(n_cols);
    for h in &hospitals {
        let train = ArrayView2::from_shape((h.train.len() / n_cols.max(1), n_cols), &h.train)?;
        moments.add(train)?;
    }
    let scale = moments.standardizer();
    for h in &mut hospitals {
        for (part, rows) in [
            ("training", &mut h.train),
            ("normal validation", &mut h.validation_normal),
        ] {
            scale
                .apply_finite(rows)
                .with_context(|| format!("scaling {}'s {part} rows", h.name))?;
        }
        // A test row past the scale is judged, as the most unusual row there is.
        scale.apply_saturating(&mut h.test);
    }
    Ok((hospitals, scale))
}

fn read_one(path: &Path, split: TableSplit<'_>) -> Result<Table> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let table = read_table_split(
        BufReader::new(file),
        Some(split.label_column),
        split.split_column,
        split.on_error,
    )
    .with_context(|| format!("reading {}", path.display()))?;
    if let Some(first) = table.skipped.first() {
        eprintln!(
            "warning: {}: skipped {} malformed rows (first at line {}: {})",
            path.display(),
            table.skipped.len(),
            first.line,
            first.message
        );
    }
    Ok(table)
}

/// Splits one table by its split column or, without one, by a seeded 60/20/20 shuffle.
fn split_one(table: Table, name: String, seed: u64) -> Result<HospitalData> {
    let n = table.n_rows();
    let labels = table.labels.clone().unwrap_or_default();
    let parts: Vec<Part> = match &table.parts {
        Some(p) => p.clone(),
        None => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            let (train_end, validation_end) = (n * 3 / 5, n * 4 / 5);
            let mut parts = vec![Part::Train; n];
            for (rank, &row) in order.iter().enumerate() {
                if rank >= validation_end {
                    parts[row] = Part::Test;
                } else if rank >= train_end {
                    parts[row] = Part::Validation;
                }
            }
            parts
        }
    };
    let mut h = HospitalData {
        name,
        n_cols: table.n_cols,
        train: Vec::new(),
        train_employees: Vec::new(),
        validation_normal: Vec::new(),
        test: Vec::new(),
        test_labels: Labels::Binary(Vec::new()),
        test_keys: Vec::new(),
        employees: 0,
        // A table's rows have no roles to hold a policy against.
        policy: AlertPolicy::ScoreOnly,
    };
    let mut test_labels = Vec::new();
    for (row, part) in parts.iter().enumerate() {
        let values = table.row(row);
        let anomalous = labels.get(row).copied().unwrap_or(false);
        match part {
            Part::Train => {
                // A row names nobody: each is its own unit.
                h.train_employees.push(h.train_employees.len() as u64);
                h.train.extend(values.iter());
            }
            Part::Validation if !anomalous => h.validation_normal.extend(values.iter()),
            Part::Validation => {}
            Part::Test => {
                h.test.extend(values.iter());
                test_labels.push(anomalous);
            }
        }
    }
    let rows = |v: &[f32]| v.len() / table.n_cols.max(1);
    if rows(&h.train) == 0 || rows(&h.validation_normal) == 0 || test_labels.is_empty() {
        bail!(
            "{n} rows give {} training rows, {} normal validation rows and {} test rows; each \
             must be at least one (a shuffled table needs at least 5 rows; a label is normal \
             when empty, 0 or one of {:?}, and anomalous otherwise)",
            rows(&h.train),
            rows(&h.validation_normal),
            test_labels.len(),
            medfl_accesslog::tabular::NORMAL_LABELS
        );
    }
    h.test_labels = Labels::Binary(test_labels);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn opts(split_column: Option<&str>) -> TableSplit<'_> {
        TableSplit {
            label_column: "y",
            split_column,
            seed: 1,
            on_error: OnError::Reject,
        }
    }

    #[test]
    fn tables_split_scale_and_keep_their_parts() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.csv",
            "x,z,part,y\n1,10,train,0\n3,30,train,1\n5,50,validation,0\n7,70,validation,1\n9,90,test,1\n",
        );
        let b = write(
            dir.path(),
            "b.csv",
            "x,z,part,y\n2,20,train,0\n4,40,validation,0\n6,60,test,0\n",
        );
        let (h, scale) = consortium_tables(&[a.clone(), b.clone()], opts(Some("part"))).unwrap();
        assert_eq!((h[0].name.as_str(), h[1].name.as_str()), ("a", "b"));
        // Train rows 1, 3 and 2 (x): mean 2, so x = 2 maps to 0; z is x times ten.
        assert_eq!(scale.mean, vec![2.0, 20.0]);
        assert_eq!(h[1].train, vec![0.0, 0.0]);
        // An anomalous validation row sets no threshold; the test rows keep their labels.
        assert_eq!(h[0].validation_normal.len(), 2);
        assert_eq!(h[0].test_labels, Labels::Binary(vec![true]));
        assert_eq!(h[1].test_labels, Labels::Binary(vec![false]));
        // Without the split column the part column is not a number: refused with its line.
        let err = consortium_tables(&[a.clone(), b.clone()], opts(None)).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        // Columns must agree across hospitals.
        let c = write(dir.path(), "c.csv", "z,x,part,y\n1,1,train,0\n");
        let err = consortium_tables(&[a.clone(), c], opts(Some("part"))).unwrap_err();
        assert!(format!("{err:#}").contains("same columns"), "{err:#}");
        // A hospital with no normal validation row cannot set a threshold.
        let d = write(dir.path(), "d.csv", "x,z,part,y\n1,1,train,0\n2,2,test,0\n");
        let err = consortium_tables(&[a, d], opts(Some("part"))).unwrap_err();
        assert!(
            format!("{err:#}").contains("0 normal validation rows"),
            "{err:#}"
        );
    }

    #[test]
    fn a_shuffled_split_is_seeded_and_covers_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let body: String = (0..50).map(|i| format!("{i},{}\n", i % 2)).collect();
        let a = write(dir.path(), "a.csv", &format!("x,y\n{body}"));
        let b = write(dir.path(), "b.csv", &format!("x,y\n{body}"));
        let run = |seed| {
            let (h, _) =
                consortium_tables(&[a.clone(), b.clone()], TableSplit { seed, ..opts(None) })
                    .unwrap();
            h
        };
        let (one, again, other) = (run(1), run(1), run(2));
        assert_eq!(one[0].test, again[0].test);
        assert_ne!(one[0].test, other[0].test);
        // Two hospitals with the same rows are not split alike.
        assert_ne!(one[0].test, one[1].test);
        // 30 train, 10 validation (normal ones kept), 10 test.
        assert_eq!(one[0].train.len(), 30);
        assert_eq!(one[0].test.len(), 10);
        assert!(one[0].validation_normal.len() <= 10);
    }
}
