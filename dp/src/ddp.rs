//! The distributed discrete Gaussian mechanism (Kairouz, Liu & Steinke, ICML 2021), as
//! TensorFlow Federated's `DistributedDpSumFactory` runs it, feeding secure aggregation in
//! `Z_{2^b}`.
//!
//! # Client
//!
//! For an update `x ∈ R^d` with clip `c`, granularity `γ` (one integer step is worth `γ`) and a
//! rotation seed shared for the round:
//!
//! 1. clip: `x ← x · min(1, c/‖x‖₂)` ([`crate::clip`]);
//! 2. rotate: `x ← H D x/√d'` after zero-padding to `d' = 2^⌈log2 d⌉` ([`crate::hadamard`]);
//! 3. scale: `x ← x/γ`;
//! 4. conditional randomized rounding: round each coordinate up with probability equal to its
//!    fractional part, and retry the whole vector until `‖x̃‖₂² ≤ Δ₂²`, where
//!    `Δ₂² = min{ (c/γ + √d')², c²/γ² + d'/4 + √(2 log(1/β))·(c/γ + √d'/2) }`
//!    (their Theorem 1 / Proposition 22: one rounding meets the second bound with probability at
//!    least `1 − β`; the first always holds because each coordinate moves by less than 1). The
//!    check is exact on integers (`‖x̃‖₂² ≤ ⌊Δ₂²⌋`), so the sensitivity does not depend on
//!    floating-point rounding earlier on;
//! 5. noise: add `N_Z(0, σ²)` per coordinate with `σ = z·c/(γ√n)`, so the sum of `n` clients'
//!    noise has variance `n σ² = (z c/γ)²`: the central Gaussian mechanism's `z c` in update units;
//! 6. reduce modulo `2^b` and hand the `Vec<u64>` to secure aggregation.
//!
//! # Server
//!
//! Secure aggregation returns `S = Σ_i x̃_i + Z mod 2^b`. Map each coordinate to the centred
//! representative in `[−2^{b−1}, 2^{b−1})`, multiply by `γ`, un-rotate and truncate to `d`. The
//! result is `Σ_i clip(x_i)` plus rounding error (at most `γ√d'` per client in L2) plus noise of
//! variance `(z c)²` per coordinate (the rotation is orthogonal, so the noise stays i.i.d.-like
//! with the same variance).
//!
//! # Choosing the bit width, and the wrap probability
//!
//! With at most `N` clients in the sum (`max_clients`), coordinate `j` of the integer sum is
//! `S_j = (R Σ_i x_i)_j/γ + E_j + Z_j` where `|E_j| < N` (each client's rounding moves it by less
//! than 1), `Z_j` is a sum of at most `N` discrete Gaussians, which is sub-Gaussian with variance
//! proxy `Nσ²` (each `N_Z(0, σ²)` is `σ²`-sub-Gaussian: Canonne, Kamath & Steinke 2020), and the
//! rotated signal is a Rademacher sum over the random signs, so sub-Gaussian with proxy
//! `‖Σ x_i‖²/(γ² d') ≤ (Nc/γ)²/d'`. With `v = (Nc/γ)²/d' + Nσ²` and the sub-Gaussian tail
//! `P(|X| ≥ t) ≤ 2 exp(−t²/(2v))`, a union bound over the `d'` coordinates gives
//!
//! `P(some coordinate wraps) ≤ 2 d' · exp(−(2^{b−1} − N)²/(2v))`     (for `2^{b−1} > N`).
//!
//! The plan picks the smallest `b ≤ 63` that keeps this below `max_wrap_probability` (default
//! `2^{−40}`), or checks a caller-given `b` and returns [`DpError::BitWidthTooSmall`] otherwise;
//! the bound is reported by [`DdpPlan::wrap_probability_bound`]. Conversely,
//! [`granularity_for_bits`] finds the finest `γ` for which a given `b` suffices. The bound is over the rotation's
//! randomness, so the rotation seed must be fresh for the round and independent of the data.
//!
//! # Privacy
//!
//! [`DdpPlan::privacy`] returns the [`DdgPrivacy`] of one round (integer-domain `Δ₂`,
//! `Δ₁ = Δ₂·min(√d', Δ₂)`, effective `σ`, `n`, `d'`) for the accountant. `n` must be the minimum
//! number of clients whose noisy vectors reach the sum: if fewer survive secure aggregation, the
//! noise is smaller than accounted.

use rand::{CryptoRng, Rng};

