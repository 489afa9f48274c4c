//! A coordinator that anchors something other than what the hospitals endorsed: each test is
//! the attacker's move, and the contract must refuse it.

use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::Strategy;
use medfl_ledger::{BlockError, ChainState, ContractError, Floor, Hash, Timestamp, TxBody};

fn t(hours: u64) -> Timestamp {
    Timestamp(T0.0 + hours * HOUR)
}

fn h(i: usize) -> medfl_ledger::MemberId {
    Fixture::id(&format!("hospital-{i}"))
}

/// An honest round-1 anchor over `participants`: epsilons as the contract recomputes them.
fn honest_round(
    f: &Fixture,
    participants: &[medfl_ledger::MemberId],
) -> medfl_ledger::tx::RoundAnchor {
    let genesis = ChainState::from_genesis(&f.genesis).unwrap();
    f.round_on(&genesis, 1, Hash([0; 32]), participants)
}

fn anchor_error(f: &Fixture, anchor: medfl_ledger::tx::RoundAnchor) -> Option<ContractError> {
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    let before = state.clone();
    let (cid, _) = f.coordinator();
    let tx = f.tx(cid, t(1), TxBody::AnchorRound(anchor));
    let block = f.block(&state, vec![tx], t(1));
    match state.apply_block(&block) {
        Ok(()) => None,
        Err(BlockError::Contract { error, .. }) => {
            assert_eq!(state, before, "a refused anchor changed the state");
            Some(error)
        }
        Err(other) => panic!("expected a contract error, got {other}"),
    }
}

#[test]
fn an_anchor_that_moves_an_endorsed_participant_to_dropped_is_refused() {
    let f = Fixture::new(7, 3, 2);
    // Three hospitals endorse an outcome with all three in the aggregate...
    let honest = honest_round(&f, &[h(0), h(1), h(2)]);
    // ...and the coordinator anchors it saying hospital-2 dropped out (so its budget is not
    // charged and its contribution is unaccounted), keeping two of the signatures.
    let mut forged = honest.clone();
    forged.participants.truncate(2);
    forged.dropped = vec![h(2)];
    forged.endorsements.truncate(2);
    let err = anchor_error(&f, forged);
    assert!(
        matches!(&err, Some(ContractError::BadEndorsement(_))),
        "the participant list was not what the endorsers signed: {err:?}"
    );
    // The honest anchor goes through: the rule refuses the forgery, not every anchor.
    assert_eq!(anchor_error(&f, honest), None);
}

#[test]
fn an_anchor_that_invents_a_dropped_member_or_changes_a_spend_is_refused() {
    let f = Fixture::new(7, 3, 2);
    let honest = honest_round(&f, &[h(0), h(1)]);
    let mut dropped = honest.clone();
    dropped.dropped = vec![h(2)];
    let err = anchor_error(&f, dropped);
    assert!(
        matches!(&err, Some(ContractError::BadEndorsement(_))),
        "dropped list: {err:?}"
    );
    let mut spend = honest.clone();
    spend.participants[0].1.epsilon_total *= 0.5;
    let err = anchor_error(&f, spend);
    assert!(
        matches!(
            &err,
            Some(ContractError::BadEndorsement(_) | ContractError::EpsilonMismatch { .. })
        ),
        "privacy spend: {err:?}"
    );
}

#[test]
fn an_anchor_below_the_agreements_floors_is_refused() {
    let f = Fixture::new(7, 4, 2);
    let all = [h(0), h(1), h(2), h(3)];
    // Degree 1, threshold 1: each share is the secret itself. Endorsed by everyone (colluding
    // or fooled), the anchor is still refused: the floor is the agreement's, not theirs.
    let mut weak = honest_round(&f, &all);
    weak.aggregation.neighbours = 1;
    weak.aggregation.threshold = 1;
    f.endorse(&mut weak, &all);
    let err = anchor_error(&f, weak);
    assert!(
        matches!(
            &err,
            Some(ContractError::BelowFloor(v)) if v.floor == Floor::Neighbours
        ),
        "{err:?}"
    );
    let mut majority = honest_round(&f, &all);
    majority.aggregation.neighbours = 4;
    majority.aggregation.threshold = 2;
    f.endorse(&mut majority, &all);
    let err = anchor_error(&f, majority);
    assert!(
        matches!(&err, Some(ContractError::BelowFloor(v)) if v.floor == Floor::ThresholdMajority),
        "{err:?}"
    );
    let mut few = honest_round(&f, &all[..2]);
    few.aggregation.min_survivors = 3;
    f.endorse(&mut few, &all[..2]);
    let err = anchor_error(&f, few);
    assert!(
        matches!(
            &err,
            Some(ContractError::TooFewSurvivors {
                survivors: 2,
                needed: 3
            })
        ),
        "{err:?}"
    );
}

