//! The agent refuses rounds that do not check out against its ledger, and messages that do
//! not belong to its round.

use medfl_client::{Agent, AgentError, AgentEvent};
use medfl_ledger::testkit::{Fixture, T0};
use medfl_ledger::{ChainState, Timestamp};
use medfl_modelspec::AutoencoderConfig;
use medfl_protocol::model::chunks;
use medfl_protocol::{
    DdgParams, GlobalModel, RoundConfig, SecAggParams, Strategy, ToAgent, ToCoordinator,
    TrainingParams, privacy,
};

/// The agent's own clock in these tests: a second after the fixture's genesis.
const NOW: Timestamp = Timestamp(T0.0 + 1000);

fn setup() -> (Fixture, ChainState, RoundConfig, GlobalModel) {
    let f = Fixture::new(1, 4, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
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
        session: 77,
        issued_at: Timestamp(T0.0 + 1000),
        previous_model: model.hash,
        model: model_cfg,
        participants: vec![
            Fixture::id("hospital-0"),
            Fixture::id("hospital-1"),
            Fixture::id("hospital-2"),
        ],
        epsilon_after: vec![eps, eps, eps],
        training,
        ddg: DdgParams::default(),
        secagg: SecAggParams::default(),
        strategy: Strategy::default(),
        public_seed: [1; 32],
        consent_height: 0,
    };
    (f, state, config, model)
}

fn agent(f: &Fixture, name: &str) -> Agent {
    let id = Fixture::id(name);
    Agent::new(
        id.clone(),
        f.key(&id).clone(),
        f.genesis_hash,
        roomy_spend(),
        [5; 32],
    )
}

fn declined(a: &mut Agent) -> bool {
    std::iter::from_fn(|| a.poll_outgoing()).any(|m| matches!(m, ToCoordinator::Decline { .. }))
}

#[test]
fn a_sound_round_is_joined_and_the_model_is_trained_after_its_chunks() {
    let (f, state, config, model) = setup();
    let mut a = agent(&f, "hospital-0");
    a.handle(
        ToAgent::RoundStart(std::sync::Arc::new(config.clone())),
        &state,
        NOW,
    )
    .unwrap();
    let out: Vec<_> = std::iter::from_fn(|| a.poll_outgoing()).collect();
    assert!(
        matches!(out.as_slice(), [ToCoordinator::SecAgg { session: 77, .. }]),
        "{out:?}"
    );
    let bytes = model.to_bytes().unwrap();
    for (offset, c) in chunks(&bytes) {
        a.handle(
            ToAgent::ModelChunk {
                session: 77,
                offset,
                total: bytes.len() as u64,
                bytes: c.into(),
            },
            &state,
            NOW,
        )
        .unwrap();
    }
    let events: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::Train(t) if t.global.hash == model.hash))
    );
}

#[test]
fn rounds_that_do_not_match_the_ledger_are_declined() {
    let (f, state, config, _) = setup();
    let cases: Vec<(&str, RoundConfig)> = vec![
        (
            "wrong round number",
            RoundConfig {
                round: 2,
                ..config.clone()
            },
        ),
        (
            "understated epsilon",
            RoundConfig {
                epsilon_after: vec![0.01; 3],
                ..config.clone()
            },
        ),
        (
            // Inside the contract's tolerance but outside the endorsement band: a claim on the
            // contract's edge could pass on one replica and fail on another.
            "epsilon at the contract's tolerance edge",
            RoundConfig {
                epsilon_after: config
                    .epsilon_after
                    .iter()
                    .map(|e| e * (1.0 - 0.9 * medfl_ledger::EPSILON_TOLERANCE))
                    .collect(),
                ..config.clone()
            },
        ),
        ("over budget", {
            let training = TrainingParams {
                noise_multiplier: 0.3,
                epochs: 50.0,
                ..config.training
            };
            let eps = privacy::epsilon_after(&training, config.model, 1).unwrap();
            assert!(eps > 10.0, "the fixture's budget is 10, this costs {eps}");
            RoundConfig {
                training,
                epsilon_after: vec![eps; 3],
                ..config.clone()
            }
        }),
        (
            "expired agreement",
            RoundConfig {
                issued_at: Timestamp(T0.0 + 400 * 24 * 3_600_000),
                ..config.clone()
            },
        ),
        (
            "another hospital's round",
            RoundConfig {
                participants: vec![
                    Fixture::id("hospital-1"),
                    Fixture::id("hospital-2"),
                    Fixture::id("hospital-3"),
                ],
                ..config.clone()
            },
        ),
    ];
    for (what, c) in cases {
        let mut a = agent(&f, "hospital-0");
        let r = a.handle(ToAgent::RoundStart(std::sync::Arc::new(c)), &state, NOW);
        assert!(
            matches!(r, Err(AgentError::RoundRefused(_))),
            "{what}: {r:?}"
        );
        assert!(declined(&mut a), "{what}: no Decline sent");
        assert_eq!(a.session(), None, "{what}");
    }
}

