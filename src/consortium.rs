//! A whole consortium in one process: the coordinator's node ([`CoordinatorNode`], the very
//! runtime `medfl coordinator` drives over libp2p) and every hospital's [`Hospital`] (the one
//! `medfl client` drives), wired through in-memory queues instead of libp2p, with the
//! coordinator's ledger on disk and each hospital's own copy in memory. Members' transactions,
//! catch-up after a missed block, round pacing and anchoring all run here as in a deployment.
//!
//! Everything runs on a virtual clock that advances only when nothing else can happen (to the
//! node's next deadline), and every random choice (keys, dropouts, DP noise, training)
//! flows from one seed, so a run is bit-reproducible: `medfl replay` re-runs it and compares
//! each round's model hash with the one the ledger anchors.
//!
//! Consent is applied as a hospital's daemon applies it: hospitals submit opt-outs to the
//! coordinator, which orders them ([`Consortium::record_consent`]), and each training task names the hospital's
//! opted-out pseudonyms; their events are removed from the hospital's log before features are
//! computed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::model_store::ModelStore;
use ed25519_dalek::SigningKey;
use medfl_accesslog::AccessEvent;
use medfl_accesslog::consent::{self, PseudonymKey};
use medfl_client::spend::{PrivacyBudget as DpBudget, PrivacySpend};
use medfl_client::{Agent, AgentEvent, Hospital, HospitalEvent, TrainingTask};
use medfl_coordinator::{CoordinatorConfig, RoundMetrics};
use medfl_ledger::tx::{ConsentChoice, DataUseAgreement, Pseudonym};
use medfl_ledger::{
    AggregationFloors, Genesis, Hash, Ledger, Member, MemberId, PrivacyBudget, Role, SharedCopies,
    Timestamp, Transaction, TxBody, TxId,
};
use medfl_memo::SignatureCache;
use medfl_model::EmployeeRows;
use medfl_model::local::Trained;
use medfl_protocol::{GlobalModel, ToCoordinator};
use medfl_secagg::SharedSessions;

use crate::node::mempool::MAX_PENDING_PER_MEMBER;
use crate::node::{CoordinatorNode, NodeEvent, Pacing};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The founding time of every simulated consortium (2026-01-01T00:00:00Z).
pub const EPOCH: Timestamp = Timestamp(1_767_225_600_000);

/// One simulated hospital's training rows (on the features' public scale) and their employees.
#[derive(Clone, Debug)]
pub struct SimHospital {
    /// Its member id.
    pub id: MemberId,
    /// Row-major training matrix, used while none of the hospital's patients has opted out.
    pub train: Vec<f32>,
    /// The employee of each row of `train` (dense indices): the unit of its DP-SGD.
    pub employees: Vec<u64>,
    /// The access log `train` was computed from, kept so that opt-outs can be applied to it.
    /// Without it, a round in which one of the hospital's patients has opted out fails rather
    /// than train on that patient's records.
    pub log: Option<SimLog>,
}

/// A hospital's whole access log (time order) and the training window inside it: events
/// before the window only warm up the feature history.
#[derive(Clone, Debug)]
pub struct SimLog {
    /// Every event, in time order.
    pub events: Vec<AccessEvent>,
    /// Times (ms) of the events whose rows are training rows.
    pub window: Range<u64>,
}

/// What a hospital trained on in its last round.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingSummary {
    /// The round.
    pub round: u64,
    /// The consent height the round applied.
    pub consent_height: u64,
    /// Training rows.
    pub rows: usize,
    /// Pseudonyms of the patients with rows in the set, when it was built from the log.
    pub patients: Option<BTreeSet<Pseudonym>>,
}

/// A hospital's current training rows and the opt-out set they were built without.
struct Rows {
    opted_out: BTreeSet<Pseudonym>,
    data: Vec<f32>,
    employees: Vec<u64>,
    patients: Option<BTreeSet<Pseudonym>>,
}

