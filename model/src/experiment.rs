//! Local, federated and centralized training compared on the same hospitals, plus the
//! isolation-forest baseline: the table that says whether federating is worth it.
//!
//! Each hospital brings a training matrix (its unlabelled traffic, attacks and all, as a real
//! hospital would have), normal validation rows (audited traffic, to set the alert threshold)
//! and a labelled test matrix. Every setting is judged on every hospital's own test data, with
//! the threshold calibrated on that hospital's validation rows for the target false-positive
//! rate (a security office tunes its alert volume to its own traffic); figures are averaged over
//! hospitals (macro averages), so a large hospital does not hide a small one. On access
//! events every setting is judged with the role policy beside it ([`crate::policy`]), as the
//! monitor decides: its alerts count within the target rate.
//!
//! - **local**: each hospital trains alone, on its own data.
//! - **federated**: FedAvg (McMahan et al. 2017): each round every hospital trains
//!   `local_epochs` from the global parameters; the coordinator averages the results weighted by
//!   training rows.
//!
//! Features keep their fixed public scale (`crate::standardize`) in every setting, as in the
//! private deployment, so the settings differ only in who trains on what.
//! - **centralized**: all training data pooled in one place (the upper bound FL aims at), for
//!   as many epochs as federated training runs in total.
//! - **isolation forest**: the non-neural baseline, per hospital.
//! - **federated forest**: every hospital's trees as one forest
//!   ([`IsolationForest::union`]), each hospital thresholding it on its own validation rows.
//!   Trees carry cut values drawn inside each hospital's data, so this is what sharing them
//!   would give, not something the private deployment does: the networked consortium shares
//!   only the DP-trained network.
//! - **ensemble**: the federated model and the federated forest as one detector
//!   ([`crate::ensemble`]): each score calibrated on the hospital's normal validation rows, the
//!   surprises added. Measured against the hospital's own forest in its place (2026-12-01),
//!   the federated forest gave the same AUROC on the default scenario (0.995) and the higher
//!   AUPRC (0.701 against 0.686), and the higher AUROC on the public tables (wdbc 0.709
//!   against 0.612, digits 0.763 against 0.704, seed 0).

use burn::tensor::Device;
use medfl_accesslog::AttackKind;
use ndarray::ArrayView2;
use serde::Serialize;

use crate::cases::{CaseEvaluation, CaseKey, CaseRules};
use crate::ensemble::{Calibration, Rows, combine};
use crate::evaluate::{AttackRow, Evaluation, Labels};
use crate::iforest::{IsolationForest, IsolationForestConfig};
use crate::modelfile::ModelFile;
use crate::policy::AlertPolicy;
use crate::standardize::Standardizer;
use crate::train::{TrainConfig, alert_threshold, score, train};
use crate::{Autoencoder, AutoencoderConfig, ModelError};

/// One hospital's data, already turned into features.
#[derive(Clone, Debug)]
pub struct HospitalData {
    /// Name, for tables.
    pub name: String,
    /// Features per row.
    pub n_cols: usize,
    /// Training rows (unlabelled).
    pub train: Vec<f32>,
    /// The employee of each training row (dense indices): the unit of employee-level DP.
    pub train_employees: Vec<u64>,
    /// Normal rows held out to set the threshold.
    pub validation_normal: Vec<f32>,
    /// Test rows.
    pub test: Vec<f32>,
    /// One label per test row.
    pub test_labels: Labels,
    /// Who made each test row and when, for judging cases (empty when not known: a table).
    pub test_keys: Vec<CaseKey>,
    /// The hospital's staff: what its review budget is proportional to.
    pub employees: usize,
    /// What alerts besides the score: the role policy on access events, nothing on a table.
    pub policy: AlertPolicy,
}

impl HospitalData {
    /// Judges `test_scores` (one per test row) at `threshold`, by event (with the policy's
    /// alerts) and, when the rows' employees and times are known, by case.
    pub fn evaluate(
        &self,
        test_scores: &[f32],
        threshold: f32,
        rules: &CaseRules,
    ) -> Result<Evaluation, ModelError> {
        let detector = self.detector_scores(test_scores, &self.test)?;
        self.test_labels.evaluate(
            &detector,
            test_scores,
            threshold,
            &self.test_keys,
            self.employees,
            rules,
        )
    }

