//! `medfl client`: the hospital agent over libp2p.
//!
//! It loads the hospital's access logs (CSV or FHIR AuditEvent NDJSON), turns them into
//! features on their fixed public scale, each row tagged with its employee (the unit of its
//! DP-SGD), keeps its own
//! copy of the ledger (blocks come from the coordinator and are checked in full before they are
//! appended), dials the coordinator and reconnects whenever the connection drops. Training runs
//! on a blocking thread so the connection stays served. Each model the ledger anchors becomes
//! `models/current.model`: the global network with an alert threshold set on its own traffic, ready for the access monitor (`medfl eval --model`).
//!
//! Consent: each training task names the hospital's opted-out patients (by consent pseudonym,
//! as of the round's consent height); their events are removed before features are computed,
//! and the features are recomputed on what is left. Pseudonyms are keyed with a key
//! derived from the hospital's own signing key (`medfl_accesslog::consent`).
//!
//! It also sends the hospital's own signed transactions (`medfl ledger submit` drops them in
//! `outbox/`) and watches its ledger copy for them: one neither in a block nor refused by a
//! contract within the deadline is logged as censored, recorded in `status.json`, and sent again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medfl_accesslog::OnError;
use medfl_accesslog::consent::PseudonymKey;
use medfl_client::spend::{HospitalBudget, PrivacyBudget};
use medfl_client::{Agent, AgentEvent, Hospital, HospitalEvent, TrainingTask};
use medfl_ledger::tx::Pseudonym;
use medfl_ledger::{Role, Timestamp, Transaction, TxBody, TxId, codec};
use medfl_model::Autoencoder;
use medfl_model::local::Trained;
use medfl_model::modelfile::ModelFile;
use medfl_model::policy::{AlertPolicy, MAX_POLICY_SHARE};
use medfl_model::standardize::Standardizer;
use medfl_model::train::{alert_threshold, training_device};
use medfl_net::{NetConfig, NetEvent, NetHandle, PeerId};
use medfl_protocol::{Envelope, GlobalModel, ToAgent, ToCoordinator};
use rand::Rng;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::submit::{self, MAX_TX_BYTES, Refusal, SubmissionStatus, Submissions};
use super::{Member, privacy, wall_now, write_atomic};
use crate::data::{self, Source, TrainingSet};
use crate::model_store::ModelStore;

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The events file (overrides the config's `[data]`).
    pub data: Option<PathBuf>,
    /// Exit once the model of this round is adopted.
    pub until_round: Option<u64>,
    /// Skip malformed rows (each reported) instead of refusing the file, as `eval` does.
    pub skip_bad_rows: bool,
    /// How long a submitted transaction may stay out of every block before it is reported as
    /// censored and sent again (default [`DEFAULT_SUBMIT_DEADLINE`]).
    pub submit_deadline: Option<Duration>,
    /// Whether a key derived from a public seed is accepted.
    pub insecure_keys: super::InsecureKeys,
}

/// The default time for a submitted transaction to reach a block: many blocks' worth, since
/// the coordinator orders members' transactions every half second.
pub const DEFAULT_SUBMIT_DEADLINE: Duration = Duration::from_secs(60);

/// How often the outbox is scanned and deadlines are checked.
const OUTBOX_INTERVAL: Duration = Duration::from_millis(500);

/// `status.json`: what an operator or a monitor reads to see the agent's state.
#[derive(Serialize)]
struct Status<'a> {
    member: &'a str,
    connected: bool,
    height: u64,
    #[serde(flatten)]
    submissions: SubmissionStatus,
}

struct Daemon {
    member: Member,
    /// The agent with this hospital's own ledger copy (blocks checked before they are appended).
    hospital: Hospital,
    /// The hospital's privacy ledger: each charge is committed here before its update leaves.
    privacy_store: privacy::PrivacyStore,
    net: NetHandle<Envelope>,
    coordinator: PeerId,
    connected: bool,
    source: Arc<Source>,
    pseudonyms: Arc<PseudonymKey>,
    /// The rows of the last consent set trained under (the monitor's threshold uses them too).
    current: Arc<TrainingSet>,
    target_fpr: f64,
    trained_tx: mpsc::Sender<TrainedMsg>,
    /// Transactions sent and not yet seen in a block.
    submissions: Submissions,
    /// The driver's clock for deadlines.
    started: Instant,
    /// How long to wait before the next dial: doubled on every connection that ends without
    /// the coordinator saying anything of substance, back to the minimum once it does.
    backoff: Duration,
    /// The longest wait between dials (longer once the coordinator refused us).
    max_backoff: Duration,
    /// The last refusal logged, so that a repeated one is not logged again.
    refusal_said: Option<String>,
    /// An audit-batch anchor was ordered: the outbox is scanned again at once for the next.
    scan_now: bool,
    /// The outbox's files as last decoded.
    outbox: OutboxCache,
}

