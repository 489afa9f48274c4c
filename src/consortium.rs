//! A whole consortium in one process: the coordinator's and every hospital's state machines,
//! wired through in-memory queues instead of libp2p, with the real ledger on disk.
//!
//! Everything runs on a virtual clock that advances only when nothing else can happen (to the
//! coordinator's next deadline), and every random choice (keys, dropouts, DP noise, training)
//! flows from one seed, so a run is bit-reproducible: `medfl replay` re-runs it and compares
//! each round's model hash with the one the ledger anchors.
//!
//! Consent is applied as a hospital's daemon applies it: hospitals record opt-outs on the
//! ledger ([`Consortium::record_consent`]), and each training task names the hospital's
//! opted-out pseudonyms; their events are removed from the hospital's log before features are
//! computed.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::model_store::ModelStore;
use ed25519_dalek::SigningKey;
use medfl_accesslog::AccessEvent;
use medfl_accesslog::consent::{self, PseudonymKey};
use medfl_client::spend::{PrivacyBudget as DpBudget, PrivacySpend};
use medfl_client::{Agent, AgentEvent, Hospital, HospitalEvent, TrainingTask};
use medfl_coordinator::{Coordinator, CoordinatorConfig, CoordinatorEvent, RoundMetrics};
use medfl_ledger::tx::{ConsentChoice, DataUseAgreement, Pseudonym};
use medfl_ledger::{
    AggregationFloors, Genesis, Hash, Ledger, Member, MemberId, PrivacyBudget, Role, Timestamp,
    Transaction, TxBody,
};
use medfl_model::EmployeeRows;
use medfl_model::local::Trained;
use medfl_protocol::{GlobalModel, ToAgent, ToCoordinator};
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
}

