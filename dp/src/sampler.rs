//! Exact noise samplers: the discrete Gaussian over the integers, and a lattice Gaussian for
//! real-valued (DP-SGD) noise.
//!
//! # The discrete Gaussian
//!
//! `N_Z(0, σ²)` puts mass `∝ exp(−x²/(2σ²))` on every integer `x`. We sample it with Algorithm 3
//! of Canonne, Kamath & Steinke, *The Discrete Gaussian for Differential Privacy* (NeurIPS 2020):
//!
//! 1. with the integer scale `t = ⌊σ⌋ + 1`, draw `Y` from the discrete Laplace
//!    `P(Y = y) ∝ exp(−|y|/t)` (their Algorithm 2, below);
//! 2. accept `Y` with probability `exp(−(|Y| − σ²/t)² / (2σ²))`, otherwise start again.
//!
//! Since `(|y| − σ²/t)²/(2σ²) = y²/(2σ²) − |y|/t + σ²/(2t²)`, the accepted density is
//! `∝ exp(−|y|/t) · exp(−y²/(2σ²) + |y|/t) = exp(−y²/(2σ²))`: exactly the target. The acceptance
//! rate is about `√(2π)/2 · e^{−1/2} ≈ 0.76` for large σ.
//!
//! The discrete Laplace with integer scale `t`: draw `U` uniform on `{0, …, t−1}` and keep it with
//! probability `exp(−U/t)`; count `V`, the successes of `Bernoulli(e^{−1})` before the first
//! failure (a geometric variable with `P(V = v) ∝ e^{−v}`); `X = U + tV` then has
//! `P(X = x) ∝ exp(−x/t)` because `x ↦ (x mod t, ⌊x/t⌋)` is a bijection. A fair sign bit makes
//! `±X`, and `(−, 0)` is rejected so zero is not counted twice.
//!
//! `Bernoulli(exp(−γ))` for a rational `γ = n/d` uses their Algorithm 1: for `γ ≤ 1`, draw
//! `A_k ~ Bernoulli(γ/k)` for `k = 1, 2, …` until the first failure at `K`, and return whether
//! `K` is odd; `P(K odd) = Σ_j (−γ)^j/j! = e^{−γ}`. For `γ > 1`, `exp(−γ)` is
//! `exp(−1)^{⌊γ⌋} · exp(−(γ − ⌊γ⌋))`, so we draw `⌊γ⌋` independent `Bernoulli(e^{−1})` (stopping
//! at the first failure) and one fractional one.
//!
//! # Why it is exact, and fast
//!
//! No floating point is involved: `σ²` is held as a fraction `num/den` of integers, and every
//! coin is `Bernoulli(a/b)` with integers `a ≤ b < 2^126` (64-bit arithmetic when `b < 2^62`, the
//! usual case). Such a coin compares a uniform real `U ∈ [0, 1)`, generated lazily `c` bits at a
//! time (`c ≤ 32`), with `a/b`: with the first chunk
//! `r`, `U < a/b` is certain when `(r + 1)·b ≤ a·2^c`, impossible when `r·b ≥ a·2^c`, and otherwise
//! (`r = ⌊a·2^c/b⌋`, probability ≤ 2^−c) decided by the next chunk against the remainder
//! `a·2^c − r·b`. This is exact and uses one 32-bit draw per coin almost always.
//!
//! `Bernoulli(e^{−1})` (the `γ = 1` case of Algorithm 1, used for the geometric part and for
//! `⌊γ⌋`) is drawn with a single uniform integer `N < 12!`: the mixed-radix digits of `N` in
//! bases `2, …, 12` are independent and uniform, so `{digit_k = 0}` are independent
//! `Bernoulli(1/k)` coins; the first failing `k` has exactly `12!·(k−1)/k!` preimages. We
//! therefore map `N` to "first failure odd", "first failure even" or (for one value of `N`)
//! "all twelve succeeded, continue Algorithm 1 at k = 13" by comparing with the two exact counts.
//!
//! Together this costs about a dozen 32-bit draws per sample, against opendp's big-rational
//! implementation of the same algorithm (about 3 µs per sample here).
//!
//! Representability: outputs are `i64`; a discrete Laplace candidate that would not fit is
//! redrawn. That conditions the output on `|X| < 2^63`, whose complement has probability about
//! `exp(−2^125/σ²)`: zero in any physical sense for the `σ ≤ 2^24` allowed here.
//!
//! # Real-valued noise (DP-SGD)
//!
//! Floating-point Gaussian samplers (Box–Muller and friends) leak through the pattern of
//! representable values they can and cannot produce (Mironov, CCS 2012). [`LatticeGaussian`]
//! instead samples the discrete Gaussian on the lattice `λℤ` with `λ = 2^{⌊log2 σ⌋ − 20}`, i.e.
//! `λ·N_Z(0, (σ/λ)²)`: the same approach as opendp's `make_gaussian` with a lattice exponent `k`,
//! but with our fast sampler. The value to be protected must be rounded to the same lattice first
//! ([`LatticeGaussian::privatize`]). Rounding moves each coordinate of each of two neighbouring
//! inputs by at most `λ/2`, so an L2 sensitivity `Δ` becomes at most `Δ + λ√d` in `d` dimensions;
//! with `λ ≈ σ·2^{−20}` that is negligible
//! ([`LatticeGaussian::sensitivity_inflation`]). The output is a lattice point, exactly
//! representable in `f64` while `|z| < 2^53`; converting it to `f32` is post-processing.

