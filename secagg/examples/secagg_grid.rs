//! Runs SecAgg+ rounds in-process and reports compute time and upload size.
//!
//! ```text
//! cargo run --release -p medfl-secagg --example secagg_grid -- \
//!     --n 100 --d 100000 --dropout 0.1 [--k 14] [--t 8] [--bits 32] [--seed 1] \
//!     [--drop-stage masked] [--repeats 3] [--feasible-drops] [--json]
//! cargo run --release -p medfl-secagg --example secagg_grid -- --grid
//! cargo run --release -p medfl-secagg --example secagg_grid -- \
//!     --completion-rounds 100 --n 100 --dropout 0.1 --d 1000 [--json]
//! ```
//!
//! Dropouts are `floor(dropout * N)` clients chosen at random that go silent
//! from `--drop-stage` on: `advertise`, `share`, `masked` (default: after the
//! share stage and before the masked input, the stage at which Flower's
//! benchmark drops clients, and the costliest for the server, which must
//! rebuild their mask keys and recompute every pairwise mask they shared with
//! a survivor), `consistency`, `unmask`, or `random` (each dropped client
//! picks one of those five at random).
//!
//! Columns: per-client compute (median over surviving clients of the time
//! spent quantizing its `f32` input and inside its state machine, all
//! stages), server compute (time inside the server's state machine), bytes
//! uploaded per client (median of the summed bincode-encoded sizes of the
//! messages it actually sent, with the masked-input message alone and
//! `d*b/8` for reference), and the time to generate just the mask keystream
//! (AES-256-CTR, [`prg::Keystream`]) the server must expand to unmask (a
//! lower bound on server work).
//! Times are wall clock and thread CPU time (everything runs on one thread);
//! CPU time is what other load on a shared machine disturbs least.
//! `--feasible-drops` redraws the drop set until every secret the server must
//! rebuild keeps `t` live holders (what Flower's benchmark does, so that a
//! sparse graph's round completes and can be timed).
//! With `--repeats r` the round runs with seeds `seed..seed+r` and every time
//! is the median over the repeats.
//!
//! `--completion-rounds R` instead runs `R` seeded rounds with
//! `floor(dropout * N)` random clients dropping at a random stage each, and
//! reports how many rounds produced an aggregate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use medfl_secagg::prg::{self, Keystream, MaskDomain, Seed};
use medfl_secagg::quantize::Quantizer;
use medfl_secagg::sim::{DropPoint, Simulation, make_identities};
use medfl_secagg::{
    ClientId, ClientMessage, ClientSession, RoundPlan, SecAggConfig, ServerEvent, ServerSession,
    Stage,
};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Where dropped clients go silent.
#[derive(Debug, Clone, Copy)]
enum DropStage {
    At(DropPoint),
    Random,
}

#[derive(Debug, Clone)]
struct Params {
    n: u32,
    d: usize,
    dropout: f64,
    k: Option<usize>,
    t: Option<usize>,
    bits: u32,
    seed: u64,
    drop_stage: DropStage,
    repeats: usize,
    feasible_drops: bool,
}

struct Outcome {
    k: usize,
    t: usize,
    client_median: Spent,
    quantize_median: Spent,
    server: Spent,
    server_unmask: Spent,
    upload_median: usize,
    masked_bytes: usize,
    prg_lower_bound: Spent,
    prg_bytes: usize,
    survivors: usize,
    ok: bool,
    error: Option<String>,
}

/// Wall-clock and thread-CPU stopwatch: the machine may be shared, and CPU
/// time is what other load disturbs least.
#[derive(Clone, Copy)]
struct Stamp {
    wall: Instant,
    cpu: Duration,
}

/// Accumulated wall and CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, o: Spent) {
        self.wall += o.wall;
        self.cpu += o.cpu;
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Stamp {
    fn now() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    fn elapsed(&self) -> Spent {
        Spent {
            wall: self.wall.elapsed(),
            cpu: thread_cpu().saturating_sub(self.cpu),
        }
    }
}