    /// `scores` of `rows` (this hospital's) with the policy's alerts raised above any threshold.
    ///
    /// # Errors
    /// [`ModelError::Shape`] when `rows` are not one row of this hospital's width per score.
    pub fn detector_scores(&self, scores: &[f32], rows: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.policy
            .detector_scores(scores, rows, self.n_cols)
            .ok_or_else(|| {
                ModelError::Shape(format!(
                    "{} scores against {} values in rows of {}",
                    scores.len(),
                    rows.len(),
                    self.n_cols
                ))
            })
    }

    /// The threshold at which the policy and `validation` (scores of the normal validation
    /// rows) together flag a `target_fpr` share of them (`f32::MAX` when none can).
    fn threshold(&self, validation: &[f32], target_fpr: f64) -> f32 {
        self.policy
            .threshold(validation, &self.validation_normal, self.n_cols, target_fpr)
            .filter(|t| t.is_finite())
            .unwrap_or(f32::MAX)
    }
}

/// How the comparison runs.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    /// Network widths (inputs taken from the data).
    pub hidden: usize,
    /// Bottleneck width.
    pub latent: usize,
    /// Federated rounds.
    pub rounds: usize,
    /// Epochs each hospital trains per round.
    pub local_epochs: usize,
    /// Batch size, learning rate and the step floor (epochs and seed are set per run). The
    /// floor counts a whole training: local and centralized training take at least
    /// `min_steps`, each federated round `min_steps / rounds` in each hospital.
    pub train: TrainConfig,
    /// Target false-positive rate for the alert threshold.
    pub target_fpr: f64,
    /// Seed of initial weights and data order.
    pub seed: u64,
    /// Baseline parameters.
    pub iforest: IsolationForestConfig,
    /// How alerts become cases, and the office's review budget.
    pub cases: CaseRules,
    /// The transform every hospital's rows were put through before they came here, recorded
    /// in the model files whose hashes are reported (`None`: the identity of fixed-scale
    /// access features).
    pub scale: Option<Standardizer>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            hidden: 32,
            latent: 8,
            rounds: 10,
            local_epochs: 1,
            train: TrainConfig {
                epochs: 1,
                batch_size: 256,
                learning_rate: 2e-3,
                seed: 0,
                min_steps: 0,
            },
            target_fpr: 0.02,
            seed: 7,
            iforest: IsolationForestConfig::default(),
            cases: CaseRules::default(),
            scale: None,
        }
    }
}

/// The result of one setting.
#[derive(Clone, Debug, Serialize)]
pub struct SettingResult {
    /// `local`, `federated`, `centralized`, `isolation forest`, `federated forest` or
    /// `ensemble`.
    pub setting: &'static str,
    /// Per hospital.
    pub hospitals: Vec<(String, Evaluation)>,
    /// Hash of the shared model file (federated and centralized).
    pub model_hash: Option<String>,
    /// Mean training loss per round (federated) or epoch (others), first hospital for local.
    pub losses: Vec<f32>,
}