/// The first wait before redialing the coordinator.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait while the coordinator is unreachable or closes without a word.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait once the coordinator refused this member (it may be admitted later).
const MAX_BACKOFF_REFUSED: Duration = Duration::from_secs(600);

/// A finished training: the attempt, and the update with the rows it was trained on.
type TrainedMsg = (u64, Result<(Trained, Arc<TrainingSet>), String>);

/// Runs the agent described by `config`.
pub async fn run(config: &Path, opts: Options) -> Result<()> {
    let member = Member::load(config, opts.insecure_keys)?;
    member.expect_role(Role::Hospital)?;
    let settings = member.config.data.clone();
    let events = match (&opts.data, &settings) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => member.dir.join(&s.events),
        (None, None) => bail!("no data: give --data or a [data] table in the config"),
    };
    let target_fpr = settings.as_ref().map_or(0.02, |s| s.target_fpr);
    // One rule with `train` and `eval`: a malformed row refuses the file unless told to skip.
    let on_error = if opts.skip_bad_rows {
        OnError::Skip
    } else {
        OnError::Reject
    };
    let source = data::load_source(&events, None, on_error)
        .with_context(|| format!("loading {}", events.display()))?;
    let ledger = member.open_ledger()?;
    let pseudonyms = data::pseudonym_key(&member.key, &member.config.member)?;
    let opted_out = ledger.state().opted_out(&member.config.member);
    let current = data::training_set(&source, &pseudonyms, &opted_out)
        .with_context(|| format!("training rows of {}", events.display()))?;
    if current.n_rows() < 10 {
        bail!(
            "{} holds {} usable rows; training needs more",
            events.display(),
            current.n_rows()
        );
    }
    let n_rows = current.n_rows() as u64;
    info!(rows = n_rows, employees = current.n_employees(), opted_out = opted_out.len(), removed_events = current.removed_events, file = %events.display(), "training data loaded");

    let genesis_hash = ledger.state().genesis_hash();
    let (coordinator_peer, address) = member.coordinator()?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let budget = privacy::own_budget(
        settings.as_ref().and_then(|s| s.privacy_budget),
        &member.genesis,
        &member.config.member,
    )?;
    let (privacy_store, mut spend) = privacy::load(&member.dir.join("privacy.redb"), budget)?;
    if let Some((epsilon, delta, colluders)) = settings.as_ref().and_then(|s| s.hospital_budget) {
        let level = HospitalBudget {
            budget: PrivacyBudget::new(epsilon, delta).context("[data] hospital_budget")?,
            colluders,
        };
        spend = spend
            .with_hospital_budget(level)
            .context("the privacy ledger's history at the hospital level")?;
        info!(
            epsilon_spent = ?spend.hospital_spent().ok().flatten(),
            budget = epsilon,
            delta,
            colluders,
            "the hospital's own hospital-level budget"
        );
    }
    info!(
        epsilon_spent = spend.spent().unwrap_or(f64::INFINITY),
        budget = budget.epsilon(),
        delta = budget.delta(),
        charges = spend.charges().len(),
        "the hospital's own privacy ledger"
    );
    let agent = Agent::new(
        member.config.member.clone(),
        member.key.clone(),
        genesis_hash,
        spend,
        seed,
    );
    let (net, mut net_events) = medfl_net::spawn::<Envelope>(
        &member.key,
        NetConfig::default(),
        [coordinator_peer].into_iter().collect(),
    )
    .await
    .context("starting the network")?;
    std::fs::create_dir_all(member.dir.join("models"))?;
    let (trained_tx, mut trained_rx) = mpsc::channel(4);
    let mut d = Daemon {
        member,
        hospital: Hospital::new(agent, ledger),
        privacy_store,
        net,
        coordinator: coordinator_peer,
        connected: false,
        source: Arc::new(source),
        pseudonyms: Arc::new(pseudonyms),
        current: Arc::new(current),
        target_fpr,
        trained_tx,
        submissions: Submissions::new(
            opts.submit_deadline
                .unwrap_or(DEFAULT_SUBMIT_DEADLINE)
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
        ),
        started: Instant::now(),
        backoff: MIN_BACKOFF,
        max_backoff: MAX_BACKOFF,
        refusal_said: None,
        scan_now: false,
        outbox: OutboxCache::default(),
    };
    std::fs::create_dir_all(d.member.dir.join("outbox"))?;
    d.write_status();
    let mut next_outbox = tokio::time::Instant::now();
    let mut next_dial = tokio::time::Instant::now();
    loop {
        if !d.connected && tokio::time::Instant::now() >= next_dial {
            // A dial that connects proves nothing (a refused peer connects, then is closed):
            // the wait goes back to its minimum only once the coordinator talks to us.
            if let Err(e) = d.net.dial(address.clone()).await {
                warn!(error = %e, wait_s = d.backoff.as_secs_f64(), "cannot reach the coordinator; retrying");
            }
            next_dial = tokio::time::Instant::now() + d.backoff;
            d.backoff = (d.backoff * 2).min(d.max_backoff);
        }
        if d.scan_now || tokio::time::Instant::now() >= next_outbox {
            d.scan_now = false;
            d.scan_outbox().await;
            d.check_deadlines().await;
            d.write_status();
            next_outbox = tokio::time::Instant::now() + OUTBOX_INTERVAL;
        }
        tokio::select! {
            ev = net_events.recv() => match ev {
                Some(ev) => d.on_net(ev).await?,
                None => bail!("the network stopped"),
            },
            _ = tokio::time::sleep_until(next_outbox) => {}
            Some((session, result)) = trained_rx.recv() => match result {
                Ok((t, set)) => {
                    info!(session, local_loss = t.loss, steps = t.report.steps, epsilon = t.report.accounting.epsilon, employees_sampled = t.report.sampled_employees, rows = set.n_rows(), "local training done (the loss stays here)");
                    d.current = set;
                    if let Err(e) = d.hospital.submit_update(session, &t.params) {
                        warn!(error = %e, "update not submitted");
                    }
                }
                Err(e) => warn!(session, error = %e, "local training failed"),
            },
            _ = tokio::time::sleep_until(next_dial), if !d.connected => {}
        }
        if d.process(opts.until_round)? {
            break;
        }
        d.flush().await;
    }
    d.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.net.shutdown().await;
    Ok(())
}

