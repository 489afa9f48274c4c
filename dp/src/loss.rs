//! What one person's data has been through, and the tightest `ε` medfl can prove for it.
//!
//! [`PrivacyLoss`] composes events in two accountants at once: Rényi DP ([`RdpAccountant`]),
//! which handles every mechanism medfl runs, and, while only Poisson-subsampled Gaussians have
//! been composed, the privacy loss distribution ([`crate::pld`]). Both are upper bounds on the
//! same curve, so the smaller is a valid `ε`; PLD is typically 5–40% lower on DP-SGD settings
//! (`dp/tests/data/pld_reference.csv`), RDP is the fallback where PLD does not apply (the
//! distributed discrete Gaussian's zCDP) or would need too large a grid.
//!
//! Everyone who prices a round (the coordinator, each hospital, the ledger's contract) calls
//! [`PrivacyLoss::epsilon`] on the same events, so they agree to floating-point noise; the
//! ledger compares within `10⁻⁶` relative (the FFT's twiddles come from the platform's
//! `sin`/`cos`, so machines may differ in the last bits). The PLD figure is memoised per event
//! list and `δ`, because the same history is priced by every member and on every replay.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use crate::accountant::{DdgPrivacy, RdpAccountant, check_noise, check_q};
use crate::error::DpError;
use crate::pld::{DEFAULT_INTERVAL, Pld};

/// Every privacy-relevant event one unit (an employee, a hospital) has been through.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrivacyLoss {
    rdp: RdpAccountant,
    /// Steps of the Poisson-subsampled Gaussian by `(q, σ)` (as bit patterns, so equal
    /// parameters group exactly); composition is commutative, so grouping loses nothing.
    gaussian: BTreeMap<(u64, u64), u64>,
    /// Whether an event PLD does not model (the distributed discrete Gaussian) was composed.
    rdp_only: bool,
}

impl PrivacyLoss {
    /// Nothing composed: `ε = 0`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Composes `steps` steps of the Poisson-subsampled Gaussian (rate `q`, multiplier `σ`).
    pub fn compose_poisson_gaussian(
        &mut self,
        q: f64,
        noise_multiplier: f64,
        steps: u64,
    ) -> Result<(), DpError> {
        check_q(q)?;
        check_noise(noise_multiplier)?;
        // Both accountants take the steps or neither does: `min` must never see RDP with
        // steps PLD lacks (or the other way round).
        let mut gaussian = self.gaussian.clone();
        add_steps(
            &mut gaussian,
            (q.to_bits(), noise_multiplier.to_bits()),
            steps,
        )?;
        self.rdp
            .compose_poisson_gaussian(q, noise_multiplier, steps)?;
        self.gaussian = gaussian;
        Ok(())
    }

    /// Composes `count` distributed-discrete-Gaussian sums (accounted by RDP only).
    pub fn compose_ddg(&mut self, ddg: &DdgPrivacy, count: u64) -> Result<(), DpError> {
        self.rdp.compose_ddg(ddg, count)?;
        self.rdp_only = true;
        Ok(())
    }

    /// Composes everything `other` holds into this one.
    pub fn compose(&mut self, other: &PrivacyLoss) -> Result<(), DpError> {
        let mut next = self.clone();
        next.rdp.compose_accountant(&other.rdp)?;
        for (&key, &steps) in &other.gaussian {
            add_steps(&mut next.gaussian, key, steps)?;
        }
        next.rdp_only |= other.rdp_only;
        *self = next;
        Ok(())
    }