use rand::Rng;

use crate::error::DpError;

/// `12!`, the range of the single uniform draw that decides most `Bernoulli(e^{-1})` coins.
const FACT12: u32 = 479_001_600;

/// Number of `N < 12!` whose first failing coin `k ∈ {2,…,12}` is odd or even, computed exactly.
const fn exp_minus_one_counts() -> (u32, u32) {
    let mut odd = 0u64;
    let mut even = 0u64;
    let mut k = 2u64;
    let mut fact = 2u64; // k!
    while k <= 12 {
        // #{N : digits 2..k-1 are zero, digit k is not} = 12! * (1/(k-1)!) * ((k-1)/k) = 12!(k-1)/k!.
        let count = FACT12 as u64 * (k - 1) / fact;
        if k % 2 == 1 {
            odd += count;
        } else {
            even += count;
        }
        k += 1;
        fact *= k;
    }
    (odd as u32, even as u32)
}

/// `(odd, even)` first-failure counts among the `12!` equally likely draws.
const EXP_M1_COUNTS: (u32, u32) = exp_minus_one_counts();

/// The smallest `σ` accepted: below it the distribution is essentially a point mass at 0.
pub const MIN_SIGMA: f64 = 1.0 / 256.0;
/// The largest `σ` accepted, so that every intermediate product fits in 128 bits.
pub const MAX_SIGMA: f64 = (1u64 << 24) as f64;

/// A uniform integer in `[0, n)` for `n ≥ 1`, exact (Lemire's multiply-and-reject).
#[inline]
fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u32) -> u32 {
    let mut m = u64::from(rng.next_u32()) * u64::from(n);
    let mut low = m as u32;
    if low < n {
        // Reject the `2^32 mod n` low values that would bias the high word.
        let threshold = n.wrapping_neg() % n;
        while low < threshold {
            m = u64::from(rng.next_u32()) * u64::from(n);
            low = m as u32;
        }
    }
    (m >> 32) as u32
}

