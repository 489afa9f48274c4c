//! Attacks by a malicious coordinator on consent and on agreement expiry, written from its side:
//! it announces rounds the hospital's agent must refuse, judged against the agent's own ledger
//! copy and its own clock.

use medfl_client::{Agent, AgentError, AgentEvent};
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{ConsentChoice, Pseudonym, TxBody};
use medfl_ledger::{ChainState, Hash, Timestamp};
use medfl_modelspec::AutoencoderConfig;
use medfl_protocol::model::chunks;
use medfl_protocol::{
    DdgParams, GlobalModel, MAX_CLOCK_SKEW_MS, RoundConfig, SecAggParams, Strategy, ToAgent,
    ToCoordinator, TrainingParams, privacy,
};

/// The fixture's agreement expires a year after its founding.
const EXPIRY: Timestamp = Timestamp(T0.0 + 365 * 24 * HOUR);

fn subject(n: u8) -> Pseudonym {
    Pseudonym(Hash::tagged(b"consent-test-subject", &[&[n]]))
}

/// A ledger at height 2: block 1 records an opt-out by hospital-0, block 2 one by hospital-1.
fn ledger_with_consent(f: &Fixture) -> ChainState {
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    for (i, h) in ["hospital-0", "hospital-1"].into_iter().enumerate() {
        let at = Timestamp(T0.0 + (i as u64 + 1) * 1000);
        let tx = f.tx(
            &Fixture::id(h),
            at,
            TxBody::Consent {
                subject: subject(i as u8),
                choice: ConsentChoice::OptOut,
            },
        );
        let block = f.block(&state, vec![tx], at);
        state.apply_block(&block).unwrap();
    }
    assert_eq!(state.consent_changed_at(), 2);
    state
}

fn config(issued_at: Timestamp, consent_height: u64) -> (RoundConfig, GlobalModel) {
    let model_cfg = AutoencoderConfig {
        inputs: 4,
        hidden: 3,
        latent: 2,
    };
    let training = TrainingParams {
        sampling_rate: 0.1,
        ..TrainingParams::default()
    };
    let eps = privacy::epsilon_after(&training, model_cfg, 1).unwrap();
    let model = GlobalModel::initial(model_cfg, 1).unwrap();
    let config = RoundConfig {
        agreement: Fixture::dua(),
        round: 1,
        session: 9,
        issued_at,
        previous_model: model.hash,
        model: model_cfg,
        participants: vec![
            Fixture::id("hospital-0"),
            Fixture::id("hospital-1"),
            Fixture::id("hospital-2"),
        ],
        epsilon_after: vec![eps, eps, eps],
        training,
        // Three participants: with two the neighbour degree (1) is below the floors.
        ddg: DdgParams::default(),
        secagg: SecAggParams::default(),
        strategy: Strategy::default(),
        public_seed: [2; 32],
        consent_height,
    };
    (config, model)
}

fn agent(f: &Fixture) -> Agent {
    let id = Fixture::id("hospital-0");
    Agent::new(
        id.clone(),
        f.key(&id).clone(),
        f.genesis_hash,
        roomy_spend(),
        [3; 32],
    )
}

