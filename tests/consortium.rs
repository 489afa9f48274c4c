//! The whole round protocol in one process: coordinator and hospital state machines, the real
//! ledger, DP-SGD, distributed noise and SecAgg+.

use medfl::consortium::{Consortium, SimHospital, SimSettings};
use medfl::settings::RoundSettings;
use medfl_ledger::{AgreementId, MemberId, TxBody, verify_dir};
use medfl_protocol::Strategy;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn hospitals(n: usize, rows: usize, cols: usize, seed: u64) -> Vec<SimHospital> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| SimHospital {
            id: MemberId::new(format!("hospital-{i}")).unwrap(),
            train: (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect(),
            // 20 employees, their rows interleaved as in a real log.
            employees: (0..rows).map(|r| (r % 20) as u64).collect(),
            log: None,
        })
        .collect()
}

fn settings(strategy: Strategy, dropout: f64, seed: u64) -> SimSettings {
    let mut rounds = RoundSettings::new(AgreementId::new("dua").unwrap());
    (rounds.hidden, rounds.latent, rounds.init_seed) = (8, 3, seed);
    rounds.training.sampling_rate = 0.1;
    rounds.strategy = strategy;
    let mut s = SimSettings::new(&rounds, seed, 50.0);
    s.coordinator.model.inputs = 6;
    s.dropout = dropout;
    s
}

#[test]
fn three_rounds_anchor_and_every_hospital_holds_the_anchored_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Consortium::create(
        dir.path(),
        hospitals(5, 200, 6, 1),
        &settings(Strategy::default(), 0.0, 7),
    )
    .unwrap();
    let mut last = None;
    for round in 1..=3u64 {
        let r = c.run_round(|_| {}).unwrap();
        assert_eq!(r.failure, None, "round {round}");
        assert_eq!(r.metrics.round, round);
        assert_eq!(r.metrics.participants, 5);
        assert!(r.metrics.dropped.is_empty());
        assert!(
            r.model.is_some() && r.model != last,
            "round {round} anchors a new model"
        );
        last = r.model;
    }
    let last = last.unwrap();
    assert_eq!(c.model().hash, last);
    for (member, model) in c.agent_models() {
        assert_eq!(model, Some(last), "{member}");
    }
    let a = c
        .ledger()
        .state()
        .agreement(&AgreementId::new("dua").unwrap())
        .unwrap();
    assert_eq!(a.last_round, 3);
    assert_eq!(a.last_model, Some(last));
    assert!(a.rounds_joined.values().all(|&n| n == 3));
    // Every hospital kept its own copy, built block by block from what the coordinator sent,
    // and it verifies from the genesis alone.
    let genesis = c.ledger().genesis().clone();
    let tip = c.ledger().state().tip();
    let mut copies = 0;
    for (member, copy) in c.hospital_ledgers() {
        assert_eq!(copy.state().tip(), tip, "{member}");
        assert_eq!(copy.verify_from(&genesis).unwrap().height, 3, "{member}");
        copies += 1;
    }
    assert_eq!(copies, 5);
    drop(c);
    let report = verify_dir(&dir.path().join("ledger"), None).unwrap();
    assert_eq!(report.height, 3);
}

#[test]
fn dropouts_are_recorded_and_runs_are_bit_reproducible() {
    let run = |dir: &std::path::Path| {
        let mut c = Consortium::create(
            dir,
            hospitals(8, 100, 6, 2),
            &settings(
                Strategy::FedAdam {
                    lr: 0.01,
                    beta1: 0.9,
                    beta2: 0.99,
                    tau: 1e-3,
                },
                0.25,
                11,
            ),
        )
        .unwrap();
        (0..3)
            .map(|_| c.run_round(|_| {}).unwrap())
            .collect::<Vec<_>>()
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (run(d1.path()), run(d2.path()));
    let models =
        |v: &[medfl::consortium::RoundReport]| v.iter().map(|r| r.model).collect::<Vec<_>>();
    assert_eq!(models(&a), models(&b), "same seed, same models");
    let dropped: usize = a.iter().map(|r| r.metrics.dropped.len()).sum();
    assert!(
        dropped > 0,
        "a 25% dropout over 3 rounds of 8 should drop someone"
    );
    // The ledger lists exactly who dropped.
    let ledger = medfl_ledger::Ledger::open(&d1.path().join("ledger")).unwrap();
    let mut anchored_dropped = 0;
    for h in 1..=ledger.state().height() {
        for tx in ledger.block(h).unwrap().unwrap().txs {
            if let TxBody::AnchorRound(r) = tx.body {
                anchored_dropped += r.dropped.len();
                assert_eq!(r.participants.len() + r.dropped.len(), 8);
            }
        }
    }
    let anchored_rounds_dropped: usize = a
        .iter()
        .filter(|r| r.model.is_some())
        .map(|r| r.metrics.dropped.len())
        .sum();
    assert_eq!(anchored_dropped, anchored_rounds_dropped);
}

/// A simulation whose hospitals run out of budget stops with the reason, instead of waiting
/// for hospitals that will never be eligible again.
#[test]
fn a_round_no_hospital_can_afford_ends_the_simulation_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(Strategy::default(), 0.0, 3);
    s.budget_epsilon = 1.0;
    let mut c = Consortium::create(dir.path(), hospitals(3, 100, 6, 3), &s).unwrap();
    let mut anchored = 0;
    let err = loop {
        match c.run_round(|_| {}) {
            Ok(r) => {
                assert_eq!(r.failure, None);
                anchored += 1;
                assert!(anchored < 40, "the budget never ran out");
            }
            Err(e) => break format!("{e:#}"),
        }
    };
    assert!(err.contains("could not start"), "{err}");
    assert!(err.contains("budget"), "{err}");
}

/// Hospitals sharing what equal bytes prove (the simulator's default) run exactly the protocol
/// they run alone: the same participants, dropouts and anchors, block for block.
#[test]
fn sharing_between_hospitals_changes_no_outcome() {
    let run = |share: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(Strategy::default(), 0.2, 11);
        s.share_between_hospitals = share;
        let mut c = Consortium::create(dir.path(), hospitals(8, 120, 6, 3), &s).unwrap();
        let rounds: Vec<_> = (0..3)
            .map(|_| {
                let r = c.run_round(|_| {}).unwrap();
                (
                    r.failure,
                    r.model,
                    r.metrics.participants,
                    r.metrics.dropped,
                )
            })
            .collect();
        let copies: Vec<_> = c
            .hospital_ledgers()
            .map(|(m, l)| (m.clone(), l.state().tip()))
            .collect();
        (rounds, c.ledger().state().tip(), copies)
    };
    let (shared, alone) = (run(true), run(false));
    assert!(shared.0.iter().any(|r| r.1.is_some()), "some round anchors");
    assert_eq!(shared, alone);
}
