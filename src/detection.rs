//! The detection experiment on a simulated consortium: generate each hospital's log, extract
//! features, split by time, and compare local, federated and centralized training with the
//! isolation-forest baseline (`medfl experiment`).
//!
//! Time split of every hospital's log (days counted from the scenario's start):
//! - the first `warmup_days` only warm up the feature extractor's per-user history (on day 1
//!   everyone's IP is "new");
//! - then training days, whose events are used unlabelled, attacks included, as a hospital's
//!   real traffic would be;
//! - then validation days, whose normal events set the alert threshold (audited traffic);
//! - then test days, labelled, on which everything is judged.

use std::fmt::Write;
use std::ops::Range;

use anyhow::{Context, Result, bail};
use medfl_accesslog::time::DAY_MS;
use medfl_accesslog::{AccessEvent, AttackKind, extract};
use medfl_model::cases::{CaseKey, CaseRules, Standing};
use medfl_model::evaluate::Labels;
use medfl_model::experiment::{self, ExperimentConfig, HospitalData, SettingResult};
use medfl_model::policy::AlertPolicy;
use medfl_simulations::{Scenario, generate_hospital};

use crate::report::table;

/// How a log is split in time, in whole days.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    /// Days that only warm up feature history.
    pub warmup_days: u32,
    /// Days of validation (threshold setting), before the test days.
    pub validation_days: u32,
    /// Days of test, at the end.
    pub test_days: u32,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            warmup_days: 3,
            validation_days: 3,
            test_days: 5,
        }
    }
}

/// Generates the scenario's hospitals and turns them into experiment inputs.
pub fn consortium_data(
    scenario: &Scenario,
    split: Split,
    progress: impl FnMut(&str),
) -> Result<Vec<HospitalData>> {
    Ok(consortium_data_with_logs(scenario, split, false, progress)?
        .into_iter()
        .map(|(d, _)| d)
        .collect())
}

/// A hospital's whole log (time order) and the times of its training rows.
pub type TrainingLog = (Vec<AccessEvent>, Range<u64>);

/// As [`consortium_data`]; with `keep_logs`, also each hospital's log and training window, from
/// which the training rows can be recomputed without some patients (consent).
pub fn consortium_data_with_logs(
    scenario: &Scenario,
    split: Split,
    keep_logs: bool,
    mut progress: impl FnMut(&str),
) -> Result<Vec<(HospitalData, Option<TrainingLog>)>> {
    let reserved = split.warmup_days + split.validation_days + split.test_days;
    if reserved >= scenario.days {
        bail!(
            "the scenario has {} days; the split needs more than {reserved}",
            scenario.days
        );
    }
    let start = scenario.start_ms()?;
    let day = |d: u32| start + u64::from(d) * DAY_MS;
    let train_from = day(split.warmup_days);
    let validation_from = day(scenario.days - split.test_days - split.validation_days);
    let test_from = day(scenario.days - split.test_days);
    let mut out = Vec::new();
    for (i, h) in scenario.hospitals.iter().enumerate() {
        progress(&format!(
            "simulating {} ({}/{})",
            h.name,
            i + 1,
            scenario.hospitals.len()
        ));
        let (events, labels) =
            generate_hospital(scenario, i).with_context(|| format!("hospital {}", h.name))?;
        let features = extract(&events);
        let n = features.n_cols;
        let mut data = HospitalData {
            name: h.name.clone(),
            n_cols: n,
            train: Vec::new(),
            train_employees: Vec::new(),
            validation_normal: Vec::new(),
            test: Vec::new(),
            test_labels: Labels::Typed(Vec::new()),
            test_keys: Vec::new(),
            // Employees are dense indices in order of first appearance: the staff that used
            // the EHR over the whole log.
            employees: features.employees.iter().max().map_or(0, |m| {
                usize::try_from(*m).map_or(usize::MAX, |m| m.saturating_add(1))
            }),
            policy: AlertPolicy::RoleNeeds,
        };
        let mut test_labels = Vec::new();
        for (row, (e, l)) in events.iter().zip(&labels).enumerate() {
            let values = features.row(row);
            if e.time_ms >= test_from {
                data.test.extend_from_slice(values);
                test_labels.push(l.attack);
                data.test_keys.push(CaseKey {
                    employee: features.employees[row],
                    time_ms: e.time_ms,
                    standing: Standing::of(e),
                });
            } else if e.time_ms >= validation_from {
                if l.attack.is_none() {
                    data.validation_normal.extend_from_slice(values);
                }
            } else if e.time_ms >= train_from {
                data.train.extend_from_slice(values);
                data.train_employees.push(features.employees[row]);
            }
        }
        data.test_labels = Labels::Typed(test_labels);
        let log = keep_logs.then_some((events, train_from..validation_from));
        out.push((data, log));
    }
    Ok(out)
}

