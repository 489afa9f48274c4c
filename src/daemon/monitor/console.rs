//! The hospital console: the security officer's pages, served by the monitor itself at
//! `/console`, and the API routes they read beyond the alerts'.
//!
//! Every route here is also a plain JSON API a script can call with `Authorization: Bearer`;
//! the page calls the same routes through its session ([`super::sessions`]). Authorization is
//! checked here, on the server, for every request: the page only hides what a role may not do.
//!
//! - `POST /v1/session` (sign in with a token), `GET /v1/session`, `DELETE /v1/session`;
//! - `GET /v1/blocked`: the users blocked now;
//! - `GET /v1/users/{user}/activity`: a user's latest decisions;
//! - `GET /v1/patients/{patient}/accesses`: the patient-access report (who opened the record,
//!   when, from where, what was decided);
//! - `POST /v1/consent`: record a patient's opt-out or opt-in, logged as the officer's review
//!   and queued as the hospital's consent transaction for the ledger;
//! - `GET /v1/privacy`: the privacy the hospital has spent under each agreement, and what the
//!   next round would cost it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medfl_ledger::tx::ConsentChoice;
use medfl_ledger::{Ledger, Timestamp, Transaction, TxBody};
use medfl_monitor::audit::{AuditRecord, RecordBody, ReviewAction};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::officers::{OfficerRole, authorize};
use super::sessions;
use super::{MAX_NOTE_BYTES, Server, now_ms, officer_for, read_body, refuse};

/// Most decisions `GET /v1/users/{user}/activity` lists.
const ACTIVITY_LIMIT: usize = 200;
/// Most records it looks back through (a bound on one request's work).
const ACTIVITY_WINDOW: usize = 200_000;
/// Most accesses a patient-access report lists (the newest; the CLI lists all).
const REPORT_LIMIT: usize = 5_000;

/// `GET /console`: the hospital console page (it asks for a token if not signed in).
pub(super) async fn page() -> Response {
    crate::console::hospital_page()
}

/// `GET /assets/{name}`: the console's scripts and styles.
pub(super) async fn asset(path: Path<String>) -> Response {
    crate::console::asset_response(path).await
}

/// What a session answer says about who is signed in.
#[derive(Serialize)]
struct SessionView {
    officer: String,
    role: &'static str,
    csrf: String,
    expires_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// `POST /v1/session`: signs in with a token (JSON `{"token"}`, from this origin only) and
/// sets the session cookie.
pub(super) async fn login(
    State(server): State<Server>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !sessions::same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "sign in from the console's own page");
    }
    if !server.sessions.host_allowed(&headers) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "sign in at the console's own address ([monitor] console_hosts names the DNS \
             names it may be reached by)",
        );
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "sign in with a JSON body {\"token\": ...}",
        );
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(Login { token }) = serde_json::from_slice::<Login>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "expected {\"token\": \"64 hex digits\"}",
        );
    };
    let token = token.trim().to_owned();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a token is 64 hex digits, as `medfl officer-token` printed it",
        );
    }
    let dir = Arc::clone(&server.member_dir);
    let checked = token.clone();
    let officer = tokio::task::spawn_blocking(move || {
        authorize(&dir, &checked, OfficerRole::Auditor, now_ms())
    })
    .await;
    let officer = match officer {
        Ok(Ok(o)) => o,
        Ok(Err((status, why))) => return refuse(status, why),
        Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the sign-in failed"),
    };
    let now = now_ms();
    let (id, session) = server.sessions.open(token, officer.expires_ms, now);
    info!(officer = officer.name, "officer signed in to the console");
    let mut response = axum::Json(SessionView {
        officer: officer.name,
        role: officer.role.as_str(),
        csrf: session.csrf,
        expires_ms: session.expires_ms,
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        server.sessions.set_cookie(&id, now, session.expires_ms),
    );
    response
}

/// `GET /v1/session`: who the session cookie signs in, with the CSRF token for writes.
pub(super) async fn session(State(server): State<Server>, headers: HeaderMap) -> Response {
    let Some((_, session)) = server.sessions.of(&headers, now_ms()) else {
        return refuse(StatusCode::UNAUTHORIZED, "not signed in");
    };
    let officer = match officer_for(&server, &headers, OfficerRole::Auditor, false).await {
        Ok(o) => o,
        Err((status, why)) => return refuse(status, why),
    };
    axum::Json(SessionView {
        officer: officer.name,
        role: officer.role.as_str(),
        csrf: session.csrf,
        expires_ms: session.expires_ms,
    })
    .into_response()
}

