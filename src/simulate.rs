//! `medfl simulate` and `medfl replay`: a whole consortium in one process, from the simulator's
//! logs to an anchored model, with everything a data scientist wants to look at afterwards.
//!
//! A run directory holds `scenario.toml` and `run.toml` (everything needed to re-run it),
//! `ledger/`, `models/` (content-addressed by hash), `metrics.json`, `metrics.csv`, and SVG
//! plots of AUROC and privacy spent per round (no training loss: updates carry none, and a
//! hospital's loss stays in its own log). `replay` re-runs the recorded configuration
//! in a scratch directory and compares every round's model hash with the one the ledger anchors.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use medfl_ledger::tx::ConsentChoice;
use medfl_ledger::{AggregationFloors, AgreementId, Hash, Ledger, MemberId, TxBody, verify_dir};
use medfl_model::cases::CaseRules;
use medfl_model::experiment::{HospitalData, SettingResult};
use medfl_model::train::{alert_threshold, score, training_device};
use medfl_model::{Autoencoder, AutoencoderConfig};
use medfl_protocol::GlobalModel;
use medfl_protocol::privacy::HospitalLevel;
use medfl_simulations::Scenario;
use serde::{Deserialize, Serialize};

use crate::consortium::{Consortium, RoundReport, SimHospital, SimLog, SimSettings};
use crate::detection::{self, Split};
use crate::model_store::ModelStore;
use crate::plot;
use crate::progress::Progress;
use crate::report::table;
use crate::settings::RoundSettings;

/// Everything that, with the scenario, determines a run.
///
/// The rounds themselves are configured by [`RoundSettings`], the schema and defaults a
/// deployed coordinator reads from its `[rounds]` table; the rest is what a simulation adds
/// (how many hospitals, how they drop out, what each holds itself to).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Format version of this file.
    pub version: u32,
    /// The one seed: scenario, keys, dropouts, noise, training (not the initial model: that is
    /// `rounds.init_seed`, as in a deployment).
    pub seed: u64,
    /// Hospitals (the scenario's are cycled or cut to this many).
    pub hospitals: usize,
    /// Probability that a selected hospital goes silent in a round.
    pub dropout: f64,
    /// Each hospital's epsilon budget under the agreement (its delta is `rounds.training.delta`).
    pub budget_epsilon: f64,
    /// Target false-positive rate of each hospital's alert threshold (a hospital's
    /// `[data] target_fpr`).
    pub target_fpr: f64,
    /// The hospital-level budget each hospital holds itself to (the distributed noise is
    /// calibrated to it; a hospital's `[data] hospital_budget`); absent, the aggregate's noise
    /// protects no hospital-level figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital: Option<HospitalLevel>,
    /// The agreement's delta (absent: the rounds' `training.delta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_delta: Option<f64>,
    /// The agreement's floors under the aggregation parameters (absent: the genesis defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floors: Option<AggregationFloors>,
    /// Endorsements a round anchor needs (absent: half the hospitals, at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// How rounds run: the same table, defaults and meaning as a coordinator's `[rounds]`.
    pub rounds: RoundSettings,
}

/// The version of `run.toml` this build writes and reads (2: rounds are a [`RoundSettings`]).
pub const RUN_VERSION: u32 = 2;

impl Default for RunConfig {
    fn default() -> Self {
        let mut rounds = RoundSettings::new(sim_agreement());
        rounds.rounds = 10;
        RunConfig {
            version: RUN_VERSION,
            seed: 20261124,
            hospitals: 5,
            dropout: 0.0,
            budget_epsilon: 8.0,
            target_fpr: 0.02,
            hospital: None,
            budget_delta: None,
            floors: None,
            quorum: None,
            rounds,
        }
    }
}

/// The agreement a simulated consortium's rounds run under.
fn sim_agreement() -> AgreementId {
    // A constant, valid id: `AgreementId::new` accepts it (the tests check `RunConfig::default`).
    AgreementId::new("simulation").unwrap_or_else(|_| unreachable!("a valid constant id"))
}

