//! What a round costs a hospital in record-level privacy, computed the same way by everyone.
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

#[cfg(test)]
mod tests {
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