/// `DELETE /v1/session`: signs out (a write: the CSRF token is needed).
pub(super) async fn logout(State(server): State<Server>, headers: HeaderMap) -> Response {
    let Some((id, session)) = server.sessions.of(&headers, now_ms()) else {
        return refuse(StatusCode::UNAUTHORIZED, "not signed in");
    };
    if !sessions::same_origin(&headers)
        || !server.sessions.host_allowed(&headers)
        || !sessions::csrf_matches(&session, headers.get(sessions::CSRF_HEADER))
    {
        return refuse(StatusCode::FORBIDDEN, "a cross-site request is refused");
    }
    server.sessions.close(&id);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, server.sessions.clear_cookie());
    response
}

/// `GET /v1/blocked`: the users blocked now, with since when and why.
pub(super) async fn blocked(State(server): State<Server>, headers: HeaderMap) -> Response {
    if let Err((status, why)) = officer_for(&server, &headers, OfficerRole::Auditor, false).await {
        return refuse(status, why);
    }
    super::read_shared(server.app, |shared| {
        let list: Vec<_> = shared
            .monitor
            .blocks()
            .iter()
            .map(|(user, b)| {
                serde_json::json!({ "user": user, "since_ms": b.since_ms, "reason": b.reason })
            })
            .collect();
        serde_json::json!({ "blocked": list })
    })
    .await
}

/// One decided access as the reports list it.
fn access_row(r: &AuditRecord) -> Option<serde_json::Value> {
    let (request, decision) = r.body.decision()?;
    Some(serde_json::json!({ "record": r.seq, "request": request, "decision": decision }))
}

/// Reports run at once at most: each scans the audit log, and a burst of them must not take
/// the blocking threads sign-ins and officers' checks need.
pub(super) const MAX_REPORTS_AT_ONCE: usize = 2;

/// Runs a read of the audit log off the async threads, with the log's own reader (no lock of
/// the monitor's: a long report delays no decision), one of [`MAX_REPORTS_AT_ONCE`].
async fn read_log(
    server: &Server,
    officer: &str,
    read: ReviewAction,
    f: impl FnOnce(&medfl_monitor::audit::AuditReader) -> Result<serde_json::Value, String>
    + Send
    + 'static,
) -> Response {
    // One report at a time per officer, so that no one holds every slot.
    let Some(mine) = ReportOf::start(&server.reports_running, officer) else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "your previous report is still running; try again when it is done",
        );
    };
    let Ok(slot) = Arc::clone(&server.reports).try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_REPORTS_AT_ONCE} reports are running; try again in a moment"),
        );
    };
    // Logged once the slots are held: a refused report costs no write.
    if let Some(refused) = log_the_read(server, officer, read).await {
        return refused;
    }
    let reader = server.reader.clone();
    let done = tokio::task::spawn_blocking(move || {
        let (_slot, _mine) = (slot, mine);
        f(&reader)
    })
    .await;
    match done {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the audit log cannot be read: {e}"),
        ),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the report failed"),
    }
}

/// Logs that `officer` reads a report (`read`) before it is sent: a reading that cannot be
/// logged is not served. `None` once logged, else the refusal.
async fn log_the_read(server: &Server, officer: &str, read: ReviewAction) -> Option<Response> {
    let app = Arc::clone(&server.app);
    let officer = officer.to_owned();
    let done = tokio::task::spawn_blocking(move || {
        let Ok(mut shared) = app.lock() else {
            return Err("the monitor failed".to_owned());
        };
        let body = RecordBody::Review {
            officer: officer.clone(),
            action: read,
            note: String::new(),
        };
        let record = shared
            .log
            .append(now_ms(), body)
            .map_err(|e| format!("the reading could not be logged, so it is not served: {e}"))?;
        info!(officer, record = record.seq, "report read");
        Ok(())
    })
    .await;
    match done {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(refuse(StatusCode::SERVICE_UNAVAILABLE, why)),
        Err(_) => Some(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the report failed",
        )),
    }
}

/// An officer's report while it runs: listed in the running set, taken off when dropped.
struct ReportOf {
    running: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    officer: String,
}

