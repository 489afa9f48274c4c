//! A hospital that cheats in secure aggregation is named by the protocol's own proof, and the
//! coordinator leaves it out of later rounds: one member cannot abort round after round.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod common;
use common::{coordinator, deliver, roomy_spend, training};

use medfl_client::Agent;
use medfl_coordinator::CoordinatorEvent;
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::{ChainState, MemberId, Timestamp};
use medfl_protocol::update::UpdateCodec;
use medfl_protocol::{ToAgent, ToCoordinator};
use medfl_secagg::{ClientId, ClientMessage, ClientSession};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const NOW: Timestamp = Timestamp(T0.0 + HOUR);
/// hospital-3 runs a bare secure-aggregation client and reveals corrupted shares when the
/// server asks it to unmask; the others are honest agents.
#[test]
fn a_hospital_proven_to_reveal_bad_shares_is_left_out_of_later_rounds() {
    let f = Fixture::new(2, 4, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 3);
    let all: BTreeSet<MemberId> = (0..4)
        .map(|i| Fixture::id(&format!("hospital-{i}")))
        .collect();
    let cheater = Fixture::id("hospital-3");
    c.start_round(0, NOW, &state, &all).unwrap();
    let mut agents: BTreeMap<MemberId, Agent> = (0..3)
        .map(|i| {
            let id = Fixture::id(&format!("hospital-{i}"));
            let a = Agent::new(
                id.clone(),
                f.key(&id).clone(),
                f.genesis_hash,
                roomy_spend(),
                [i; 32],
            );
            (id, a)
        })
        .collect();
    let mut bad: Option<ClientSession> = None;
    let mut session = 0;
    let mut inbox: VecDeque<(MemberId, ToCoordinator)> = VecDeque::new();
    // Drains the cheater's messages, corrupting every share it reveals.
    let drain_bad = |b: &mut ClientSession, session: u64, inbox: &mut VecDeque<_>| {
        while let Some(mut msg) = b.poll_outgoing() {
            if let ClientMessage::UnmaskShares { shares, .. } = &mut msg {
                for s in shares {
                    if let Some(byte) = s.share.last_mut() {
                        *byte ^= 1;
                    }
                }
            }
            inbox.push_back((cheater.clone(), ToCoordinator::SecAgg { session, msg }));
        }
    };
    for _ in 0..10_000 {
        let mut progressed = false;
        while let Some((to, msg)) = c.poll_outgoing() {
            progressed = true;
            if to == cheater {
                match msg {
                    ToAgent::RoundStart(cfg) => {
                        let codec = UpdateCodec::new(&cfg).unwrap();
                        let secagg = cfg
                            .secagg_config(&f.genesis_hash, codec.encoded_len(), codec.bits())
                            .unwrap();
                        let index = cfg.client_index(&cheater).unwrap();
                        let mut rng = ChaCha20Rng::seed_from_u64(3);
                        let mut b = ClientSession::new(
                            secagg,
                            ClientId(index),
                            f.key(&cheater).clone(),
                            &cfg.roster(&state).unwrap(),
                            &mut rng,
                        )
                        .unwrap();
                        b.provide_input(vec![0; codec.encoded_len()]).unwrap();
                        session = cfg.session;
                        drain_bad(&mut b, session, &mut inbox);
                        bad = Some(b);
                    }
                    ToAgent::SecAgg { msg, .. } => {
                        if let Some(b) = bad.as_mut() {
                            let _ = b.handle_message(msg);
                            drain_bad(b, session, &mut inbox);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let Some(a) = agents.get_mut(&to) else {
                continue;
            };
            deliver(a, &to, msg, (&state, NOW), true, &mut inbox);
        }
        while let Some((from, m)) = inbox.pop_front() {
            progressed = true;
            let _ = c.handle(0, NOW, &from, m, &state);
        }
        if !progressed {
            break;
        }
    }
    let named: BTreeSet<MemberId> = std::iter::from_fn(|| c.poll_event())
        .filter_map(|e| match e {
            CoordinatorEvent::Misbehaved { member, reason }
                if reason.contains("secure aggregation") =>
            {
                Some(member)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([cheater.clone()]),
        "the cheater is named, and only it"
    );
    assert!(c.excluded().contains_key(&cheater));
    let eligible: Vec<MemberId> = c
        .eligible(&state, &all, NOW)
        .unwrap()
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(eligible.len(), 3);
    assert!(!eligible.contains(&cheater), "{eligible:?}");
}
