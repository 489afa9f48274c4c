//! Federated rounds run by the daemons themselves over real libp2p on loopback, timed from the
//! coordinator's own `metrics.jsonl`.
//!
//! It provisions a consortium of a coordinator and `--clients` hospitals (default 10) in a
//! temporary folder, writes each hospital a synthetic access log, and runs `medfl coordinator`
//! and one `medfl client` per hospital: the very `run` functions of the binary, each with its
//! own libp2p node (TCP + Noise + Yamux on 127.0.0.1), its own redb ledger copy and privacy
//! ledger, training on a blocking thread. The model is widened to about 10^5 parameters
//! (`--hidden`). Each round's figures are the coordinator's `metrics.jsonl` line, as an operator
//! reads them: wall time per secure-aggregation stage (the masked-input stage holds local
//! training), the coordinator's compute, the durable anchor append, and bytes on the wire.
//! Run with `cargo run --release --example round_bench`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medfl::daemon::{self, InsecureKeys};
use medfl::progress::Progress;
use medfl::provision::{KeyGeneration, KeySource, provision};
use medfl_ledger::ConsortiumFile;

/// Federated rounds run by the daemons over libp2p on loopback.
#[derive(clap::Parser)]
struct Args {
    /// Hospitals, each a `medfl client` with its own libp2p node.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=200))]
    clients: u64,
    /// Hidden width of the autoencoder (1612 gives about 10^5 parameters).
    #[arg(long, default_value_t = 1612, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    hidden: u64,
    /// Rounds to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// Days of synthetic access log per hospital.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u64).range(7..=60))]
    days: u64,
}

/// The stages of a round, in order, as the coordinator names them in `metrics.jsonl`.
const STAGES: [&str; 7] = [
    "advertise_keys",
    "reveal_nonces",
    "share_keys",
    "masked_input",
    "consistency_check",
    "unmask",
    "endorse",
];

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let dir = tempfile::tempdir()?;
    let cons = dir.path().join("cons");
    let hospitals: Vec<String> = (0..args.clients).map(|i| format!("hospital-{i}")).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    provision(
        &ConsortiumFile::from_toml(&plan(&hospitals, port))?,
        &cons,
        KeyGeneration::Central(KeySource::InsecureSeed(1)),
    )?;
    let coordinator_config = cons.join("coordinator/config.toml");
    tune(&coordinator_config, &args)?;
    let events = logs(dir.path(), args.days)?;
    eprintln!(
        "provisioned {} hospitals in {}; starting the daemons",
        args.clients,
        cons.display()
    );

    let started = Instant::now();
    let opts = daemon::coordinator::Options {
        rounds: Some(args.rounds),
        insecure_keys: InsecureKeys::Allow,
        console: None,
    };
    let config = coordinator_config.clone();
    let coordinator = tokio::spawn(async move { daemon::coordinator::run(&config, opts).await });
    let mut clients = Vec::new();
    for h in &hospitals {
        let config = cons.join(h).join("config.toml");
        let opts = daemon::agent::Options {
            data: Some(events.clone()),
            until_round: Some(args.rounds),
            insecure_keys: InsecureKeys::Allow,
            ..daemon::agent::Options::default()
        };
        clients.push(tokio::spawn(async move {
            daemon::agent::run(&config, opts).await
        }));
    }
    let metrics_path = cons.join("coordinator/metrics.jsonl");
    let progress = Progress::new(args.rounds, false);
    let mut shown = 0;
    while !coordinator.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        shown = show_progress(&progress, &metrics_path, shown, args.rounds);
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the rounds did not finish within an hour");
        }
    }
    drop(progress);
    coordinator.await?.context("the coordinator")?;
    for c in clients {
        c.await?.context("a hospital")?;
    }
    let rounds = anchored(&metrics_path)?;
    print_table(&args, &rounds);
    Ok(())
}

/// A consortium plan: the coordinator on `port`, every hospital under one agreement.
fn plan(hospitals: &[String], port: u16) -> String {
    let mut plan = format!(
        "name = \"round bench\"\ncreated_at = \"2026-11-01T00:00:00Z\"\nquorum = {}\n\n[[members]]\nid = \"coordinator\"\nrole = \"coordinator\"\naddress = \"/ip4/127.0.0.1/tcp/{port}\"\n",
        hospitals.len() / 2
    );
    for h in hospitals {
        plan.push_str(&format!(
            "\n[[members]]\nid = \"{h}\"\nrole = \"hospital\"\n"
        ));
    }
    let members: Vec<String> = hospitals.iter().map(|h| format!("\"{h}\"")).collect();
    plan.push_str(&format!(
        "\n[[agreements]]\nid = \"bench\"\npurpose = \"benchmark\"\nmembers = [{}]\nexpires_at = \"2030-01-01T00:00:00Z\"\nepsilon = 1000.0\ndelta = 1e-6\n",
        members.join(", ")
    ));
    plan
}

