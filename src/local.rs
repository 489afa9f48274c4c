//! Runs a hospital agent's training task: the bridge between the agent, which builds without a
//! tensor backend, and the model crate that trains on burn.

use medfl_client::TrainingTask;
use medfl_model::EmployeeRows;
use medfl_model::dpsgd::DpSgdError;
use medfl_model::local::{Trained, train_update};

/// Trains `task` on `rows` (grouped by employee, `task.global.file.config.inputs` columns).
pub fn train(task: &TrainingTask, rows: &EmployeeRows<'_>) -> Result<Trained, DpSgdError> {
    let global = &task.global.file;
    train_update(
        global.config,
        &global.params,
        task.dp,
        task.proximal_mu(),
        rows,
    )
}