fn median_spent(v: Vec<Spent>) -> Spent {
    Spent {
        wall: median(v.iter().map(|s| s.wall).collect()),
        cpu: median(v.iter().map(|s| s.cpu).collect()),
    }
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s
}

fn drop_points(
    rng: &mut ChaCha20Rng,
    ids: &[ClientId],
    count: usize,
    stage: DropStage,
) -> BTreeMap<ClientId, DropPoint> {
    let mut ids = ids.to_vec();
    ids.shuffle(rng);
    ids.into_iter()
        .take(count)
        .map(|id| {
            let p = match stage {
                DropStage::At(p) => p,
                // A client silent before revealing its nonce always stops the attempt (the
                // graph seed needs every nonce); the grid measures the stages after it.
                DropStage::Random => {
                    let after_nonce = &DropPoint::ALL[2..];
                    after_nonce[rng.random_range(0..after_nonce.len())]
                }
            };
            (id, p)
        })
        .collect()
}

/// Runs the advertise and nonce stages honestly on copies of the clients: the graph the real
/// run will use, since the copies draw the same keys and nonces.
fn rehearse_graph(
    config: &SecAggConfig,
    roster: &medfl_secagg::Roster,
    mut clients: BTreeMap<ClientId, ClientSession>,
) -> Result<medfl_secagg::graph::NeighbourGraph, String> {
    let mut server = ServerSession::new(config.clone(), roster).map_err(|e| e.to_string())?;
    while server.graph().is_none() {
        let mut moved = false;
        for (&id, c) in clients.iter_mut() {
            while let Some(m) = c.poll_outgoing() {
                moved = true;
                server.handle_message(id, m).map_err(|e| e.to_string())?;
            }
        }
        while let Some((to, m)) = server.poll_outgoing() {
            moved = true;
            if let Some(c) = clients.get_mut(&to) {
                let _ = c.handle_message(m);
            }
        }
        if !moved {
            match server.stage() {
                Some(stage) => server.close_stage(stage),
                None => return Err("rehearsal ended before the graph was known".into()),
            }
        }
    }
    server
        .graph()
        .cloned()
        .ok_or_else(|| "no graph".to_string())
}

/// Time to generate `bytes` of mask keystream, in 32 KiB pieces.
fn keystream_time(bytes: usize) -> Spent {
    let mut cipher = Keystream::new(&Seed([7u8; 32]), MaskDomain::Pairwise);
    let mut buf = vec![0u8; 32 * 1024];
    let start = Stamp::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        cipher.fill(&mut buf[..n]);
        left -= n;
    }
    let el = start.elapsed();
    std::hint::black_box(&buf);
    el
}