impl Daemon {
    async fn on_net(&mut self, ev: NetEvent<Envelope>) -> Result<()> {
        match ev {
            NetEvent::Connected(p) if p == self.coordinator => {
                info!("connected to the coordinator");
                self.connected = true;
                self.hospital.connected();
                // Whatever was sent before may have been lost with the connection.
                for tx in self.submissions.outstanding() {
                    self.submit(tx).await;
                }
            }
            NetEvent::Disconnected(p) if p == self.coordinator => {
                warn!("disconnected from the coordinator");
                self.connected = false;
            }
            NetEvent::Message {
                from,
                msg: Envelope::ToAgent(msg),
            } if from == self.coordinator => {
                if !matches!(msg, ToAgent::Refused { .. }) {
                    // The coordinator talks to us: a later disconnect starts the waits afresh.
                    self.backoff = MIN_BACKOFF;
                    self.max_backoff = MAX_BACKOFF;
                    self.refusal_said = None;
                }
                if let ToAgent::TxRefused { id, reason } = &msg {
                    self.on_refused(id, reason);
                    return Ok(());
                }
                if let ToAgent::RoundStart(c) = &msg {
                    info!(round = c.round, session = c.session, "round started");
                }
                if let Err(e) = self.hospital.handle(msg, wall_now()) {
                    warn!(error = %e, "message refused");
                }
            }
            NetEvent::Message { from, .. } => {
                warn!(peer = %from, "unexpected message; closing");
                let _ = self.net.disconnect(from).await;
            }
            NetEvent::Misbehaved { peer, reason } => {
                warn!(%peer, %reason, "misbehaving peer disconnected")
            }
            NetEvent::SendFailed { reason, .. } => {
                warn!(%reason, "delivery to the coordinator failed")
            }
            NetEvent::Refused { peer } => warn!(%peer, "refused a peer"),
            NetEvent::Connected(_) | NetEvent::Disconnected(_) | NetEvent::Listening(_) => {}
        }
        Ok(())
    }

    async fn flush(&mut self) {
        while let Some(msg) = self.hospital.poll_outgoing() {
            if let Err(e) = self
                .net
                .send(self.coordinator, &Envelope::ToCoordinator(msg))
                .await
            {
                warn!(error = %e, "send failed");
            }
        }
    }