impl RunConfig {
    /// Sets the DP-SGD noise multiplier so that the whole run costs each hospital at most
    /// `epsilon` (employee level, at `training.delta`), and the budget to `epsilon`.
    pub fn calibrate_to(&mut self, epsilon: f64) -> Result<()> {
        self.check()?;
        let r = &mut self.rounds;
        let steps = medfl_protocol::privacy::steps_per_round(&r.training)?
            .checked_mul(r.rounds)
            .context("too many steps")?;
        let sigma = medfl_dp::calibrate_poisson_gaussian(
            r.training.sampling_rate,
            steps,
            epsilon,
            r.training.delta,
        )?;
        // The accountant charges the effective multiplier, a hair below the nominal one (the
        // lattice rounding's sensitivity, `medfl_model::dpsgd`): raise σ until the charged
        // figure itself meets the target.
        let model = r.model();
        r.training.noise_multiplier = sigma;
        for _ in 0..10_000 {
            let charged = medfl_protocol::privacy::epsilon_after(&r.training, model, r.rounds)?;
            if charged <= epsilon {
                self.budget_epsilon = epsilon;
                return Ok(());
            }
            r.training.noise_multiplier *= 1.0 + 1e-4;
        }
        bail!("no noise multiplier near {sigma} meets epsilon {epsilon}")
    }

    /// Sets the aggregate's distributed-noise multiplier so that the whole run costs each
    /// hospital at most `epsilon` at the hospital level (at `training.delta`) with `colluders`
    /// of each round's minimum survivors assumed hostile, and holds every hospital to it.
    pub fn calibrate_hospital_to(&mut self, epsilon: f64, colluders: u64) -> Result<()> {
        self.check()?;
        let r = &mut self.rounds;
        r.ddg.noise_multiplier = medfl_protocol::privacy::calibrate_hospital_noise(
            &r.ddg,
            r.model(),
            self.hospitals as u64,
            colluders,
            r.rounds,
            epsilon,
            r.training.delta,
        )?;
        self.hospital = Some(HospitalLevel { epsilon, colluders });
        Ok(())
    }

    /// The network every hospital trains.
    pub fn model(&self) -> AutoencoderConfig {
        self.rounds.model()
    }

    /// Parses `run.toml`, naming an older version instead of reporting its keys as unknown.
    pub fn from_toml(text: &str) -> Result<RunConfig> {
        let table: toml::Table = toml::from_str(text)?;
        let version = table.get("version").and_then(toml::Value::as_integer);
        if version != Some(i64::from(RUN_VERSION)) {
            bail!(
                "run.toml version {} is not supported (expected {RUN_VERSION}; version 1 files \
                 predate the shared [rounds] table: re-run the simulation with this build)",
                version.map_or("missing".to_string(), |v| v.to_string())
            );
        }
        let run: RunConfig = toml::from_str(text)?;
        run.check()?;
        Ok(run)
    }