/// `Bernoulli(a/b)` by lazy comparison of a uniform real with `a/b`; needs `0 < b < 2^126`.
#[inline]
fn bernoulli_ratio<R: Rng + ?Sized>(rng: &mut R, a: u128, b: u128) -> bool {
    if a >= b {
        return true;
    }
    if a == 0 {
        return false;
    }
    // Most coins have small denominators: 64-bit arithmetic is much cheaper than 128-bit.
    if b < (1u128 << 62) {
        return bernoulli_ratio_u64(rng, a as u64, b as u64);
    }
    let mut a = a;
    let bits = 128 - b.leading_zeros();
    // a < b < 2^bits, so a << c and r * b (r < 2^c) stay below 2^(bits + c) <= 2^127.
    let c = 127u32.saturating_sub(bits).clamp(1, 32);
    loop {
        let r = u128::from(rng.next_u32() >> (32 - c));
        let scaled = a << c;
        let low = r * b;
        if low + b <= scaled {
            return true;
        }
        if low >= scaled {
            return false;
        }
        // r = floor(a 2^c / b): the rest of U must be compared with the remainder.
        a = scaled - low;
    }
}

/// [`bernoulli_ratio`] for `0 < a < b < 2^62` in 64-bit arithmetic (same lazy comparison).
#[inline]
fn bernoulli_ratio_u64<R: Rng + ?Sized>(rng: &mut R, mut a: u64, b: u64) -> bool {
    let bits = 64 - b.leading_zeros();
    // a << c and r * b stay below 2^(bits + c) <= 2^63.
    let c = 63u32.saturating_sub(bits).clamp(1, 32);
    loop {
        let r = u64::from(rng.next_u32() >> (32 - c));
        let scaled = a << c;
        let low = r * b;
        if low + b <= scaled {
            return true;
        }
        if low >= scaled {
            return false;
        }
        a = scaled - low;
    }
}

/// `Bernoulli(e^{-1})`, exact, usually from one uniform draw below `12!` (see module docs).
#[inline]
fn bernoulli_exp_minus_one<R: Rng + ?Sized>(rng: &mut R) -> bool {
    let n = uniform_below(rng, FACT12);
    let (odd, even) = EXP_M1_COUNTS;
    if n < odd {
        return true;
    }
    if n < odd + even {
        return false;
    }
    // All coins 2..=12 succeeded (probability 1/12!): continue Algorithm 1 at k = 13.
    let mut k: u128 = 13;
    while bernoulli_ratio(rng, 1, k) {
        k += 1;
    }
    k % 2 == 1
}

/// `Bernoulli(exp(-a/b))` for `0 ≤ a < b < 2^126` by Algorithm 1 of Canonne, Kamath & Steinke.
#[inline]
fn bernoulli_exp_frac<R: Rng + ?Sized>(rng: &mut R, a: u128, b: u128) -> bool {
    if a == 0 {
        return true;
    }
    let mut k: u128 = 1;
    // Fast path: while b k < 2^62 every coin runs in 64-bit arithmetic (practically always).
    if b < (1u128 << 62) {
        let (a64, b64) = (a as u64, b as u64);
        let mut k64: u64 = 1;
        while let Some(bk) = b64.checked_mul(k64).filter(|&x| x < (1u64 << 62)) {
            // 0 < a < b <= b k, as `bernoulli_ratio_u64` requires.
            if !bernoulli_ratio_u64(rng, a64, bk) {
                return k64 % 2 == 1;
            }
            k64 += 1;
        }
        k = u128::from(k64);
    }
    loop {
        // A_k ~ Bernoulli(a/(b k)); when b k would not fit, use Bernoulli(a/b) AND Bernoulli(1/k),
        // which has the same probability.
        let coin = match b.checked_mul(k) {
            Some(bk) if bk < (1u128 << 126) => bernoulli_ratio(rng, a, bk),
            _ => bernoulli_ratio(rng, a, b) && bernoulli_ratio(rng, 1, k),
        };
        if !coin {
            return k % 2 == 1;
        }
        k += 1;
    }
}

/// `Bernoulli(exp(-n/d))` for any `n ≥ 0` given as a 256-bit `(hi, lo)` and `0 < d < 2^126`.
fn bernoulli_exp_wide<R: Rng + ?Sized>(rng: &mut R, mut hi: u128, mut lo: u128, d: u128) -> bool {
    // exp(-n/d) = exp(-1)^{floor(n/d)} * exp(-(n mod d)/d): peel one exp(-1) per subtraction of d.
    // Each peel fails with probability 1 - 1/e, so this loop is short whatever n is.
    while hi > 0 || lo >= d {
        if !bernoulli_exp_minus_one(rng) {
            return false;
        }
        let (new_lo, borrow) = lo.overflowing_sub(d);
        lo = new_lo;
        if borrow {
            hi -= 1;
        }
    }
    bernoulli_exp_frac(rng, lo, d)
}