    /// Acts on the agent's events; returns whether to stop.
    fn process(&mut self, until_round: Option<u64>) -> Result<bool> {
        let mut stop = false;
        while let Some(ev) = self.hospital.poll_event() {
            let ev = match ev {
                HospitalEvent::Agent(ev) => ev,
                HospitalEvent::Appended(r) => {
                    for id in &r.tx_ids {
                        self.on_included(id, r.height);
                    }
                    let me = &self.member.config.member;
                    if let Some(v) = self
                        .hospital
                        .ledger()
                        .state()
                        .member(me)
                        .and_then(|m| m.revocation.as_ref())
                    {
                        bail!(
                            "this member is revoked on the ledger (block {}): revoked by {} at {}: {}; this client stops",
                            r.height,
                            v.by,
                            v.at,
                            v.reason
                        );
                    }
                    continue;
                }
                HospitalEvent::Behind { height, ours } => {
                    warn!(
                        height,
                        ours, "block out of order; asking for the missing ones"
                    );
                    continue;
                }
                HospitalEvent::BlockRefused { height, reason } => {
                    warn!(height, error = %reason, "block refused by the local ledger");
                    continue;
                }
                HospitalEvent::Equivocation {
                    height,
                    ours,
                    theirs,
                } => {
                    // Both headers carry the coordinator's signature: keep them as evidence.
                    let path = self.member.dir.join(format!("equivocation-{height}.bin"));
                    let saved = codec::encode(&(ours.header, theirs.header))
                        .map_err(anyhow::Error::from)
                        .and_then(|b| write_atomic(&path, &b));
                    tracing::error!(height, evidence = %path.display(), saved = saved.is_ok(), "the coordinator signed two different blocks at one height; the local ledger keeps its own");
                    continue;
                }
            };
            match ev {
                AgentEvent::Train(mut task) => {
                    info!(session = task.session, "local training started");
                    // Our own opt-outs apply before the coordinator orders them.
                    task.opted_out.extend(self.own_opt_outs());
                    self.train(*task)
                }
                AgentEvent::Charge(charge) => {
                    // Durable first; only then may the masked input leave.
                    match self.privacy_store.append(&charge) {
                        Ok(()) => {
                            info!(
                                round = charge.round,
                                session = charge.session,
                                epsilon_spent = self
                                    .hospital
                                    .agent()
                                    .privacy_spend()
                                    .spent()
                                    .unwrap_or(f64::INFINITY),
                                "update charged to the hospital's privacy ledger"
                            );
                            if let Err(e) = self.hospital.charge_recorded(charge.session) {
                                warn!(error = %e, "the charged update was not sent");
                            }
                        }
                        Err(e) => {
                            warn!(error = %format!("{e:#}"), "cannot record the privacy charge; the update is not sent")
                        }
                    }
                }
                // Blocks are applied by `Hospital` and arrive as `HospitalEvent`s.
                AgentEvent::Block(_) => {}
                AgentEvent::Endorsed { round, model } => info!(round, %model, "endorsed"),
                AgentEvent::ModelAdopted { round, model } => {
                    self.adopt(&model)?;
                    info!(round, model = %model.hash, "model adopted for the access monitor");
                    if until_round.is_some_and(|r| round >= r) {
                        stop = true;
                    }
                }
                AgentEvent::RoundEnded { session, reason } => {
                    info!(session, %reason, "round ended")
                }
                AgentEvent::Refused {
                    notice,
                    checked,
                    revoked_me,
                } => {
                    let reason = &notice.refusal.reason;
                    if revoked_me {
                        bail!(
                            "this member is revoked on its own ledger copy: {reason}; this client stops"
                        );
                    }
                    // A claim the copy does not (yet) record: kept as evidence, not obeyed.
                    let path = self.member.dir.join("refusal.bin");
                    let _ = codec::encode(&*notice)
                        .map_err(anyhow::Error::from)
                        .and_then(|b| write_atomic(&path, &b));
                    self.max_backoff = MAX_BACKOFF_REFUSED;
                    let said = match &checked {
                        Ok(()) => format!(
                            "{reason} (signed by {}; not on our ledger copy, which ends at block {}; kept in {})",
                            notice.signer,
                            self.hospital.ledger().state().height(),
                            path.display()
                        ),
                        Err(e) => format!("{reason} (not believed: {e})"),
                    };
                    if self.refusal_said.as_deref() != Some(said.as_str()) {
                        warn!(refusal = %said, wait_max_s = MAX_BACKOFF_REFUSED.as_secs(), "the coordinator refuses this member; retrying with a growing wait");
                        self.refusal_said = Some(said);
                    }
                }
            }
        }
        Ok(stop)
    }

    /// Sends one of our transactions to the coordinator.
    async fn submit(&mut self, tx: Transaction) {
        let msg = Envelope::ToCoordinator(ToCoordinator::SubmitTx(Box::new(tx)));
        if let Err(e) = self.net.send(self.coordinator, &msg).await {
            warn!(error = %e, "cannot send a transaction");
        }
    }

