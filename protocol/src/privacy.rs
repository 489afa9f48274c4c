//! What a round costs a hospital in employee-level privacy, computed the same way by everyone,
//! and the privacy statement `simulate` and `client` print.
//!
//! Each round a participant runs `⌈epochs/q⌉` DP-SGD steps; all rounds use the same `(q, σ)`, so
//! after `r` rounds its privacy curve is that of `r·steps` steps, and the cumulative epsilon is
//! the tighter of the RDP and PLD accountants' conversions of that curve at `δ`
//! (`medfl_dp::PrivacyLoss`). The ledger records the cumulative figure
//! and how many rounds each member joined, so anyone can recompute it.

use medfl_ledger::{DpMechanism, DpParams};
use medfl_modelspec::AutoencoderConfig;
use medfl_modelspec::plan::{DpOptimizer, DpSgdConfig};

use medfl_dp::DdgPrivacy;
use serde::{Deserialize, Serialize};

use crate::config::{DdgParams, TrainingParams};
use crate::error::ProtocolError;

/// DP-SGD steps in one round.
pub fn steps_per_round(t: &TrainingParams) -> Result<u64, ProtocolError> {
    DpSgdConfig::steps_for_epochs(t.sampling_rate, t.epochs)
        .map_err(|e| ProtocolError::invalid("training", e.to_string()))
}

/// The DP-SGD configuration of one round, with the hospital's secret `seed`.
pub fn dpsgd_config(t: &TrainingParams, seed: [u8; 32]) -> Result<DpSgdConfig, ProtocolError> {
    Ok(DpSgdConfig {
        sampling_rate: t.sampling_rate,
        noise_multiplier: t.noise_multiplier,
        clip_norm: t.clip_norm,
        steps: steps_per_round(t)?,
        learning_rate: t.learning_rate,
        optimizer: DpOptimizer::Adam,
        delta: t.delta,
        seed,
    })
}

/// Cumulative epsilon after `rounds` rounds (0 for none).
pub fn epsilon_after(
    t: &TrainingParams,
    model: AutoencoderConfig,
    rounds: u64,
) -> Result<f64, ProtocolError> {
    if rounds == 0 {
        return Ok(0.0);
    }
    let mut c = dpsgd_config(t, [0; 32])?;
    c.steps = c
        .steps
        .checked_mul(rounds)
        .ok_or_else(|| ProtocolError::invalid("rounds", "step count overflows"))?;
    let a = c
        .accounting(model)
        .map_err(|e| ProtocolError::invalid("training", e.to_string()))?;
    Ok(a.epsilon)
}

/// The DP parameters a round anchor records.
pub fn anchored_params(
    t: &TrainingParams,
    model: AutoencoderConfig,
) -> Result<DpParams, ProtocolError> {
    let c = dpsgd_config(t, [0; 32])?;
    let a = c
        .accounting(model)
        .map_err(|e| ProtocolError::invalid("training", e.to_string()))?;
    Ok(DpParams {
        mechanism: DpMechanism::DpSgdAndDistributedDiscreteGaussian,
        noise_multiplier: a.noise_multiplier,
        sampling_rate: t.sampling_rate,
        steps: c.steps,
        clip_norm: t.clip_norm,
        delta: t.delta,
    })
}

/// A hospital's own assumption for hospital-level privacy: how many of a round's survivors may
/// conspire with the coordinator (their noise shares then protect no one else).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HospitalLevel {
    /// The hospital-level epsilon the whole run may cost each hospital.
    pub epsilon: f64,
    /// Survivors assumed to collude with the coordinator.
    pub colluders: u64,
}

/// What one round's aggregate reveals about one hospital's whole update: the distributed
/// discrete Gaussian over `participants` inputs, as the accountant sees it with `colluders` of
/// the minimum survivors' noise shares known to the attacker.
///
/// # Errors
/// The parameters are invalid, or no honest noise share is left.
pub fn aggregate_privacy(
    ddg: &DdgParams,
    model: AutoencoderConfig,
    participants: u64,
    colluders: u64,
) -> Result<DdgPrivacy, ProtocolError> {
    let plan = crate::update::ddg_plan(ddg, model.param_count(), participants, [0; 32])?;
    let invalid = |e: medfl_dp::DpError| ProtocolError::invalid("ddg", e.to_string());
    plan.privacy().with_colluders(colluders).map_err(invalid)
}

