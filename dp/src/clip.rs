//! L2 clipping of update and gradient vectors.
//!
//! Clipping bounds each participant's contribution: after `clip(v, C)` the vector is
//! `v · min(1, C/‖v‖₂)`, so adding or removing one participant moves a sum by at most `C` in L2,
//! which is the sensitivity every Gaussian mechanism here is calibrated to.
//!
//! # Rounding
//!
//! The norm is accumulated in `f64` (for `f32` inputs too). Its relative error is below
//! `d·2^-53`, and rounding the scaled entries adds `2^-53` (`f64`) or `2^-24` (`f32`) per entry.
//! To keep the *exact* norm of the output at or below `C`, the scale factor is shrunk by
//! `2^-30` (`f64`) or `2^-22` (`f32`) — far more than those errors for `d < 2^22` — so
//! `‖clip(v, C)‖₂ ≤ C` holds exactly for every finite input of dimension below `2^22`, at a cost
//! of a relative change smaller than `2.4·10^-7`. The distributed mechanism additionally enforces
//! its bound exactly on integers after rounding (see [`crate::ddp`]).

use crate::error::{DpError, check_range};

/// Relative shrink of the `f64` scale factor that absorbs rounding (see module docs).
const SHRINK_F64: f64 = 1.0 - 1.0 / (1u64 << 30) as f64;
/// Relative shrink of the `f32` scale factor that absorbs rounding to `f32`.
const SHRINK_F32: f64 = 1.0 - 1.0 / (1u64 << 22) as f64;

/// The L2 norm of an `f64` vector, accumulated in `f64`; errors on NaN or infinite entries.
pub fn l2_norm(v: &[f64]) -> Result<f64, DpError> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    finite_norm(norm)
}

/// The L2 norm of an `f32` vector, accumulated in `f64`; errors on NaN or infinite entries.
pub fn l2_norm_f32(v: &[f32]) -> Result<f64, DpError> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    finite_norm(norm)
}

/// Rejects a non-finite norm (a NaN or infinite entry, or an overflowing sum of squares).
fn finite_norm(norm: f64) -> Result<f64, DpError> {
    if norm.is_finite() {
        Ok(norm)
    } else {
        Err(DpError::InvalidParameter {
            name: "vector norm",
            value: norm,
            reason: "vector has NaN/infinite entries or its norm overflows",
        })
    }
}

/// Checks a clipping bound: finite and positive.
fn check_clip(clip: f64) -> Result<f64, DpError> {
    check_range(
        "clip",
        clip,
        f64::MIN_POSITIVE,
        f64::MAX,
        "must be finite and positive",
    )
}

/// Scales `v` in place so that `‖v‖₂ ≤ clip`; returns the norm before clipping.
pub fn clip_l2(v: &mut [f64], clip: f64) -> Result<f64, DpError> {
    check_clip(clip)?;
    let norm = l2_norm(v)?;
    if norm > clip {
        let scale = clip / norm * SHRINK_F64;
        v.iter_mut().for_each(|x| *x *= scale);
    }
    Ok(norm)
}

/// Scales an `f32` vector in place so that `‖v‖₂ ≤ clip`; returns the norm before clipping.
pub fn clip_l2_f32(v: &mut [f32], clip: f64) -> Result<f64, DpError> {
    check_clip(clip)?;
    let norm = l2_norm_f32(v)?;
    if norm > clip {
        let scale = clip / norm * SHRINK_F32;
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) * scale) as f32);
    }
    Ok(norm)
}

/// The factor `min(1, clip/‖v‖₂)` (shrunk as in [`clip_l2`]) for per-example clipping in DP-SGD,
/// where the factor is applied to gradients that are never materialised per example.
pub fn clip_factor(norm: f64, clip: f64) -> Result<f64, DpError> {
    check_clip(clip)?;
    let norm = finite_norm(norm)?;
    Ok(if norm > clip {
        clip / norm * SHRINK_F64
    } else {
        1.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A more accurate norm (sorted, then summed in pairs) to check the bound independently.
    fn careful_norm(v: &[f64]) -> f64 {
        let mut sq: Vec<f64> = v.iter().map(|x| x * x).collect();
        sq.sort_by(f64::total_cmp);
        while sq.len() > 1 {
            sq = sq.chunks(2).map(|c| c.iter().sum()).collect();
        }
        sq.first().copied().unwrap_or(0.0).sqrt()
    }

    proptest! {
        #[test]
        fn clipped_f64_never_exceeds_bound(
            v in prop::collection::vec(-1e6f64..1e6, 1..300),
            clip in 1e-3f64..1e3,
        ) {
            let mut w = v.clone();
            let before = clip_l2(&mut w, clip).unwrap();
            prop_assert!(careful_norm(&w) <= clip);
            if before <= clip {
                prop_assert_eq!(w, v);
            } else {
                // Direction is kept and the norm is (almost) exactly the bound.
                prop_assert!(careful_norm(&w) >= clip * (1.0 - 1e-8));
            }
        }

        #[test]
        fn clipped_f32_never_exceeds_bound(
            v in prop::collection::vec(-1e4f32..1e4, 1..300),
            clip in 1e-3f64..1e3,
        ) {
            let mut w = v.clone();
            clip_l2_f32(&mut w, clip).unwrap();
            let wide: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
            prop_assert!(careful_norm(&wide) <= clip);
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(clip_l2(&mut [1.0, f64::NAN], 1.0).is_err());
        assert!(clip_l2(&mut [1.0], -1.0).is_err());
        assert!(clip_l2(&mut [1.0], f64::NAN).is_err());
        assert!(clip_l2_f32(&mut [f32::INFINITY], 1.0).is_err());
        assert!(clip_factor(f64::NAN, 1.0).is_err());
        assert_eq!(clip_factor(0.5, 1.0).unwrap(), 1.0);
    }
}