/// How the consortium runs.
#[derive(Clone, Debug)]
pub struct SimSettings {
    /// The coordinator's round parameters.
    pub coordinator: CoordinatorConfig,
    /// When rounds start (on the simulator's virtual clock: waiting costs nothing).
    pub pacing: Pacing,
    /// Probability that a selected hospital goes silent somewhere in a round.
    pub dropout: f64,
    /// Every random choice derives from it, but the initial model's.
    pub seed: u64,
    /// Seed of the initial model's weights (the coordinator's `[rounds] init_seed`).
    pub init_seed: u64,
    /// Each hospital's epsilon budget under the agreement.
    pub budget_epsilon: f64,
    /// The agreement's delta.
    pub budget_delta: f64,
    /// The agreement's floors under the aggregation parameters.
    pub floors: AggregationFloors,
    /// Endorsements an anchor needs (`None`: half the hospitals, at least one).
    pub quorum: Option<u32>,
    /// A hospital-level budget every simulated hospital holds itself to, if any.
    pub hospital: Option<medfl_protocol::privacy::HospitalLevel>,
    /// Whether the hospitals, all in this one process, hold equal ledger states, plans and
    /// graphs once and check each signature once (see `medfl_memo`). Every hospital validates
    /// everything either way; off, each also pays for it alone, as a deployed agent does,
    /// which is what a measure of one hospital's cost needs.
    pub share_between_hospitals: bool,
}

impl SimSettings {
    /// A consortium running `rounds` (the one configuration a deployed coordinator reads), its
    /// agreement granting each hospital `budget_epsilon` at the rounds' delta; no dropouts.
    pub fn new(rounds: &crate::settings::RoundSettings, seed: u64, budget_epsilon: f64) -> Self {
        SimSettings {
            coordinator: rounds.coordinator_config(),
            pacing: rounds.pacing(),
            dropout: 0.0,
            seed,
            init_seed: rounds.init_seed,
            budget_epsilon,
            budget_delta: rounds.training.delta,
            floors: AggregationFloors::default(),
            quorum: None,
            hospital: None,
            share_between_hospitals: true,
        }
    }
}

/// The time split of one round, in seconds of this machine's time.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RoundTimes {
    /// Local DP-SGD training, summed over hospitals.
    pub training: f64,
    /// Secure aggregation and update encoding in the agents, summed over hospitals.
    pub agents: f64,
    /// The coordinator's state machine (SecAgg+ server, decoding, strategy, signatures).
    pub coordinator: f64,
    /// Appending the anchor block to the ledger (durable write included).
    pub ledger: f64,
    /// Wall time of the whole round.
    pub total: f64,
}

/// What one round did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RoundReport {
    /// The coordinator's figures.
    pub metrics: RoundMetrics,
    /// The anchored model's hash, if the round anchored.
    pub model: Option<Hash>,
    /// Why the round failed, if it did.
    pub failure: Option<String>,
    /// Where the time went.
    pub times: RoundTimes,
    /// Bytes the coordinator sent and received (bincode, as the network would carry them).
    pub bytes_out: u64,
    /// See `bytes_out`.
    pub bytes_in: u64,
    /// Attempts made (a failed attempt is followed by another, up to [`MAX_SIM_ATTEMPTS`]).
    pub attempts: u64,
    /// Failed attempts, messages a party refused and updates not submitted, with why (an
    /// honest run under dropouts has some: a silent hospital's late messages, a round that
    /// moved on).
    pub refusals: Vec<String>,
}

/// Most attempts the simulator makes of one round.
pub const MAX_SIM_ATTEMPTS: u64 = 3;