impl ReportOf {
    /// Lists `officer`'s report as running, unless one already is.
    fn start(
        running: &Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
        officer: &str,
    ) -> Option<ReportOf> {
        let mut set = running.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(officer.to_owned()).then(|| ReportOf {
            running: Arc::clone(running),
            officer: officer.to_owned(),
        })
    }
}

impl Drop for ReportOf {
    fn drop(&mut self) {
        let mut set = self.running.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.officer);
    }
}

/// The refusal of an id no access could carry (`medfl_monitor::request::check_identity`): a
/// report on it would find nothing, and an opt-out for it would match no record.
fn bad_id(what: &'static str, id: &str) -> Option<Response> {
    medfl_monitor::request::check_identity(what, id)
        .err()
        .map(|e| refuse(StatusCode::BAD_REQUEST, e))
}

/// `GET /v1/users/{user}/activity`: the user's latest decisions, newest first.
pub(super) async fn activity(
    State(server): State<Server>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    // A reading writes a record: through a session it needs the CSRF token, as a write does.
    let officer = match officer_for(&server, &headers, OfficerRole::Auditor, true).await {
        Ok(o) => o,
        Err((status, why)) => return refuse(status, why),
    };
    if let Some(r) = bad_id("user", &user) {
        return r;
    }
    let read = ReviewAction::ReadUserActivity { user: user.clone() };
    read_log(&server, &officer.name, read, move |log| {
        let records = log
            .recent_of_user(&user, ACTIVITY_LIMIT, ACTIVITY_WINDOW)
            .map_err(|e| e.to_string())?;
        let list: Vec<_> = records.iter().filter_map(access_row).collect();
        Ok(serde_json::json!({ "user": user, "accesses": list, "window": ACTIVITY_WINDOW }))
    })
    .await
}

/// `GET /v1/patients/{patient}/accesses`: the patient-access report, oldest first.
pub(super) async fn patient_report(
    State(server): State<Server>,
    Path(patient): Path<String>,
    headers: HeaderMap,
) -> Response {
    // A reading writes a record: through a session it needs the CSRF token, as a write does.
    let officer = match officer_for(&server, &headers, OfficerRole::Auditor, true).await {
        Ok(o) => o,
        Err((status, why)) => return refuse(status, why),
    };
    if let Some(r) = bad_id("patient", &patient) {
        return r;
    }
    let read = ReviewAction::ReadPatientReport {
        patient: patient.clone(),
    };
    read_log(&server, &officer.name, read, move |log| {
        let (total, records) = log
            .history_tail(&patient, REPORT_LIMIT)
            .map_err(|e| e.to_string())?;
        let list: Vec<_> = records.iter().filter_map(access_row).collect();
        Ok(serde_json::json!({
            "patient": patient, "total": total, "accesses": list,
        }))
    })
    .await
}

/// A consent choice, as an officer records it for a patient.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    patient: String,
    /// `opt-out` or `opt-in`.
    choice: String,
    note: String,
}

