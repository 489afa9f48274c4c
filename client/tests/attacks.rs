//! A malicious coordinator against the hospital agent: each test drives the real agent the way
//! an attacker would, and the agent must refuse.

use medfl_client::spend::{Charge, HospitalBudget, PrivacyBudget, PrivacySpend};
use medfl_client::{Agent, AgentError, AgentEvent, MAX_ATTEMPTS_PER_ROUND};
use medfl_ledger::testkit::{Fixture, T0};
use medfl_ledger::{ChainState, Floor, Timestamp};
use medfl_modelspec::AutoencoderConfig;
use medfl_protocol::model::chunks;
use medfl_protocol::update::UpdateCodec;
use medfl_protocol::{
    DdgParams, DeclineReason, GlobalModel, RoundConfig, SecAggParams, Strategy, ToAgent,
    ToCoordinator, TrainingParams, privacy,
};
use medfl_secagg::{
    Aggregate, ClientId, ClientSession, PackedVector, ServerEvent, ServerMessage, ServerSession,
    Stage,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// The agent's own clock in these tests.
const NOW: Timestamp = Timestamp(T0.0 + 1000);
const MODEL: AutoencoderConfig = AutoencoderConfig {
    inputs: 4,
    hidden: 3,
    latent: 2,
};

/// A consortium of `hospitals` whose agreement fixes `strategy`, and a sound round over the
/// first `n` of them.
fn setup(hospitals: usize, n: usize, strategy: Strategy) -> (Fixture, ChainState, RoundConfig) {
    let f = Fixture::new(1, hospitals, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let training = TrainingParams {
        sampling_rate: 0.1,
        ..TrainingParams::default()
    };
    let eps = privacy::epsilon_after(&training, MODEL, 1).unwrap();
    let model = GlobalModel::initial(MODEL, 1).unwrap();
    let config = RoundConfig {
        agreement: Fixture::dua(),
        round: 1,
        session: 77,
        issued_at: Timestamp(T0.0 + 1000),
        consent_height: 0,
        previous_model: model.hash,
        model: MODEL,
        participants: (0..n)
            .map(|i| Fixture::id(&format!("hospital-{i}")))
            .collect(),
        epsilon_after: vec![eps; n],
        training,
        ddg: DdgParams::default(),
        secagg: SecAggParams::default(),
        strategy,
        public_seed: [1; 32],
    };
    (f, state, config)
}

fn agent(f: &Fixture, i: usize) -> Agent {
    agent_with(f, i, roomy_spend())
}

fn agent_with(f: &Fixture, i: usize, spend: PrivacySpend) -> Agent {
    let id = Fixture::id(&format!("hospital-{i}"));
    Agent::new(
        id.clone(),
        f.key(&id).clone(),
        f.genesis_hash,
        spend,
        [5; 32],
    )
}

fn outgoing(a: &mut Agent) -> Vec<ToCoordinator> {
    std::iter::from_fn(|| a.poll_outgoing()).collect()
}

fn declines(out: &[ToCoordinator]) -> Vec<DeclineReason> {
    out.iter()
        .filter_map(|m| match m {
            ToCoordinator::Decline { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn endorsed(out: &[ToCoordinator]) -> bool {
    out.iter()
        .any(|m| matches!(m, ToCoordinator::Endorse { .. }))
}

/// Starts `config` at `a` and feeds it the initial model, as an honest coordinator would;
/// returns what the agent sent (its key advertisement).
fn join(a: &mut Agent, config: &RoundConfig, state: &ChainState) -> Vec<ToCoordinator> {
    a.handle(ToAgent::RoundStart(Arc::new(config.clone())), state, NOW)
        .unwrap();
    let bytes = GlobalModel::initial(MODEL, 1).unwrap().to_bytes().unwrap();
    for (offset, c) in chunks(&bytes) {
        a.handle(
            ToAgent::ModelChunk {
                session: config.session,
                offset,
                total: bytes.len() as u64,
                bytes: c.into(),
            },
            state,
            NOW,
        )
        .unwrap();
    }
    while a.poll_event().is_some() {}
    outgoing(a)
}

/// The parameters an honest hospital sends back after training: a small step from `global`.
fn trained(global: &[f32]) -> Vec<f32> {
    global.iter().map(|g| g + 0.01).collect()
}

/// A participant in [`run_round`]: an honest hospital's agent, or a malicious hospital that
/// skips the agent and its encoder and drives a bare secure-aggregation client.
enum Party {
    Honest(Box<Agent>),
    Raw(Box<ClientSession>),
}

/// Runs `config`'s secure aggregation to the end as an honest coordinator would: every
/// participant joins, trains (a small honest step) and sends its input, except participant
/// `raw.0` (if given), which sends `raw.1` as its input unencoded. Returns the honest agents by
/// participant index and the server's aggregate.
fn run_round(
    f: &Fixture,
    state: &ChainState,
    config: &RoundConfig,
    raw: Option<(usize, Vec<u64>)>,
) -> (BTreeMap<usize, Agent>, Aggregate) {
    run_round_withholding(f, state, config, raw, None)
}

/// [`run_round`], except that participant `withhold` (if given) never gets the unmask request:
/// it signed the survivor set but never saw the quorum's signatures over it. The server
/// finishes with the other survivors' shares.
fn run_round_withholding(
    f: &Fixture,
    state: &ChainState,
    config: &RoundConfig,
    raw: Option<(usize, Vec<u64>)>,
    withhold: Option<usize>,
) -> (BTreeMap<usize, Agent>, Aggregate) {
    let codec = UpdateCodec::new(config).unwrap();
    let secagg = config
        .secagg_config(&f.genesis_hash, codec.encoded_len(), codec.bits())
        .unwrap();
    let roster = config.roster(state).unwrap();
    let mut server = ServerSession::new(secagg.clone(), &roster).unwrap();
    let global = GlobalModel::initial(MODEL, 1).unwrap().file.params;
    let mut parties = BTreeMap::new();
    let mut to_server = VecDeque::new();
    for i in 0..config.participants.len() {
        let id = ClientId(i as u32);
        let party = match &raw {
            Some((r, input)) if *r == i => {
                let key = f.key(&config.participants[i]).clone();
                let mut rng = ChaCha20Rng::seed_from_u64(i as u64);
                let mut c = ClientSession::new(secagg.clone(), id, key, &roster, &mut rng).unwrap();
                c.provide_input(input.clone()).unwrap();
                Party::Raw(Box::new(c))
            }
            _ => {
                let mut a = agent(f, i);
                to_server.extend(join(&mut a, config, state).into_iter().map(|m| (id, m)));
                Party::Honest(Box::new(a))
            }
        };
        parties.insert(id, party);
    }
    let deliver = |party: &mut Party, msg: ServerMessage, out: &mut VecDeque<_>, id| match party {
        Party::Honest(a) => {
            let shares_arrived = matches!(msg, ServerMessage::ForwardShares { .. });
            a.handle(
                ToAgent::SecAgg {
                    session: config.session,
                    msg,
                },
                state,
                NOW,
            )
            .unwrap();
            out.extend(outgoing(a).into_iter().map(|m| (id, m)));
            if shares_arrived {
                // Training ends while secure aggregation waits for the input: it is charged,
                // and nothing leaves until the driver says the charge is stored.
                a.submit_update(config.session, &trained(&global)).unwrap();
                assert!(
                    outgoing(a).is_empty(),
                    "the masked input left before its charge was recorded"
                );
                a.charge_recorded(config.session).unwrap();
                let sent = outgoing(a);
                assert!(
                    sent.iter().any(|m| matches!(
                        m,
                        ToCoordinator::SecAgg {
                            msg: medfl_secagg::ClientMessage::MaskedInput { .. },
                            ..
                        }
                    )),
                    "the charged input goes out once recorded: {sent:?}"
                );
                out.extend(sent.into_iter().map(|m| (id, m)));
            }
        }
        Party::Raw(c) => {
            c.handle_message(msg).unwrap();
            while let Some(msg) = c.poll_outgoing() {
                let session = config.session;
                out.push_back((id, ToCoordinator::SecAgg { session, msg }));
            }
        }
    };
    for (id, party) in parties.iter_mut() {
        if let Party::Raw(c) = party {
            while let Some(msg) = c.poll_outgoing() {
                let session = config.session;
                to_server.push_back((*id, ToCoordinator::SecAgg { session, msg }));
            }
        }
    }
    loop {
        while let Some((from, m)) = to_server.pop_front() {
            if let ToCoordinator::SecAgg { msg, .. } = m {
                server.handle_message(from, msg).unwrap();
            }
        }
        let mut sent = false;
        while let Some((to, msg)) = server.poll_outgoing() {
            sent = true;
            if withhold == Some(to.0 as usize) && matches!(msg, ServerMessage::UnmaskRequest { .. })
            {
                continue;
            }
            deliver(parties.get_mut(&to).unwrap(), msg, &mut to_server, to);
        }
        if !sent && to_server.is_empty() {
            break;
        }
    }
    // The withheld client never answers: its deadline closes the stage.
    server.close_stage(Stage::Unmask);
    let aggregate = std::iter::from_fn(|| server.poll_event())
        .find_map(|e| match e {
            ServerEvent::Aggregated(a) => Some(a),
            _ => None,
        })
        .expect("the honest round aggregates");
    let agents = parties
        .into_iter()
        .filter_map(|(id, p)| match p {
            Party::Honest(a) => Some((id.0 as usize, *a)),
            Party::Raw(_) => None,
        })
        .collect();
    (agents, aggregate)
}

fn endorse_request(config: &RoundConfig, survivors: Vec<ClientId>, sum: &[u64]) -> ToAgent {
    let codec = UpdateCodec::new(config).unwrap();
    ToAgent::EndorseRequest {
        session: config.session,
        survivors: survivors.into(),
        aggregate: Arc::new(PackedVector::pack(sum, codec.bits()).unwrap()),
        server_state: Vec::new().into(),
    }
}

/// The modular sum of `n` honest encodings of a small update, plus `extra` if given.
fn aggregate(config: &RoundConfig, extra: Option<Vec<u64>>) -> (Vec<u64>, PackedVector) {
    let codec = UpdateCodec::new(config).unwrap();
    let global = GlobalModel::initial(MODEL, 1).unwrap().file.params;
    let trained: Vec<f32> = global.iter().map(|g| g + 0.01).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut sum = vec![0u64; codec.encoded_len()];
    let honest = config.participants.len() - usize::from(extra.is_some());
    for _ in 0..honest {
        let x = codec.encode(&global, &trained, &mut rng).unwrap();
        codec.plan().add_mod(&mut sum, &x).unwrap();
    }
    if let Some(x) = extra {
        codec.plan().add_mod(&mut sum, &x).unwrap();
    }
    let packed = PackedVector::pack(&sum, codec.bits()).unwrap();
    (sum, packed)
}

fn survivors(config: &RoundConfig) -> Vec<ClientId> {
    (0..config.participants.len() as u32)
        .map(ClientId)
        .collect()
}

#[test]
fn a_reannounced_session_is_refused() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let mut a = agent(&f, 0);
    join(&mut a, &config, &state);
    // The coordinator announces the very same attempt again, hoping for fresh keys under the
    // same secure-aggregation session.
    let r = a.handle(ToAgent::RoundStart(Arc::new(config.clone())), &state, NOW);
    let out = outgoing(&mut a);
    let reused = DeclineReason::SessionReused { session: 77 };
    assert!(
        matches!(&r, Err(AgentError::RoundRefused(why)) if *why == reused),
        "a repeated session id was joined again: {r:?}"
    );
    assert_eq!(declines(&out), vec![reused], "{out:?}");
    assert_eq!(a.session(), Some(77), "the running attempt is left alone");
    assert!(
        !out.iter()
            .any(|m| matches!(m, ToCoordinator::SecAgg { .. }))
    );
    // A session the agent declined cannot be retried either, even with a config that checks out.
    let mut b = agent(&f, 1);
    let bad = RoundConfig {
        session: 78,
        consent_height: 99,
        ..config.clone()
    };
    assert!(
        b.handle(ToAgent::RoundStart(Arc::new(bad)), &state, NOW)
            .is_err()
    );
    outgoing(&mut b);
    let retry = RoundConfig {
        session: 78,
        ..config.clone()
    };
    let r = b.handle(ToAgent::RoundStart(Arc::new(retry)), &state, NOW);
    assert!(
        matches!(
            &r,
            Err(AgentError::RoundRefused(DeclineReason::SessionReused {
                session: 78
            }))
        ),
        "a declined session id was joined on a retry: {r:?}"
    );
    // A fresh session id is joined: the rule refuses repeats, not rounds.
    let fresh = RoundConfig {
        session: 79,
        ..config
    };
    b.handle(ToAgent::RoundStart(Arc::new(fresh)), &state, NOW)
        .unwrap();
}

#[test]
fn degree_one_threshold_one_is_declined_by_every_agent() {
    // With four clients and degree 1 the graph is a perfect matching: a Shamir share with
    // threshold 1 is the secret itself, so the coordinator could unmask anyone.
    let (f, state, mut config) = setup(4, 4, Strategy::default());
    config.secagg = SecAggParams {
        neighbours: Some(1),
        threshold: Some(1),
    };
    for i in 0..4 {
        let mut a = agent(&f, i);
        let r = a.handle(ToAgent::RoundStart(Arc::new(config.clone())), &state, NOW);
        let out = outgoing(&mut a);
        assert!(
            matches!(
                &r,
                Err(AgentError::RoundRefused(DeclineReason::BelowFloor(v))) if v.floor == Floor::Neighbours
            ),
            "hospital-{i} joined a degree-1 threshold-1 round: {r:?}"
        );
        assert!(
            matches!(
                declines(&out).as_slice(),
                [DeclineReason::BelowFloor(v)] if v.floor == Floor::Neighbours && v.value == 1.0
            ),
            "hospital-{i}: {out:?}"
        );
        assert_eq!(a.session(), None);
    }
}

#[test]
fn a_strategy_other_than_the_agreements_is_declined() {
    let (f, state, mut config) = setup(3, 3, Strategy::default());
    config.strategy = Strategy::FedAvg { server_lr: 50.0 };
    let mut a = agent(&f, 0);
    let r = a.handle(ToAgent::RoundStart(Arc::new(config)), &state, NOW);
    assert!(
        matches!(
            &r,
            Err(AgentError::RoundRefused(
                DeclineReason::StrategyMismatch { .. }
            ))
        ),
        "a strategy the agreement does not fix was joined: {r:?}"
    );
    assert_eq!(declines(&outgoing(&mut a)).len(), 1);
}

#[test]
fn an_unanchored_server_state_is_refused() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let (mut agents, agg) = run_round(&f, &state, &config, None);
    let d = MODEL.param_count();
    // Round 1 starts from the defined initial state (empty); the coordinator supplies moments
    // that nothing anchors.
    let a = agents.get_mut(&0).unwrap();
    let forged = match endorse_request(&config, agg.survivors.clone(), &agg.sum) {
        ToAgent::EndorseRequest {
            session,
            survivors,
            aggregate,
            ..
        } => ToAgent::EndorseRequest {
            session,
            survivors,
            aggregate,
            server_state: vec![0.25; 2 * d].into(),
        },
        _ => unreachable!(),
    };
    let r = a.handle(forged, &state, NOW);
    let out = outgoing(a);
    assert!(
        matches!(r, Err(AgentError::ServerState { .. })),
        "a forged server state was endorsed: {r:?}"
    );
    assert!(!endorsed(&out), "{out:?}");
    // The anchored (initial) state is endorsed.
    let b = agents.get_mut(&1).unwrap();
    b.handle(
        endorse_request(&config, agg.survivors.clone(), &agg.sum),
        &state,
        NOW,
    )
    .unwrap();
    assert!(endorsed(&outgoing(b)));
    assert!(
        std::iter::from_fn(|| b.poll_event()).any(|e| matches!(e, AgentEvent::Endorsed { .. }))
    );
}

#[test]
fn a_sum_wrapped_by_a_malicious_member_is_not_endorsed() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let codec = UpdateCodec::new(&config).unwrap();
    // The malicious hospital skips the encoder: a quarter of the ring in every coordinate.
    let quarter = 1u64 << (codec.bits() - 2);
    let raw = vec![quarter; codec.encoded_len()];
    let (mut agents, agg) = run_round(&f, &state, &config, Some((2, raw)));
    let a = agents.get_mut(&0).unwrap();
    let r = a.handle(
        endorse_request(&config, agg.survivors, &agg.sum),
        &state,
        NOW,
    );
    let out = outgoing(a);
    assert!(
        matches!(&r, Err(AgentError::OutOfRange(range)) if !range.ok()),
        "an out-of-range sum was endorsed: {r:?}"
    );
    assert!(!endorsed(&out), "{out:?}");
}

/// The coordinator asks for an endorsement naming fewer hospitals than the sum holds: the
/// anchor would charge privacy budget to fewer members than released an update (and a
/// dropped-out list the agent never saw). Every survivor signed the one true set.
#[test]
fn a_survivor_list_the_agent_did_not_sign_is_not_endorsed() {
    let (f, state, config) = setup(4, 4, Strategy::default());
    let (mut agents, agg) = run_round(&f, &state, &config, None);
    assert_eq!(agg.survivors.len(), 4);
    let fewer: Vec<ClientId> = agg.survivors[..3].to_vec();
    let a = agents.get_mut(&0).unwrap();
    let r = a.handle(endorse_request(&config, fewer, &agg.sum), &state, NOW);
    let out = outgoing(a);
    assert!(
        matches!(&r, Err(AgentError::SurvivorsNotSigned { claimed, signed: Some(signed) })
            if claimed.len() == 3 && signed.len() == 4),
        "a survivor list the agent never signed was endorsed: {r:?}"
    );
    assert!(!endorsed(&out), "{out:?}");
    // The set every survivor signed is endorsed.
    let b = agents.get_mut(&1).unwrap();
    b.handle(
        endorse_request(&config, agg.survivors, &agg.sum),
        &state,
        NOW,
    )
    .unwrap();
    assert!(endorsed(&outgoing(b)));
}

/// The server shows a few clients a smaller survivor set than the quorum signed, unmasks the
/// sum over the larger set without them, and asks them to vouch for the smaller one. Here the
/// agent signed a set but never saw the quorum's signatures over it (no unmask request): it
/// does not endorse anything.
#[test]
fn an_agent_that_never_saw_the_quorum_does_not_endorse() {
    let (f, state, config) = setup(4, 4, Strategy::default());
    let (mut agents, agg) = run_round_withholding(&f, &state, &config, None, Some(0));
    let a = agents.get_mut(&0).unwrap();
    let r = a.handle(
        endorse_request(&config, agg.survivors.clone(), &agg.sum),
        &state,
        NOW,
    );
    assert!(
        matches!(&r, Err(AgentError::SurvivorsNotSigned { signed: None, .. })),
        "an agent endorsed a set it never saw a quorum sign: {r:?}"
    );
    assert!(!endorsed(&outgoing(a)));
    let b = agents.get_mut(&1).unwrap();
    b.handle(
        endorse_request(&config, agg.survivors, &agg.sum),
        &state,
        NOW,
    )
    .unwrap();
    assert!(endorsed(&outgoing(b)));
}

/// An agent that never sent its input (it is still waiting for the model, or the coordinator
/// skipped secure aggregation altogether) is asked to vouch for a sum: it refuses.
#[test]
fn a_sum_the_agent_took_no_part_in_is_not_endorsed() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let (sum, _) = aggregate(&config, None);
    let mut a = agent(&f, 0);
    join(&mut a, &config, &state);
    let r = a.handle(
        endorse_request(&config, survivors(&config), &sum),
        &state,
        NOW,
    );
    let out = outgoing(&mut a);
    assert!(
        matches!(&r, Err(AgentError::SurvivorsNotSigned { signed: None, .. })),
        "a fabricated sum was endorsed: {r:?}"
    );
    assert!(!endorsed(&out), "{out:?}");
}

/// A coordinator that puts its own key (or an auditor's) in the roster would subtract that input
/// from the unmasked sum and learn the honest hospitals' updates with less noise than the round
/// promises; the contract refuses such an anchor only after the sum is out. The agent refuses
/// before it advertises a key.
#[test]
fn a_roster_with_a_non_hospital_is_declined_before_any_key_is_sent() {
    for outsider in ["coordinator", "auditor"] {
        let (f, state, mut config) = setup(3, 3, Strategy::default());
        config.participants[2] = Fixture::id(outsider);
        let mut a = agent(&f, 0);
        let r = a.handle(ToAgent::RoundStart(Arc::new(config)), &state, NOW);
        let out = outgoing(&mut a);
        assert!(
            matches!(&r, Err(AgentError::RoundRefused(DeclineReason::Ledger(why))) if why.contains(outsider)),
            "{outsider} in the roster was accepted: {r:?}"
        );
        assert_eq!(declines(&out).len(), 1, "{out:?}");
        assert!(
            !out.iter()
                .any(|m| matches!(m, ToCoordinator::SecAgg { .. })),
            "a key was advertised to a roster with {outsider}"
        );
        assert_eq!(a.session(), None);
    }
}

/// A coordinator re-announces the same round under ever new session ids, to collect fresh
/// noisy updates of the same data (or to grow the agent's memory with session ids). The agent
/// joins at most [`MAX_ATTEMPTS_PER_ROUND`] attempts of a round and refuses rounds other than
/// the ledger's next without remembering them.
#[test]
fn endless_attempts_of_one_round_are_capped_and_made_up_rounds_are_not_remembered() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let mut a = agent(&f, 0);
    for session in 0..MAX_ATTEMPTS_PER_ROUND as u64 {
        let attempt = RoundConfig {
            session: 1000 + session,
            ..config.clone()
        };
        a.handle(ToAgent::RoundStart(Arc::new(attempt)), &state, NOW)
            .unwrap();
        outgoing(&mut a);
    }
    let one_more = RoundConfig {
        session: 5000,
        ..config.clone()
    };
    let r = a.handle(ToAgent::RoundStart(Arc::new(one_more)), &state, NOW);
    assert!(
        matches!(
            &r,
            Err(AgentError::RoundRefused(DeclineReason::TooManyAttempts {
                round: 1,
                ..
            }))
        ),
        "attempt {} of one round was joined: {r:?}",
        MAX_ATTEMPTS_PER_ROUND + 1
    );
    assert_eq!(declines(&outgoing(&mut a)).len(), 1);
    // A made-up future round is refused before it is bookkept: the same session id is then
    // not "reused" for a real attempt of another agreement's round.
    let mut b = agent(&f, 1);
    let future = RoundConfig {
        session: 9,
        round: 1_000_000,
        ..config.clone()
    };
    let r = b.handle(ToAgent::RoundStart(Arc::new(future)), &state, NOW);
    assert!(
        matches!(&r, Err(AgentError::RoundRefused(DeclineReason::Ledger(why))) if why.contains("next is 1")),
        "{r:?}"
    );
    let real = RoundConfig {
        session: 9,
        ..config
    };
    b.handle(ToAgent::RoundStart(Arc::new(real)), &state, NOW)
        .unwrap();
}

/// The coordinator pushes the model a second time, hoping the agent trains (and releases) the
/// same round twice.
#[test]
fn a_second_copy_of_the_model_does_not_start_a_second_training() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let mut a = agent(&f, 0);
    join(&mut a, &config, &state);
    let bytes = GlobalModel::initial(MODEL, 1).unwrap().to_bytes().unwrap();
    let (offset, first) = chunks(&bytes).next().unwrap();
    let r = a.handle(
        ToAgent::ModelChunk {
            session: config.session,
            offset,
            total: bytes.len() as u64,
            bytes: first.into(),
        },
        &state,
        NOW,
    );
    assert!(matches!(r, Err(AgentError::Unexpected(_))), "{r:?}");
    assert!(
        !std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, AgentEvent::Train(_))),
        "the agent trained the same round twice"
    );
}