fn run_once(p: &Params, seed: u64) -> Result<Outcome, String> {
    let mut config = SecAggConfig::new(1, p.d);
    config.bits = p.bits;
    config.neighbours = p.k;
    config.threshold = p.t;
    let seed = seed_bytes(seed);
    config.graph_seed = seed;
    let (roster, keys) = make_identities(p.n, seed);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let bincode_cfg = bincode::config::standard();
    let quantizer = Quantizer::new(8.0, p.bits, u64::from(p.n)).map_err(|e| e.to_string())?;

    let mut client_time: BTreeMap<ClientId, Spent> = BTreeMap::new();
    let mut quantize_time: BTreeMap<ClientId, Spent> = BTreeMap::new();
    let mut upload: BTreeMap<ClientId, usize> = BTreeMap::new();
    let mut masked_bytes = 0;
    let mut clients = BTreeMap::new();
    // Copies of each client as it starts (same randomness), to learn the neighbour graph ahead
    // of the timed run when drop sets must be feasible: the graph seed comes from the
    // clients' nonces, so only the first two stages can tell it.
    let mut rehearsal = BTreeMap::new();
    for (id, sk) in keys {
        let x: Vec<f32> = (0..p.d).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        let mut crng = ChaCha20Rng::from_seed(rng.random());
        let start = Stamp::now();
        let input = quantizer.encode(&x, &mut crng).map_err(|e| e.to_string())?;
        let q = start.elapsed();
        if p.feasible_drops {
            let mut copy = crng.clone();
            let r = ClientSession::new(config.clone(), id, sk.clone(), &roster, &mut copy)
                .map_err(|e| e.to_string())?;
            rehearsal.insert(id, r);
        }
        let mut c = ClientSession::new(config.clone(), id, sk, &roster, &mut crng)
            .map_err(|e| e.to_string())?;
        c.provide_input(input).map_err(|e| e.to_string())?;
        client_time.insert(id, start.elapsed());
        quantize_time.insert(id, q);
        clients.insert(id, c);
    }
    let ids: Vec<ClientId> = clients.keys().copied().collect();
    let n_drop = (p.dropout * f64::from(p.n)).floor() as usize;
    let mut drops = drop_points(&mut rng, &ids, n_drop, p.drop_stage);
    if p.feasible_drops {
        // Flower's benchmark policy: redraw until every secret that must be
        // rebuilt keeps `t` live holders, so that the timed round completes.
        let plan = RoundPlan::new(&config, &roster).map_err(|e| e.to_string())?;
        let graph = rehearse_graph(&config, &roster, rehearsal)?;
        let feasible = |drops: &BTreeMap<ClientId, DropPoint>| {
            ids.iter().all(|c| {
                let live = graph
                    .neighbours(*c)
                    .iter()
                    .filter(|j| !drops.contains_key(j))
                    .count();
                live >= plan.threshold || (drops.contains_key(c) && live == 0)
            })
        };
        let mut tries = 1;
        while !feasible(&drops) {
            if tries == 100_000 {
                return Err("no feasible drop set in 100000 draws".into());
            }
            drops = drop_points(&mut rng, &ids, n_drop, p.drop_stage);
            tries += 1;
        }
    }

    let start = Stamp::now();
    let mut server = ServerSession::new(config.clone(), &roster).map_err(|e| e.to_string())?;
    let mut server_time = start.elapsed();
    let k = server.plan().degree;
    let t = server.plan().threshold;
    let mut result = None;
    let mut per_stage: BTreeMap<Option<Stage>, Spent> = BTreeMap::new();
    let mut dead: BTreeSet<ClientId> = BTreeSet::new();
    let mut u2: BTreeSet<ClientId> = BTreeSet::new();
    loop {
        let mut moved = false;
        for (&id, c) in clients.iter_mut() {
            while !dead.contains(&id) {
                let s = Stamp::now();
                let msg = c.poll_outgoing();
                *client_time.entry(id).or_default() += s.elapsed();
                let Some(msg) = msg else { break };
                if drops.get(&id).is_some_and(|d| msg.stage() >= d.stage()) {
                    dead.insert(id);
                    break;
                }
                moved = true;
                let bytes =
                    bincode::serde::encode_to_vec(&msg, bincode_cfg).map_err(|e| e.to_string())?;
                *upload.entry(id).or_default() += bytes.len();
                match &msg {
                    ClientMessage::ShareKeys { .. } => {
                        u2.insert(id);
                    }
                    ClientMessage::MaskedInput { .. } => masked_bytes = bytes.len(),
                    _ => {}
                }
                let stage = server.stage();
                let s = Stamp::now();
                let r = server.handle_message(id, msg);
                let el = s.elapsed();
                server_time += el;
                *per_stage.entry(stage).or_default() += el;
                r.map_err(|e| format!("server rejected {id}: {e}"))?;
            }
        }
        while let Some((to, msg)) = server.poll_outgoing() {
            moved = true;
            if dead.contains(&to) {
                continue;
            }
            let Some(c) = clients.get_mut(&to) else {
                continue;
            };
            let s = Stamp::now();
            let _ = c.handle_message(msg);
            *client_time.entry(to).or_default() += s.elapsed();
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Aggregated(a) => result = Some(Ok(a)),
                ServerEvent::Aborted(e) => result = Some(Err(e)),
                ServerEvent::StageClosed { .. } | ServerEvent::Misbehaved { .. } => {}
            }
        }
        if !moved {
            match server.stage() {
                Some(stage) => {
                    let s = Stamp::now();
                    server.close_stage(stage);
                    let el = s.elapsed();
                    server_time += el;
                    *per_stage.entry(Some(stage)).or_default() += el;
                }
                None => break,
            }
        }
    }
    if std::env::var_os("SECAGG_STAGES").is_some() {
        eprintln!("server time by stage: {per_stage:?}");
    }
    let (ok, survivors, error) = match &result {
        Some(Ok(a)) => (true, a.survivors.clone(), None),
        Some(Err(e)) => (false, Vec::new(), Some(e.to_string())),
        None => (false, Vec::new(), Some("no outcome".into())),
    };

    // Lower bound: the keystream the server must generate to unmask, and nothing
    // else: one self mask per survivor, one pairwise mask per (dropped, survivor) edge.
    let survivor_set: BTreeSet<ClientId> = survivors.iter().copied().collect();
    let empty = medfl_secagg::graph::NeighbourGraph::harary(&[], 0, &[0; 32]);
    let graph = server.graph().unwrap_or(&empty);
    let pairwise: usize = u2
        .iter()
        .filter(|d| !survivor_set.contains(d))
        .map(|&d| {
            graph
                .neighbours(d)
                .iter()
                .filter(|j| survivor_set.contains(j))
                .count()
        })
        .sum();
    let prg_bytes = (survivors.len() + pairwise) * p.d * prg::bytes_per_word(p.bits);
    let prg_lower_bound = keystream_time(prg_bytes);

    let live: Vec<ClientId> = if survivors.is_empty() {
        ids.iter()
            .copied()
            .filter(|c| !drops.contains_key(c))
            .collect()
    } else {
        survivors.clone()
    };
    Ok(Outcome {
        k,
        t,
        client_median: median_spent(live.iter().map(|c| client_time[c]).collect()),
        quantize_median: median_spent(live.iter().map(|c| quantize_time[c]).collect()),
        server: server_time,
        server_unmask: per_stage
            .get(&Some(Stage::Unmask))
            .copied()
            .unwrap_or_default(),
        upload_median: median(
            live.iter()
                .map(|c| upload.get(c).copied().unwrap_or(0))
                .collect(),
        ),
        masked_bytes,
        prg_lower_bound,
        prg_bytes,
        survivors: survivors.len(),
        ok,
        error,
    })
}

