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
    let honest = f.round(1, Hash([0; 32]), &[h(0), h(1), h(2)], 1.0);
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
    let honest = f.round(1, Hash([0; 32]), &[h(0), h(1)], 1.0);
    let mut dropped = honest.clone();
    dropped.dropped = vec![h(2)];
    let err = anchor_error(&f, dropped);
    assert!(
        matches!(&err, Some(ContractError::BadEndorsement(_))),
        "dropped list: {err:?}"
    );
    let mut spend = honest.clone();
    spend.participants[0].1.epsilon_total = 0.5;
    let err = anchor_error(&f, spend);
    assert!(
        matches!(&err, Some(ContractError::BadEndorsement(_))),
        "privacy spend: {err:?}"
    );
}

#[test]
fn an_anchor_below_the_agreements_floors_is_refused() {
    let f = Fixture::new(7, 4, 2);
    let all = [h(0), h(1), h(2), h(3)];
    // Degree 1, threshold 1: each share is the secret itself. Endorsed by everyone (colluding
    // or fooled), the anchor is still refused: the floor is the agreement's, not theirs.
    let mut weak = f.round(1, Hash([0; 32]), &all, 1.0);
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
    let mut majority = f.round(1, Hash([0; 32]), &all, 1.0);
    majority.aggregation.neighbours = 4;
    majority.aggregation.threshold = 2;
    f.endorse(&mut majority, &all);
    let err = anchor_error(&f, majority);
    assert!(
        matches!(&err, Some(ContractError::BelowFloor(v)) if v.floor == Floor::ThresholdMajority),
        "{err:?}"
    );
    let mut few = f.round(1, Hash([0; 32]), &all[..2], 1.0);
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
    let mut other = f.round(1, Hash([0; 32]), &all, 1.0);
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
    let r = f.round(1, Hash([0; 32]), &[h(0), h(1), h(2)], 1.0);
    let (cid, _) = f.coordinator();
    let tx = f.tx(cid, t(1), TxBody::AnchorRound(r.clone()));
    state.apply_block(&f.block(&state, vec![tx], t(1))).unwrap();
    assert_eq!(
        state.agreement(&Fixture::dua()).unwrap().last_server_state,
        Some(r.server_state)
    );
}
