//! One federated round over real libp2p on loopback, timed stage by stage.
//!
//! A coordinator and `--clients` hospital agents (default 10), each with its own libp2p node
//! (TCP + Noise + Yamux on 127.0.0.1), run the very state machines of `medfl coordinator` and
//! `medfl client` on a model of about 10^5 parameters. Each round's wall time is split into
//! local training (the slowest hospital, since hospitals train in parallel), the secure
//! aggregation server (every coordinator state-machine call: SecAgg+ server, decoding, strategy,
//! endorsement checks), the slowest client's secure aggregation (its state-machine calls:
//! encoding with distributed noise, masking, unmasking, recomputing the model to endorse it),
//! ledger anchoring (the durable block append), and the rest: the network and waiting. Each agent keeps its own in-memory
//! ledger copy and checks every block, as `medfl client` does. Run with `cargo run --release --example round_bench`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medfl::consortium::{SimSettings, genesis};
use medfl::settings::RoundSettings;
use medfl_client::spend::{PrivacyBudget, PrivacySpend};
use medfl_client::{Agent, AgentEvent, Hospital, HospitalEvent};
use medfl_coordinator::{Coordinator, CoordinatorEvent};
use medfl_ledger::{AgreementId, Ledger, MemberId, Timestamp};
use medfl_model::{AutoencoderConfig, EmployeeRows};
use medfl_net::{NetConfig, NetEvent, PeerId};
use medfl_protocol::{Envelope, GlobalModel, ToAgent};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Nanoseconds spent, shared between tasks.
#[derive(Default)]
struct Clock(AtomicU64);

impl Clock {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
    fn take(&self) -> f64 {
        self.0.swap(0, Ordering::Relaxed) as f64 / 1e9
    }
}

#[derive(Default)]
struct Clocks {
    coordinator: Clock,
    agents: Vec<Clock>,
    training_max: Mutex<f64>,
}

/// One federated round over real libp2p on loopback, timed stage by stage.
#[derive(clap::Parser)]
struct Args {
    /// Hospital agents, each with its own libp2p node.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..))]
    clients: u64,
    /// Hidden width of the autoencoder (1612 gives about 10^5 parameters).
    #[arg(long, default_value_t = 1612, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    hidden: u64,
    /// Rounds to time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Training rows per hospital.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    rows: u64,
}

/// Feature columns, as the access-log features have.
const INPUTS: usize = medfl_accesslog::N_FEATURES;
/// Rows per simulated employee (three weeks of a clinician's accesses).
const ROWS_PER_EMPLOYEE: usize = 200;

