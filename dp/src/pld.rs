//! Privacy-loss-distribution (PLD) accounting of the Poisson-subsampled Gaussian: the tight
//! `(ε, δ)` of many DP-SGD steps, where RDP's conversion loses a few tens of percent.
//!
//! # Privacy loss distributions
//!
//! For a mechanism with output distributions `P` (the person's data in) and `Q` (out), the
//! privacy loss at output `x` is `L(x) = ln(P(x)/Q(x))`, and its distribution under `x ∼ P` (the
//! PLD) determines the mechanism's whole privacy curve:
//!
//! `δ(ε) = sup_S P(S) − e^ε Q(S) = E_{L∼PLD}[(1 − e^{ε−L})₊]`   (+ the mass at `L = +∞`).
//!
//! Composition adds independent losses, so the PLD of `T` steps is the `T`-fold convolution of one
//! step's (Koskela, Jälkö & Honkela 2020; Google's `dp-accounting`, which this module is checked
//! against in `dp/tests/pld_reference.rs`). Under add-or-remove-one neighbours there are two
//! directions, each composed separately, and `ε(δ)` is the larger of the two:
//!
//! - **remove**: `P = (1−q)N(0, σ²) + qN(1, σ²)`, `Q = N(0, σ²)`,
//!   `L(x) = ln(1 − q + q·e^{(2x−1)/(2σ²)})`, increasing in `x`, bounded below by `ln(1−q)`;
//! - **add**: `P = N(0, σ²)`, `Q = (1−q)N(0, σ²) + qN(1, σ²)`; with `y = −x`,
//!   `L(y) = −ln(1 − q + q·e^{(−2y−1)/(2σ²)})`, increasing in `y`, bounded above by `−ln(1−q)`.
//!
//! # Discretization: connect the dots
//!
//! Losses live on the grid `k·h` (`h = 10⁻⁴` by default, as `dp-accounting`). The grid points
//! cut the `x` axis into intervals (the loss is monotone); an interval holding `P`-mass `p` and
//! `Q`-mass `r`, with loss between `ε_k` and `ε_{k+1}`, puts `a` at `ε_k` and `b` at `ε_{k+1}`
//! with `a + b = p` and `a e^{−ε_k} + b e^{−ε_{k+1}} = r` (Doroshenko, Ghazi, Kamath, Kumar &
//! Manurangsi, PETS 2022). Both masses are kept, so the result is the PLD of a real pair of
//! distributions, and since `(1 − e^ε u)₊` is convex in `u = e^{−L}`, moving each interval's mass
//! to the chord's ends can only raise `δ(ε)`: the discrete PLD *dominates* the true one, and
//! composition keeps domination. The noise's far tails (beyond 11σ, mass below `10⁻²⁷`) are
//! charged as infinite loss; loss below the grid's floor is rounded up to it.
//!
//! # Composition by FFT, and truncation
//!
//! `T` steps are the `T`-th power of one step's discrete Fourier transform. Chernoff's bound,
//! `P(S_T ≥ s) ≤ min_{t>0} M(t)^T e^{−ts}` with `M` the step's moment generating function, finds
//! a window holding all but `10⁻¹⁵` of the composed mass at each end; the transform is taken at a
//! power-of-two size no smaller than the window, so mass outside it can only alias *into* the
//! window (raising `δ`), and the upper tail's bound is added to the infinite mass. A plain
//! Gaussian (`q = 1`) is composed exactly first: `T` steps of `σ` are one step of `σ/√T`.
//!
//! # Determinism
//!
//! The ledger's contract compares figures computed on different machines, and whether a
//! distribution fits in [`MAX_POINTS`] decides between PLD and RDP. So every transcendental
//! function here is the pure-Rust `libm` (not the platform's), and the FFT is rustfft's scalar
//! one (no runtime choice of SIMD path). rustfft's twiddle factors still come from the
//! platform's `sin`/`cos`, so two machines may differ in the last bits of a figure; the
//! contract's tolerance (`medfl_ledger::EPSILON_TOLERANCE`, 10⁻⁶ relative) absorbs that, and
//! the grid sizes (which decide PLD or RDP) come from `libm` alone.
//!
//! # Rounding
//!
//! Raising a transform to the `T`-th power multiplies its rounding error by `T`; a bound on it
//! (`8·T·log₂(size)·ε_mach`) is charged as infinite loss, and `T` is capped at [`MAX_STEPS`].
//!
//! # Conversion
//!
//! `δ(ε)` is piecewise `A − e^ε B` between grid points, so [`Pld::epsilon`] solves for `ε` in
//! closed form on the one piece where the curve crosses the target.

