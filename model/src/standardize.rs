//! Feature standardization with statistics that hospitals can aggregate.
//!
//! Each hospital computes per-column `(count, sum, sum of squares)`; these add across
//! hospitals (and so can go through secure aggregation), and the consortium-wide mean and
//! variance follow from the totals. No hospital reveals its own mean or spread.

use serde::{Deserialize, Serialize};

/// Largest factor a column is scaled by: rare binary flags (a VIP patient, 1% of rows) would
/// otherwise become values near 10 and dominate the reconstruction error of normal events.
const MAX_SCALE: f64 = 3.0;

/// Additive per-column moments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Rows seen.
    pub count: f64,
    /// Per-column sums.
    pub sum: Vec<f64>,
    /// Per-column sums of squares.
    pub sum_sq: Vec<f64>,
}

impl Moments {
    /// Moments of a row-major matrix with `n_cols` columns.
    pub fn of(data: &[f32], n_cols: usize) -> Moments {
        let mut m = Moments {
            count: 0.0,
            sum: vec![0.0; n_cols],
            sum_sq: vec![0.0; n_cols],
        };
        if n_cols == 0 {
            return m;
        }
        for row in data.chunks_exact(n_cols) {
            m.count += 1.0;
            for (j, &x) in row.iter().enumerate() {
                let x = f64::from(x);
                m.sum[j] += x;
                m.sum_sq[j] += x * x;
            }
        }
        m
    }

    /// Adds another hospital's moments (same width).
    pub fn add(&mut self, other: &Moments) {
        self.count += other.count;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.sum_sq.iter_mut().zip(&other.sum_sq) {
            *a += b;
        }
    }

    /// The standardizer these totals define.
    pub fn standardizer(&self) -> Standardizer {
        let n = self.count.max(1.0);
        let mean: Vec<f32> = self.sum.iter().map(|s| (s / n) as f32).collect();
        let inv_std = self
            .sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, sq)| {
                let var = (sq / n - (s / n).powi(2)).max(0.0);
                // A constant column carries no information; leave it centred, unscaled.
                if var > 1e-12 {
                    (1.0 / var.sqrt()).min(MAX_SCALE) as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer { mean, inv_std }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_moments_equal_moments_of_the_pooled_data() {
        let a = [1.0f32, 10.0, 2.0, 20.0];
        let b = [3.0f32, 30.0, 4.0, 40.0, 5.0, 50.0];
        let mut m = Moments::of(&a, 2);
        m.add(&Moments::of(&b, 2));
        let pooled: Vec<f32> = a.iter().chain(&b).copied().collect();
        assert_eq!(m, Moments::of(&pooled, 2));
        let s = m.standardizer();
        let mut x = pooled.clone();
        s.apply(&mut x);
        let col0: Vec<f32> = x.iter().step_by(2).copied().collect();
        let mean: f32 = col0.iter().sum::<f32>() / 5.0;
        let var: f32 = col0.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 5.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
}
