//! Randomized runs of the runtime every driver runs: the coordinator's node (its pacing,
//! mempool, catch-up and anchoring, not only the round state machine) and N hospitals, each
//! with its own ledger copy, over a seeded network that delays messages, reorders them
//! across links, resets connections and crashes members for good, while hospitals submit
//! consent transactions of their own. The network is the one the daemons have: a connection
//! (TCP under Noise and Yamux) delivers in order and neither loses nor duplicates a message;
//! a loss is a reset, after which whatever was in flight on that connection is gone, the node
//! is told, and the hospital reconnects and says `Hello`. (`coordinator/tests/chaos.rs`
//! drives the bare state machine over a network that also drops and duplicates single
//! messages.) One seed is one exact schedule; the invariants are checked after every step:
//!
//! - rounds are anchored in order and none twice;
//! - every anchor carries a quorum of distinct endorsers, each one of its participants;
//! - no transaction is on the chain twice;
//! - every hospital's copy is a prefix of the coordinator's chain (no copy refuses a block
//!   or sees a fork) and, once the network calms, catches up to the tip and verifies from
//!   the genesis;
//! - a hospital's model is always one its own copy anchors;
//! - what the ledger says a hospital spent never exceeds what it charged itself;
//! - no honest hospital is ever excluded as a cheater.
//!
//! Training is a deterministic step away from the global model (`cargo test --test
//! node_chaos -- --ignored` runs two thousand seeds).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use medfl::consortium::{EPOCH, SimSettings, genesis};
use medfl::model_store::ModelStore;
use medfl::node::{CoordinatorNode, NodeEvent};
use medfl::settings::RoundSettings;
use medfl_client::spend::{PrivacyBudget, PrivacySpend};
use medfl_client::{Agent, AgentEvent, Hospital, HospitalEvent};
use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{AgreementId, Genesis, Hash, Ledger, MemberId, Timestamp, Transaction, TxBody};
use medfl_protocol::{ToAgent, ToCoordinator};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What the network and the members do wrong.
#[derive(Clone, Copy, Debug)]
struct Faults {
    /// Probability that sending a message breaks its connection (the message is lost with
    /// whatever else is in flight on it).
    reset: f64,
    /// Each message is delayed uniformly up to this; one link delivers in order.
    max_delay_ms: u64,
    /// Probability, per step, that a random hospital crashes for good.
    crash: f64,
    /// Most hospitals that may crash in one run.
    max_crashes: usize,
    /// Probability, per step, that a random hospital submits a consent transaction.
    consent: f64,
}

const CALM: Faults = Faults {
    reset: 0.0,
    max_delay_ms: 0,
    crash: 0.0,
    max_crashes: 0,
    consent: 0.0,
};

const STORMY: Faults = Faults {
    reset: 0.02,
    max_delay_ms: 2_000,
    crash: 0.002,
    max_crashes: 2,
    consent: 0.004,
};

const HOSPITALS: usize = 6;
const STEP_LIMIT: usize = 200_000;
/// How long a reset connection stays down before the hospital reconnects.
const RECONNECT_MS: u64 = 3_000;