use libm::{exp, expm1, log, log1p};
use rustfft::FftPlannerScalar;
use rustfft::num_complex::Complex;

use crate::accountant::{check_delta, check_noise, check_q};
use crate::error::{DpError, check_range};

/// The default loss grid, as `dp-accounting`'s `PLDAccountant`.
pub const DEFAULT_INTERVAL: f64 = 1e-4;
/// Noise beyond this many standard deviations is charged as infinite loss (mass `< 10⁻²⁷`).
const NOISE_TAIL_SIGMAS: f64 = 11.0;
/// Composed mass allowed outside the window at each end (charged pessimistically).
const TAIL_MASS: f64 = 1e-15;
/// Most grid points in one distribution (2²² complex doubles: 64 MiB); beyond it accounting
/// refuses rather than exhaust memory, and callers fall back to RDP.
const MAX_POINTS: usize = 1 << 22;
/// Smallest (effective) noise multiplier PLD is computed for: below it one step's loss spans
/// too much of the grid to be worth it, and RDP prices it.
pub const MIN_SIGMA: f64 = 0.2;
/// Most steps composed (10,000 rounds of 100 steps): raising the transform to the `T`-th power
/// multiplies its rounding error by `T`, and beyond this the allowance charged for it
/// ([`rounding_allowance`]) would rival the `δ`s medfl states.
pub const MAX_STEPS: u64 = 1 << 20;
/// Largest noise multiplier PLD is computed for (`σ²` must stay finite); beyond it, RDP.
const MAX_SIGMA: f64 = 1e6;
/// Grid indices stay well inside `i64` and exact in `f64`.
const MAX_INDEX: f64 = (1u64 << 52) as f64;

/// One direction's discrete PLD: `mass[i]` at loss `(offset + i)·h`, plus mass at `+∞`.
#[derive(Debug, Clone, PartialEq)]
struct LossPmf {
    offset: i64,
    mass: Vec<f64>,
    infinite: f64,
}

/// The discrete privacy loss distributions (both neighbouring directions) of a composition.
#[derive(Debug, Clone, PartialEq)]
pub struct Pld {
    interval: f64,
    remove: LossPmf,
    add: LossPmf,
}

impl Pld {
    /// The PLD of no mechanism at all (loss 0 with certainty), on a grid of `interval`.
    pub fn identity(interval: f64) -> Result<Pld, DpError> {
        check_range("interval", interval, 1e-7, 1.0, "must be in [1e-7, 1]")?;
        let zero = LossPmf {
            offset: 0,
            mass: vec![1.0],
            infinite: 0.0,
        };
        Ok(Pld {
            interval,
            remove: zero.clone(),
            add: zero,
        })
    }

    /// The PLD of `steps` compositions of the Poisson-subsampled Gaussian (rate `q`, noise
    /// multiplier `σ`), on a grid of `interval`.
    ///
    /// # Errors
    /// Parameters out of range, or a distribution larger than this module computes (tiny `σ`
    /// with huge `steps`), as [`DpError::InvalidCount`].
    pub fn poisson_gaussian(q: f64, sigma: f64, steps: u64, interval: f64) -> Result<Pld, DpError> {
        check_q(q)?;
        check_noise(sigma)?;
        let mut pld = Pld::identity(interval)?;
        if steps == 0 || q == 0.0 {
            return Ok(pld);
        }
        if sigma == 0.0 {
            pld.remove.infinite = 1.0;
            pld.add.infinite = 1.0;
            return Ok(pld);
        }
        if steps > MAX_STEPS {
            return Err(too_large(steps as f64));
        }
        let (sigma, count) = if q == 1.0 {
            // The Gaussian mechanism composes exactly: T steps of σ are one step of σ/√T.
            (sigma / (steps as f64).sqrt(), 1)
        } else {
            (sigma, steps)
        };
        if !(MIN_SIGMA..=MAX_SIGMA).contains(&sigma) {
            return Err(DpError::InvalidParameter {
                name: "noise_multiplier",
                value: sigma,
                reason: "outside the PLD accountant's range; use RDP",
            });
        }
        for (direction, pmf) in [
            (Direction::Remove, &mut pld.remove),
            (Direction::Add, &mut pld.add),
        ] {
            let one = one_step(direction, q, sigma, interval)?;
            *pmf = self_compose(&one, count, interval)?;
        }
        Ok(pld)
    }