fn wall(start: Instant) -> Timestamp {
    Timestamp(medfl::consortium::EPOCH.0 + 1000 + start.elapsed().as_millis() as u64)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let (n, hidden, rounds, rows) = (
        usize::try_from(args.clients)?,
        usize::try_from(args.hidden)?,
        args.rounds,
        usize::try_from(args.rows)?,
    );
    let model = AutoencoderConfig {
        inputs: INPUTS,
        hidden,
        latent: 8,
    };
    let mut plan = RoundSettings::new(AgreementId::new("bench").map_err(anyhow::Error::msg)?);
    (plan.hidden, plan.latent, plan.init_seed) = (model.hidden, model.latent, 1);
    plan.training.sampling_rate = 0.05;
    plan.min_participants = n;
    let mut settings = SimSettings::new(&plan, 1, 1000.0);
    settings.coordinator.model = model;
    let ids: Vec<MemberId> = (0..n)
        .map(|i| MemberId::new(format!("hospital-{i}")).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let (g, keys) = genesis(&ids, &settings)?;
    let dir = tempfile::tempdir()?;
    let ledger = Arc::new(Mutex::new(Ledger::create(&dir.path().join("ledger"), &g)?));
    let genesis_hash = g.hash()?;
    let start = Instant::now();
    let clocks = Arc::new(Clocks {
        agents: (0..n).map(|_| Clock::default()).collect(),
        ..Clocks::default()
    });

    // The coordinator's node.
    let (coord_id, coord_key) = keys[0].clone();
    let agent_peers: BTreeMap<PeerId, MemberId> = keys[1..]
        .iter()
        .map(|(id, k)| (medfl_net::peer_id_of(&k.verifying_key()), id.clone()))
        .collect();
    let (cnet, mut cevents) = medfl_net::spawn::<Envelope>(
        &coord_key,
        NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            ..NetConfig::default()
        },
        agent_peers.keys().copied().collect(),
    )
    .await?;
    let addr = cnet
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .context("no listen address")?;
    let coord_peer = medfl_net::peer_id_of(&coord_key.verifying_key());

    // The agents, each a task with its own node.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    for (index, (id, key)) in keys[1..].iter().cloned().enumerate() {
        let data: Arc<Vec<f32>> = Arc::new(
            (0..rows * INPUTS)
                .map(|_| rng.random_range(0.0f32..1.0))
                .collect(),
        );
        // Employees of about ROWS_PER_EMPLOYEE rows each, interleaved as in a real log.
        let employees: Arc<Vec<u64>> = Arc::new(
            (0..rows)
                .map(|r| (r % (rows / ROWS_PER_EMPLOYEE).max(1)) as u64)
                .collect(),
        );
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        // The bench measures rounds, not budgets: each hospital's own ledger, in memory, has
        // room for every round.
        let spend = PrivacySpend::new(PrivacyBudget::new(1e9, 1e-6)?, Vec::new())?;
        let mut hospital = Hospital::new(
            Agent::new(id, key.clone(), genesis_hash, spend, seed),
            Ledger::in_memory(&g)?,
        );
        let (net, mut events) = medfl_net::spawn::<Envelope>(
            &key,
            NetConfig::default(),
            [coord_peer].into_iter().collect(),
        )
        .await?;
        net.dial(addr.clone()).await?;
        let clocks = Arc::clone(&clocks);
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Vec<f32>, f64)>(2);
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(NetEvent::Connected(_)) => hospital.connected(),
                        Some(NetEvent::Message { msg: Envelope::ToAgent(m), .. }) => {
                            let _ = clocks.agents[index].time(|| hospital.handle(m, wall(start)));
                        }
                        Some(_) => {}
                        None => return,
                    },
                    Some((session, params, secs)) = rx.recv() => {
                        if let Ok(mut m) = clocks.training_max.lock() { *m = m.max(secs); }
                        let _ = clocks.agents[index].time(|| hospital.submit_update(session, &params));
                    }
                }
                while let Some(ev) = hospital.poll_event() {
                    if let HospitalEvent::Agent(AgentEvent::Charge(c)) = &ev {
                        let _ = clocks.agents[index].time(|| hospital.charge_recorded(c.session));
                    }
                    if let HospitalEvent::Agent(AgentEvent::Train(task)) = ev {
                        let tx = tx.clone();
                        let data = Arc::clone(&data);
                        let employees = Arc::clone(&employees);
                        tokio::task::spawn_blocking(move || {
                            let t = Instant::now();
                            let Ok(rows) = EmployeeRows::new(&data, INPUTS, &employees) else {
                                return;
                            };
                            if let Ok(r) = medfl::local::train(&task, &rows) {
                                let _ = tx.blocking_send((
                                    task.session,
                                    r.params,
                                    t.elapsed().as_secs_f64(),
                                ));
                            }
                        });
                    }
                }
                while let Some(m) = hospital.poll_outgoing() {
                    let _ = net.send(coord_peer, &Envelope::ToCoordinator(m)).await;
                }
            }
        });
    }

    let initial = GlobalModel::initial(model, 7)?;
    println!(
        "model: {} parameters ({} KiB); {n} clients on loopback",
        model.param_count(),
        initial.to_bytes()?.len() / 1024
    );
    let mut coordinator = Coordinator::new(
        settings.coordinator.clone(),
        coord_id.clone(),
        coord_key.clone(),
        genesis_hash,
        initial,
        Vec::new(),
        [9; 32],
    )?;
    let mut connected: BTreeMap<MemberId, PeerId> = BTreeMap::new();
    while connected.len() < n {
        match cevents.recv().await {
            Some(NetEvent::Connected(p)) => {
                if let Some(m) = agent_peers.get(&p) {
                    connected.insert(m.clone(), p);
                }
            }
            Some(_) => {}
            None => bail!("network stopped"),
        }
    }
    println!(
        "\n| round | total s | local training s (slowest) | secagg server s | secagg client s (slowest) | ledger anchoring s | network and waiting s | anchoring share |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows_out = Vec::new();
    for _ in 0..rounds {
        clocks.coordinator.take();
        clocks.agents.iter().for_each(|c| {
            c.take();
        });
        if let Ok(mut m) = clocks.training_max.lock() {
            *m = 0.0;
        }
        let t0 = Instant::now();
        let members: BTreeSet<MemberId> = connected.keys().cloned().collect();
        let state = ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .state()
            .clone();
        clocks.coordinator.time(|| {
            coordinator
                .start_round(
                    start.elapsed().as_millis() as u64,
                    wall(start),
                    &state,
                    &members,
                )
                .map(|_| ())
        })?;
        let mut ledger_s = 0.0;
        let mut done = false;
        while !done {
            while let Some((to, msg)) = coordinator.poll_outgoing() {
                if let Some(p) = connected.get(&to) {
                    cnet.send(*p, &Envelope::ToAgent(msg)).await?;
                }
            }
            while let Some(ev) = coordinator.poll_event() {
                match ev {
                    CoordinatorEvent::Anchor(o) => {
                        let t = Instant::now();
                        let receipt = ledger
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .append(vec![o.tx.clone()], wall(start), &coord_id, &coord_key);
                        ledger_s = t.elapsed().as_secs_f64();
                        coordinator.anchored(receipt.is_ok());
                        receipt?;
                        let block = {
                            let l = ledger.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                            l.block(l.state().height())?.context("block")?
                        };
                        for p in connected.values() {
                            cnet.send(
                                *p,
                                &Envelope::ToAgent(ToAgent::Block(Box::new(block.clone()))),
                            )
                            .await?;
                        }
                        done = true;
                    }
                    CoordinatorEvent::RoundFailed { reason, .. } => bail!("round failed: {reason}"),
                    CoordinatorEvent::Misbehaved { member, reason } => {
                        eprintln!("{member}: {reason}")
                    }
                }
            }
            if done {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), cevents.recv()).await {
                Ok(Some(NetEvent::Message {
                    from,
                    msg: Envelope::ToCoordinator(m),
                })) => {
                    if let Some(member) = agent_peers.get(&from) {
                        let state = ledger
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .state()
                            .clone();
                        let now = start.elapsed().as_millis() as u64;
                        let _ = clocks
                            .coordinator
                            .time(|| coordinator.handle(now, wall(start), member, m, &state));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("network stopped"),
                Err(_) => coordinator.tick(start.elapsed().as_millis() as u64, wall(start)),
            }
        }
        let total = t0.elapsed().as_secs_f64();
        let training = clocks.training_max.lock().map(|m| *m).unwrap_or(0.0);
        let server = clocks.coordinator.take();
        let client = clocks.agents.iter().map(Clock::take).fold(0.0, f64::max);
        let network = (total - training - server - client - ledger_s).max(0.0);
        println!(
            "| {} | {total:.3} | {training:.3} | {server:.3} | {client:.3} | {:.4} | {network:.3} | {:.3}% |",
            rows_out.len() + 1,
            ledger_s,
            100.0 * ledger_s / total
        );
        rows_out.push([total, training, server, client, ledger_s, network]);
        tokio::time::sleep(Duration::from_millis(300)).await; // let the block reach the agents
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rows_out.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t, l) = (median(0), median(4));
    println!(
        "| median | {t:.3} | {:.3} | {:.3} | {:.3} | {l:.4} | {:.3} | {:.3}% |",
        median(1),
        median(2),
        median(3),
        median(5),
        100.0 * l / t
    );
    Ok(())
}
