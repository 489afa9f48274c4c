//! Patients' opt-outs on the ledger take their records out of every hospital's training from
//! the next round on, as the drivers run it (the in-memory consortium, the same state machines
//! and the same consent filter as `medfl client`).

use std::collections::BTreeMap;

use medfl::consortium::{Consortium, SimHospital, SimLog, SimSettings};
use medfl::detection::{self, Split};
use medfl::settings::RoundSettings;
use medfl_ledger::tx::ConsentChoice;
use medfl_ledger::{AgreementId, MemberId};
use medfl_model::AutoencoderConfig;
use medfl_protocol::{DdgParams, SecAggParams, Strategy, TrainingParams, transcript};
use medfl_simulations::Scenario;

/// Three small hospitals over twelve days (three warm-up, one training, eight held out).
fn scenario() -> Scenario {
    let mut sc = Scenario::default_embedded();
    sc.hospitals.truncate(3);
    for h in &mut sc.hospitals {
        h.staff = 30;
        h.patients = 120;
        h.family_links = h.family_links.min(10);
    }
    sc.days = 12;
    sc
}

fn settings(inputs: usize) -> SimSettings {
    let mut rounds = RoundSettings::new(AgreementId::new("dua").unwrap());
    (rounds.hidden, rounds.latent, rounds.init_seed) = (8, 3, 5);
    rounds.training.sampling_rate = 0.1;
    let mut s = SimSettings::new(&rounds, 5, 50.0);
    s.coordinator.model.inputs = inputs;
    s
}

/// The hospitals with their logs, and per hospital the training-window events per patient.
fn hospitals() -> (Vec<SimHospital>, Vec<BTreeMap<String, usize>>) {
    let data =
        detection::consortium_data_with_logs(&scenario(), Split::default(), true, |_| {}).unwrap();
    let mut sims = Vec::new();
    let mut per_patient = Vec::new();
    for (d, log) in data {
        let (events, window) = log.unwrap();
        let mut counts = BTreeMap::new();
        for e in events.iter().filter(|e| window.contains(&e.time_ms)) {
            *counts.entry(e.patient.clone()).or_insert(0) += 1;
        }
        per_patient.push(counts);
        sims.push(SimHospital {
            id: MemberId::new(d.name).unwrap(),
            train: d.train,
            employees: d.train_employees,
            log: Some(SimLog { events, window }),
        });
    }
    (sims, per_patient)
}

#[test]
fn an_opted_out_patients_rows_are_in_no_hospitals_training_set_from_the_next_round_on() {
    let (sims, per_patient) = hospitals();
    let ids: Vec<MemberId> = sims.iter().map(|s| s.id.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let inputs = medfl_accesslog::N_FEATURES;
    let mut c = Consortium::create(dir.path(), sims, &settings(inputs)).unwrap();

    let r1 = c.run_round(|_| {}).unwrap();
    assert_eq!(r1.failure, None);
    let before: BTreeMap<MemberId, usize> = c
        .training_summaries()
        .into_iter()
        .map(|(id, s)| (id, s.expect("every hospital trained in round 1").rows))
        .collect();

    // Each hospital's most-accessed patient in the training window opts out there, and one
    // more patient at the first hospital.
    let mut opted: Vec<(MemberId, Vec<String>)> = Vec::new();
    let mut consent_block = 0;
    for (id, counts) in ids.iter().zip(&per_patient) {
        let mut by_count: Vec<(&String, &usize)> = counts.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let k = if opted.is_empty() { 2 } else { 1 };
        let patients: Vec<String> = by_count.iter().take(k).map(|(p, _)| (*p).clone()).collect();
        let refs: Vec<&str> = patients.iter().map(String::as_str).collect();
        consent_block = c.record_consent(id, &refs, ConsentChoice::OptOut).unwrap();
        opted.push((id.clone(), patients));
    }

    let r2 = c.run_round(|_| {}).unwrap();
    assert_eq!(r2.failure, None, "round 2 still anchors");
    assert_eq!(r2.metrics.participants, 3);
    let summaries: BTreeMap<MemberId, _> = c
        .training_summaries()
        .into_iter()
        .map(|(id, s)| (id, s.unwrap()))
        .collect();
    for ((id, patients), counts) in opted.iter().zip(&per_patient) {
        let s = &summaries[id];
        assert_eq!(s.round, 2, "{id}");
        assert!(s.consent_height >= consent_block, "{id}: {s:?}");
        let trained_patients = s.patients.as_ref().expect("rows rebuilt from the log");
        let mut removed = 0;
        for p in patients {
            assert!(
                counts[p] > 0,
                "the test opts out a patient with training rows"
            );
            removed += counts[p];
            let pseudonym = c.pseudonym(id, p).unwrap();
            assert!(
                !trained_patients.contains(&pseudonym),
                "{id} trained round 2 on rows of {p}, who opted out"
            );
        }
        // Exactly their rows are gone, nobody else's.
        assert_eq!(s.rows, before[id] - removed, "{id}");
        let others: usize = counts.values().sum::<usize>() - removed;
        assert_eq!(s.rows, others, "{id}");
        assert_eq!(
            trained_patients.len(),
            counts.len() - patients.len(),
            "{id}"
        );
    }
}

#[test]
fn a_hospital_whose_log_the_simulator_lacks_does_not_train_around_an_opt_out() {
    let (mut sims, per_patient) = hospitals();
    // The first hospital comes with feature rows only: consent cannot be applied to them.
    sims[0].log = None;
    let id = sims[0].id.clone();
    let patient = per_patient[0].keys().next().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let mut c =
        Consortium::create(dir.path(), sims, &settings(medfl_accesslog::N_FEATURES)).unwrap();
    c.record_consent(&id, &[&patient], ConsentChoice::OptOut)
        .unwrap();
    let err = c
        .run_round(|_| {})
        .expect_err("trained without applying consent");
    assert!(format!("{err:#}").contains("opted out"), "{err:#}");
}

#[test]
fn the_round_transcript_binds_the_consent_height() {
    let model_cfg = AutoencoderConfig {
        inputs: 4,
        hidden: 3,
        latent: 2,
    };
    let model = medfl_protocol::GlobalModel::initial(model_cfg, 1).unwrap();
    let applied = medfl_protocol::RoundConfig {
        agreement: AgreementId::new("dua").unwrap(),
        round: 1,
        session: 1,
        issued_at: medfl::consortium::EPOCH,
        previous_model: model.hash,
        model: model_cfg,
        participants: vec![MemberId::new("a").unwrap(), MemberId::new("b").unwrap()],
        epsilon_after: vec![1.0, 1.0],
        training: TrainingParams::default(),
        ddg: DdgParams::default(),
        secagg: SecAggParams::default(),
        strategy: Strategy::default(),
        public_seed: [0; 32],
        consent_height: 4,
    };
    let stale = medfl_protocol::RoundConfig {
        consent_height: 3,
        ..applied.clone()
    };
    let t = |config: &medfl_protocol::RoundConfig| {
        transcript::round_transcript(config, &[], &[1, 2, 3], &[]).unwrap()
    };
    assert_ne!(
        t(&applied),
        t(&stale),
        "endorsements must say which consent set the round applied"
    );
}