    /// The PLD of running the mechanisms of `self` and `other` both.
    ///
    /// # Errors
    /// The grids differ, or the result is larger than this module computes.
    pub fn compose(&self, other: &Pld) -> Result<Pld, DpError> {
        if self.interval.to_bits() != other.interval.to_bits() {
            return Err(DpError::InvalidParameter {
                name: "interval",
                value: other.interval,
                reason: "PLDs on different grids do not compose",
            });
        }
        Ok(Pld {
            interval: self.interval,
            remove: convolve(&self.remove, &other.remove)?,
            add: convolve(&self.add, &other.add)?,
        })
    }

    /// `δ(ε)`: the hockey-stick divergence at `ε`, the larger of the two directions.
    pub fn delta(&self, epsilon: f64) -> Result<f64, DpError> {
        check_range("epsilon", epsilon, 0.0, f64::MAX, "must be finite, >= 0")?;
        Ok(
            hockey_stick(&self.remove, epsilon, self.interval).max(hockey_stick(
                &self.add,
                epsilon,
                self.interval,
            )),
        )
    }

    /// The smallest `ε ≥ 0` with `δ(ε) ≤ delta` (`+∞` if the mass at infinite loss exceeds
    /// `delta`).
    pub fn epsilon(&self, delta: f64) -> Result<f64, DpError> {
        check_delta(delta)?;
        Ok(
            epsilon_for_delta(&self.remove, delta, self.interval).max(epsilon_for_delta(
                &self.add,
                delta,
                self.interval,
            )),
        )
    }
}

/// Which neighbouring direction a PLD describes (see the module docs).
#[derive(Clone, Copy, Debug)]
enum Direction {
    Remove,
    Add,
}

/// Mass of `N(μ, σ²)` on `(a, b)`, accurate in both tails (differences of the smaller tail).
fn gauss_mass(a: f64, b: f64, mu: f64, sigma: f64) -> f64 {
    let s = std::f64::consts::SQRT_2 * sigma;
    let (za, zb) = ((a - mu) / s, (b - mu) / s);
    let m = if za >= 0.0 {
        0.5 * (libm::erfc(za) - libm::erfc(zb))
    } else if zb <= 0.0 {
        0.5 * (libm::erfc(-zb) - libm::erfc(-za))
    } else {
        1.0 - 0.5 * (libm::erfc(-za) + libm::erfc(zb))
    };
    m.max(0.0)
}

/// One direction of one step: its loss as a function of the (oriented) output, the inverse, and
/// the two distributions as mixtures `Σ w N(μ, σ²)`.
struct Step {
    q: f64,
    sigma: f64,
    direction: Direction,
}

impl Step {
    /// The loss at output `x` (oriented so it increases with `x`).
    fn loss(&self, x: f64) -> f64 {
        let s2 = 2.0 * self.sigma * self.sigma;
        match self.direction {
            // ln(1 − q + q e^u), u = (2x − 1)/(2σ²), evaluated without overflow for large u.
            Direction::Remove => log_mix(self.q, (2.0 * x - 1.0) / s2),
            Direction::Add => -log_mix(self.q, (-2.0 * x - 1.0) / s2),
        }
    }

