//! The scale benchmark of issue #7: N simulated hospitals, a 10^4-parameter model, 10% dropout
//! per round, and how the seconds per round and the peak memory grow with N.
//!
//! Each N runs in its own child process (this example re-executes itself with `--child N`), so
//! its peak resident set (`VmHWM` in `/proc/self/status`) is its own and not the high-water mark
//! of an earlier, smaller or larger, run. The child prints one JSON line on stdout; the parent
//! gathers them into a table and checks that memory grows roughly linearly in N.
//!
//! What runs is the real thing, driven in one process by [`medfl::consortium`]: the coordinator's
//! and every hospital agent's state machines, DP-SGD training, distributed discrete Gaussian
//! noise, SecAgg+ with its default `O(log N)`-degree neighbour graph and the redb ledger on disk.
//!
//! # Data
//! Synthetic, seeded, and only there to give DP-SGD something to chew on: the point is protocol
//! scale, not detection. Hospital `h` draws `150..=250` rows of 22 features
//! `x = A z + b_h + 0.3 e`, with `z` (4 latent factors) and `e` standard normal, `A` a 22×4
//! mixing matrix shared by the consortium and `b_h` a hospital-specific offset (N(0, 0.5²) per
//! feature); each hospital then standardizes its columns with its own mean and deviation, as a
//! real agent does with its own access logs.
//!
//! # Model and training
//! An autoencoder 22 → 128 → 16 → 128 → 22 (10,022 parameters). Each selected hospital runs one
//! epoch of DP-SGD per round at sampling rate 0.1 (10 Poisson-sampled steps of ~20 rows), noise
//! multiplier 1.0, clip norm 1.0, Adam; FedAvg on the server.
//!
//! Run: `cargo run --release --example sim_scale -- [--sizes 10,100,1000] [--rounds 3]
//! [--json FILE]`

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use medfl::consortium::{Consortium, RoundReport, SimHospital, SimSettings};
use medfl::ledger::{AgreementId, MemberId};
use medfl::settings::RoundSettings;
use medfl_model::AutoencoderConfig;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Features per access event (the width of the real feature pipeline).
const FEATURES: usize = 22;
/// Latent factors of the synthetic data.
const FACTORS: usize = 4;
/// The model: 22 → 128 → 16 → 128 → 22, 10,022 parameters.
const MODEL: AutoencoderConfig = AutoencoderConfig {
    inputs: FEATURES,
    hidden: 128,
    latent: 16,
};
/// Prefix of the one stdout line a child prints for its parent.
const RESULT_TAG: &str = "SIM_SCALE_RESULT ";

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Seconds per round and peak memory of a simulated consortium of N hospitals")]
struct Args {
    /// Consortium sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Rounds per size.
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Seed of everything (data, keys, dropouts, noise).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Mean training rows per hospital (each draws uniformly within ±25%).
    #[arg(long, default_value_t = 200)]
    rows: usize,
    /// Probability that a selected hospital goes silent during a round.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Also write every round of every size to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the driver's progress within each round too.
    #[arg(long)]
    verbose: bool,
    /// Each hospital pays for its own checks, as a deployed agent does, instead of sharing
    /// equal states, plans and signature checks with the others in this process.
    #[arg(long)]
    alone: bool,
    /// Internal: run size N in this process and print its result line.
    #[arg(long, hide = true)]
    child: Option<usize>,
}

/// One round as the child measured it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RoundSample {
    /// Round number under the agreement.
    round: u64,
    /// Whether the round anchored on the ledger.
    anchored: bool,
    /// Why it failed, if it did.
    failure: Option<String>,
    /// Members selected.
    selected: usize,
    /// Members whose updates are in the aggregate.
    participants: usize,
    /// Selected members whose updates are not.
    dropped: usize,
    /// Largest cumulative epsilon after the round.
    max_epsilon: f64,
    /// Seconds of local DP-SGD, summed over hospitals.
    training_s: f64,
    /// Seconds of the agents' SecAgg+ and update encoding, summed over hospitals.
    agents_s: f64,
    /// Seconds of the coordinator's state machine.
    coordinator_s: f64,
    /// Seconds of the ledger append.
    ledger_s: f64,
    /// Wall seconds of the round.
    total_s: f64,
    /// Bytes the coordinator sent.
    bytes_out: u64,
    /// Bytes the coordinator received.
    bytes_in: u64,
}

