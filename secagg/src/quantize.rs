//! From `f32` model updates to `Z_{2^b}` and back, with unbiased rounding and
//! overflow-free (weighted) sums.
//!
//! # Encoding
//!
//! A value `x` is clipped to `[-c, c]` and mapped affinely onto `[0, L]`:
//!
//! ```text
//!     y = (clip(x) + c) / (2c) · L,        q = ⌊y⌋ + Bernoulli(y - ⌊y⌋).
//! ```
//!
//! Stochastic rounding makes `E[q] = y`, so the decoded sum is an unbiased
//! estimate of the sum of clipped values; the rounding noise per coordinate
//! has variance at most `1/4` quantization steps.
//!
//! The Bernoulli draw compares a 52-bit uniform `u = k / 2^52` with
//! `y - ⌊y⌋`. For `y ≥ 1` that fraction is a multiple of `2^-52` (`y` is an
//! `f64`), so `P(u < y - ⌊y⌋)` equals it exactly and `E[q] = y` holds exactly
//! for the computed `y`; for `y < 1` the bias is below `2^-52` of a step.
//! (`y` itself is `f64`-rounded, a relative error of at most `2^-52`.)
//!
//! The uniforms come from one 32-byte seed drawn from the caller's RNG and
//! expanded with the mask PRG ([`crate::prg`], domain
//! [`MaskDomain::Rounding`]): 8 keystream bytes per coordinate, generated in
//! bulk, instead of one RNG call per coordinate.
//!
//! # No wrap-around
//!
//! SecAgg computes sums mod `2^b`; a sum that exceeds `2^b - 1` silently wraps
//! and decodes to garbage. Every `q ≤ L`, so with at most `n` summands the
//! true sum is at most `n · L`, and choosing `L = ⌊(2^b - 1) / n⌋` guarantees
//! it fits. [`Quantizer::new`] does exactly that (capped at `2^53` so that
//! `y` is exact in `f64`).
//!
//! # Weighted averages
//!
//! [`WeightedQuantizer`] sends `(w·q_1, …, w·q_d, w)` for an integer weight
//! `w ≤ W_max` (e.g. a local sample count). The aggregate is
//! `(Σ w_i q_i, Σ w_i)`, from which the weighted mean follows by one division.
//! With `n` clients the sums are bounded by `n · W_max · L` and `n · W_max`,
//! so `L = ⌊(2^b - 1) / (n · W_max)⌋`; if that is zero (the weights alone
//! could overflow) construction fails with [`SecAggError::Overflow`], and a
//! weight above `W_max` is refused at encoding time, so no accepted input can
//! wrap.

use rand::CryptoRng;

use crate::error::SecAggError;
use crate::prg::{Keystream, MaskDomain, Seed};

/// Coordinates encoded per keystream refill (16 KiB of randomness).
const CHUNK: usize = 2048;

/// Largest level count; keeps `y` and `q` exactly representable in `f64`.
pub const MAX_LEVELS: u64 = 1 << 53;

fn max_value(bits: u32) -> Result<u64, SecAggError> {
    match bits {
        1..=63 => Ok((1u64 << bits) - 1),
        64 => Ok(u64::MAX),
        _ => Err(SecAggError::InvalidConfig("bits must be in 1..=64")),
    }
}

/// Maps clipped floats to `[0, L] ⊂ Z_{2^b}` with unbiased stochastic rounding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    clip: f32,
    levels: u64,
    bits: u32,
}

impl Quantizer {
    /// A quantizer whose sums over up to `max_summands` clients never wrap in `Z_{2^bits}`.
    pub fn new(clip: f32, bits: u32, max_summands: u64) -> Result<Self, SecAggError> {
        let max = max_value(bits)?;
        if max_summands == 0 {
            return Err(SecAggError::InvalidConfig("max_summands must be positive"));
        }
        Self::with_levels(clip, bits, (max / max_summands).min(MAX_LEVELS))
    }

