//! The monitor's counters, served at `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4: `# HELP`, `# TYPE`, then `name{label="value"} number` lines; a histogram as
//! cumulative `_bucket{le=...}` counts with `_sum` and `_count`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use medfl_monitor::Verdict;

use super::{Server, read_shared_value};

/// Where a request came from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Source {
    /// `POST /v1/access`.
    Json,
    /// `POST /fhir/AuditEvent`, `POST /fhir`.
    Fhir,
    /// ATNA over syslog.
    Syslog,
}

const SOURCES: [&str; 3] = ["json", "fhir", "syslog"];
const VERDICTS: [&str; 3] = ["allow", "alert", "deny"];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters the handlers and the decision writer bump without a lock.
#[derive(Default)]
pub(super) struct Metrics {
    answered: [AtomicU64; 3],
    refused: [AtomicU64; 3],
    decisions: [AtomicU64; 3],
    /// Cumulative counts per bucket, plus one for `+Inf`.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    /// Failed or refused TLS handshakes: on the HTTP listener (at [`Source::Json`]) and the
    /// syslog one.
    handshakes_failed: [AtomicU64; 3],
    /// Deliveries named again by their sender and answered from the first one's record.
    repeated: AtomicU64,
}

impl Metrics {
    /// A request from `source` decided and answered after `took` (receipt to answer).
    pub(super) fn answered(&self, source: Source, took: Duration) {
        self.answered[source as usize].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.latency[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency[BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A request from `source` refused (malformed, unknown to the context, overloaded).
    pub(super) fn refused(&self, source: Source) {
        self.refused[source as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake on the listener of `source` failed, was refused, or was not started
    /// (too many from one address).
    pub(super) fn handshake_failed(&self, source: Source) {
        self.handshakes_failed[source as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery its sender named again, answered from the record that decided it.
    pub(super) fn repeated(&self) {
        self.repeated.fetch_add(1, Ordering::Relaxed);
    }

    /// A decision made and logged.
    pub(super) fn decided(&self, v: Verdict) {
        let i = match v {
            Verdict::Allow => 0,
            Verdict::Alert => 1,
            Verdict::Deny => 2,
        };
        self.decisions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the log's length, the standing blocks, and the connections
    /// open on each listener.
    fn render(&self, records: u64, blocked: usize, open: [(&str, usize, usize); 2]) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let o = &mut out;
        family(
            o,
            "medfl_monitor_requests_total",
            "counter",
            "Accesses decided and answered, by where they came from.",
        );
        for (i, s) in SOURCES.iter().enumerate() {
            sample(
                o,
                "medfl_monitor_requests_total",
                &format!("source=\"{s}\""),
                get(&self.answered[i]),
            );
        }
        family(
            o,
            "medfl_monitor_refused_total",
            "counter",
            "Requests refused before a decision (malformed, unknown, overloaded), by source.",
        );
        for (i, s) in SOURCES.iter().enumerate() {
            sample(
                o,
                "medfl_monitor_refused_total",
                &format!("source=\"{s}\""),
                get(&self.refused[i]),
            );
        }
        family(
            o,
            "medfl_monitor_decisions_total",
            "counter",
            "Decisions made and logged, by verdict.",
        );
        for (i, v) in VERDICTS.iter().enumerate() {
            sample(
                o,
                "medfl_monitor_decisions_total",
                &format!("verdict=\"{v}\""),
                get(&self.decisions[i]),
            );
        }
        family(
            o,
            "medfl_monitor_decision_seconds",
            "histogram",
            "From receipt to answer, the durable commit included.",
        );
        for (i, le) in BUCKETS.iter().enumerate() {
            sample(
                o,
                "medfl_monitor_decision_seconds_bucket",
                &format!("le=\"{le}\""),
                get(&self.latency[i]),
            );
        }
        let count = get(&self.latency[BUCKETS.len()]);
        sample(
            o,
            "medfl_monitor_decision_seconds_bucket",
            "le=\"+Inf\"",
            count,
        );
        let _ = writeln!(
            o,
            "medfl_monitor_decision_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(o, "medfl_monitor_decision_seconds_count {count}");
        family(
            o,
            "medfl_monitor_log_records",
            "gauge",
            "Records in the audit log.",
        );
        let _ = writeln!(o, "medfl_monitor_log_records {records}");
        family(
            o,
            "medfl_monitor_blocked_users",
            "gauge",
            "Users blocked until a security officer reviews them.",
        );
        let _ = writeln!(o, "medfl_monitor_blocked_users {blocked}");
        family(
            o,
            "medfl_monitor_repeated_deliveries_total",
            "counter",
            "Deliveries named again by their sender (same id, same access), answered from the record that decided them.",
        );
        let _ = writeln!(
            o,
            "medfl_monitor_repeated_deliveries_total {}",
            get(&self.repeated)
        );
        family(
            o,
            "medfl_monitor_connections",
            "gauge",
            "Connections open, by listener.",
        );
        for (listener, n, _) in open {
            sample(
                o,
                "medfl_monitor_connections",
                &format!("listener=\"{listener}\""),
                n as u64,
            );
        }
        family(
            o,
            "medfl_monitor_connection_slots",
            "gauge",
            "Connections each listener may hold (within the open-file limit).",
        );
        for (listener, _, total) in open {
            sample(
                o,
                "medfl_monitor_connection_slots",
                &format!("listener=\"{listener}\""),
                total as u64,
            );
        }
        family(
            o,
            "medfl_monitor_tls_handshake_failures_total",
            "counter",
            "TLS connections refused: handshakes failed, refused (no acceptable certificate) or not started, and connections over a per-source limit, by listener.",
        );
        for (listener, source) in [("http", Source::Json), ("syslog", Source::Syslog)] {
            sample(
                o,
                "medfl_monitor_tls_handshake_failures_total",
                &format!("listener=\"{listener}\""),
                get(&self.handshakes_failed[source as usize]),
            );
        }
        out
    }
}

/// A metric family's `HELP` and `TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line with its labels.
fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// `GET /metrics`.
pub(super) async fn serve(State(server): State<Server>) -> Response {
    let metrics = std::sync::Arc::clone(&server.metrics);
    let open = [
        ("http", server.http_slots.open(), server.http_slots.total),
        (
            "syslog",
            server.syslog_slots.open(),
            server.syslog_slots.total,
        ),
    ];
    match read_shared_value(server.app, |s| (s.log.len(), s.monitor.blocks().len())).await {
        Some((records, blocked)) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics.render(records, blocked, open),
        )
            .into_response(),
        None => super::refuse(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the monitor failed",
        ),
    }
}