    /// The tightest `ε` at `delta`: the smaller of the RDP and PLD bounds.
    ///
    /// A history of at most a few groups of Poisson-subsampled Gaussian steps alone is priced
    /// as a function of its groups and `delta` only: RDP is recomposed from the groups in their canonical order (not
    /// in the order the history arrived, which could move the last bits), and the figure is
    /// memoised, so each replica computes the same bits and a coordinator pricing every member
    /// for every attempt pays once per distinct history.
    pub fn epsilon(&self, delta: f64) -> Result<f64, DpError> {
        // Past MAX_PLD_GROUPS (a coordinator moving σ by an ulp each round) the history is
        // priced by its running RDP alone, in O(orders), exactly as every replica composed it.
        if self.rdp_only || self.gaussian.is_empty() || self.gaussian.len() > MAX_PLD_GROUPS {
            let rdp = self.rdp.epsilon(delta)?;
            return Ok(match self.pld_epsilon(delta) {
                Some(pld) => rdp.min(pld),
                None => rdp,
            });
        }
        let key = self.key(delta);
        if let Some(eps) = epsilon_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return eps.clone();
        }
        let eps = self.canonical_epsilon(delta);
        let mut memo = epsilon_cache().lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() >= CACHE_ENTRIES {
            memo.clear();
        }
        memo.insert(key, eps.clone());
        eps
    }

    /// min(RDP, PLD) of the Gaussian groups, RDP composed group by group in key order.
    fn canonical_epsilon(&self, delta: f64) -> Result<f64, DpError> {
        let mut rdp = RdpAccountant::new();
        for (&(q, sigma), &steps) in &self.gaussian {
            rdp.compose_poisson_gaussian(f64::from_bits(q), f64::from_bits(sigma), steps)?;
        }
        let rdp = rdp.epsilon(delta)?;
        Ok(match self.pld_epsilon(delta) {
            Some(pld) => rdp.min(pld),
            None => rdp,
        })
    }

    /// The memo key of this history at `delta`.
    fn key(&self, delta: f64) -> CacheKey {
        (
            self.gaussian
                .iter()
                .map(|(&(q, s), &n)| (q, s, n))
                .collect(),
            delta.to_bits(),
        )
    }

    /// `ε` at `delta` from the RDP accountant alone.
    pub fn rdp_epsilon(&self, delta: f64) -> Result<f64, DpError> {
        self.rdp.epsilon(delta)
    }

    /// `ε` at `delta` from the PLD accountant, where it applies and fits in memory.
    pub fn pld_epsilon(&self, delta: f64) -> Option<f64> {
        // Each group is its own PLD and convolution: a history that switches parameters every
        // round (a coordinator can move σ by one ulp) is priced by RDP instead, decided by the
        // group count alone so every machine decides alike.
        if self.rdp_only || self.gaussian.is_empty() || self.gaussian.len() > MAX_PLD_GROUPS {
            return None;
        }
        let key = self.key(delta);
        if let Some(&eps) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return eps;
        }
        let eps = self.compute_pld_epsilon(delta).ok();
        let mut memo = cache().lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() >= CACHE_ENTRIES {
            memo.clear();
        }
        memo.insert(key, eps);
        eps
    }

    fn compute_pld_epsilon(&self, delta: f64) -> Result<f64, DpError> {
        let mut total: Option<Pld> = None;
        for (&(q, sigma), &steps) in &self.gaussian {
            let part = Pld::poisson_gaussian(
                f64::from_bits(q),
                f64::from_bits(sigma),
                steps,
                DEFAULT_INTERVAL,
            )?;
            total = Some(match total {
                Some(t) => t.compose(&part)?,
                None => part,
            });
        }
        match total {
            Some(t) => t.epsilon(delta),
            None => Ok(0.0),
        }
    }
}

/// Adds `steps` to the group `key` (no entry for zero steps); refuses an overflowing count.
fn add_steps(
    groups: &mut BTreeMap<(u64, u64), u64>,
    key: (u64, u64),
    steps: u64,
) -> Result<(), DpError> {
    if steps == 0 {
        return Ok(());
    }
    let total = groups.entry(key).or_insert(0);
    *total = total.checked_add(steps).ok_or(DpError::InvalidCount {
        name: "steps",
        value: steps,
        reason: "the step count overflows",
    })?;
    Ok(())
}

/// Most distinct `(q, σ)` groups priced by PLD.
const MAX_PLD_GROUPS: usize = 4;

/// `((q bits, σ bits, steps)…, δ bits)`.
type CacheKey = (Vec<(u64, u64, u64)>, u64);
/// Most memoised figures before the memo starts over.
const CACHE_ENTRIES: usize = 4096;