impl RoundSample {
    fn from_report(r: &RoundReport) -> Self {
        RoundSample {
            round: r.metrics.round,
            anchored: r.model.is_some(),
            failure: r.failure.clone(),
            selected: r.metrics.selected,
            participants: r.metrics.participants,
            dropped: r.metrics.dropped.len(),
            max_epsilon: r.metrics.max_epsilon,
            training_s: r.times.training,
            agents_s: r.times.agents,
            coordinator_s: r.times.coordinator,
            ledger_s: r.times.ledger,
            total_s: r.times.total,
            bytes_out: r.bytes_out,
            bytes_in: r.bytes_in,
        }
    }
}

/// What one child reports for its N.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SizeResult {
    /// Hospitals.
    n: usize,
    /// Model parameters.
    params: usize,
    /// Peak resident set before anything of the consortium existed (KiB).
    baseline_kib: Option<u64>,
    /// Peak resident set at the end (KiB).
    peak_kib: Option<u64>,
    /// Seconds to generate the data and create ledger, coordinator and agents.
    setup_s: f64,
    /// Every round.
    rounds: Vec<RoundSample>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be in [0, 1), got {}", args.dropout);
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.rows < 4 {
        bail!("--rows must be at least 4, got {}", args.rows);
    }
    if let Some(n) = args.child {
        return child(&args, n);
    }
    if args.sizes.is_empty() || args.sizes.iter().any(|&n| n < 2) {
        bail!("--sizes needs sizes of at least 2 hospitals");
    }
    eprintln!(
        "model {FEATURES}-{}-{}-{}-{FEATURES}: {} parameters; {} rounds per size; dropout {}; seed {}; {}",
        MODEL.hidden,
        MODEL.latent,
        MODEL.hidden,
        MODEL.param_count(),
        args.rounds,
        args.dropout,
        args.seed,
        if args.alone {
            "each hospital pays for its own checks (--alone)"
        } else {
            "hospitals hold equal states and checks once"
        }
    );
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut results = Vec::new();
    for &n in &args.sizes {
        let started = Instant::now();
        let r = run_child(&exe, &args, n)?;
        eprintln!("N={n}: done in {:.1} s", started.elapsed().as_secs_f64());
        results.push(r);
    }
    print_table(&results);
    print_growth(&results);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs one size in a fresh process and parses its result line.
fn run_child(exe: &std::path::Path, args: &Args, n: usize) -> Result<SizeResult> {
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(n.to_string())
        .arg("--rounds")
        .arg(args.rounds.to_string())
        .arg("--seed")
        .arg(args.seed.to_string())
        .arg("--rows")
        .arg(args.rows.to_string())
        .args(args.alone.then_some("--alone"))
        .arg("--dropout")
        .arg(args.dropout.to_string());
    if args.verbose {
        cmd.arg("--verbose");
    }
    let mut proc = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = proc.stdout.take().context("the child's stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the child's output")?;
        if let Some(json) = line.strip_prefix(RESULT_TAG) {
            result = Some(
                serde_json::from_str::<SizeResult>(json)
                    .with_context(|| format!("parsing the result of N={n}"))?,
            );
        }
    }
    let status = proc.wait().context("waiting for the child")?;
    if !status.success() {
        bail!("the run with N={n} failed ({status})");
    }
    result.with_context(|| format!("the run with N={n} printed no result"))
}