/// Something in flight or due.
#[derive(Clone, Debug)]
enum Packet {
    /// To hospital `i`, sent on its connection `epoch`.
    ToAgent(usize, u64, ToAgent),
    /// From hospital `i`, sent on its connection `epoch`.
    ToCoordinator(usize, u64, ToCoordinator),
    /// Hospital `i`'s local training of `session` finished.
    Trained(usize, u64, Vec<f32>),
    /// Hospital `i`'s connection breaks.
    Reset(usize),
    /// Hospital `i` reconnects.
    Reconnect(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Up,
    Down,
    Crashed,
}

struct Member {
    id: MemberId,
    key: SigningKey,
    hospital: Hospital,
    link: Link,
    /// Counts the connection's resets: a packet sent on an older connection is lost.
    epoch: u64,
}

struct World {
    _dir: tempfile::TempDir,
    genesis: Genesis,
    quorum: usize,
    agreement: AgreementId,
    rng: ChaCha20Rng,
    faults: Faults,
    clock_ms: u64,
    node: CoordinatorNode,
    members: Vec<Member>,
    /// In flight, by delivery time then send order.
    queue: BTreeMap<(u64, u64), Packet>,
    sent: u64,
    /// The last delivery time scheduled on each link (hospital, towards the coordinator).
    links: BTreeMap<(usize, bool), u64>,
    crashes: usize,
    anchored: Vec<u64>,
    /// The hash of each block of the coordinator's chain (index `height - 1`).
    chain: Vec<Hash>,
    /// Every transaction id on the chain.
    on_chain: BTreeSet<medfl_ledger::TxId>,
    consents: u8,
    resets: usize,
    failed_attempts: usize,
}

impl World {
    fn new(seed: u64, faults: Faults, rounds: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let agreement = AgreementId::new("dua").unwrap();
        let mut settings = RoundSettings::new(agreement.clone());
        (settings.hidden, settings.latent) = (4, 2);
        settings.min_participants = 3;
        let sim = SimSettings::new(&settings, seed, 1000.0);
        let ids: Vec<MemberId> = (0..HOSPITALS)
            .map(|i| MemberId::new(format!("hospital-{i}")).unwrap())
            .collect();
        let (genesis, keys) = genesis(&ids, &sim).unwrap();
        let mut node = CoordinatorNode::open(
            keys[0].0.clone(),
            keys[0].1.clone(),
            sim.coordinator.clone(),
            sim.init_seed,
            sim.pacing,
            Ledger::in_memory(&genesis).unwrap(),
            ModelStore::open(&dir.path().join("models")).unwrap(),
            [seed as u8; 32],
            0,
        )
        .unwrap();
        node.set_target(Some(rounds));
        let genesis_hash = genesis.hash().unwrap();
        let members = keys
            .into_iter()
            .skip(1)
            .enumerate()
            .map(|(i, (id, key))| {
                let budget = PrivacyBudget::new(1e9, settings.training.delta).unwrap();
                let spend = PrivacySpend::new(budget, Vec::new()).unwrap();
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&seed.to_le_bytes());
                s[8] = i as u8;
                let agent = Agent::new(id.clone(), key.clone(), genesis_hash, spend, s);
                Member {
                    hospital: Hospital::new(agent, Ledger::in_memory(&genesis).unwrap()),
                    id,
                    key,
                    link: Link::Down,
                    epoch: 0,
                }
            })
            .collect();
        let mut w = World {
            _dir: dir,
            quorum: genesis.quorum as usize,
            genesis,
            agreement,
            rng: ChaCha20Rng::seed_from_u64(seed ^ 0x6e0de),
            faults,
            clock_ms: 0,
            node,
            members,
            queue: BTreeMap::new(),
            sent: 0,
            links: BTreeMap::new(),
            crashes: 0,
            anchored: Vec::new(),
            chain: Vec::new(),
            on_chain: BTreeSet::new(),
            consents: 0,
            resets: 0,
            failed_attempts: 0,
        };
        for i in 0..HOSPITALS {
            w.connect(i);
        }
        w
    }

    fn wall(&self) -> Timestamp {
        Timestamp(EPOCH.0 + 1_000 + self.clock_ms)
    }

    fn enqueue(&mut self, delay: u64, p: Packet) {
        self.sent += 1;
        self.queue.insert((self.clock_ms + delay, self.sent), p);
    }

    /// Puts a message on the network: delivered in order on its link after a random delay,
    /// or lost with its connection, which resets.
    fn send(&mut self, p: Packet) {
        let (i, towards_coordinator) = match &p {
            Packet::ToAgent(i, ..) => (*i, false),
            Packet::ToCoordinator(i, ..) => (*i, true),
            _ => unreachable!("not a message"),
        };
        if self.rng.random_bool(self.faults.reset) {
            self.enqueue(0, Packet::Reset(i));
            return;
        }
        let at = self.clock_ms + self.rng.random_range(0..=self.faults.max_delay_ms);
        let last = self.links.entry((i, towards_coordinator)).or_insert(0);
        *last = (*last).max(at);
        let at = *last;
        self.sent += 1;
        self.queue.insert((at, self.sent), p);
    }

    /// Hospital `i`'s connection comes up: the node hears of it, the hospital says `Hello`.
    fn connect(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.link = Link::Up;
        m.epoch += 1;
        assert!(self.node.connected(&m.id), "{} is a member", m.id);
        m.hospital.connected();
        self.pump_hospital(i);
    }

