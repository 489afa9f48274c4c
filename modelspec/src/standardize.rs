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
//! neither under DP) its scale is fitted with [`Moments`]: per column, the row count, mean and
//! sum of squared deviations, which merge exactly across hospitals, so a consortium's scale is
//! the merge of its members' moments. They say what the column sums and sums of squares say
//! (what one secure-aggregation round of them would release), computed without cancellation.

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

    /// Standardizes a row-major matrix in place, then refuses it if any value left the finite
    /// range (a value far outside the fitted scale overflows): a row that scales to infinity
    /// would score as not-a-number, and ranks nowhere. The error names the first such value's
    /// row and column (from 0).
    pub fn apply_finite(&self, data: &mut [f32]) -> Result<(), ModelError> {
        self.apply(data);
        let n = self.mean.len().max(1);
        match data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(ModelError::Shape(format!(
                "row {} column {} is out of the scale's range (it scales to {})",
                i / n,
                i % n,
                data[i]
            ))),
        }
    }

    /// Standardizes rows to be scored in place, holding a value the scale sends past f32's
    /// range at the largest finite value of its sign: such a row is the most unusual there
    /// is, and must score so (as `+inf`), not fail the rows scored beside it.
    pub fn apply_saturating(&self, data: &mut [f32]) {
        self.apply(data);
        for v in data.iter_mut().filter(|v| v.is_infinite()) {
            *v = f32::MAX.copysign(*v);
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

/// Per-column row count, mean and sum of squared deviations (`M2`) of a matrix's rows: what a
/// scale is fitted from. Parts merge exactly (Chan, Golub and LeVeque, 1979), so a
/// consortium's moments are the merge of its members'; they carry the same information as the
/// column sums and sums of squares, without the cancellation that `E[x^2] - E[x]^2` suffers
/// when a column's spread is small beside its magnitude.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    rows: f64,
    mean: Array1<f64>,
    m2: Array1<f64>,
}

impl Moments {
    /// No rows yet, of `n` columns.
    pub fn new(n: usize) -> Moments {
        Moments {
            rows: 0.0,
            mean: Array1::zeros(n),
            m2: Array1::zeros(n),
        }
    }

    /// Adds the rows of `data`, which must have this many columns.
    pub fn add(&mut self, data: ArrayView2<'_, f32>) -> Result<(), ModelError> {
        self.expect_columns(data.ncols())?;
        if data.nrows() == 0 {
            return Ok(());
        }
        // Two passes over the part: its mean, then the squared deviations from it.
        let x = data.mapv(f64::from);
        let rows = data.nrows() as f64;
        let mean = x.sum_axis(Axis(0)) / rows;
        let m2 = (x - &mean).mapv(|d| d * d).sum_axis(Axis(0));
        self.merge(&Moments { rows, mean, m2 })
    }

    /// Adds another matrix's moments (of the same columns).
    pub fn merge(&mut self, other: &Moments) -> Result<(), ModelError> {
        self.expect_columns(other.mean.len())?;
        if other.rows == 0.0 {
            return Ok(());
        }
        let rows = self.rows + other.rows;
        let delta = &other.mean - &self.mean;
        // Chan et al.: the pooled M2 is both parts' plus the spread between their means.
        self.m2 = &self.m2 + &other.m2 + delta.mapv(|d| d * d * self.rows * other.rows / rows);
        self.mean = &self.mean + delta * (other.rows / rows);
        self.rows = rows;
        Ok(())
    }

    fn expect_columns(&self, n: usize) -> Result<(), ModelError> {
        if n == self.mean.len() {
            Ok(())
        } else {
            Err(ModelError::Shape(format!(
                "moments of {} columns cannot take {n}",
                self.mean.len()
            )))
        }
    }

    /// The transform to zero mean and unit variance. A column with no spread (constant, or
    /// no rows) is only centred: dividing by its zero deviation would send any other value
    /// to infinity. A spread within a few f32 roundings of the column's root mean square
    /// counts as none: the f32 values it came from cannot resolve it, so it is rounding, not
    /// data. The test is relative, so a column of tiny values keeps its real spread.
    pub fn standardizer(&self) -> Standardizer {
        let n = self.rows.max(1.0);
        let (mut mean, mut inv_std) = (Vec::new(), Vec::new());
        for (m, m2) in self.mean.iter().zip(&self.m2) {
            let sd = (m2 / n).max(0.0).sqrt();
            let rms = (m * m + sd * sd).sqrt();
            mean.push(*m as f32);
            let inv = if sd > 4.0 * f64::from(f32::EPSILON) * rms {
                1.0 / sd
            } else {
                1.0
            };
            // A spread beyond f32's range would scale every value to 0 or infinity.
            let inv = inv as f32;
            inv_std.push(if inv.is_finite() && inv > 0.0 {
                inv
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
        let close = |a: &Moments, b: &Moments| {
            a.rows == b.rows
                && a.mean
                    .iter()
                    .zip(&b.mean)
                    .all(|(x, y)| (x - y).abs() < 1e-12)
                && a.m2.iter().zip(&b.m2).all(|(x, y)| (x - y).abs() < 1e-9)
        };
        assert!(close(&left, &whole), "{left:?} vs {whole:?}");
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
        // A value past the scale's range: refused for training, held finite for scoring.
        let narrow = Standardizer {
            mean: vec![0.0, 0.0],
            inv_std: vec![1.0, 1000.0],
        };
        let mut far = vec![1.0, -f32::MAX];
        let err = narrow.apply_finite(&mut far.clone()).unwrap_err();
        assert!(err.to_string().contains("row 0 column 1"), "{err}");
        narrow.apply_saturating(&mut far);
        assert_eq!(far, vec![1.0, -f32::MAX]);
    }

    #[test]
    fn a_small_spread_is_kept_at_any_magnitude_and_rounding_is_not_spread() {
        let col = |v: &[f32]| {
            let mut m = Moments::new(1);
            m.add(ArrayView2::from_shape((v.len(), 1), v).unwrap())
                .unwrap();
            m.standardizer().inv_std[0]
        };
        // Tiny values with a real spread: scaled by it (sd 1e-9), not left alone.
        let tiny = col(&[1e-9, 3e-9, 1e-9, 3e-9]);
        assert!((tiny - 1e9).abs() / 1e9 < 1e-4, "{tiny}");
        // Large values a few units apart: the spread is real (f32 resolves it), kept.
        let large = col(&[1e6, 1e6 + 2.0, 1e6, 1e6 + 2.0]);
        assert!((large - 1.0).abs() < 1e-4, "{large}");
        // A constant column of an awkward value: no spread, only centred.
        assert_eq!(col(&[0.1; 1000]), 1.0);
        // Parts of very different means merge to the whole's spread: 0 and 2, sd 1.
        let mut m = Moments::new(1);
        m.add(ArrayView2::from_shape((2, 1), &[0.0f32, 0.0]).unwrap())
            .unwrap();
        m.add(ArrayView2::from_shape((2, 1), &[2.0f32, 2.0]).unwrap())
            .unwrap();
        assert!((m.standardizer().inv_std[0] - 1.0).abs() < 1e-6);
    }
}
