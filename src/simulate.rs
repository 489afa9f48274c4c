//! `medfl simulate` and `medfl replay`: a whole consortium in one process, from the simulator's
//! logs to an anchored model, with everything a data scientist wants to look at afterwards.
//!
//! A run directory holds `scenario.toml` and `run.toml` (everything needed to re-run it),
//! `ledger/`, `models/` (content-addressed by hash), `metrics.json`, `metrics.csv`, and SVG
//! plots of loss, AUROC and privacy spent per round. `replay` re-runs the recorded configuration
//! in a scratch directory and compares every round's model hash with the one the ledger anchors.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use medfl_coordinator::{CoordinatorConfig, Timeouts};
use medfl_ledger::tx::ConsentChoice;
use medfl_ledger::{AgreementId, Hash, Ledger, MemberId, TxBody, verify_dir};
use medfl_model::experiment::{HospitalData, SettingResult};
use medfl_model::metrics::threshold_for_fpr;
use medfl_model::train::{score, training_device};
use medfl_model::{Autoencoder, AutoencoderConfig};
use medfl_protocol::privacy::HospitalLevel;
use medfl_protocol::{DdgParams, GlobalModel, SecAggParams, Strategy, TrainingParams};
use medfl_simulations::Scenario;
use serde::{Deserialize, Serialize};

use crate::consortium::{Consortium, RoundReport, SimHospital, SimLog, SimSettings};
use crate::detection::{self, Split};
use crate::plot;
use crate::report::table;

/// Everything that, with the scenario, determines a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Format version of this file.
    pub version: u32,
    /// The one seed: scenario, keys, dropouts, noise, training.
    pub seed: u64,
    /// Hospitals (the scenario's are cycled or cut to this many).
    pub hospitals: usize,
    /// Rounds to run.
    pub rounds: u64,
    /// Probability that a selected hospital goes silent in a round.
    pub dropout: f64,
    /// Hidden width of the autoencoder.
    pub hidden: usize,
    /// Bottleneck width.
    pub latent: usize,
    /// Each hospital's epsilon budget.
    pub budget_epsilon: f64,
    /// Target false-positive rate of each hospital's alert threshold.
    pub target_fpr: f64,
    /// Server update rule.
    pub strategy: Strategy,
    /// Local DP-SGD.
    pub training: TrainingParams,
    /// Distributed noise.
    pub ddg: DdgParams,
    /// Secure aggregation graph.
    pub secagg: SecAggParams,
    /// The hospital-level budget each hospital holds itself to (the distributed noise is
    /// calibrated to it); absent, the aggregate's noise protects no hospital-level figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital: Option<HospitalLevel>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            version: 1,
            seed: 20261124,
            hospitals: 5,
            rounds: 10,
            dropout: 0.0,
            hidden: 32,
            latent: 8,
            budget_epsilon: 8.0,
            target_fpr: 0.02,
            strategy: Strategy::FedAvg { server_lr: 1.0 },
            // One set of privacy defaults: a simulation states what a deployment would.
            training: TrainingParams::default(),
            ddg: DdgParams::default(),
            secagg: SecAggParams::default(),
            hospital: None,
        }
    }
}

impl RunConfig {
    /// Sets the DP-SGD noise multiplier so that the whole run costs each hospital at most
    /// `epsilon` (employee level, at `training.delta`), and the budget to `epsilon`.
    pub fn calibrate_to(&mut self, epsilon: f64) -> Result<()> {
        self.check()?;
        let t = &self.training;
        let steps = medfl_protocol::privacy::steps_per_round(t)?
            .checked_mul(self.rounds)
            .context("too many steps")?;
        let sigma = medfl_dp::calibrate_poisson_gaussian(t.sampling_rate, steps, epsilon, t.delta)?;
        // The accountant charges the effective multiplier, a hair below the nominal one (the
        // lattice rounding's sensitivity, `medfl_model::dpsgd`): raise σ until the charged
        // figure itself meets the target.
        let model = AutoencoderConfig {
            inputs: medfl_accesslog::N_FEATURES,
            hidden: self.hidden,
            latent: self.latent,
        };
        self.training.noise_multiplier = sigma;
        for _ in 0..10_000 {
            let charged =
                medfl_protocol::privacy::epsilon_after(&self.training, model, self.rounds)?;
            if charged <= epsilon {
                self.budget_epsilon = epsilon;
                return Ok(());
            }
            self.training.noise_multiplier *= 1.0 + 1e-4;
        }
        bail!("no noise multiplier near {sigma} meets epsilon {epsilon}")
    }