/// Runs `p.repeats` rounds and keeps the median of every time.
fn run(p: &Params) -> Result<Outcome, String> {
    let mut outs = Vec::with_capacity(p.repeats);
    for r in 0..p.repeats.max(1) {
        outs.push(run_once(p, p.seed + r as u64)?);
    }
    let med = |f: &dyn Fn(&Outcome) -> Spent| Spent {
        wall: median(outs.iter().map(|o| f(o).wall).collect()),
        cpu: median(outs.iter().map(|o| f(o).cpu).collect()),
    };
    let client_median = med(&|o| o.client_median);
    let quantize_median = med(&|o| o.quantize_median);
    let server = med(&|o| o.server);
    let server_unmask = med(&|o| o.server_unmask);
    let prg_lower_bound = med(&|o| o.prg_lower_bound);
    let ok = outs.iter().all(|o| o.ok);
    let error = outs.iter().find_map(|o| o.error.clone());
    let mut first = outs.swap_remove(0);
    first.client_median = client_median;
    first.quantize_median = quantize_median;
    first.server = server;
    first.server_unmask = server_unmask;
    first.prg_lower_bound = prg_lower_bound;
    first.ok = ok;
    first.error = error;
    Ok(first)
}

/// Fraction of seeded rounds that produce an aggregate under random-stage dropouts.
fn completion(p: &Params, rounds: u64, json: bool) {
    let mut completed = 0;
    let mut failures: Vec<String> = Vec::new();
    let mut k = 0;
    let mut t = 0;
    for r in 0..rounds {
        let seed = seed_bytes(p.seed.wrapping_add(r));
        let mut config = SecAggConfig::new(r, p.d);
        config.bits = p.bits;
        config.neighbours = p.k;
        config.threshold = p.t;
        config.graph_seed = seed;
        let mut sim = match Simulation::new(config, p.n, seed) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("round {r}: {e}"));
                continue;
            }
        };
        k = sim.server.plan().degree;
        t = sim.server.plan().threshold;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let inputs: BTreeMap<ClientId, Vec<u64>> = sim
            .clients
            .keys()
            .map(|&id| (id, (0..p.d).map(|_| rng.next_u64() & 0xFFFF).collect()))
            .collect();
        let ids: Vec<ClientId> = inputs.keys().copied().collect();
        if let Err(e) = sim.provide_inputs(&inputs) {
            failures.push(format!("round {r}: {e}"));
            continue;
        }
        let drops = drop_points(
            &mut rng,
            &ids,
            (p.dropout * f64::from(p.n)).floor() as usize,
            p.drop_stage,
        );
        for (&id, &point) in &drops {
            sim.drop_client(id, point);
        }
        let report = sim.run();
        match report.outcome {
            Ok(a) => {
                // Check exactness too: a completed round must output the survivors' sum.
                let mut want = vec![0u64; p.d];
                for s in &a.survivors {
                    for (w, x) in want.iter_mut().zip(&inputs[s]) {
                        *w = w.wrapping_add(*x);
                    }
                }
                prg::reduce(&mut want, p.bits);
                if want == a.sum {
                    completed += 1;
                } else {
                    failures.push(format!("round {r}: wrong sum"));
                }
            }
            Err(e) => failures.push(format!("round {r}: {e}")),
        }
    }
    if json {
        let fails: Vec<String> = failures.iter().map(|f| format!("{f:?}")).collect();
        println!(
            "{{\"mode\":\"completion\",\"n\":{},\"d\":{},\"dropout\":{},\"k\":{k},\"t\":{t},\"rounds\":{rounds},\"completed\":{completed},\"failures\":[{}]}}",
            p.n,
            p.d,
            p.dropout,
            fails.join(",")
        );
    } else {
        println!(
            "N={} d={} dropout={} k={k} t={t}: {completed}/{rounds} rounds completed",
            p.n, p.d, p.dropout
        );
        for f in failures {
            println!("  {f}");
        }
    }
}

