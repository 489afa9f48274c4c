//! Bad input gives a clear, typed error and never a panic.

mod common;

use medfl_ledger::{ConsortiumFile, Genesis, GenesisError, Ledger, LedgerError, verify_dir};

const PLAN: &str = r#"
name = "north"
created_at = "2026-01-01T00:00:00Z"
quorum = 1

[[members]]
id = "coordinator"
role = "coordinator"
address = "/ip4/127.0.0.1/tcp/7000"

[[members]]
id = "hospital-a"
role = "hospital"

[[agreements]]
id = "dua"
purpose = "anomaly detection"
members = ["hospital-a"]
expires_at = "2027-01-01"
epsilon = 8.0
delta = 1e-5
"#;

#[test]
fn a_plan_checks_but_is_not_a_genesis_until_keys_exist() {
    let plan = ConsortiumFile::from_toml(PLAN).unwrap();
    plan.check_plan().unwrap();
    assert!(matches!(
        plan.to_genesis(),
        Err(GenesisError::MissingKey(_))
    ));
}

#[test]
fn bad_consortium_files_are_refused_with_a_reason() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "duplicate member",
            "id = \"hospital-a\"\nrole = \"hospital\"\n\n[[agreements]]",
            "listed twice",
        ),
        ("unknown key", "quorum = 1", "unknown field"),
        ("bad role", "role = \"hospital\"", "unknown variant"),
        ("bad id", "id = \"hospital-a\"", "may use only"),
        ("quorum too high", "quorum = 1", "quorum"),
        (
            "unknown agreement member",
            "members = [\"hospital-a\"]",
            "not in the consortium",
        ),
        ("bad budget", "epsilon = 8.0", "epsilon"),
        ("bad date", "expires_at = \"2027-01-01\"", "RFC 3339"),
    ];
    let replacements = [
        "id = \"hospital-a\"\nrole = \"hospital\"\n\n[[members]]\nid = \"hospital-a\"\nrole = \"hospital\"\n\n[[agreements]]",
        "quorum = 1\ncolour = \"blue\"",
        "role = \"surgeon\"",
        "id = \"Hospital A\"",
        "quorum = 5",
        "members = [\"hospital-z\"]",
        "epsilon = -1.0",
        "expires_at = \"soon\"",
    ];
    for ((name, find, expect), replace) in cases.iter().zip(replacements) {
        assert!(PLAN.contains(find), "{name}: fixture text not found");
        let text = PLAN.replacen(find, replace, 1);
        let err = ConsortiumFile::from_toml(&text)
            .and_then(|p| p.check_plan())
            .expect_err(name);
        assert!(err.to_string().contains(expect), "{name}: {err}");
    }
}

#[test]
fn a_malformed_key_is_refused() {
    let with_key = |k: &str| {
        PLAN.replacen(
            "role = \"hospital\"",
            &format!("role = \"hospital\"\npublic_key = \"{k}\""),
            1,
        )
    };
    for bad in [
        "zz",
        "00",
        &"0".repeat(64),
        &format!("01{}", "0".repeat(62)),
    ] {
        let err = ConsortiumFile::from_toml(&with_key(bad)).expect_err(bad);
        assert!(matches!(err, GenesisError::Parse(_)), "{err}");
    }
}

#[test]
fn garbage_or_truncated_databases_are_errors_not_panics() {
    // Garbage.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ledger.redb"),
        b"this is not a database at all, not even close",
    )
    .unwrap();
    assert!(matches!(
        Ledger::open(dir.path()),
        Err(LedgerError::Store(_))
    ));
    let err = verify_dir(dir.path(), None).unwrap_err();
    assert_eq!(err.height, 0);

    // A real ledger cut at many lengths.
    let good = tempfile::tempdir().unwrap();
    common::build(good.path(), 5, &[2, 2, 2]);
    let bytes = std::fs::read(good.path().join("ledger.redb")).unwrap();
    for cut in [0, 1, 100, 512, 4096, bytes.len() / 2, bytes.len() - 1] {
        let d = tempfile::tempdir().unwrap();
        common::copy_dir(good.path(), d.path());
        std::fs::write(d.path().join("ledger.redb"), &bytes[..cut]).unwrap();
        // redb may repair what it can; whatever it opens must still verify or be refused.
        if let Ok(report) = verify_dir(d.path(), None) {
            assert!(report.height <= 3);
        }
        let _ = Ledger::open(d.path());
    }

    // No ledger at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Ledger::open(empty.path()),
        Err(LedgerError::Missing(_))
    ));
}

#[test]
fn a_genesis_file_that_disagrees_with_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = common::build(dir.path(), 6, &[1]);
    let mut other = f.genesis.clone();
    other.name = "someone else".into();
    std::fs::write(
        dir.path().join("genesis.toml"),
        other.to_file().to_toml().unwrap(),
    )
    .unwrap();
    assert!(matches!(
        Ledger::open(dir.path()),
        Err(LedgerError::GenesisMismatch { .. })
    ));
    assert!(Genesis::from_toml(&f.genesis.to_file().to_toml().unwrap()).unwrap() == f.genesis);
}