/// The full 256-bit product `a * b` as `(hi, lo)`.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const M: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & M);
    let (b1, b0) = (b >> 64, b & M);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & M) + (p10 & M);
    let lo = (p00 & M) | ((mid & M) << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// Exact sampler for the discrete Gaussian `N_Z(0, σ²)` with `σ² = num/den` held exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscreteGaussian {
    /// Numerator of `σ²`.
    num: u128,
    /// Denominator of `σ²`.
    den: u128,
    /// Integer Laplace scale `t = ⌊σ⌋ + 1`.
    t: u64,
    /// `t · den`, the factor turning `|y|` into the numerator of `|y| − σ²/t` over `t · den`.
    t_den: u128,
    /// `2 · num · den · t²`, the denominator of the acceptance exponent.
    accept_den: u128,
}

impl DiscreteGaussian {
    /// A sampler with `σ²` rounded *up* to a dyadic fraction with a 24-bit numerator (more
    /// when `σ² > 2^24`), so the noise is never smaller than asked (relative change below `2^-23`).
    pub fn new(sigma: f64) -> Result<Self, DpError> {
        check_sigma(sigma)?;
        let var = sigma * sigma;
        // Pick den = 2^s so that var * den is about 2^24 (s >= 0): ample precision, and the
        // acceptance denominator 2 num den t^2 stays near 2^49, inside 64-bit arithmetic.
        let exp = var.log2().floor() as i32;
        let s = (24 - exp).clamp(0, 62);
        let den = 1u64 << s;
        let scaled = var * den as f64; // exact: multiplying by a power of two
        let num = scaled.ceil();
        if !(num >= 1.0 && num < 2f64.powi(62)) {
            return Err(DpError::InvalidParameter {
                name: "sigma",
                value: sigma,
                reason: "sigma^2 cannot be represented as a 62-bit fraction",
            });
        }
        Self::from_rational(num as u64, den)
    }

    /// A sampler for exactly `σ² = num/den`, for callers that need a specific rational variance.
    pub fn from_rational(num: u64, den: u64) -> Result<Self, DpError> {
        if num == 0 || den == 0 {
            return Err(DpError::InvalidCount {
                name: "sigma^2 numerator/denominator",
                value: 0,
                reason: "must be positive",
            });
        }
        let (num, den) = (u128::from(num), u128::from(den));
        let var = num as f64 / den as f64;
        check_sigma(var.sqrt())?;
        // t = floor(sqrt(num/den)) + 1, exactly: the largest m with m^2 den <= num, plus one.
        let mut m = var.sqrt().floor() as u128;
        while m > 0 && m * m * den > num {
            m -= 1;
        }
        while (m + 1) * (m + 1) * den <= num {
            m += 1;
        }
        let t = m + 1;
        let too_big = DpError::InvalidParameter {
            name: "sigma^2",
            value: var,
            reason: "numerator and denominator too large for 128-bit arithmetic",
        };
        let t_den = t
            .checked_mul(den)
            .filter(|&x| x < (1u128 << 64))
            .ok_or_else(|| too_big.clone())?;
        let accept_den = num
            .checked_mul(2 * den)
            .and_then(|x| x.checked_mul(t * t))
            .filter(|&x| x < (1u128 << 126))
            .ok_or(too_big)?;
        Ok(Self {
            num,
            den,
            t: t as u64,
            t_den,
            accept_den,
        })
    }

    /// The exact variance parameter `σ² = num/den` actually sampled.
    pub fn sigma_squared(&self) -> (u128, u128) {
        (self.num, self.den)
    }

    /// The effective `σ` as a float, for accounting (never below the requested `σ`).
    pub fn sigma(&self) -> f64 {
        (self.num as f64 / self.den as f64).sqrt()
    }