    /// The output at which the loss is `l` (`±∞` beyond the loss's range).
    fn output_at(&self, l: f64) -> f64 {
        let s2 = self.sigma * self.sigma;
        match self.direction {
            Direction::Remove => {
                // e^u = (e^l − (1 − q))/q.
                let num = excess_over(self.q, l);
                if num <= 0.0 {
                    f64::NEG_INFINITY
                } else {
                    s2 * (log(num) - log(self.q)) + 0.5
                }
            }
            Direction::Add => {
                // e^v = (e^{−l} − (1 − q))/q, v = (−2y − 1)/(2σ²).
                let num = excess_over(self.q, -l);
                if num <= 0.0 {
                    f64::INFINITY
                } else {
                    -s2 * (log(num) - log(self.q)) - 0.5
                }
            }
        }
    }

    /// `(P-mass, Q-mass)` of the output interval `(a, b)`.
    fn masses(&self, a: f64, b: f64) -> (f64, f64) {
        let (q, s) = (self.q, self.sigma);
        let centre = gauss_mass(a, b, 0.0, s);
        match self.direction {
            Direction::Remove => ((1.0 - q) * centre + q * gauss_mass(a, b, 1.0, s), centre),
            Direction::Add => (centre, (1.0 - q) * centre + q * gauss_mass(a, b, -1.0, s)),
        }
    }

    /// The output range outside which the `P`-mass is charged as infinite or rounded up.
    fn output_range(&self) -> (f64, f64) {
        let t = NOISE_TAIL_SIGMAS * self.sigma;
        match self.direction {
            Direction::Remove => (-t, 1.0 + t),
            Direction::Add => (-t, t),
        }
    }
}

/// `e^l − (1 − q)` without cancelling away `e^l` when it is tiny: `expm1(l) + q` for small
/// `q`, and `e^l − (1 − q)` (where `1 − q` is exact) for large.
fn excess_over(q: f64, l: f64) -> f64 {
    if q > 0.5 {
        exp(l) - (1.0 - q)
    } else {
        expm1(l) + q
    }
}

/// `ln(1 − q + q e^u)` for `q ∈ (0, 1]`, stable for large `u`.
fn log_mix(q: f64, u: f64) -> f64 {
    if q == 1.0 {
        return u;
    }
    let a = log1p(-q);
    let b = log(q) + u;
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + log1p(exp(lo - hi))
}

/// Connect-the-dots discretization of one step in one direction.
fn one_step(direction: Direction, q: f64, sigma: f64, h: f64) -> Result<LossPmf, DpError> {
    let step = Step {
        q,
        sigma,
        direction,
    };
    let (x_lo, x_hi) = step.output_range();
    let lo = (step.loss(x_lo) / h).floor();
    let hi = (step.loss(x_hi) / h).ceil();
    let points = hi - lo + 1.0;
    if !(lo.abs() <= MAX_INDEX && hi.abs() <= MAX_INDEX) || points > MAX_POINTS as f64 {
        return Err(too_large(points));
    }
    let (lo, n) = (lo as i64, points as usize);
    let mut mass = vec![0.0; n];
    let grid = |i: usize| (lo + i as i64) as f64 * h;
    // Below the floor: rounded up to it.
    let mut left = step.output_at(grid(0));
    mass[0] += step.masses(f64::NEG_INFINITY, left).0;
    // 1 − e^{−h}, the denominator of the split, to full precision.
    let gap = -expm1(-h);
    for i in 0..n - 1 {
        let right = step.output_at(grid(i + 1));
        let (p, r) = step.masses(left, right);
        left = right;
        if p <= 0.0 {
            continue;
        }
        // b at ε_{i+1}, a = p − b at ε_i, scaled by e^{ε_i}. Where that overflows (losses
        // beyond 709) everything goes up, which can only raise δ.
        let scaled = if r > 0.0 { r * exp(grid(i)) } else { 0.0 };
        let b = if scaled.is_finite() {
            ((p - scaled) / gap).clamp(0.0, p)
        } else {
            p
        };
        mass[i] += p - b;
        mass[i + 1] += b;
    }
    let infinite = step.masses(left, f64::INFINITY).0;
    // Every bit of P's mass must be somewhere: a NaN (dropped by a max or clamp) or a lost
    // interval would silently lower δ.
    let total = mass.iter().sum::<f64>() + infinite;
    if !((1.0 - 1e-9)..=(1.0 + 1e-9)).contains(&total) {
        return Err(DpError::InvalidParameter {
            name: "pld_mass",
            value: total,
            reason: "the discretized distribution lost mass; use RDP",
        });
    }
    Ok(LossPmf {
        offset: lo,
        mass,
        infinite,
    })
}

