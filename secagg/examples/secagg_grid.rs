//! Runs SecAgg+ rounds in-process and reports compute time and upload size.
//!
//! ```text
//! cargo run --release -p medfl-secagg --example secagg_grid -- \
//!     --n 100 --d 100000 --dropout 0.1 [--k 14] [--t 8] [--bits 32] [--seed 1]
//! cargo run --release -p medfl-secagg --example secagg_grid -- --grid
//! ```
//!
//! Dropouts are `floor(dropout * N)` clients chosen at random that go silent
//! after the share stage and before sending their masked input: the costliest
//! case for the server, which must then rebuild their mask keys and recompute
//! every pairwise mask they shared with a survivor.
//!
//! Columns: per-client compute (median over clients of the time spent inside
//! that client's state machine, all stages), server compute (time inside the
//! server's state machine), bytes uploaded per client (median of the summed
//! bincode-serialized sizes of its messages), and the time to merely generate
//! the PRG output the server must expand (a lower bound on server work).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use medfl_secagg::prg::{self, MaskDomain, Seed, Sign};
use medfl_secagg::sim::make_identities;
use medfl_secagg::{
    ClientId, ClientMessage, ClientSession, SecAggConfig, ServerEvent, ServerSession,
};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[derive(Debug, Clone)]
struct Params {
    n: u32,
    d: usize,
    dropout: f64,
    k: Option<usize>,
    t: Option<usize>,
    bits: u32,
    seed: u64,
}

struct Outcome {
    k: usize,
    t: usize,
    client_median: Duration,
    server: Duration,
    upload_median: usize,
    prg_lower_bound: Duration,
    survivors: usize,
    ok: bool,
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

fn run(p: &Params) -> Result<Outcome, String> {
    let mut config = SecAggConfig::new(1, p.d);
    config.bits = p.bits;
    config.neighbours = p.k;
    config.threshold = p.t;
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&p.seed.to_le_bytes());
    config.graph_seed = seed;
    let (roster, keys) = make_identities(p.n, seed);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let bincode_cfg = bincode::config::standard();

    let mut client_time: BTreeMap<ClientId, Duration> = BTreeMap::new();
    let mut upload: BTreeMap<ClientId, usize> = BTreeMap::new();
    let mut clients = BTreeMap::new();
    let modulus = if p.bits == 64 {
        u64::MAX
    } else {
        (1u64 << p.bits) - 1
    };
    for (id, sk) in keys {
        let input: Vec<u64> = (0..p.d).map(|_| rng.next_u64() & modulus).collect();
        let mut crng = ChaCha20Rng::from_seed(rng.random());
        let start = Instant::now();
        let mut c = ClientSession::new(config.clone(), id, sk, &roster, &mut crng)
            .map_err(|e| e.to_string())?;
        c.provide_input(input).map_err(|e| e.to_string())?;
        client_time.insert(id, start.elapsed());
        clients.insert(id, c);
    }
    let mut ids: Vec<ClientId> = clients.keys().copied().collect();
    ids.shuffle(&mut rng);
    let dropped: BTreeSet<ClientId> = ids
        .into_iter()
        .take((p.dropout * f64::from(p.n)).floor() as usize)
        .collect();