/// Hospital-level epsilon (at `delta`) after `rounds` rounds of the aggregate's noise.
///
/// # Errors
/// As [`aggregate_privacy`], or the accountant refuses (a local noise share below the
/// theorem's `σ ≥ 1/2`, as at the default multiplier: no hospital-level guarantee at all).
pub fn hospital_epsilon(
    ddg: &DdgParams,
    model: AutoencoderConfig,
    participants: u64,
    colluders: u64,
    rounds: u64,
    delta: f64,
) -> Result<f64, ProtocolError> {
    let privacy = aggregate_privacy(ddg, model, participants, colluders)?;
    let invalid = |e: medfl_dp::DpError| ProtocolError::invalid("ddg", e.to_string());
    let mut loss = medfl_dp::PrivacyLoss::new();
    loss.compose_ddg(&privacy, rounds).map_err(invalid)?;
    loss.epsilon(delta).map_err(invalid)
}

/// The smallest distributed-noise multiplier (to `10⁻⁴` relative) for which `rounds` rounds
/// cost each hospital at most `target` at `delta`, with `colluders` of the minimum survivors
/// assumed hostile.
///
/// # Errors
/// No multiplier up to `10⁶` meets the target, or the parameters are invalid.
pub fn calibrate_hospital_noise(
    ddg: &DdgParams,
    model: AutoencoderConfig,
    participants: u64,
    colluders: u64,
    rounds: u64,
    target: f64,
    delta: f64,
) -> Result<f64, ProtocolError> {
    if !(target.is_finite() && target > 0.0) {
        return Err(ProtocolError::invalid(
            "hospital epsilon",
            "must be positive",
        ));
    }
    let meets = |z: f64| {
        let g = DdgParams {
            noise_multiplier: z,
            ..*ddg
        };
        // Noise too small for the theorem is as good as none.
        hospital_epsilon(&g, model, participants, colluders, rounds, delta)
            .is_ok_and(|e| e <= target)
    };
    // A bad colluder count or shape fails here, not as "no multiplier".
    aggregate_privacy(ddg, model, participants, colluders)?;
    let mut hi = 1.0;
    while !meets(hi) {
        hi *= 2.0;
        if hi > 1e6 {
            return Err(ProtocolError::invalid(
                "hospital epsilon",
                "no distributed-noise multiplier up to 1e6 reaches it",
            ));
        }
    }
    let mut lo = 0.0;
    while hi - lo > 1e-4 * hi {
        let mid = 0.5 * (lo + hi);
        if meets(mid) { hi = mid } else { lo = mid }
    }
    Ok(hi)
}

/// Where the DP noise comes from, for the privacy statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseSource {
    /// A 256-bit secret drawn from the operating system's generator (a deployment).
    OsSecret,
    /// Expanded from the run's public seed so the run can be replayed: the noise is **not**
    /// secret, and the statement says the guarantee holds only against someone without the seed.
    ReproducibleSeed,
}