use crate::accountant::DdgPrivacy;
use crate::clip::clip_l2;
use crate::error::{DpError, check_range};
use crate::hadamard::RandomRotation;
use crate::sampler::DiscreteGaussian;

/// Most retries of conditional rounding before giving up (each fails with probability ≤ β).
const MAX_ROUNDING_ATTEMPTS: u32 = 1000;
/// Largest bit width: the centred representative must fit an `i64`.
pub const MAX_BITS: u32 = 63;

/// What the caller chooses for one round of the distributed discrete Gaussian.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpConfig {
    /// Length `d` of each client's update.
    pub dim: usize,
    /// Minimum number `n` of clients in the sum (the noise is split across them).
    pub clients: u64,
    /// Maximum number `N ≥ n` of clients in the sum (sizes the modulus).
    pub max_clients: u64,
    /// L2 clipping bound `c` in update units.
    pub clip: f64,
    /// Noise multiplier `z`: the sum's noise std is `z·c` per coordinate.
    pub noise_multiplier: f64,
    /// Granularity `γ`: the value of one integer step, in update units.
    pub granularity: f64,
    /// Conditional rounding parameter `β ∈ [0, 1)` (TFF's default `e^{−1/2}`).
    pub beta: f64,
    /// Bit width `b` of `Z_{2^b}`, or `None` to pick the smallest adequate one.
    pub bits: Option<u32>,
    /// The largest acceptable probability that the modular sum wraps.
    pub max_wrap_probability: f64,
}

impl DdpConfig {
    /// A configuration with TFF's `β = e^{−1/2}`, automatic bit width, wrap bound `2^{−40}`, and
    /// exactly `clients` clients (`max_clients = clients`).
    pub fn new(
        dim: usize,
        clients: u64,
        clip: f64,
        noise_multiplier: f64,
        granularity: f64,
    ) -> Self {
        Self {
            dim,
            clients,
            max_clients: clients,
            clip,
            noise_multiplier,
            granularity,
            beta: (-0.5f64).exp(),
            bits: None,
            max_wrap_probability: 2f64.powi(-40),
        }
    }
}

/// Everything derived from a [`DdpConfig`] and the round's rotation seed.
#[derive(Debug, Clone)]
pub struct DdpPlan {
    /// The validated configuration.
    config: DdpConfig,
    /// The shared rotation.
    rotation: RandomRotation,
    /// Per-client integer noise.
    sampler: DiscreteGaussian,
    /// `⌊Δ₂²⌋`, the exact integer bound enforced by conditional rounding.
    l2_bound_sq: u128,
    /// Chosen bit width.
    bits: u32,
    /// Tail bound on the wrap probability at `bits`.
    wrap_bound: f64,
}

/// `Δ₂` of Kairouz et al. Theorem 1 for a scaled norm `c/γ`, `β` and padded dimension `d'`.
fn rounded_l2_bound(scaled_clip: f64, beta: f64, dim: f64) -> f64 {
    let bound1 = scaled_clip + dim.sqrt();
    if beta == 0.0 {
        return bound1;
    }
    let sq2 = scaled_clip * scaled_clip
        + 0.25 * dim
        + (2.0 * (1.0 / beta).ln()).sqrt() * (scaled_clip + 0.5 * dim.sqrt());
    bound1.min(sq2.sqrt())
}

/// `log` of the wrap-probability tail bound `2 d' exp(−(2^{b−1} − n)²/(2v))`.
fn log_wrap_bound(bits: u32, clients: u64, variance_proxy: f64, dim: f64) -> f64 {
    let half = 2f64.powi(bits as i32 - 1);
    let margin = half - clients as f64;
    if margin <= 0.0 {
        return 0.0;
    }
    ((2.0 * dim).ln() - margin * margin / (2.0 * variance_proxy)).min(0.0)
}

/// What [`DdpPlan::new`] derives from a configuration, before the rotation is expanded.
struct Derived {
    /// Per-client integer noise.
    sampler: DiscreteGaussian,
    /// `⌊Δ₂²⌋`.
    l2_bound_sq: u128,
    /// Bit width.
    bits: u32,
    /// Wrap-probability bound at `bits`.
    wrap_bound: f64,
}