fn parse_stage(s: &str) -> Result<DropStage, String> {
    Ok(match s {
        "advertise" => DropStage::At(DropPoint::BeforeAdvertise),
        "share" => DropStage::At(DropPoint::BeforeShareKeys),
        "masked" => DropStage::At(DropPoint::BeforeMaskedInput),
        "consistency" => DropStage::At(DropPoint::BeforeConsistency),
        "unmask" => DropStage::At(DropPoint::BeforeUnmask),
        "random" => DropStage::Random,
        _ => return Err(format!("unknown drop stage {s}")),
    })
}

/// Runs SecAgg+ rounds in-process and reports compute time and upload size (see the module
/// docs for the columns).
#[derive(clap::Parser)]
struct Cli {
    /// Clients.
    #[arg(long, default_value_t = 10)]
    n: u32,
    /// Vector length (a count, or a float such as 1e5).
    #[arg(long, default_value = "10000", value_parser = parse_count)]
    d: usize,
    /// Share of the clients that go silent.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Neighbours per client [default: resolved from N].
    #[arg(long)]
    k: Option<usize>,
    /// Shamir threshold [default: resolved from N].
    #[arg(long)]
    t: Option<usize>,
    /// Bits per element.
    #[arg(long, default_value_t = 32)]
    bits: u32,
    /// Seed of everything.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where dropped clients go silent: advertise, share, masked, consistency, unmask, random.
    #[arg(long, default_value = "masked", value_parser = parse_stage)]
    drop_stage: DropStage,
    /// Rounds per setting (medians are reported).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Redraw the drop set until every secret the server must rebuild keeps a threshold of
    /// holders.
    #[arg(long)]
    feasible_drops: bool,
    /// The grid: N in {10, 50, 100}, d in {1e4, 1e5}, dropout in {0, 0.1}.
    #[arg(long)]
    grid: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Run this many rounds and count how many complete, instead of timing.
    #[arg(long)]
    completion_rounds: Option<u64>,
}