/// Memoised `epsilon` of Gaussian-only histories (the whole figure, RDP included).
fn epsilon_cache() -> &'static Mutex<HashMap<CacheKey, Result<f64, DpError>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Result<f64, DpError>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cache() -> &'static Mutex<HashMap<CacheKey, Option<f64>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Option<f64>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_tighter_accountant() {
        let mut loss = PrivacyLoss::new();
        loss.compose_poisson_gaussian(0.01, 1.0, 1000).unwrap();
        let (rdp, pld) = (
            loss.rdp_epsilon(1e-6).unwrap(),
            loss.pld_epsilon(1e-6).unwrap(),
        );
        assert!(pld < rdp);
        assert_eq!(loss.epsilon(1e-6).unwrap(), pld);
    }

    #[test]
    fn the_figure_depends_on_the_groups_not_on_the_order_they_arrived_in() {
        let mut a = PrivacyLoss::new();
        a.compose_poisson_gaussian(0.01, 1.0, 300).unwrap();
        a.compose_poisson_gaussian(0.02, 1.3, 50).unwrap();
        a.compose_poisson_gaussian(0.01, 1.0, 700).unwrap();
        let mut b = PrivacyLoss::new();
        b.compose_poisson_gaussian(0.02, 1.3, 50).unwrap();
        b.compose_poisson_gaussian(0.01, 1.0, 1000).unwrap();
        // Computed afresh (no memo), bit for bit.
        let (ea, eb) = (
            a.canonical_epsilon(1e-6).unwrap(),
            b.canonical_epsilon(1e-6).unwrap(),
        );
        assert_eq!(ea.to_bits(), eb.to_bits());
        assert_eq!(a.epsilon(1e-6).unwrap().to_bits(), ea.to_bits());
        assert_eq!(b.epsilon(1e-6).unwrap().to_bits(), ea.to_bits());
        // Still the tighter of the two accountants, and still an RDP bound at worst.
        assert!(ea <= a.rdp_epsilon(1e-6).unwrap() * (1.0 + 1e-12));
    }

    #[test]
    fn grouping_equal_parameters_is_exact_and_mixed_parameters_compose() {
        let mut a = PrivacyLoss::new();
        a.compose_poisson_gaussian(0.01, 1.0, 300).unwrap();
        a.compose_poisson_gaussian(0.01, 1.0, 700).unwrap();
        let mut b = PrivacyLoss::new();
        b.compose_poisson_gaussian(0.01, 1.0, 1000).unwrap();
        assert_eq!(a.epsilon(1e-6).unwrap(), b.epsilon(1e-6).unwrap());

        let mut mixed = b.clone();
        mixed.compose_poisson_gaussian(0.02, 1.5, 200).unwrap();
        let e = mixed.epsilon(1e-6).unwrap();
        assert!(e > b.epsilon(1e-6).unwrap());
        assert!(e <= mixed.rdp_epsilon(1e-6).unwrap());
    }

    #[test]
    fn a_distributed_gaussian_leaves_only_rdp() {
        let mut loss = PrivacyLoss::new();
        loss.compose_poisson_gaussian(0.01, 1.0, 100).unwrap();
        let ddg = DdgPrivacy {
            l2_sensitivity: 10.0,
            l1_sensitivity: 100.0,
            local_sigma: 20.0,
            clients: 3,
            dim: 64,
        };
        loss.compose_ddg(&ddg, 1).unwrap();
        assert_eq!(loss.pld_epsilon(1e-6), None);
        assert_eq!(loss.epsilon(1e-6).unwrap(), loss.rdp_epsilon(1e-6).unwrap());
    }

    #[test]
    fn a_history_of_many_parameter_sets_is_priced_by_rdp() {
        let mut loss = PrivacyLoss::new();
        for i in 0..MAX_PLD_GROUPS {
            loss.compose_poisson_gaussian(0.01, 1.0 + i as f64 * 1e-3, 100)
                .unwrap();
        }
        assert!(loss.pld_epsilon(1e-6).is_some());
        loss.compose_poisson_gaussian(0.01, 2.0, 100).unwrap();
        assert_eq!(loss.pld_epsilon(1e-6), None);
        assert_eq!(loss.epsilon(1e-6).unwrap(), loss.rdp_epsilon(1e-6).unwrap());
    }

    #[test]
    fn nothing_composed_costs_nothing() {
        assert_eq!(PrivacyLoss::new().epsilon(1e-6).unwrap(), 0.0);
    }
}