/// Runs the experiment on the scenario.
pub fn run(
    scenario: &Scenario,
    split: Split,
    config: &ExperimentConfig,
    progress: impl FnMut(&str),
) -> Result<Vec<SettingResult>> {
    let data = consortium_data(scenario, split, progress)?;
    let device = medfl_model::train::training_device();
    Ok(experiment::run(&data, config, &device)?)
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", 100.0 * v))
        .unwrap_or_else(|| "-".into())
}

fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// The overall and per-attack tables, by event and by case.
pub fn render(results: &[SettingResult], target_fpr: f64) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.setting.to_string(),
                num(r.mean(|e| e.auroc)),
                num(r.mean(|e| e.auprc)),
                pct(r.mean(|e| Some(e.recall))),
                pct(r.mean(|e| Some(e.fpr))),
            ]
        })
        .collect();
    let typed = typed(results);
    let unit = if typed { "days" } else { "rows" };
    let _ = writeln!(
        out,
        "detection on the test {unit} (macro average over hospitals; alert threshold set for {:.0}% FPR on validation {unit})",
        100.0 * target_fpr
    );
    if typed {
        out.push_str("alerts: the model's and the role policy's (a kind of record the user's role never needs, always alerted); AUROC and AUPRC rank the model's scores\n");
    }
    out.push('\n');
    out.push_str(&table(
        &["setting", "AUROC", "AUPRC", "recall", "FPR"],
        &rows,
    ));
    if !typed {
        return out;
    }

    out.push('\n');
    out.push_str(&attack_table("attack (recall / AUROC)", results, |r, k| {
        format!("{} / {}", pct(r.attack_recall(k)), num(r.attack_auroc(k)))
    }));
    // The rules the cases were judged by, from the judgement itself.
    let rules = results
        .iter()
        .flat_map(|r| &r.hospitals)
        .find_map(|(_, e)| e.cases.as_ref().map(|c| c.rules));
    if let Some(rules) = rules {
        out.push_str(&render_cases(results, &rules));
    }
    out
}

/// The case-level tables: what an office reviewing its budget each day would catch.
fn render_cases(results: &[SettingResult], rules: &CaseRules) -> String {
    let mut out = String::new();
    let unit = if rules.window_ms == DAY_MS {
        "day"
    } else {
        "window"
    };
    let _ = writeln!(
        out,
        "\nby case (one employee's alerts in one {} h window, ranked by the evidence of its alerts on unexplained accesses, plus {} of the employee's standing evidence from the {unit} before; each window the office reviews the top {} per 1,000 employees; macro average over hospitals)\n\
         ceiling: what a perfect model would catch (every attack case alerting and ranked first), capped where the simulator schedules more attack cases a {unit} than the office reviews\n\
         break-glass: employee-{unit}s with a declared emergency, each reviewed on its own outside the budget; with break-glass review: the attack cases caught, and those the ranking missed on an employee-{unit} with a declared emergency, which that review has in front of it\n\
         caught alone: the attack case ranked among its {unit}'s normal cases only, as if it were the only attack that {unit}\n",
        rules.window_ms as f64 / 3_600_000.0,
        rules.carry(),
        rules.reviews_per_1000_employees
    );
    let per_window = |r: &SettingResult, f: fn(&medfl_model::cases::CaseEvaluation) -> usize| {
        r.case_mean(|c| (c.windows > 0).then(|| f(c) as f64 / c.windows as f64))
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.setting.to_string(),
                num1(per_window(r, |c| c.cases)),
                num1(per_window(r, |c| c.reviewed)),
                num1(per_window(r, |c| c.attack_windows)),
                num1(per_window(r, |c| c.break_glass_windows)),
                pct(r.case_mean(|c| c.recall)),
                pct(r.case_mean(|c| c.recall_with_emergency_review)),
                pct(r.case_mean(|c| c.ceiling)),
                pct(r.case_mean(|c| c.recall_alone)),
                pct(r.case_mean(|c| c.precision)),
                pct(r.case_mean(|c| {
                    (c.attack_windows > 0).then(|| c.alerted as f64 / c.attack_windows as f64)
                })),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "setting",
            &format!("cases/{unit}"),
            &format!("reviewed/{unit}"),
            &format!("attack cases/{unit}"),
            &format!("break-glass/{unit}"),
            "caught (recall)",
            "with break-glass review",
            "ceiling",
            "caught alone",
            "precision",
            "alerted",
        ],
        &rows,
    ));
    out.push('\n');
    out.push_str(&attack_table(
        "attack (cases caught / alone)",
        results,
        |r, k| {
            format!(
                "{} / {}",
                pct(r.attack_case_recall(k)),
                pct(r.attack_case_recall_alone(k))
            )
        },
    ));
    out
}