    /// Picks up transactions `medfl ledger submit` left in `outbox/` and sends the new ones.
    /// A file stays `*.tx` until a block carries it (`*.included`) or a contract refuses it
    /// (`*.refused`, or `*.overtaken` for a batch anchor a later one of ours overtook); one
    /// that is not ours or not a transaction becomes `*.rejected`. Batch anchors go one at a
    /// time ([`Submissions::may_send`]).
    async fn scan_outbox(&mut self) {
        if !self.connected {
            return;
        }
        // Reading the outbox lists and stats every file: skip it while nothing more may be
        // sent.
        if !self.submissions.has_room() {
            return;
        }
        let mut anchors_waiting = 0;
        for (path, tx) in self.read_outbox() {
            if !self.submissions.has_room() {
                break;
            }
            let tx = match tx {
                Ok(tx) if tx.signer == self.member.config.member => tx,
                Ok(tx) => {
                    reject(
                        &path,
                        &format!("signed by {}, not by this member", tx.signer),
                    );
                    continue;
                }
                Err(e) => {
                    reject(&path, &format!("{e:#}"));
                    continue;
                }
            };
            let Ok(id) = tx.id() else {
                reject(&path, "the transaction cannot be encoded");
                continue;
            };
            if self.submissions.contains(&id) {
                continue;
            }
            if self.hospital.ledger().state().contains_tx(&id) {
                let _ = std::fs::rename(&path, path.with_extension("included"));
                continue;
            }
            if !self.submissions.may_send(&tx) {
                anchors_waiting += 1; // a batch anchor waits for the one before it
                continue;
            }
            info!(tx = %id, kind = tx.body.kind(), "submitting a transaction");
            let now = self.now_ms();
            self.submissions.sent(id, tx.clone(), path, now);
            self.submit(tx).await;
        }
        self.submissions.anchors_waiting(anchors_waiting);
    }

    /// Every transaction file in the outbox, in [`read_outbox`]'s order; only files new or
    /// changed since the last scan are decoded ([`OutboxCache`]).
    fn read_outbox(&mut self) -> Vec<(PathBuf, Result<Transaction>)> {
        self.outbox.read(&self.member.dir.join("outbox"))
    }

    /// Patients this hospital opted out in a transaction no block carries yet, in flight or
    /// still waiting in the outbox: applied before the coordinator orders them.
    fn own_opt_outs(&mut self) -> BTreeSet<Pseudonym> {
        let files = self.read_outbox();
        let me = &self.member.config.member;
        let waiting: Vec<Transaction> = files
            .into_iter()
            .filter_map(|(_, tx)| tx.ok())
            .filter(|tx| {
                &tx.signer == me
                    && !self
                        .hospital
                        .ledger()
                        .state()
                        .contains_tx(&tx.id().unwrap_or_default())
            })
            .chain(self.submissions.outstanding())
            .collect();
        submit::opt_outs(&waiting)
    }

    /// Reports and re-sends transactions past their deadline.
    async fn check_deadlines(&mut self) {
        let now = self.now_ms();
        for (id, tx, missed) in self.submissions.overdue(now) {
            warn!(
                tx = %id,
                kind = tx.body.kind(),
                missed_deadlines = missed,
                "transaction censored: the coordinator has not ordered it within the deadline; sending it again"
            );
            if self.connected {
                self.submit(tx).await;
            }
        }
    }

    /// A block carried `id`.
    fn on_included(&mut self, id: &TxId, height: u64) {
        if let Some(s) = self.submissions.included(id) {
            info!(tx = %id, height, "transaction ordered into a block");
            self.scan_now |= matches!(s.tx.body, TxBody::AnchorAuditLog(_));
            let _ = std::fs::rename(&s.path, s.path.with_extension("included"));
            self.write_status();
        }
    }