    /// Hospital `i`'s connection goes down (for good if `crash`): what was in flight on it is
    /// lost, and the node stops waiting for it.
    fn disconnect(&mut self, i: usize, crash: bool) {
        let (now, wall) = (self.clock_ms, self.wall());
        self.resets += usize::from(!crash);
        let m = &mut self.members[i];
        m.link = if crash { Link::Crashed } else { Link::Down };
        m.epoch += 1;
        let id = m.id.clone();
        self.node.disconnected(now, wall, &id);
        if !crash {
            self.enqueue(RECONNECT_MS, Packet::Reconnect(i));
        }
        self.pump_node();
    }

    /// Moves a hospital's events and messages on.
    fn pump_hospital(&mut self, i: usize) {
        while let Some(ev) = self.members[i].hospital.poll_event() {
            match ev {
                HospitalEvent::Agent(AgentEvent::Train(task)) => {
                    // A deterministic "training" step, a different one per hospital.
                    let params: Vec<f32> = task
                        .global
                        .file
                        .params
                        .iter()
                        .enumerate()
                        .map(|(k, p)| p + 0.01 * ((k + i) % 3) as f32 - 0.01)
                        .collect();
                    let took = self.rng.random_range(0..=5 * self.faults.max_delay_ms + 10);
                    self.enqueue(took, Packet::Trained(i, task.session, params));
                }
                HospitalEvent::Agent(AgentEvent::Charge(c)) => {
                    let _ = self.members[i].hospital.charge_recorded(c.session);
                }
                // An honest coordinator sends no block a copy refuses and never forks.
                HospitalEvent::BlockRefused { height, reason } => {
                    panic!("{} refused block {height}: {reason}", self.members[i].id)
                }
                HospitalEvent::Equivocation { height, .. } => {
                    panic!("{} saw a fork at height {height}", self.members[i].id)
                }
                _ => {}
            }
        }
        while let Some(m) = self.members[i].hospital.poll_outgoing() {
            let epoch = self.members[i].epoch;
            self.send(Packet::ToCoordinator(i, epoch, m));
        }
    }

    /// Moves the node's messages and events on.
    fn pump_node(&mut self) {
        while let Some((to, msg)) = self.node.poll_transmit() {
            if let Some(i) = self.members.iter().position(|m| m.id == to) {
                let epoch = self.members[i].epoch;
                self.send(Packet::ToAgent(i, epoch, msg));
            }
        }
        while let Some(ev) = self.node.poll_event() {
            match ev {
                NodeEvent::Anchored { metrics, .. } => self.anchored.push(metrics.round),
                NodeEvent::RoundFailed { reason, .. } => {
                    if std::env::var_os("CHAOS_VERBOSE").is_some() {
                        eprintln!("attempt failed at {} ms: {reason}", self.clock_ms);
                    }
                    self.failed_attempts += 1;
                }
                NodeEvent::Misbehaved { member, reason } => {
                    panic!("honest {member} called a cheat: {reason}")
                }
                NodeEvent::AppendFailed { reason } | NodeEvent::StorageFailed { reason } => {
                    panic!("the coordinator's ledger failed: {reason}")
                }
                _ => {}
            }
        }
        self.follow_chain();
    }

    /// Reads the blocks the coordinator appended since the last call and checks each.
    fn follow_chain(&mut self) {
        let ledger = self.node.ledger();
        while (self.chain.len() as u64) < ledger.state().height() {
            let height = self.chain.len() as u64 + 1;
            let block = ledger.block(height).unwrap().unwrap();
            for id in block.tx_ids().unwrap() {
                assert!(
                    self.on_chain.insert(id),
                    "transaction {id} on the chain twice"
                );
            }
            for tx in &block.txs {
                if let TxBody::AnchorRound(a) = &tx.body {
                    check_anchor(a, self.quorum);
                }
            }
            self.chain.push(block.header.hash().unwrap());
        }
    }

