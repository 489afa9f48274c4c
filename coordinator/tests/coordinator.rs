//! The coordinator selects from the ledger and refuses messages it must not act on.

use std::collections::BTreeSet;

mod common;
use common::{coordinator, training};

use medfl_coordinator::{CoordinatorError, Ineligible};
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::{ChainState, MemberId, Timestamp, TxBody};
use medfl_protocol::{DeclineReason, ToAgent, ToCoordinator, TrainingParams};

fn hospitals(names: &[&str]) -> BTreeSet<MemberId> {
    names.iter().map(|n| Fixture::id(n)).collect()
}

const NOW: Timestamp = Timestamp(T0.0 + HOUR);

#[test]
fn a_round_starts_with_the_connected_eligible_hospitals_and_sends_each_its_config() {
    let f = Fixture::new(2, 4, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 2);
    let connected = hospitals(&["hospital-0", "hospital-2", "hospital-3", "auditor"]);
    let config = c.start_round(0, NOW, &state, &connected).unwrap().clone();
    assert_eq!(config.round, 1);
    assert_eq!(
        config.participants,
        vec![
            Fixture::id("hospital-0"),
            Fixture::id("hospital-2"),
            Fixture::id("hospital-3")
        ],
        "the auditor is not a hospital"
    );
    let starts = std::iter::from_fn(|| c.poll_outgoing())
        .filter(|(_, m)| matches!(m, ToAgent::RoundStart(_)))
        .count();
    assert_eq!(starts, 3);
    assert!(matches!(
        c.start_round(0, NOW, &state, &connected),
        Err(CoordinatorError::Busy(1))
    ));
}

#[test]
fn too_few_hospitals_or_budgets_exhausted_start_no_round() {
    let f = Fixture::new(2, 4, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 2);
    let r = c.start_round(0, NOW, &state, &hospitals(&["hospital-1"]));
    let Err(CoordinatorError::NotEnoughParticipants {
        eligible: 1,
        needed: 3,
        ineligible,
    }) = &r
    else {
        panic!("{r:?}");
    };
    // Every other hospital of the agreement is named, with why.
    assert_eq!(
        ineligible
            .iter()
            .map(|(m, why)| (m.as_str(), why.clone()))
            .collect::<Vec<_>>(),
        [
            ("hospital-0", Ineligible::NotConnected),
            ("hospital-2", Ineligible::NotConnected),
            ("hospital-3", Ineligible::NotConnected),
        ]
    );
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("hospital-0: not connected")
    );
    // A round that would cost more than the budget of 10 makes nobody eligible.
    let greedy = TrainingParams {
        noise_multiplier: 0.3,
        epochs: 50.0,
        ..training()
    };
    let mut c = coordinator(&f, greedy, 2);
    let r = c.start_round(
        0,
        NOW,
        &state,
        &hospitals(&["hospital-0", "hospital-1", "hospital-2"]),
    );
    let Err(CoordinatorError::NotEnoughParticipants {
        eligible: 0,
        ineligible,
        ..
    }) = &r
    else {
        panic!("{r:?}");
    };
    for h in ["hospital-0", "hospital-1", "hospital-2", "hospital-3"] {
        assert!(
            matches!(
                ineligible.get(&Fixture::id(h)),
                Some(Ineligible::BudgetSpent { budget, .. }) if *budget == 10.0
            ),
            "{h}: {ineligible:?}"
        );
    }
    assert!(r.unwrap_err().to_string().contains("privacy budget spent"));
    // A connected member outside the agreement is named too.
    let e = c
        .eligibility(&state, &hospitals(&["auditor", "hospital-0"]), NOW)
        .unwrap();
    assert_eq!(
        e.ineligible.get(&Fixture::id("auditor")),
        Some(&Ineligible::NotAHospital)
    );
}

