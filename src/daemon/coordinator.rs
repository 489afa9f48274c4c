//! `medfl coordinator`: the coordinator's node ([`crate::node::CoordinatorNode`]) over libp2p,
//! on the system clock.
//!
//! On start it opens its ledger and the node resumes from the last anchored model in its
//! content-addressed store (or the initial one) and runs the next round number the ledger
//! allows: a coordinator killed mid-round starts that round again under a new attempt id, and
//! one killed after anchoring moves on. Nothing is anchored twice because round numbers come
//! from the ledger, and nothing anchored is lost because the model file is written before its
//! anchor. This file only moves messages, reads `inbox/` and writes `metrics.jsonl` and
//! `status.json`; every decision is the node's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medfl_coordinator::{Ineligible, RoundMetrics, describe_ineligible};
use medfl_ledger::{MemberId, Role, Transaction, codec};
use medfl_net::{Multiaddr, NetConfig, NetEvent, NetHandle, PeerId};
use medfl_protocol::{Envelope, ToAgent};
use rand::Rng;
use serde::Serialize;
use tracing::{info, warn};

use super::{Member, peer_map, wall_now};
use crate::model_store::{ModelStore, write_atomic};
use crate::node::{CoordinatorNode, NodeEvent};

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Stop once the ledger holds this many rounds (overrides the config).
    pub rounds: Option<u64>,
    /// Whether a key derived from a public seed is accepted.
    pub insecure_keys: super::InsecureKeys,
    /// Where to serve the consortium's web console, if anywhere.
    pub console: Option<std::net::SocketAddr>,
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct MetricsLine<'a> {
    #[serde(flatten)]
    metrics: &'a RoundMetrics,
    model: Option<String>,
    failure: Option<&'a str>,
    ledger_ms: f64,
    bytes_out: u64,
    bytes_in: u64,
}

struct Daemon {
    member: Member,
    node: CoordinatorNode,
    net: NetHandle<Envelope>,
    /// Active members by their libp2p identity (from the ledger's keys).
    peers: BTreeMap<PeerId, MemberId>,
    /// The connection of each connected member.
    connected: BTreeMap<MemberId, PeerId>,
    started: Instant,
    /// Bytes sent and received since the running round started.
    bytes_out: u64,
    bytes_in: u64,
    metrics: std::fs::File,
    /// The bytes of the last `status.json` written.
    status_written: Option<Vec<u8>>,
    /// Refused peers already logged (bounded: a stranger with many keys cannot fill the log
    /// or the memory).
    refused_logged: BTreeSet<PeerId>,
}

/// Refused peers logged by name; later ones are counted silently.
const MAX_REFUSED_LOGGED: usize = 1024;

/// How often `inbox/` is read and `status.json` refreshed.
const INBOX_INTERVAL: Duration = Duration::from_millis(500);

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
    let ledger = member.open_ledger()?;
    std::fs::create_dir_all(member.dir.join("inbox"))?;
    let models = ModelStore::open(&member.dir.join("models"))?;
    let peers = peer_map(ledger.state());
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut node = CoordinatorNode::open(
        member.config.member.clone(),
        member.key.clone(),
        settings.coordinator_config(),
        settings.init_seed,
        settings.pacing(),
        ledger,
        models,
        seed,
        0,
    )?;
    node.set_target((target > 0).then_some(target));
    info!(
        round = node.rounds_anchored(),
        model = %node.coordinator().model().hash,
        height = node.ledger().state().height(),
        "coordinator resuming from the last anchored round"
    );
    let listen: Multiaddr = member
        .config
        .listen
        .parse()
        .with_context(|| format!("listen address {:?}", member.config.listen))?;
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
    if let Some(addr) = opts.console {
        let source = crate::console::RunDir::coordinator(
            member.dir.join("metrics.jsonl"),
            member.dir.join(&member.config.ledger_dir),
        );
        let bound = crate::console::spawn(addr, source)?;
        let link = crate::console::link(bound, member.genesis.hash().ok());
        info!(addr = %bound, "consortium console listening ({link})");
        if !bound.ip().is_loopback() {
            warn!(
                addr = %bound,
                "the console is unauthenticated plain HTTP: anyone who reaches this address sees what the ledger shows every member; bind it to loopback or a trusted network"
            );
        }
    }
    let mut d = Daemon {
        member,
        node,
        net,
        peers,
        connected: BTreeMap::new(),
        started: Instant::now(),
        bytes_out: 0,
        bytes_in: 0,
        metrics,
        status_written: None,
        refused_logged: BTreeSet::new(),
    };
    d.set_notices().await;
    let mut next_inbox = Instant::now();
    while !d.node.target_reached() {
        if Instant::now() >= next_inbox {
            d.poll_inbox();
            d.write_status();
            next_inbox = Instant::now() + INBOX_INTERVAL;
        }
        d.flush().await?;
        let mut wake = next_inbox;
        if let Some(t) = d.node.poll_timeout() {
            wake = wake.min(d.started + Duration::from_millis(t));
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => d.on_net(ev).await,
                None => bail!("the network stopped"),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now_ms = d.now_ms();
                d.node.tick(now_ms, wall_now());
            }
        }
    }
    d.flush().await?;
    info!(
        height = d.node.ledger().state().height(),
        "target round anchored; stopping"
    );
    // Give the last block broadcast a moment to leave before the node shuts down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.net.shutdown().await;
    Ok(())
}