    /// Hospital `i` asks the coordinator to record a consent choice of its own.
    fn submit_consent(&mut self, i: usize) {
        self.consents = self.consents.wrapping_add(1);
        let m = &self.members[i];
        let tx = Transaction::sign(
            &self.genesis.hash().unwrap(),
            m.id.clone(),
            &m.key,
            self.wall(),
            TxBody::Consent {
                subject: Pseudonym(Hash([self.consents; 32])),
                choice: ConsentChoice::OptOut,
            },
        )
        .unwrap();
        let epoch = m.epoch;
        self.send(Packet::ToCoordinator(
            i,
            epoch,
            ToCoordinator::SubmitTx(Box::new(tx)),
        ));
    }

    /// Delivers the next packet or lets the node's next deadline pass; false when nothing is
    /// left to happen.
    fn step(&mut self) -> bool {
        let next_packet = self.queue.first_key_value().map(|(&(at, _), _)| at);
        let deadline = self.node.poll_timeout();
        let packet_first = match (next_packet, deadline) {
            (None, None) => return false,
            (Some(at), Some(d)) => at <= d,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if packet_first {
            let Some(((at, _), packet)) = self.queue.pop_first() else {
                return false;
            };
            self.clock_ms = self.clock_ms.max(at);
            self.deliver(packet);
        } else if let Some(d) = deadline {
            self.clock_ms = self.clock_ms.max(d);
            let wall = self.wall();
            self.node.tick(self.clock_ms, wall);
            self.pump_node();
        }
        self.misfortune();
        true
    }

    fn deliver(&mut self, packet: Packet) {
        let wall = self.wall();
        let live = |w: &World, i: usize, epoch: u64| {
            w.members[i].link == Link::Up && w.members[i].epoch == epoch
        };
        match packet {
            Packet::ToAgent(i, epoch, msg) if live(self, i, epoch) => {
                let _ = self.members[i].hospital.handle(msg, wall);
                self.pump_hospital(i);
            }
            Packet::ToCoordinator(i, epoch, msg) if live(self, i, epoch) => {
                let from = self.members[i].id.clone();
                assert!(self.node.handle(self.clock_ms, wall, &from, msg));
                self.pump_node();
            }
            Packet::Trained(i, session, params) if self.members[i].link != Link::Crashed => {
                let _ = self.members[i].hospital.submit_update(session, &params);
                self.pump_hospital(i);
            }
            Packet::Reset(i) if self.members[i].link == Link::Up => self.disconnect(i, false),
            Packet::Reconnect(i) if self.members[i].link == Link::Down => self.connect(i),
            _ => {} // on a connection that is gone, or to a crashed hospital
        }
    }

    /// Crashes and consent submissions, at random.
    fn misfortune(&mut self) {
        let i = self.rng.random_range(0..self.members.len());
        let up = self.members[i].link == Link::Up;
        if self.members[i].link != Link::Crashed
            && self.crashes < self.faults.max_crashes
            && self.rng.random_bool(self.faults.crash)
        {
            self.crashes += 1;
            self.disconnect(i, true);
        } else if up && self.rng.random_bool(self.faults.consent) {
            self.submit_consent(i);
        }
    }

    /// The invariants of the module docs that can change with any step.
    fn check(&self, seed: u64) {
        let state = self.node.ledger().state();
        let expected: Vec<u64> = (1..=self.anchored.len() as u64).collect();
        assert_eq!(
            self.anchored, expected,
            "seed {seed}: rounds anchored out of order or twice"
        );
        assert_eq!(self.chain.len() as u64, state.height());
        for m in &self.members {
            let copy = m.hospital.ledger().state();
            assert!(
                copy.height() <= state.height(),
                "seed {seed}: {} ahead of the chain",
                m.id
            );
            if copy.height() > 0 {
                assert_eq!(
                    copy.tip(),
                    self.chain[copy.height() as usize - 1],
                    "seed {seed}: {}'s copy left the chain",
                    m.id
                );
            }
            if let Some(model) = m.hospital.agent().model() {
                assert!(
                    copy.is_anchored_model(&model.hash),
                    "seed {seed}: {} adopted a model its own copy does not anchor",
                    m.id
                );
            }
            if let Some(a) = state.agreement(&self.agreement)
                && let Some(&on_ledger) = a.spent.get(&m.id)
            {
                let own = m.hospital.agent().privacy_spent();
                assert!(
                    on_ledger <= own + 1e-9,
                    "seed {seed}: {} is anchored at epsilon {on_ledger}, charged itself {own}",
                    m.id
                );
            }
        }
        let excluded = self.node.coordinator().excluded();
        assert!(
            excluded.is_empty(),
            "seed {seed}: honest hospitals excluded: {excluded:?}"
        );
    }

    /// Runs until the node reaches its target or stalls; then the network calms, every
    /// hospital still alive reconnects, and every copy must catch up and verify. Returns the
    /// rounds anchored.
    fn run(&mut self, seed: u64) -> usize {
        let mut steps = 0;
        while !self.node.target_reached() && self.step() {
            self.check(seed);
            steps += 1;
            assert!(steps < STEP_LIMIT, "seed {seed}: no end in sight");
        }
        self.faults = Faults {
            max_delay_ms: self.faults.max_delay_ms,
            ..CALM
        };
        for i in 0..self.members.len() {
            if self.members[i].link == Link::Down {
                self.connect(i);
            }
        }
        // Whatever is still in flight arrives; the node's pending work (catch-up batches, a
        // round in progress) finishes.
        while self.step() {
            self.check(seed);
            steps += 1;
            assert!(steps < STEP_LIMIT, "seed {seed}: no end in sight");
        }
        let tip = self.node.ledger().state().tip();
        for m in self.members.iter().filter(|m| m.link == Link::Up) {
            assert_eq!(
                m.hospital.ledger().state().tip(),
                tip,
                "seed {seed}: {} did not catch up",
                m.id
            );
        }
        self.node.ledger().verify_from(&self.genesis).unwrap();
        for m in &self.members {
            m.hospital.ledger().verify_from(&self.genesis).unwrap();
        }
        self.anchored.len()
    }
}

/// What every anchor must carry: a quorum of distinct endorsers, each a participant.
fn check_anchor(a: &medfl_ledger::tx::RoundAnchor, quorum: usize) {
    let participants: BTreeSet<&MemberId> = a.participants.iter().map(|(m, _)| m).collect();
    let endorsers: BTreeSet<&MemberId> = a.endorsements.iter().map(|e| &e.member).collect();
    assert!(
        endorsers.len() == a.endorsements.len() && endorsers.len() >= quorum,
        "round {} anchored under a quorum of distinct endorsers",
        a.round
    );
    assert!(
        a.endorsements
            .iter()
            .all(|e| participants.contains(&e.member)),
        "round {} endorsed by a non-participant",
        a.round
    );
}

#[test]
fn without_faults_the_node_anchors_every_round_and_every_copy_follows() {
    for seed in 0..3 {
        let mut w = World::new(seed, CALM, 3);
        assert_eq!(w.run(seed), 3, "seed {seed}");
        assert_eq!(w.failed_attempts, 0, "seed {seed}");
    }
}

/// What a storm did, summed over its runs.
#[derive(Debug, Default)]
struct Storm {
    runs: usize,
    anchored: usize,
    failed_attempts: usize,
    resets: usize,
    crashes: usize,
    on_chain: usize,
}

/// Runs `seeds` stormy schedules of 2 rounds; the invariants are checked inside. Most rounds
/// must still anchor, so the run is not vacuous.
fn storm(seeds: std::ops::Range<u64>) -> Storm {
    let mut t = Storm::default();
    for seed in seeds {
        let mut w = World::new(seed, STORMY, 2);
        t.anchored += w.run(seed);
        t.runs += 1;
        t.failed_attempts += w.failed_attempts;
        t.resets += w.resets;
        t.crashes += w.crashes;
        t.on_chain += w.on_chain.len();
    }
    eprintln!("{t:?}");
    assert!(
        4 * t.anchored >= 5 * t.runs,
        "{} rounds anchored over {} runs of 2: the faults stall the protocol",
        t.anchored,
        t.runs
    );
    t
}

#[test]
fn under_delays_resets_and_crashes_the_invariants_hold() {
    let t = storm(0..16);
    // The storm did something: connections broke, attempts failed and were retried, and
    // hospitals' own transactions were ordered among the rounds' anchors.
    assert!(t.resets > t.runs && t.failed_attempts > 0, "{t:?}");
    assert!(t.on_chain > 2 * t.runs, "{t:?}");
}

#[test]
#[ignore = "slow: two thousand schedules"]
fn two_thousand_stormy_schedules() {
    storm(1_000..3_000);
}
