//! How fast the consortium view opens a long run (issue #17 asks for a 1,000-round,
//! 100-member run in under a second): writes a finished run of that size, serves it with the
//! console, opens it in headless Chromium five times (`tests/browser/load.mjs`), and prints
//! the median of each measure.
//!
//! The run is a real ledger, signed and checked by the contracts as it is appended: every
//! round a coordinator-signed anchor with every hospital participating and endorsing, the
//! privacy each spends recomputed by the accountant as the contract does. Its `rounds.jsonl`
//! rows (stages, durations, AUROC) are synthetic and seeded: the view's speed, not the run's
//! figures, is measured.
//!
//! Run: `cargo run --release --example console_scale -- [--rounds 1000] [--members 100]
//! [--loads 5]` (needs `tests/browser/node_modules`: `cd tests/browser && npm ci`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use medfl::ledger::testkit::{Fixture, HOUR, T0};
use medfl::ledger::{Hash, Ledger, MemberId, Timestamp, TxBody};
use rand::{RngExt, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Rounds in the run.
    #[arg(long, default_value_t = 1000)]
    rounds: u64,
    /// Hospitals in the consortium (each joins every round).
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Times the page is opened.
    #[arg(long, default_value_t = 5)]
    loads: usize,
    /// Where to write the run (a fresh temporary directory if absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| scratch.path().join("run"));
    let started = Instant::now();
    write_run(&dir, args.rounds, args.members)?;
    let bytes = std::fs::metadata(dir.join("ledger/ledger.redb"))?.len();
    eprintln!(
        "wrote a run of {} rounds over {} hospitals in {:.1} s (ledger {:.1} MB)",
        args.rounds,
        args.members,
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    let addr = medfl::console::spawn(
        "127.0.0.1:0".parse()?,
        medfl::console::RunDir::new(dir.clone()),
    )?;
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("node")
        .current_dir(&browser)
        .args([
            "load.mjs",
            &format!("http://{addr}/"),
            &args.rounds.to_string(),
            &args.loads.to_string(),
        ])
        .output()
        .context("running node (cd tests/browser && npm ci first)")?;
    if !out.status.success() {
        bail!(
            "the browser measurement failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let m: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "consortium view of {} rounds x {} hospitals, {} loads in headless Chromium",
        args.rounds, args.members, args.loads
    );
    println!();
    println!("measure                                                   median    min       max");
    println!(
        "--------------------------------------------------------  --------  --------  --------"
    );
    for (key, what) in [
        (
            "loaded",
            "loaded: rounds table, charts, members and blocks drawn",
        ),
        (
            "verified",
            "the page's own check of every header from the genesis",
        ),
    ] {
        let mut v: Vec<f64> = m[key]
            .as_array()
            .context("load.mjs answers arrays")?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{what:<56}  {median:>6.0} ms  {:>5.0} ms  {:>5.0} ms",
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Writes a finished run of `rounds` rounds over `members` hospitals into `dir`.
fn write_run(dir: &Path, rounds: u64, members: usize) -> Result<()> {
    let mut fixture = Fixture::new(17, members, 2);
    // A budget no run of this length reaches: the view is measured, not the accountant's stop.
    fixture.genesis.agreements[0].budget.epsilon = 1000.0;
    fixture.genesis.agreements[0].expires_at = Timestamp(T0.0 + 10 * 365 * 24 * HOUR);
    fixture.genesis_hash = fixture.genesis.hash()?;
    let ledger_dir = dir.join("ledger");
    std::fs::create_dir_all(&ledger_dir)?;
    let mut ledger = Ledger::create(&ledger_dir, &fixture.genesis)?;
    let hospitals: Vec<MemberId> = fixture
        .keys
        .iter()
        .filter(|(id, _)| id.as_str().starts_with("hospital"))
        .map(|(id, _)| id.clone())
        .collect();
    let coordinator = fixture.coordinator().0.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut previous = Hash::default();
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let time = Timestamp(T0.0 + round * 60_000);
        let mut anchor = fixture.round_on(ledger.state(), round, previous, &hospitals);
        anchor.previous_model = previous;
        fixture.endorse(&mut anchor, &hospitals);
        previous = anchor.model;
        let max_epsilon = anchor
            .participants
            .iter()
            .map(|(_, s)| s.epsilon_total)
            .fold(0.0, f64::max);
        let tx = fixture.tx(&coordinator, time, TxBody::AnchorRound(anchor));
        let block = fixture.block(ledger.state(), vec![tx], time);
        ledger.append_block(&block)?;
        let training: u64 = rng.random_range(150..400);
        rows.push(serde_json::json!({
            "step": round,
            "metrics": {
                "round": round, "session": rng.random::<u32>(), "selected": members,
                "left_out": {}, "participants": members, "dropped": [], "declined": [],
                "gone": [], "declines_repeated": 0, "max_epsilon": max_epsilon,
                "stage_ms": [["reveal_nonces", 1], ["share_keys", rng.random_range(2..9)],
                             ["masked_input", training], ["consistency_check", 1],
                             ["unmask", rng.random_range(1..5)], ["endorse", rng.random_range(2..8)]],
                "duration_ms": training + 20, "compute_ms": 5, "range": null,
            },
            "model": previous.to_string(), "failure": null,
            "times": { "total": (training + 20) as f64 / 1e3 },
            "bytes_out": 3_000_000, "bytes_in": 1_800_000, "attempts": 1, "refusals": [],
            "auroc": 0.9 + 0.09 * (1.0 - (-(round as f64) / 50.0).exp()) + rng.random_range(-0.004..0.004),
        }));
    }
    let mut lines = String::new();
    for r in &rows {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(dir.join(medfl::simulate::ROUNDS_FILE), lines)?;
    std::fs::write(dir.join("metrics.json"), serde_json::to_string(&rows)?)?;
    Ok(())
}
