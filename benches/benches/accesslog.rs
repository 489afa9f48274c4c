//! Access-log speed: simulating a hospital, writing and reading the events CSV, and streaming
//! feature extraction, in events per second.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medfl_accesslog::{OnError, csv, extract, fhir};
use medfl_simulations::{Scenario, generate_hospital};

/// The default scenario's largest hospital, over a shorter period (about 40,000 events).
fn scenario() -> Scenario {
    let mut s = Scenario::default_embedded();
    s.days = 7;
    let big = s.hospitals.len() - 1;
    s.hospitals.swap(0, big);
    s.hospitals.truncate(1);
    s
}

fn bench(c: &mut Criterion) {
    let s = scenario();
    let (events, _) = generate_hospital(&s, 0).unwrap_or_else(|e| panic!("generate: {e}"));
    let n = events.len() as u64;
    let mut group = c.benchmark_group("accesslog");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(n));
    group.bench_function("simulate", |b| {
        b.iter(|| generate_hospital(&s, 0).map(|(e, _)| e.len()))
    });
    group.bench_function("extract_features", |b| b.iter(|| extract(&events).n_rows()));
    let mut csv_bytes = Vec::new();
    csv::write_events(&mut csv_bytes, &events).unwrap_or_else(|e| panic!("csv: {e}"));
    group.bench_function("write_csv", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(csv_bytes.len());
            csv::write_events(&mut out, &events).map(|()| out.len())
        })
    });
    group.bench_function("read_csv", |b| {
        b.iter(|| csv::read_events(csv_bytes.as_slice(), OnError::Reject).map(|p| p.records.len()))
    });
    let mut nd = Vec::new();
    fhir::write_audit_events(&mut nd, &events).unwrap_or_else(|e| panic!("fhir: {e}"));
    group.bench_function("read_fhir_ndjson", |b| {
        b.iter(|| fhir::read_audit_events(nd.as_slice(), OnError::Reject).map(|p| p.records.len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
