//! The monitor's FHIR R4 face: an EHR posts its `AuditEvent`s here as it would to an audit
//! repository, and gets FHIR back.
//!
//! - `POST /fhir/AuditEvent`: one `AuditEvent` (FHIR R4 "create", http.html#create): `201
//!   Created`, `Location: AuditEvent/<record>`, and an `OperationOutcome` whose issue carries
//!   the verdict as a code and the explanation as text. A Bundle posted here is taken as if
//!   posted to the base.
//! - `POST /fhir`: a `transaction` or `batch` Bundle of `AuditEvent` POSTs (http.html#transaction):
//!   `200` and a `transaction-response` or `batch-response` Bundle, one entry per entry in order.
//!   A transaction with an entry that cannot be read is refused whole, nothing decided.
//! - `GET /fhir/metadata`: the `CapabilityStatement` saying so.
//!
//! Every error is an `OperationOutcome` (http.html#errors): 400 for a resource that cannot be
//! read, 413 for a body over [`MAX_FHIR_BODY_BYTES`], 415 for a body that is not JSON, 503 when
//! the monitor is overloaded.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medfl_monitor::intake::{
    BundleKind, Issue, Submission, decision_outcome, operation_outcome, read_submission,
    response_bundle, response_entry,
};
use serde_json::{Value, json};

use super::metrics::Source;
use super::{Answer, Server, submit};

/// Largest body accepted, in bytes: a Bundle of a thousand `AuditEvent`s.
pub(super) const MAX_FHIR_BODY_BYTES: usize = 4 * 1024 * 1024;

/// FHIR bodies read and parsed at once; more wait (a bound on the memory bodies take).
pub(super) const MAX_BODIES_AT_ONCE: usize = 16;

/// How long a body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The FHIR JSON media type (FHIR R4 http.html#mime-type).
const FHIR_JSON: &str = "application/fhir+json";

/// A FHIR answer: `status`, the FHIR media type, `body`.
fn fhir(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

/// An error answer: `status` and an `OperationOutcome` of `issues`.
fn outcome(status: StatusCode, issues: &[Issue]) -> Response {
    fhir(status, &operation_outcome(issues))
}

/// The `IssueType` for an HTTP status the decision writer refused with.
fn issue_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::SERVICE_UNAVAILABLE => "throttled",
        _ => "exception",
    }
}

/// `POST /fhir` and `POST /fhir/AuditEvent`.
pub(super) async fn post(
    State(server): State<Server>,
    axum::Extension(caller): axum::Extension<super::Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let refused = |status, issues: &[Issue]| {
        server.metrics.refused(Source::Fhir);
        outcome(status, issues)
    };
    if let Some(why) = server.refuse_uncertified(caller) {
        return refused(StatusCode::FORBIDDEN, &[Issue::error("security", why)]);
    }
    if super::sessions::sent_by_a_page(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            &[Issue::error(
                "security",
                "AuditEvents are not taken from web pages",
            )],
        );
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let media = ct.split(';').next().unwrap_or("").trim();
        if media != FHIR_JSON && media != "application/json" {
            return refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &[Issue::error(
                    "not-supported",
                    format!("Content-Type {ct:?}: send {FHIR_JSON}"),
                )],
            );
        }
    }
    let Ok(slot) = Arc::clone(&server.fhir_bodies).acquire_owned().await else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &[Issue::error("throttled", "the monitor is stopping")],
        );
    };
    // A slot is held while the body arrives: a sender that trickles it loses the slot.
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(body, MAX_FHIR_BODY_BYTES),
    );
    let bytes = match read.await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                &[Issue::error(
                    "too-costly",
                    format!("the body is over {MAX_FHIR_BODY_BYTES} bytes (or was cut short)"),
                )],
            );
        }
        Err(_) => {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                &[Issue::error(
                    "timeout",
                    format!(
                        "the body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                )],
            );
        }
    };
    let context = server.context();
    // Parsing a Bundle of a thousand events is CPU work: off the runtime's threads.
    let parsed =
        tokio::task::spawn_blocking(move || read_submission(&bytes, context.as_deref())).await;
    drop(slot);
    let submission = match parsed {
        Ok(Ok(s)) => s,
        Ok(Err(issues)) => return refused(StatusCode::BAD_REQUEST, &issues),
        Err(_) => {
            return refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[Issue::error("exception", "reading the body failed")],
            );
        }
    };
    match submission {
        Submission::Single(delivery) => {
            let request = &delivery.request;
            if let Err(e) = request.check(server.clock.for_access(request.time_ms)) {
                return refused(
                    StatusCode::BAD_REQUEST,
                    &[Issue::error("invalid", e.to_string()).at("AuditEvent")],
                );
            }
            let answer = match submit(&server, vec![delivery], false).await {
                Ok(mut a) => a.pop(),
                Err((status, why)) => {
                    return refused(status, &[Issue::error(issue_code(status), why)]);
                }
            };
            match answer {
                Some(Ok((seq, decision))) => {
                    server.metrics.answered(Source::Fhir, started.elapsed());
                    let mut r = fhir(StatusCode::CREATED, &decision_outcome(seq, &decision));
                    if let Ok(loc) = format!("AuditEvent/{seq}").parse() {
                        r.headers_mut().insert(header::LOCATION, loc);
                    }
                    r
                }
                Some(Err((status, why))) => {
                    refused(status, &[Issue::error(issue_code(status), why)])
                }
                None => refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[Issue::error("exception", "the decision failed")],
                ),
            }
        }
        Submission::Bundle { kind, entries } => bundle(&server, kind, entries, started).await,
    }
}