/// Validates `config` and derives `σ`, `Δ₂` and the bit width (no allocation of size `d`).
fn derive(config: &DdpConfig) -> Result<Derived, DpError> {
    if config.clients == 0 {
        return Err(DpError::InvalidCount {
            name: "clients",
            value: 0,
            reason: "at least one client is needed",
        });
    }
    if config.max_clients < config.clients {
        return Err(DpError::InvalidCount {
            name: "max_clients",
            value: config.max_clients,
            reason: "must be at least `clients`",
        });
    }
    check_range(
        "clip",
        config.clip,
        f64::MIN_POSITIVE,
        f64::MAX,
        "must be finite and positive",
    )?;
    check_range(
        "noise_multiplier",
        config.noise_multiplier,
        f64::MIN_POSITIVE,
        f64::MAX,
        "must be finite and positive",
    )?;
    check_range(
        "granularity",
        config.granularity,
        f64::MIN_POSITIVE,
        f64::MAX,
        "must be finite and positive",
    )?;
    check_range("beta", config.beta, 0.0, 1.0, "must be in [0, 1)")?;
    if config.beta >= 1.0 {
        return Err(DpError::InvalidParameter {
            name: "beta",
            value: config.beta,
            reason: "must be in [0, 1)",
        });
    }
    check_range(
        "max_wrap_probability",
        config.max_wrap_probability,
        0.0,
        1.0,
        "must be in (0, 1]",
    )?;
    if config.max_wrap_probability == 0.0 {
        return Err(DpError::InvalidParameter {
            name: "max_wrap_probability",
            value: 0.0,
            reason: "must be in (0, 1]: no finite modulus makes wrapping impossible",
        });
    }
    let padded = crate::hadamard::padded_len(config.dim)? as f64;
    let scaled_clip = config.clip / config.granularity;
    // Keeps every rounded coordinate and the squared norm well inside i64 / u128.
    check_range(
        "clip/granularity",
        scaled_clip,
        0.0,
        2f64.powi(40),
        "the scaled clip must be at most 2^40 integer steps",
    )?;
    let n = config.clients as f64;
    let sigma = config.noise_multiplier * scaled_clip / n.sqrt();
    check_range(
        "local sigma (z c / (gamma sqrt n))",
        sigma,
        0.5,
        crate::sampler::MAX_SIGMA,
        "the distributed discrete Gaussian needs a per-client sigma in [1/2, 2^24] integer steps: adjust granularity",
    )?;
    let sampler = DiscreteGaussian::new(sigma)?;
    let l2 = rounded_l2_bound(scaled_clip, config.beta, padded);
    let l2_bound_sq = (l2 * l2).floor() as u128;

    let eff = sampler.sigma();
    // The modulus must hold the largest possible sum: up to `max_clients` signals and noises.
    let big_n = config.max_clients as f64;
    let variance_proxy = (big_n * scaled_clip).powi(2) / padded + big_n * eff * eff;
    let allowed = config.max_wrap_probability;
    let (bits, log_bound) = match config.bits {
        Some(b) => {
            if !(2..=MAX_BITS).contains(&b) {
                return Err(DpError::InvalidCount {
                    name: "bits",
                    value: u64::from(b),
                    reason: "must be in 2..=63",
                });
            }
            (
                b,
                log_wrap_bound(b, config.max_clients, variance_proxy, padded),
            )
        }
        None => {
            let mut found = (
                MAX_BITS,
                log_wrap_bound(MAX_BITS, config.max_clients, variance_proxy, padded),
            );
            for b in 2..=MAX_BITS {
                let lb = log_wrap_bound(b, config.max_clients, variance_proxy, padded);
                if lb <= allowed.ln() {
                    found = (b, lb);
                    break;
                }
            }
            found
        }
    };
    let wrap_bound = log_bound.exp();
    if log_bound > allowed.ln() {
        return Err(DpError::BitWidthTooSmall {
            bits,
            wrap_bound,
            allowed,
        });
    }
    Ok(Derived {
        sampler,
        l2_bound_sq,
        bits,
        wrap_bound,
    })
}