/// A `VmHWM`/`VmRSS`-style field of `/proc/self/status`, in KiB (`None` off Linux).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The child: one consortium of `n` hospitals, `args.rounds` rounds.
fn child(args: &Args, n: usize) -> Result<()> {
    if n < 2 {
        bail!("a consortium needs at least 2 hospitals, got {n}");
    }
    let baseline_kib = proc_status_kib("VmHWM");
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let settings = settings(args)?;
    let hospitals = hospitals(n, args.rows, args.seed)?;
    let mut consortium = Consortium::create(dir.path(), hospitals, &settings)?;
    let setup_s = started.elapsed().as_secs_f64();
    eprintln!(
        "[N={n}] set up in {setup_s:.1} s, RSS {} MiB",
        proc_status_kib("VmRSS").map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
    );
    let mut rounds = Vec::new();
    for i in 1..=args.rounds {
        let verbose = args.verbose;
        let report = consortium.run_round(|msg| {
            if verbose {
                eprintln!("[N={n}]   {msg}");
            }
        })?;
        let s = RoundSample::from_report(&report);
        eprintln!(
            "[N={n}] round {i}/{}: {} {}/{} in, {} dropped; {:.2} s (training {:.2}, agents {:.2}, \
             coordinator {:.2}, ledger {:.3}); coordinator sent {:.1} MiB; RSS {} MiB",
            args.rounds,
            if s.anchored { "anchored" } else { "FAILED" },
            s.participants,
            s.selected,
            s.dropped,
            s.total_s,
            s.training_s,
            s.agents_s,
            s.coordinator_s,
            s.ledger_s,
            s.bytes_out as f64 / (1024.0 * 1024.0),
            proc_status_kib("VmRSS").map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
        );
        if let Some(f) = &s.failure {
            eprintln!("[N={n}]   failure: {f}");
        }
        if args.verbose {
            for why in &report.refusals {
                eprintln!("[N={n}]   {why}");
            }
        }
        rounds.push(s);
    }
    drop(consortium);
    let result = SizeResult {
        n,
        params: MODEL.param_count(),
        baseline_kib,
        peak_kib: proc_status_kib("VmHWM"),
        setup_s,
        rounds,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{RESULT_TAG}{}", serde_json::to_string(&result)?)?;
    Ok(())
}

/// The consortium's settings: DP-SGD kept cheap but real, default SecAgg+ graph, FedAvg.
fn settings(args: &Args) -> Result<SimSettings> {
    let mut rounds = RoundSettings::new(AgreementId::new("scale").map_err(anyhow::Error::msg)?);
    (rounds.hidden, rounds.latent, rounds.init_seed) = (MODEL.hidden, MODEL.latent, args.seed);
    rounds.training.sampling_rate = 0.1;
    // Generous: the benchmark measures protocol cost, not how soon budgets run out.
    let mut s = SimSettings::new(&rounds, args.seed, 1_000.0);
    s.coordinator.model = MODEL;
    s.dropout = args.dropout;
    s.share_between_hospitals = !args.alone;
    Ok(s)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha20Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// The synthetic hospitals described in the module docs.
fn hospitals(n: usize, mean_rows: usize, seed: u64) -> Result<Vec<SimHospital>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5ca1_e000);
    let mixing: Vec<f64> = (0..FEATURES * FACTORS).map(|_| normal(&mut rng)).collect();
    let spread = mean_rows / 4;
    (0..n)
        .map(|h| {
            let id = MemberId::new(format!("hospital-{h:04}")).map_err(anyhow::Error::msg)?;
            let rows = rng.random_range(mean_rows - spread..=mean_rows + spread);
            let offset: Vec<f64> = (0..FEATURES).map(|_| 0.5 * normal(&mut rng)).collect();
            let mut x = vec![0f64; rows * FEATURES];
            for row in x.chunks_exact_mut(FEATURES) {
                let z: Vec<f64> = (0..FACTORS).map(|_| normal(&mut rng)).collect();
                for (j, v) in row.iter_mut().enumerate() {
                    let m = &mixing[j * FACTORS..(j + 1) * FACTORS];
                    let signal: f64 = m.iter().zip(&z).map(|(a, b)| a * b).sum();
                    *v = signal + offset[j] + 0.3 * normal(&mut rng);
                }
            }
            Ok(SimHospital {
                id,
                train: standardize(&x, rows),
                // Employees of about 50 rows each: the scale test measures the protocol.
                employees: (0..rows).map(|r| (r % (rows / 50).max(1)) as u64).collect(),
                log: None,
            })
        })
        .collect()
}

/// Column-wise `(x - mean) / std` with the hospital's own moments.
fn standardize(x: &[f64], rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for j in 0..FEATURES {
        let col = || x.iter().skip(j).step_by(FEATURES);
        let mean = col().sum::<f64>() / rows as f64;
        let var = col().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64;
        let sd = var.sqrt().max(1e-9);
        for (o, v) in out.iter_mut().skip(j).step_by(FEATURES).zip(col()) {
            *o = ((v - mean) / sd) as f32;
        }
    }
    out
}