    /// Checks what the types do not.
    pub fn check(&self) -> Result<()> {
        if self.version != RUN_VERSION {
            bail!(
                "run.toml version {} is not supported (expected {RUN_VERSION}; version 1 files \
                 predate the shared [rounds] table)",
                self.version
            );
        }
        if self.hospitals < 2 {
            bail!(
                "a consortium needs at least 2 hospitals, got {}",
                self.hospitals
            );
        }
        if self.rounds.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout {} must be in [0, 1)", self.dropout);
        }
        if !(self.target_fpr > 0.0 && self.target_fpr < 1.0) {
            bail!("target FPR {} must be in (0, 1)", self.target_fpr);
        }
        self.rounds.check()?;
        if self.rounds.min_participants > self.hospitals {
            bail!(
                "[rounds] min_participants = {} but the consortium has {} hospitals",
                self.rounds.min_participants,
                self.hospitals
            );
        }
        Ok(())
    }

    /// What a provisioned consortium (the folder `medfl provision` wrote) would run: its
    /// coordinator's `[rounds]`, its genesis's agreement (budget, floors, strategy) and quorum,
    /// its hospitals' count and `[data]` settings. Keys and data are simulated; every parameter
    /// is the consortium's. Hospitals must agree on `target_fpr` and `hospital_budget`, since
    /// the simulator holds every hospital to one of each.
    pub fn from_consortium(dir: &Path) -> Result<RunConfig> {
        use crate::provision::{MemberConfig, files};
        let mut configs = Vec::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path().join(files::CONFIG);
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let config: MemberConfig = toml::from_str(&text)
                .with_context(|| format!("{} is not a member config", path.display()))?;
            configs.push((path, config));
        }
        configs.sort_by(|a, b| a.1.member.cmp(&b.1.member));
        let Some((coordinator_path, coordinator, rounds)) = configs
            .iter()
            .find_map(|(p, c)| c.rounds.clone().map(|r| (p.clone(), c, r)))
        else {
            bail!(
                "{} holds no coordinator config (a member folder whose config.toml has a \
                 [rounds] table): give the folder `medfl provision` wrote",
                dir.display()
            );
        };
        let genesis_path = coordinator_path
            .parent()
            .map(|p| p.join(&coordinator.genesis))
            .context("the coordinator's folder")?;
        let text = std::fs::read_to_string(&genesis_path)
            .with_context(|| format!("reading {}", genesis_path.display()))?;
        let genesis = medfl_ledger::Genesis::from_toml(&text)
            .with_context(|| format!("{} is not a genesis", genesis_path.display()))?;
        let agreement = genesis
            .agreements
            .iter()
            .find(|a| a.id == rounds.agreement)
            .with_context(|| {
                format!(
                    "the coordinator's rounds run under agreement {}, which the genesis lacks",
                    rounds.agreement
                )
            })?;
        if agreement.strategy != rounds.strategy {
            bail!(
                "the coordinator's strategy {:?} is not the agreement's {:?}: its hospitals would \
                 decline every round",
                rounds.strategy,
                agreement.strategy
            );
        }
        let data: Vec<_> = configs
            .iter()
            .filter(|(_, c)| agreement.members.contains(&c.member))
            .filter_map(|(_, c)| c.data.clone())
            .collect();
        let first = data.first();
        if data.iter().any(|d| {
            Some(d.target_fpr) != first.map(|f| f.target_fpr)
                || d.hospital_budget != first.and_then(|f| f.hospital_budget)
        }) {
            bail!(
                "the hospitals' [data] target_fpr or hospital_budget differ; the simulator holds \
                 every hospital to one of each"
            );
        }
        // The simulator holds each hospital to the agreement's budget and to a hospital-level
        // budget at the rounds' delta; a hospital's own different budget would make it decline
        // rounds the simulation accepts, so it is refused rather than ignored.
        let agreed = (agreement.budget.epsilon, agreement.budget.delta);
        if data
            .iter()
            .any(|d| d.privacy_budget.is_some_and(|b| b != agreed))
        {
            bail!(
                "a hospital's [data] privacy_budget differs from the agreement's {agreed:?}; the \
                 simulator holds every hospital to the agreement's"
            );
        }
        if let Some((_, delta, _)) = first.and_then(|d| d.hospital_budget)
            && delta != rounds.training.delta
        {
            bail!(
                "the hospitals' hospital_budget delta {delta} differs from the rounds' \
                 training.delta {}; the simulator holds the hospital-level budget at the latter",
                rounds.training.delta
            );
        }
        let defaults = RunConfig::default();
        let mut rounds = rounds;
        if rounds.rounds == 0 {
            // "Until stopped" has no end to simulate; take the simulation's default length.
            rounds.rounds = defaults.rounds.rounds;
        }
        let run = RunConfig {
            hospitals: agreement.members.len(),
            budget_epsilon: agreement.budget.epsilon,
            budget_delta: Some(agreement.budget.delta),
            floors: Some(agreement.floors),
            quorum: Some(genesis.quorum),
            target_fpr: first.map_or(defaults.target_fpr, |d| d.target_fpr),
            hospital: first
                .and_then(|d| d.hospital_budget)
                .map(|(epsilon, _, colluders)| HospitalLevel { epsilon, colluders }),
            rounds,
            ..defaults
        };
        run.check()
            .with_context(|| format!("the consortium in {}", dir.display()))?;
        Ok(run)
    }

    fn settings(&self) -> SimSettings {
        SimSettings {
            coordinator: self.rounds.coordinator_config(),
            pacing: self.rounds.pacing(),
            init_seed: self.rounds.init_seed,
            budget_delta: self.budget_delta.unwrap_or(self.rounds.training.delta),
            floors: self.floors.unwrap_or_default(),
            quorum: self.quorum,
            dropout: self.dropout,
            seed: self.seed,
            budget_epsilon: self.budget_epsilon,
            hospital: self.hospital,
            share_between_hospitals: true,
        }
    }
}

