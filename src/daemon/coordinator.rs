//! `medfl coordinator`: runs rounds for the consortium over libp2p and anchors them.
//!
//! On start it opens its ledger, loads the last anchored model from its content-addressed
//! store (or builds the initial one) and runs the next round number the ledger allows: a
//! coordinator killed mid-round starts that round again under a new attempt id, and one killed
//! after anchoring moves on. Nothing is anchored twice because round numbers come from the
//! ledger, and nothing anchored is lost because the model file is written before its anchor.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medfl_coordinator::{
    Coordinator, CoordinatorError, CoordinatorEvent, Ineligible, describe_ineligible,
};
use medfl_ledger::{
    AgreementId, Block, BlockError, Ledger, MemberId, Role, Timestamp, Transaction, codec,
};
use medfl_net::{Multiaddr, NetConfig, NetEvent, NetHandle, PeerId};
use medfl_protocol::{Envelope, GlobalModel, Refusal, RefusalReason, ToAgent, ToCoordinator};
use rand::Rng;
use serde::Serialize;
use tracing::{info, warn};

use super::catchup::{CatchUp, CatchUpLimits, HelloVerdict};
use super::submit::{Mempool, TrialError, admit};
use super::{Member, peer_map, wall_now};
use crate::model_store::{ModelStore, write_atomic};

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Stop once the ledger holds this many rounds (overrides the config).
    pub rounds: Option<u64>,
    /// Whether a key derived from a public seed is accepted.
    pub insecure_keys: super::InsecureKeys,
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct MetricsLine<'a> {
    #[serde(flatten)]
    metrics: &'a medfl_coordinator::RoundMetrics,
    model: Option<String>,
    failure: Option<&'a str>,
    ledger_ms: f64,
    bytes_out: u64,
    bytes_in: u64,
}

struct Daemon {
    /// The bytes of the last `status.json` written.
    status_written: Option<Vec<u8>>,
    min_participants: usize,
    member: Member,
    /// Every model anchored, by hash.
    models: ModelStore,
    agreement: AgreementId,
    ledger: Ledger,
    coordinator: Coordinator,
    net: NetHandle<Envelope>,
    peers: BTreeMap<PeerId, MemberId>,
    connected: BTreeMap<MemberId, PeerId>,
    started: Instant,
    bytes_out: u64,
    bytes_in: u64,
    metrics: std::fs::File,
    /// Members' own transactions waiting for the next block.
    mempool: Mempool,
    /// Who is being sent the chain, and how often they may ask.
    catch_up: CatchUp,
    /// Refused peers already logged (bounded: a stranger with many keys cannot fill the log
    /// or the memory).
    refused_logged: BTreeSet<PeerId>,
}

/// Refused peers logged by name; later ones are counted silently.
const MAX_REFUSED_LOGGED: usize = 1024;