#[test]
fn strangers_revoked_members_and_other_attempts_are_refused() {
    let f = Fixture::new(2, 4, 2);
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 2);
    let connected = hospitals(&["hospital-0", "hospital-1", "hospital-2", "hospital-3"]);
    let session = c.start_round(0, NOW, &state, &connected).unwrap().session;
    let hello = || ToCoordinator::Decline {
        session,
        reason: DeclineReason::Ledger("no".into()),
    };
    let stranger = Fixture::id("mallory");
    assert!(matches!(
        c.handle(1, NOW, &stranger, hello(), &state),
        Err(CoordinatorError::Refused { .. })
    ));
    let other = ToCoordinator::Decline {
        session: session ^ 1,
        reason: DeclineReason::Ledger("no".into()),
    };
    assert!(matches!(
        c.handle(1, NOW, &Fixture::id("hospital-0"), other, &state),
        Err(CoordinatorError::Refused { .. })
    ));
    let early = ToCoordinator::Endorse {
        session,
        model: c.model().hash,
        signature: medfl_ledger::Signature([0; 64]),
    };
    assert!(matches!(
        c.handle(1, NOW, &Fixture::id("hospital-0"), early, &state),
        Err(CoordinatorError::Refused { .. })
    ));
    // Revoke hospital-3 on the ledger: from its next message on, it is refused.
    let (cid, _) = f.coordinator();
    let tx = f.tx(
        cid,
        NOW,
        TxBody::RevokeMember {
            member: Fixture::id("hospital-3"),
            reason: "stolen key".into(),
        },
    );
    let block = f.block(&state, vec![tx], NOW);
    state.apply_block(&block).unwrap();
    let r = c.handle(2, NOW, &Fixture::id("hospital-3"), hello(), &state);
    assert!(
        matches!(&r, Err(CoordinatorError::Refused { reason, .. }) if reason.contains("revoked")),
        "{r:?}"
    );
    assert!(
        c.handle(2, NOW, &Fixture::id("hospital-1"), hello(), &state)
            .is_ok()
    );
}

/// Attack: a participant floods the coordinator with thousands of declines, each with a long
/// reason. The coordinator keeps one decline per member per attempt (its reason cut to
/// `MAX_DECLINE_REASON` bytes) and only counts the repeats, so its memory does not grow with
/// the flood; the other participants' declines are still recorded.
#[test]
fn a_participant_flooding_declines_is_recorded_once_and_counted() {
    use medfl_coordinator::{CoordinatorEvent, MAX_DECLINE_REASON};
    let f = Fixture::new(2, 4, 2);
    let state = ChainState::from_genesis(&f.genesis).unwrap();
    let mut c = coordinator(&f, training(), 2);
    let connected = hospitals(&["hospital-0", "hospital-1", "hospital-2", "hospital-3"]);
    let session = c.start_round(0, NOW, &state, &connected).unwrap().session;
    let flooder = Fixture::id("hospital-0");
    let long = "x".repeat(64 * 1024);
    for _ in 0..5_000 {
        let decline = ToCoordinator::Decline {
            session,
            reason: medfl_protocol::DeclineReason::Invalid(long.clone()),
        };
        c.handle(1, NOW, &flooder, decline, &state).unwrap();
    }
    let honest = ToCoordinator::Decline {
        session,
        reason: medfl_protocol::DeclineReason::Ledger("budget".into()),
    };
    c.handle(1, NOW, &Fixture::id("hospital-1"), honest, &state)
        .unwrap();
    // Nobody advertises keys: the stages time out and the attempt fails, carrying its metrics.
    let mut now = 1;
    let metrics = loop {
        if let Some(ev) = c.poll_event() {
            if let CoordinatorEvent::RoundFailed { metrics, .. } = ev {
                break metrics;
            }
            continue;
        }
        now = c
            .next_deadline()
            .expect("the attempt is still running")
            .max(now);
        c.tick(now, NOW);
    };
    assert_eq!(metrics.declined.len(), 2, "{:?}", metrics.declined.len());
    assert!(
        metrics
            .declined
            .iter()
            .all(|d| d.len() <= MAX_DECLINE_REASON + "hospital-0: ".len() + 4),
        "reasons are length-capped"
    );
    assert!(metrics.declined.iter().any(|d| d.ends_with("budget")));
    assert_eq!(metrics.declines_repeated, 4_999);
}