/// Sets the coordinator's `[rounds]`: the wide model, every hospital in each round, no wait
/// between rounds.
fn tune(config: &Path, args: &Args) -> Result<()> {
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(config)?)?;
    let rounds = doc
        .get_mut("rounds")
        .and_then(|r| r.as_table_mut())
        .context("the coordinator's config has no [rounds]")?;
    let n = i64::try_from(args.clients)?;
    rounds.insert("rounds".into(), i64::try_from(args.rounds)?.into());
    rounds.insert("hidden".into(), i64::try_from(args.hidden)?.into());
    rounds.insert("min_participants".into(), n.into());
    rounds.insert("interval_s".into(), 0.0.into());
    std::fs::write(config, toml::to_string(&doc)?)?;
    Ok(())
}

/// Writes one small hospital's synthetic log of `days` days; every client trains on it.
fn logs(dir: &Path, days: u64) -> Result<PathBuf> {
    let mut scenario = medfl_simulations::scenario::Scenario::from_toml(
        medfl_simulations::scenario::DEFAULT_TOML,
    )?;
    scenario.hospitals.truncate(1);
    scenario.days = u32::try_from(days)?;
    let out = dir.join("logs");
    medfl_simulations::write_consortium(&scenario, &out)?;
    let events = out.join(&scenario.hospitals[0].name).join("events.csv");
    if !events.is_file() {
        bail!("no events written to {}", events.display());
    }
    Ok(events)
}

/// Shows the rounds that ended since the last call; returns how many lines were read.
fn show_progress(progress: &Progress, path: &Path, shown: usize, target: u64) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return shown;
    };
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().skip(shown) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let round = v["round"].as_u64().unwrap_or(0);
        match (v["model"].as_str(), v["failure"].as_str()) {
            (Some(model), _) => {
                progress.step();
                progress.line(&format!(
                    "round {round}/{target} anchored in {:.2} s (model {}…)",
                    v["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                    model.chars().take(12).collect::<String>()
                ));
            }
            (None, Some(why)) => {
                progress.line(&format!("round {round}/{target} attempt failed: {why}"))
            }
            _ => {}
        }
    }
    lines.len()
}

/// One anchored round, from `metrics.jsonl`.
struct Round {
    duration_s: f64,
    stages_s: Vec<f64>,
    compute_s: f64,
    ledger_s: f64,
    bytes_out: f64,
    bytes_in: f64,
    participants: u64,
}

fn anchored(path: &Path) -> Result<Vec<Round>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rounds = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["model"].as_str().is_none() {
            continue;
        }
        let stage = |name: &str| {
            v["stage_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s[0].as_str() == Some(name))
                .filter_map(|s| s[1].as_f64())
                .sum::<f64>()
                / 1000.0
        };
        rounds.push(Round {
            duration_s: v["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            stages_s: STAGES.iter().map(|s| stage(s)).collect(),
            compute_s: v["compute_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            ledger_s: v["ledger_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            bytes_out: v["bytes_out"].as_f64().unwrap_or(f64::NAN),
            bytes_in: v["bytes_in"].as_f64().unwrap_or(f64::NAN),
            participants: v["participants"].as_u64().unwrap_or(0),
        });
    }
    if rounds.is_empty() {
        bail!("no round was anchored");
    }
    Ok(rounds)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn print_table(args: &Args, rounds: &[Round]) {
    let m = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let duration = m(&|r| r.duration_s);
    println!(
        "{} hospitals, hidden width {}, {} rounds anchored (medians; every figure from the coordinator's metrics.jsonl)\n",
        args.clients,
        args.hidden,
        rounds.len()
    );
    println!("| figure | median |");
    println!("|---|---|");
    println!("| round time | {duration:.3} s |");
    for (i, name) in STAGES.iter().enumerate() {
        println!("| stage {name} | {:.3} s |", m(&|r| r.stages_s[i]));
    }
    println!("| coordinator compute | {:.3} s |", m(&|r| r.compute_s));
    let ledger = m(&|r| r.ledger_s);
    println!(
        "| ledger anchoring | {ledger:.4} s ({:.3}% of the round) |",
        100.0 * ledger / duration
    );
    println!(
        "| bytes sent by the coordinator | {:.2} MiB |",
        m(&|r| r.bytes_out) / 1_048_576.0
    );
    println!(
        "| bytes received by the coordinator | {:.2} MiB |",
        m(&|r| r.bytes_in) / 1_048_576.0
    );
    println!("| participants | {} |", m(&|r| r.participants as f64));
}