impl SimSettings {
    /// A consortium running `rounds` (the one configuration a deployed coordinator reads), its
    /// agreement granting each hospital `budget_epsilon` at the rounds' delta; no dropouts.
    pub fn new(rounds: &crate::settings::RoundSettings, seed: u64, budget_epsilon: f64) -> Self {
        SimSettings {
            coordinator: rounds.coordinator_config(),
            dropout: 0.0,
            seed,
            init_seed: rounds.init_seed,
            budget_epsilon,
            budget_delta: rounds.training.delta,
            floors: AggregationFloors::default(),
            quorum: None,
            hospital: None,
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
    /// Messages this agent may still send this round (`None`: no limit).
    budget: Option<usize>,
    /// Silent since a failed attempt of this round: not offered to the next one.
    gone: bool,
}

/// The running consortium.
pub struct Consortium {
    ledger: Ledger,
    coordinator_id: MemberId,
    coordinator_key: SigningKey,
    coordinator: Coordinator,
    agents: Vec<SimAgent>,
    clock_ms: u64,
    rng: ChaCha20Rng,
    models: ModelStore,
    dropout: f64,
}

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
        let initial = GlobalModel::initial(cfg.model, settings.init_seed)?;
        models.put(&initial)?;
        let (coordinator_id, coordinator_key) = keys[0].clone();
        let genesis_hash = ledger.state().genesis_hash();
        let coordinator = Coordinator::new(
            cfg.clone(),
            coordinator_id.clone(),
            coordinator_key.clone(),
            genesis_hash,
            initial,
            Vec::new(),
            seed_bytes(&mut rng),
        )?;
        let mut agents = Vec::new();
        for (h, (id, key)) in hospitals.into_iter().zip(keys.into_iter().skip(1)) {
            debug_assert_eq!(h.id, id);
            let pseudonyms = crate::data::pseudonym_key(&key, &id)?;
            agents.push(SimAgent {
                hospital: Hospital::new(
                    Agent::new(
                        id,
                        key.clone(),
                        genesis_hash,
                        // Each simulated hospital holds itself to the agreement's budget, in
                        // memory.
                        hospital_spend(settings, cfg.training.delta)?,
                        seed_bytes(&mut rng),
                    ),
                    Ledger::in_memory(&genesis).context("a hospital's ledger copy")?,
                ),
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
        Ok(Consortium {
            ledger,
            coordinator_id,
            coordinator_key,
            coordinator,
            agents,
            clock_ms: 0,
            rng,
            models,
            dropout: settings.dropout,
        })
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The current global model.
    pub fn model(&self) -> &GlobalModel {
        self.coordinator.model()
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
        self.agents
            .iter()
            .find(|a| a.hospital.agent().member() == hospital)
            .map(|a| crate::data::pseudonym(&a.pseudonyms, patient))
    }

    /// `hospital` records `choice` for each of its patients `patients` on the ledger (one
    /// block, signed transactions of the hospital's own); returns the block's height.
    pub fn record_consent(
        &mut self,
        hospital: &MemberId,
        patients: &[&str],
        choice: ConsentChoice,
    ) -> Result<u64> {
        self.clock_ms += 1_000;
        let wall = self.wall();
        let a = self
            .agents
            .iter()
            .find(|a| a.hospital.agent().member() == hospital)
            .with_context(|| format!("{hospital} is not a simulated hospital"))?;
        let genesis = self.ledger.state().genesis_hash();
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
        let receipt = self
            .ledger
            .append(txs, wall, &self.coordinator_id, &self.coordinator_key)
            .context("recording consent")?;
        self.broadcast_block(receipt.height)?;
        Ok(receipt.height)
    }

    fn wall(&self) -> Timestamp {
        Timestamp(EPOCH.0 + 1000 + self.clock_ms)
    }

    /// Runs one round to its end (anchored or failed), with scripted dropouts.
    ///
    /// Like the daemon, it starts another attempt when one fails (a member that advertised keys
    /// and then went silent aborts secure aggregation before any masked input, by design:
    /// going on would let a server choose the graph). A hospital that went silent stays
    /// silent for the rest of the round, as a lost connection would; at most
    /// [`MAX_SIM_ATTEMPTS`] attempts are made.
    pub fn run_round(&mut self, mut progress: impl FnMut(&str)) -> Result<RoundReport> {
        let started = Instant::now();
        let mut acc = Attempts::default();
        self.clock_ms += 60_000;
        // Each hospital goes silent with probability `dropout`, after a random number of its
        // round messages: 0 before its key advert, 1 after it (before revealing its nonce), up
        // to 3 (after its masked input).
        let dropout = self.dropout;
        for a in &mut self.agents {
            a.budget = self
                .rng
                .random_bool(dropout)
                .then(|| self.rng.random_range(0..4usize));
            a.gone = false;
        }
        let (metrics, model, failure) = loop {
            acc.count += 1;
            let (metrics, model, failure) = self.run_attempt(&mut progress, &mut acc)?;
            if model.is_some() || acc.count >= MAX_SIM_ATTEMPTS {
                break (metrics, model, failure);
            }
            if let Some(reason) = failure {
                acc.refusals
                    .push(format!("attempt {} failed: {reason}", acc.count));
            }
            for a in &mut self.agents {
                if a.budget.is_some() {
                    a.budget = Some(0);
                    a.gone = true;
                }
            }
            self.clock_ms += 1_000;
        };
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

    /// One attempt of the current round; its figures accumulate in `acc`.
    fn run_attempt(
        &mut self,
        progress: &mut impl FnMut(&str),
        acc: &mut Attempts,
    ) -> Result<(RoundMetrics, Option<Hash>, Option<String>)> {
        let Attempts {
            times,
            bytes_in,
            bytes_out,
            refusals,
            ..
        } = acc;
        // A hospital silent since a failed attempt is as good as disconnected: not offered.
        let connected: BTreeSet<MemberId> = self
            .agents
            .iter()
            .filter(|a| !a.gone)
            .map(|a| a.hospital.agent().member().clone())
            .collect();
        let t = Instant::now();
        let round = self
            .coordinator
            .start_round(self.clock_ms, self.wall(), self.ledger.state(), &connected)
            .map(|c| c.round);
        times.coordinator += t.elapsed().as_secs_f64();
        let round = match round {
            Ok(r) => r,
            Err(e) => bail!("the round could not start: {e}"),
        };
        progress(&format!("round {round}: started"));
        let mut to_coordinator: VecDeque<(usize, ToCoordinator)> = VecDeque::new();
        let mut training: Vec<(usize, Box<medfl_client::TrainingTask>)> = Vec::new();
        let mut outcome: Option<(RoundMetrics, Option<Hash>, Option<String>)> = None;
        // The protocol runs on the virtual clock, which moves only at deadlines; how long each
        // stage took in this process is timed here, on the wall clock.
        let attempt_started = Instant::now();
        let mut stage = (self.coordinator.stage(), Instant::now());
        let mut stage_wall: Vec<(String, u64)> = Vec::new();
        while outcome.is_none() {
            let mut moved = false;
            let now = self.wall();
            while let Some((to, msg)) = self.coordinator.poll_outgoing() {
                moved = true;
                *bytes_out += wire_len(&msg);
                let Some(i) = self
                    .agents
                    .iter()
                    .position(|a| a.hospital.agent().member() == &to)
                else {
                    continue;
                };
                let a = &mut self.agents[i];
                if a.budget == Some(0) {
                    continue; // gone silent
                }
                let t = Instant::now();
                if let Err(e) = a.hospital.handle(msg, now) {
                    refusals.push(format!(
                        "{} refused a message: {e}",
                        a.hospital.agent().member()
                    ));
                }
                times.agents += t.elapsed().as_secs_f64();
                self.drain_agent(i, &mut to_coordinator, &mut training)?;
            }
            while let Some((i, msg)) = to_coordinator.pop_front() {
                moved = true;
                *bytes_in += wire_len(&msg);
                let from = self.agents[i].hospital.agent().member().clone();
                // Catch-up, as the daemon serves it: the blocks after the member's height.
                if let ToCoordinator::Hello { height } = msg {
                    self.catch_up(i, height)?;
                    continue;
                }
                let t = Instant::now();
                let handled = self.coordinator.handle(
                    self.clock_ms,
                    self.wall(),
                    &from,
                    msg,
                    self.ledger.state(),
                );
                if let Err(e) = handled {
                    refusals.push(format!("the coordinator refused a message of {from}: {e}"));
                }
                times.coordinator += t.elapsed().as_secs_f64();
            }
            if !moved && !training.is_empty() {
                moved = true;
                progress(&format!(
                    "round {round}: training {} hospitals",
                    training.len()
                ));
                for (i, task) in std::mem::take(&mut training) {
                    let t = Instant::now();
                    let a = &mut self.agents[i];
                    a.apply_consent(&task)?;
                    let rows = EmployeeRows::new(&a.rows.data, a.inputs, &a.rows.employees)
                        .with_context(|| {
                            format!("training rows of {}", a.hospital.agent().member())
                        })?;
                    let trained: Trained = crate::local::train(&task, &rows)
                        .with_context(|| format!("training at {}", a.hospital.agent().member()))?;
                    let rows = a.rows.data.len() / a.inputs.max(1);
                    a.last = Some(TrainingSummary {
                        round: task.round,
                        consent_height: task.consent_height,
                        rows,
                        patients: a.rows.patients.clone(),
                    });
                    times.training += t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let a = &mut self.agents[i];
                    if let Err(e) = a.hospital.submit_update(task.session, &trained.params) {
                        refusals.push(format!(
                            "{} did not submit its update: {e}",
                            a.hospital.agent().member()
                        ));
                    }
                    times.agents += t.elapsed().as_secs_f64();
                    self.drain_agent(i, &mut to_coordinator, &mut training)?;
                }
                progress(&format!("round {round}: secure aggregation"));
            }
            while let Some(ev) = self.coordinator.poll_event() {
                match ev {
                    CoordinatorEvent::Anchor(o) => {
                        let t = Instant::now();
                        self.models.put(&o.model)?;
                        let receipt = self.ledger.append(
                            vec![o.tx.clone()],
                            self.wall(),
                            &self.coordinator_id,
                            &self.coordinator_key,
                        );
                        times.ledger += t.elapsed().as_secs_f64();
                        self.coordinator.anchored(receipt.is_ok());
                        let receipt = receipt.context("anchoring the round")?;
                        self.broadcast_block(receipt.height)?;
                        outcome = Some((o.metrics, Some(o.model.hash), None));
                    }
                    CoordinatorEvent::RoundFailed { reason, metrics } => {
                        outcome = Some((*metrics, None, Some(reason)));
                    }
                    CoordinatorEvent::Misbehaved { .. } => {}
                }
            }
            let now_stage = self.coordinator.stage();
            if now_stage != stage.0 || outcome.is_some() {
                if let Some(name) = stage.0 {
                    stage_wall.push((name.to_owned(), wall_ms(stage.1)));
                }
                stage = (now_stage, Instant::now());
            }
            if !moved && outcome.is_none() {
                match self.coordinator.next_deadline() {
                    Some(d) => {
                        self.clock_ms = self.clock_ms.max(d);
                        let t = Instant::now();
                        self.coordinator.tick(self.clock_ms, self.wall());
                        times.coordinator += t.elapsed().as_secs_f64();
                    }
                    None => bail!("the round stalled with no deadline"),
                }
            }
        }
        // Whatever the agents still hold of this attempt is over.
        for a in &mut self.agents {
            while a.hospital.poll_outgoing().is_some() {}
            while a.hospital.poll_event().is_some() {}
        }
        self.check_copies()?;
        let mut outcome = outcome.unwrap_or_default();
        outcome.0.stage_ms = stage_wall;
        outcome.0.duration_ms = wall_ms(attempt_started);
        Ok(outcome)
    }

    /// Moves an agent's outgoing messages and events into the round's queues. A block its
    /// own copy refuses is an error: an honest coordinator never sends one.
    fn drain_agent(
        &mut self,
        i: usize,
        out: &mut VecDeque<(usize, ToCoordinator)>,
        training: &mut Vec<(usize, Box<medfl_client::TrainingTask>)>,
    ) -> Result<()> {
        let a = &mut self.agents[i];
        let mut charged = Vec::new();
        while let Some(ev) = a.hospital.poll_event() {
            match ev {
                HospitalEvent::Agent(AgentEvent::Train(task)) if a.budget != Some(0) => {
                    training.push((i, task))
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
                    out.push_back((i, msg));
                }
                None => out.push_back((i, msg)),
            }
        }
        Ok(())
    }

    /// Sends the block at `height` of the coordinator's ledger to every hospital, as the
    /// daemon broadcasts each block it appends; each checks it against its own copy.
    fn broadcast_block(&mut self, height: u64) -> Result<()> {
        let block = self
            .ledger
            .block(height)?
            .with_context(|| format!("block {height} is not on the coordinator's ledger"))?;
        let now = self.wall();
        let mut unused = (VecDeque::new(), Vec::new());
        for i in 0..self.agents.len() {
            let msg = ToAgent::Block(Box::new(block.clone()));
            // A block is not a round message: no agent refuses one (its copy may).
            let _ = self.agents[i].hospital.handle(msg, now);
            self.drain_agent(i, &mut unused.0, &mut unused.1)?;
        }
        // A catch-up `Hello` a gap provoked is served at once.
        while let Some((i, msg)) = unused.0.pop_front() {
            if let ToCoordinator::Hello { height } = msg {
                self.catch_up(i, height)?;
            }
        }
        Ok(())
    }

    /// Sends hospital `i` every block after `height` (what the daemon's catch-up does, without
    /// its rate limit: the simulator's members cannot flood).
    fn catch_up(&mut self, i: usize, height: u64) -> Result<()> {
        let now = self.wall();
        for h in height + 1..=self.ledger.state().height() {
            let block = self
                .ledger
                .block(h)?
                .with_context(|| format!("block {h} is not on the coordinator's ledger"))?;
            let _ = self.agents[i]
                .hospital
                .handle(ToAgent::Block(Box::new(block)), now);
            let mut unused = (VecDeque::new(), Vec::new());
            self.drain_agent(i, &mut unused.0, &mut unused.1)?;
        }
        Ok(())
    }

    /// Every hospital's copy must end where the coordinator's does, at the same block.
    fn check_copies(&self) -> Result<()> {
        let (height, tip) = (self.ledger.state().height(), self.ledger.state().tip());
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

/// The bytes a message takes on the wire.
/// Milliseconds since `t`, for the stage timings of a simulated round.
fn wall_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn wire_len<T: serde::Serialize>(msg: &T) -> u64 {
    medfl_ledger::codec::encode(msg).map_or(0, |b| b.len() as u64)
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
