//! Local training for one round: employee-level DP-SGD from the global parameters, on the
//! hospital's rows.

use medfl_model::dpsgd::{DpSgdError, DpSgdReport, DpSgdTrainer};
use medfl_model::train::training_device;
use medfl_model::{Autoencoder, EmployeeRows};
use medfl_protocol::Strategy;

use crate::agent::TrainingTask;

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

/// Trains `task` on `rows` (grouped by employee, `task.global.file.config.inputs` columns).
pub fn run(task: &TrainingTask, rows: &EmployeeRows<'_>) -> Result<Trained, DpSgdError> {
    let device = training_device();
    let config = task.global.file.config;
    let model =
        Autoencoder::new(config, 0, &device)?.load_flat(config, &task.global.file.params)?;
    let mut trainer = DpSgdTrainer::new(config, rows, task.dp, &device)?;
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