/// The privacy statement of `rounds` rounds under `t`: the unit, `(ε, δ)`, the accountant, the
/// mechanisms and the assumptions, in words a privacy officer reads.
pub fn statement(
    t: &TrainingParams,
    model: AutoencoderConfig,
    rounds: u64,
    noise: NoiseSource,
) -> Result<String, ProtocolError> {
    let epsilon = epsilon_after(t, model, rounds)?;
    let steps = steps_per_round(t)?;
    let accountant = accountant_line(t, model, rounds)?;
    let largest_n = (0.1 / t.delta).floor();
    let source = match noise {
        NoiseSource::OsSecret => "drawn from a 256-bit secret seeded by the operating system",
        NoiseSource::ReproducibleSeed => {
            "REPRODUCIBLE from the run's seed (a simulation): not secret, so the guarantee holds \
             only against someone who does not know the seed"
        }
    };
    Ok(format!(
        "privacy statement\n\
         - unit: one employee account (staff user id) of a hospital: what the model updates the \
         hospital releases reveal about all of that account's access events (a person with k \
         accounts is protected at k times epsilon)\n\
         - guarantee: ({epsilon:.3}, {delta:e})-differential privacy per hospital after {rounds} \
         rounds ({delta:e} <= 1/(10 n) for hospitals of up to {largest_n:.0} employees)\n\
         - accountant: {accountant}; each hospital, the coordinator and the ledger's contract \
         compute it from the anchored parameters\n\
         - mechanism: employee-level DP-SGD, {steps} steps a round; each step samples employees \
         with probability {q}, uses at most {rows} of each one's rows, clips each employee's mean \
         gradient to {clip} and adds Gaussian noise of std {sigma} x {clip}; the update leaves \
         only masked (SecAgg+), without loss or row count; the distributed discrete Gaussian of \
         the aggregate is accounted at the hospital level, not here\n\
         - noise: {source}\n\
         - assumptions: features come from each employee's own events and the hospital's \
         context only, on a fixed public scale; the employee count sets each step's divisor and \
         is treated as public\n\
         - not covered: alert and audit-log anchors the hospital writes to the ledger, the timing \
         of its messages, whether it joins a round; removing a patient's events for consent is \
         not separately accounted",
        delta = t.delta,
        q = t.sampling_rate,
        clip = t.clip_norm,
        sigma = t.noise_multiplier,
        rows = medfl_modelspec::plan::MAX_ROWS_PER_EMPLOYEE,
    ))
}

/// Beyond this epsilon a statement calls the protection what it is: none worth the name
/// (`e^20` is a likelihood ratio of half a billion).
const MEANINGFUL_EPSILON: f64 = 20.0;

/// The hospital-level line of the privacy statement: what the aggregates of `rounds` rounds
/// reveal about one hospital's whole update, under the hospital's colluder assumption (`level`,
/// or 1 colluder when no budget is set), or plainly that there is no such guarantee.
pub fn hospital_statement(
    ddg: &DdgParams,
    model: AutoencoderConfig,
    participants: u64,
    rounds: u64,
    delta: f64,
    level: Option<HospitalLevel>,
) -> String {
    let colluders = level.map_or(1, |l| l.colluders);
    let enforced = match level {
        Some(l) => format!("; each hospital refuses to release past {}", l.epsilon),
        None => "; no hospital-level budget is enforced".into(),
    };
    match hospital_epsilon(ddg, model, participants, colluders, rounds, delta) {
        Ok(e) if e > MEANINGFUL_EPSILON => format!(
            "- hospital level: NO MEANINGFUL PROTECTION. The aggregate's distributed discrete \
             Gaussian (noise multiplier {z:.4} over at least {n} survivors) gives each hospital's \
             whole update epsilon {e:.3e} at delta {delta:e} after {rounds} rounds, with \
             {colluders} colluding survivor(s) assumed{hint}{enforced}",
            z = ddg.noise_multiplier,
            n = ddg.min_clients,
            hint = if level.is_none() {
                "; at this size it only keeps the ring's rounding honest (`simulate \
                 --hospital-epsilon` calibrates it)"
            } else {
                ""
            },
        ),
        Ok(e) => format!(
            "- hospital level: ({e:.3}, {delta:e})-differential privacy for each hospital's whole \
             update after {rounds} rounds, from the distributed discrete Gaussian of the aggregate \
             (noise multiplier {z:.4} over at least {n} survivors; no hospital unmasks fewer), if \
             at most {colluders} of them collude(s) with the coordinator{enforced}",
            z = ddg.noise_multiplier,
            n = ddg.min_clients,
        ),
        Err(err) => format!(
            "- hospital level: NONE. The aggregate's distributed noise (multiplier {z:.4}) has no \
             hospital-level figure ({err}); it keeps the ring's rounding honest and nothing more \
             (`simulate --hospital-epsilon` calibrates it){enforced}",
            z = ddg.noise_multiplier,
        ),
    }
}

