//! Crash safety: a process SIGKILLed while appending in a loop leaves a ledger that opens and
//! verifies and holds every block whose append had returned.
//!
//! The test binary runs itself as the appending child (`append_loop_child`, which does nothing
//! unless the parent set `MEDFL_CRASH_CHILD_DIR`), reads the heights the child reports after each
//! append returns, and kills it at an arbitrary moment.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::t;
use medfl_ledger::testkit::Fixture;
use medfl_ledger::tx::AuditAnchor;
use medfl_ledger::{Hash, Ledger, TxBody, verify_dir};

const CHILD_ENV: &str = "MEDFL_CRASH_CHILD_DIR";
const SEED: u64 = 99;

/// The child's body: append blocks forever, reporting each one once `append` has returned.
#[test]
fn append_loop_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let f = Fixture::new(SEED, 3, 2);
    let mut ledger = Ledger::open(dir.as_ref()).unwrap();
    let (coord, key) = f.coordinator();
    let out = std::io::stdout();
    for i in ledger.state().height() + 1.. {
        let txs = (0..3)
            .map(|h| {
                let who = Fixture::id(&format!("hospital-{h}"));
                let body = TxBody::AnchorAuditLog(AuditAnchor {
                    merkle_root: Hash::tagged(b"crash", &[&i.to_le_bytes()]),
                    count: i,
                    first_event_at: t(i),
                    last_event_at: t(i),
                });
                f.tx(&who, t(i), body)
            })
            .collect();
        let receipt = ledger.append(txs, t(i), coord, key).unwrap();
        let mut out = out.lock();
        writeln!(out, "appended {} {}", receipt.height, receipt.hash).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_while_appending_keeps_every_returned_block() {
    for (attempt, kill_after) in [5usize, 23, 61].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture::new(SEED, 3, 2);
        drop(Ledger::create(dir.path(), &f.genesis).unwrap());

        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "append_loop_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reported = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while reported.len() < kill_after {
            let line = lines.next().expect("the child stopped early").unwrap();
            if let Some(rest) = line.strip_prefix("appended ") {
                let (h, hash) = rest.split_once(' ').unwrap();
                reported.push((h.parse::<u64>().unwrap(), hash.parse::<Hash>().unwrap()));
            }
        }
        // Kill at an arbitrary point of the next appends.
        std::thread::sleep(std::time::Duration::from_micros(300 * attempt as u64));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let report =
            verify_dir(dir.path(), None).unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(report.height >= reported.len() as u64);
        for (height, hash) in reported {
            let block = ledger
                .block(height)
                .unwrap()
                .expect("a returned append was lost");
            assert_eq!(block.header.hash().unwrap(), hash);
        }
    }
}
