//! One hospital's local training for one round: employee-level DP-SGD from the global
//! parameters, on the hospital's rows.

use crate::dpsgd::{DpSgdConfig, DpSgdError, DpSgdReport, DpSgdTrainer};
use crate::train::training_device;
use crate::{Autoencoder, AutoencoderConfig, EmployeeRows};

/// A trained update: the new local parameters and the DP-SGD report.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Parameters after local training.
    pub params: Vec<f32>,
    /// Mean per-row loss over the last epoch. Computed on raw rows and covered by no DP
    /// mechanism: it stays in the hospital (logs), and is never sent.
    pub loss: f64,
    /// What DP-SGD did and what it cost.
    pub report: DpSgdReport,
}

/// Trains a network of shape `config` from `global` on `rows` under `dp`; with `proximal_mu`,
/// FedProx's proximal term pulls the local parameters toward `global`.
pub fn train_update(
    config: AutoencoderConfig,
    global: &[f32],
    dp: DpSgdConfig,
    proximal_mu: Option<f32>,
    rows: &EmployeeRows<'_>,
) -> Result<Trained, DpSgdError> {
    let device = training_device();
    let model = Autoencoder::new(config, 0, &device)?.load_flat(config, global)?;
    let mut trainer = DpSgdTrainer::new(config, rows, dp, &device)?;
    if let Some(mu) = proximal_mu {
        trainer = trainer.with_proximal(mu, global.to_vec())?;
    }
    let (model, report) = trainer.run(model)?;
    let loss = report
        .losses
        .iter()
        .rev()
        .find(|l| l.is_finite())
        .copied()
        .unwrap_or(f32::NAN);
    let params = model.to_flat()?;
    Ok(Trained {
        params,
        loss: f64::from(loss),
        report,
    })
}
