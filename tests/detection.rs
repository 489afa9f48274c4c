//! The data path end to end: simulated logs, training, evaluation from CSV, FHIR NDJSON and a
//! plain numeric table, and the experiment's reproducibility.

mod common;

use std::path::Path;

use common::{fails, medfl, ok, p};

use medfl::detection::{self, Split};
use medfl_model::cases::CaseRules;
use medfl_model::experiment::ExperimentConfig;
use medfl_simulations::Scenario;

/// Two small hospitals over two weeks: enough for every split, fast to simulate.
fn small() -> Scenario {
    let mut sc = Scenario::default_embedded();
    sc.hospitals.truncate(2);
    sc.days = 14;
    sc
}

#[test]
fn the_experiment_is_bit_reproducible() {
    let config = ExperimentConfig {
        rounds: 2,
        ..ExperimentConfig::default()
    };
    let run = || detection::run(&small(), Split::default(), &config, |_| {}).unwrap();
    let (a, b) = (run(), run());
    let hashes = |r: &[medfl_model::experiment::SettingResult]| {
        r.iter().map(|s| s.model_hash.clone()).collect::<Vec<_>>()
    };
    assert_eq!(hashes(&a), hashes(&b));
    // Every figure, by event and by case, of every setting.
    let json = |r: &[medfl_model::experiment::SettingResult]| serde_json::to_string(r).unwrap();
    assert_eq!(json(&a), json(&b));
    let settings: Vec<&str> = a.iter().map(|s| s.setting).collect();
    assert_eq!(
        settings,
        [
            "local",
            "federated",
            "centralized",
            "isolation forest",
            "federated forest",
            "ensemble"
        ]
    );
    let ensemble = a[5].mean(|e| e.auroc).unwrap();
    assert!(ensemble > 0.8, "ensemble AUROC {ensemble}");
    assert!(
        a[1].model_hash.is_some(),
        "federated training yields a model file hash"
    );
    // The federated model is a real detector on held-out days, not chance.
    let auroc = a[1].mean(|e| e.auroc).unwrap();
    assert!(auroc > 0.8, "federated AUROC {auroc}");
    let mut other = small();
    other.seed += 1;
    let c = detection::run(&other, Split::default(), &config, |_| {}).unwrap();
    assert_ne!(hashes(&a), hashes(&c), "another seed, another model");
}

#[test]
fn every_setting_is_judged_by_case_and_an_unlimited_budget_reviews_every_alerted_case() {
    let tight = ExperimentConfig {
        rounds: 1,
        ..ExperimentConfig::default()
    };
    let unlimited = ExperimentConfig {
        cases: CaseRules {
            reviews_per_1000_employees: 1e9,
            ..CaseRules::default()
        },
        ..tight.clone()
    };
    let data = detection::consortium_data(&small(), Split::default(), |_| {}).unwrap();
    let device = medfl_model::train::training_device();
    let a = medfl_model::experiment::run(&data, &tight, &device).unwrap();
    let b = medfl_model::experiment::run(&data, &unlimited, &device).unwrap();
    let mut attack_cases = 0;
    for (ra, rb) in a.iter().zip(&b) {
        for ((name, ea), (_, eb)) in ra.hospitals.iter().zip(&rb.hospitals) {
            let (ca, cb) = (ea.cases.as_ref().unwrap(), eb.cases.as_ref().unwrap());
            let what = format!("{} at {name}", ra.setting);
            // The same alerts make the same cases, whatever the budget.
            assert_eq!(
                (ca.cases, ca.attack_windows, ca.alerted),
                (cb.cases, cb.attack_windows, cb.alerted),
                "{what}"
            );
            assert!(
                ca.caught <= ca.alerted && ca.alerted <= ca.attack_windows,
                "{what}: {ca:?}"
            );
            assert!(ca.reviewed <= ca.windows * ca.budget, "{what}: {ca:?}");
            // Reviewing everything reviews every case with evidence, and catches the same
            // attack cases as ranking each alone.
            assert_eq!(cb.reviewed, cb.ranked, "{what}");
            assert!(cb.ranked <= cb.cases, "{what}");
            assert_eq!(cb.caught, cb.caught_alone, "{what}");
            // Alone among normal cases, an attack does at least as well as among all.
            assert!(
                ca.caught <= ca.caught_alone && ca.caught_alone <= ca.alerted,
                "{what}: {ca:?}"
            );
            assert!(
                ca.attack_windows == 0 || cb.ceiling == Some(1.0),
                "{what}: {cb:?}"
            );
            assert!(ca.ceiling <= cb.ceiling, "{what}");
            let per_kind: usize = ca.per_attack.iter().map(|r| r.windows).sum();
            assert!(
                per_kind >= ca.attack_windows,
                "{what}: a case may hold two kinds, never none"
            );
            attack_cases += ca.attack_windows;
        }
    }
    assert!(attack_cases > 0, "the test days hold attacks");
}