/// Decides a Bundle's readable entries in one submission and answers entry by entry.
async fn bundle(
    server: &Server,
    kind: BundleKind,
    mut entries: Vec<Result<medfl_monitor::Delivery, Issue>>,
    started: Instant,
) -> Response {
    // Checked before anything is decided, so that a transaction is refused whole.
    for (i, e) in entries.iter_mut().enumerate() {
        if let Ok(d) = e
            && let Err(why) = d.request.check(server.clock.for_access(d.request.time_ms))
        {
            *e =
                Err(Issue::error("invalid", why.to_string())
                    .at(format!("Bundle.entry[{i}].resource")));
        }
    }
    if kind == BundleKind::Transaction {
        let bad: Vec<Issue> = entries.iter().filter_map(|e| e.clone().err()).collect();
        if !bad.is_empty() {
            server.metrics.refused(Source::Fhir);
            return outcome(StatusCode::BAD_REQUEST, &bad);
        }
    }
    let requests: Vec<_> = entries.iter().filter_map(|e| e.clone().ok()).collect();
    let answers: std::vec::IntoIter<Answer> = if requests.is_empty() {
        Vec::new().into_iter()
    } else {
        match submit(server, requests, kind == BundleKind::Transaction).await {
            Ok(a) => a.into_iter(),
            Err((status, why)) => {
                server.metrics.refused(Source::Fhir);
                return outcome(status, &[Issue::error(issue_code(status), why)]);
            }
        }
    };
    let answers: Vec<Answer> = answers.collect();
    if kind == BundleKind::Transaction
        && let Some((status, why)) = answers.iter().find_map(|a| a.as_ref().err())
    {
        server.metrics.refused(Source::Fhir);
        return outcome(*status, &[Issue::error(issue_code(*status), why.clone())]);
    }
    let mut answers = answers.into_iter();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let answer = match entry {
            Err(issue) => Err((StatusCode::BAD_REQUEST, operation_outcome(&[issue]))),
            Ok(_) => match answers.next() {
                Some(Ok((seq, d))) => Ok((seq, d)),
                Some(Err((status, why))) => Err((
                    status,
                    operation_outcome(&[Issue::error(issue_code(status), why)]),
                )),
                None => Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    operation_outcome(&[Issue::error("exception", "not decided")]),
                )),
            },
        };
        out.push(match answer {
            Ok((seq, d)) => {
                server.metrics.answered(Source::Fhir, started.elapsed());
                response_entry("201 Created", Some(seq), decision_outcome(seq, &d))
            }
            Err((status, oo)) => {
                server.metrics.refused(Source::Fhir);
                let reason = status.canonical_reason().unwrap_or("");
                response_entry(&format!("{} {reason}", status.as_u16()), None, oo)
            }
        });
    }
    fhir(StatusCode::OK, &response_bundle(kind, out))
}

/// `GET /fhir/metadata`: what this endpoint does, as a FHIR R4 `CapabilityStatement`.
pub(super) async fn metadata() -> Response {
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-30",
        "kind": "instance",
        "software": { "name": "medfl monitor", "version": env!("CARGO_PKG_VERSION") },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Each AuditEvent of an access to a patient's record is decided \
                (allow, alert, deny) and logged durably before the answer.",
            "resource": [{
                "type": "AuditEvent",
                "interaction": [{ "code": "create" }],
            }],
            "interaction": [{ "code": "transaction" }, { "code": "batch" }],
        }],
    });
    fhir(StatusCode::OK, &statement)
}