#[test]
fn an_anchor_computed_with_another_strategy_is_refused() {
    let f = Fixture::new(7, 3, 2);
    let all = [h(0), h(1), h(2)];
    let mut other = honest_round(&f, &all);
    other.strategy = Strategy::FedAvg { server_lr: 10.0 };
    f.endorse(&mut other, &all);
    let err = anchor_error(&f, other);
    assert!(
        matches!(&err, Some(ContractError::StrategyMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn the_anchored_server_state_is_kept_in_the_agreement() {
    let f = Fixture::new(7, 3, 2);
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    assert_eq!(
        state.agreement(&Fixture::dua()).unwrap().last_server_state,
        None
    );
    let r = honest_round(&f, &[h(0), h(1), h(2)]);
    let (cid, _) = f.coordinator();
    let tx = f.tx(cid, t(1), TxBody::AnchorRound(r.clone()));
    state.apply_block(&f.block(&state, vec![tx], t(1))).unwrap();
    assert_eq!(
        state.agreement(&Fixture::dua()).unwrap().last_server_state,
        Some(r.server_state)
    );
}

/// The coordinator under-reports a hospital's spend, and every participant endorses it (fooled
/// or colluding): the contract recomputes the spend from the anchored DP parameters and refuses.
#[test]
fn an_anchor_with_a_wrong_epsilon_is_refused_even_when_endorsed() {
    let f = Fixture::new(7, 3, 2);
    let all = [h(0), h(1), h(2)];
    let mut low = honest_round(&f, &all);
    low.participants[1].1.epsilon_total *= 0.9;
    f.endorse(&mut low, &all);
    let err = anchor_error(&f, low);
    assert!(
        matches!(&err, Some(ContractError::EpsilonMismatch { member, .. }) if *member == h(1)),
        "an under-reported epsilon was anchored: {err:?}"
    );
    assert_eq!(anchor_error(&f, honest_round(&f, &all)), None);
}

/// Round 1 ran with little noise; round 2 with more. A coordinator that prices the hospitals'
/// whole history at round 2's parameters (today's, for every past round) under-reports: the
/// contract composes each anchored round with its own parameters.
#[test]
fn an_anchor_that_reprices_past_rounds_at_todays_parameters_is_refused() {
    let f = Fixture::new(7, 3, 2);
    let all = [h(0), h(1), h(2)];
    let mut state = ChainState::from_genesis(&f.genesis).unwrap();
    let (cid, _) = f.coordinator();
    let mut r1 = f.round(1, Hash([0; 32]), &all, 0.0);
    r1.dp.noise_multiplier = 0.8;
    f.set_epsilons(&state, &mut r1);
    let m1 = r1.model;
    let tx = f.tx(cid, t(1), TxBody::AnchorRound(r1));
    state.apply_block(&f.block(&state, vec![tx], t(1))).unwrap();
    let mut r2 = f.round(2, m1, &all, 0.0);
    r2.dp.noise_multiplier = 2.0;
    // Today's parameters for both rounds.
    let mut today = r2.dp;
    today.steps *= 2;
    let genesis = ChainState::from_genesis(&f.genesis).unwrap();
    let repriced = genesis
        .epsilon_after(&Fixture::dua(), &h(0), &today)
        .unwrap();
    for (_, spend) in &mut r2.participants {
        spend.epsilon_total = repriced;
    }
    f.endorse(&mut r2, &all);
    let honest = state.epsilon_after(&Fixture::dua(), &h(0), &r2.dp).unwrap();
    assert!(
        repriced < honest,
        "the repricing under-reports ({repriced} < {honest})"
    );
    let tx = f.tx(cid, t(2), TxBody::AnchorRound(r2.clone()));
    let err = state
        .apply_block(&f.block(&state, vec![tx], t(2)))
        .unwrap_err();
    assert!(err.to_string().contains("privacy-recomputed"), "{err}");
    f.set_epsilons(&state, &mut r2);
    let tx = f.tx(cid, t(2), TxBody::AnchorRound(r2));
    state.apply_block(&f.block(&state, vec![tx], t(2))).unwrap();
}

/// DP parameters whose privacy loss overflows (a vanishing noise multiplier): the recomputed
/// epsilon is infinite, and no claimed figure may pass for it.
#[test]
fn an_anchor_whose_parameters_overflow_the_accountant_is_refused() {
    let f = Fixture::new(7, 3, 2);
    let all = [h(0), h(1), h(2)];
    let mut r = honest_round(&f, &all);
    r.dp.noise_multiplier = 1e-160;
    r.dp.sampling_rate = 1.0;
    r.dp.steps = 1;
    for (_, spend) in &mut r.participants {
        spend.epsilon_total = 0.0;
    }
    f.endorse(&mut r, &all);
    let err = anchor_error(&f, r);
    assert!(
        matches!(
            &err,
            Some(ContractError::EpsilonMismatch { .. } | ContractError::Malformed(_))
        ),
        "an overflowing spend was recorded as zero: {err:?}"
    );
}

/// With a genesis quorum of one, a single colluding hospital would vouch for forged DP
/// parameters (a huge noise multiplier: every honest participant recorded at epsilon near 0).
/// An anchor needs a majority of its participants.
#[test]
fn an_anchor_endorsed_by_a_minority_of_its_participants_is_refused() {
    let f = Fixture::new(7, 5, 1);
    let all = [h(0), h(1), h(2), h(3), h(4)];
    let mut forged = honest_round(&f, &all);
    forged.dp.noise_multiplier = 1e6;
    let genesis = ChainState::from_genesis(&f.genesis).unwrap();
    f.set_epsilons(&genesis, &mut forged);
    f.endorse(&mut forged, &all[..1]);
    let err = anchor_error(&f, forged);
    assert!(
        matches!(
            &err,
            Some(ContractError::QuorumNotReached { have: 1, need: 3 })
        ),
        "{err:?}"
    );
    let mut majority = honest_round(&f, &all);
    f.endorse(&mut majority, &all[..3]);
    assert_eq!(anchor_error(&f, majority), None);
}
