//! The coordinator every test crate here starts from: a tiny model on a testkit consortium.

use medfl_coordinator::{Coordinator, CoordinatorConfig, Timeouts};
use medfl_ledger::testkit::Fixture;
use medfl_modelspec::AutoencoderConfig;
use medfl_protocol::{DdgParams, GlobalModel, SecAggParams, Strategy, TrainingParams};

/// A network small enough that a round's training and secure aggregation take milliseconds.
const MODEL: AutoencoderConfig = AutoencoderConfig {
    inputs: 4,
    hidden: 3,
    latent: 2,
};

/// Training with a sampling rate that keeps a round to ten steps.
pub fn training() -> TrainingParams {
    TrainingParams {
        sampling_rate: 0.1,
        ..TrainingParams::default()
    }
}

/// The fixture's coordinator, running rounds of at least `min_participants` under `training`.
pub fn coordinator(f: &Fixture, training: TrainingParams, min_participants: usize) -> Coordinator {
    let cfg = CoordinatorConfig {
        agreement: Fixture::dua(),
        model: MODEL,
        training,
        ddg: DdgParams::default(),
        secagg: SecAggParams::default(),
        strategy: Strategy::default(),
        min_participants,
        max_participants: 0,
        timeouts: Timeouts {
            stage_ms: 30_000,
            training_ms: 600_000,
            endorse_ms: 30_000,
        },
    };
    let (id, key) = f.coordinator();
    Coordinator::new(
        cfg,
        id.clone(),
        key.clone(),
        f.genesis_hash,
        GlobalModel::initial(MODEL, 1).unwrap(),
        Vec::new(),
        [3; 32],
    )
    .unwrap()
}