/// Cuts or cycles the scenario's hospitals to `n`, renaming copies `name-2`, `name-3`, ...
pub fn resize(scenario: &mut Scenario, n: usize) -> Result<()> {
    let base = scenario.hospitals.clone();
    if base.is_empty() {
        bail!("the scenario has no hospitals");
    }
    scenario.hospitals = (0..n)
        .map(|i| {
            let mut h = base[i % base.len()].clone();
            if i >= base.len() {
                h.name = format!("{}-{}", h.name, i / base.len() + 1);
            }
            h
        })
        .collect();
    scenario.validate()?;
    Ok(())
}

/// Each hospital's detection with `model`: its own threshold, its own test days.
fn evaluate(
    model: &GlobalModel,
    hospitals: &[HospitalData],
    target_fpr: f64,
) -> Result<SettingResult> {
    let device = training_device();
    let cfg = model.file.config;
    let net = Autoencoder::new(cfg, 0, &device)?.load_flat(cfg, &model.file.params)?;
    let mut out = Vec::new();
    for h in hospitals {
        let t = alert_threshold(
            &net,
            &h.validation_normal,
            cfg.inputs,
            target_fpr,
            h.policy,
            &device,
        )?;
        let test = score(&net, &h.test, cfg.inputs, &device)?;
        out.push((h.name.clone(), h.evaluate(&test, t, &CaseRules::default())?));
    }
    Ok(SettingResult {
        setting: "medfl federated (DP-SGD + SecAgg+)",
        hospitals: out,
        model_hash: Some(model.hash.to_string()),
        losses: Vec::new(),
    })
}

/// One row of `metrics.csv` / `metrics.json`: one step of the run, which anchors ledger round
/// `report.metrics.round` or fails it (a failed round is tried again at the next step).
#[derive(Clone, Debug, Serialize)]
pub struct RoundRow {
    /// The run's step, from 1: what the progress bar counts.
    pub step: u64,
    /// The round's report.
    #[serde(flatten)]
    pub report: RoundReport,
    /// Macro AUROC of the global model after the round.
    pub auroc: Option<f64>,
}

/// The file a run appends each step to as it ends (one JSON [`RoundRow`] a line), so that a
/// reader such as the console follows a run while it goes on.
pub const ROUNDS_FILE: &str = "rounds.jsonl";

/// Appends `row` to the run's [`ROUNDS_FILE`] as one line, written whole.
fn append_round(dir: &Path, row: &RoundRow) -> Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(row)?;
    line.push(b'\n');
    let path = dir.join(ROUNDS_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&line))
        .with_context(|| format!("appending to {}", path.display()))
}

