//! Server-side update rules, in `f64` and in a fixed order so every party computes the same
//! bytes: the coordinator to publish the new model, each participant to check it.

use crate::config::Strategy;
use crate::error::ProtocolError;

/// Applies `strategy` to the global parameters with the mean update `delta`.
///
/// `state` is the server optimizer's state before the round (FedAdam's first and second moments,
/// `2·d` values; empty for the others or before FedAdam's first round); returns the new
/// parameters and the new state.
pub fn apply(
    strategy: &Strategy,
    global: &[f32],
    state: &[f32],
    delta: &[f64],
) -> Result<(Vec<f32>, Vec<f32>), ProtocolError> {
    let d = global.len();
    if delta.len() != d {
        return Err(ProtocolError::invalid(
            "update",
            format!("{} values for {d} parameters", delta.len()),
        ));
    }
    let (params, state) = match *strategy {
        Strategy::FedAvg { server_lr } => (step(global, delta, server_lr), Vec::new()),
        Strategy::FedProx { .. } => (step(global, delta, 1.0), Vec::new()),
        Strategy::FedAdam {
            lr,
            beta1,
            beta2,
            tau,
        } => {
            if !state.is_empty() && state.len() != 2 * d {
                return Err(ProtocolError::invalid(
                    "server state",
                    format!("{} values, expected 0 or {}", state.len(), 2 * d),
                ));
            }
            let (m0, v0) = if state.is_empty() {
                (vec![0f32; d], vec![0f32; d])
            } else {
                (state[..d].to_vec(), state[d..].to_vec())
            };
            let mut params = Vec::with_capacity(d);
            let mut m = Vec::with_capacity(d);
            let mut v = Vec::with_capacity(d);
            for i in 0..d {
                let g = delta[i];
                let mi = beta1 * f64::from(m0[i]) + (1.0 - beta1) * g;
                let vi = beta2 * f64::from(v0[i]) + (1.0 - beta2) * g * g;
                params.push((f64::from(global[i]) + lr * mi / (vi.sqrt() + tau)) as f32);
                m.push(mi as f32);
                v.push(vi as f32);
            }
            m.extend(v);
            (params, m)
        }
    };
    if params.iter().any(|p| !p.is_finite()) {
        return Err(ProtocolError::invalid(
            "update",
            "the new model is not finite",
        ));
    }
    Ok((params, state))
}

fn step(global: &[f32], delta: &[f64], lr: f64) -> Vec<f32> {
    global
        .iter()
        .zip(delta)
        .map(|(w, d)| (f64::from(*w) + lr * d) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_adds_the_mean_update_and_fedadam_normalises_it() {
        let g = [1.0f32, -1.0];
        let (p, s) = apply(&Strategy::FedAvg { server_lr: 1.0 }, &g, &[], &[0.5, 0.25]).unwrap();
        assert_eq!(p, vec![1.5, -0.75]);
        assert!(s.is_empty());
        let adam = Strategy::FedAdam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        };
        let (p1, s1) = apply(&adam, &g, &[], &[0.5, -0.25]).unwrap();
        // First step: m = 0.1 g, v = 0.01 g², so the step is lr · 0.1g / (0.1|g| + τ) ≈ lr·sign(g).
        assert!(
            (p1[0] - 1.1).abs() < 1e-2 && (p1[1] + 1.1).abs() < 1e-2,
            "{p1:?}"
        );
        assert_eq!(s1.len(), 4);
        let (p2, _) = apply(&adam, &p1, &s1, &[0.5, -0.25]).unwrap();
        assert!(p2[0] > p1[0] && p2[1] < p1[1]);
        assert!(apply(&adam, &g, &[0.0; 3], &[0.0, 0.0]).is_err());
        assert!(
            apply(
                &Strategy::FedAvg { server_lr: 1.0 },
                &g,
                &[],
                &[f64::INFINITY, 0.0]
            )
            .is_err()
        );
    }
}