    /// The coordinator refused `id`. The hospital believes it only if its own ledger copy's
    /// contracts refuse it too; otherwise the transaction stays pending and is reported as not
    /// ordered (`submit::Refusal::Disputed`).
    fn on_refused(&mut self, id: &TxId, claimed: &str) {
        let state = self.hospital.ledger().state();
        // One dated a little after this clock (it stepped back, or the coordinator's runs
        // behind) is checked at its own time: a refusal for its time alone is not believed,
        // one by any other rule is. Dated further ahead, it is our clock that is wrong.
        let now = wall_now();
        let local = |tx: &Transaction| {
            if tx.issued_at.0.saturating_sub(now.0) > submit::MAX_OWN_CLOCK_AHEAD_MS {
                warn!(tx = %id, issued_at = %tx.issued_at, now = %now, "our own transaction is dated well after this clock: it waits until the clocks reach its date");
            }
            state.check_tx(tx, submit::checked_at(tx, now))
        };
        match self.submissions.refused(id, claimed, local) {
            None => return,
            Some(Refusal::Confirmed(s, reason)) => {
                warn!(tx = %id, reason = %reason, "transaction refused by the contracts");
                let _ = std::fs::write(s.path.with_extension("refused"), &reason);
                let _ = std::fs::remove_file(&s.path);
            }
            Some(Refusal::Overtaken(s, reason)) => {
                warn!(
                    tx = %id,
                    reason = %reason,
                    "transaction censored: a later audit anchor of ours was ordered before this batch's, which can never be anchored now"
                );
                // Kept whole (`*.overtaken`): the evidence outlives the status list, and the
                // monitor's look for lost anchors counts it as held, never queueing it again.
                let _ = std::fs::write(s.path.with_extension("overtaken-reason"), &reason);
                let _ = std::fs::rename(&s.path, s.path.with_extension("overtaken"));
            }
            Some(Refusal::Disputed) => {
                let claimed: String = claimed.chars().take(256).collect();
                warn!(
                    tx = %id,
                    claimed = %claimed,
                    "the coordinator refused a transaction our own contract check accepts; it stays pending and is sent again at its deadline"
                );
            }
        }
        self.write_status();
    }

    /// Writes `status.json` (atomically: a reader never sees half of it).
    fn write_status(&self) {
        let status = Status {
            member: self.member.config.member.as_str(),
            connected: self.connected,
            height: self.hospital.ledger().state().height(),
            submissions: self.submissions.status(),
        };
        let path = self.member.dir.join("status.json");
        let written = serde_json::to_vec_pretty(&status)
            .map_err(anyhow::Error::from)
            .and_then(|b| write_atomic(&path, &b));
        if let Err(e) = written {
            warn!(error = %e, "cannot write status.json");
        }
    }

    fn now_ms(&self) -> u64 {
        self.started
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    fn train(&self, task: TrainingTask) {
        let current = Arc::clone(&self.current);
        let source = Arc::clone(&self.source);
        let pseudonyms = Arc::clone(&self.pseudonyms);
        let tx = self.trained_tx.clone();
        info!(
            round = task.round,
            steps = task.dp.steps,
            consent_height = task.consent_height,
            opted_out = task.opted_out.len(),
            "training locally with DP-SGD"
        );
        // What this round releases, stated once per round in the log a privacy officer reads.
        match medfl_protocol::privacy::statement(
            &task.training,
            task.global.file.config,
            1,
            medfl_protocol::privacy::NoiseSource::OsSecret,
        ) {
            Ok(s) => info!(
                round = task.round,
                epsilon_spent_before = self.hospital.agent().privacy_spent(),
                "this round alone: {s}"
            ),
            Err(e) => warn!(error = %e, "no privacy statement"),
        }
        tokio::task::spawn_blocking(move || {
            let result: Result<(Trained, Arc<TrainingSet>), String> = (|| {
                // Rows are rebuilt only when the round's opt-out set differs from the last one.
                let set = if current.opted_out == task.opted_out {
                    current
                } else {
                    Arc::new(
                        data::training_set(&source, &pseudonyms, &task.opted_out)
                            .map_err(|e| format!("{e:#}"))?,
                    )
                };
                let rows = set.by_employee().map_err(|e| format!("{e:#}"))?;
                let trained = crate::local::train(&task, &rows).map_err(|e| e.to_string())?;
                Ok((trained, set))
            })();
            let _ = tx.blocking_send((task.session, result));
        });
    }

    /// Writes the global model and the hospital's monitor model (the global network with the
    /// hospital's own alert threshold, which stays in the hospital).
    fn adopt(&self, model: &GlobalModel) -> Result<()> {
        let dir = self.member.dir.join("models");
        ModelStore::open(&dir)?.put(model)?;
        let cfg = model.file.config;
        let device = training_device();
        let net = Autoencoder::new(cfg, 0, &device)?.load_flat(cfg, &model.file.params)?;
        let threshold = match monitor_threshold(
            &net,
            &self.current.rows,
            cfg.inputs,
            self.target_fpr,
        ) {
            Ok((t, None)) => t,
            Ok((t, Some(share))) => {
                warn!(
                    share = format!("{:.2}%", 100.0 * share),
                    "the role policy alone alerts on more than a quarter of the false-positive target; the model keeps three quarters of it, and the monitor alerts on more than the target"
                );
                t
            }
            Err(e) => {
                warn!(error = %e, "no alert threshold on this hospital's own traffic; the access monitor keeps its previous model");
                return Ok(());
            }
        };
        let monitor = ModelFile {
            config: cfg,
            standardizer: Standardizer::identity(cfg.inputs),
            threshold,
            params: model.file.params.clone(),
        };
        monitor.save(&dir.join("current.model"))?;
        write_atomic(
            &dir.join("current.global"),
            model.hash.to_string().as_bytes(),
        )?;
        Ok(())
    }
}

/// The monitor's alert threshold on the hospital's own access-feature `rows` (recent traffic,
/// unlabelled) for a `target_fpr` share of alerts, the role policy's counted inside it (the
/// monitor alerts on both); with the policy's share of the rows when it is past the quarter of
/// the target it may take, where the cap binds and the monitor alerts on more than the target.
fn monitor_threshold(
    net: &Autoencoder,
    rows: &[f32],
    inputs: usize,
    target_fpr: f64,
) -> Result<(f32, Option<f64>), medfl_model::ModelError> {
    let policy = AlertPolicy::RoleNeeds;
    let device = training_device();
    let threshold = alert_threshold(net, rows, inputs, target_fpr, policy, &device)?;
    let share = policy.share(rows, inputs);
    Ok((
        threshold,
        (share > MAX_POLICY_SHARE * target_fpr).then_some(share),
    ))
}

/// Every transaction file in `outbox`, the readable ones oldest issued first (consent
/// choices must reach the orderer in the order they were made), then the unreadable.
pub fn read_outbox(outbox: &Path) -> Vec<(PathBuf, Result<Transaction>)> {
    let Ok(entries) = std::fs::read_dir(outbox) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Result<Transaction>)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tx"))
        .map(|p| {
            let tx = read_tx(&p);
            (p, tx)
        })
        .collect();
    sort_outbox(&mut files);
    files
}

