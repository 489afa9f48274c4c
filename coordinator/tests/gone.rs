//! A participant whose connection closes, or who is revoked, mid-round is dropped at once:
//! the round anchors without waiting for the training deadline (600 s here).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod common;
use common::{coordinator, deliver, roomy_spend, training};

use medfl_client::Agent;
use medfl_coordinator::{Coordinator, CoordinatorEvent, RoundOutcome};
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::{ChainState, MemberId, Timestamp, TxBody};
use medfl_protocol::ToCoordinator;

const NOW: Timestamp = Timestamp(T0.0 + HOUR);

/// Runs one round of five hospitals in which `silent` never trains (as if killed in
/// training); once the others have sent their updates, `gone` tells the coordinator. The
/// clock never moves, so no deadline can end a stage. Returns the anchored outcome, if any.
fn round_with_a_silent_member(
    gone: impl FnOnce(&mut Coordinator, &ChainState, &MemberId),
) -> Option<RoundOutcome> {
    round_events(gone).into_iter().find_map(|e| match e {
        CoordinatorEvent::Anchor(outcome) => Some(*outcome),
        _ => None,
    })
}

/// [`round_with_a_silent_member`], returning every event the coordinator emitted.
fn round_events(
    gone: impl FnOnce(&mut Coordinator, &ChainState, &MemberId),
) -> Vec<CoordinatorEvent> {
    let f = Fixture::new(6, 5, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 3);
    let all: BTreeSet<MemberId> = (0..5)
        .map(|i| Fixture::id(&format!("hospital-{i}")))
        .collect();
    let silent = Fixture::id("hospital-4");
    c.start_round(0, NOW, &state, &all).unwrap();
    let mut agents: BTreeMap<MemberId, Agent> = (0..5u8)
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
    let mut inbox: VecDeque<(MemberId, ToCoordinator)> = VecDeque::new();
    let mut gone = Some(gone);
    for _ in 0..10_000 {
        let mut progressed = false;
        while let Some((to, msg)) = c.poll_outgoing() {
            progressed = true;
            let Some(a) = agents.get_mut(&to) else {
                continue;
            };
            deliver(a, &to, msg, (&state, NOW), to != silent, &mut inbox);
        }
        while let Some((from, m)) = inbox.pop_front() {
            progressed = true;
            let _ = c.handle(0, NOW, &from, m, &state);
        }
        if !progressed {
            // Everyone but the silent member has answered: now it is found gone.
            match gone.take() {
                Some(g) => g(&mut c, &state, &silent),
                None => break,
            }
        }
    }
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn a_participant_whose_connection_closes_is_dropped_at_once() {
    let outcome = round_with_a_silent_member(|c, _, silent| c.member_gone(0, NOW, silent))
        .expect("the round anchors without a deadline passing");
    assert_eq!(outcome.metrics.participants, 4);
    assert_eq!(outcome.metrics.gone, ["hospital-4"]);
    assert!(
        outcome
            .metrics
            .dropped
            .iter()
            .any(|d| d.contains("hospital-4"))
    );
}

#[test]
fn a_participant_revoked_mid_round_is_dropped_at_once() {
    let outcome = round_with_a_silent_member(|c, state, silent| {
        let f = Fixture::new(6, 5, 2);
        let (coord, _) = f.coordinator();
        let revoke = f.tx(
            coord,
            NOW,
            TxBody::RevokeMember {
                member: silent.clone(),
                reason: "credentials stolen".into(),
            },
        );
        let mut revoked = state.clone();
        revoked
            .apply_block(&f.block(state, vec![revoke], NOW))
            .unwrap();
        c.chain_changed(0, NOW, &revoked);
    })
    .expect("the round anchors without a deadline passing");
    assert_eq!(outcome.metrics.gone, ["hospital-4"]);
    assert_eq!(outcome.metrics.participants, 4);
}

/// Without being told, the coordinator waits: the same round has neither anchored nor failed.
#[test]
fn a_silent_participant_is_waited_for_until_its_deadline() {
    let events = round_events(|_, _, _| {});
    assert!(!events.iter().any(|e| matches!(
        e,
        CoordinatorEvent::Anchor(_) | CoordinatorEvent::RoundFailed { .. }
    )));
}

/// An extension mid-round lets every acceptance lapse: the coordinator stops waiting for the
/// participants it can no longer count (here the silent one is the last outstanding).
#[test]
fn participants_whose_acceptance_lapses_mid_round_are_dropped_at_once() {
    let outcome = round_events(|c, state, _| {
        let f = Fixture::new(6, 5, 2);
        let (coord, _) = f.coordinator();
        let dua = Fixture::dua();
        let expires = state.agreement(&dua).unwrap().agreement.expires_at;
        let extend = f.tx(
            coord,
            NOW,
            TxBody::ExtendAgreement {
                agreement: dua,
                expires_at: Timestamp(expires.0 + HOUR),
            },
        );
        let mut extended = state.clone();
        extended
            .apply_block(&f.block(state, vec![extend], NOW))
            .unwrap();
        c.chain_changed(0, NOW, &extended);
    });
    // Every participant's acceptance lapsed: all are dropped at once and the attempt ends,
    // with the clock stopped (a silent member alone leaves it waiting: see the control above).
    let failed = outcome
        .iter()
        .find_map(|e| match e {
            CoordinatorEvent::RoundFailed { metrics, .. } => Some(metrics.gone.len()),
            _ => None,
        })
        .expect("the attempt ended without a deadline");
    assert_eq!(failed, 5);
}

/// A late message from a member already dropped as gone is refused but not reported as
/// misbehaviour; the same message from a member still in the round is.
#[test]
fn a_late_message_from_a_gone_member_is_not_misbehaviour() {
    let f = Fixture::new(6, 5, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 3);
    let all: std::collections::BTreeSet<MemberId> = (0..5)
        .map(|i| Fixture::id(&format!("hospital-{i}")))
        .collect();
    let session = c.start_round(0, NOW, &state, &all).unwrap().session;
    let (gone, present) = (Fixture::id("hospital-0"), Fixture::id("hospital-1"));
    c.member_gone(0, NOW, &gone);
    let early_endorsement = || ToCoordinator::Endorse {
        session,
        model: medfl_ledger::Hash::ZERO,
        signature: medfl_ledger::Signature([0; 64]),
    };
    let misbehaved = |c: &mut Coordinator| -> Vec<MemberId> {
        std::iter::from_fn(|| c.poll_event())
            .filter_map(|e| match e {
                CoordinatorEvent::Misbehaved { member, .. } => Some(member),
                _ => None,
            })
            .collect()
    };
    misbehaved(&mut c);
    assert!(
        c.handle(0, NOW, &gone, early_endorsement(), &state)
            .is_err()
    );
    assert!(misbehaved(&mut c).is_empty());
    assert!(
        c.handle(0, NOW, &present, early_endorsement(), &state)
            .is_err()
    );
    assert_eq!(misbehaved(&mut c), [present]);
}