    /// One draw from the discrete Laplace with scale `t`, as `(|x|, negative)`.
    #[inline]
    fn laplace<R: Rng + ?Sized>(&self, rng: &mut R) -> (u64, bool) {
        let t = self.t;
        loop {
            // t <= 2^24 + 1, so it fits a u32 draw.
            let u = if t == 1 {
                0
            } else {
                u64::from(uniform_below(rng, t as u32))
            };
            if !bernoulli_exp_frac(rng, u128::from(u), u128::from(t)) {
                continue;
            }
            let mut v: u64 = 0;
            while bernoulli_exp_minus_one(rng) {
                v = v.saturating_add(1);
            }
            let Some(x) = v.checked_mul(t).and_then(|tv| tv.checked_add(u)) else {
                continue;
            };
            if x > i64::MAX as u64 {
                continue;
            }
            let negative = rng.next_u32() & 1 == 1;
            if negative && x == 0 {
                continue;
            }
            return (x, negative);
        }
    }

    /// One exact draw from `N_Z(0, σ²)`.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        loop {
            let (y, negative) = self.laplace(rng);
            // gamma = (|y| t den - num)^2 / (2 num den t^2) = (|y| - σ²/t)^2 / (2σ²).
            // y < 2^63 and t_den < 2^64 (checked in `from_rational`), so a < 2^127 and a^2 < 2^254.
            let a = (u128::from(y) * self.t_den).abs_diff(self.num);
            let (hi, lo) = match u64::try_from(a) {
                // The usual case: one 64x64-bit product.
                Ok(a64) => (0, u128::from(a64) * u128::from(a64)),
                Err(_) => mul_wide(a, a),
            };
            let accept = bernoulli_exp_wide(rng, hi, lo, self.accept_den);
            if accept {
                // y <= i64::MAX was checked in `laplace`.
                let y = y as i64;
                return if negative { -y } else { y };
            }
        }
    }

    /// Fills `out` with independent draws from `N_Z(0, σ²)`.
    pub fn fill<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        for x in out {
            *x = self.sample(rng);
        }
    }
}

/// Checks that `σ` is finite and within `[MIN_SIGMA, MAX_SIGMA]`.
fn check_sigma(sigma: f64) -> Result<f64, DpError> {
    crate::error::check_range(
        "sigma",
        sigma,
        MIN_SIGMA,
        MAX_SIGMA,
        "must be finite and within [2^-8, 2^24]",
    )
}

/// Gaussian noise on the lattice `λℤ` (discrete Gaussian scaled by `λ`), for real-valued vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct LatticeGaussian {
    /// The integer-domain sampler, `σ/λ ∈ [2^20, 2^21)`.
    inner: DiscreteGaussian,
    /// The lattice step `λ`, a power of two.
    step: f64,
}

impl LatticeGaussian {
    /// Noise with standard deviation `σ` (for DP-SGD: `σ = noise_multiplier · clip`).
    pub fn new(sigma: f64) -> Result<Self, DpError> {
        crate::error::check_range(
            "sigma",
            sigma,
            f64::MIN_POSITIVE,
            1e12,
            "must be positive, finite and at most 1e12",
        )?;
        let exp = sigma.log2().floor() as i32;
        let step = 2f64.powi(exp - 20);
        // Dividing by a power of two is exact, so the lattice sigma is exactly sigma / step.
        let inner = DiscreteGaussian::new(sigma / step)?;
        Ok(Self { inner, step })
    }

    /// The lattice step `λ`.
    pub fn step(&self) -> f64 {
        self.step
    }

    /// The effective standard deviation `λ·σ_Z` (at least the requested `σ`).
    pub fn sigma(&self) -> f64 {
        self.inner.sigma() * self.step
    }

    /// How much rounding to the lattice can add to an L2 sensitivity in `dim` dimensions: `λ√d`.
    pub fn sensitivity_inflation(&self, dim: usize) -> f64 {
        self.step * (dim as f64).sqrt()
    }

