//! `medfl simulate` and `medfl replay` end to end, and their refusals of bad input.

mod common;

use common::{fails, ok, p, small_scenario};

#[test]
fn simulate_writes_a_run_that_replays_and_a_changed_run_names_the_diverging_round() {
    let tmp = tempfile::tempdir().unwrap();
    let sc = small_scenario(tmp.path());
    let out = tmp.path().join("run");
    let stdout = ok(&[
        "simulate",
        "--scenario",
        &sc,
        "--rounds",
        "2",
        "--seed",
        "5",
        "--out",
        p(&out),
    ]);
    assert!(stdout.contains("ledger verified: 2 blocks"), "{stdout}");
    assert!(
        stdout.contains("vip_snooping"),
        "the per-attack table: {stdout}"
    );
    for f in [
        "metrics.json",
        "metrics.csv",
        "auroc.svg",
        "privacy.svg",
        "run.toml",
        "scenario.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "header and one row per round: {csv}"
    );
    assert!(ok(&["replay", p(&out)]).contains("all 2 anchored model hashes reproduced"));

    // A different noise level in run.toml: the very first round's model differs.
    let run = std::fs::read_to_string(out.join("run.toml")).unwrap();
    std::fs::write(
        out.join("run.toml"),
        run.replace("learning_rate = 0.002", "learning_rate = 0.003"),
    )
    .unwrap();
    let err = fails(&["replay", p(&out)]);
    assert!(err.contains("round 1 diverges"), "{err}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "seed = 1\nstart_date = \"2026-01-05\"\ndays = 14\nflavour = \"mint\"\n",
    )
    .unwrap();
    let err = fails(&[
        "simulate",
        "--scenario",
        p(&bad),
        "--out",
        p(&tmp.path().join("a")),
    ]);
    assert!(err.contains("flavour"), "{err}");
    let err = fails(&[
        "simulate",
        "--hospitals",
        "0",
        "--out",
        p(&tmp.path().join("b")),
    ]);
    assert!(err.contains("--hospitals"), "{err}");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = fails(&["simulate", "--rounds", "1", "--out", p(&file.join("run"))]);
    assert!(err.contains("cannot create"), "{err}");
    let err = fails(&["replay", p(tmp.path())]);
    assert!(err.contains("not a simulation run directory"), "{err}");
}

#[test]
fn a_damaged_ledger_is_refused_by_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let sc = small_scenario(tmp.path());
    let out = tmp.path().join("run");
    ok(&[
        "simulate",
        "--scenario",
        &sc,
        "--rounds",
        "1",
        "--out",
        p(&out),
    ]);
    let db = out.join("ledger").join("ledger.redb");
    assert!(db.is_file(), "ledger file name changed?");
    let mut bytes = std::fs::read(&db).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&db, bytes).unwrap();
    let err = fails(&["replay", p(&out)]);
    assert!(
        err.contains("does not verify") || err.contains("ledger"),
        "{err}"
    );
}
