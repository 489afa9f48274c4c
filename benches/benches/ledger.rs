//! Ledger speed: appending signed transactions into durable blocks, committing a one-transaction
//! block, and verifying a 100,000-transaction ledger from genesis.
//!
//! Blocks are written to a temporary directory on the same disk as the project, with redb's
//! default durable commits (fsync before `append` returns).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{Hash, Ledger, Timestamp, Transaction, TxBody, verify_dir};

const HOSPITALS: usize = 10;

/// `n` signed consent transactions, unique by `start..start+n`, spread over the hospitals.
fn consent_txs(f: &Fixture, start: u64, n: usize, at: Timestamp) -> Vec<Transaction> {
    (start..start + n as u64)
        .map(|i| {
            let who = Fixture::id(&format!("hospital-{}", i % HOSPITALS as u64));
            let subject = Pseudonym(Hash::tagged(b"bench-subject", &[&i.to_le_bytes()]));
            f.tx(
                &who,
                at,
                TxBody::Consent {
                    subject,
                    choice: ConsentChoice::OptOut,
                },
            )
        })
        .collect()
}

fn bench_dir() -> tempfile::TempDir {
    // Under target/, on the project's disk: /tmp may be a RAM disk elsewhere and make fsync free.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-ledger");
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    tempfile::tempdir_in(base).unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for block_size in [1usize, 500] {
        group.throughput(Throughput::Elements(block_size as u64));
        group.bench_with_input(
            BenchmarkId::new("durable_block", block_size),
            &block_size,
            |b, &n| {
                let f = Fixture::new(1, HOSPITALS, 1);
                let dir = bench_dir();
                let mut ledger = Ledger::create(dir.path(), &f.genesis).unwrap();
                let (coord, key) = f.coordinator();
                let mut next = 0u64;
                b.iter_custom(|iters| {
                    // Members sign their own transactions; the ledger's work starts at append.
                    let blocks: Vec<Vec<Transaction>> = (0..iters)
                        .map(|i| {
                            let at = Timestamp(T0.0 + HOUR + next + i);
                            consent_txs(&f, (next + i) * n as u64, n, at)
                        })
                        .collect();
                    let start = Instant::now();
                    for (i, txs) in blocks.into_iter().enumerate() {
                        let at = Timestamp(T0.0 + HOUR + next + i as u64);
                        ledger.append(txs, at, coord, key).unwrap();
                    }
                    let elapsed = start.elapsed();
                    next += iters;
                    elapsed
                });
            },
        );
    }
    group.finish();
}

fn verify(c: &mut Criterion) {
    let f = Fixture::new(2, HOSPITALS, 1);
    let dir = bench_dir();
    {
        let mut ledger = Ledger::create(dir.path(), &f.genesis).unwrap();
        let (coord, key) = f.coordinator();
        for b in 0..200u64 {
            let at = Timestamp(T0.0 + HOUR + b);
            ledger
                .append(consent_txs(&f, b * 500, 500, at), at, coord, key)
                .unwrap();
        }
    }
    let mut group = c.benchmark_group("ledger_verify");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("100k_transactions", |b| {
        b.iter(|| {
            let report = verify_dir(dir.path(), None).unwrap();
            assert_eq!(report.transactions, 100_000);
        })
    });
    group.finish();
}

criterion_group!(benches, append, verify);
criterion_main!(benches);