/// An allowance for the rounding of an FFT of `size` points raised to the `count`-th power and
/// inverted: each coefficient carries a relative error of about `log₂(size)·ε_mach`, the power
/// multiplies it by `count`, and the zero-frequency error lands on every bin alike. Charged as
/// infinite loss (it can only raise δ), with a factor 8 of room. It is an estimate of the
/// dominant term, not a proven bound on the ℓ₁ error over all bins (that worst case is up to
/// `√size` larger); the agreement with dp-accounting, whose FFT rounds differently, is the
/// check that it is not too small in practice.
fn rounding_allowance(count: u64, size: usize) -> f64 {
    let log_size = (usize::BITS - size.leading_zeros()) as f64;
    8.0 * count as f64 * log_size * f64::EPSILON
}

fn too_large(points: f64) -> DpError {
    DpError::InvalidCount {
        name: "pld_points",
        value: if points.is_finite() {
            points as u64
        } else {
            u64::MAX
        },
        reason: "the privacy loss distribution is too large to compute; use RDP",
    }
}

/// `ln Σ_i m_i e^{t·l_i}` over the finite part, from `(l_i, ln m_i)` pairs.
fn log_mgf(terms: &[(f64, f64)], t: f64) -> f64 {
    let best = terms
        .iter()
        .map(|&(l, lm)| lm + t * l)
        .fold(f64::NEG_INFINITY, f64::max);
    if best == f64::NEG_INFINITY {
        return best;
    }
    let sum: f64 = terms.iter().map(|&(l, lm)| exp(lm + t * l - best)).sum();
    best + log(sum)
}

/// The grid window `[lo, hi]` holding all but [`TAIL_MASS`] of the `count`-fold sum at each end
/// (Chernoff, over `t` on a geometric grid: a coarse `t` only widens the window), within the
/// sum's hard range.
fn window(pmf: &LossPmf, count: u64, h: f64) -> Result<(i64, i64), DpError> {
    let terms: Vec<(f64, f64)> = pmf
        .mass
        .iter()
        .enumerate()
        .filter(|&(_, &m)| m > 0.0)
        .map(|(i, &m)| ((pmf.offset + i as i64) as f64 * h, log(m)))
        .collect();
    let c = count as f64;
    let last = pmf.offset as f64 + (pmf.mass.len() - 1) as f64;
    let (mut lo, mut hi) = (pmf.offset as f64 * c, last * c);
    let log_tail = log(TAIL_MASS);
    let mut t = 1e-3;
    while t < 1e4 {
        let up = (c * log_mgf(&terms, t) - log_tail) / (t * h);
        if up.is_finite() {
            hi = hi.min(up.ceil());
        }
        let down = -(c * log_mgf(&terms, -t) - log_tail) / (t * h);
        if down.is_finite() {
            lo = lo.max(down.floor());
        }
        t *= 3.0;
    }
    let lo = lo.min(hi);
    // Checked in f64 before any cast: a huge step count must not saturate into a tiny window.
    if !(lo.abs() <= MAX_INDEX && hi.abs() <= MAX_INDEX) || hi - lo + 1.0 > MAX_POINTS as f64 {
        return Err(too_large(hi - lo + 1.0));
    }
    Ok((lo as i64, hi as i64))
}