    /// A quantizer with an explicit level count `L` (caller ensures sums fit).
    pub fn with_levels(clip: f32, bits: u32, levels: u64) -> Result<Self, SecAggError> {
        let max = max_value(bits)?;
        if !(clip.is_finite() && clip > 0.0) {
            return Err(SecAggError::InvalidConfig(
                "clip must be finite and positive",
            ));
        }
        if levels == 0 || levels > max || levels > MAX_LEVELS {
            return Err(SecAggError::Overflow {
                bits,
                reason: "no level count fits: too many summands for this bit width",
            });
        }
        Ok(Self { clip, levels, bits })
    }

    /// The level count `L`.
    pub fn levels(&self) -> u64 {
        self.levels
    }

    /// The clipping bound `c`.
    pub fn clip(&self) -> f32 {
        self.clip
    }

    /// The bit width of the target ring.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Clips, scales and stochastically rounds `x`; rejects NaN.
    ///
    /// Draws one 32-byte seed from `rng` for the rounding randomness (module docs).
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        x: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u64>, SecAggError> {
        if let Some(i) = x.iter().position(|v| v.is_nan()) {
            return Err(SecAggError::NotANumber(i));
        }
        let mut seed = Seed([0u8; 32]);
        rng.fill_bytes(&mut seed.0);
        let mut stream = Keystream::new(&seed, MaskDomain::Rounding);
        let c = f64::from(self.clip);
        let l = self.levels as f64;
        // One multiplication per coordinate instead of a division.
        let scale = l / (2.0 * c);
        let fast = self.levels < 1 << 52;
        let mut random = vec![0u8; 8 * CHUNK];
        let mut out = vec![0u64; x.len()];
        for (xs, qs) in x.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            let random = &mut random[..8 * xs.len()];
            stream.fill(random);
            let items = qs.iter_mut().zip(xs).zip(random.chunks_exact(8));
            if fast {
                for ((q, &v), r) in items {
                    *q = round_below_2_52(scaled(v, c, scale, l), uniform52(r));
                }
            } else {
                for ((q, &v), r) in items {
                    let y = scaled(v, c, scale, l);
                    // y <= L <= 2^53 is non-negative, so truncation is floor.
                    let lo = y as i64;
                    *q = (lo + i64::from(uniform52(r) < y - lo as f64)) as u64;
                }
            }
        }
        Ok(out)
    }

    /// Decodes an aggregate of `count` encoded vectors into the sum of (clipped) values.
    pub fn decode_sum(&self, sum: &[u64], count: u64) -> Vec<f64> {
        let c = f64::from(self.clip);
        let step = 2.0 * c / self.levels as f64;
        sum.iter()
            .map(|&s| s as f64 * step - count as f64 * c)
            .collect()
    }

    /// Decodes an aggregate of `count` encoded vectors into their mean.
    pub fn decode_mean(&self, sum: &[u64], count: u64) -> Result<Vec<f64>, SecAggError> {
        if count == 0 {
            return Err(SecAggError::ZeroWeight);
        }
        Ok(self
            .decode_sum(sum, count)
            .into_iter()
            .map(|s| s / count as f64)
            .collect())
    }
}

/// `clip(x)` mapped affinely onto `[0, L]`; NaN is excluded by the caller.
#[inline(always)]
fn scaled(x: f32, c: f64, scale: f64, l: f64) -> f64 {
    // max/min clip (and map ±inf to ±c); the final min keeps a rounding
    // excess of `2c · scale` from pushing `q` above `L`.
    ((f64::from(x).max(-c).min(c) + c) * scale).min(l)
}

/// A uniform draw from `[0, 1)` with 52 random bits (a multiple of `2^-52`).
///
/// Built from the bits of a double in `[1, 2)`, which needs no integer-to-float
/// conversion and so vectorises on baseline x86-64.
#[inline(always)]
fn uniform52(r: &[u8]) -> f64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(r);
    f64::from_bits(0x3ff0_0000_0000_0000 | (u64::from_le_bytes(le) >> 12)) - 1.0
}