/// Each figure's median and range over runs on the same data whose model seeds (the networks'
/// initial weights and the order they see the rows in) run upward from `first_seed`: how much
/// of a single run's figure is the draw of its starting point.
pub fn render_spread(runs: &[Vec<SettingResult>], first_seed: u64) -> String {
    let mut out = String::new();
    let Some(first) = runs.first() else {
        return out;
    };
    let seeds = match first_seed.checked_add(runs.len() as u64 - 1) {
        Some(last) if last > first_seed => format!("model seeds {first_seed}-{last}"),
        _ => format!("model seed {first_seed} and on"),
    };
    let _ = writeln!(
        out,
        "across {} initial weights ({seeds}, the same data): median [min-max]\n",
        runs.len()
    );
    // One figure of a setting in every run that has it, summarised.
    let spread =
        |setting: &str, f: &dyn Fn(&SettingResult) -> Option<f64>, show: fn(f64) -> String| {
            let mut v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.iter().find(|r| r.setting == setting).and_then(f))
                .collect();
            v.sort_by(f64::total_cmp);
            match (v.first(), v.last()) {
                (Some(&lo), Some(&hi)) => {
                    let mid = v.len() / 2;
                    let median = if v.len() % 2 == 1 {
                        v[mid]
                    } else {
                        (v[mid - 1] + v[mid]) / 2.0
                    };
                    format!("{} [{}-{}]", show(median), show(lo), show(hi))
                }
                _ => "-".into(),
            }
        };
    let p = |v: f64| format!("{:.1}%", 100.0 * v);
    let n = |v: f64| format!("{v:.3}");
    let rows: Vec<Vec<String>> = first
        .iter()
        .map(|r| {
            vec![
                r.setting.to_string(),
                spread(r.setting, &|r| r.mean(|e| e.auroc), n),
                spread(r.setting, &|r| r.mean(|e| Some(e.recall)), p),
                spread(r.setting, &|r| r.case_mean(|c| c.recall_alone), p),
            ]
        })
        .collect();
    out.push_str(&table(
        &["setting", "AUROC", "recall", "cases caught alone"],
        &rows,
    ));
    if typed(first) {
        out.push('\n');
        out.push_str(&attack_table("attack (recall)", first, |r, k| {
            spread(r.setting, &|r| r.attack_recall(k), p)
        }));
    }
    out
}

/// Whether the results judge attack types: known for simulated logs, while a table's labels
/// say only anomalous or not.
fn typed(results: &[SettingResult]) -> bool {
    results
        .iter()
        .flat_map(|r| &r.hospitals)
        .any(|(_, e)| !e.per_attack.is_empty())
}

/// A table with a row per attack type and a column per setting, each cell from `cell`.
fn attack_table(
    title: &str,
    results: &[SettingResult],
    cell: impl Fn(&SettingResult, AttackKind) -> String,
) -> String {
    let mut headers = vec![title];
    headers.extend(results.iter().map(|r| r.setting));
    let rows: Vec<Vec<String>> = AttackKind::ALL
        .iter()
        .map(|&k| {
            let mut row = vec![k.to_string()];
            row.extend(results.iter().map(|r| cell(r, k)));
            row
        })
        .collect();
    table(&headers, &rows)
}

fn num1(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}