/// The median of `v` (`NaN` when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The rounds the medians cover: all but the first (warm-up), unless there is only one.
fn measured(r: &SizeResult) -> &[RoundSample] {
    if r.rounds.len() > 1 {
        &r.rounds[1..]
    } else {
        &r.rounds
    }
}

/// Memory the consortium itself added to the process (KiB).
fn added_kib(r: &SizeResult) -> Option<u64> {
    Some(r.peak_kib?.saturating_sub(r.baseline_kib.unwrap_or(0)))
}

/// Prints one row of medians per size.
fn print_table(results: &[SizeResult]) {
    println!();
    println!(
        "medians over rounds 2..R (round 1 is warm-up and excluded when R > 1); \
         times in seconds of this machine"
    );
    println!(
        "{:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "N",
        "params",
        "anchored",
        "s/round",
        "training",
        "agents",
        "coord",
        "ledger",
        "in",
        "dropped",
        "peak MiB",
        "KiB/hosp",
        "marg KiB",
        "coord MiB"
    );
    let mut previous: Option<&SizeResult> = None;
    for r in results {
        let m = measured(r);
        let med = |f: fn(&RoundSample) -> f64| median(m.iter().map(f).collect());
        let anchored = r.rounds.iter().filter(|s| s.anchored).count();
        let peak = r
            .peak_kib
            .map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0));
        let per = added_kib(r).map_or("?".into(), |k| format!("{:.0}", k as f64 / r.n as f64));
        let marginal = match (previous.and_then(|p| Some((p.n, p.peak_kib?))), r.peak_kib) {
            (Some((n0, k0)), Some(k1)) if r.n > n0 => {
                format!("{:.0}", (k1 as f64 - k0 as f64) / (r.n - n0) as f64)
            }
            _ => "-".into(),
        };
        previous = Some(r);
        println!(
            "{:>6} {:>7} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.3} {:>8.0} {:>8.0} {:>9} {:>9} {:>9} {:>10.2}",
            r.n,
            r.params,
            format!("{anchored}/{}", r.rounds.len()),
            med(|s| s.total_s),
            med(|s| s.training_s),
            med(|s| s.agents_s),
            med(|s| s.coordinator_s),
            med(|s| s.ledger_s),
            med(|s| s.participants as f64),
            med(|s| s.dropped as f64),
            peak,
            per,
            marginal,
            med(|s| s.bytes_out as f64) / (1024.0 * 1024.0),
        );
    }
    println!(
        "KiB/hosp: (peak RSS - peak RSS before the consortium existed) / N; marg KiB: extra peak \
         RSS per extra hospital since the previous size; coord MiB: bytes the coordinator sent \
         per round; anchored: anchored / completed rounds"
    );
}

/// Fits the growth exponent of memory and time between consecutive sizes.
fn print_growth(results: &[SizeResult]) {
    for w in results.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.n <= a.n {
            continue;
        }
        let ratio = (b.n as f64 / a.n as f64).ln();
        let exp = |x: f64, y: f64| (y / x).ln() / ratio;
        let mem = match (added_kib(a), added_kib(b)) {
            (Some(x), Some(y)) if x > 0 && y > 0 => {
                let e = exp(x as f64, y as f64);
                let verdict = if e <= 1.25 {
                    "roughly linear"
                } else if e < 1.75 {
                    "super-linear"
                } else {
                    "QUADRATIC"
                };
                format!("memory ~ N^{e:.2} ({verdict})")
            }
            _ => "memory: not measured".into(),
        };
        let t = |r: &SizeResult| median(measured(r).iter().map(|s| s.total_s).collect());
        let bytes =
            |r: &SizeResult| median(measured(r).iter().map(|s| s.bytes_out as f64).collect());
        println!(
            "N {} -> {}: {mem}; time/round ~ N^{:.2}; coordinator bytes ~ N^{:.2}",
            a.n,
            b.n,
            exp(t(a), t(b)),
            exp(bytes(a), bytes(b))
        );
    }
}
