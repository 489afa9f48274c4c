//! Verification reads evidence and never changes it: a private snapshot, no lock, no write;
//! a damaged file is an error, never a crash.

mod common;

use std::path::Path;

use common::*;
use medfl_ledger::{Ledger, verify_dir};

#[test]
fn verify_show_and_prove_leave_the_file_untouched_beside_its_running_owner() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 4, &[2, 3, 1]);
    let db = dir.path().join("ledger.redb");
    // The owner holds redb's exclusive lock, as a running daemon does (its open may write).
    let owner = Ledger::open(dir.path()).unwrap();
    let before = std::fs::read(&db).unwrap();
    let modified = std::fs::metadata(&db).unwrap().modified().unwrap();

    let report = verify_dir(dir.path(), Some(owner.state().tip())).unwrap();
    assert_eq!((report.height, report.transactions), (3, 6));
    let snapshot = Ledger::open_snapshot(dir.path()).unwrap();
    assert_eq!(snapshot.state(), owner.state());
    let id = snapshot.block(2).unwrap().unwrap().tx_ids().unwrap()[1];
    snapshot.prove(&id).unwrap();
    drop(snapshot);

    assert!(
        std::fs::read(&db).unwrap() == before,
        "reading changed the file"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().modified().unwrap(),
        modified
    );
}

/// Flips one bit at each of `positions` in a copy of the ledger in `dir` and verifies it.
/// Every verification must return (pass, for a flip outside anything read, or fail with an
/// error) rather than panic, and must leave the damaged file exactly as it found it.
/// Returns how many flips were refused.
fn flip_sweep(dir: &Path, positions: impl Iterator<Item = (usize, u8)>) -> (usize, usize) {
    let file = std::fs::read(dir.join("ledger.redb")).unwrap();
    let (mut refused, mut total) = (0, 0);
    for (at, bit) in positions {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir, copy.path());
        let path = copy.path().join("ledger.redb");
        let mut damaged = file.clone();
        damaged[at] ^= 1 << bit;
        std::fs::write(&path, &damaged).unwrap();
        let outcome = verify_dir(copy.path(), None);
        assert!(
            std::fs::read(&path).unwrap() == damaged,
            "verifying the flip at byte {at} bit {bit} wrote to the file"
        );
        refused += usize::from(outcome.is_err());
        total += 1;
    }
    (refused, total)
}

fn sample_ledger() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 9, &[3, 1, 4, 1, 5]);
    dir
}

#[test]
fn bit_flips_across_the_file_are_errors_never_crashes() {
    let dir = sample_ledger();
    let len = std::fs::metadata(dir.path().join("ledger.redb"))
        .unwrap()
        .len() as usize;
    // 32 flips spread over the whole file, header pages included.
    let (refused, total) = flip_sweep(
        dir.path(),
        (0..32).map(|i| (i * len / 32 + i, (i % 8) as u8)),
    );
    assert_eq!(total, 32);
    assert!(refused > 0, "no flip was refused");
}

/// The slow sweep: 512 single-bit flips over a real ledger file (run with `--ignored`).
#[test]
#[ignore]
fn bit_flip_sweep_over_a_whole_ledger_file() {
    let dir = sample_ledger();
    let len = std::fs::metadata(dir.path().join("ledger.redb"))
        .unwrap()
        .len() as usize;
    let n = 512;
    let (refused, total) = flip_sweep(
        dir.path(),
        (0..n).map(|i| ((i * 7919) % len, ((i * 3) % 8) as u8)),
    );
    eprintln!("{total} single-bit flips over a {len}-byte ledger: {refused} refused, none crashed");
    assert_eq!(total, n);
}
