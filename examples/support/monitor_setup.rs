//! A one-hospital consortium with a week of simulated log and a monitor model trained on it,
//! shared by the monitor examples.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use medfl::provision::{KeyGeneration, KeySource, provision};
use medfl_ledger::ConsortiumFile;

/// What [`setup`] made.
#[allow(dead_code)] // each example uses what it needs
pub struct Setup {
    /// The hospital's config.toml.
    pub config: PathBuf,
    /// Its log's events, in time order.
    pub events: Vec<medfl_accesslog::AccessEvent>,
    /// The folder of its log (events.csv, labels.csv, audit_events.ndjson, context/).
    pub log_dir: PathBuf,
}

/// Provisions the consortium under `dir/cons`, writes the hospital's log (and its context
/// feeds, copied into the member's folder) under `dir/logs`, trains the monitor model for
/// `epochs` (its threshold set for 2% false positives on held-out normal accesses).
pub fn setup(dir: &Path, epochs: usize) -> Result<Setup> {
    let plan = "name = \"load\"\ncreated_at = \"2026-11-01T00:00:00Z\"\nquorum = 1\n\n[[members]]\nid = \"coordinator\"\nrole = \"coordinator\"\naddress = \"/ip4/127.0.0.1/tcp/1\"\n\n[[members]]\nid = \"h\"\nrole = \"hospital\"\n\n[[agreements]]\nid = \"dua\"\npurpose = \"load\"\nmembers = [\"h\"]\nexpires_at = \"2030-01-01T00:00:00Z\"\nepsilon = 5.0\ndelta = 1e-6\n";
    let cons = dir.join("cons");
    provision(
        &ConsortiumFile::from_toml(plan)?,
        &cons,
        KeyGeneration::Central(KeySource::InsecureSeed(1)),
    )?;
    let mut sc = medfl_simulations::scenario::Scenario::from_toml(
        medfl_simulations::scenario::DEFAULT_TOML,
    )?;
    sc.hospitals.truncate(1);
    sc.days = 7;
    let (events, _) = medfl_simulations::generate_hospital(&sc, 0)?;
    let logs = dir.join("logs");
    medfl_simulations::write_consortium(&sc, &logs)?;
    let csv = logs.join(&sc.hospitals[0].name).join("events.csv");
    let labels = logs.join(&sc.hospitals[0].name).join("labels.csv");
    let ds = medfl::data::load(
        &csv,
        None,
        Some(&labels),
        None,
        medfl_accesslog::OnError::Reject,
    )
    .context("loading the log")?;
    let models = cons.join("h/models");
    std::fs::create_dir_all(&models)?;
    medfl::standalone::train(&ds, &csv, &models.join("current.model"), epochs, 0.02, 1)?;
    let context = logs.join(&sc.hospitals[0].name).join("context");
    let member_context = cons.join("h/context");
    std::fs::create_dir_all(&member_context)?;
    for f in std::fs::read_dir(&context)? {
        let f = f?;
        std::fs::copy(f.path(), member_context.join(f.file_name()))?;
    }
    Ok(Setup {
        config: cons.join("h/config.toml"),
        events,
        log_dir: logs.join(&sc.hospitals[0].name),
    })
}
