//! The coordinator every test crate here starts from: a tiny model on a testkit consortium,
//! and honest agents to run rounds with it.

#![allow(dead_code)]

use std::collections::VecDeque;

use medfl_client::{Agent, AgentEvent};
use medfl_ledger::{ChainState, MemberId, Timestamp};
use medfl_protocol::{ToAgent, ToCoordinator};

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

/// A hospital privacy ledger with room for every round these tests run.
pub fn roomy_spend() -> medfl_client::spend::PrivacySpend {
    let budget = medfl_client::spend::PrivacyBudget::new(1e9, 1e-6).unwrap();
    medfl_client::spend::PrivacySpend::new(budget, Vec::new()).unwrap()
}

/// Hands `msg` to agent `to`; if `trains`, answers a training task at once with a small fixed
/// step (the protocol, not learning, is under test); queues what the agent sends in `inbox`.
pub fn deliver(
    a: &mut Agent,
    to: &MemberId,
    msg: ToAgent,
    (state, now): (&ChainState, Timestamp),
    trains: bool,
    inbox: &mut VecDeque<(MemberId, ToCoordinator)>,
) {
    let _ = a.handle(msg, state, now);
    while let Some(e) = a.poll_event() {
        if let AgentEvent::Train(task) = e
            && trains
        {
            let params: Vec<f32> = task.global.file.params.iter().map(|p| p + 0.01).collect();
            a.submit_update(task.session, &params).unwrap();
            a.charge_recorded(task.session).unwrap();
        }
    }
    while let Some(m) = a.poll_outgoing() {
        inbox.push_back((to.clone(), m));
    }
}
