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
//! Stochastic rounding makes `E[q] = y` exactly, so the decoded sum is an
//! unbiased estimate of the sum of clipped values; the rounding noise per
//! coordinate has variance at most `1/4` quantization steps.
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

use rand::{CryptoRng, RngExt};

use crate::error::SecAggError;

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

    /// Encodes one value; `u` is a uniform draw in `[0, 1)`.
    fn encode_one(&self, x: f32, u: f64) -> u64 {
        let c = f64::from(self.clip);
        let l = self.levels as f64;
        let x = f64::from(x).clamp(-c, c);
        let y = (x + c) / (2.0 * c) * l;
        // y is in [0, L] with L <= 2^53, so truncation is exact and equals floor;
        // unlike `floor`, it needs no libm call on baseline x86-64.
        let lo = (y as u64) as f64;
        let q = if u < y - lo { lo + 1.0 } else { lo };
        (q as u64).min(self.levels)
    }

    /// Clips, scales and stochastically rounds `x`; rejects NaN.
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        x: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u64>, SecAggError> {
        if let Some(i) = x.iter().position(|v| v.is_nan()) {
            return Err(SecAggError::NotANumber(i));
        }
        Ok(x.iter()
            .map(|&v| self.encode_one(v, rng.random::<f64>()))
            .collect())
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
    use rand::SeedableRng;

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
}