/// An explanation is faithful when what it names is what raised the score: put the first
/// feature an alert names back to what the model expected of it, and the score falls. Checked
/// on a trained model, through the monitor's own scorer and ranking.
#[test]
fn the_feature_an_alert_names_first_is_what_raised_its_score() {
    use medfl_accesslog::N_FEATURES;
    use medfl_model::modelfile::ModelFile;
    use medfl_model::standardize::Standardizer;
    use medfl_model::train::{TrainConfig, alert_threshold, reconstruct, train};
    use medfl_model::{Autoencoder, AutoencoderConfig};
    use medfl_monitor::Scorer;
    use medfl_monitor::explain::top_contributions;

    let data = detection::consortium_data(&small(), Split::default(), |_| {}).unwrap();
    let h = &data[0];
    let device = medfl_model::train::training_device();
    let net = AutoencoderConfig::for_inputs(N_FEATURES);
    let config = TrainConfig {
        epochs: 5,
        batch_size: 256,
        learning_rate: 2e-3,
        seed: 3,
        min_steps: 0,
    };
    let start = Autoencoder::new(net, 3, &device).unwrap();
    let (model, _) = train(start, net, &h.train, config, &device).unwrap();
    let t = alert_threshold(
        &model,
        &h.validation_normal,
        N_FEATURES,
        0.02,
        h.policy,
        &device,
    )
    .unwrap();
    let file = ModelFile {
        config: net,
        standardizer: Standardizer::identity(N_FEATURES),
        threshold: t,
        params: model.to_flat().unwrap(),
    };
    let hash = file.hash().unwrap();
    let scorer = Scorer::new(file, hash).unwrap();
    let expected = reconstruct(&model, &h.test, N_FEATURES, &device).unwrap();
    // Only the words need an event; any will do.
    let event = medfl_accesslog::csv::read_events(
        "event_id,time_ms,user,role,user_department,patient,patient_department,action,resource,workstation,ip,break_glass,care_team,vip,family_link\n1,0,u,nurse,icu,p,icu,view,medication,ws,10.0.0.1,false,true,false,false\n".as_bytes(),
        medfl_accesslog::OnError::Reject,
    )
    .unwrap()
    .records
    .remove(0);
    let (mut alerts, mut named, mut fell) = (0, 0, 0);
    for (row, values) in h.test.chunks_exact(N_FEATURES).enumerate() {
        let features: [f32; N_FEATURES] = values.try_into().unwrap();
        let (score, _) = scorer.score(&features).unwrap();
        if score <= t {
            continue;
        }
        alerts += 1;
        let drops = scorer.occlusion(&features).unwrap();
        // Each drop is what putting that feature back takes off the score, measured apart.
        for (i, d) in drops.iter().enumerate() {
            let mut back = features;
            back[i] = expected[row * N_FEATURES + i];
            let after = scorer.score(&back).unwrap().0;
            let measured = (score - after).max(0.0);
            assert!(
                (d - measured).abs() <= 1e-4 * score.abs() + 1e-6,
                "row {row}, feature {i}: drop {d}, measured {measured}"
            );
        }
        let top = top_contributions(&features, &drops, &event);
        let Some(first) = top.first() else { continue };
        named += 1;
        let i = medfl_accesslog::FEATURE_NAMES
            .iter()
            .position(|n| *n == first.feature)
            .unwrap();
        // The first named is the largest drop, and putting it back lowers the score.
        assert!(drops.iter().all(|d| *d <= drops[i]), "{first:?} {drops:?}");
        let mut back = features;
        back[i] = expected[row * N_FEATURES + i];
        fell += usize::from(scorer.score(&back).unwrap().0 < score);
    }
    assert!(alerts >= 20, "only {alerts} alerts to judge");
    assert_eq!(fell, named, "{alerts} alerts, {named} named a feature");
    // The rest fall back to the reconstruction errors in the monitor.
    assert!(
        named * 20 >= alerts * 19,
        "{named} of {alerts} alerts named a feature"
    );
}