/// `⌊y⌋ + [u < y - ⌊y⌋]` for `0 <= y < 2^52`, without float-to-integer conversions.
///
/// Adding `2^52` rounds `y` to the nearest integer `n` and leaves `n` in the
/// low mantissa bits; `⌊y⌋` is `n` or `n - 1`. Every step is exact, and all of
/// it vectorises on baseline x86-64 (which has no packed f64-to-u64 conversion).
#[inline(always)]
fn round_below_2_52(y: f64, u: f64) -> u64 {
    const MAGIC: f64 = (1u64 << 52) as f64;
    let t = y + MAGIC;
    let nearest = t - MAGIC;
    let over = nearest > y;
    let floor = if over { nearest - 1.0 } else { nearest };
    let up = u < y - floor;
    (t.to_bits() - MAGIC.to_bits()) - u64::from(over) + u64::from(up)
}

/// Encodes `(w·q, w)` so that the aggregate yields a weighted mean without wrapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedQuantizer {
    inner: Quantizer,
    max_weight: u64,
}

impl WeightedQuantizer {
    /// Sizes `L` so that up to `max_clients` inputs with weights `≤ max_weight` never wrap.
    pub fn new(
        clip: f32,
        bits: u32,
        max_clients: u64,
        max_weight: u64,
    ) -> Result<Self, SecAggError> {
        let max = max_value(bits)?;
        if max_clients == 0 || max_weight == 0 {
            return Err(SecAggError::InvalidConfig(
                "max_clients and max_weight must be positive",
            ));
        }
        let total_weight = max_clients
            .checked_mul(max_weight)
            .ok_or(SecAggError::Overflow {
                bits,
                reason: "max_clients * max_weight exceeds 2^64",
            })?;
        if total_weight > max {
            return Err(SecAggError::Overflow {
                bits,
                reason: "the sum of weights alone exceeds 2^b - 1",
            });
        }
        let inner = Quantizer::with_levels(clip, bits, (max / total_weight).min(MAX_LEVELS))?;
        Ok(Self { inner, max_weight })
    }

    /// The underlying per-value quantizer.
    pub fn quantizer(&self) -> &Quantizer {
        &self.inner
    }

    /// Encoded length for a `d`-dimensional model: `d + 1` (the weight rides last).
    pub fn encoded_len(d: usize) -> usize {
        d + 1
    }

