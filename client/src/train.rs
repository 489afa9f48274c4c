//! Local training for one round: DP-SGD from the global parameters, on the hospital's rows.

use medfl_model::Autoencoder;
use medfl_model::dpsgd::{DpSgdError, DpSgdReport, DpSgdTrainer};
use medfl_model::train::training_device;
use medfl_protocol::Strategy;

use crate::agent::TrainingTask;

/// A trained update: the new local parameters, the mean training loss of the last epoch, and
/// the DP-SGD report.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Parameters after local training.
    pub params: Vec<f32>,
    /// Mean per-example loss over the last epoch (not private: it goes through secure
    /// aggregation only).
    pub loss: f64,
    /// What DP-SGD did and what it cost.
    pub report: DpSgdReport,
}

/// Trains `task` on `data` (standardized rows of `task.global.file.config.inputs` columns).
pub fn run(task: &TrainingTask, data: &[f32]) -> Result<Trained, DpSgdError> {
    let device = training_device();
    let config = task.global.file.config;
    let model =
        Autoencoder::new(config, 0, &device)?.load_flat(config, &task.global.file.params)?;
    let mut trainer = DpSgdTrainer::new(config, data, task.dp, &device)?;
    if let Strategy::FedProx { mu } = task.strategy {
        trainer = trainer.with_proximal(mu as f32, task.global.file.params.clone())?;
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
