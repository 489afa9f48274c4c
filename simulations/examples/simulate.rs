//! Writes a consortium's logs: `cargo run --release -p medfl-simulations --example simulate --
//! <out_dir> [scenario.toml]` (the bundled default scenario when no file is given).

use medfl_accesslog::AttackKind;
use medfl_simulations::{Scenario, write_consortium};

/// Writes a consortium's logs.
#[derive(clap::Parser)]
struct Args {
    /// Output directory (one folder per hospital).
    out: std::path::PathBuf,
    /// Scenario file (TOML); the bundled default scenario if absent.
    scenario: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_toml(&std::fs::read_to_string(path)?)?,
        None => Scenario::default_embedded(),
    };
    let summaries = write_consortium(&scenario, &args.out)?;
    for s in summaries {
        let attacks: Vec<String> = AttackKind::ALL
            .iter()
            .zip(s.attack_events)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!("{}: {} events; {}", s.name, s.events, attacks.join(" "));
    }
    Ok(())
}