/// Orders outbox files as [`read_outbox`] promises. Audit batches that end together go in
/// the order they start: the contracts refuse a batch that starts before the last anchored
/// one ends.
fn sort_outbox(files: &mut [(PathBuf, Result<Transaction>)]) {
    files.sort_by_key(|(p, tx)| match tx {
        Ok(t) => {
            let starts = match &t.body {
                TxBody::AnchorAuditLog(a) => a.first_event_at,
                _ => Timestamp(0),
            };
            (t.issued_at, starts, p.clone())
        }
        Err(_) => (Timestamp(u64::MAX), Timestamp(u64::MAX), p.clone()),
    });
}

/// The outbox's files as last decoded, each by its path and the file's identity (size,
/// modification time, inode): a scan decodes only what is new or changed. A coordinator
/// sitting on one batch anchor leaves the later ones waiting, and a week of them must not be
/// decoded twice a second.
#[derive(Default)]
struct OutboxCache {
    files: std::collections::HashMap<PathBuf, (FileStamp, Transaction)>,
}

/// What tells one version of a file from another: outbox files are written whole and renamed
/// into place, so a new version is a new inode.
type FileStamp = (u64, Option<std::time::SystemTime>, u64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some((m.len(), m.modified().ok(), inode))
}

impl OutboxCache {
    /// Every transaction file in `outbox`, as [`read_outbox`] lists them.
    fn read(&mut self, outbox: &Path) -> Vec<(PathBuf, Result<Transaction>)> {
        let Ok(entries) = std::fs::read_dir(outbox) else {
            self.files.clear();
            return Vec::new();
        };
        let mut files: Vec<(PathBuf, Result<Transaction>)> = Vec::new();
        for path in entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tx"))
        {
            let stamp = file_stamp(&path);
            let tx = match (stamp, self.files.get(&path)) {
                (Some(now), Some((then, tx))) if now == *then => Ok(tx.clone()),
                _ => {
                    let tx = read_tx(&path);
                    match (&tx, stamp) {
                        (Ok(t), Some(now)) => {
                            self.files.insert(path.clone(), (now, t.clone()));
                        }
                        _ => {
                            self.files.remove(&path);
                        }
                    }
                    tx
                }
            };
            files.push((path, tx));
        }
        let listed: BTreeSet<&PathBuf> = files.iter().map(|(p, _)| p).collect();
        self.files.retain(|p, _| listed.contains(p));
        sort_outbox(&mut files);
        files
    }
}

/// Reads one outbox file: a bounded, canonical transaction encoding.
pub(crate) fn read_tx(path: &Path) -> Result<Transaction> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_TX_BYTES as u64 {
        bail!("{size} bytes, over the limit of {MAX_TX_BYTES}");
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(codec::decode::<Transaction>(&bytes)?)
}