    /// Sets the aggregate's distributed-noise multiplier so that the whole run costs each
    /// hospital at most `epsilon` at the hospital level (at `training.delta`) with `colluders`
    /// of each round's minimum survivors assumed hostile, and holds every hospital to it.
    pub fn calibrate_hospital_to(&mut self, epsilon: f64, colluders: u64) -> Result<()> {
        self.check()?;
        self.ddg.noise_multiplier = medfl_protocol::privacy::calibrate_hospital_noise(
            &self.ddg,
            self.model(),
            self.hospitals as u64,
            colluders,
            self.rounds,
            epsilon,
            self.training.delta,
        )?;
        self.hospital = Some(HospitalLevel { epsilon, colluders });
        Ok(())
    }

    /// The network every hospital trains.
    pub fn model(&self) -> AutoencoderConfig {
        AutoencoderConfig {
            inputs: medfl_accesslog::N_FEATURES,
            hidden: self.hidden,
            latent: self.latent,
        }
    }

    /// Checks what the types do not.
    pub fn check(&self) -> Result<()> {
        if self.version != 1 {
            bail!(
                "run.toml version {} is not supported (expected 1)",
                self.version
            );
        }
        if self.hospitals < 2 {
            bail!(
                "a consortium needs at least 2 hospitals, got {}",
                self.hospitals
            );
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("dropout {} must be in [0, 1)", self.dropout);
        }
        if self.hidden == 0 || self.latent == 0 {
            bail!("layer widths must be positive");
        }
        if !(self.target_fpr > 0.0 && self.target_fpr < 1.0) {
            bail!("target FPR {} must be in (0, 1)", self.target_fpr);
        }
        self.strategy.check().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    fn settings(&self, inputs: usize) -> Result<SimSettings> {
        Ok(SimSettings {
            coordinator: CoordinatorConfig {
                agreement: AgreementId::new("simulation").map_err(anyhow::Error::msg)?,
                model: AutoencoderConfig {
                    inputs,
                    hidden: self.hidden,
                    latent: self.latent,
                },
                training: self.training,
                ddg: self.ddg,
                secagg: self.secagg,
                strategy: self.strategy,
                min_participants: 2,
                max_participants: 0,
                timeouts: Timeouts::default(),
            },
            dropout: self.dropout,
            seed: self.seed,
            budget_epsilon: self.budget_epsilon,
            hospital: self.hospital,
        })
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
        let val = score(&net, &h.validation_normal, cfg.inputs, &device)?;
        let t = threshold_for_fpr(&val, target_fpr).unwrap_or(f32::MAX);
        let test = score(&net, &h.test, cfg.inputs, &device)?;
        out.push((
            h.name.clone(),
            medfl_model::evaluate::evaluate(&test, &h.test_labels, t),
        ));
    }
    Ok(SettingResult {
        setting: "medfl federated (DP-SGD + SecAgg+)",
        hospitals: out,
        model_hash: Some(model.hash.to_string()),
        losses: Vec::new(),
    })
}

/// One row of `metrics.csv` / `metrics.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRow {
    /// The round's report.
    #[serde(flatten)]
    pub report: RoundReport,
    /// Macro AUROC of the global model after the round.
    pub auroc: Option<f64>,
}