/// Creates `dir` (which must not hold a run already) and checks it is writable.
fn prepare_out(dir: &Path) -> Result<()> {
    if dir.join("ledger").exists() {
        bail!(
            "{} already holds a run (ledger/ exists); choose another --out",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(".medfl-write-test");
    std::fs::write(&probe, b"").with_context(|| format!("{} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Runs a simulation into `out`; returns the per-round rows.
pub fn simulate(scenario_text: &str, run: &RunConfig, out: &Path) -> Result<Vec<RoundRow>> {
    run.check()?;
    let mut scenario = Scenario::from_toml(scenario_text).context("scenario")?;
    scenario.seed = run.seed;
    resize(&mut scenario, run.hospitals)?;
    prepare_out(out)?;
    std::fs::write(out.join("scenario.toml"), scenario_text).context("writing scenario.toml")?;
    std::fs::write(out.join("run.toml"), toml::to_string(run)?).context("writing run.toml")?;

    let model = run.model();
    let mut statement = medfl_protocol::privacy::statement(
        &run.rounds.training,
        model,
        run.rounds.rounds,
        medfl_protocol::privacy::NoiseSource::ReproducibleSeed,
    )?;
    statement.push('\n');
    statement.push_str(&medfl_protocol::privacy::hospital_statement(
        &run.rounds.ddg,
        model,
        run.hospitals as u64,
        run.rounds.rounds,
        run.rounds.training.delta,
        run.hospital,
    ));
    eprintln!("{statement}");
    std::fs::write(out.join("privacy.txt"), format!("{statement}\n"))
        .context("writing privacy.txt")?;
    let (rows, hospitals) = execute(&scenario, run, out, true)?;
    write_outputs(out, &rows)?;

    // The summary a person reads: every step, failed ones included, then detection.
    println!("{}", rounds_table(&rows));
    let last_eval = rows
        .iter()
        .rev()
        .find_map(|r| r.report.model.as_ref().map(|_| ()));
    let ledger = Ledger::open(&out.join("ledger"))?;
    let final_model = latest_model(&ledger, out)?;
    if let (Some(()), Some(model)) = (last_eval, &final_model) {
        let result = evaluate(model, &hospitals, run.target_fpr)?;
        println!("{}", detection::render(&[result], run.target_fpr));
    }
    println!("{}", privacy_table(&ledger)?);
    drop(ledger);
    let report = verify_dir(&out.join("ledger"), None);
    match report {
        Ok(r) => println!(
            "ledger verified: {} blocks, {} transactions, every signature, hash link and contract rule checked",
            r.height, r.transactions
        ),
        Err(e) => bail!("the ledger does not verify: {e}"),
    }
    if let Some(m) = final_model {
        println!("final model {} (models/{}.model)", m.hash, m.hash);
    }
    println!("outputs in {}", out.display());
    Ok(rows)
}

/// Generates data and runs the rounds; shared by `simulate` and `replay`.
fn execute(
    scenario: &Scenario,
    run: &RunConfig,
    dir: &Path,
    chatty: bool,
) -> Result<(Vec<RoundRow>, Vec<HospitalData>)> {
    let progress = Progress::new(run.rounds.rounds, !chatty);
    let say = |m: &str| progress.line(m);
    // Logs are kept only when patients will opt out: they are what consent is applied to.
    let opt_outs = scenario.consent.opt_outs > 0;
    let data = detection::consortium_data_with_logs(scenario, Split::default(), opt_outs, say)?;
    let (hospitals, logs): (Vec<HospitalData>, Vec<_>) = data.into_iter().unzip();
    let inputs = hospitals.first().map(|h| h.n_cols).unwrap_or(0);
    let sims = hospitals
        .iter()
        .zip(logs)
        .map(|(p, log)| {
            Ok(SimHospital {
                id: MemberId::new(p.name.clone()).map_err(anyhow::Error::msg)?,
                train: p.train.clone(),
                employees: p.train_employees.clone(),
                log: log.map(|(events, window)| SimLog { events, window }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if inputs != run.model().inputs {
        bail!(
            "the scenario's features are {inputs} wide, the model's input {}",
            run.model().inputs
        );
    }
    let mut consortium = Consortium::create(dir, sims, &run.settings())?;
    let mut rows = Vec::new();
    for r in 1..=run.rounds.rounds {
        if opt_outs && r == scenario.consent.after_round + 1 {
            let mut height = 0;
            for (i, h) in hospitals.iter().enumerate() {
                let patients = medfl_simulations::opt_out_patients(scenario, i)?;
                let refs: Vec<&str> = patients.iter().map(String::as_str).collect();
                let id = MemberId::new(h.name.clone()).map_err(anyhow::Error::msg)?;
                height = consortium.record_consent(&id, &refs, ConsentChoice::OptOut)?;
            }
            say(&format!(
                "consent: {} patients of each hospital opted out (ledger height {height}); rounds from {r} on train without their records",
                scenario.consent.opt_outs
            ));
        }
        let report = consortium.run_round(|stage| progress.stage(&format!("step {r}: {stage}")))?;
        let auroc = match &report.model {
            Some(_) => evaluate(consortium.model(), &hospitals, run.target_fpr)?.mean(|e| e.auroc),
            None => None,
        };
        progress.step();
        progress.line(&format!(
                "step {r}/{}, round {} ({} attempt{}): {} participants, {} dropped, AUROC {}, max ε {:.3}, {:.1} s{}",
                run.rounds.rounds,
                report.metrics.round,
                report.attempts,
                if report.attempts == 1 { "" } else { "s" },
                report.metrics.participants,
                report.metrics.dropped.len(),
                auroc.map_or("-".into(), |a| format!("{a:.3}")),
                report.metrics.max_epsilon,
                report.times.total,
                report
                    .failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" — FAILED: {f}")),
            ));
        let row = RoundRow {
            step: r,
            report,
            auroc,
        };
        append_round(dir, &row)?;
        rows.push(row);
    }
    Ok((rows, hospitals))
}

/// One line per step: the round it ran, its attempts, who took part, and how it ended.
fn rounds_table(rows: &[RoundRow]) -> String {
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.report.metrics;
            vec![
                r.step.to_string(),
                m.round.to_string(),
                r.report.attempts.to_string(),
                m.participants.to_string(),
                m.dropped.len().to_string(),
                r.auroc.map_or("-".into(), |a| format!("{a:.3}")),
                format!("{:.3}", m.max_epsilon),
                match (&r.report.model, &r.report.failure) {
                    (Some(h), _) => format!("anchored {}..", &h.to_string()[..12]),
                    (None, Some(f)) => format!("FAILED: {f}"),
                    (None, None) => "FAILED".into(),
                },
            ]
        })
        .collect();
    let failed = rows.iter().filter(|r| r.report.model.is_none()).count();
    format!(
        "rounds ({} steps, {failed} failed)\n{}",
        rows.len(),
        table(
            &[
                "step",
                "round",
                "attempts",
                "participants",
                "dropped",
                "AUROC",
                "max epsilon",
                "outcome"
            ],
            &lines
        )
    )
}

fn latest_model(ledger: &Ledger, dir: &Path) -> Result<Option<GlobalModel>> {
    let Some(a) = ledger.state().agreements().next() else {
        return Ok(None);
    };
    let Some(hash) = a.last_model else {
        return Ok(None);
    };
    Ok(Some(ModelStore::open(&dir.join("models"))?.get_any(&hash)?))
}

fn privacy_table(ledger: &Ledger) -> Result<String> {
    let mut rows = Vec::new();
    for a in ledger.state().agreements() {
        for m in &a.agreement.members {
            rows.push(vec![
                m.to_string(),
                a.rounds_joined.get(m).copied().unwrap_or(0).to_string(),
                format!("{:.3}", a.spent.get(m).copied().unwrap_or(0.0)),
                format!("{:.1}", a.agreement.budget.epsilon),
                format!("{:.0e}", a.agreement.budget.delta),
            ]);
        }
    }
    Ok(format!(
        "privacy spent per hospital (employee-level DP-SGD: epsilon per employee, as anchored on the ledger)\n{}",
        table(
            &["hospital", "rounds", "epsilon spent", "budget", "delta"],
            &rows
        )
    ))
}

fn write_outputs(out: &Path, rows: &[RoundRow]) -> Result<()> {
    std::fs::write(
        out.join("metrics.json"),
        serde_json::to_string_pretty(rows)?,
    )
    .context("writing metrics.json")?;
    let mut csv = String::from(
        "step,round,attempts,anchored,participants,dropped,auroc,max_epsilon,seconds_total,seconds_training,seconds_agents,seconds_coordinator,seconds_ledger,bytes_out,bytes_in\n",
    );
    for r in rows {
        let m = &r.report.metrics;
        let t = &r.report.times;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{:.6},{:.4},{:.4},{:.4},{:.4},{:.5},{},{}\n",
            r.step,
            m.round,
            r.report.attempts,
            r.report.model.is_some(),
            m.participants,
            m.dropped.len(),
            r.auroc.map_or(String::new(), |a| format!("{a:.6}")),
            m.max_epsilon,
            t.total,
            t.training,
            t.agents,
            t.coordinator,
            t.ledger,
            r.report.bytes_out,
            r.report.bytes_in
        ));
    }
    std::fs::write(out.join("metrics.csv"), csv).context("writing metrics.csv")?;
    let series = |f: &dyn Fn(&RoundRow) -> Option<f64>| -> Vec<(u64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|y| (r.report.metrics.round, y)))
            .collect()
    };
    // AUROC on the half of its scale that means anything (0.5 is chance); epsilon from 0.
    let plots = [
        (
            "auroc.svg",
            "Detection AUROC of the global model (macro over hospitals)",
            "AUROC",
            series(&|r| r.auroc),
            plot::YRange { lo: 0.5, hi: 1.0 },
        ),
        (
            "privacy.svg",
            "Privacy spent: largest cumulative epsilon",
            "epsilon",
            series(&|r| Some(r.report.metrics.max_epsilon)),
            plot::YRange { lo: 0.0, hi: 0.0 },
        ),
    ];
    for (file, title, y, points, range) in plots {
        let svg = plot::line_chart(title, "round", y, &points, range)?;
        std::fs::write(out.join(file), svg).with_context(|| format!("writing {file}"))?;
    }
    Ok(())
}

/// What `replay` found.
#[derive(Debug)]
pub struct ReplayReport {
    /// Rounds compared.
    pub rounds: usize,
}

/// Re-runs the run recorded in `dir` and checks each round's model hash against its ledger.
pub fn replay(dir: &Path) -> Result<ReplayReport> {
    let read = |name: &str| -> Result<String> {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{} is not a simulation run directory: cannot read {}",
                dir.display(),
                p.display()
            )
        })
    };
    let scenario_text = read("scenario.toml")?;
    let run = RunConfig::from_toml(&read("run.toml")?).context("run.toml")?;
    run.check()?;
    let verified = verify_dir(&dir.join("ledger"), None)
        .with_context(|| format!("the ledger in {} does not verify", dir.display()))?;
    let ledger = Ledger::open_snapshot(&dir.join("ledger"))?;
    let mut anchored: Vec<(u64, Hash)> = Vec::new();
    for h in 1..=ledger.state().height() {
        let block = ledger
            .block(h)?
            .with_context(|| format!("block {h} is missing"))?;
        for tx in block.txs {
            if let TxBody::AnchorRound(r) = tx.body {
                anchored.push((r.round, r.model));
            }
        }
    }
    drop(ledger);
    let mut scenario = Scenario::from_toml(&scenario_text).context("scenario.toml")?;
    scenario.seed = run.seed;
    resize(&mut scenario, run.hospitals)?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    eprintln!(
        "replaying {} rounds of {} hospitals (ledger: {} blocks verified)",
        run.rounds.rounds, run.hospitals, verified.height
    );
    let (rows, _) = execute(&scenario, &run, scratch.path(), true)?;
    let replayed: Vec<(u64, Hash)> = rows
        .iter()
        .filter_map(|r| r.report.model.map(|m| (r.report.metrics.round, m)))
        .collect();
    for (i, (round, hash)) in anchored.iter().enumerate() {
        match replayed.get(i) {
            Some((r, h)) if r == round && h == hash => {}
            Some((r, h)) => bail!(
                "round {round} diverges: the ledger anchors model {hash}, the replay produced {h} (replayed round {r})"
            ),
            None => bail!(
                "round {round} diverges: the ledger anchors model {hash}, the replay produced no model"
            ),
        }
    }
    if replayed.len() != anchored.len() {
        bail!(
            "round {} diverges: the replay anchored {} rounds, the ledger {}",
            anchored.len() + 1,
            replayed.len(),
            anchored.len()
        );
    }
    Ok(ReplayReport {
        rounds: anchored.len(),
    })
}

