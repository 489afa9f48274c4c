//! Tamper evidence: any change to the stored blocks makes `verify` fail, naming the height.

mod common;

use common::*;
use medfl_ledger::{Ledger, verify_dir};
use proptest::prelude::*;

#[test]
fn an_untouched_ledger_verifies_and_reopens_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 1, &[1, 3, 5, 2, 8]);
    let report = verify_dir(dir.path(), None).unwrap();
    assert_eq!((report.height, report.transactions), (5, 19));
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(ledger.state().tip(), report.tip);
    drop(ledger); // redb holds an exclusive lock on the file while open
    assert!(verify_dir(dir.path(), Some(report.tip)).is_ok());
}

/// Flips bytes of the redb *file* where each block's encoding lies. A flip that lands on a
/// stale copy (redb is copy-on-write, so freed pages may still hold old versions) changes
/// nothing that is read; every flip that changes what is read must be caught at its height.
#[test]
fn flipping_file_bytes_inside_any_block_is_caught_at_its_height() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 2, &[1, 2, 3, 1, 4]);
    let file = std::fs::read(dir.path().join("ledger.redb")).unwrap();
    for (height, bytes) in raw_blocks(dir.path()) {
        let starts: Vec<usize> = file
            .windows(bytes.len())
            .enumerate()
            .filter(|(_, w)| *w == bytes.as_slice())
            .map(|(i, _)| i)
            .collect();
        assert!(
            !starts.is_empty(),
            "block {height} is not stored contiguously"
        );
        for offset in [
            0,
            1,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 70,
            bytes.len() - 1,
        ] {
            let mut caught = 0;
            for start in &starts {
                let copy = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), copy.path());
                let path = copy.path().join("ledger.redb");
                let mut damaged = file.clone();
                damaged[start + offset] ^= 0x20;
                std::fs::write(&path, &damaged).unwrap();
                let read_back = std::panic::catch_unwind(|| raw_blocks(copy.path()));
                let changed = match &read_back {
                    Ok(rows) => {
                        rows.iter().find(|(h, _)| *h == height).map(|(_, b)| b) != Some(&bytes)
                    }
                    Err(_) => true,
                };
                if !changed {
                    continue; // a stale copy
                }
                let err = verify_dir(copy.path(), None).expect_err("a damaged ledger verified");
                assert_eq!(
                    err.height, height,
                    "flip at block {height} offset {offset}: {err}"
                );
                caught += 1;
            }
            assert!(caught > 0, "no live copy of block {height} found");
        }
    }
}

#[test]
fn deleting_reordering_or_duplicating_blocks_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 3, &[2, 2, 2, 2, 2]);
    let case = |edit: &dyn Fn(Rows) -> Rows| {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        rewrite_blocks(copy.path(), edit);
        verify_dir(copy.path(), None)
            .expect_err("a damaged ledger verified")
            .height
    };
    // Delete a middle block, the first, the last.
    assert_eq!(
        case(&|rows| rows.into_iter().filter(|(h, _)| *h != 3).collect()),
        3
    );
    assert_eq!(
        case(&|rows| rows.into_iter().filter(|(h, _)| *h != 1).collect()),
        1
    );
    assert_eq!(
        case(&|rows| rows.into_iter().filter(|(h, _)| *h != 5).collect()),
        5
    );
    // Swap two blocks.
    assert_eq!(
        case(&|mut rows| {
            let b2 = rows[1].1.clone();
            rows[1].1 = rows[3].1.clone();
            rows[3].1 = b2;
            rows
        }),
        2
    );
    // Duplicate a block over the next one, and at the end.
    assert_eq!(
        case(&|mut rows| {
            rows[3].1 = rows[2].1.clone();
            rows
        }),
        4
    );
    assert_eq!(
        case(&|mut rows| {
            let b = rows[4].1.clone();
            rows.push((6, b));
            rows
        }),
        6
    );
}

#[test]
fn a_truncated_tip_is_caught_against_an_expected_tip() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 4, &[1, 1, 1]);
    let tip = verify_dir(dir.path(), None).unwrap().tip;
    // An attacker who deletes the last block and rewrites the tip record gets a valid, shorter
    // ledger: only a tip held elsewhere shows it.
    let shorter = tempfile::tempdir().unwrap();
    build(shorter.path(), 4, &[1, 1]);
    assert!(verify_dir(shorter.path(), None).is_ok());
    assert!(verify_dir(shorter.path(), Some(tip)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random ledgers, a random byte of a random block flipped: caught at exactly that height.
    #[test]
    fn any_flipped_byte_is_caught_at_its_height(
        seed in 0u64..1000,
        sizes in prop::collection::vec(1usize..6, 1..6),
        pick in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), seed, &sizes);
        let rows = raw_blocks(dir.path());
        let target = pick.index(rows.len());
        let height = rows[target].0;
        let offset = byte.index(rows[target].1.len());
        rewrite_blocks(dir.path(), |mut rows| {
            rows[target].1[offset] ^= 1 << bit;
            rows
        });
        let err = verify_dir(dir.path(), None).expect_err("a damaged ledger verified");
        prop_assert_eq!(err.height, height, "{}", err);
    }
}
