//! The coordinator's node, driven by hand: pacing around members' transactions, membership
//! changes, catch-up, and refusing strangers. The simulator and the daemon drive this same type.

use ed25519_dalek::SigningKey;
use medfl::consortium::{EPOCH, SimSettings, genesis};
use medfl::model_store::ModelStore;
use medfl::node::{CoordinatorNode, NodeEvent};
use medfl::settings::RoundSettings;
use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{AgreementId, Hash, Ledger, MemberId, Timestamp, Transaction, TxBody};
use medfl_protocol::{ToAgent, ToCoordinator};

struct Setup {
    _dir: tempfile::TempDir,
    node: CoordinatorNode,
    keys: Vec<(MemberId, SigningKey)>,
    genesis: Hash,
}

fn wall(ms: u64) -> Timestamp {
    Timestamp(EPOCH.0 + 1_000 + ms)
}

/// A coordinator node over a fresh ledger with `n` hospitals, rounds paced 1 s apart.
fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut rounds = RoundSettings::new(AgreementId::new("dua").unwrap());
    (rounds.hidden, rounds.latent) = (4, 2);
    rounds.min_participants = 2;
    let settings = SimSettings::new(&rounds, 3, 50.0);
    let ids: Vec<MemberId> = (0..n)
        .map(|i| MemberId::new(format!("h{i}")).unwrap())
        .collect();
    let (g, keys) = genesis(&ids, &settings).unwrap();
    let ledger = Ledger::create(&dir.path().join("ledger"), &g).unwrap();
    let models = ModelStore::open(&dir.path().join("models")).unwrap();
    let node = CoordinatorNode::open(
        keys[0].0.clone(),
        keys[0].1.clone(),
        settings.coordinator.clone(),
        1,
        rounds.pacing(),
        ledger,
        models,
        [7; 32],
        0,
    )
    .unwrap();
    Setup {
        _dir: dir,
        node,
        keys,
        genesis: g.hash().unwrap(),
    }
}

fn consent(s: &Setup, i: usize, at: u64, n: u8) -> Transaction {
    let (id, key) = &s.keys[i];
    Transaction::sign(
        &s.genesis,
        id.clone(),
        key,
        wall(at),
        TxBody::Consent {
            subject: Pseudonym(Hash([n; 32])),
            choice: ConsentChoice::OptOut,
        },
    )
    .unwrap()
}

fn events(node: &mut CoordinatorNode) -> Vec<NodeEvent> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

fn transmits(node: &mut CoordinatorNode) -> Vec<(MemberId, ToAgent)> {
    std::iter::from_fn(|| node.poll_transmit()).collect()
}

/// A consent submitted before a round falls due is ordered first: the round's consent height
/// includes it, whatever the batching window.
#[test]
fn a_transaction_pooled_before_a_round_is_due_is_ordered_before_it_starts() {
    let mut s = setup(3);
    for (id, _) in &s.keys[1..] {
        assert!(s.node.connected(id));
    }
    // The round is due at 1,000 ms; the consent arrives at 900 ms (its window ends at 1,400).
    let tx = consent(&s, 1, 900, 1);
    let id = tx.id().unwrap();
    let h1 = s.keys[1].0.clone();
    assert!(
        s.node
            .handle(900, wall(900), &h1, ToCoordinator::SubmitTx(Box::new(tx)))
    );
    assert_eq!(s.node.poll_timeout(), Some(1_000));
    s.node.tick(1_000, wall(1_000));
    let evs = events(&mut s.node);
    let appended = evs
        .iter()
        .position(|e| {
            matches!(
                e,
                NodeEvent::Appended {
                    transactions: 1,
                    ..
                }
            )
        })
        .expect("the consent was ordered");
    let started = evs
        .iter()
        .position(|e| matches!(e, NodeEvent::RoundStarted { .. }))
        .expect("the round started");
    assert!(appended < started, "{evs:?}");
    let height = s.node.ledger().state().height();
    assert!(s.node.ledger().state().contains_tx(&id));
    // Every connected member gets the block before the round, whose consent height covers it.
    let out = transmits(&mut s.node);
    for (m, _) in &s.keys[1..] {
        let mine: Vec<&ToAgent> = out
            .iter()
            .filter(|(to, _)| to == m)
            .map(|(_, x)| x)
            .collect();
        assert!(matches!(mine[0], ToAgent::Block(_)), "{m}: {:?}", mine[0]);
        let start = mine
            .iter()
            .find_map(|x| match x {
                ToAgent::RoundStart(c) => Some(c),
                _ => None,
            })
            .expect("a round start");
        assert!(start.consent_height >= height, "{}", start.consent_height);
    }
}