/// A numeric table with an `is_fraud` label column: 400 normal rows on a line, then one
/// anomaly per value of `anomalies` (its first column), the anomalies last.
fn fraud_table(anomalies: impl Iterator<Item = f32>) -> String {
    let mut csv = String::from("a,b,c,is_fraud\n");
    for i in 0..400 {
        let x = (i as f32 * 0.37).sin();
        csv.push_str(&format!("{x},{},{},0\n", 2.0 * x, -x));
    }
    // Scattered, not one point: unlabelled in training, a tight cluster of a fifth of the
    // rows would be learnt as normal.
    for (j, a) in anomalies.enumerate() {
        let (k, m) = ((j % 7) as f32, (j % 5) as f32);
        csv.push_str(&format!("{a},{},{},1\n", -4.0 - k, 5.0 + 1.5 * m));
    }
    csv
}

/// `medfl train` on `table` (label column `is_fraud`, 20 epochs) into `model`.
fn train_on_table(table: &Path, model: &Path) {
    ok(&[
        "train",
        "--data",
        p(table),
        "--label-column",
        "is_fraud",
        "--out",
        p(model),
        "--epochs",
        "20",
    ]);
}

#[test]
fn train_on_csv_evaluate_on_fhir_and_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("small.toml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/scenarios/default.toml"),
    )
    .unwrap();
    // The first hospital only, over 10 days.
    let first = text
        .split("\n[[hospital]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("\n[[hospital]]")
        .replace("days = 21", "days = 10");
    std::fs::write(&scenario, first).unwrap();
    let logs = tmp.path().join("logs");
    let written = ok(&["logs", "--scenario", p(&scenario), "--out", p(&logs)]);
    assert!(written.contains("rural-clinic"), "{written}");
    // Explanations first: the share of normal access the records explain, per hospital.
    let explained = written
        .lines()
        .skip_while(|l| !l.starts_with("what the hospital's records explain"))
        .find(|l| l.starts_with("rural-clinic"))
        .unwrap_or_else(|| panic!("no explanation table: {written}"));
    let share: f64 = explained
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(share > 50.0 && share <= 100.0, "{explained}");
    // The realism table: every published figure, with this one hospital counted in or out of
    // its range, and the explained share agreeing with the table above.
    let realism: Vec<&str> = written
        .lines()
        .skip_while(|l| !l.contains("published figures of real EHR audit logs"))
        .filter(|l| l.contains("/1 "))
        .collect();
    assert_eq!(
        realism.len(),
        medfl_simulations::published::PUBLISHED.len(),
        "{written}"
    );
    let row = realism
        .iter()
        .find(|l| l.starts_with("accesses explained"))
        .unwrap_or_else(|| panic!("no explained row: {written}"));
    assert!(row.contains(&format!("{share:.1}%")), "{row} / {explained}");
    let h = logs.join("rural-clinic");
    let model = tmp.path().join("m.bin");
    let trained = ok(&[
        "train",
        "--data",
        p(&h.join("events.csv")),
        "--labels",
        p(&h.join("labels.csv")),
        "--out",
        p(&model),
        "--epochs",
        "3",
    ]);
    // The role policy's alerts are paid for out of the same budget, and said so.
    assert!(trained.contains("role policy: "), "{trained}");
    let hash = trained
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        p(&model),
        "--data",
        p(&h.join("audit_events.ndjson")),
        "--labels",
        p(&h.join("labels.csv")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["model"].as_str(), Some(hash.as_str()));
    // `eval` alerts on what the monitor would: the model's alerts and the role policy's, on
    // the features as extracted.
    let ds = medfl::data::load(
        &h.join("events.csv"),
        None,
        None,
        None,
        medfl_accesslog::OnError::Reject,
    )
    .unwrap();
    let (file, _) = medfl_model::modelfile::ModelFile::load(&model).unwrap();
    let device = medfl_model::train::training_device();
    let net = medfl_model::Autoencoder::new(file.config, 0, &device)
        .unwrap()
        .load_flat(file.config, &file.params)
        .unwrap();
    let scores = medfl_model::train::score(&net, &ds.data, ds.n_cols, &device).unwrap();
    let policy = medfl_model::policy::AlertPolicy::RoleNeeds;
    let (by_score, by_policy) =
        scores
            .iter()
            .zip(ds.data.chunks_exact(ds.n_cols))
            .fold((0, 0), |(s, q), (&x, row)| {
                (
                    s + u64::from(x > file.threshold),
                    q + u64::from(policy.flags(row)),
                )
            });
    let either = scores
        .iter()
        .zip(ds.data.chunks_exact(ds.n_cols))
        .filter(|&(&x, row)| x > file.threshold || policy.flags(row))
        .count() as u64;
    assert!(by_policy > 0 && either > by_score, "{by_score} {by_policy}");
    assert_eq!(json["flagged"].as_u64(), Some(either));
    let auroc = json["evaluation"]["auroc"].as_f64().unwrap();
    assert!(auroc > 0.8, "AUROC {auroc}");
    // The same events as CSV score identically.
    let from_csv: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        p(&model),
        "--data",
        p(&h.join("events.csv")),
        "--labels",
        p(&h.join("labels.csv")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(from_csv["evaluation"]["auroc"], json["evaluation"]["auroc"]);
    // Both judge by case too, alike: the FHIR reader gives the same employees and times.
    let cases = &json["evaluation"]["cases"];
    assert!(cases["attack_windows"].as_u64().unwrap() > 0, "{cases}");
    assert_eq!(&from_csv["evaluation"]["cases"], cases);
    let text = ok(&[
        "eval",
        "--model",
        p(&model),
        "--data",
        p(&h.join("events.csv")),
        "--labels",
        p(&h.join("labels.csv")),
    ]);
    assert!(
        text.contains("by case") && text.contains("precision"),
        "{text}"
    );
    // Access events are alerted by the role policy too; a table's rows never are.
    assert!(text.contains("of them by the role policy"), "{text}");

    // A hospital's own numeric table, with its label column.
    let table = tmp.path().join("table.csv");
    std::fs::write(&table, fraud_table((0..20).map(|_| 3.0))).unwrap();
    let tm = tmp.path().join("t.bin");
    train_on_table(&table, &tm);
    let out = ok(&[
        "eval",
        "--model",
        p(&tm),
        "--data",
        p(&table),
        "--label-column",
        "is_fraud",
    ]);
    assert!(
        out.contains("AUROC") && !out.contains("role policy"),
        "{out}"
    );
    // A table names no employees: there are no cases to judge.
    assert!(!out.contains("by case"), "{out}");
    // Sorted by its label, a fifth of anomalies at the end: split in file order, the held-out
    // fifth would hold no normal row to set a threshold on. Shuffled with the seed, it does.
    let sorted = tmp.path().join("sorted.csv");
    std::fs::write(
        &sorted,
        fraud_table((0..100).map(|i| 3.0 + 0.01 * i as f32)),
    )
    .unwrap();
    let sm = tmp.path().join("s.bin");
    train_on_table(&sorted, &sm);
    let judged: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--model",
        p(&sm),
        "--data",
        p(&sorted),
        "--label-column",
        "is_fraud",
        "--json",
    ]))
    .unwrap();
    let auroc = judged["evaluation"]["auroc"].as_f64().unwrap();
    assert!(auroc > 0.9, "AUROC {auroc} on a label-sorted table");
    // The threshold came from normal rows: it flags the anomalies and few of the others.
    let (recall, fpr) = (
        judged["evaluation"]["recall"].as_f64().unwrap(),
        judged["evaluation"]["fpr"].as_f64().unwrap(),
    );
    assert!(recall > 0.9 && fpr < 0.1, "recall {recall}, FPR {fpr}");
    // A model of the wrong width is refused, with the widths named.
    let err = fails(&[
        "eval",
        "--model",
        p(&model),
        "--data",
        p(&table),
        "--label-column",
        "is_fraud",
    ]);
    let expected = format!(
        "expects {} features, the data has 3",
        medfl_accesslog::N_FEATURES
    );
    assert!(err.contains(&expected), "{err}");
    // A malformed row is reported with its line number, or skipped on request.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "a,b,c,is_fraud\n1,2,3,0\n1,x,3,0\n").unwrap();
    assert!(
        fails(&[
            "eval",
            "--model",
            p(&tm),
            "--data",
            p(&bad),
            "--label-column",
            "is_fraud"
        ])
        .contains("line 3")
    );
    let out = medfl(&[
        "eval",
        "--model",
        p(&tm),
        "--data",
        p(&bad),
        "--label-column",
        "is_fraud",
        "--skip-bad-rows",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped line 3"));
    // A file that is not a model.
    assert!(
        fails(&["eval", "--model", p(&table), "--data", p(&table)])
            .contains("not a medfl model file")
    );
}

/// One hospital's table for the table experiment: `normal` rows on a curve, shifted by
/// `offset` (hospitals differ), one column a thousand times the others' scale, and
/// `anomalous` rows off the curve.
fn hospital_table(normal: usize, anomalous: usize, offset: f32) -> String {
    let mut csv = String::from("a,b_in_mm,c,label\n");
    for i in 0..normal {
        let x = (i as f32 * 0.37).sin() + offset;
        csv.push_str(&format!("{x},{},{},0\n", 1000.0 * x * x, -x));
    }
    // Scattered, not a cluster: unlabelled in training, a cluster would be learnt as normal.
    for i in 0..anomalous {
        let (x, k) = (0.5 * i as f32, (i * 7 % 5) as f32);
        csv.push_str(&format!("{x},{},{},1\n", -3000.0 * (k + 1.0), 4.0 + x * k));
    }
    csv
}

#[test]
fn the_experiment_runs_on_hospital_tables_of_any_width_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // A large, a small and a tiny hospital: 3 columns, not the access features' width.
    let tables = [
        write("large.csv", hospital_table(600, 12, 0.0)),
        write("small.csv", hospital_table(60, 5, 0.3)),
        write("tiny.csv", hospital_table(12, 3, -0.3)),
    ];
    let mut args = vec!["experiment", "--tables"];
    args.extend(tables.iter().map(|t| p(t)));
    args.extend(["--label-column", "label"]);
    let out = ok(&args);
    assert!(out.contains("detection on the test rows"), "{out}");
    // A table names no attack types and no employees: no per-attack or case tables.
    assert!(
        !out.contains("attack (recall") && !out.contains("by case"),
        "{out}"
    );
    let auroc = |setting: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{setting}  ")))
            .unwrap_or_else(|| panic!("no {setting} row in\n{out}"));
        line[setting.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    for setting in ["federated", "federated forest", "ensemble"] {
        let a = auroc(setting);
        assert!(a > 0.9, "{setting} AUROC {a}\n{out}");
    }
    assert!(out.contains("federated model hash"), "{out}");

    // The same run twice gives the same figures and model hashes.
    assert_eq!(ok(&args), out);

    // Three initial weights: the first run's tables as they were, then each figure's median
    // and range, which must contain the first run's figure.
    let mut three = args.clone();
    three.extend(["--inits", "3"]);
    let spread = ok(&three);
    assert!(spread.starts_with(&out), "{spread}");
    let summary = &spread[out.len()..];
    assert!(
        summary.contains("across 3 initial weights (model seeds"),
        "{summary}"
    );
    let row = summary
        .lines()
        .find(|l| l.starts_with("federated  "))
        .unwrap_or_else(|| panic!("no federated row in\n{summary}"));
    let (median, range) = row["federated".len()..]
        .trim_start()
        .split_once(' ')
        .unwrap();
    let (lo, hi) = range
        .trim_start_matches('[')
        .split_once(']')
        .and_then(|(r, _)| r.split_once('-'))
        .unwrap();
    let [median, lo, hi]: [f64; 3] = [median, lo, hi].map(|v| v.parse().unwrap());
    let first = auroc("federated");
    assert!(lo <= median && median <= hi, "{row}");
    assert!(lo <= first && first <= hi, "{first} outside {row}");
    assert!(fails(&[&args[..], &["--inits", "0"]].concat()).contains("--inits"));

    // Tables whose columns differ are refused, naming both.
    let other = write("other.csv", "a,c,b_in_mm,label\n1,2,3,0\n".into());
    let err = fails(&[
        "experiment",
        "--tables",
        p(&tables[0]),
        p(&other),
        "--label-column",
        "label",
    ]);
    assert!(
        err.contains("same columns") && err.contains("other.csv"),
        "{err}"
    );
    // Too few rows to split: said, with the counts.
    let two = write("two.csv", hospital_table(2, 0, 0.0));
    let err = fails(&[
        "experiment",
        "--tables",
        p(&tables[0]),
        p(&two),
        "--label-column",
        "label",
    ]);
    assert!(err.contains("0 normal validation rows"), "{err}");
    // A label column is needed to judge; a scenario and tables are not both taken.
    assert!(
        fails(&["experiment", "--tables", p(&tables[0]), p(&tables[1])]).contains("--label-column")
    );
    let err = fails(&[
        "experiment",
        "--scenario",
        "x.toml",
        "--tables",
        p(&tables[0]),
        p(&tables[1]),
        "--label-column",
        "label",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
}
