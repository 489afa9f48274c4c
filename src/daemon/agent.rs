//! `medfl client`: the hospital agent over libp2p.
//!
//! It loads the hospital's access logs (CSV or FHIR AuditEvent NDJSON), turns them into
//! features standardized with the hospital's own moments (which never leave it), keeps its own
//! copy of the ledger (blocks come from the coordinator and are checked in full before they are
//! appended), dials the coordinator and reconnects whenever the connection drops. Training runs
//! on a blocking thread so the connection stays served. Each model the ledger anchors becomes
//! `models/current.model`: the global network with the hospital's standardization and an alert
//! threshold set on its own traffic, ready for the access monitor (`medfl eval --model`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use medfl_accesslog::OnError;
use medfl_client::train::{self, Trained};
use medfl_client::{Agent, AgentEvent, TrainingTask};
use medfl_ledger::{Ledger, Role};
use medfl_model::Autoencoder;
use medfl_model::metrics::threshold_for_fpr;
use medfl_model::modelfile::ModelFile;
use medfl_model::standardize::{Moments, Standardizer};
use medfl_model::train::{score, training_device};
use medfl_net::{Multiaddr, NetConfig, NetEvent, NetHandle, PeerId};
use medfl_protocol::{Envelope, GlobalModel, ToAgent};
use rand::Rng;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Member;
use crate::data;

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The events file (overrides the config's `[data]`).
    pub data: Option<PathBuf>,
    /// Exit once the model of this round is adopted.
    pub until_round: Option<u64>,
    /// Whether a key derived from a public seed is accepted.
    pub insecure_keys: super::InsecureKeys,
}

struct Daemon {
    member: Member,
    ledger: Ledger,
    agent: Agent,
    net: NetHandle<Envelope>,
    coordinator: PeerId,
    connected: bool,
    data: Arc<Vec<f32>>,
    standardizer: Standardizer,
    target_fpr: f64,
    trained_tx: mpsc::Sender<(u64, Result<Trained, String>)>,
}

/// Runs the agent described by `config`.
pub async fn run(config: &Path, opts: Options) -> Result<()> {
    let member = Member::load(config, opts.insecure_keys)?;
    if member.config.role != Role::Hospital {
        bail!(
            "{} is a {}, not a hospital",
            member.config.member,
            member.config.role
        );
    }
    let settings = member.config.data.clone();
    let events = match (&opts.data, &settings) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => member.dir.join(&s.events),
        (None, None) => bail!("no data: give --data or a [data] table in the config"),
    };
    let target_fpr = settings.as_ref().map_or(0.02, |s| s.target_fpr);
    let ds = data::load(&events, None, None, None, OnError::Skip)
        .with_context(|| format!("loading {}", events.display()))?;
    if ds.n_rows() < 10 {
        bail!(
            "{} holds {} usable rows; training needs more",
            events.display(),
            ds.n_rows()
        );
    }
    let standardizer = Moments::of(&ds.data, ds.n_cols).standardizer();
    let mut rows = ds.data;
    standardizer.apply(&mut rows);
    let n_rows = (rows.len() / ds.n_cols) as u64;
    info!(rows = n_rows, file = %events.display(), "training data loaded");

    let ledger = member.open_ledger()?;
    let genesis_hash = ledger.state().genesis_hash();
    let coordinator = member
        .genesis
        .members
        .iter()
        .find(|m| m.role == Role::Coordinator)
        .context("the genesis lists no coordinator")?;
    let coordinator_peer = medfl_net::peer_id_of(coordinator.public_key.as_dalek());
    let address: Multiaddr = member
        .config
        .coordinators
        .first()
        .context("the config lists no coordinator address")?
        .parse()
        .context("coordinator address")?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let agent = Agent::new(
        member.config.member.clone(),
        member.key.clone(),
        genesis_hash,
        n_rows,
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
        ledger,
        agent,
        net,
        coordinator: coordinator_peer,
        connected: false,
        data: Arc::new(rows),
        standardizer,
        target_fpr,
        trained_tx,
    };
    let mut next_dial = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        if !d.connected && tokio::time::Instant::now() >= next_dial {
            match d.net.dial(address.clone()).await {
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    warn!(error = %e, "cannot reach the coordinator; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            next_dial = tokio::time::Instant::now() + backoff;
        }
        tokio::select! {
            ev = net_events.recv() => match ev {
                Some(ev) => d.on_net(ev).await?,
                None => bail!("the network stopped"),
            },
            Some((session, result)) = trained_rx.recv() => match result {
                Ok(t) => {
                    info!(session, loss = t.loss, steps = t.report.steps, epsilon = t.report.accounting.epsilon, "local training done");
                    if let Err(e) = d.agent.submit_update(session, &t.params, t.loss) {
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
                self.agent.hello(self.ledger.state());
            }
            NetEvent::Disconnected(p) if p == self.coordinator => {
                warn!("disconnected from the coordinator");
                self.connected = false;
            }
            NetEvent::Message {
                from,
                msg: Envelope::ToAgent(msg),
            } if from == self.coordinator => {
                if let ToAgent::RoundStart(c) = &msg {
                    info!(round = c.round, session = c.session, "round started");
                }
                if let Err(e) = self.agent.handle(msg, self.ledger.state()) {
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
        while let Some(msg) = self.agent.poll_outgoing() {
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
        while let Some(ev) = self.agent.poll_event() {
            match ev {
                AgentEvent::Train(task) => self.train(*task),
                AgentEvent::Block(b) => {
                    let height = b.header.header.height;
                    let ours = self.ledger.state().height();
                    if height <= ours {
                        continue;
                    }
                    if height > ours + 1 {
                        warn!(
                            height,
                            ours, "block out of order; asking for the missing ones"
                        );
                        self.agent.hello(self.ledger.state());
                        continue;
                    }
                    match self.ledger.append_block(&b) {
                        Ok(_) => self.agent.ledger_updated(self.ledger.state()),
                        Err(e) => warn!(height, error = %e, "block refused by the local ledger"),
                    }
                }
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
            }
        }
        Ok(stop)
    }

    fn train(&self, task: TrainingTask) {
        let data = Arc::clone(&self.data);
        let tx = self.trained_tx.clone();
        info!(
            round = task.round,
            steps = task.dp.steps,
            "training locally with DP-SGD"
        );
        tokio::task::spawn_blocking(move || {
            let result = train::run(&task, &data).map_err(|e| e.to_string());
            let _ = tx.blocking_send((task.session, result));
        });
    }

    /// Writes the global model and the hospital's monitor model (its standardization, its
    /// threshold).
    fn adopt(&self, model: &GlobalModel) -> Result<()> {
        let dir = self.member.dir.join("models");
        std::fs::write(dir.join(format!("{}.model", model.hash)), model.to_bytes()?)?;
        let cfg = model.file.config;
        let device = training_device();
        let net = Autoencoder::new(cfg, 0, &device)?.load_flat(cfg, &model.file.params)?;
        let scores = score(&net, &self.data, cfg.inputs, &device)?;
        let threshold = threshold_for_fpr(&scores, self.target_fpr).unwrap_or(f32::MAX);
        let monitor = ModelFile {
            config: cfg,
            standardizer: self.standardizer.clone(),
            threshold,
            params: model.file.params.clone(),
        };
        monitor.save(&dir.join("current.model"))?;
        std::fs::write(dir.join("current.global"), model.hash.to_string())?;
        Ok(())
    }
}