/// Starts the round at the agent; `Ok` if it joined, the refusal otherwise (and then checks
/// the agent told the coordinator so and holds no session).
fn announce(
    a: &mut Agent,
    c: RoundConfig,
    chain: &ChainState,
    now: Timestamp,
) -> Result<(), String> {
    match a.handle(ToAgent::RoundStart(std::sync::Arc::new(c)), chain, now) {
        Ok(()) => Ok(()),
        Err(AgentError::RoundRefused(reason)) => {
            let declined = std::iter::from_fn(|| a.poll_outgoing())
                .any(|m| matches!(m, ToCoordinator::Decline { .. }));
            assert!(declined, "refused without a Decline: {reason}");
            assert_eq!(a.session(), None);
            Err(reason.to_string())
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn a_coordinator_announcing_a_stale_consent_height_is_refused() {
    let f = Fixture::new(11, 3, 2);
    let chain = ledger_with_consent(&f);
    let now = Timestamp(T0.0 + 10_000);
    // The attack: the round claims the consent set of height 1 (or none at all), from before
    // the latest opt-out, so the hospitals would train on a patient who has opted out.
    for stale in [0, 1] {
        let (c, _) = config(now, stale);
        let reason = announce(&mut agent(&f), c, &chain, now).expect_err("stale consent accepted");
        assert!(reason.contains("stale"), "{reason}");
    }
    // A height the agent's ledger has not reached cannot be checked either.
    let (c, _) = config(now, 3);
    let reason = announce(&mut agent(&f), c, &chain, now).expect_err("unknown height accepted");
    assert!(reason.contains("beyond"), "{reason}");
    // The honest announcement is joined.
    let (c, _) = config(now, 2);
    announce(&mut agent(&f), c, &chain, now).unwrap();
}

#[test]
fn the_training_task_names_the_hospitals_opt_outs_and_a_later_change_ends_the_round() {
    let f = Fixture::new(12, 3, 2);
    let mut chain = ledger_with_consent(&f);
    let now = Timestamp(T0.0 + 10_000);
    let (c, model) = config(now, 2);
    let bytes = model.to_bytes().unwrap();
    let send_model = |a: &mut Agent, chain: &ChainState| -> Result<(), AgentError> {
        for (offset, chunk) in chunks(&bytes) {
            a.handle(
                ToAgent::ModelChunk {
                    session: 9,
                    offset,
                    total: bytes.len() as u64,
                    bytes: chunk.into(),
                },
                chain,
                now,
            )?;
        }
        Ok(())
    };

    let mut a = agent(&f);
    announce(&mut a, c.clone(), &chain, now).unwrap();
    send_model(&mut a, &chain).unwrap();
    let task = std::iter::from_fn(|| a.poll_event())
        .find_map(|e| match e {
            AgentEvent::Train(t) => Some(t),
            _ => None,
        })
        .expect("a training task");
    assert_eq!(task.consent_height, 2);
    // Only hospital-0's own opt-out: consent is recorded per hospital.
    assert_eq!(task.opted_out, [subject(0)].into());

    // Another patient opts out after the round was announced, before the model arrives: the
    // round's consent set is stale and the agent does not train on it.
    let mut b = agent(&f);
    announce(&mut b, c, &chain, now).unwrap();
    let tx = f.tx(
        &Fixture::id("hospital-0"),
        Timestamp(T0.0 + 5000),
        TxBody::Consent {
            subject: subject(9),
            choice: ConsentChoice::OptOut,
        },
    );
    let block = f.block(&chain, vec![tx], Timestamp(T0.0 + 5000));
    chain.apply_block(&block).unwrap();
    assert!(matches!(
        send_model(&mut b, &chain),
        Err(AgentError::RoundRefused(_))
    ));
    let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(!events.iter().any(|e| matches!(e, AgentEvent::Train(_))));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::RoundEnded { session: 9, .. }))
    );
}

#[test]
fn a_coordinator_back_dating_issued_at_past_the_agreements_expiry_is_refused() {
    let f = Fixture::new(13, 3, 2);
    let chain = ChainState::from_genesis(&f.genesis).unwrap();
    let after_expiry = Timestamp(EXPIRY.0 + HOUR);
    // The attack: the agreement has expired by the hospital's clock; the coordinator says the
    // round was issued a day before the expiry.
    let (c, _) = config(Timestamp(EXPIRY.0 - 24 * HOUR), 0);
    let reason = announce(&mut agent(&f), c.clone(), &chain, after_expiry)
        .expect_err("a back-dated round under an expired agreement was joined");
    assert!(reason.contains("expired"), "{reason}");
    // The same announcement is fine while the agreement is live by the hospital's clock.
    announce(&mut agent(&f), c, &chain, Timestamp(EXPIRY.0 - 23 * HOUR)).unwrap();
}

#[test]
fn an_issue_time_in_the_future_of_the_agents_clock_is_refused() {
    let f = Fixture::new(14, 3, 2);
    let chain = ChainState::from_genesis(&f.genesis).unwrap();
    let now = Timestamp(T0.0 + HOUR);
    let (c, _) = config(Timestamp(now.0 + MAX_CLOCK_SKEW_MS + 1), 0);
    let reason = announce(&mut agent(&f), c, &chain, now).expect_err("future issue time accepted");
    assert!(reason.contains("future"), "{reason}");
    // Clock drift within the allowed skew is tolerated.
    let (c, _) = config(Timestamp(now.0 + MAX_CLOCK_SKEW_MS), 0);
    announce(&mut agent(&f), c, &chain, now).unwrap();
}

/// A hospital privacy ledger with room for every round these tests run.
fn roomy_spend() -> medfl_client::spend::PrivacySpend {
    let budget = medfl_client::spend::PrivacyBudget::new(1e9, 1e-6).unwrap();
    medfl_client::spend::PrivacySpend::new(budget, Vec::new()).unwrap()
}