/// Runs the coordinator described by `config` until the target round is anchored.
pub async fn run(config: &Path, opts: Options) -> Result<()> {
    let member = Member::load(config, opts.insecure_keys)?;
    if member.config.role != Role::Coordinator {
        bail!(
            "{} is a {}, not the coordinator",
            member.config.member,
            member.config.role
        );
    }
    let settings = member
        .config
        .rounds
        .clone()
        .context("the config has no [rounds] table")?;
    settings.check().context("the config's [rounds] table")?;
    let target = opts.rounds.unwrap_or(settings.rounds);
    let cfg = settings.coordinator_config();
    let ledger = member.open_ledger()?;
    std::fs::create_dir_all(member.dir.join("inbox"))?;
    let record = ledger
        .state()
        .agreement(&cfg.agreement)
        .with_context(|| format!("agreement {} is not on the ledger", cfg.agreement))?;
    let models = ModelStore::open(&member.dir.join("models"))?;
    let (model, state) = match record.last_model {
        Some(h) => (
            models
                .get(&h, cfg.model)
                .context("the ledger anchors this model")?,
            models.get_state(&h)?,
        ),
        None => {
            let m = GlobalModel::initial(cfg.model, settings.init_seed)?;
            models.put(&m)?;
            (m, Vec::new())
        }
    };
    info!(
        round = record.last_round,
        model = %model.hash,
        height = ledger.state().height(),
        "coordinator resuming from the last anchored round"
    );
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let coordinator = Coordinator::new(
        cfg,
        member.config.member.clone(),
        member.key.clone(),
        ledger.state().genesis_hash(),
        model,
        state,
        seed,
    )?;
    let listen: Multiaddr = member
        .config
        .listen
        .parse()
        .with_context(|| format!("listen address {:?}", member.config.listen))?;
    let peers = peer_map(ledger.state());
    let allowed: BTreeSet<PeerId> = peers.keys().copied().collect();
    let (net, mut events) = medfl_net::spawn::<Envelope>(
        &member.key,
        NetConfig {
            listen: vec![listen],
            ..NetConfig::default()
        },
        allowed,
    )
    .await
    .context("starting the network")?;
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(member.dir.join("metrics.jsonl"))
        .context("opening metrics.jsonl")?;
    let mut d = Daemon {
        min_participants: settings.min_participants.max(2),
        agreement: settings.agreement.clone(),
        member,
        models,
        ledger,
        coordinator,
        net,
        peers,
        connected: BTreeMap::new(),
        started: Instant::now(),
        bytes_out: 0,
        bytes_in: 0,
        metrics,
        mempool: Mempool::default(),
        catch_up: CatchUp::new(CatchUpLimits::default()),
        status_written: None,
        refused_logged: BTreeSet::new(),
    };
    d.set_notices().await;
    let interval = Duration::from_secs_f64(settings.interval_s.max(0.0));
    let mut next_round = Instant::now() + interval;
    let mut next_inbox = Instant::now();
    // What the last "waiting" report said: a report is logged again only when it changes.
    let mut waiting_said: Option<String> = None;
    let gather = Duration::from_secs_f64(settings.gather_s.max(0.0));
    let mut gathering: Option<Instant> = None;
    loop {
        if d.done(target) {
            break;
        }
        if Instant::now() >= next_inbox {
            d.poll_inbox().await;
            d.order_submissions().await;
            d.write_status();
            next_inbox = Instant::now() + Duration::from_millis(500);
        }
        d.pump_catch_up().await;
        if d.coordinator.is_idle()
            && Instant::now() >= next_round
            && d.gathered(&mut gathering, gather)
        {
            let connected: BTreeSet<MemberId> = d.connected.keys().cloned().collect();
            let now_ms = d.now_ms();
            match d
                .coordinator
                .start_round(now_ms, wall_now(), d.ledger.state(), &connected)
            {
                Ok(c) => {
                    info!(
                        round = c.round,
                        session = c.session,
                        participants = c.participants.len(),
                        "round started"
                    );
                    d.bytes_out = 0;
                    d.bytes_in = 0;
                    waiting_said = None;
                    gathering = None;
                }
                Err(CoordinatorError::NotEnoughParticipants {
                    eligible,
                    needed,
                    ineligible,
                }) => {
                    let why = describe_ineligible(&ineligible);
                    if waiting_said.as_deref() != Some(why.as_str()) {
                        info!(eligible, needed, not_eligible = %why, "waiting for eligible hospitals");
                        d.write_waiting(eligible, needed, &ineligible);
                        waiting_said = Some(why);
                    }
                    next_round = Instant::now() + Duration::from_millis(200);
                }
                Err(e) => {
                    warn!(error = %e, "cannot start a round");
                    next_round = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        d.flush().await;
        if d.drain_events().await? {
            next_round = Instant::now() + interval;
        }
        d.flush().await;
        let mut wake = next_inbox.min(next_round);
        if let Some(deadline) = d.coordinator.next_deadline() {
            wake = wake.min(d.started + Duration::from_millis(deadline));
        }
        if let Some(due) = d.catch_up.next_deadline() {
            wake = wake.min(d.started + Duration::from_millis(due));
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => d.on_net(ev).await,
                None => bail!("the network stopped"),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now_ms = d.now_ms();
                d.coordinator.tick(now_ms, wall_now());
            }
        }
    }
    info!(
        height = d.ledger.state().height(),
        "target round anchored; stopping"
    );
    // Give the last block broadcast a moment to leave before the node shuts down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.net.shutdown().await;
    Ok(())
}

impl Daemon {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether to start a round now: every eligible hospital is connected, or `gather` has
    /// passed since enough of them were.
    fn gathered(&self, since: &mut Option<Instant>, gather: Duration) -> bool {
        let chain = self.ledger.state();
        let wall = wall_now();
        let all: BTreeSet<MemberId> = self.peers.values().cloned().collect();
        let connected: BTreeSet<MemberId> = self.connected.keys().cloned().collect();
        let (Ok(everyone), Ok(present)) = (
            self.coordinator.eligible(chain, &all, wall),
            self.coordinator.eligible(chain, &connected, wall),
        ) else {
            return true; // let start_round report the problem
        };
        if present.len() >= everyone.len() {
            return true;
        }
        if present.len() < self.min_participants {
            *since = None;
            return false;
        }
        since.get_or_insert_with(Instant::now).elapsed() >= gather
    }

    fn done(&self, target: u64) -> bool {
        target > 0
            && self
                .ledger
                .state()
                .agreement(&self.agreement)
                .is_some_and(|a| a.last_round >= target)
    }

    async fn send(&mut self, to: &MemberId, msg: ToAgent) {
        let Some(peer) = self.connected.get(to).copied() else {
            return; // not connected: to the protocol, a dropout
        };
        let env = Envelope::ToAgent(msg);
        self.bytes_out += medfl_net::codec::encode(&env).map_or(0, |b| b.len() as u64);
        if let Err(e) = self.net.send(peer, &env).await {
            warn!(member = %to, error = %e, "send failed");
        }
    }

    async fn flush(&mut self) {
        while let Some((to, msg)) = self.coordinator.poll_outgoing() {
            self.send(&to, msg).await;
        }
    }

    async fn broadcast_block(&mut self, block: &Block) {
        let members: Vec<MemberId> = self.connected.keys().cloned().collect();
        for m in members {
            self.send(&m, ToAgent::Block(Box::new(block.clone()))).await;
        }
    }

    /// Acts on the coordinator's events; returns whether a round ended.
    async fn drain_events(&mut self) -> Result<bool> {
        let mut ended = false;
        while let Some(ev) = self.coordinator.poll_event() {
            match ev {
                CoordinatorEvent::Anchor(o) => {
                    ended = true;
                    let t = Instant::now();
                    // Stored before the anchor is appended: no anchored model can be lost.
                    self.models.put(&o.model)?;
                    if !o.server_state.is_empty() {
                        self.models.put_state(&o.model.hash, &o.server_state)?;
                    }
                    let receipt = self.ledger.append(
                        vec![o.tx.clone()],
                        wall_now(),
                        &self.member.config.member,
                        &self.member.key,
                    );
                    let ledger_ms = t.elapsed().as_secs_f64() * 1000.0;
                    self.coordinator.anchored(receipt.is_ok());
                    let m = &o.metrics;
                    match receipt {
                        Ok(r) => {
                            info!(
                                round = m.round,
                                model = %o.model.hash,
                                participants = m.participants,
                                dropped = ?m.dropped,
                                max_epsilon = m.max_epsilon,
                                duration_ms = m.duration_ms,
                                ledger_ms,
                                bytes_out = self.bytes_out,
                                bytes_in = self.bytes_in,
                                height = r.height,
                                "round anchored"
                            );
                            self.write_metrics(m, Some(o.model.hash.to_string()), None, ledger_ms);
                            if let Some(block) = self.ledger.block(r.height)? {
                                self.broadcast_block(&block).await;
                            }
                        }
                        Err(e) => {
                            warn!(round = m.round, error = %e, "the ledger refused the round");
                            self.write_metrics(m, None, Some(&e.to_string()), ledger_ms);
                        }
                    }
                }
                CoordinatorEvent::RoundFailed { reason, metrics } => {
                    ended = true;
                    warn!(round = metrics.round, reason = %reason, "round failed");
                    self.write_metrics(&metrics, None, Some(&reason), 0.0);
                }
                CoordinatorEvent::Misbehaved { member, reason } => {
                    warn!(member = %member, reason = %reason, "message refused");
                }
            }
        }
        Ok(ended)
    }

    /// A `metrics.jsonl` line saying no round can start, and why each member is left out.
    fn write_waiting(
        &mut self,
        eligible: usize,
        needed: usize,
        ineligible: &BTreeMap<MemberId, Ineligible>,
    ) {
        let line = serde_json::json!({
            "waiting": { "eligible": eligible, "needed": needed, "not_eligible": ineligible },
            "at": wall_now().to_string(),
        });
        let _ = writeln!(self.metrics, "{line}");
    }

    /// Writes `status.json` (atomically, when it changed): the ledger's height, the round
    /// running, who is connected, and who may join the next round and why not.
    fn write_status(&mut self) {
        let chain = self.ledger.state();
        let connected: BTreeSet<MemberId> = self.connected.keys().cloned().collect();
        let eligibility = match self.coordinator.eligibility(chain, &connected, wall_now()) {
            Ok(e) => serde_json::to_value(e).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let status = serde_json::json!({
            "member": self.member.config.member,
            "height": chain.height(),
            "tip": chain.tip().to_string(),
            "round": self.coordinator.current_round().map(|c| serde_json::json!({
                "round": c.round, "session": c.session, "participants": c.participants,
            })),
            "connected": connected,
            "eligibility": eligibility,
        });
        let Ok(text) = serde_json::to_vec_pretty(&status) else {
            return;
        };
        if self.status_written.as_deref() == Some(text.as_slice()) {
            return;
        }
        let path = self.member.dir.join("status.json");
        match write_atomic(&path, &text) {
            Ok(()) => self.status_written = Some(text),
            Err(e) => warn!(error = %e, "cannot write status.json"),
        }
    }

    fn write_metrics(
        &mut self,
        m: &medfl_coordinator::RoundMetrics,
        model: Option<String>,
        failure: Option<&str>,
        ledger_ms: f64,
    ) {
        let line = MetricsLine {
            metrics: m,
            model,
            failure,
            ledger_ms,
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let _ = writeln!(self.metrics, "{text}");
        }
    }

    async fn on_net(&mut self, ev: NetEvent<Envelope>) {
        match ev {
            NetEvent::Connected(peer) => match self.peers.get(&peer) {
                Some(m) => {
                    info!(member = %m, "connected");
                    self.connected.insert(m.clone(), peer);
                }
                None => {
                    warn!(%peer, "connection from a peer that is not an active member; closing");
                    let _ = self.net.disconnect(peer).await;
                }
            },
            NetEvent::Disconnected(peer) => {
                if let Some(m) = self.peers.get(&peer) {
                    info!(member = %m, "disconnected");
                    let m = m.clone();
                    self.connected.remove(&m);
                    self.catch_up.disconnected(&m);
                    // Gone, not silent: the round stops waiting for it now.
                    let now_ms = self.now_ms();
                    self.coordinator.member_gone(now_ms, wall_now(), &m);
                }
            }
            NetEvent::Message { from, msg } => {
                let Some(member) = self.peers.get(&from).cloned() else {
                    warn!(peer = %from, "message from a peer that is not an active member; closing");
                    let _ = self.net.disconnect(from).await;
                    return;
                };
                self.connected.insert(member.clone(), from);
                self.bytes_in += medfl_net::codec::encode(&msg).map_or(0, |b| b.len() as u64);
                match msg {
                    Envelope::ToCoordinator(ToCoordinator::Hello { height }) => {
                        self.on_hello(&member, height);
                    }
                    Envelope::ToCoordinator(ToCoordinator::SubmitTx(tx)) => {
                        self.on_submit(&member, *tx).await;
                    }
                    Envelope::ToCoordinator(m) => {
                        let now_ms = self.now_ms();
                        if let Err(e) = self.coordinator.handle(
                            now_ms,
                            wall_now(),
                            &member,
                            m,
                            self.ledger.state(),
                        ) {
                            warn!(member = %member, error = %e, "message refused");
                        }
                    }
                    Envelope::ToAgent(_) => {
                        warn!(member = %member, "sent a coordinator's message; closing");
                        let _ = self.net.disconnect(from).await;
                    }
                }
            }
            NetEvent::Refused { peer } => {
                if self.refused_logged.len() < MAX_REFUSED_LOGGED
                    && self.refused_logged.insert(peer)
                {
                    let chain = self.ledger.state();
                    match chain
                        .members()
                        .find(|r| medfl_net::peer_id_of(r.member.public_key.as_dalek()) == peer)
                    {
                        Some(r) => {
                            warn!(member = %r.member.id, %peer, "refused a revoked member (told why, signed)")
                        }
                        None => warn!(%peer, "refused a peer that is no member"),
                    }
                }
            }
            NetEvent::Misbehaved { peer, reason } => {
                warn!(peer = %peer, member = ?self.peers.get(&peer), reason = %reason, "disconnected a misbehaving peer");
            }
            NetEvent::SendFailed { to, reason } => {
                warn!(peer = %to, member = ?self.peers.get(&to), reason = %reason, "delivery failed");
            }
            NetEvent::Listening(addr) => info!(%addr, "listening"),
        }
    }

    /// A (re)connecting member says how many blocks it has: start sending it the rest, unless
    /// it asks too often.
    fn on_hello(&mut self, member: &MemberId, height: u64) {
        let tip = self.ledger.state().height();
        let now_ms = self.now_ms();
        if let HelloVerdict::RateLimited { refused } =
            self.catch_up.hello(member, height, tip, now_ms)
            && refused.is_power_of_two()
        {
            warn!(member = %member, refused, "hello rate-limited: catch-up refused");
        }
    }

    /// Sends the catch-up batches that are due.
    async fn pump_catch_up(&mut self) {
        let tip = self.ledger.state().height();
        while let Some((member, heights)) = self.catch_up.poll_batch(self.now_ms(), tip) {
            for h in heights {
                match self.ledger.block(h) {
                    Ok(Some(b)) => self.send(&member, ToAgent::Block(Box::new(b))).await,
                    _ => {
                        warn!(height = h, "cannot read block for catch-up");
                        self.catch_up.disconnected(&member);
                        break;
                    }
                }
            }
        }
    }

    /// A member's own signed transaction: queued for the next block, or refused with the
    /// reason (the member's agent reports silence as censorship).
    async fn on_submit(&mut self, member: &MemberId, tx: Transaction) {
        let verdict = admit(member, &tx, self.ledger.state()).and_then(|id| {
            self.mempool.offer(id, tx.clone())?;
            Ok(id)
        });
        match verdict {
            Ok(id) => {
                info!(member = %member, tx = %id, kind = tx.body.kind(), "transaction submitted")
            }
            Err(e) => {
                let id = tx.id().unwrap_or_default();
                warn!(member = %member, tx = %id, error = %e, "submitted transaction refused");
                let reason = e.to_string();
                self.send(member, ToAgent::TxRefused { id, reason }).await;
            }
        }
    }

    /// Orders waiting submissions into one block: each is tried against the contracts on a
    /// copy of the state first, so one refused transaction does not sink the others.
    async fn order_submissions(&mut self) {
        if self.mempool.is_empty() {
            return;
        }
        let now = wall_now();
        let (me, key, ledger) = (&self.member.config.member, &self.member.key, &self.ledger);
        let (txs, refused) = self
            .mempool
            .order(|batch| trial(ledger, batch, now, me, key));
        for (member, id, reason) in refused {
            warn!(member = %member, tx = %id, reason = %reason, "submitted transaction refused by the contracts");
            self.send(&member, ToAgent::TxRefused { id, reason }).await;
        }
        if txs.is_empty() {
            return;
        }
        let count = txs.len();
        match self.ledger.append(
            txs.clone(),
            now,
            &self.member.config.member,
            &self.member.key,
        ) {
            Ok(r) => {
                info!(
                    height = r.height,
                    transactions = count,
                    "members' transactions ordered"
                );
                if let Ok(Some(block)) = self.ledger.block(r.height) {
                    self.broadcast_block(&block).await;
                }
                self.refresh_members().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot append members' transactions; keeping them for the next block");
                for tx in txs {
                    if let Ok(id) = tx.id() {
                        let _ = self.mempool.offer(id, tx);
                    }
                }
            }
        }
    }

    /// Appends signed transactions dropped in `inbox/` (by `medfl ledger submit`), one block
    /// each, then updates who may connect.
    async fn poll_inbox(&mut self) {
        let inbox = self.member.dir.join("inbox");
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tx"))
            .collect();
        files.sort();
        for path in files {
            let result = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(codec::decode::<Transaction>(&b)?))
                .and_then(|tx| {
                    Ok(self.ledger.append(
                        vec![tx],
                        wall_now(),
                        &self.member.config.member,
                        &self.member.key,
                    )?)
                });
            match result {
                Ok(r) => {
                    info!(file = %path.display(), height = r.height, "transaction from the inbox appended");
                    let _ = std::fs::rename(&path, path.with_extension("done"));
                    if let Ok(Some(block)) = self.ledger.block(r.height) {
                        self.broadcast_block(&block).await;
                    }
                    self.refresh_members().await;
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "inbox transaction refused");
                    let _ = std::fs::write(path.with_extension("rejected"), e.to_string());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Sets the signed notices revoked members receive when they connect: who revoked them,
    /// when and why, with the block that holds it so a member whose copy ends just before it
    /// can check the claim. Strangers get nothing: they are denied at the handshake (answering
    /// every new key would let anyone hold the coordinator's connections).
    async fn set_notices(&mut self) {
        let chain = self.ledger.state();
        let (me, key) = (&self.member.config.member, &self.member.key);
        let mut per_peer = BTreeMap::new();
        for r in chain.members() {
            let Some(v) = r.revocation.as_ref().filter(|_| r.revoked) else {
                continue;
            };
            let refusal = Refusal {
                genesis: chain.genesis_hash(),
                height: chain.height(),
                reason: RefusalReason::Revoked {
                    member: r.member.id.clone(),
                    height: v.height,
                    by: v.by.clone(),
                    at: v.at,
                    reason: v.reason.clone(),
                },
            };
            let notice = match refusal.sign(me.clone(), key) {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "cannot sign a refusal notice");
                    continue;
                }
            };
            let block = self.ledger.block(v.height).ok().flatten().map(Box::new);
            per_peer.insert(
                medfl_net::peer_id_of(r.member.public_key.as_dalek()),
                Envelope::ToAgent(ToAgent::Refused {
                    notice: Box::new(notice),
                    block,
                }),
            );
        }
        if let Err(e) = self.net.set_notices(&per_peer).await {
            warn!(error = %e, "cannot set refusal notices");
        }
    }

    /// Re-reads the active members from the ledger: a revoked member is cut off at once.
    async fn refresh_members(&mut self) {
        self.peers = peer_map(self.ledger.state());
        // A participant revoked mid-round is dropped from it at once.
        let now_ms = self.now_ms();
        self.coordinator
            .chain_changed(now_ms, wall_now(), self.ledger.state());
        let gone: Vec<MemberId> = self
            .connected
            .keys()
            .filter(|m| !self.peers.values().any(|x| x == *m))
            .cloned()
            .collect();
        for m in &gone {
            self.connected.remove(m);
            self.catch_up.forget(m);
            self.mempool.forget(m);
        }
        let allowed = self.peers.keys().copied().collect();
        self.set_notices().await;
        if let Err(e) = self.net.set_allowed(allowed).await {
            warn!(error = %e, "cannot update the allowlist");
        }
    }
}

/// Whether `txs`, in this order, would pass every rule as the next block: proposes it and applies
/// it to a copy of the state, so nothing is stored.
fn trial(
    ledger: &Ledger,
    txs: &[Transaction],
    now: Timestamp,
    me: &MemberId,
    key: &ed25519_dalek::SigningKey,
) -> Result<(), TrialError> {
    let block = ledger
        .propose(txs.to_vec(), now, me, key)
        .map_err(|e| TrialError::Other(e.to_string()))?;
    let mut state = ledger.state().clone();
    match state.apply_block(&block) {
        Ok(()) => Ok(()),
        Err(BlockError::Contract { index, error, .. }) => Err(TrialError::Tx {
            index,
            reason: error.to_string(),
        }),
        Err(e) => Err(TrialError::Other(e.to_string())),
    }
}