    /// Encodes `x` with integer weight `w`; refuses `w > max_weight`.
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        x: &[f32],
        weight: u64,
        rng: &mut R,
    ) -> Result<Vec<u64>, SecAggError> {
        if weight > self.max_weight {
            return Err(SecAggError::Overflow {
                bits: self.inner.bits,
                reason: "weight exceeds the configured max_weight",
            });
        }
        let mut v = self.inner.encode(x, rng)?;
        // w·q ≤ max_weight·L ≤ 2^b - 1 by construction, so no overflow here either.
        v.iter_mut().for_each(|q| *q *= weight);
        v.push(weight);
        Ok(v)
    }

    /// Turns the aggregate `(Σ w q, Σ w)` into the weighted mean of the clipped values.
    pub fn decode_mean(&self, sum: &[u64]) -> Result<Vec<f64>, SecAggError> {
        let Some((&total, values)) = sum.split_last() else {
            return Err(SecAggError::ZeroWeight);
        };
        if total == 0 {
            return Err(SecAggError::ZeroWeight);
        }
        let c = f64::from(self.inner.clip);
        let step = 2.0 * c / self.inner.levels as f64;
        Ok(values
            .iter()
            .map(|&s| s as f64 / total as f64 * step - c)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn rng() -> chacha20::ChaCha20Rng {
        chacha20::ChaCha20Rng::from_seed([42; 32])
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let q = Quantizer::with_levels(1.0, 32, 10).unwrap();
        let mut r = rng();
        // 0.33 maps to y = 6.65: expect q ∈ {6, 7} with mean 6.65.
        let n = 200_000;
        let xs = vec![0.33f32; n];
        let enc = q.encode(&xs, &mut r).unwrap();
        assert!(enc.iter().all(|&v| v == 6 || v == 7));
        let mean = enc.iter().sum::<u64>() as f64 / n as f64;
        let y = (f64::from(0.33f32) + 1.0) / 2.0 * 10.0;
        // Standard error is sqrt(0.65*0.35/n) ≈ 0.00107; allow 5 sigma.
        assert!((mean - y).abs() < 0.0054, "mean {mean} vs {y}");
        let decoded = q.decode_mean(&[enc.iter().sum()], n as u64).unwrap()[0];
        assert!((decoded - 0.33).abs() < 0.002, "decoded {decoded}");
    }

    #[test]
    fn clipping_and_nan() {
        let q = Quantizer::new(2.0, 16, 10).unwrap();
        let mut r = rng();
        let e = q.encode(&[-100.0, 100.0, f32::INFINITY], &mut r).unwrap();
        assert_eq!(e, vec![0, q.levels(), q.levels()]);
        assert_eq!(
            q.encode(&[0.0, f32::NAN], &mut r),
            Err(SecAggError::NotANumber(1))
        );
    }

    #[test]
    fn sums_of_max_summands_never_wrap() {
        for bits in [1u32, 8, 20, 32, 63, 64] {
            for n in [1u64, 3, 7, 100] {
                let Ok(q) = Quantizer::new(1.0, bits, n) else {
                    assert!(n > max_value(bits).unwrap());
                    continue;
                };
                let total = u128::from(q.levels()) * u128::from(n);
                assert!(total <= u128::from(max_value(bits).unwrap()));
            }
        }
    }

    #[test]
    fn weighted_mean_roundtrip_and_overflow_checks() {
        let wq = WeightedQuantizer::new(1.0, 32, 4, 100).unwrap();
        let mut r = rng();
        let inputs = [(vec![0.5f32, -0.5], 10u64), (vec![-0.25, 0.75], 30)];
        let mut agg = vec![0u64; 3];
        for (x, w) in &inputs {
            let e = wq.encode(x, *w, &mut r).unwrap();
            for (a, v) in agg.iter_mut().zip(e) {
                *a += v;
            }
        }
        let mean = wq.decode_mean(&agg).unwrap();
        let expect = [
            (0.5 * 10.0 - 0.25 * 30.0) / 40.0,
            (-0.5 * 10.0 + 0.75 * 30.0) / 40.0,
        ];
        let step = 2.0 / wq.quantizer().levels() as f64;
        for (m, e) in mean.iter().zip(expect) {
            assert!((m - e).abs() <= step, "{m} vs {e}");
        }
        assert!(matches!(
            wq.encode(&[0.0, 0.0], 101, &mut r),
            Err(SecAggError::Overflow { .. })
        ));
        assert!(matches!(
            WeightedQuantizer::new(1.0, 8, 16, 16),
            Err(SecAggError::Overflow { .. })
        ));
        assert_eq!(wq.decode_mean(&[5, 0]), Err(SecAggError::ZeroWeight));
    }

    #[test]
    fn magic_number_rounding_matches_floor_and_compare() {
        let mut r = rng();
        let mut ys: Vec<f64> = vec![0.0, 0.5, 1.0, 1.5, 2.5, 3.5, 7.0, 1e15 + 0.5];
        ys.push(((1u64 << 52) - 1) as f64);
        ys.extend((0..10_000).map(|i| f64::from(i) * 0.37 + r.random::<f64>()));
        ys.extend((0..1_000).map(|_| r.random::<f64>() * 4e15));
        for y in ys {
            for u in [0.0, 0.25, 0.5, 0.999_999, r.random::<f64>()] {
                let floor = y as u64;
                let expect = floor + u64::from(u < y - floor as f64);
                assert_eq!(round_below_2_52(y, u), expect, "y={y} u={u}");
            }
        }
    }

    #[test]
    fn uniform52_spans_the_unit_interval() {
        assert_eq!(uniform52(&[0; 8]), 0.0);
        assert_eq!(uniform52(&[0xff; 8]), 1.0 - 2f64.powi(-52));
        assert_eq!(uniform52(&(1u64 << 63).to_le_bytes()), 0.5);
    }

    #[test]
    fn widest_levels_take_the_conversion_path_and_stay_in_range() {
        let q = Quantizer::with_levels(1.0, 64, MAX_LEVELS).unwrap();
        let mut r = rng();
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin()).collect();
        let enc = q.encode(&xs, &mut r).unwrap();
        assert!(enc.iter().all(|&v| v <= MAX_LEVELS));
        assert_eq!(q.encode(&[1.0, -1.0], &mut r).unwrap(), vec![MAX_LEVELS, 0]);
    }
}