/// The `count`-fold composition of `pmf` with itself.
fn self_compose(pmf: &LossPmf, count: u64, h: f64) -> Result<LossPmf, DpError> {
    if count == 1 {
        return Ok(pmf.clone());
    }
    let (lo, hi) = window(pmf, count, h)?;
    let span = (hi - lo + 1) as usize;
    let size = span.max(pmf.mass.len()).next_power_of_two();
    if size > MAX_POINTS {
        return Err(too_large(size as f64));
    }
    // Mass at grid index k sits at k mod size; the composed index k lands at k mod size too, and
    // the window is no wider than `size`, so each window index has its own slot.
    let slot = |k: i64| k.rem_euclid(size as i64) as usize;
    let mut buf = vec![Complex::new(0.0, 0.0); size];
    for (i, &m) in pmf.mass.iter().enumerate() {
        buf[slot(pmf.offset + i as i64)].re += m;
    }
    let mut planner = FftPlannerScalar::new();
    planner.plan_fft_forward(size).process(&mut buf);
    for z in &mut buf {
        *z = powu(*z, count);
    }
    planner.plan_fft_inverse(size).process(&mut buf);
    let scale = 1.0 / size as f64;
    let mass: Vec<f64> = (lo..=hi)
        .map(|k| (buf[slot(k)].re * scale).max(0.0))
        .collect();
    // Infinite loss in any step is infinite in the sum; the upper tail's bound joins it (and the
    // lower tail's bound is rounded up onto the window's floor, never dropped).
    let finite_all = exp(count as f64 * log1p(-pmf.infinite));
    let mut out = LossPmf {
        offset: lo,
        mass,
        infinite: (1.0 - finite_all + TAIL_MASS + rounding_allowance(count, size)).min(1.0),
    };
    out.mass[0] += TAIL_MASS;
    conserved(out)
}

/// `z^n` by repeated squaring.
fn powu(mut z: Complex<f64>, mut n: u64) -> Complex<f64> {
    let mut acc = Complex::new(1.0, 0.0);
    while n > 0 {
        if n & 1 == 1 {
            acc *= z;
        }
        z *= z;
        n >>= 1;
    }
    acc
}

/// The distribution of the sum of independent losses from `a` and `b`.
fn convolve(a: &LossPmf, b: &LossPmf) -> Result<LossPmf, DpError> {
    let n = a.mass.len() + b.mass.len() - 1;
    let size = n.next_power_of_two();
    if size > MAX_POINTS {
        return Err(too_large(size as f64));
    }
    let load = |pmf: &LossPmf| {
        let mut buf = vec![Complex::new(0.0, 0.0); size];
        for (slot, &m) in buf.iter_mut().zip(&pmf.mass) {
            slot.re = m;
        }
        buf
    };
    let offset = a.offset + b.offset;
    if offset.unsigned_abs() as f64 > MAX_INDEX {
        return Err(too_large(n as f64));
    }
    let (mut fa, mut fb) = (load(a), load(b));
    let mut planner = FftPlannerScalar::new();
    let forward = planner.plan_fft_forward(size);
    forward.process(&mut fa);
    forward.process(&mut fb);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x *= y;
    }
    planner.plan_fft_inverse(size).process(&mut fa);
    let scale = 1.0 / size as f64;
    let finite = (1.0 - a.infinite) * (1.0 - b.infinite);
    conserved(LossPmf {
        offset,
        mass: fa[..n].iter().map(|z| (z.re * scale).max(0.0)).collect(),
        infinite: (1.0 - finite + rounding_allowance(2, size)).min(1.0),
    })
}

/// Refuses a composed distribution that lost mass (a NaN turned into 0 by a clamp, a window
/// that dropped more than its tails): a lost mass would lower δ.
fn conserved(pmf: LossPmf) -> Result<LossPmf, DpError> {
    let total = pmf.mass.iter().sum::<f64>() + pmf.infinite;
    if total.is_finite() && total >= 1.0 - 1e-6 {
        Ok(pmf)
    } else {
        Err(DpError::InvalidParameter {
            name: "pld_mass",
            value: total,
            reason: "the composed distribution lost mass; use RDP",
        })
    }
}

/// `δ(ε) = P(L = ∞) + Σ_k m_k (1 − e^{ε − k h})₊`.
fn hockey_stick(pmf: &LossPmf, epsilon: f64, h: f64) -> f64 {
    let mut delta = pmf.infinite;
    for (i, &m) in pmf.mass.iter().enumerate() {
        let l = (pmf.offset + i as i64) as f64 * h;
        if l > epsilon {
            delta += m * -expm1(epsilon - l);
        }
    }
    delta.min(1.0)
}