/// Sets an unusable outbox file aside with the reason.
fn reject(path: &Path, reason: &str) {
    warn!(file = %path.display(), reason, "outbox file rejected");
    let _ = std::fs::write(path.with_extension("rejected"), reason);
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_ledger::testkit::{Fixture, HOUR, T0};
    use medfl_ledger::tx::ConsentChoice;

    fn consent(f: &Fixture, n: u8, at: u64) -> Transaction {
        f.tx(
            &Fixture::id("hospital-0"),
            Timestamp(T0.0 + at),
            TxBody::Consent {
                subject: Pseudonym(medfl_ledger::Hash([n; 32])),
                choice: ConsentChoice::OptOut,
            },
        )
    }

    /// The cache lists what the outbox holds, in order, decoding only new or replaced files:
    /// a file replaced (renamed into place) is read again, one removed is forgotten, and an
    /// unreadable one is listed as an error each time, never cached.
    #[test]
    fn the_outbox_cache_follows_the_files() {
        let f = Fixture::new(2, 3, 2);
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, tx: &Transaction| {
            crate::model_store::write_atomic(&dir.path().join(name), &codec::encode(tx).unwrap())
                .unwrap()
        };
        let (a, b, c) = (
            consent(&f, 1, 2 * HOUR),
            consent(&f, 2, HOUR),
            consent(&f, 3, 3 * HOUR),
        );
        write("a.tx", &a);
        write("b.tx", &b);
        std::fs::write(dir.path().join("bad.tx"), b"not a transaction").unwrap();
        let mut cache = OutboxCache::default();
        let ids = |files: &[(PathBuf, Result<Transaction>)]| -> Vec<Option<TxId>> {
            files
                .iter()
                .map(|(_, t)| t.as_ref().ok().map(|t| t.id().unwrap()))
                .collect()
        };
        let first = cache.read(dir.path());
        assert_eq!(
            ids(&first),
            ids(&read_outbox(dir.path())),
            "as read_outbox lists them"
        );
        assert_eq!(
            ids(&first),
            [Some(b.id().unwrap()), Some(a.id().unwrap()), None]
        );
        assert_eq!(cache.files.len(), 2, "the unreadable file is not cached");
        write("a.tx", &c);
        std::fs::remove_file(dir.path().join("b.tx")).unwrap();
        let second = cache.read(dir.path());
        assert_eq!(ids(&second), [Some(c.id().unwrap()), None]);
        assert_eq!(cache.files.len(), 1);
    }

    /// The monitor's threshold counts the role policy's alerts inside the target, and past
    /// its quarter of the target the model keeps three quarters, and says so.
    #[test]
    fn the_monitor_threshold_makes_room_for_the_role_policy_up_to_its_cap() {
        use medfl_accesslog::N_FEATURES;
        use medfl_model::AutoencoderConfig;
        let config = AutoencoderConfig::for_inputs(N_FEATURES);
        let device = training_device();
        let net = Autoencoder::new(config, 3, &device).unwrap();
        let rows_flagging = |every: usize| -> Vec<f32> {
            (0..1000usize)
                .flat_map(|i| {
                    (0..N_FEATURES).map(move |j| {
                        if j == 11 {
                            f32::from(u8::from(i % every == 0))
                        } else {
                            ((i * 7919 + j * 104_729) % 10_007) as f32 / 10_007.0
                        }
                    })
                })
                .collect()
        };
        let alerted = |rows: &[f32], t: f32| -> (usize, usize) {
            let scores = medfl_model::train::score(&net, rows, N_FEATURES, &device).unwrap();
            let flagged: Vec<bool> = rows
                .chunks_exact(N_FEATURES)
                .map(|r| AlertPolicy::RoleNeeds.flags(r))
                .collect();
            let by_model = scores
                .iter()
                .zip(&flagged)
                .filter(|(s, f)| !**f && **s > t)
                .count();
            (by_model, flagged.iter().filter(|f| **f).count())
        };
        // 4 rows in 1,000 flagged, under a quarter of a 2% target: 16 more by the model.
        let rows = rows_flagging(250);
        let (t, past_cap) = monitor_threshold(&net, &rows, N_FEATURES, 0.02).unwrap();
        assert_eq!((alerted(&rows, t), past_cap), ((16, 4), None));
        // 10 in 1,000 flagged, past the quarter: the model keeps 15, and the share is said.
        let rows = rows_flagging(100);
        let (t, past_cap) = monitor_threshold(&net, &rows, N_FEATURES, 0.02).unwrap();
        assert_eq!((alerted(&rows, t), past_cap), ((15, 10), Some(0.01)));
    }
}