impl SettingResult {
    /// Macro average of a per-hospital figure, skipping hospitals where it is undefined.
    pub fn mean(&self, f: impl Fn(&Evaluation) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.hospitals.iter().filter_map(|(_, e)| f(e)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Macro-averaged recall of one attack type.
    pub fn attack_recall(&self, kind: AttackKind) -> Option<f64> {
        self.attack_mean(kind, |r| Some(r.recall))
    }

    /// Macro-averaged AUROC of one attack type against normal access.
    pub fn attack_auroc(&self, kind: AttackKind) -> Option<f64> {
        self.attack_mean(kind, |r| r.auroc)
    }

    /// Macro average of a case-level figure, over hospitals judged by case.
    pub fn case_mean(&self, f: impl Fn(&CaseEvaluation) -> Option<f64>) -> Option<f64> {
        self.mean(|e| e.cases.as_ref().and_then(&f))
    }

    /// Macro-averaged share of one attack type's cases that were reviewed.
    pub fn attack_case_recall(&self, kind: AttackKind) -> Option<f64> {
        self.attack_case_mean(kind, |r| r.recall)
    }

    /// Macro-averaged share of one attack type's cases caught alone among their window's
    /// normal cases ([`CaseEvaluation::caught_alone`]).
    pub fn attack_case_recall_alone(&self, kind: AttackKind) -> Option<f64> {
        self.attack_case_mean(kind, |r| r.recall_alone)
    }

    fn attack_case_mean(
        &self,
        kind: AttackKind,
        f: impl Fn(&crate::cases::CaseAttackRow) -> f64,
    ) -> Option<f64> {
        self.case_mean(|c| c.per_attack.iter().find(|r| r.attack == kind).map(&f))
    }

    fn attack_mean(&self, kind: AttackKind, f: impl Fn(&AttackRow) -> Option<f64>) -> Option<f64> {
        self.mean(|e| e.per_attack.iter().find(|r| r.attack == kind).and_then(&f))
    }
}

fn check(hospitals: &[HospitalData]) -> Result<usize, ModelError> {
    let n_cols = hospitals
        .first()
        .map(|h| h.n_cols)
        .ok_or_else(|| ModelError::Config("no hospitals".into()))?;
    for h in hospitals {
        let rows = |v: &[f32]| n_cols > 0 && v.len().is_multiple_of(n_cols);
        if h.n_cols != n_cols || !rows(&h.train) || !rows(&h.validation_normal) || !rows(&h.test) {
            return Err(ModelError::Shape(format!(
                "hospital {}: matrices do not have {n_cols} columns",
                h.name
            )));
        }
        if h.test.len() / n_cols != h.test_labels.len()
            || !(h.test_keys.is_empty() || h.test_keys.len() == h.test_labels.len())
            || h.validation_normal.is_empty()
            || h.train.is_empty()
        {
            return Err(ModelError::Shape(format!(
                "hospital {}: empty split, or labels or case keys do not match test rows",
                h.name
            )));
        }
    }
    Ok(n_cols)
}

/// Says where a training diverged (which hospital, which round); other errors pass as they are.
fn at(e: ModelError, whose: &str, round: Option<usize>) -> ModelError {
    match e {
        ModelError::Diverged(why) => ModelError::Diverged(match round {
            Some(r) => format!("{whose}, round {r}: {why}"),
            None => format!("{whose}: {why}"),
        }),
        other => other,
    }
}

/// Scores each hospital's test set with `model`, thresholds on its validation rows.
fn judge(
    hospitals: &[HospitalData],
    model: &Autoencoder,
    inputs: usize,
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<Vec<(String, Evaluation)>, ModelError> {
    hospitals
        .iter()
        .map(|h| {
            let t = alert_threshold(
                model,
                &h.validation_normal,
                inputs,
                cfg.target_fpr,
                h.policy,
                device,
            )?;
            let test = score(model, &h.test, inputs, device)?;
            Ok((h.name.clone(), h.evaluate(&test, t, &cfg.cases)?))
        })
        .collect()
}

/// Runs every setting.
pub fn run(
    hospitals: &[HospitalData],
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<Vec<SettingResult>, ModelError> {
    let inputs = check(hospitals)?;
    let net = AutoencoderConfig {
        inputs,
        hidden: cfg.hidden,
        latent: cfg.latent,
    };
    let total_epochs = cfg.rounds * cfg.local_epochs;
    let local = local(hospitals, net, cfg, total_epochs, device)?;
    let (federated, model) = federated(hospitals, net, cfg, device)?;
    let centralized = centralized(hospitals, net, cfg, total_epochs, device)?;
    let forests = hospitals
        .iter()
        .enumerate()
        .map(|(i, hd)| {
            let config = cfg.iforest.for_member(i);
            Ok(IsolationForest::fit(rows(&hd.train, inputs)?, config))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let own = forest_scores(hospitals, &forests)?;
    let union = IsolationForest::union(forests)
        .ok_or_else(|| ModelError::Shape("the hospitals' forests differ in columns".into()))?;
    let shared = forest_scores(hospitals, std::iter::repeat(&union))?;
    let own_forests = baseline("isolation forest", hospitals, &own, cfg)?;
    let federated_forest = baseline("federated forest", hospitals, &shared, cfg)?;
    let ensemble = ensemble(hospitals, &model, &shared, net.inputs, cfg, device)?;
    Ok(vec![
        local,
        federated,
        centralized,
        own_forests,
        federated_forest,
        ensemble,
    ])
}

fn local(
    h: &[HospitalData],
    net: AutoencoderConfig,
    cfg: &ExperimentConfig,
    epochs: usize,
    device: &Device,
) -> Result<SettingResult, ModelError> {
    let mut hospitals = Vec::new();
    let mut losses = Vec::new();
    for (i, hd) in h.iter().enumerate() {
        let model = Autoencoder::new(net, cfg.seed, device)?;
        let tc = TrainConfig {
            epochs,
            seed: cfg.seed ^ (i as u64 + 1),
            ..cfg.train
        };
        let (model, l) =
            train(model, net, &hd.train, tc, device).map_err(|e| at(e, &hd.name, None))?;
        if i == 0 {
            losses = l;
        }
        hospitals.extend(judge(
            std::slice::from_ref(hd),
            &model,
            net.inputs,
            cfg,
            device,
        )?);
    }
    Ok(SettingResult {
        setting: "local",
        hospitals,
        model_hash: None,
        losses,
    })
}

fn model_file(
    net: AutoencoderConfig,
    model: &Autoencoder,
    h: &[HospitalData],
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<String, ModelError> {
    // The file's threshold is set on all hospitals' validation rows together.
    let (mut val, mut rows) = (Vec::new(), Vec::new());
    for hd in h {
        val.extend(score(model, &hd.validation_normal, net.inputs, device)?);
        rows.extend_from_slice(&hd.validation_normal);
    }
    let policy = h.first().map_or(AlertPolicy::ScoreOnly, |hd| hd.policy);
    let threshold = policy
        .threshold(&val, &rows, net.inputs, cfg.target_fpr)
        .filter(|t| t.is_finite())
        .unwrap_or(f32::MAX);
    ModelFile {
        config: net,
        standardizer: cfg
            .scale
            .clone()
            .unwrap_or_else(|| Standardizer::identity(net.inputs)),
        threshold,
        params: model.to_flat()?,
    }
    .hash()
}

fn federated(
    h: &[HospitalData],
    net: AutoencoderConfig,
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<(SettingResult, Autoencoder), ModelError> {
    let mut global = Autoencoder::new(net, cfg.seed, device)?.to_flat()?;
    let mut losses = Vec::with_capacity(cfg.rounds);
    for round in 0..cfg.rounds {
        let mut sum = vec![0f64; global.len()];
        let (mut weight, mut loss) = (0f64, 0f64);
        for (i, hd) in h.iter().enumerate() {
            let model = Autoencoder::new(net, cfg.seed, device)?.load_flat(net, &global)?;
            let tc = TrainConfig {
                epochs: cfg.local_epochs,
                seed: cfg.seed ^ ((round as u64) << 16) ^ (i as u64 + 1),
                min_steps: cfg.train.min_steps.div_ceil(cfg.rounds.max(1)),
                ..cfg.train
            };
            let (model, l) = train(model, net, &hd.train, tc, device)
                .map_err(|e| at(e, &hd.name, Some(round + 1)))?;
            let w = (hd.train.len() / net.inputs) as f64;
            for (acc, p) in sum.iter_mut().zip(model.to_flat()?) {
                *acc += w * f64::from(p);
            }
            weight += w;
            loss += w * f64::from(l.last().copied().unwrap_or(0.0));
        }
        global = sum.iter().map(|v| (v / weight) as f32).collect();
        losses.push((loss / weight) as f32);
    }
    let model = Autoencoder::new(net, cfg.seed, device)?.load_flat(net, &global)?;
    let hospitals = judge(h, &model, net.inputs, cfg, device)?;
    let model_hash = Some(model_file(net, &model, h, cfg, device)?);
    Ok((
        SettingResult {
            setting: "federated",
            hospitals,
            model_hash,
            losses,
        },
        model,
    ))
}

fn centralized(
    h: &[HospitalData],
    net: AutoencoderConfig,
    cfg: &ExperimentConfig,
    epochs: usize,
    device: &Device,
) -> Result<SettingResult, ModelError> {
    let pooled: Vec<f32> = h.iter().flat_map(|hd| hd.train.iter().copied()).collect();
    let model = Autoencoder::new(net, cfg.seed, device)?;
    let (model, losses) = train(
        model,
        net,
        &pooled,
        TrainConfig {
            epochs,
            seed: cfg.seed,
            ..cfg.train
        },
        device,
    )
    .map_err(|e| at(e, "the pooled data", None))?;
    let hospitals = judge(h, &model, net.inputs, cfg, device)?;
    let model_hash = Some(model_file(net, &model, h, cfg, device)?);
    Ok(SettingResult {
        setting: "centralized",
        hospitals,
        model_hash,
        losses,
    })
}

/// A forest's scores of one hospital's normal validation rows and of its test rows.
struct ForestScores {
    validation: Vec<f32>,
    test: Vec<f32>,
}

/// Each hospital's rows scored by its forest (scored once: the forest settings and the
/// ensemble share them).
fn forest_scores<'a>(
    h: &[HospitalData],
    forests: impl IntoIterator<Item = &'a IsolationForest>,
) -> Result<Vec<ForestScores>, ModelError> {
    h.iter()
        .zip(forests)
        .map(|(hd, forest)| {
            Ok(ForestScores {
                validation: forest.score(rows(&hd.validation_normal, hd.n_cols)?)?,
                test: forest.score(rows(&hd.test, hd.n_cols)?)?,
            })
        })
        .collect()
}

/// A row-major matrix of `n_cols` columns as an ndarray view.
fn rows(data: &[f32], n_cols: usize) -> Result<ArrayView2<'_, f32>, ModelError> {
    let n_rows = data.len().checked_div(n_cols).unwrap_or(0);
    ArrayView2::from_shape((n_rows, n_cols), data)
        .map_err(|e| ModelError::Shape(format!("{} values as rows of {n_cols}: {e}", data.len())))
}

fn baseline(
    setting: &'static str,
    h: &[HospitalData],
    scores: &[ForestScores],
    cfg: &ExperimentConfig,
) -> Result<SettingResult, ModelError> {
    let hospitals = h
        .iter()
        .zip(scores)
        .map(|(hd, s)| {
            let t = hd.threshold(&s.validation, cfg.target_fpr);
            Ok((hd.name.clone(), hd.evaluate(&s.test, t, &cfg.cases)?))
        })
        .collect::<Result<_, ModelError>>()?;
    Ok(SettingResult {
        setting,
        hospitals,
        model_hash: None,
        losses: vec![],
    })
}

/// The federated model and a forest's scores as one detector, calibrated and thresholded on
/// the hospital's own normal validation rows.
fn ensemble(
    h: &[HospitalData],
    model: &Autoencoder,
    forest_scores: &[ForestScores],
    inputs: usize,
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<SettingResult, ModelError> {
    let mut hospitals = Vec::with_capacity(h.len());
    for (hd, f) in h.iter().zip(forest_scores) {
        let ae_val = score(model, &hd.validation_normal, inputs, device)?;
        let ae_test = score(model, &hd.test, inputs, device)?;
        let (if_val, if_test) = (&f.validation, &f.test);
        let (ae, forest) = (Calibration::new(&ae_val), Calibration::new(if_val));
        let val = combine(&[(&ae, &ae_val), (&forest, if_val)], Rows::Calibration)?;
        let test = combine(&[(&ae, &ae_test), (&forest, if_test)], Rows::Fresh)?;
        let t = hd.threshold(&val, cfg.target_fpr);
        hospitals.push((hd.name.clone(), hd.evaluate(&test, t, &cfg.cases)?));
    }
    Ok(SettingResult {
        setting: "ensemble",
        hospitals,
        model_hash: None,
        losses: vec![],
    })
}
