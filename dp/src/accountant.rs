//! Rényi-DP accounting: the Poisson-subsampled Gaussian (DP-SGD), the distributed discrete
//! Gaussian (zCDP), composition, and conversion to `(ε, δ)`.
//!
//! # Rényi DP
//!
//! A mechanism is `(α, ε(α))`-RDP if the Rényi divergence of order `α` between its output
//! distributions on neighbouring inputs is at most `ε(α)`. RDP composes by addition at each order,
//! so the accountant keeps one running total per order in a fixed grid (the grid of Google's
//! `dp-accounting` `RdpAccountant`: `1.1, 1.2, …, 10.9, 11, …, 63, 128, 256, 512, 1024`).
//!
//! # Poisson-subsampled Gaussian
//!
//! For sampling rate `q` and noise multiplier `σ` (noise std over L2 sensitivity), Mironov,
//! Talwar & Zhang (2019) give `ε(α) = log(A_α)/(α − 1)` with
//! `A_α = E_{z∼μ0}[(μ(z)/μ0(z))^α]`, `μ0 = N(0, σ²)`, `μ = (1−q)μ0 + qN(1, σ²)`.
//! For integer `α` the binomial expansion gives
//! `A_α = Σ_{i=0}^{α} C(α,i) q^i (1−q)^{α−i} exp((i² − i)/(2σ²))`.
//! For fractional `α` (their §3.3) the integral is split at `z0 = σ² log(1/q − 1) + 1/2`, each side
//! expanded as an infinite binomial series whose terms carry Gaussian tail masses
//! `erfc(·)/2`; the series is summed in log space until both tails are decreasing and
//! `e^{-30}` below the total, at most 1000 terms (an order that does not converge is excluded,
//! i.e. set to `+∞`). This is a line-by-line port of `dp_accounting.rdp` (version 0.6.0),
//! including its special cases (`q = 0 → 0`, `q = 1 → α/(2σ²)`, `σ = 0 → ∞`).
//!
//! Every transcendental function here is the pure-Rust `libm`, not the platform's: the ledger's
//! contract compares figures computed on different machines, and the conversion below has a
//! jump (to `ε = 0`) that a last-bit difference must not be able to straddle.
//!
//! # Conversion to (ε, δ)
//!
//! `dp-accounting`'s `compute_epsilon` uses the improved conversion of Canonne, Kamath & Steinke
//! (2020, Prop. 12) / Asoodeh et al. (2020):
//! `ε = min_α [ ε(α) + log(1 − 1/α) − log(δ·α)/(α − 1) ]` over orders `α > 1.01`, with `ε = 0`
//! whenever the KL bound already gives `δ ≥ √(1 − e^{−ε(α)})`, clamped at 0. We do the same.
//!
//! # zCDP and the distributed discrete Gaussian
//!
//! `ρ`-zCDP is RDP with `ε(α) = ρα` (and `(ξ, ρ)`-zCDP adds `ξ`). For the distributed discrete
//! Gaussian, `n` clients each add `N_Z(0, σ²)`; the sum is *not* a discrete Gaussian, but
//! Kairouz, Liu & Steinke (ICML 2021, Thm. 1 and Prop. 14) show it is close: with
//! `τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1))`, L2 sensitivity `Δ₂`, L1 sensitivity `Δ₁` and
//! dimension `d`, and `l2 = Δ₂/(√n σ)`, `l1 = Δ₁/(√n σ)`,
//! `ε(α) = min{ α l2²/2 + τd,  α(l2² + 2 l1 τ + τ² d)/2,  α(l2 + τ√d)²/2 }`.
//! The last two are pure zCDP (`ρ = (l2 + τ√d)²/2` is what [`DdgPrivacy::rho`] reports); we
//! add the whole minimum per order, as their reference accounting code does (which evaluates it
//! at integer orders: we charge a fractional order `α` the value at `⌈α⌉`, an upper bound since
//! RDP grows with `α`). `σ ≥ 1/2` is
//! required by the theorem. [`zcdp_epsilon`] converts a single `ρ` with the same formula as
//! above but optimising `α` continuously.

use libm::{exp, expm1, log, log1p};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::error::{DpError, check_range};