impl Daemon {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Acts on the node's events, then sends what it has to send: events first, so a round's
    /// byte count starts before its first message and a member cut off is gone from the
    /// connection map before anything else is sent.
    async fn flush(&mut self) -> Result<()> {
        loop {
            let mut moved = false;
            let mut membership: Option<Vec<MemberId>> = None;
            while let Some(ev) = self.node.poll_event() {
                moved = true;
                match ev {
                    // Cut after the sends: a removed member still gets the block removing it.
                    NodeEvent::MembersChanged { removed } => {
                        membership.get_or_insert_with(Vec::new).extend(removed)
                    }
                    ev => self.on_node(ev).await?,
                }
            }
            while let Some((to, msg)) = self.node.poll_transmit() {
                moved = true;
                self.send(&to, msg).await;
            }
            if let Some(removed) = membership {
                self.members_changed(&removed).await;
            }
            if !moved {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, to: &MemberId, msg: ToAgent) {
        let Some(peer) = self.connected.get(to).copied() else {
            return; // the connection closed meanwhile: to the protocol, a dropout
        };
        let env = Envelope::ToAgent(msg);
        self.bytes_out += medfl_net::codec::encode(&env).map_or(0, |b| b.len() as u64);
        if let Err(e) = self.net.send(peer, &env).await {
            warn!(member = %to, error = %e, "send failed");
        }
    }

    async fn on_node(&mut self, ev: NodeEvent) -> Result<()> {
        match ev {
            NodeEvent::RoundStarted {
                round,
                session,
                participants,
            } => {
                info!(round, session, participants, "round started");
                self.bytes_out = 0;
                self.bytes_in = 0;
            }
            NodeEvent::Waiting {
                eligible,
                needed,
                ineligible,
            } => {
                let why = describe_ineligible(&ineligible);
                info!(eligible, needed, not_eligible = %why, "waiting for eligible hospitals");
                self.write_waiting(eligible, needed, &ineligible);
            }
            NodeEvent::CannotStart { reason } => warn!(error = %reason, "cannot start a round"),
            NodeEvent::Anchored {
                metrics: m,
                model,
                height,
                ledger_ms,
            } => {
                info!(
                    round = m.round,
                    %model,
                    participants = m.participants,
                    dropped = ?m.dropped,
                    max_epsilon = m.max_epsilon,
                    duration_ms = m.duration_ms,
                    ledger_ms,
                    bytes_out = self.bytes_out,
                    bytes_in = self.bytes_in,
                    height,
                    "round anchored"
                );
                self.write_metrics(&m, Some(model.to_string()), None, ledger_ms);
            }
            NodeEvent::RoundFailed {
                metrics,
                reason,
                ledger_ms,
            } => {
                warn!(round = metrics.round, reason = %reason, "round failed");
                self.write_metrics(&metrics, None, Some(&reason), ledger_ms);
            }
            NodeEvent::Refused { member, reason } => {
                warn!(member = %member, error = %reason, "message refused")
            }
            NodeEvent::Misbehaved { member, reason } => {
                warn!(member = %member, reason = %reason, "misbehaved (left out of later rounds when secure aggregation proved it)")
            }
            NodeEvent::TxAdmitted { member, id, kind } => {
                info!(member = %member, tx = %id, kind, "transaction submitted")
            }
            NodeEvent::TxRefused { member, id, reason } => {
                warn!(member = %member, tx = %id, reason = %reason, "submitted transaction refused")
            }
            NodeEvent::Appended {
                height,
                transactions,
            } => info!(height, transactions, "transactions ordered into a block"),
            NodeEvent::AppendFailed { reason } => {
                warn!(error = %reason, "cannot append members' transactions; keeping them for the next block")
            }
            NodeEvent::MembersChanged { removed } => self.members_changed(&removed).await,
            NodeEvent::CatchUpRefused { member, refused } => {
                warn!(member = %member, refused, "hello rate-limited: catch-up refused")
            }
            NodeEvent::CatchUpFailed { member, height } => {
                warn!(member = %member, height, "cannot read a block for catch-up")
            }
            NodeEvent::StorageFailed { reason } => bail!("storage failed: {reason}"),
        }
        Ok(())
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
        let chain = self.node.ledger().state();
        let eligibility = match self.node.eligibility(wall_now()) {
            Ok(e) => serde_json::to_value(e).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let status = serde_json::json!({
            "member": self.member.config.member,
            "height": chain.height(),
            "tip": chain.tip().to_string(),
            "round": self.node.coordinator().current_round().map(|c| serde_json::json!({
                "round": c.round, "session": c.session, "participants": c.participants,
            })),
            "connected": self.node.connected_members(),
            "pooled_transactions": self.node.pooled(),
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
        m: &RoundMetrics,
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
        let now_ms = self.now_ms();
        match ev {
            NetEvent::Connected(peer) => {
                let member = self.peers.get(&peer).cloned();
                match member {
                    Some(m) if self.node.connected(&m) => {
                        info!(member = %m, "connected");
                        self.connected.insert(m, peer);
                    }
                    _ => {
                        warn!(%peer, "connection from a peer that is not an active member; closing");
                        let _ = self.net.disconnect(peer).await;
                    }
                }
            }
            NetEvent::Disconnected(peer) => {
                if let Some(m) = self.peers.get(&peer).cloned() {
                    info!(member = %m, "disconnected");
                    self.connected.remove(&m);
                    self.node.disconnected(now_ms, wall_now(), &m);
                }
            }
            NetEvent::Message { from, msg } => {
                let size = medfl_net::codec::encode(&msg).map_or(0, |b| b.len() as u64);
                let member = self.peers.get(&from).cloned();
                let (Some(member), Envelope::ToCoordinator(msg)) = (member, msg) else {
                    warn!(peer = %from, "a message that is not an active member's to the coordinator; closing");
                    let _ = self.net.disconnect(from).await;
                    return;
                };
                self.bytes_in += size;
                if self.node.handle(now_ms, wall_now(), &member, msg) {
                    self.connected.insert(member, from);
                } else {
                    let _ = self.net.disconnect(from).await;
                }
            }
            NetEvent::Refused { peer } => {
                if self.refused_logged.len() < MAX_REFUSED_LOGGED
                    && self.refused_logged.insert(peer)
                {
                    let chain = self.node.ledger().state();
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

    /// Appends signed transactions dropped in `inbox/` (by `medfl ledger submit`), one block
    /// each.
    fn poll_inbox(&mut self) {
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
            let now_ms = self.now_ms();
            let result = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(codec::decode::<Transaction>(&b)?))
                .and_then(|tx| Ok(self.node.append_admin(now_ms, wall_now(), tx)?));
            match result {
                Ok(height) => {
                    info!(file = %path.display(), height, "transaction from the inbox appended");
                    let _ = std::fs::rename(&path, path.with_extension("done"));
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "inbox transaction refused");
                    let _ = std::fs::write(path.with_extension("rejected"), e.to_string());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Sets the signed notices revoked members receive when they connect. Strangers get
    /// nothing: they are denied at the handshake (answering every new key would let anyone
    /// hold the coordinator's connections).
    async fn set_notices(&mut self) {
        let per_peer: BTreeMap<PeerId, Envelope> = self
            .node
            .refusal_notices()
            .into_iter()
            .map(|(key, msg)| (medfl_net::peer_id_of(&key), Envelope::ToAgent(msg)))
            .collect();
        if let Err(e) = self.net.set_notices(&per_peer).await {
            warn!(error = %e, "cannot set refusal notices");
        }
    }

    /// Membership changed on the ledger: a revoked member is cut off at once (the new
    /// allowlist closes its connections).
    async fn members_changed(&mut self, removed: &[MemberId]) {
        self.peers = peer_map(self.node.ledger().state());
        for m in removed {
            self.connected.remove(m);
        }
        self.set_notices().await;
        let allowed = self.peers.keys().copied().collect();
        if let Err(e) = self.net.set_allowed(allowed).await {
            warn!(error = %e, "cannot update the allowlist");
        }
    }
}
