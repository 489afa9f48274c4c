//! The per-column transform a model file applies before scoring.
//!
//! Federated models are trained on features with a fixed, public scale: every feature is in
//! `[0, medfl_accesslog::FEATURE_MAX]` by construction, so the transform is the identity and
//! no statistic of a hospital's data (a mean, a variance) shapes the model or leaves the
//! hospital. Standardizing with the data's own moments would be a release DP-SGD does not
//! cover. The transform stays in the file format so a scale released under its own DP charge
//! can be carried later.
//!
//! A numeric table has no public scale: its columns may be millimetres beside counts. Outside
//! the networked consortium (`medfl train` inside one hospital, and the table experiments,
//! neither under DP) its scale is fitted with [`Moments`]: per column, the row count, sum and
//! sum of squares, which add across hospitals, so a consortium's scale is the sum of its
//! members' moments (what one secure-aggregation round of them would release).

use ndarray::{Array1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Per-column `(x - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Column means.
    pub mean: Vec<f32>,
    /// Column reciprocal standard deviations.
    pub inv_std: Vec<f32>,
}

impl Standardizer {
    /// The identity transform for `n` columns.
    pub fn identity(n: usize) -> Standardizer {
        Standardizer {
            mean: vec![0.0; n],
            inv_std: vec![1.0; n],
        }
    }

    /// Standardizes a row-major matrix in place.
    pub fn apply(&self, data: &mut [f32]) {
        let n = self.mean.len();
        if n == 0 {
            return;
        }
        for row in data.chunks_exact_mut(n) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.inv_std) {
                *x = (*x - m) * s;
            }
        }
    }
}

/// Per-column sums of a matrix's rows: what a scale is fitted from, and what adds across
/// hospitals.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    rows: f64,
    sum: Array1<f64>,
    sum_sq: Array1<f64>,
}

impl Moments {
    /// No rows yet, of `n` columns.
    pub fn new(n: usize) -> Moments {
        Moments {
            rows: 0.0,
            sum: Array1::zeros(n),
            sum_sq: Array1::zeros(n),
        }
    }

    /// Adds the rows of `data`, which must have this many columns.
    pub fn add(&mut self, data: ArrayView2<'_, f32>) -> Result<(), ModelError> {
        self.expect_columns(data.ncols())?;
        let x = data.mapv(f64::from);
        self.rows += data.nrows() as f64;
        self.sum += &x.sum_axis(Axis(0));
        self.sum_sq += &x.mapv(|v| v * v).sum_axis(Axis(0));
        Ok(())
    }

    /// Adds another matrix's moments (of the same columns).
    pub fn merge(&mut self, other: &Moments) -> Result<(), ModelError> {
        self.expect_columns(other.sum.len())?;
        self.rows += other.rows;
        self.sum += &other.sum;
        self.sum_sq += &other.sum_sq;
        Ok(())
    }

    fn expect_columns(&self, n: usize) -> Result<(), ModelError> {
        if n == self.sum.len() {
            Ok(())
        } else {
            Err(ModelError::Shape(format!(
                "moments of {} columns cannot take {n}",
                self.sum.len()
            )))
        }
    }

    /// The transform to zero mean and unit variance. A column with no spread (constant, or
    /// no rows) is only centred: dividing by its zero deviation would send any other value
    /// to infinity. A spread below a millionth of the column's magnitude counts as none: it is
    /// under the resolution of the f32 values it came from, so it is rounding, not data.
    pub fn standardizer(&self) -> Standardizer {
        let n = self.rows.max(1.0);
        let (mut mean, mut inv_std) = (Vec::new(), Vec::new());
        for (s, q) in self.sum.iter().zip(&self.sum_sq) {
            let m = s / n;
            // Rounding can leave a constant column a tiny negative variance.
            let sd = (q / n - m * m).max(0.0).sqrt();
            mean.push(m as f32);
            let inv = if sd > 1e-6 * m.abs().max(1.0) {
                1.0 / sd
            } else {
                1.0
            };
            inv_std.push(if (inv as f32).is_finite() {
                inv as f32
            } else {
                1.0
            });
        }
        Standardizer { mean, inv_std }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_add_across_parts_and_standardize() {
        // Two columns: one spread, one constant.
        let a = [1.0f32, 5.0, 3.0, 5.0];
        let b = [5.0f32, 5.0];
        let view = |v: &[f32]| {
            ArrayView2::from_shape((v.len() / 2, 2), v)
                .unwrap()
                .to_owned()
        };
        let mut whole = Moments::new(2);
        whole
            .add(view(&[a.as_slice(), b.as_slice()].concat()).view())
            .unwrap();
        let (mut left, mut right) = (Moments::new(2), Moments::new(2));
        left.add(view(&a).view()).unwrap();
        right.add(view(&b).view()).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left, whole);
        // Another width is refused, never broadcast or truncated.
        assert!(left.merge(&Moments::new(3)).is_err());
        assert!(
            left.add(
                view(&[1.0; 6])
                    .into_shape_with_order((2, 3))
                    .unwrap()
                    .view()
            )
            .is_err()
        );
        let s = whole.standardizer();
        // Column 0: 1, 3, 5: mean 3, population sd sqrt(8/3).
        assert!((s.mean[0] - 3.0).abs() < 1e-6);
        assert!((s.inv_std[0] - (3.0f32 / 8.0).sqrt()).abs() < 1e-6);
        // Column 1 is constant: centred, not scaled.
        assert_eq!((s.mean[1], s.inv_std[1]), (5.0, 1.0));
        let mut rows = vec![1.0, 5.0, 5.0, 6.0];
        s.apply(&mut rows);
        assert!(rows.iter().all(|v| v.is_finite()));
        assert_eq!(rows[3], 1.0);
    }
}
