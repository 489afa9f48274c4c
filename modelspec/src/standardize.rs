//! The per-column transform a model file applies before scoring.
//!
//! Federated models are trained on features with a fixed, public scale: every feature is in
//! `[0, medfl_accesslog::FEATURE_MAX]` by construction, so the transform is the identity and
//! no statistic of a hospital's data (a mean, a variance) shapes the model or leaves the
//! hospital. Standardizing with the data's own moments would be a release DP-SGD does not
//! cover. The transform stays in the file format so a scale released under its own DP charge
//! can be carried later.

use serde::{Deserialize, Serialize};

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