/// Attack: members keep the pool full so that transactions are always waiting. Rounds start
/// at their pace anyway; the pool is ordered once when a round falls due.
#[test]
fn members_keeping_the_pool_full_cannot_hold_rounds_off() {
    let mut s = setup(6);
    for (id, _) in &s.keys[1..] {
        assert!(s.node.connected(id));
    }
    // Five members with 16 transactions each: more than one block (64) takes.
    let mut n = 0u8;
    for i in 1..=5 {
        for _ in 0..16 {
            let tx = consent(&s, i, 500, n);
            n = n.wrapping_add(1);
            let from = s.keys[i].0.clone();
            assert!(
                s.node
                    .handle(500, wall(500), &from, ToCoordinator::SubmitTx(Box::new(tx)))
            );
        }
    }
    assert_eq!(s.node.pooled(), 80);
    let mut now = 500;
    let mut started = false;
    while now <= 1_000 {
        let t = s.node.poll_timeout().expect("something is due");
        now = t.max(now);
        s.node.tick(now, wall(now));
        started |= events(&mut s.node)
            .iter()
            .any(|e| matches!(e, NodeEvent::RoundStarted { .. }));
        // They refill the pool as soon as it drains.
        for i in 1..=5 {
            let from = s.keys[i].0.clone();
            let tx = consent(&s, i, now, n);
            n = n.wrapping_add(1);
            s.node
                .handle(now, wall(now), &from, ToCoordinator::SubmitTx(Box::new(tx)));
        }
        if started {
            break;
        }
    }
    assert!(started, "the round never started (clock at {now} ms)");
    assert!(now <= 1_000, "the round started late, at {now} ms");
}

/// A revoked member is cut off: it drops out of the connected set, may not reconnect, its
/// messages are refused, and nothing queued for it before its revocation reaches it; a
/// stranger is refused from the start.
#[test]
fn a_revoked_member_and_a_stranger_are_refused() {
    let mut s = setup(3);
    let h2 = s.keys[2].0.clone();
    for (id, _) in &s.keys[1..] {
        assert!(s.node.connected(id));
    }
    let stranger = MemberId::new("stranger").unwrap();
    assert!(!s.node.connected(&stranger));
    assert!(
        !s.node
            .handle(0, wall(0), &stranger, ToCoordinator::Hello { height: 0 })
    );
    // A round starts; its messages to h2 are queued, not yet sent.
    s.node.tick(1_000, wall(1_000));
    assert!(
        events(&mut s.node)
            .iter()
            .any(|e| matches!(e, NodeEvent::RoundStarted { .. }))
    );
    // h2 revokes itself through the pool; the block is ordered at the end of the window.
    let (k2, key2) = &s.keys[2];
    let leave = Transaction::sign(
        &s.genesis,
        k2.clone(),
        key2,
        wall(1_010),
        TxBody::RevokeMember {
            member: h2.clone(),
            reason: "leaving the consortium".into(),
        },
    )
    .unwrap();
    assert!(s.node.handle(
        1_010,
        wall(1_010),
        &h2,
        ToCoordinator::SubmitTx(Box::new(leave))
    ));
    let due = s.node.poll_timeout().unwrap();
    s.node.tick(due, wall(due));
    let evs = events(&mut s.node);
    assert!(
        evs.iter().any(
            |e| matches!(e, NodeEvent::MembersChanged { removed } if removed == &vec![h2.clone()])
        ),
        "{evs:?}"
    );
    // Of what was queued for h2, only the block that revokes it reaches it: its evidence.
    let out = transmits(&mut s.node);
    let to_h2: Vec<&ToAgent> = out
        .iter()
        .filter(|(to, _)| to == &h2)
        .map(|(_, m)| m)
        .collect();
    let kinds: Vec<&str> = to_h2.iter().map(|m| m.kind()).collect();
    assert_eq!(kinds, ["block"], "a revoked member was sent {kinds:?}");
    if let ToAgent::Block(b) = to_h2[0] {
        assert_eq!(b.header.header.height, s.node.ledger().state().height());
    }
    assert!(!s.node.connected_members().contains(&h2));
    assert!(!s.node.connected(&h2));
    assert!(
        !s.node
            .handle(due, wall(due), &h2, ToCoordinator::Hello { height: 0 })
    );
    // Its notice names the revocation, signed by the coordinator.
    let notices = s.node.refusal_notices();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].0, s.keys[2].1.verifying_key());
}

/// A member behind by more than a batch gets the chain in spaced batches, every block once,
/// and a second `Hello` while it is in flight starts nothing new.
#[test]
fn catch_up_streams_missing_blocks_in_batches() {
    let mut s = setup(2);
    let h1 = s.keys[1].0.clone();
    // 40 blocks of the hospital's own consent transactions.
    for n in 0..40u8 {
        let tx = consent(&s, 1, u64::from(n), n);
        s.node
            .append_admin(u64::from(n), wall(u64::from(n)), tx)
            .unwrap();
    }
    assert!(s.node.connected(&h1));
    assert!(
        s.node
            .handle(100, wall(100), &h1, ToCoordinator::Hello { height: 0 })
    );
    assert!(
        s.node
            .handle(101, wall(101), &h1, ToCoordinator::Hello { height: 0 })
    );
    let first: Vec<u64> = transmits(&mut s.node)
        .into_iter()
        .filter_map(|(_, m)| match m {
            ToAgent::Block(b) => Some(b.header.header.height),
            _ => None,
        })
        .collect();
    assert_eq!(first, (1..=32).collect::<Vec<_>>());
    let due = s.node.poll_timeout().expect("the next batch is due later");
    assert!(due > 101);
    s.node.tick(due, wall(due));
    let rest: Vec<u64> = transmits(&mut s.node)
        .into_iter()
        .filter_map(|(_, m)| match m {
            ToAgent::Block(b) => Some(b.header.header.height),
            _ => None,
        })
        .collect();
    assert_eq!(rest, (33..=40).collect::<Vec<_>>());
}