    let start = Instant::now();
    let mut server = ServerSession::new(config.clone(), &roster).map_err(|e| e.to_string())?;
    let mut server_time = start.elapsed();
    let k = server.plan().graph.max_degree();
    let t = server.plan().threshold;
    let mut result = None;
    let mut per_stage: BTreeMap<Option<medfl_secagg::Stage>, Duration> = BTreeMap::new();
    loop {
        let mut moved = false;
        for (&id, c) in clients.iter_mut() {
            loop {
                let s = Instant::now();
                let msg = c.poll_outgoing();
                *client_time.entry(id).or_default() += s.elapsed();
                let Some(msg) = msg else { break };
                if dropped.contains(&id) && matches!(msg, ClientMessage::MaskedInput { .. }) {
                    continue;
                }
                moved = true;
                let bytes =
                    bincode::serde::encode_to_vec(&msg, bincode_cfg).map_err(|e| e.to_string())?;
                *upload.entry(id).or_default() += bytes.len();
                let stage = server.stage();
                let s = Instant::now();
                let r = server.handle_message(id, msg);
                let el = s.elapsed();
                server_time += el;
                *per_stage.entry(stage).or_default() += el;
                r.map_err(|e| format!("server rejected {id}: {e}"))?;
            }
        }
        while let Some((to, msg)) = server.poll_outgoing() {
            moved = true;
            let Some(c) = clients.get_mut(&to) else {
                continue;
            };
            let s = Instant::now();
            let _ = c.handle_message(msg);
            *client_time.entry(to).or_default() += s.elapsed();
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Aggregated(a) => result = Some(Ok(a)),
                ServerEvent::Aborted(e) => result = Some(Err(e)),
                ServerEvent::StageClosed { .. } => {}
            }
        }
        if !moved {
            match server.stage() {
                Some(stage) => {
                    let s = Instant::now();
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
    let (ok, survivors) = match &result {
        Some(Ok(a)) => (true, a.survivors.clone()),
        _ => (false, Vec::new()),
    };

    // Lower bound: the PRG output the server must generate, and nothing else.
    let survivor_set: BTreeSet<ClientId> = survivors.iter().copied().collect();
    let graph = &server.plan().graph;
    let pairwise: usize = dropped
        .iter()
        .map(|&d| {
            graph
                .neighbours(d)
                .iter()
                .filter(|j| survivor_set.contains(j))
                .count()
        })
        .sum();
    let expansions = survivors.len() + pairwise;
    let mut acc = vec![0u64; p.d];
    let s = Instant::now();
    for i in 0..expansions {
        let seed = Seed([i as u8; 32]);
        prg::apply_mask(
            &mut acc,
            &seed,
            MaskDomain::SelfMask,
            Sign::Subtract,
            p.bits,
        );
    }
    let prg_lower_bound = s.elapsed();
    std::hint::black_box(&acc);

    let live: Vec<ClientId> = clients
        .keys()
        .copied()
        .filter(|c| !dropped.contains(c))
        .collect();
    Ok(Outcome {
        k,
        t,
        client_median: median(live.iter().map(|c| client_time[c]).collect()),
        server: server_time,
        upload_median: median(live.iter().map(|c| upload[c]).collect()),
        prg_lower_bound,
        survivors: survivors.len(),
        ok,
    })
}

fn parse(args: &[String]) -> Result<(Params, bool), String> {
    let mut p = Params {
        n: 10,
        d: 10_000,
        dropout: 0.0,
        k: None,
        t: None,
        bits: 32,
        seed: 1,
    };
    let mut grid = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--grid" {
            grid = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--n" => p.n = value.parse().map_err(|e| bad(&e))?,
            "--d" => p.d = value.parse::<f64>().map_err(|e| bad(&e))? as usize,
            "--dropout" => p.dropout = value.parse().map_err(|e| bad(&e))?,
            "--k" => p.k = Some(value.parse().map_err(|e| bad(&e))?),
            "--t" => p.t = Some(value.parse().map_err(|e| bad(&e))?),
            "--bits" => p.bits = value.parse().map_err(|e| bad(&e))?,
            "--seed" => p.seed = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((p, grid))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (base, grid) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut runs = Vec::new();
    if grid {
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
    println!(
        "| N | d | dropout | k | t | ok | survivors | client compute (median) | server compute | upload/client | PRG lower bound |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &runs {
        match run(p) {
            Ok(o) => println!(
                "| {} | {} | {:.0}% | {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} KiB | {:.1} ms |",
                p.n,
                p.d,
                p.dropout * 100.0,
                o.k,
                o.t,
                o.ok,
                o.survivors,
                o.client_median.as_secs_f64() * 1e3,
                o.server.as_secs_f64() * 1e3,
                o.upload_median as f64 / 1024.0,
                o.prg_lower_bound.as_secs_f64() * 1e3,
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