/// The smallest `ε ≥ 0` with `δ(ε) ≤ target`, solved on the piece of the curve that crosses it.
///
/// Scanning grid points `k` from the top, `A = Σ_{j≥k} m_j` and `S = Σ_{j≥k} m_j e^{(k−j)h}`
/// give `δ(ε) = ∞-mass + A − e^{ε−kh} S` for `ε ∈ [(k−1)h, kh)`.
fn epsilon_for_delta(pmf: &LossPmf, target: f64, h: f64) -> f64 {
    if pmf.infinite > target {
        return f64::INFINITY;
    }
    let decay = exp(-h);
    let (mut a, mut s) = (0.0, 0.0);
    let mut k = pmf.offset + pmf.mass.len() as i64;
    for &m in pmf.mass.iter().rev() {
        k -= 1;
        a += m;
        s = m + decay * s;
        let excess = pmf.infinite + a - target;
        // δ just below grid point k (at ε = (k−1)h) still exceeds the target: the crossing
        // is on this piece.
        if excess > decay * s {
            let eps = k as f64 * h + log(excess / s);
            return eps.max(0.0);
        }
        if k <= 1 {
            // δ at a non-positive ε is already within the target: ε = 0 suffices.
            return 0.0;
        }
    }
    // The whole finite mass is above ε and the curve never crossed on the grid: solve below it.
    let excess = pmf.infinite + a - target;
    if excess <= 0.0 || s <= 0.0 {
        return 0.0;
    }
    (k as f64 * h + log(excess / s)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Φ(x) for the standard normal.
    fn phi(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    /// The exact privacy curve of the Gaussian mechanism with sensitivity 1 and std `s`
    /// (Balle & Wang 2018, Thm. 8).
    fn gaussian_delta(s: f64, eps: f64) -> f64 {
        let mu = 1.0 / s;
        phi(-eps / mu + mu / 2.0) - eps.exp() * phi(-eps / mu - mu / 2.0)
    }

    #[test]
    fn a_single_gaussian_is_bounded_from_above_and_tightly() {
        for sigma in [0.7, 1.0, 3.0] {
            let pld = Pld::poisson_gaussian(1.0, sigma, 1, DEFAULT_INTERVAL).unwrap();
            for eps in [0.0, 0.5, 1.0, 2.0] {
                let exact = gaussian_delta(sigma, eps);
                let got = pld.delta(eps).unwrap();
                assert!(
                    got >= exact * (1.0 - 1e-9),
                    "σ {sigma} ε {eps}: {got} < {exact}"
                );
                assert!(
                    got <= exact * 1.001 + 1e-12,
                    "σ {sigma} ε {eps}: {got} ≫ {exact}"
                );
            }
        }
    }

    #[test]
    fn composed_gaussians_match_the_exact_curve() {
        // 100 steps of σ = 10 are one step of σ = 1; compose through the FFT path by taking
        // q just below 1 is not exact, so compose two single steps explicitly instead.
        let one = Pld::poisson_gaussian(1.0, 2.0_f64.sqrt(), 1, DEFAULT_INTERVAL).unwrap();
        let two = one.compose(&one).unwrap();
        for eps in [0.25, 1.0, 2.0] {
            let exact = gaussian_delta(1.0, eps);
            let got = two.delta(eps).unwrap();
            assert!(got >= exact * (1.0 - 1e-9), "ε {eps}: {got} < {exact}");
            assert!(got <= exact * 1.002 + 1e-12, "ε {eps}: {got} vs {exact}");
        }
    }

    #[test]
    fn epsilon_inverts_delta() {
        let pld = Pld::poisson_gaussian(0.01, 1.0, 1000, DEFAULT_INTERVAL).unwrap();
        for delta in [1e-5, 1e-6, 1e-8] {
            let eps = pld.epsilon(delta).unwrap();
            assert!(eps > 0.0);
            let at = pld.delta(eps).unwrap();
            assert!(
                (at - delta).abs() <= 1e-6 * delta,
                "δ({eps}) = {at}, wanted {delta}"
            );
            assert!(pld.delta(eps * 0.99).unwrap() > delta);
        }
    }

    #[test]
    fn tighter_than_rdp_on_dp_sgd() {
        let mut rdp = crate::RdpAccountant::new();
        rdp.compose_poisson_gaussian(0.01, 1.0, 1000).unwrap();
        let pld = Pld::poisson_gaussian(0.01, 1.0, 1000, DEFAULT_INTERVAL).unwrap();
        let (r, p) = (rdp.epsilon(1e-6).unwrap(), pld.epsilon(1e-6).unwrap());
        assert!(p < r, "PLD {p} is not below RDP {r}");
    }

    #[test]
    fn composing_in_parts_equals_composing_at_once() {
        let whole = Pld::poisson_gaussian(0.05, 1.2, 300, DEFAULT_INTERVAL).unwrap();
        let part = Pld::poisson_gaussian(0.05, 1.2, 100, DEFAULT_INTERVAL).unwrap();
        let parts = part.compose(&part).unwrap().compose(&part).unwrap();
        let (a, b) = (whole.epsilon(1e-6).unwrap(), parts.epsilon(1e-6).unwrap());
        assert!((a - b).abs() <= 1e-6 * a, "{a} vs {b}");
    }

    #[test]
    fn both_directions_agree_for_a_plain_gaussian_even_far_in_the_tail() {
        // q = 1 is symmetric: the add direction (whose inverse once lost e^{-l} to cancellation
        // beyond l ≈ 37) must carry the same curve as the remove direction.
        let pld = Pld::poisson_gaussian(1.0, 0.35, 1, DEFAULT_INTERVAL).unwrap();
        for eps in [1.0, 5.0, 10.0, 20.0, 38.0] {
            let (r, a) = (
                hockey_stick(&pld.remove, eps, pld.interval),
                hockey_stick(&pld.add, eps, pld.interval),
            );
            assert!(
                (r - a).abs() <= 1e-6 * r.max(1e-300),
                "ε {eps}: remove {r}, add {a}"
            );
            let exact = gaussian_delta(0.35, eps);
            assert!(a >= exact * (1.0 - 1e-9), "ε {eps}: {a} < {exact}");
        }
    }

    #[test]
    fn out_of_range_parameters_are_refused_not_underpriced() {
        // A huge step count once saturated the window into one point and priced ε = 0.
        for (q, sigma, steps) in [
            (0.1, 1.0, u64::MAX),
            (0.1, 1.0, MAX_STEPS + 1),
            (0.01, 2e6, 100),
            (0.5, 0.5, 1 << 30),
            (1.0, 1.0, 1 << 40),
            (0.01, 0.1, 10),
        ] {
            assert!(
                Pld::poisson_gaussian(q, sigma, steps, DEFAULT_INTERVAL).is_err(),
                "q {q} σ {sigma} steps {steps}"
            );
        }
        let mut loss = crate::PrivacyLoss::new();
        loss.compose_poisson_gaussian(0.1, 1.0, u64::MAX).unwrap();
        assert_eq!(loss.pld_epsilon(1e-6), None);
        let eps = loss.epsilon(1e-6).unwrap();
        assert!(eps > 1e6, "{eps}");
    }

    #[test]
    fn degenerate_parameters() {
        assert_eq!(
            Pld::poisson_gaussian(0.1, 0.0, 5, DEFAULT_INTERVAL)
                .unwrap()
                .epsilon(1e-6)
                .unwrap(),
            f64::INFINITY
        );
        for (q, steps) in [(0.0, 5), (0.1, 0)] {
            let pld = Pld::poisson_gaussian(q, 1.0, steps, DEFAULT_INTERVAL).unwrap();
            assert_eq!(pld.epsilon(1e-6).unwrap(), 0.0);
        }
        assert!(Pld::poisson_gaussian(f64::NAN, 1.0, 5, DEFAULT_INTERVAL).is_err());
        assert!(Pld::poisson_gaussian(0.1, 1.0, 5, 0.0).is_err());
        assert!(Pld::identity(1e-4).unwrap().epsilon(0.0).is_err());
    }
}
