//! Writes a consortium's logs: `cargo run --release -p medfl-simulations --example simulate --
//! <out_dir> [scenario.toml]` (the bundled default scenario when no file is given).

use medfl_accesslog::AttackKind;
use medfl_simulations::{Scenario, write_consortium};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: simulate <out_dir> [scenario.toml]")?;
    let scenario = match args.next() {
        Some(path) => Scenario::from_toml(&std::fs::read_to_string(&path)?)?,
        None => Scenario::default_embedded(),
    };
    let summaries = write_consortium(&scenario, std::path::Path::new(&out))?;
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