/// `POST /v1/consent`: an officer records a patient's opt-out or opt-in: the hospital's
/// consent transaction is queued for its client to submit, then the officer's review (naming
/// the transaction) is logged; the ledger gets the patient's salted pseudonym, never the id.
pub(super) async fn consent(
    State(server): State<Server>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (officer, req): (String, ConsentRequest) =
        match super::officer_request(&server, &headers, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    if let Some(r) = bad_id("patient", &req.patient) {
        return r;
    }
    if req.note.len() > MAX_NOTE_BYTES {
        return refuse(StatusCode::BAD_REQUEST, "note too long");
    }
    let choice = match req.choice.as_str() {
        "opt-out" => ConsentChoice::OptOut,
        "opt-in" => ConsentChoice::OptIn,
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("choice {other:?}: expected \"opt-out\" or \"opt-in\""),
            );
        }
    };
    let member = Arc::clone(&server.member);
    let pseudonyms = server.pseudonyms.clone();
    let app = Arc::clone(&server.app);
    let done = tokio::task::spawn_blocking(move || {
        let subject = medfl_ledger::tx::Pseudonym(medfl_ledger::Hash(pseudonyms.pseudonym(&req.patient)));
        let genesis = member.genesis.hash().map_err(|e| e.to_string())?;
        // Signed, queued and logged under the lock, with an issue time later than the last
        // choice's: the ledger then applies concurrent choices in the order the log holds
        // them. Queued before it is logged: a crash between the two leaves the patient's
        // choice on its way to the ledger (signed by the hospital) without the officer's
        // record, never an officer's record of a choice that was not sent.
        let (id, record) = {
            let Ok(mut shared) = app.lock() else {
                return Err("the monitor failed".to_owned());
            };
            let issued = now_ms().max(shared.last_consent_ms.saturating_add(1));
            let tx = Transaction::sign(
                &genesis,
                member.config.member.clone(),
                &member.key,
                Timestamp(issued),
                TxBody::Consent { subject, choice },
            )
            .map_err(|e| e.to_string())?;
            let id = tx.id().map_err(|e| e.to_string())?;
            super::super::queue_signed(&member, &tx).map_err(|e| {
                format!("the consent transaction could not be queued, nothing was recorded: {e:#}")
            })?;
            shared.last_consent_ms = issued;
            let body = RecordBody::Review {
                officer: officer.clone(),
                action: ReviewAction::Consent {
                    patient: req.patient.clone(),
                    opt_out: choice == ConsentChoice::OptOut,
                    transaction: id,
                },
                note: req.note,
            };
            // Stamped with the issue time (the log raises it to its last record's if
            // earlier), so replaying the log restores a time no earlier than any issued.
            let record = shared.log.append(issued, body).map_err(|e| {
                format!(
                    "the consent transaction {id} is queued, but the officer's review could not be logged: {e}"
                )
            })?;
            (id, record)
        };
        info!(officer, record = record.seq, transaction = %id, ?choice, "consent recorded");
        Ok((record.seq, id))
    })
    .await;
    match done {
        Ok(Ok((record, id))) => axum::Json(serde_json::json!({
            "record": record, "transaction": id.to_string(),
        }))
        .into_response(),
        Ok(Err(why)) => refuse(StatusCode::SERVICE_UNAVAILABLE, why),
        Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the consent change failed",
        ),
    }
}

/// The hospital's privacy under one agreement, from its own ledger copy.
#[derive(Clone, Debug, Serialize)]
pub(super) struct AgreementPrivacy {
    agreement: String,
    budget: f64,
    delta: f64,
    spent: f64,
    rounds_joined: u64,
    /// The cumulative epsilon after one more round with the last anchored round's parameters
    /// (`None` before any round).
    after_next_round: Option<f64>,
}

/// What `GET /v1/privacy` answers: the hospital's standing under every agreement that covers
/// it, at the height of its ledger copy.
#[derive(Clone, Debug, Serialize)]
pub(super) struct PrivacyView {
    member: String,
    height: u64,
    agreements: Vec<AgreementPrivacy>,
}

/// Reads the hospital's privacy standing from its ledger copy.
pub(super) fn privacy_of(ledger: &Ledger, me: &medfl_ledger::MemberId) -> PrivacyView {
    let state = ledger.state();
    let mut agreements = Vec::new();
    for a in state.agreements().filter(|a| a.covers(me)) {
        // The last anchored round's parameters: the latest blocks first, and few of them.
        let mut last_dp = None;
        let mut height = state.height();
        while last_dp.is_none() && height > 0 && a.last_round > 0 {
            if let Ok(Some(block)) = ledger.block(height) {
                last_dp = block.txs.iter().rev().find_map(|tx| match &tx.body {
                    TxBody::AnchorRound(r) if r.agreement == a.agreement.id => Some(r.dp),
                    _ => None,
                });
            }
            height -= 1;
        }
        let after_next_round =
            last_dp.and_then(|dp| state.epsilon_after(&a.agreement.id, me, &dp).ok());
        agreements.push(AgreementPrivacy {
            agreement: a.agreement.id.to_string(),
            budget: a.agreement.budget.epsilon,
            delta: a.agreement.budget.delta,
            spent: a.spent.get(me).copied().unwrap_or(0.0),
            rounds_joined: a.rounds_joined.get(me).copied().unwrap_or(0),
            after_next_round,
        });
    }
    PrivacyView {
        member: me.to_string(),
        height: state.height(),
        agreements,
    }
}

/// `GET /v1/privacy`.
pub(super) async fn privacy(State(server): State<Server>, headers: HeaderMap) -> Response {
    if let Err((status, why)) = officer_for(&server, &headers, OfficerRole::Auditor, false).await {
        return refuse(status, why);
    }
    let view = server.privacy.read().ok().and_then(|p| p.clone());
    match view {
        Some(v) => axum::Json(&*v).into_response(),
        None => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the hospital's ledger copy has not been read yet",
        ),
    }
}
