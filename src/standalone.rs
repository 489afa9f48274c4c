//! `medfl train` and `medfl eval`: a hospital's own model on its own file, outside any
//! federation (no differential privacy: for use inside the hospital), and scoring a file with
//! any model. The binary parses arguments and prints what these return.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use medfl_model::cases::{CaseEvaluation, CaseRules};
use medfl_model::modelfile::ModelFile;
use medfl_model::policy::{AlertPolicy, MAX_POLICY_SHARE};
use medfl_model::standardize::{Moments, Standardizer};
use medfl_model::train::{TrainConfig, score, training_device};
use medfl_model::{Autoencoder, AutoencoderConfig};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::Dataset;
use crate::report;

/// Fewest optimizer steps a table trains for (`medfl train`, the table experiments): a
/// table of a few hundred rows would otherwise get a handful of steps from its passes.
pub const TABLE_MIN_STEPS: usize = 500;

/// Trains on 80% of the rows of `ds` (read from `source`); sets the threshold on the normal rows
/// of the other 20%; saves the model to `out`. Returns the report to print.
///
/// An event log splits in time, the first 80% of its accesses against the last 20%: its
/// features are computed in time order from each user's past, and a threshold must hold on
/// traffic that came later. A table has no time: its rows are shuffled with `seed` first, so a
/// file sorted by its label column cannot put every anomaly on one side.
pub fn train(
    ds: &Dataset,
    source: &Path,
    out: &Path,
    epochs: usize,
    target_fpr: f64,
    seed: u64,
) -> Result<String> {
    let (n, d) = (ds.n_rows(), ds.n_cols);
    if n < 10 {
        bail!(
            "{} has {n} usable rows; training needs at least 10",
            source.display()
        );
    }
    if !(0.0..1.0).contains(&target_fpr) || epochs == 0 {
        bail!("--target-fpr must be in [0, 1) and --epochs at least 1");
    }
    let cut = n * 4 / 5;
    let table = ds.keys.is_empty();
    let mut order: Vec<usize> = (0..n).collect();
    if table {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    let rows = |idx: &[usize]| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| ds.data[i * d..(i + 1) * d].iter().copied())
            .collect()
    };
    let mut train_rows = rows(&order[..cut]);
    let normal: Vec<usize> = order[cut..]
        .iter()
        .copied()
        .filter(|&i| ds.labels.as_ref().is_none_or(|l| l.is_normal(i)))
        .collect();
    let mut normal_held_out = rows(&normal);
    // Access features keep their fixed public scale, as in federated training. A table's
    // columns have none: its scale is fitted on the training rows (no DP here: this model
    // stays in the hospital), and it trains for steps, not passes, however few its rows.
    let (standardizer, min_steps) = if table {
        let mut m = Moments::new(d);
        m.add(ArrayView2::from_shape((cut, d), &train_rows)?)?;
        (m.standardizer(), TABLE_MIN_STEPS)
    } else {
        (Standardizer::identity(d), 0)
    };
    standardizer
        .apply_finite(&mut train_rows)
        .context("scaling the training rows (in shuffled order)")?;
    standardizer
        .apply_finite(&mut normal_held_out)
        .context("scaling the held-out normal rows")?;
    let device = training_device();
    let config = AutoencoderConfig::for_inputs(d);
    let model = Autoencoder::new(config, seed, &device)?;
    let started = std::time::Instant::now();
    let tc = TrainConfig {
        epochs,
        seed,
        min_steps,
        ..TrainConfig::default()
    };
    let (model, losses) =
        medfl_model::train::train(model, config, &train_rows, tc, &device).context("training")?;
    let threshold = medfl_model::train::alert_threshold(
        &model,
        &normal_held_out,
        d,
        target_fpr,
        ds.policy(),
        &device,
    )
    .context("setting the alert threshold on the held-out normal rows")?;
    let file = ModelFile {
        config,
        standardizer,
        threshold,
        params: model.to_flat()?,
    };
    let hash = file.save(out)?;
    // At most ten passes shown, evenly spaced, the last always.
    let every = losses.len().div_ceil(10).max(1);
    let rows: Vec<Vec<String>> = losses
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % every == 0 || i + 1 == losses.len())
        .map(|(i, l)| vec![(i + 1).to_string(), format!("{l:.5}")])
        .collect();
    let mut text = report::table(&["pass", "loss"], &rows);
    let held_out = normal_held_out.len() / d.max(1);
    let _ = writeln!(
        text,
        "trained on {cut} rows x {d} features in {:.1} s; threshold {threshold:.5} for {:.1}% FPR on {held_out} held-out normal rows",
        started.elapsed().as_secs_f64(),
        100.0 * target_fpr,
    );
    // Events keep their public scale (the identity), so these are the features as extracted.
    let share = ds.policy().share(&normal_held_out, d);
    if share > 0.0 {
        let _ = writeln!(
            text,
            "role policy: {:.2}% of them are a kind of record the user's role never needs, always alerted{}",
            100.0 * share,
            if share > MAX_POLICY_SHARE * target_fpr {
                "; more than a quarter of the target, so the model keeps three quarters of it and the total is above the target"
            } else {
                "; the model's threshold leaves room for them"
            }
        );
    }
    let _ = writeln!(
        text,
        "privacy statement\n- guarantee: NONE. This model is trained without differential privacy \
         (plain Adam on every row): its weights and threshold can reveal individual employees' \
         accesses. It is for use inside the hospital only (the file is readable by its owner \
         alone); what a hospital shares is trained by `medfl client` with employee-level DP-SGD."
    );
    let _ = writeln!(text, "model {} sha256 {hash}", out.display());
    Ok(text)
}

