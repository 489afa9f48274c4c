//! Randomized Hadamard rotation, the "flattening" step of the distributed discrete Gaussian.
//!
//! # Math
//!
//! For `n = 2^k`, the Walsh–Hadamard matrix `H_n` has entries `±1` with `H_n H_n = n·I`, so
//! `H_n/√n` is orthogonal and its own inverse. With `D = diag(s)` for independent uniform signs
//! `s_i ∈ {±1}`, the rotation `R = H_n D/√n` is orthogonal (it keeps L2 norms, so clipping and
//! sensitivity survive it) and `R⁻¹ = D H_n/√n`. Each output coordinate `(Rx)_j = Σ_i ±s_i x_i/√n`
//! is a Rademacher sum, hence sub-Gaussian with variance proxy `‖x‖²/n`: the rotation spreads a
//! vector's energy evenly, so no coordinate is much larger than `‖x‖/√n` with high probability.
//! That is what lets a small modulus hold the aggregate (Kairouz, Liu & Steinke 2021, §4.2).
//!
//! The fast transform computes `H_n x` in `n log2 n` additions in place (butterflies on pairs
//! `(i, i + h)` for `h = 1, 2, 4, …`). Inputs shorter than a power of two are zero-padded.
//!
//! The signs come from a 32-byte seed expanded with ChaCha20, so every client and the server
//! derive the same rotation from a seed agreed for the round; the seed must be chosen
//! independently of the data (the tail bound in [`crate::ddp`] is over its randomness).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::DpError;

/// The largest padded dimension supported (`2^30` coordinates).
pub const MAX_PADDED_DIM: usize = 1 << 30;

/// The smallest power of two at least `dim`; errors on zero or above [`MAX_PADDED_DIM`].
pub fn padded_len(dim: usize) -> Result<usize, DpError> {
    if dim == 0 || dim > MAX_PADDED_DIM {
        return Err(DpError::InvalidCount {
            name: "dimension",
            value: dim as u64,
            reason: "must be in 1..=2^30",
        });
    }
    Ok(dim.next_power_of_two())
}

/// In-place unnormalised fast Walsh–Hadamard transform; `v.len()` must be a power of two.
pub fn fwht(v: &mut [f64]) -> Result<(), DpError> {
    let n = v.len();
    if !n.is_power_of_two() {
        return Err(DpError::InvalidCount {
            name: "transform length",
            value: n as u64,
            reason: "must be a power of two",
        });
    }
    let mut h = 1;
    while h < n {
        // Each block of 2h holds h butterflies (a, b) -> (a + b, a - b).
        for block in v.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        h *= 2;
    }
    Ok(())
}

/// The rotation `H D/√n` for a given padded length and sign seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomRotation {
    /// Original (unpadded) dimension.
    dim: usize,
    /// Padded dimension `n`, a power of two.
    padded: usize,
    /// Sign bits, one per padded coordinate: bit set means `s_i = -1`.
    signs: Vec<u64>,
}

impl RandomRotation {
    /// A rotation for vectors of length `dim`, with signs expanded from `seed`.
    pub fn new(dim: usize, seed: [u8; 32]) -> Result<Self, DpError> {
        let padded = padded_len(dim)?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let signs = (0..padded.div_ceil(64)).map(|_| rng.next_u64()).collect();
        Ok(Self { dim, padded, signs })
    }

    /// The unpadded dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The padded dimension `n` (a power of two).
    pub fn padded_dim(&self) -> usize {
        self.padded
    }

    /// Multiplies `v` (of the padded length) by `D` in place.
    fn apply_signs(&self, v: &mut [f64]) {
        for (chunk, &word) in v.chunks_mut(64).zip(&self.signs) {
            for (i, x) in chunk.iter_mut().enumerate() {
                if (word >> i) & 1 == 1 {
                    *x = -*x;
                }
            }
        }
    }

    /// `R x`: pads `x` (length `dim`) with zeros and rotates; output has the padded length.
    pub fn forward(&self, x: &[f64]) -> Result<Vec<f64>, DpError> {
        if x.len() != self.dim {
            return Err(DpError::LengthMismatch {
                expected: self.dim,
                got: x.len(),
            });
        }
        let mut v = vec![0.0; self.padded];
        v[..self.dim].copy_from_slice(x);
        self.apply_signs(&mut v);
        fwht(&mut v)?;
        let norm = 1.0 / (self.padded as f64).sqrt();
        v.iter_mut().for_each(|x| *x *= norm);
        Ok(v)
    }

    /// `R⁻¹ y = D H y/√n`, truncated back to length `dim`.
    pub fn inverse(&self, y: &[f64]) -> Result<Vec<f64>, DpError> {
        if y.len() != self.padded {
            return Err(DpError::LengthMismatch {
                expected: self.padded,
                got: y.len(),
            });
        }
        let mut v = y.to_vec();
        fwht(&mut v)?;
        let norm = 1.0 / (self.padded as f64).sqrt();
        v.iter_mut().for_each(|x| *x *= norm);
        self.apply_signs(&mut v);
        v.truncate(self.dim);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fwht_matches_definition() {
        // H_4 rows: ++++, +-+-, ++--, +--+.
        let mut v = [1.0, 2.0, 3.0, 4.0];
        fwht(&mut v).unwrap();
        assert_eq!(v, [10.0, -2.0, -4.0, 0.0]);
        assert!(fwht(&mut [1.0, 2.0, 3.0]).is_err());
    }

    #[test]
    fn padding_and_bad_dims() {
        assert_eq!(padded_len(1).unwrap(), 1);
        assert_eq!(padded_len(5).unwrap(), 8);
        assert_eq!(padded_len(1024).unwrap(), 1024);
        assert!(padded_len(0).is_err());
        let r = RandomRotation::new(5, [1; 32]).unwrap();
        assert!(r.forward(&[1.0; 4]).is_err());
        assert!(r.inverse(&[1.0; 5]).is_err());
    }

    #[test]
    fn rotation_spreads_a_spike() {
        let r = RandomRotation::new(1 << 10, [7; 32]).unwrap();
        let mut x = vec![0.0; 1 << 10];
        x[3] = 32.0;
        let y = r.forward(&x).unwrap();
        // A unit spike becomes n coordinates of magnitude |x|/sqrt(n) = 1.
        assert!(y.iter().all(|v| (v.abs() - 1.0).abs() < 1e-12));
    }

    proptest! {
        #[test]
        fn inverse_undoes_forward_and_keeps_norm(
            x in prop::collection::vec(-100.0f64..100.0, 1..200),
            seed in any::<[u8; 32]>(),
        ) {
            let r = RandomRotation::new(x.len(), seed).unwrap();
            let y = r.forward(&x).unwrap();
            let n0: f64 = x.iter().map(|v| v * v).sum();
            let n1: f64 = y.iter().map(|v| v * v).sum();
            prop_assert!((n0 - n1).abs() <= 1e-9 * (1.0 + n0));
            let back = r.inverse(&y).unwrap();
            for (a, b) in x.iter().zip(&back) {
                prop_assert!((a - b).abs() < 1e-9);
            }
        }
    }
}