/// A hospital privacy ledger with room for every round these tests run.
fn roomy_spend() -> PrivacySpend {
    PrivacySpend::new(PrivacyBudget::new(1e9, 1e-6).unwrap(), Vec::new()).unwrap()
}

/// What one release of `config`'s update costs, and a hospital budget that `releases` of them
/// fit in but not one more (at the training delta), as a hospital would configure it.
fn budget_for(config: &RoundConfig, releases: u64) -> (Charge, PrivacyBudget) {
    let accounting = privacy::dpsgd_config(&config.training, [0; 32])
        .unwrap()
        .accounting(MODEL)
        .unwrap();
    let charge = Charge {
        agreement: config.agreement.clone(),
        round: config.round,
        session: 1,
        event: accounting.event,
        aggregate: None,
    };
    let mut probe = PrivacySpend::new(
        PrivacyBudget::new(1e9, config.training.delta).unwrap(),
        Vec::new(),
    )
    .unwrap();
    let eps: Vec<f64> = (0..=releases)
        .map(|_| probe.charge(charge.clone()).unwrap())
        .collect();
    let n = releases as usize;
    let budget = PrivacyBudget::new((eps[n - 1] + eps[n]) / 2.0, config.training.delta).unwrap();
    (charge, budget)
}

/// Attack: an attempt fails after the hospital's input was unmasked (here the coordinator
/// aborts it; an endorsement timeout or a refused anchor look the same), so the ledger never
/// charges it, and the coordinator retries the round to average the noise away. The hospital
/// charged its own ledger before its input left, and refuses the retry past its budget.
#[test]
fn a_failed_attempt_after_input_is_charged_and_a_retry_past_the_budget_is_refused() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let (_, budget) = budget_for(&config, 1);
    let spend = PrivacySpend::new(budget, Vec::new()).unwrap();
    let mut a = agent_with(&f, 0, spend);
    join(&mut a, &config, &state);
    let global = GlobalModel::initial(MODEL, 1).unwrap().file.params;
    a.submit_update(config.session, &trained(&global)).unwrap();
    let charged: Vec<Charge> = std::iter::from_fn(|| a.poll_event())
        .filter_map(|e| match e {
            AgentEvent::Charge(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(charged.len(), 1, "the release is charged before it leaves");
    assert_eq!(charged[0].session, config.session);
    a.charge_recorded(config.session).unwrap();
    a.handle(
        ToAgent::Abort {
            session: config.session,
            reason: "endorsement timeout".into(),
        },
        &state,
        NOW,
    )
    .unwrap();
    outgoing(&mut a);
    assert_eq!(
        a.privacy_spend().charges().len(),
        1,
        "the failed attempt stays charged"
    );
    // The ledger shows nothing spent; the coordinator retries the same round.
    let retry = RoundConfig {
        session: config.session + 1,
        ..config.clone()
    };
    let r = a.handle(ToAgent::RoundStart(Arc::new(retry)), &state, NOW);
    assert_declined_for_own_budget(&mut a, r, "a retry past the hospital's budget");
}

/// The agent declined the round for its own budget, before advertising any key.
fn assert_declined_for_own_budget(a: &mut Agent, r: Result<(), AgentError>, what: &str) {
    assert!(
        matches!(
            &r,
            Err(AgentError::RoundRefused(DeclineReason::OwnBudget(_)))
        ),
        "{what} was joined: {r:?}"
    );
    assert!(
        !outgoing(a)
            .iter()
            .any(|m| matches!(m, ToCoordinator::SecAgg { .. })),
        "{what}: a key was advertised for a round the hospital cannot pay for"
    );
}

/// A new agreement over the same access logs starts the consortium ledger's spend at zero; the
/// hospital's own ledger does not: its budget is per dataset, across agreements.
#[test]
fn a_second_agreement_does_not_reset_the_hospitals_spend() {
    let (f, state, config) = setup(3, 3, Strategy::default());
    let (mut earlier, budget) = budget_for(&config, 1);
    earlier.agreement = medfl_ledger::AgreementId::new("dua-2025").unwrap();
    let spend = PrivacySpend::new(budget, vec![earlier]).unwrap();
    let mut a = agent_with(&f, 0, spend);
    let r = a.handle(ToAgent::RoundStart(Arc::new(config.clone())), &state, NOW);
    assert!(
        matches!(
            &r,
            Err(AgentError::RoundRefused(DeclineReason::OwnBudget(_)))
        ),
        "the spend under an earlier agreement was forgotten: {r:?}"
    );
    // With room for two releases the round is joined.
    let (mut earlier, budget) = budget_for(&config, 2);
    earlier.agreement = medfl_ledger::AgreementId::new("dua-2025").unwrap();
    let mut b = agent_with(&f, 1, PrivacySpend::new(budget, vec![earlier]).unwrap());
    b.handle(ToAgent::RoundStart(Arc::new(config)), &state, NOW)
        .unwrap();
}

/// The coordinator shrinks the aggregate's distributed noise (or a hospital assumes more
/// colluders than the noise was split over), so the sum would reveal more about each hospital's
/// whole update than the hospital allows itself. A hospital holding itself to a hospital-level
/// budget declines before advertising a key; at the noise calibrated for its budget it joins.
#[test]
fn a_round_past_the_hospital_level_budget_is_declined() {
    let (f, state, mut config) = setup(3, 3, Strategy::default());
    let delta = config.training.delta;
    let participants = config.participants.len() as u64;
    config.ddg.noise_multiplier =
        privacy::calibrate_hospital_noise(&config.ddg, MODEL, participants, 1, 1, 8.0, delta)
            .unwrap();
    let hospital = |colluders| {
        let roomy = PrivacyBudget::new(1e9, delta).unwrap();
        PrivacySpend::new(roomy, Vec::new())
            .unwrap()
            .with_hospital_budget(HospitalBudget {
                budget: PrivacyBudget::new(8.0, delta).unwrap(),
                colluders,
            })
            .unwrap()
    };
    let mut a = agent_with(&f, 0, hospital(1));
    a.handle(ToAgent::RoundStart(Arc::new(config.clone())), &state, NOW)
        .unwrap();

    for (ddg_scale, colluders) in [(0.5, 1), (1.0, 3)] {
        let mut attack = config.clone();
        attack.ddg.noise_multiplier *= ddg_scale;
        let mut b = agent_with(&f, 1, hospital(colluders));
        let r = b.handle(ToAgent::RoundStart(Arc::new(attack)), &state, NOW);
        let what = format!("noise x{ddg_scale} with {colluders} colluders");
        assert_declined_for_own_budget(&mut b, r, &what);
    }
}

/// The coordinator states the round's epsilon at a larger delta than the agreement's, so it
/// looks cheaper. The agent refuses before releasing anything.
#[test]
fn a_delta_above_the_agreements_is_declined() {
    let (f, state, mut config) = setup(3, 3, Strategy::default());
    config.training.delta = 1e-3;
    let mut a = agent(&f, 0);
    let r = a.handle(ToAgent::RoundStart(Arc::new(config)), &state, NOW);
    assert!(
        matches!(&r, Err(AgentError::RoundRefused(DeclineReason::Ledger(why))) if why.contains("delta")),
        "{r:?}"
    );
}

/// The first round's starting model is the coordinator's choice: it sends one whose huge
/// weights overflow on rows of a pattern it wants to detect, so that training (or its time)
/// would depend on whether the hospital holds such rows. The agent refuses the model.
#[test]
fn a_starting_model_with_huge_parameters_is_refused_before_training() {
    let (f, state, mut config) = setup(3, 3, Strategy::default());
    // Built by hand: the protocol's own constructor refuses such a model.
    let mut file = GlobalModel::initial(MODEL, 1).unwrap().file;
    file.params[0] = 1e30;
    let bytes = file.to_bytes().unwrap();
    config.previous_model = medfl_protocol::model::sha256(&bytes);
    let mut a = agent(&f, 0);
    a.handle(ToAgent::RoundStart(Arc::new(config.clone())), &state, NOW)
        .unwrap();
    let mut last = Ok(());
    for (offset, c) in chunks(&bytes) {
        last = a.handle(
            ToAgent::ModelChunk {
                session: config.session,
                offset,
                total: bytes.len() as u64,
                bytes: c.into(),
            },
            &state,
            NOW,
        );
    }
    assert!(
        matches!(&last, Err(e) if e.to_string().contains("beyond")),
        "{last:?}"
    );
    assert!(
        !std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, AgentEvent::Train(_))),
        "the agent trained on the coordinator's overflowing model"
    );
}