impl Cli {
    fn params(&self) -> Params {
        Params {
            n: self.n,
            d: self.d,
            dropout: self.dropout,
            k: self.k,
            t: self.t,
            bits: self.bits,
            seed: self.seed,
            drop_stage: self.drop_stage,
            repeats: self.repeats,
            feasible_drops: self.feasible_drops,
        }
    }
}

/// A count written as an integer or a float (`100000`, `1e5`), which must be a whole
/// non-negative number.
fn parse_count(s: &str) -> Result<usize, String> {
    if let Ok(n) = s.parse::<usize>() {
        return Ok(n);
    }
    let f: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=usize::MAX as f64).contains(&f) || f.fract() != 0.0 {
        return Err(format!("{s:?} is not a whole non-negative count"));
    }
    Ok(f as usize)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let cli = <Cli as clap::Parser>::parse();
    let base = cli.params();
    if let Some(rounds) = cli.completion_rounds {
        completion(&base, rounds, cli.json);
        return;
    }
    let mut runs = Vec::new();
    if cli.grid {
        for n in [10u32, 50, 100] {
            for d in [10_000usize, 100_000] {
                for dropout in [0.0, 0.1] {
                    runs.push(Params {
                        n,
                        d,
                        dropout,
                        ..base.clone()
                    });
                }
            }
        }
    } else {
        runs.push(base);
    }
    if !cli.json {
        println!(
            "| N | d | dropout | k | t | ok | survivors | client compute, wall (cpu) | server compute, wall (cpu) | upload/client | masked-input msg | d*b/8 | PRG lower bound (cpu) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for p in &runs {
        let packed = (p.d * p.bits as usize).div_ceil(8);
        match run(p) {
            Ok(o) if cli.json => println!(
                "{{\"n\":{},\"d\":{},\"dropout\":{},\"bits\":{},\"k\":{},\"t\":{},\"repeats\":{},\"ok\":{},\"error\":{},\"survivors\":{},\"client_ms\":{:.4},\"client_cpu_ms\":{:.4},\"client_quantize_ms\":{:.4},\"server_ms\":{:.4},\"server_cpu_ms\":{:.4},\"server_unmask_ms\":{:.4},\"bytes_per_client\":{},\"bytes_masked_msg\":{},\"packed_bytes\":{packed},\"prg_bytes\":{},\"prg_ms\":{:.4},\"prg_cpu_ms\":{:.4}}}",
                p.n,
                p.d,
                p.dropout,
                p.bits,
                o.k,
                o.t,
                p.repeats,
                o.ok,
                o.error.map_or("null".into(), |e| format!("{e:?}")),
                o.survivors,
                ms(o.client_median.wall),
                ms(o.client_median.cpu),
                ms(o.quantize_median.cpu),
                ms(o.server.wall),
                ms(o.server.cpu),
                ms(o.server_unmask.cpu),
                o.upload_median,
                o.masked_bytes,
                o.prg_bytes,
                ms(o.prg_lower_bound.wall),
                ms(o.prg_lower_bound.cpu),
            ),
            Ok(o) => println!(
                "| {} | {} | {:.0}% | {} | {} | {} | {} | {:.1} ms ({:.1}) | {:.1} ms ({:.1}) | {} B | {} B | {packed} B | {:.1} ms |",
                p.n,
                p.d,
                p.dropout * 100.0,
                o.k,
                o.t,
                o.ok,
                o.survivors,
                ms(o.client_median.wall),
                ms(o.client_median.cpu),
                ms(o.server.wall),
                ms(o.server.cpu),
                o.upload_median,
                o.masked_bytes,
                ms(o.prg_lower_bound.cpu),
            ),
            Err(e) if cli.json => println!(
                "{{\"n\":{},\"d\":{},\"dropout\":{},\"ok\":false,\"error\":{e:?}}}",
                p.n, p.d, p.dropout
            ),
            Err(e) => println!(
                "| {} | {} | {:.0}% | error: {e} |",
                p.n,
                p.d,
                p.dropout * 100.0
            ),
        }
    }
}