/// The RDP orders of `dp_accounting.rdp.RdpAccountant` (DEFAULT_RDP_ORDERS).
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// `log(exp(x) + exp(y))` without overflow.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    log1p(exp(a - b)) + b
}

/// `log C(n, k)` for real `n, k` via log-gamma.
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `log Φ(x)` for the standard normal CDF, accurate in both tails (as `scipy.special.log_ndtr`).
fn log_ndtr(x: f64) -> f64 {
    if x > 6.0 {
        // Φ(x) = 1 − Φ(−x), and Φ(−x) is tiny: log1p keeps the precision.
        return log1p(-0.5 * libm::erfc(x / std::f64::consts::SQRT_2));
    }
    if x > -20.0 {
        return log(0.5 * libm::erfc(-x / std::f64::consts::SQRT_2));
    }
    // Asymptotic series: Φ(x) = φ(x)/|x| · (1 − 1/x² + 3/x⁴ − 15/x⁶ + 105/x⁸ − …).
    let x2 = x * x;
    let series =
        1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2) + 105.0 / (x2 * x2 * x2 * x2);
    -0.5 * x2 - log(-x) - 0.5 * log(2.0 * std::f64::consts::PI) + log(series)
}

/// `log erfc(x)`, as `dp_accounting`'s `_log_erfc`: `log 2 + log Φ(−x√2)`.
fn log_erfc(x: f64) -> f64 {
    std::f64::consts::LN_2 + log_ndtr(-x * std::f64::consts::SQRT_2)
}