fn progress_bar(done: u64, total: u64) -> String {
    let width = 24usize;
    let filled = (done as usize * width) / (total.max(1) as usize);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
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

    let model = AutoencoderConfig {
        inputs: medfl_accesslog::N_FEATURES,
        hidden: run.hidden,
        latent: run.latent,
    };
    let mut statement = medfl_protocol::privacy::statement(
        &run.training,
        model,
        run.rounds,
        medfl_protocol::privacy::NoiseSource::ReproducibleSeed,
    )?;
    statement.push('\n');
    statement.push_str(&medfl_protocol::privacy::hospital_statement(
        &run.ddg,
        model,
        run.hospitals as u64,
        run.rounds,
        run.training.delta,
        run.hospital,
    ));
    eprintln!("{statement}");
    std::fs::write(out.join("privacy.txt"), format!("{statement}\n"))
        .context("writing privacy.txt")?;
    let (rows, hospitals) = execute(&scenario, run, out, true)?;
    write_outputs(out, &rows)?;

    // The summary a person reads.
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
    let say = |m: &str| {
        if chatty {
            eprintln!("{m}");
        }
    };
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
    let mut consortium = Consortium::create(dir, sims, &run.settings(inputs)?)?;
    let mut rows = Vec::new();
    for r in 1..=run.rounds {
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
        let bar = progress_bar(r - 1, run.rounds);
        let report = consortium.run_round(|stage| say(&format!("{bar} {stage}")))?;
        let auroc = match &report.model {
            Some(_) => evaluate(consortium.model(), &hospitals, run.target_fpr)?.mean(|e| e.auroc),
            None => None,
        };
        if chatty {
            eprintln!(
                "{} round {r}/{}: {} participants, {} dropped, AUROC {}, max ε {:.3}, {:.1} s{}",
                progress_bar(r, run.rounds),
                run.rounds,
                report.metrics.participants,
                report.metrics.dropped.len(),
                auroc.map_or("-".into(), |a| format!("{a:.3}")),
                report.metrics.max_epsilon,
                report.times.total,
                report
                    .failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" — FAILED: {f}")),
            );
        }
        rows.push(RoundRow { report, auroc });
    }
    Ok((rows, hospitals))
}

fn latest_model(ledger: &Ledger, dir: &Path) -> Result<Option<GlobalModel>> {
    let Some(a) = ledger.state().agreements().next() else {
        return Ok(None);
    };
    let Some(hash) = a.last_model else {
        return Ok(None);
    };
    let path = dir.join("models").join(format!("{hash}.model"));
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let file = medfl_model::modelfile::ModelFile::from_bytes(&bytes)?;
    Ok(Some(GlobalModel::from_bytes(&bytes, file.config, &hash)?))
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
        "round,participants,dropped,auroc,max_epsilon,anchored,seconds_total,seconds_training,seconds_agents,seconds_coordinator,seconds_ledger,bytes_out,bytes_in\n",
    );
    for r in rows {
        let m = &r.report.metrics;
        let t = &r.report.times;
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{},{:.4},{:.4},{:.4},{:.4},{:.5},{},{}\n",
            m.round,
            m.participants,
            m.dropped.len(),
            r.auroc.map_or(String::new(), |a| format!("{a:.6}")),
            m.max_epsilon,
            r.report.model.is_some(),
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
    let series = |f: &dyn Fn(&RoundRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|y| (r.report.metrics.round as f64, y)))
            .collect()
    };
    let plots = [
        (
            "auroc.svg",
            "Detection AUROC of the global model (macro over hospitals)",
            "AUROC",
            series(&|r| r.auroc),
        ),
        (
            "privacy.svg",
            "Privacy spent: largest cumulative epsilon",
            "epsilon",
            series(&|r| Some(r.report.metrics.max_epsilon)),
        ),
    ];
    for (file, title, y, points) in plots {
        std::fs::write(out.join(file), plot::line_chart(title, "round", y, &points))
            .with_context(|| format!("writing {file}"))?;
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
    let run: RunConfig = toml::from_str(&read("run.toml")?).context("run.toml")?;
    run.check()?;
    let verified = verify_dir(&dir.join("ledger"), None)
        .with_context(|| format!("the ledger in {} does not verify", dir.display()))?;
    let ledger = Ledger::open(&dir.join("ledger"))?;
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
        run.rounds, run.hospitals, verified.height
    );
    let (rows, _) = execute(&scenario, &run, scratch.path(), true)?;
    let replayed: Vec<(u64, String)> = rows
        .iter()
        .filter_map(|r| r.report.model.clone().map(|m| (r.report.metrics.round, m)))
        .collect();
    for (i, (round, hash)) in anchored.iter().enumerate() {
        match replayed.get(i) {
            Some((r, h)) if r == round && *h == hash.to_string() => {}
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

/// Default output directory: `runs/<seed>-<hospitals>h-<rounds>r`.
pub fn default_out(run: &RunConfig) -> PathBuf {
    PathBuf::from("runs").join(format!(
        "sim-{}-{}h-{}r",
        run.seed, run.hospitals, run.rounds
    ))
}
