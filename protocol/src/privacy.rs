//! What a round costs a hospital in employee-level privacy, computed the same way by everyone,
//! and the privacy statement `simulate` and `client` print.
//!
//! Each round a participant runs `⌈epochs/q⌉` DP-SGD steps; all rounds use the same `(q, σ)`, so
//! after `r` rounds its Rényi-DP curve is that of `r·steps` steps, and the cumulative epsilon is
//! the accountant's conversion of that curve at `δ`. The ledger records the cumulative figure
//! and how many rounds each member joined, so anyone can recompute it.

use medfl_ledger::{DpMechanism, DpParams};
use medfl_model::AutoencoderConfig;
use medfl_model::dpsgd::{DpOptimizer, DpSgdConfig};

use crate::config::TrainingParams;
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
         - accountant: Renyi DP of the Poisson-subsampled Gaussian (Mironov, Talwar and Zhang \
         2019), converted to (epsilon, delta); each hospital, the coordinator and the ledger's \
         contract compute it from the anchored parameters\n\
         - mechanism: employee-level DP-SGD, {steps} steps a round; each step samples employees \
         with probability {q}, uses at most {rows} of each one's rows, clips each employee's mean \
         gradient to {clip} and adds Gaussian noise of std {sigma} x {clip}; the update leaves \
         only masked (SecAgg+), without loss or row count; the distributed discrete Gaussian of \
         the aggregate is not counted\n\
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
        rows = medfl_model::dpsgd::MAX_ROWS_PER_EMPLOYEE,
    ))
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