    /// One noise value `λ·Z`, exactly representable in `f64`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        self.inner.sample(rng) as f64 * self.step
    }

    /// A noise vector of length `dim` (e.g. for a gradient of `dim` parameters).
    pub fn noise_vec<R: Rng + ?Sized>(&self, rng: &mut R, dim: usize) -> Vec<f64> {
        (0..dim).map(|_| self.sample(rng)).collect()
    }

    /// Rounds each coordinate of `v` to the lattice and adds lattice noise: the whole mechanism
    /// output lies on `λℤ`, so its floating-point representation reveals nothing extra.
    pub fn privatize<R: Rng + ?Sized>(&self, rng: &mut R, v: &mut [f64]) {
        for x in v {
            let on_lattice = (*x / self.step).round_ties_even();
            *x = (on_lattice + self.inner.sample(rng) as f64) * self.step;
        }
    }

    /// [`Self::privatize`] for `f32` vectors (the final cast to `f32` is post-processing).
    pub fn privatize_f32<R: Rng + ?Sized>(&self, rng: &mut R, v: &mut [f32]) {
        for x in v {
            let on_lattice = (f64::from(*x) / self.step).round_ties_even();
            *x = ((on_lattice + self.inner.sample(rng) as f64) * self.step) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn exp_minus_one_counts_partition_12_factorial() {
        let (odd, even) = EXP_M1_COUNTS;
        // Exactly one draw (all twelve digits zero) is left for the continuation.
        assert_eq!(u64::from(odd) + u64::from(even) + 1, u64::from(FACT12));
        let p = f64::from(odd) / f64::from(FACT12);
        assert!((p - (-1f64).exp()).abs() < 1e-8);
    }

    #[test]
    fn bernoulli_ratio_frequency() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let n = 200_000;
        for (a, b) in [(1u128, 3u128), (2, 7), (999, 1000), (1, 1u128 << 100)] {
            let hits = (0..n).filter(|_| bernoulli_ratio(&mut rng, a, b)).count();
            let p = a as f64 / b as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            assert!(
                (hits as f64 / n as f64 - p).abs() < 5.0 * se + 1e-6,
                "{a}/{b}"
            );
        }
    }

    #[test]
    fn bernoulli_exp_frequency() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let n = 200_000;
        for (a, b) in [(0u128, 1u128), (1, 2), (1, 1), (7, 3), (50, 7)] {
            let hits = (0..n)
                .filter(|_| bernoulli_exp_wide(&mut rng, 0, a, b))
                .count();
            let p = (-(a as f64) / b as f64).exp();
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (hits as f64 / n as f64 - p).abs() < 5.0 * se + 1e-6,
                "{a}/{b}"
            );
        }
        let hits = (0..n).filter(|_| bernoulli_exp_minus_one(&mut rng)).count();
        let p = (-1f64).exp();
        assert!((hits as f64 / n as f64 - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt());
    }

    #[test]
    fn mul_wide_matches_split_products() {
        let a = u128::MAX;
        let (hi, lo) = mul_wide(a, a);
        // (2^128 - 1)^2 = 2^256 - 2^129 + 1.
        assert_eq!(lo, 1);
        assert_eq!(hi, u128::MAX - 1);
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
        assert_eq!(mul_wide(12345, 678), (0, 12345 * 678));
    }

    #[test]
    fn huge_exponent_is_rejected_not_panicking() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        // exp(-2^200) is never accepted in practice, and the wide path must not overflow.
        assert!(!bernoulli_exp_wide(&mut rng, 1 << 72, 0, 3));
    }

    #[test]
    fn t_is_floor_sigma_plus_one() {
        for (sigma, t) in [(0.5, 1), (1.0, 2), (2.9, 3), (10.0, 11), (1000.5, 1001)] {
            assert_eq!(DiscreteGaussian::new(sigma).unwrap().t, t, "sigma {sigma}");
        }
        assert!(DiscreteGaussian::new(2.0).unwrap().sigma() >= 2.0);
    }
}