/// Default output directory: `runs/sim-<seed>-<hospitals>h-<rounds>r-<id>`, the id a hash of
/// the whole run configuration and the scenario, so runs that differ in any setting (a
/// strategy, an epsilon) get their own folders and only the very same run collides.
pub fn default_out(run: &RunConfig, scenario: &str) -> Result<PathBuf> {
    let config = toml::to_string(run)?;
    let id = Hash::tagged(
        b"medfl/run-dir/v1",
        &[config.as_bytes(), scenario.as_bytes()],
    );
    Ok(PathBuf::from("runs").join(format!(
        "sim-{}-{}h-{}r-{}",
        run.seed,
        run.hospitals,
        run.rounds.rounds,
        &id.to_string()[..8]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::{KeyGeneration, KeySource, MemberConfig, files, provision};

    /// Provisions the example consortium into a fresh directory.
    fn provisioned() -> (tempfile::TempDir, PathBuf) {
        let text = include_str!("../examples/consortium.toml");
        let plan = medfl_ledger::ConsortiumFile::from_toml(text).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("cons");
        provision(
            &plan,
            &out,
            KeyGeneration::Central(KeySource::InsecureSeed(3)),
        )
        .unwrap();
        (tmp, out)
    }

    #[test]
    fn the_default_run_passes_its_own_checks_and_round_trips_through_toml() {
        let run = RunConfig::default();
        run.check().unwrap();
        let back: RunConfig = toml::from_str(&toml::to_string(&run).unwrap()).unwrap();
        assert_eq!(back, run);
        assert_eq!(
            RunConfig::from_toml(&toml::to_string(&run).unwrap()).unwrap(),
            run
        );
        // A version-1 file (rounds as loose keys) is refused by name, not misread.
        let v1 = "version = 1\nseed = 3\nhospitals = 5\nrounds = 10\ndropout = 0.0\nhidden = 32\n";
        let err = RunConfig::from_toml(v1).unwrap_err().to_string();
        assert!(err.contains("version 1 is not supported"), "{err}");
    }

    #[test]
    fn a_provisioned_consortium_is_simulated_with_its_own_parameters() {
        let (_tmp, out) = provisioned();
        // The operator tunes the coordinator's rounds after provisioning.
        let path = out.join("coordinator").join(files::CONFIG);
        let mut config: MemberConfig =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rounds = config.rounds.as_mut().unwrap();
        (rounds.hidden, rounds.stage_timeout_s, rounds.rounds) = (16, 45.0, 4);
        rounds.training.noise_multiplier = 1.3;
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

        let run = RunConfig::from_consortium(&out).unwrap();
        assert_eq!(run.rounds, *config.rounds.as_ref().unwrap());
        assert_eq!(run.hospitals, 5);
        assert_eq!((run.budget_epsilon, run.budget_delta), (8.0, Some(1e-5)));
        assert_eq!(run.quorum, Some(3));
        assert_eq!(run.floors.unwrap().min_survivors, 3);
        let settings = run.settings();
        assert_eq!(settings.coordinator.timeouts.stage_ms, 45_000);
        assert_eq!(settings.coordinator.model.hidden, 16);
        assert_eq!(settings.init_seed, run.rounds.init_seed);
    }

    #[test]
    fn a_folder_without_a_coordinator_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let err = RunConfig::from_consortium(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("no coordinator config"), "{err}");
        // A coordinator whose strategy the agreement does not allow would run nothing.
        let (_tmp, out) = provisioned();
        let path = out.join("coordinator").join(files::CONFIG);
        let mut config: MemberConfig =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config.rounds.as_mut().unwrap().strategy = medfl_protocol::Strategy::FedProx { mu: 0.1 };
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let err = RunConfig::from_consortium(&out).unwrap_err();
        assert!(
            format!("{err:#}").contains("decline every round"),
            "{err:#}"
        );
    }
}