/// Which accountant gives the figure, and what the other one says.
fn accountant_line(
    t: &TrainingParams,
    model: AutoencoderConfig,
    rounds: u64,
) -> Result<String, ProtocolError> {
    let p = anchored_params(t, model)?;
    let steps = p
        .steps
        .checked_mul(rounds)
        .ok_or_else(|| ProtocolError::invalid("rounds", "step count overflows"))?;
    let mut loss = medfl_dp::PrivacyLoss::new();
    let invalid = |e: medfl_dp::DpError| ProtocolError::invalid("training", e.to_string());
    loss.compose_poisson_gaussian(p.sampling_rate, p.noise_multiplier, steps)
        .map_err(invalid)?;
    let rdp = loss.rdp_epsilon(p.delta).map_err(invalid)?;
    Ok(match loss.pld_epsilon(p.delta) {
        Some(pld) if pld < rdp => format!(
            "privacy loss distribution of the Poisson-subsampled Gaussian (connect-the-dots on a \
             1e-4 grid, checked against Google's dp-accounting; Renyi DP would say {rdp:.3})"
        ),
        _ => format!(
            "Renyi DP of the Poisson-subsampled Gaussian (Mironov, Talwar and Zhang 2019), \
             converted to (epsilon, delta) ({rdp:.3}; the loss-distribution bound is not tighter \
             here)"
        ),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_statement_names_the_unit_the_figure_and_the_noise_source() {
        let t = TrainingParams::default();
        let m = AutoencoderConfig::for_inputs(21);
        let s = statement(&t, m, 10, NoiseSource::ReproducibleSeed).unwrap();
        let eps = epsilon_after(&t, m, 10).unwrap();
        assert!(s.contains("unit: one employee"), "{s}");
        assert!(s.contains(&format!("({eps:.3}, 1e-6)")), "{s}");
        assert!(s.contains("REPRODUCIBLE"), "{s}");
        let s = statement(&t, m, 10, NoiseSource::OsSecret).unwrap();
        assert!(s.contains("operating system") && !s.contains("REPRODUCIBLE"));
    }

    use super::*;

    #[test]
    fn hospital_noise_calibration_meets_the_target_and_less_noise_would_not() {
        let m = AutoencoderConfig::for_inputs(21);
        let ddg = DdgParams::default();
        // The default noise only keeps the rounding honest: no figure at all.
        // The default noise only keeps the rounding honest: a figure that protects nothing
        // (about 1.5e5 over 10 rounds), and the statement says so.
        let e = hospital_epsilon(&ddg, m, 5, 1, 10, 1e-6).unwrap();
        assert!(e > 1e4, "{e}");
        let s = hospital_statement(&ddg, m, 5, 10, 1e-6, None);
        assert!(s.contains("NO MEANINGFUL"), "{s}");
        for (target, colluders) in [(8.0, 1), (2.0, 2)] {
            let z = calibrate_hospital_noise(&ddg, m, 5, colluders, 10, target, 1e-6).unwrap();
            let g = DdgParams {
                noise_multiplier: z,
                ..ddg
            };
            let e = hospital_epsilon(&g, m, 5, colluders, 10, 1e-6).unwrap();
            assert!(e <= target, "z {z}: {e} > {target}");
            let less = DdgParams {
                noise_multiplier: z * 0.99,
                ..ddg
            };
            assert!(hospital_epsilon(&less, m, 5, colluders, 10, 1e-6).is_ok_and(|e| e > target));
            let level = Some(HospitalLevel {
                epsilon: target,
                colluders,
            });
            let s = hospital_statement(&g, m, 5, 10, 1e-6, level);
            assert!(s.contains(&format!("({e:.3}, 1e-6)")), "{s}");
        }
        // As many colluders as survivors: nothing to calibrate.
        assert!(calibrate_hospital_noise(&ddg, m, 5, 3, 10, 8.0, 1e-6).is_err());
    }

    #[test]
    fn epsilon_grows_with_rounds_and_starts_at_zero() {
        let t = TrainingParams::default();
        let m = AutoencoderConfig::for_inputs(22);
        let e: Vec<f64> = (0..4).map(|r| epsilon_after(&t, m, r).unwrap()).collect();
        assert_eq!(e[0], 0.0);
        assert!(e[1] > 0.0 && e[1] < e[2] && e[2] < e[3], "{e:?}");
        // Composition is sublinear in epsilon: three rounds cost less than three times one.
        assert!(e[3] < 3.0 * e[1]);
    }
}