/// What a round's attempts add up to.
#[derive(Default)]
struct Attempts {
    count: u64,
    times: RoundTimes,
    bytes_in: u64,
    bytes_out: u64,
    refusals: Vec<String>,
    /// The outcome of the attempt that just ended: figures, model, failure.
    ended: Option<(RoundMetrics, Option<Hash>, Option<String>)>,
    /// Members' transactions the coordinator refused, with why.
    tx_refused: Vec<(TxId, String)>,
    /// The running attempt's stage and when it began (wall clock), and the stages so far.
    stage: (Option<&'static str>, Option<Instant>),
    stage_wall: Vec<(String, u64)>,
    attempt_started: Option<Instant>,
    /// An attempt of this round started (for the progress line).
    started: Option<u64>,
    /// Why the round cannot go on.
    fatal: Option<String>,
}

struct SimAgent {
    /// The agent with the hospital's own in-memory ledger copy, as `medfl client` runs it.
    hospital: Hospital,
    key: SigningKey,
    pseudonyms: PseudonymKey,
    log: Option<SimLog>,
    rows: Rows,
    inputs: usize,
    last: Option<TrainingSummary>,
    /// Messages this agent may still send this round (`None`: no limit). At zero the host
    /// hangs: it neither sends nor receives until the round is over.
    budget: Option<usize>,
    /// Disconnected since a failed attempt of this round: not offered to the next one.
    gone: bool,
}

/// The running consortium: the coordinator's node and every hospital, on in-memory queues.
pub struct Consortium {
    node: CoordinatorNode,
    agents: Vec<SimAgent>,
    /// Each hospital's position in `agents`.
    index: BTreeMap<MemberId, usize>,
    /// Messages from hospitals (by position), in the order they were sent.
    to_coordinator: VecDeque<(usize, ToCoordinator)>,
    /// Training tasks waiting to run (hospitals train in parallel: they run together once
    /// nothing else can happen).
    training: Vec<(usize, Box<TrainingTask>)>,
    clock_ms: u64,
    rng: ChaCha20Rng,
    dropout: f64,
}

/// Signatures the simulated hospitals remember having checked: a round brings a few per
/// hospital (consistency signatures, endorsements, share commitments), so this holds several
/// rounds of 10,000 hospitals in about 10 MiB.
const SIGNATURE_CACHE_CAPACITY: usize = 1 << 18;

fn seed_bytes(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// The deterministic genesis and keys of a simulated consortium.
pub fn genesis(
    hospitals: &[MemberId],
    settings: &SimSettings,
) -> Result<(Genesis, Vec<(MemberId, SigningKey)>)> {
    let mut rng = ChaCha20Rng::seed_from_u64(settings.seed);
    let mut keys = Vec::new();
    let mut members = Vec::new();
    let coordinator = MemberId::new("coordinator").map_err(anyhow::Error::msg)?;
    for (id, role) in std::iter::once((coordinator, Role::Coordinator))
        .chain(hospitals.iter().map(|h| (h.clone(), Role::Hospital)))
    {
        let key = SigningKey::generate(&mut rng);
        members.push(Member {
            id: id.clone(),
            role,
            public_key: key.verifying_key().into(),
            address: String::new(),
        });
        keys.push((id, key));
    }
    let quorum = settings
        .quorum
        .unwrap_or((hospitals.len() / 2).max(1) as u32);
    let genesis = Genesis {
        name: "simulated consortium".into(),
        created_at: EPOCH,
        quorum,
        members,
        agreements: vec![DataUseAgreement {
            id: settings.coordinator.agreement.clone(),
            purpose: "simulation: learn a model of abnormal access to health records".into(),
            members: hospitals.to_vec(),
            expires_at: Timestamp(EPOCH.0 + 10 * 365 * 86_400_000),
            budget: PrivacyBudget {
                epsilon: settings.budget_epsilon,
                delta: settings.budget_delta,
            },
            floors: settings.floors,
            strategy: settings.coordinator.strategy,
        }],
    };
    Ok((genesis, keys))
}

impl Consortium {
    /// Creates the ledger in `dir/ledger` and the parties; models go to `dir/models`.
    pub fn create(dir: &Path, hospitals: Vec<SimHospital>, settings: &SimSettings) -> Result<Self> {
        let ids: Vec<MemberId> = hospitals.iter().map(|h| h.id.clone()).collect();
        let (genesis, keys) = genesis(&ids, settings)?;
        let ledger =
            Ledger::create(&dir.join("ledger"), &genesis).context("creating the ledger")?;
        let models = ModelStore::open(&dir.join("models"))?;
        let mut rng = ChaCha20Rng::seed_from_u64(settings.seed ^ 0x6d65_6466_6c00);
        let cfg = &settings.coordinator;
        let (coordinator_id, coordinator_key) = keys[0].clone();
        let genesis_hash = ledger.state().genesis_hash();
        let mut node = CoordinatorNode::open(
            coordinator_id,
            coordinator_key,
            cfg.clone(),
            settings.init_seed,
            settings.pacing,
            ledger,
            models,
            seed_bytes(&mut rng),
            0,
        )?;
        let mut agents = Vec::new();
        let mut index = BTreeMap::new();
        // Every hospital validates everything for itself, but the same bytes get the same
        // answer: the first to check a signature pays for the curve arithmetic, and equal
        // ledger states and blocks are held once.
        let signatures = SignatureCache::new(SIGNATURE_CACHE_CAPACITY);
        let copies = SharedCopies::new(signatures.clone());
        let sessions = SharedSessions::new(signatures);
        for (h, (id, key)) in hospitals.into_iter().zip(keys.into_iter().skip(1)) {
            debug_assert_eq!(h.id, id);
            let pseudonyms = crate::data::pseudonym_key(&key, &id)?;
            if !node.connected(&id) {
                bail!("{id} is not an active member of the simulated consortium");
            }
            index.insert(id.clone(), agents.len());
            let mut agent = Agent::new(
                id,
                key.clone(),
                genesis_hash,
                // Each simulated hospital holds itself to the agreement's budget, in memory.
                hospital_spend(settings, cfg.training.delta)?,
                seed_bytes(&mut rng),
            );
            let copy = if settings.share_between_hospitals {
                agent.share_sessions(Arc::clone(&sessions));
                Ledger::in_memory_shared(&genesis, &copies)
            } else {
                Ledger::in_memory(&genesis)
            }
            .context("a hospital's ledger copy")?;
            agents.push(SimAgent {
                hospital: Hospital::new(agent, copy),
                key,
                pseudonyms,
                log: h.log,
                rows: Rows {
                    opted_out: BTreeSet::new(),
                    data: h.train,
                    employees: h.employees,
                    patients: None,
                },
                inputs: cfg.model.inputs,
                last: None,
                budget: None,
                gone: false,
            });
        }
        // No round starts until `run_round` asks for one.
        node.set_target(Some(0));
        Ok(Consortium {
            node,
            agents,
            index,
            to_coordinator: VecDeque::new(),
            training: Vec::new(),
            clock_ms: 0,
            rng,
            dropout: settings.dropout,
        })
    }

    /// The coordinator's ledger.
    pub fn ledger(&self) -> &Ledger {
        self.node.ledger()
    }

    /// The current global model.
    pub fn model(&self) -> &GlobalModel {
        self.node.coordinator().model()
    }

    /// The model each hospital holds for its access monitor.
    pub fn agent_models(&self) -> Vec<(MemberId, Option<Hash>)> {
        self.agents
            .iter()
            .map(|a| {
                (
                    a.hospital.agent().member().clone(),
                    a.hospital.agent().model().map(|m| m.hash),
                )
            })
            .collect()
    }

    /// What each hospital trained on in its last round (`None`: it has not trained yet).
    pub fn training_summaries(&self) -> Vec<(MemberId, Option<TrainingSummary>)> {
        self.agents
            .iter()
            .map(|a| (a.hospital.agent().member().clone(), a.last.clone()))
            .collect()
    }

    /// The ledger pseudonym `hospital` records for its patient id `patient`.
    pub fn pseudonym(&self, hospital: &MemberId, patient: &str) -> Option<Pseudonym> {
        let i = *self.index.get(hospital)?;
        Some(crate::data::pseudonym(&self.agents[i].pseudonyms, patient))
    }

    /// `hospital` records `choice` for each of its patients `patients` on the ledger, as its
    /// daemon does: it signs one transaction per patient and submits them to the coordinator,
    /// at most a pool's worth at a time, each batch waiting until its block is on the
    /// hospital's own copy. Returns the height of the last block.
    pub fn record_consent(
        &mut self,
        hospital: &MemberId,
        patients: &[&str],
        choice: ConsentChoice,
    ) -> Result<u64> {
        self.clock_ms += 1_000;
        let wall = self.wall();
        let i = *self
            .index
            .get(hospital)
            .with_context(|| format!("{hospital} is not a simulated hospital"))?;
        let genesis = self.ledger().state().genesis_hash();
        let a = &self.agents[i];
        let txs = patients
            .iter()
            .map(|p| {
                Transaction::sign(
                    &genesis,
                    hospital.clone(),
                    &a.key,
                    wall,
                    TxBody::Consent {
                        subject: crate::data::pseudonym(&a.pseudonyms, p),
                        choice,
                    },
                )
                .context("signing a consent transaction")
            })
            .collect::<Result<Vec<_>>>()?;
        let mut acc = Attempts::default();
        for batch in txs.chunks(MAX_PENDING_PER_MEMBER) {
            let ids: Vec<TxId> = batch
                .iter()
                .map(Transaction::id)
                .collect::<Result<_, _>>()?;
            for tx in batch {
                self.to_coordinator
                    .push_back((i, ToCoordinator::SubmitTx(Box::new(tx.clone()))));
            }
            loop {
                self.deliver(&mut acc)?;
                if let Some((id, reason)) = acc.tx_refused.first() {
                    bail!("the coordinator refused consent transaction {id}: {reason}");
                }
                let copy = self.agents[i].hospital.ledger().state();
                if ids.iter().all(|id| copy.contains_tx(id)) {
                    break;
                }
                self.advance("consent transactions were never ordered")?;
            }
        }
        Ok(self.agents[i].hospital.ledger().state().height())
    }

    fn wall(&self) -> Timestamp {
        Timestamp(EPOCH.0 + 1000 + self.clock_ms)
    }

    /// Moves the clock to the node's next deadline and lets it act.
    fn advance(&mut self, stalled: &str) -> Result<()> {
        let Some(t) = self.node.poll_timeout() else {
            bail!("{stalled}: nothing in flight and no deadline");
        };
        self.clock_ms = self.clock_ms.max(t);
        let wall = self.wall();
        self.node.tick(self.clock_ms, wall);
        Ok(())
    }

    /// Runs one round to its end (anchored or failed), with scripted dropouts.
    ///
    /// Like the daemon, the coordinator starts another attempt when one fails (a member that
    /// advertised keys and then went silent aborts secure aggregation before any masked
    /// input, by design: going on would let a server choose the graph). A hospital that went
    /// silent is disconnected for the rest of the round, as a lost connection would be; at
    /// most [`MAX_SIM_ATTEMPTS`] attempts are made. When the round is over, every hospital is
    /// back and catches up on the blocks it missed, through the coordinator's catch-up.
    pub fn run_round(&mut self, mut progress: impl FnMut(&str)) -> Result<RoundReport> {
        let started = Instant::now();
        let mut acc = Attempts::default();
        // Each hospital goes silent with probability `dropout`, after a random number of its
        // round messages: 0 before its key advert, 1 after it (before revealing its nonce), up
        // to 3 (after its masked input).
        let dropout = self.dropout;
        for a in &mut self.agents {
            a.budget = self
                .rng
                .random_bool(dropout)
                .then(|| self.rng.random_range(0..4usize));
        }
        self.node
            .set_target(Some(self.node.rounds_anchored().saturating_add(1)));
        let (metrics, model, failure) = loop {
            let moved = self.deliver(&mut acc)?;
            if let Some(why) = acc.fatal.take() {
                bail!("the round could not start: {why}");
            }
            if let Some(round) = acc.started.take() {
                progress(&format!("round {round}: started"));
            }
            if let Some(ended) = acc.ended.take() {
                if ended.1.is_some() || acc.count >= MAX_SIM_ATTEMPTS {
                    break ended;
                }
                if let Some(reason) = &ended.2 {
                    acc.refusals
                        .push(format!("attempt {} failed: {reason}", acc.count));
                }
                // Those that went silent are gone for the rest of the round.
                for i in 0..self.agents.len() {
                    if self.agents[i].budget.is_some() && !self.agents[i].gone {
                        self.agents[i].budget = Some(0);
                        self.agents[i].gone = true;
                        let id = self.agents[i].hospital.agent().member().clone();
                        let wall = self.wall();
                        self.node.disconnected(self.clock_ms, wall, &id);
                    }
                }
                self.training.clear();
                continue;
            }
            if moved {
                continue;
            }
            if !self.training.is_empty() {
                let round = self.node.rounds_anchored() + 1;
                progress(&format!(
                    "round {round}: training {} hospitals",
                    self.training.len()
                ));
                self.train(&mut acc)?;
                progress(&format!("round {round}: secure aggregation"));
                continue;
            }
            let t = Instant::now();
            self.advance("the round stalled")?;
            acc.times.coordinator += t.elapsed().as_secs_f64();
        };
        self.node.set_target(Some(self.node.rounds_anchored()));
        self.training.clear();
        self.recover(&mut acc)?;
        self.check_copies()?;
        let mut metrics = metrics;
        metrics.stage_ms = std::mem::take(&mut acc.stage_wall);
        metrics.duration_ms = acc.attempt_started.map_or(0, wall_ms);
        let mut times = acc.times;
        times.total = started.elapsed().as_secs_f64();
        Ok(RoundReport {
            metrics,
            model,
            failure,
            times,
            bytes_out: acc.bytes_out,
            bytes_in: acc.bytes_in,
            attempts: acc.count,
            refusals: acc.refusals,
        })
    }

    /// Every hospital that hung or left comes back, as a restarted daemon would, and asks for
    /// the blocks it missed; the node's catch-up sends them, batch by batch.
    fn recover(&mut self, acc: &mut Attempts) -> Result<()> {
        let tip = self.ledger().state().height();
        for i in 0..self.agents.len() {
            let a = &mut self.agents[i];
            a.budget = None;
            let id = a.hospital.agent().member().clone();
            if std::mem::take(&mut a.gone) && !self.node.connected(&id) {
                bail!("{id} may no longer connect");
            }
        }
        // A hello refused by the catch-up rate limit is asked again once the limit refills.
        for _ in 0..3 {
            for i in 0..self.agents.len() {
                if self.agents[i].hospital.ledger().state().height() < tip {
                    self.agents[i].hospital.connected();
                    self.drain_agent(i)?;
                }
            }
            loop {
                self.deliver(acc)?;
                if self.node.poll_timeout().is_none() {
                    break;
                }
                self.advance("catch-up stalled")?;
            }
            if self
                .agents
                .iter()
                .all(|a| a.hospital.ledger().state().height() >= tip)
            {
                return Ok(());
            }
            // The catch-up bucket regains a hello in this time.
            self.clock_ms += crate::node::catchup::CatchUpLimits::default().refill_ms;
        }
        Ok(())
    }

    /// Runs the queued training tasks (each hospital's DP-SGD on its own rows) and hands each
    /// update to its agent.
    fn train(&mut self, acc: &mut Attempts) -> Result<()> {
        for (i, task) in std::mem::take(&mut self.training) {
            let t = Instant::now();
            let a = &mut self.agents[i];
            a.apply_consent(&task)?;
            let rows = EmployeeRows::new(&a.rows.data, a.inputs, &a.rows.employees)
                .with_context(|| format!("training rows of {}", a.hospital.agent().member()))?;
            let trained: Trained = crate::local::train(&task, &rows)
                .with_context(|| format!("training at {}", a.hospital.agent().member()))?;
            let rows = a.rows.data.len() / a.inputs.max(1);
            a.last = Some(TrainingSummary {
                round: task.round,
                consent_height: task.consent_height,
                rows,
                patients: a.rows.patients.clone(),
            });
            acc.times.training += t.elapsed().as_secs_f64();
            let t = Instant::now();
            if let Err(e) = a.hospital.submit_update(task.session, &trained.params) {
                acc.refusals.push(format!(
                    "{} did not submit its update: {e}",
                    a.hospital.agent().member()
                ));
            }
            acc.times.agents += t.elapsed().as_secs_f64();
            self.drain_agent(i)?;
        }
        Ok(())
    }

    /// Moves every message in flight, both ways, and acts on the node's events, until nothing
    /// moves; returns whether anything did.
    fn deliver(&mut self, acc: &mut Attempts) -> Result<bool> {
        let mut moved = false;
        loop {
            let mut step = false;
            let now = self.wall();
            while let Some((to, msg)) = self.node.poll_transmit() {
                step = true;
                acc.bytes_out += wire_len(&msg);
                let Some(&i) = self.index.get(&to) else {
                    continue;
                };
                let a = &mut self.agents[i];
                if a.budget == Some(0) {
                    continue; // hung
                }
                let t = Instant::now();
                if let Err(e) = a.hospital.handle(msg, now) {
                    acc.refusals.push(format!(
                        "{} refused a message: {e}",
                        a.hospital.agent().member()
                    ));
                }
                acc.times.agents += t.elapsed().as_secs_f64();
                self.drain_agent(i)?;
            }
            while let Some((i, msg)) = self.to_coordinator.pop_front() {
                step = true;
                acc.bytes_in += wire_len(&msg);
                let from = self.agents[i].hospital.agent().member().clone();
                let t = Instant::now();
                self.node.handle(self.clock_ms, now, &from, msg);
                acc.times.coordinator += t.elapsed().as_secs_f64();
            }
            while let Some(ev) = self.node.poll_event() {
                step = true;
                self.on_node(ev, acc);
            }
            self.note_stage(acc);
            if !step {
                return Ok(moved);
            }
            moved = true;
        }
    }

    fn on_node(&mut self, ev: NodeEvent, acc: &mut Attempts) {
        match ev {
            NodeEvent::RoundStarted { round, .. } => {
                acc.started = Some(round);
                acc.attempt_started = Some(Instant::now());
                acc.stage_wall.clear();
            }
            NodeEvent::Anchored {
                metrics,
                model,
                ledger_ms,
                ..
            } => {
                // The append ran inside the node's call: count it once, as ledger time.
                acc.times.ledger += ledger_ms / 1000.0;
                acc.times.coordinator -= ledger_ms / 1000.0;
                acc.count += 1;
                acc.ended = Some((*metrics, Some(model), None));
            }
            NodeEvent::RoundFailed {
                metrics,
                reason,
                ledger_ms,
            } => {
                acc.times.ledger += ledger_ms / 1000.0;
                acc.times.coordinator -= ledger_ms / 1000.0;
                acc.count += 1;
                acc.ended = Some((*metrics, None, Some(reason)));
            }
            NodeEvent::Refused { member, reason } => acc.refusals.push(format!(
                "the coordinator refused a message of {member}: {reason}"
            )),
            NodeEvent::Misbehaved { member, reason } => {
                acc.refusals.push(format!("{member} misbehaved: {reason}"))
            }
            NodeEvent::TxRefused { id, reason, .. } => acc.tx_refused.push((id, reason)),
            NodeEvent::AppendFailed { reason } => acc
                .refusals
                .push(format!("members' transactions not appended: {reason}")),
            NodeEvent::CatchUpFailed { member, height } => acc.refusals.push(format!(
                "block {height} could not be read for {member}'s catch-up"
            )),
            // Nothing in a simulation changes by waiting: a round that cannot start never will.
            NodeEvent::Waiting {
                eligible,
                needed,
                ineligible,
            } => {
                acc.fatal = Some(format!(
                    "{eligible} eligible hospitals, {needed} needed: {}",
                    medfl_coordinator::describe_ineligible(&ineligible)
                ))
            }
            NodeEvent::CannotStart { reason } | NodeEvent::StorageFailed { reason } => {
                acc.fatal = Some(reason)
            }
            NodeEvent::TxAdmitted { .. }
            | NodeEvent::Appended { .. }
            | NodeEvent::MembersChanged { .. }
            | NodeEvent::CatchUpRefused { .. } => {}
        }
    }

    /// Times the running attempt's stages on the wall clock (the protocol's own clock is
    /// virtual and moves only at deadlines).
    fn note_stage(&mut self, acc: &mut Attempts) {
        let now = self.node.coordinator().stage();
        if now != acc.stage.0 {
            if let (Some(name), Some(t)) = acc.stage {
                acc.stage_wall.push((name.to_owned(), wall_ms(t)));
            }
            acc.stage = (now, Some(Instant::now()));
        }
    }

    /// Moves an agent's outgoing messages and events into the consortium's queues. A block its
    /// own copy refuses is an error: an honest coordinator never sends one.
    fn drain_agent(&mut self, i: usize) -> Result<()> {
        let a = &mut self.agents[i];
        let mut charged = Vec::new();
        while let Some(ev) = a.hospital.poll_event() {
            match ev {
                HospitalEvent::Agent(AgentEvent::Train(task)) if a.budget != Some(0) => {
                    self.training.push((i, task))
                }
                // A simulated hospital's privacy ledger lives in memory: recorded at once.
                HospitalEvent::Agent(AgentEvent::Charge(c)) => charged.push(c.session),
                HospitalEvent::BlockRefused { height, reason } => bail!(
                    "{}'s ledger copy refused block {height}: {reason}",
                    a.hospital.agent().member()
                ),
                HospitalEvent::Equivocation { height, .. } => bail!(
                    "{} holds proof that the coordinator signed two blocks at height {height}",
                    a.hospital.agent().member()
                ),
                _ => {}
            }
        }
        for session in charged {
            // A charge recorded after its attempt ended is refused harmlessly: nothing leaves.
            let _ = a.hospital.charge_recorded(session);
        }
        while let Some(msg) = a.hospital.poll_outgoing() {
            match &mut a.budget {
                Some(0) => {}
                Some(n) => {
                    *n -= 1;
                    self.to_coordinator.push_back((i, msg));
                }
                None => self.to_coordinator.push_back((i, msg)),
            }
        }
        Ok(())
    }

    /// Every hospital's copy must end where the coordinator's does, at the same block.
    fn check_copies(&self) -> Result<()> {
        let (height, tip) = (self.ledger().state().height(), self.ledger().state().tip());
        for a in &self.agents {
            let copy = a.hospital.ledger().state();
            if (copy.height(), copy.tip()) != (height, tip) {
                bail!(
                    "{}'s ledger copy ends at height {} ({}), the coordinator's at {height} ({tip})",
                    a.hospital.agent().member(),
                    copy.height(),
                    copy.tip()
                );
            }
        }
        Ok(())
    }

    /// Each hospital's own ledger copy.
    pub fn hospital_ledgers(&self) -> impl Iterator<Item = (&MemberId, &Ledger)> {
        self.agents
            .iter()
            .map(|a| (a.hospital.agent().member(), a.hospital.ledger()))
    }
}

impl SimAgent {
    /// Makes `rows` the hospital's training rows without the patients the task says opted out:
    /// their events leave the log before features are computed, as in `medfl client`.
    fn apply_consent(&mut self, task: &TrainingTask) -> Result<()> {
        if self.rows.opted_out == task.opted_out {
            return Ok(());
        }
        let Some(log) = &self.log else {
            bail!(
                "{} patients of {} opted out, and the simulator holds only its feature rows: \
                 give the hospital its log (SimHospital::log) so consent can be applied",
                task.opted_out.len(),
                self.hospital.agent().member()
            );
        };
        let out: BTreeSet<consent::Pseudonym> = task.opted_out.iter().map(|p| p.0.0).collect();
        let f = consent::training_features(
            &log.events,
            &self.pseudonyms,
            &out,
            Some(log.window.clone()),
        );
        self.rows = Rows {
            opted_out: task.opted_out.clone(),
            data: f.data,
            employees: f.employees,
            patients: Some(f.patients.into_iter().map(|p| Pseudonym(Hash(p))).collect()),
        };
        Ok(())
    }
}

/// Milliseconds since `t`, for the stage timings of a simulated round.
fn wall_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The bytes a message takes on the wire, counted without encoding it into a buffer.
fn wire_len<T: serde::Serialize>(msg: &T) -> u64 {
    medfl_ledger::codec::encoded_len(msg).map_or(0, |n| n as u64)
}

/// A simulated hospital's own privacy ledger: the agreement's budget, and the run's
/// hospital-level budget if it sets one, in memory.
/// The hospital-level budget is held at the rounds' `delta`, the one it was calibrated at.
fn hospital_spend(settings: &SimSettings, delta: f64) -> Result<PrivacySpend> {
    let spend = PrivacySpend::new(
        DpBudget::new(settings.budget_epsilon, settings.budget_delta)?,
        Vec::new(),
    )?;
    Ok(match settings.hospital {
        Some(level) => spend.with_hospital_budget(medfl_client::spend::HospitalBudget {
            budget: DpBudget::new(level.epsilon, delta)?,
            colluders: level.colluders,
        })?,
        None => spend,
    })
}