/// The case-level part of `medfl eval`'s report.
fn cases_report(c: &CaseEvaluation) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.1}%", 100.0 * v));
    let rules = CaseRules::default();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\nby case: one employee's alerts in one UTC day, ranked by the evidence of its alerts on unexplained accesses plus {} of the employee's from the day before; the top {} a day reviewed ({} per 1,000 employees); break-the-glass days are reviewed apart",
        rules.carry(),
        c.budget,
        rules.reviews_per_1000_employees
    );
    text.push_str(&report::table(
        &[
            "days",
            "cases",
            "reviewed",
            "attack cases",
            "break-glass days",
            "alerted",
            "caught",
            "recall",
            "with break-glass review",
            "ceiling",
            "recall alone",
            "precision",
        ],
        &[vec![
            c.windows.to_string(),
            c.cases.to_string(),
            c.reviewed.to_string(),
            c.attack_windows.to_string(),
            c.break_glass_windows.to_string(),
            c.alerted.to_string(),
            c.caught.to_string(),
            pct(c.recall),
            pct(c.recall_with_emergency_review),
            pct(c.ceiling),
            pct(c.recall_alone),
            pct(c.precision),
        ]],
    ));
    if !c.per_attack.is_empty() {
        let rows: Vec<Vec<String>> = c
            .per_attack
            .iter()
            .map(|r| {
                vec![
                    r.attack.to_string(),
                    r.windows.to_string(),
                    r.caught.to_string(),
                    pct(Some(r.recall)),
                    r.caught_alone.to_string(),
                    pct(Some(r.recall_alone)),
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&report::table(
            &[
                "attack",
                "cases",
                "caught",
                "recall",
                "caught alone",
                "recall alone",
            ],
            &rows,
        ));
    }
    text
}

/// Scores `ds` with the model at `model_path` and, given labels, evaluates it. Returns the
/// report to print (JSON with `json`).
pub fn eval(ds: &Dataset, model_path: &Path, json: bool) -> Result<String> {
    let (file, hash) =
        ModelFile::load(model_path).with_context(|| format!("loading {}", model_path.display()))?;
    file.expect_inputs(ds.n_cols)?;
    let device = training_device();
    let model = Autoencoder::new(file.config, 0, &device)?.load_flat(file.config, &file.params)?;
    let mut rows = ds.data.clone();
    // A row past the model's scale is held at f32's edge and scores +inf: the most unusual.
    file.standardizer.apply_saturating(&mut rows);
    let scores = score(&model, &rows, file.config.inputs, &device)?;
    // What the monitor would alert on: the model's alerts and the role policy's, which reads
    // the features as extracted, never as the model scales them.
    let detector = ds
        .policy()
        .detector_scores(&scores, &ds.data, ds.n_cols)
        .context("the scores are not one per row of the data")?;
    let flagged = detector.iter().filter(|s| **s > file.threshold).count();
    let evaluation = ds
        .labels
        .as_ref()
        .map(|l| {
            l.evaluate(
                &detector,
                &scores,
                file.threshold,
                &ds.keys,
                ds.employees(),
                &CaseRules::default(),
            )
        })
        .transpose()
        .context("judging the scores against the labels")?;
    if json {
        let value = serde_json::json!({ "model": hash, "rows": scores.len(), "flagged": flagged, "evaluation": evaluation });
        return Ok(serde_json::to_string_pretty(&value)?);
    }
    let mut text = String::new();
    let by_policy = ds
        .data
        .chunks_exact(ds.n_cols.max(1))
        .filter(|r| ds.policy().flags(r))
        .count();
    let _ = writeln!(
        text,
        "model {hash}: {} rows scored, {flagged} flagged ({:.2}%{})",
        scores.len(),
        100.0 * flagged as f64 / scores.len().max(1) as f64,
        if ds.policy() == AlertPolicy::RoleNeeds {
            format!(", {by_policy} of them by the role policy")
        } else {
            String::new()
        }
    );
    if let Some(e) = evaluation {
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        text.push_str(&report::table(
            &["rows", "anomalous", "AUROC", "AUPRC", "recall", "FPR"],
            &[vec![
                e.events.to_string(),
                e.attacks.to_string(),
                f(e.auroc),
                f(e.auprc),
                format!("{:.1}%", 100.0 * e.recall),
                format!("{:.2}%", 100.0 * e.fpr),
            ]],
        ));
        if !e.per_attack.is_empty() {
            let rows: Vec<Vec<String>> = e
                .per_attack
                .iter()
                .map(|r| {
                    vec![
                        r.attack.to_string(),
                        r.events.to_string(),
                        f(r.auroc),
                        format!("{:.1}%", 100.0 * r.recall),
                    ]
                })
                .collect();
            text.push('\n');
            text.push_str(&report::table(
                &["attack", "events", "AUROC", "recall"],
                &rows,
            ));
        }
        if let Some(c) = &e.cases {
            text.push_str(&cases_report(c));
        }
    }
    Ok(text)
}