/// The finest granularity `γ` for which `bits` bits meet `template.max_wrap_probability`.
///
/// Finer `γ` means less rounding error but larger integers; this searches (on a log scale, to
/// 0.1% relative) for the smallest `γ` whose plan fits `Z_{2^bits}`, subject to the per-client
/// `σ = z c/(γ√n) ≥ 1/2` that the privacy bound needs (so `γ ≤ 2 z c/√n`). The template's own
/// `granularity` and `bits` are ignored. Errors with [`DpError::BitWidthTooSmall`] if even the
/// coarsest allowed `γ` does not fit: more bits or fewer clients are needed.
pub fn granularity_for_bits(template: &DdpConfig, bits: u32) -> Result<f64, DpError> {
    if template.clients == 0 {
        return Err(DpError::InvalidCount {
            name: "clients",
            value: 0,
            reason: "at least one client is needed",
        });
    }
    let with = |gamma: f64| DdpConfig {
        granularity: gamma,
        bits: Some(bits),
        ..template.clone()
    };
    // The coarsest γ allowed: per-client σ exactly 1/2 (nudged so rounding keeps σ >= 1/2).
    let coarsest = 2.0 * template.noise_multiplier * template.clip
        / (template.clients as f64).sqrt()
        * (1.0 - 1e-12);
    derive(&with(coarsest))?;
    // Feasibility is monotone in γ: coarser steps mean smaller integers. Bisect on log γ.
    let (mut lo, mut hi) = (coarsest * 1e-12, coarsest);
    while hi / lo > 1.001 {
        let mid = (lo * hi).sqrt();
        if derive(&with(mid)).is_ok() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

impl DdpPlan {
    /// Validates `config`, derives `σ`, `Δ₂` and the bit width, and fixes the rotation.
    pub fn new(config: DdpConfig, rotation_seed: [u8; 32]) -> Result<Self, DpError> {
        let Derived {
            sampler,
            l2_bound_sq,
            bits,
            wrap_bound,
        } = derive(&config)?;
        let rotation = RandomRotation::new(config.dim, rotation_seed)?;
        Ok(Self {
            config,
            rotation,
            sampler,
            l2_bound_sq,
            bits,
            wrap_bound,
        })
    }

    /// The configuration the plan was built from.
    pub fn config(&self) -> &DdpConfig {
        &self.config
    }

    /// The modulus bit width `b`: inputs and sums live in `Z_{2^b}`.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Length of the encoded vector (the padded dimension `d'`).
    pub fn encoded_len(&self) -> usize {
        self.rotation.padded_dim()
    }

    /// Upper bound on the probability that the modular sum wraps (see module docs).
    pub fn wrap_probability_bound(&self) -> f64 {
        self.wrap_bound
    }

    /// Effective per-client noise `σ` in integer steps (at least `z c/(γ√n)`).
    pub fn local_sigma(&self) -> f64 {
        self.sampler.sigma()
    }

    /// The integer-domain L2 sensitivity `Δ₂ = √⌊Δ₂²⌋` enforced by conditional rounding.
    pub fn l2_sensitivity(&self) -> f64 {
        (self.l2_bound_sq as f64).sqrt()
    }

    /// The parameters the accountant needs for one round of this plan.
    pub fn privacy(&self) -> DdgPrivacy {
        let l2 = self.l2_sensitivity();
        let d = self.encoded_len() as f64;
        DdgPrivacy {
            l2_sensitivity: l2,
            l1_sensitivity: l2 * d.sqrt().min(l2),
            local_sigma: self.local_sigma(),
            clients: self.config.clients,
            dim: self.encoded_len() as u64,
        }
    }

    /// Client side: clip, rotate, scale, round, add noise, reduce mod `2^b`.
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        update: &[f64],
        rng: &mut R,
    ) -> Result<Vec<u64>, DpError> {
        if update.len() != self.config.dim {
            return Err(DpError::LengthMismatch {
                expected: self.config.dim,
                got: update.len(),
            });
        }
        let mut x = update.to_vec();
        clip_l2(&mut x, self.config.clip)?;
        let mut y = self.rotation.forward(&x)?;
        let inv_gamma = 1.0 / self.config.granularity;
        y.iter_mut().for_each(|v| *v *= inv_gamma);
        let mut rounded = self.conditional_round(&y, rng)?;
        let mask = self.mask();
        for v in &mut rounded {
            // Two's complement wrapping then masking is reduction modulo 2^b.
            *v = (*v as i64).wrapping_add(self.sampler.sample(rng)) as u64 & mask;
        }
        Ok(rounded)
    }

    /// [`Self::encode`] for an `f32` update.
    pub fn encode_f32<R: CryptoRng + ?Sized>(
        &self,
        update: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u64>, DpError> {
        let wide: Vec<f64> = update.iter().map(|&v| f64::from(v)).collect();
        self.encode(&wide, rng)
    }

    /// `2^b − 1`.
    fn mask(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// Randomized rounding retried until the integer norm bound holds; returns `i64`s as `u64`.
    fn conditional_round<R: Rng + ?Sized>(
        &self,
        y: &[f64],
        rng: &mut R,
    ) -> Result<Vec<u64>, DpError> {
        let mut out = vec![0u64; y.len()];
        for _ in 0..MAX_ROUNDING_ATTEMPTS {
            let mut norm_sq: u128 = 0;
            for (o, &v) in out.iter_mut().zip(y) {
                let floor = v.floor();
                // A 53-bit uniform in [0, 1) against the fractional part: P(up) = frac.
                let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                let r = if u < v - floor { floor + 1.0 } else { floor } as i64;
                norm_sq += u128::from(r.unsigned_abs()).pow(2);
                *o = r as u64;
            }
            if norm_sq <= self.l2_bound_sq {
                return Ok(out);
            }
        }
        Err(DpError::RoundingFailed {
            attempts: MAX_ROUNDING_ATTEMPTS,
        })
    }

    /// Server side: from `Σ encode(x_i) mod 2^b` to the noisy sum of clipped updates.
    pub fn decode_sum(&self, sum: &[u64]) -> Result<Vec<f64>, DpError> {
        if sum.len() != self.encoded_len() {
            return Err(DpError::LengthMismatch {
                expected: self.encoded_len(),
                got: sum.len(),
            });
        }
        let half = 1u64 << (self.bits - 1);
        let modulus = 1i128 << self.bits;
        let gamma = self.config.granularity;
        let mut y = Vec::with_capacity(sum.len());
        for (index, &v) in sum.iter().enumerate() {
            if v > self.mask() {
                return Err(DpError::OutOfRange {
                    index,
                    value: v,
                    bits: self.bits,
                });
            }
            let centred = if v >= half {
                i128::from(v) - modulus
            } else {
                i128::from(v)
            };
            y.push(centred as f64 * gamma);
        }
        self.rotation.inverse(&y)
    }

    /// [`Self::decode_sum`] divided by the number of clients actually summed.
    pub fn decode_mean(&self, sum: &[u64], count: u64) -> Result<Vec<f64>, DpError> {
        if count == 0 {
            return Err(DpError::InvalidCount {
                name: "count",
                value: 0,
                reason: "cannot average over zero clients",
            });
        }
        let mut s = self.decode_sum(sum)?;
        s.iter_mut().for_each(|v| *v /= count as f64);
        Ok(s)
    }

    /// Adds `x` into `acc` modulo `2^b` (the aggregation secure aggregation performs, for tests
    /// and trusted-aggregator deployments).
    pub fn add_mod(&self, acc: &mut [u64], x: &[u64]) -> Result<(), DpError> {
        if acc.len() != x.len() {
            return Err(DpError::LengthMismatch {
                expected: acc.len(),
                got: x.len(),
            });
        }
        let mask = self.mask();
        for (a, &v) in acc.iter_mut().zip(x) {
            *a = a.wrapping_add(v) & mask;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_bound_matches_tff_formula() {
        // bound_1 = c + sqrt(d); bound_2^2 = c^2 + d/4 + sqrt(2 ln(1/β)) (c + sqrt(d)/2).
        let (c, d, beta) = (100.0f64, 64.0f64, (-0.5f64).exp());
        let b2 = (c * c + d / 4.0 + 1.0 * (c + 4.0)).sqrt();
        assert!((rounded_l2_bound(c, beta, d) - b2.min(c + 8.0)).abs() < 1e-12);
        assert_eq!(rounded_l2_bound(c, 0.0, d), c + 8.0);
    }

    #[test]
    fn conditional_rounding_always_meets_the_integer_bound() {
        use rand::SeedableRng;
        let plan = DdpPlan::new(DdpConfig::new(64, 4, 1.0, 1.0, 0.05), [2; 32]).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        // A vector at the clip norm (20 steps) whose coordinates are all near x.5: rounding
        // inflates the norm as much as it can.
        let y: Vec<f64> = (0..64)
            .map(|i| if i % 2 == 0 { 2.5 } else { -2.5 })
            .collect();
        for _ in 0..200 {
            let r = plan.conditional_round(&y, &mut rng).unwrap();
            let norm_sq: u128 = r
                .iter()
                .map(|&v| u128::from((v as i64).unsigned_abs()).pow(2))
                .sum();
            assert!(norm_sq <= plan.l2_bound_sq);
            // Each coordinate is the floor or the ceiling of the input.
            for (&v, &x) in r.iter().zip(&y) {
                let v = v as i64 as f64;
                assert!(v == x.floor() || v == x.ceil());
            }
        }
    }

    #[test]
    fn wrap_bound_decreases_with_bits() {
        let a = log_wrap_bound(20, 10, 1e6, 1024.0);
        let b = log_wrap_bound(24, 10, 1e6, 1024.0);
        assert!(b < a);
        assert_eq!(log_wrap_bound(3, 10, 1.0, 4.0), 0.0);
    }
}