#[test]
fn stale_messages_and_a_tampered_model_are_refused() {
    let (f, state, config, model) = setup();
    let mut a = agent(&f, "hospital-0");
    a.handle(
        ToAgent::RoundStart(std::sync::Arc::new(config)),
        &state,
        NOW,
    )
    .unwrap();
    let r = a.handle(
        ToAgent::Abort {
            session: 1,
            reason: "x".into(),
        },
        &state,
        NOW,
    );
    assert!(
        matches!(
            r,
            Err(AgentError::Stale {
                got: 1,
                current: Some(77)
            })
        ),
        "{r:?}"
    );
    let mut bytes = model.to_bytes().unwrap();
    bytes[30] ^= 1;
    let r = a.handle(
        ToAgent::ModelChunk {
            session: 77,
            offset: 0,
            total: bytes.len() as u64,
            bytes: bytes.into(),
        },
        &state,
        NOW,
    );
    assert!(
        r.is_err(),
        "a model that does not hash to the announced one"
    );
    assert!(!std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, AgentEvent::Train(_))));
}

/// A hospital privacy ledger with room for every round these tests run.
fn roomy_spend() -> medfl_client::spend::PrivacySpend {
    let budget = medfl_client::spend::PrivacyBudget::new(1e9, 1e-6).unwrap();
    medfl_client::spend::PrivacySpend::new(budget, Vec::new()).unwrap()
}

/// A refusal notice is checked against the agent's own ledger: only a revocation of this member
/// that its own copy records (same block, signer, time and reason) tells the driver to stop;
/// a coordinator's signature alone proves only that it said so.
#[test]
fn a_refusal_notice_stops_the_agent_only_when_its_copy_records_the_revocation() {
    use medfl_protocol::{Refusal, RefusalReason};
    let (f, state, _, _) = setup();
    let (coord, ckey) = f.coordinator();
    let revoke = f.tx(
        coord,
        NOW,
        medfl_ledger::TxBody::RevokeMember {
            member: Fixture::id("hospital-0"),
            reason: "credentials leaked".into(),
        },
    );
    let mut revoked_state = state.clone();
    revoked_state
        .apply_block(&f.block(&state, vec![revoke], NOW))
        .unwrap();
    let claim = |member: &str, reason: &str| RefusalReason::Revoked {
        member: Fixture::id(member),
        height: 1,
        by: coord.clone(),
        at: NOW,
        reason: reason.into(),
    };
    let notice = |reason, signer: &str| {
        let id = Fixture::id(signer);
        let key = if signer == coord.as_str() {
            ckey
        } else {
            f.key(&id)
        };
        Refusal {
            genesis: f.genesis_hash,
            height: 1,
            reason,
        }
        .sign(id, key)
        .unwrap()
    };
    let verdict = |signed, chain: &ChainState| {
        let mut a = agent(&f, "hospital-0");
        a.handle(
            ToAgent::Refused {
                notice: Box::new(signed),
                block: None,
            },
            chain,
            NOW,
        )
        .unwrap();
        match a.poll_event() {
            Some(AgentEvent::Refused {
                checked,
                revoked_me,
                ..
            }) => (checked.is_ok(), revoked_me),
            other => panic!("{other:?}"),
        }
    };
    let c = coord.as_str();
    let true_claim = notice(claim("hospital-0", "credentials leaked"), c);
    assert_eq!(verdict(true_claim.clone(), &revoked_state), (true, true));
    // Signed, but the copy does not record it (yet, or ever): kept as a claim, not obeyed.
    assert_eq!(verdict(true_claim, &state), (true, false));
    // A different reason than the ledger's, another member, or not a revocation: no stop.
    let wrong = notice(claim("hospital-0", "something else"), c);
    assert_eq!(verdict(wrong, &revoked_state), (true, false));
    let other = notice(claim("hospital-1", "credentials leaked"), c);
    assert_eq!(verdict(other, &revoked_state), (true, false));
    let stranger = notice(RefusalReason::NotAMember, c);
    assert_eq!(verdict(stranger, &revoked_state), (true, false));
    // Signed by a hospital, not a coordinator: not believed.
    let forged = notice(claim("hospital-0", "credentials leaked"), "hospital-1");
    assert_eq!(verdict(forged, &revoked_state), (false, false));
}