/// `log A_α` for integer `α` and `0 < q < 1`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let log1mq = log1p(-q);
    let a = alpha as f64;
    for i in 0..=alpha {
        let fi = i as f64;
        let log_coef = log_comb(a, fi) + fi * log(q) + (a - fi) * log1mq;
        let s = log_coef + (fi * fi - fi) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

/// The iteration cap of the fractional series, as in `dp_accounting`.
const MAX_STEPS_LOG_A_FRAC: usize = 1000;

/// `log A_α` for fractional `α` and `0 < q < 1`; `+∞` if the series does not converge.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * log(1.0 / q - 1.0) + 0.5;
    let log1mq = log1p(-q);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let sqrt2 = std::f64::consts::SQRT_2;
    for i in 0..MAX_STEPS_LOG_A_FRAC {
        let fi = i as f64;
        let log_coef = log_comb(alpha, fi);
        let j = alpha - fi;
        let log_t0 = log_coef + fi * log(q) + j * log1mq;
        let log_t1 = log_coef + j * log(q) + fi * log1mq;
        let log_e0 = log(0.5) + log_erfc((fi - z0) / (sqrt2 * sigma));
        let log_e1 = log(0.5) + log_erfc((z0 - j) / (sqrt2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// Checks a sampling rate: finite and in `[0, 1]`.
pub(crate) fn check_q(q: f64) -> Result<f64, DpError> {
    check_range("q", q, 0.0, 1.0, "sampling rate must be in [0, 1]")
}

/// Checks a noise multiplier: finite and non-negative.
pub(crate) fn check_noise(sigma: f64) -> Result<f64, DpError> {
    check_range(
        "noise_multiplier",
        sigma,
        0.0,
        f64::MAX,
        "must be finite and non-negative",
    )
}

/// Checks a target delta: in the open interval `(0, 1)`.
pub(crate) fn check_delta(delta: f64) -> Result<f64, DpError> {
    check_range("delta", delta, 0.0, 1.0, "must be in (0, 1)")?;
    if delta == 0.0 || delta == 1.0 {
        return Err(DpError::InvalidParameter {
            name: "delta",
            value: delta,
            reason: "must be in (0, 1)",
        });
    }
    Ok(delta)
}

/// RDP `ε(α)` of one step of the Poisson-subsampled Gaussian with rate `q`, multiplier `σ`.
pub fn rdp_poisson_gaussian(q: f64, sigma: f64, alpha: f64) -> Result<f64, DpError> {
    check_q(q)?;
    check_noise(sigma)?;
    // +inf is a valid (if useless) order; NaN and orders below 1 are not.
    if alpha.is_nan() || alpha < 1.0 {
        return Err(DpError::InvalidParameter {
            name: "alpha",
            value: alpha,
            reason: "order must be >= 1",
        });
    }
    if q == 0.0 {
        return Ok(0.0);
    }
    if alpha.is_infinite() || sigma == 0.0 {
        return Ok(f64::INFINITY);
    }
    if q == 1.0 {
        return Ok(alpha / (2.0 * sigma * sigma));
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    Ok(log_a / (alpha - 1.0))
}

/// The `(ε, optimal order)` for RDP values `rdp` at `orders` and a target `δ` (improved conversion).
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64), DpError> {
    check_delta(delta)?;
    if orders.len() != rdp.len() {
        return Err(DpError::LengthMismatch {
            expected: orders.len(),
            got: rdp.len(),
        });
    }
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(0.0));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r.is_nan() {
            f64::INFINITY
        } else if r < 0.0 || delta * delta + expm1(-r) > 0.0 {
            // Negative RDP is numerical noise; a small KL bound already gives this delta.
            0.0
        } else if a > 1.01 {
            r + log1p(-1.0 / a) - log(delta * a) / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// `ε` of `ρ`-zCDP at `δ`, minimising the same conversion over a continuous `α > 1`.
pub fn zcdp_epsilon(rho: f64, delta: f64) -> Result<f64, DpError> {
    check_range("rho", rho, 0.0, f64::MAX, "must be finite and non-negative")?;
    check_delta(delta)?;
    if rho == 0.0 {
        return Ok(0.0);
    }
    let f = |a: f64| rho * a + log1p(-1.0 / a) - log(delta * a) / (a - 1.0);
    // f is unimodal in α on (1, ∞); golden-section search on log(α − 1) over a wide bracket.
    let (mut lo, mut hi) = (log(1e-6), log(1e9));
    let g = |u: f64| f(1.0 + exp(u));
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
    let (mut gc, mut gd) = (g(c), g(d));
    for _ in 0..200 {
        if gc < gd {
            hi = d;
            d = c;
            gd = gc;
            c = hi - phi * (hi - lo);
            gc = g(c);
        } else {
            lo = c;
            c = d;
            gc = gd;
            d = lo + phi * (hi - lo);
            gd = g(d);
        }
    }
    Ok(gc.min(gd).max(0.0))
}

/// The parameters that determine the privacy of one distributed-discrete-Gaussian sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DdgPrivacy {
    /// L2 sensitivity `Δ₂` in the integer domain (after scaling and conditional rounding).
    pub l2_sensitivity: f64,
    /// L1 sensitivity `Δ₁` in the integer domain.
    pub l1_sensitivity: f64,
    /// Per-client discrete Gaussian `σ` (integer domain).
    pub local_sigma: f64,
    /// Minimum number of clients whose noise is in the sum.
    pub clients: u64,
    /// Dimension `d` of the summed vector (after padding).
    pub dim: u64,
}

impl DdgPrivacy {
    /// Validates the parameters (σ ≥ 1/2 as the theorem requires, positive counts).
    pub fn validate(&self) -> Result<(), DpError> {
        check_range(
            "local_sigma",
            self.local_sigma,
            0.5,
            f64::MAX,
            "the distributed discrete Gaussian bound needs sigma >= 1/2",
        )?;
        check_range(
            "l2_sensitivity",
            self.l2_sensitivity,
            0.0,
            f64::MAX,
            "must be finite and non-negative",
        )?;
        check_range(
            "l1_sensitivity",
            self.l1_sensitivity,
            0.0,
            f64::MAX,
            "must be finite and non-negative",
        )?;
        for (name, v) in [("clients", self.clients), ("dim", self.dim)] {
            if v == 0 {
                return Err(DpError::InvalidCount {
                    name,
                    value: v,
                    reason: "must be positive",
                });
            }
        }
        Ok(())
    }

    /// The same sum as a hospital sees it when `colluders` of the `n` survivors conspire with the
    /// server: they know (and subtract) their own noise shares, so only `n − colluders` shares
    /// protect the rest. Refuses when no honest share is left.
    pub fn with_colluders(&self, colluders: u64) -> Result<DdgPrivacy, DpError> {
        match self.clients.checked_sub(colluders) {
            Some(honest) if honest > 0 => Ok(DdgPrivacy {
                clients: honest,
                ..*self
            }),
            _ => Err(DpError::InvalidCount {
                name: "colluders",
                value: colluders,
                reason: "leaves no honest noise share among the minimum survivors",
            }),
        }
    }

    /// `τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1))`, the distance of the sum from a discrete Gaussian.
    pub fn tau(&self) -> f64 {
        let s2 = self.local_sigma * self.local_sigma;
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        let mut tau = 0.0;
        for k in 1..self.clients {
            let term = exp(-2.0 * pi2 * s2 * (k as f64 / (k + 1) as f64));
            tau += term;
            // Terms only shrink towards exp(-2π²σ²); stop once they cannot matter.
            if term < 1e-300 {
                break;
            }
        }
        10.0 * tau
    }

    /// `(l2, l1)`: the sensitivities divided by the central noise std `√n σ`.
    fn scales(&self) -> (f64, f64) {
        let central = (self.clients as f64).sqrt() * self.local_sigma;
        (self.l2_sensitivity / central, self.l1_sensitivity / central)
    }

    /// RDP `ε(α)` of one sum (Kairouz, Liu & Steinke 2021, Prop. 14 with Thm. 1's `τ`).
    ///
    /// Their accounting code evaluates the bound at integer orders only; since RDP is
    /// non-decreasing in `α`, a fractional order is charged the bound at `⌈α⌉` (conservative).
    pub fn rdp(&self, alpha: f64) -> f64 {
        let alpha = alpha.ceil();
        let (l2, l1) = self.scales();
        let tau = self.tau();
        let d = self.dim as f64;
        let t1 = alpha / 2.0 * l2 * l2 + tau * d;
        let t2 = alpha / 2.0 * (l2 * l2 + 2.0 * l1 * tau + tau * tau * d);
        let t3 = alpha / 2.0 * (l2 + d.sqrt() * tau).powi(2);
        t1.min(t2).min(t3)
    }

    /// The pure zCDP parameter `ρ = (l2 + τ√d)²/2` of one sum.
    pub fn rho(&self) -> f64 {
        let (l2, _) = self.scales();
        (l2 + (self.dim as f64).sqrt() * self.tau()).powi(2) / 2.0
    }
}

/// A running RDP total over a fixed grid of orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    /// The Rényi orders tracked.
    orders: Vec<f64>,
    /// The composed RDP at each order.
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant on `dp-accounting`'s default orders.
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// The orders tracked.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed RDP values, one per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Composes `count` steps of the Poisson-subsampled Gaussian (rate `q`, multiplier `σ`).
    pub fn compose_poisson_gaussian(
        &mut self,
        q: f64,
        noise_multiplier: f64,
        count: u64,
    ) -> Result<(), DpError> {
        let per_step = per_step_rdp(q, noise_multiplier, &self.orders)?;
        let add: Vec<f64> = per_step.iter().map(|r| r * count as f64).collect();
        self.add(&add);
        Ok(())
    }

    /// Composes `count` mechanisms that are each `(ξ, ρ)`-zCDP.
    pub fn compose_zcdp(&mut self, rho: f64, xi: f64, count: u64) -> Result<(), DpError> {
        check_range("rho", rho, 0.0, f64::MAX, "must be finite and non-negative")?;
        check_range("xi", xi, 0.0, f64::MAX, "must be finite and non-negative")?;
        let add: Vec<f64> = self
            .orders
            .iter()
            .map(|&a| count as f64 * (xi + rho * a))
            .collect();
        self.add(&add);
        Ok(())
    }

    /// Composes `count` distributed-discrete-Gaussian sums (e.g. rounds).
    pub fn compose_ddg(&mut self, ddg: &DdgPrivacy, count: u64) -> Result<(), DpError> {
        ddg.validate()?;
        let add: Vec<f64> = self
            .orders
            .iter()
            .map(|&a| count as f64 * ddg.rdp(a))
            .collect();
        self.add(&add);
        Ok(())
    }

    /// Adds per-order RDP values.
    fn add(&mut self, add: &[f64]) {
        for (r, a) in self.rdp.iter_mut().zip(add) {
            *r += a;
        }
    }

    /// Composes everything `other` holds (tracked over the same orders) into this one.
    pub fn compose_accountant(&mut self, other: &RdpAccountant) -> Result<(), DpError> {
        if other.orders != self.orders {
            return Err(DpError::InvalidCount {
                name: "orders",
                value: other.orders.len() as u64,
                reason: "accountants track different orders",
            });
        }
        self.add(&other.rdp);
        Ok(())
    }

    /// `ε` at target `δ` for everything composed so far.
    pub fn epsilon(&self, delta: f64) -> Result<f64, DpError> {
        Ok(rdp_to_epsilon(&self.orders, &self.rdp, delta)?.0)
    }
}

/// The smallest noise multiplier `σ` (to a relative `10⁻⁶`) for which `steps` compositions of the
/// Poisson-subsampled Gaussian at rate `q` stay within `target_epsilon` at `delta`: the
/// "target ε in, σ out" calibration of Opacus' `get_noise_multiplier`, priced as everything
/// else is, by [`crate::PrivacyLoss`] (the tighter of RDP and PLD).
///
/// The returned `σ` always meets the target (the search keeps the upper end of its bracket),
/// so a caller may use it as is. Refuses a target no `σ ≤ 10⁶` reaches.
pub fn calibrate_poisson_gaussian(
    q: f64,
    steps: u64,
    target_epsilon: f64,
    delta: f64,
) -> Result<f64, DpError> {
    check_range(
        "target_epsilon",
        target_epsilon,
        f64::MIN_POSITIVE,
        f64::MAX,
        "must be finite and positive",
    )?;
    let epsilon = |sigma: f64| -> Result<f64, DpError> {
        let mut acc = crate::PrivacyLoss::new();
        acc.compose_poisson_gaussian(q, sigma, steps)?;
        acc.epsilon(delta)
    };
    const MAX_SIGMA: f64 = 1e6;
    let mut hi = 1.0;
    while epsilon(hi)? > target_epsilon {
        hi *= 2.0;
        if hi > MAX_SIGMA {
            return Err(DpError::InvalidParameter {
                name: "target_epsilon",
                value: target_epsilon,
                reason: "no noise multiplier up to 1e6 reaches it",
            });
        }
    }
    let mut lo = 0.0;
    while hi - lo > 1e-6 * hi {
        let mid = 0.5 * (lo + hi);
        if epsilon(mid)? > target_epsilon {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// `(q bits, σ bits, order bits)`.
type StepKey = (u64, u64, Vec<u64>);
/// Most memoised per-step vectors before the memo starts over.
const STEP_CACHE_ENTRIES: usize = 1024;

/// The RDP of one step of the Poisson-subsampled Gaussian at each order, memoised: it is a
/// pure function of its arguments (so the memo changes no bit), and every member's history in
/// a consortium is made of the same few `(q, σ)`, which a coordinator, each hospital and the
/// ledger's contract price again and again (each order costs a series of `lgamma`, `exp` and
/// `log` terms).
fn per_step_rdp(q: f64, noise_multiplier: f64, orders: &[f64]) -> Result<Vec<f64>, DpError> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<StepKey, Vec<f64>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key: StepKey = (
        q.to_bits(),
        noise_multiplier.to_bits(),
        orders.iter().map(|a| a.to_bits()).collect(),
    );
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(v.clone());
    }
    let v = orders
        .iter()
        .map(|&a| rdp_poisson_gaussian(q, noise_multiplier, a))
        .collect::<Result<Vec<f64>, DpError>>()?;
    let mut memo = cache.lock().unwrap_or_else(|e| e.into_inner());
    if memo.len() >= STEP_CACHE_ENTRIES {
        memo.clear();
    }
    memo.insert(key, v.clone());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_meets_the_target_and_no_less_noise_would() {
        for (q, steps, target, delta) in [
            (0.01, 1000, 1.0, 1e-5),
            (0.25, 40, 4.0, 1e-6),
            (1.0, 1, 8.0, 1e-6),
            (0.1, 300, 2.0, 1e-7),
        ] {
            let sigma = calibrate_poisson_gaussian(q, steps, target, delta).unwrap();
            let eps = |s: f64| {
                let mut a = crate::PrivacyLoss::new();
                a.compose_poisson_gaussian(q, s, steps).unwrap();
                a.epsilon(delta).unwrap()
            };
            assert!(
                eps(sigma) <= target,
                "σ {sigma}: ε {} > {target}",
                eps(sigma)
            );
            assert!(
                eps(sigma * (1.0 - 1e-4)) > target,
                "σ {sigma} is not the smallest"
            );
        }
        assert!(calibrate_poisson_gaussian(0.1, 10, 0.0, 1e-6).is_err());
        assert!(calibrate_poisson_gaussian(0.1, 10, f64::NAN, 1e-6).is_err());
        assert!(calibrate_poisson_gaussian(0.1, 10, -1.0, 1e-6).is_err());
    }

    #[test]
    fn default_orders_match_dp_accounting() {
        let o = default_orders();
        assert_eq!(o.len(), 99 + 53 + 4);
        assert_eq!(o[0], 1.1);
        assert_eq!(o[9], 2.0);
        assert_eq!(o[98], 10.9);
        assert_eq!(o[99], 11.0);
        assert_eq!(o[151], 63.0);
        assert_eq!(o[155], 1024.0);
    }

    #[test]
    fn log_ndtr_tails() {
        assert!((log_ndtr(0.0) - 0.5f64.ln()).abs() < 1e-15);
        // log Φ(-30) ≈ -454.321..., from the asymptotic series; continuity at the switch.
        assert!((log_ndtr(-30.0) + 454.3212).abs() < 1e-3);
        assert!((log_ndtr(-19.999) - log_ndtr(-20.001)).abs() < 0.05);
        assert!(log_ndtr(10.0) < 0.0 && log_ndtr(10.0) > -1e-20);
    }

    #[test]
    fn full_batch_gaussian_is_alpha_over_two_sigma_squared() {
        assert_eq!(rdp_poisson_gaussian(1.0, 2.0, 3.0).unwrap(), 3.0 / 8.0);
        assert_eq!(rdp_poisson_gaussian(0.0, 2.0, 3.0).unwrap(), 0.0);
        assert_eq!(rdp_poisson_gaussian(0.5, 0.0, 3.0).unwrap(), f64::INFINITY);
    }

    #[test]
    fn integer_and_fractional_orders_agree_nearby() {
        // A_α is continuous in α: the two code paths meet at integers.
        let (q, s) = (0.01, 1.3);
        let at3 = rdp_poisson_gaussian(q, s, 3.0).unwrap();
        let near = rdp_poisson_gaussian(q, s, 3.0 + 1e-9).unwrap();
        assert!((at3 - near).abs() < 1e-6 * at3, "{at3} vs {near}");
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        assert!(rdp_poisson_gaussian(1.5, 1.0, 2.0).is_err());
        assert!(rdp_poisson_gaussian(-0.1, 1.0, 2.0).is_err());
        assert!(rdp_poisson_gaussian(0.1, -1.0, 2.0).is_err());
        assert!(rdp_poisson_gaussian(0.1, f64::NAN, 2.0).is_err());
        let acc = RdpAccountant::new();
        for d in [0.0, 1.0, -1e-5, f64::NAN] {
            assert!(acc.epsilon(d).is_err(), "delta {d}");
        }
        assert!(zcdp_epsilon(-1.0, 1e-5).is_err());
    }

    #[test]
    fn zcdp_conversion_is_below_the_classic_bound() {
        // Classic: ε = ρ + 2√(ρ log(1/δ)); the improved conversion is tighter.
        let (rho, delta) = (0.5f64, 1e-6f64);
        let eps = zcdp_epsilon(rho, delta).unwrap();
        let classic = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
        assert!(eps < classic && eps > 0.8 * classic, "{eps} vs {classic}");
    }

    #[test]
    fn ddg_tau_vanishes_for_large_sigma() {
        let p = DdgPrivacy {
            l2_sensitivity: 100.0,
            l1_sensitivity: 1000.0,
            local_sigma: 20.0,
            clients: 100,
            dim: 1 << 10,
        };
        assert_eq!(p.tau(), 0.0);
        // With τ = 0 the bound is the continuous Gaussian's: α Δ²/(2 n σ²).
        let a = 4.0;
        assert!((p.rdp(a) - a * 100.0f64.powi(2) / (2.0 * 100.0 * 400.0)).abs() < 1e-12);
        let small = DdgPrivacy {
            local_sigma: 0.6,
            ..p
        };
        assert!(small.tau() > 0.0 && small.rdp(a) > p.rdp(a) * 400.0 / 0.36 * 0.999);
        assert!(
            DdgPrivacy {
                local_sigma: 0.4,
                ..p
            }
            .validate()
            .is_err()
        );
    }
}
