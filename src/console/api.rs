//! The console's JSON API: what every page reads, and what a script can read the same way.
//! `docs/openapi.json` documents each route; every answer is computed from the run directory
//! as it stands at the request.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medfl_ledger::{
    Hash, InclusionProof, Ledger, LedgerError, MemberId, Role, SignedHeader, TxBody,
};
use serde::{Deserialize, Serialize};

use super::Console;
use super::run::{RunDir, RunError};
use crate::report::{self, BlockRow};

/// Most blocks one `/api/v1/blocks` answer lists.
const MAX_BLOCKS: u64 = 100;
/// Most headers one `/api/v1/headers` answer carries (about 200 bytes each).
const MAX_HEADERS: u64 = 500;

/// An answer that is not the one asked for: a status and a sentence, as JSON
/// `{"error": ...}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// `404` with a reason.
    pub(super) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        RunError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The answer to a path the console does not serve.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page or API route")
}

/// Runs `f` on the run off the async threads (reading the ledger copies and decodes files).
async fn blocking<T: Send + 'static>(
    console: &Console,
    f: impl FnOnce(&RunDir) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let run = std::sync::Arc::clone(&console.run);
    tokio::task::spawn_blocking(move || f(&run))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Runs `f` on the run's ledger; a run without one yet is `503` with a reason.
async fn on_ledger<T: Send + 'static>(
    console: &Console,
    f: impl FnOnce(&Ledger) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(console, move |run| {
        run.with_ledger(f)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the run has no ledger yet: it is still generating its hospitals' data",
            )
        })
    })
    .await
}

/// The run and its ledger at a glance: what the consortium page polls.
#[derive(Serialize)]
struct ConsortiumView {
    /// Whether the run has finished.
    finished: bool,
    /// Steps recorded so far.
    steps: usize,
    /// The ledger, once the run has one.
    ledger: Option<LedgerView>,
}

/// The ledger's head, members, agreements and consent.
#[derive(Serialize)]
struct LedgerView {
    #[serde(flatten)]
    head: report::LedgerHead,
    /// Per hospital, how many patients' opt-outs stand.
    consent: Vec<ConsentRow>,
}

#[derive(Serialize)]
struct ConsentRow {
    member: String,
    opted_out: usize,
}

fn ledger_view(ledger: &Ledger) -> LedgerView {
    let state = ledger.state();
    let consent = state
        .members()
        .filter(|m| m.member.role == Role::Hospital)
        .map(|m| ConsentRow {
            member: m.member.id.to_string(),
            opted_out: state.opted_out(&m.member.id).len(),
        })
        .collect();
    LedgerView {
        head: report::head(ledger),
        consent,
    }
}

/// `GET /api/v1/consortium`.
pub(super) async fn consortium(State(console): State<Console>) -> Result<Response, ApiError> {
    let view = blocking(&console, |run| {
        let ledger = run.with_ledger(|l| Ok::<_, ApiError>(ledger_view(l)))?;
        Ok(ConsortiumView {
            finished: run.finished(),
            steps: run.steps()?,
            ledger,
        })
    })
    .await?;
    Ok(Json(view).into_response())
}

/// Which rounds to send.
#[derive(Deserialize)]
pub(super) struct RoundsQuery {
    /// Only steps after this one.
    #[serde(default)]
    after: u64,
}

/// `GET /api/v1/rounds?after=STEP`: the steps after `STEP`, as `metrics.json` records them.
pub(super) async fn rounds(
    State(console): State<Console>,
    Query(q): Query<RoundsQuery>,
) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Rounds {
        finished: bool,
        rounds: Vec<serde_json::Value>,
    }
    let answer = blocking(&console, move |run| {
        let rounds = run.rounds_after(q.after)?;
        Ok(Rounds {
            finished: run.finished(),
            rounds,
        })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// One hospital's privacy under one agreement: spent, and after each round it joined.
#[derive(Serialize)]
struct MemberPrivacy {
    member: String,
    spent: f64,
    /// `(round, cumulative epsilon)` after each anchored round it took part in.
    series: Vec<(u64, f64)>,
}

#[derive(Serialize)]
struct AgreementPrivacy {
    agreement: String,
    budget: f64,
    delta: f64,
    members: Vec<MemberPrivacy>,
}

/// `GET /api/v1/privacy`: each hospital's epsilon after every round, against its budget, as
/// the round anchors on the ledger record it.
pub(super) async fn privacy(State(console): State<Console>) -> Result<Response, ApiError> {
    let answer = blocking(&console, |run| {
        run.derived("privacy", privacy_of)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the run has no ledger yet: it is still generating its hospitals' data",
            )
        })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// Each hospital's epsilon after every round it joined, from the round anchors.
fn privacy_of(ledger: &Ledger) -> Result<serde_json::Value, ApiError> {
    {
        let state = ledger.state();
        let mut series: BTreeMap<(String, String), Vec<(u64, f64)>> = BTreeMap::new();
        for height in 1..=state.height() {
            let block = ledger.block(height)?.ok_or_else(|| LedgerError::Damaged {
                height,
                source: "block missing".into(),
            })?;
            for tx in &block.txs {
                if let TxBody::AnchorRound(r) = &tx.body {
                    for (member, spend) in &r.participants {
                        series
                            .entry((r.agreement.to_string(), member.to_string()))
                            .or_default()
                            .push((r.round, spend.epsilon_total));
                    }
                }
            }
        }
        let agreements: Vec<AgreementPrivacy> = state
            .agreements()
            .map(|a| AgreementPrivacy {
                agreement: a.agreement.id.to_string(),
                budget: a.agreement.budget.epsilon,
                delta: a.agreement.budget.delta,
                members: a
                    .agreement
                    .members
                    .iter()
                    .map(|m| MemberPrivacy {
                        member: m.to_string(),
                        spent: a.spent.get(m).copied().unwrap_or(0.0),
                        series: series
                            .remove(&(a.agreement.id.to_string(), m.to_string()))
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        serde_json::to_value(agreements)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}

/// `GET /api/v1/genesis`: the genesis hash and the canonical bytes it hashes, so a page can
/// check the one against the other and read the founding coordinators' keys itself.
pub(super) async fn genesis(State(console): State<Console>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct GenesisView {
        hash: Hash,
        canonical: String,
        name: String,
        coordinators: Vec<MemberId>,
    }
    let answer = on_ledger(&console, |ledger| {
        let g = ledger.genesis();
        let bytes = medfl_ledger::codec::encode(g).map_err(LedgerError::from)?;
        Ok(GenesisView {
            hash: g.hash().map_err(LedgerError::from)?,
            canonical: hex::encode(bytes),
            name: g.name.clone(),
            coordinators: g
                .members
                .iter()
                .filter(|m| m.role == Role::Coordinator)
                .map(|m| m.id.clone())
                .collect(),
        })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// A range of heights.
#[derive(Deserialize)]
pub(super) struct HeadersQuery {
    /// First height (from 1).
    #[serde(default = "one")]
    from: u64,
    /// How many at most.
    #[serde(default = "max_headers")]
    limit: u64,
}

fn one() -> u64 {
    1
}

fn max_headers() -> u64 {
    MAX_HEADERS
}

/// `GET /api/v1/headers?from=H&limit=N`: signed headers from height `H`, oldest first, for a
/// page that checks the chain itself.
pub(super) async fn headers(
    State(console): State<Console>,
    Query(q): Query<HeadersQuery>,
) -> Result<Response, ApiError> {
    if q.from == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "from counts heights from 1",
        ));
    }
    #[derive(Serialize)]
    struct Headers {
        height: u64,
        headers: Vec<SignedHeader>,
    }
    let answer = on_ledger(&console, move |ledger| {
        let height = ledger.state().height();
        let last = q
            .from
            .saturating_add(q.limit.clamp(1, MAX_HEADERS) - 1)
            .min(height);
        let mut headers = Vec::new();
        for h in q.from..=last {
            if let Some(block) = ledger.block(h)? {
                headers.push(block.header);
            }
        }
        Ok(Headers { height, headers })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// A page of blocks, newest first.
#[derive(Deserialize)]
pub(super) struct BlocksQuery {
    /// Only blocks below this height (default: from the tip).
    before: Option<u64>,
    /// How many at most.
    #[serde(default = "twenty")]
    limit: u64,
}

fn twenty() -> u64 {
    20
}

/// `GET /api/v1/blocks?before=H&limit=N`: blocks with their transactions in words, newest
/// first.
pub(super) async fn blocks(
    State(console): State<Console>,
    Query(q): Query<BlocksQuery>,
) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Blocks {
        height: u64,
        blocks: Vec<BlockRow>,
    }
    let answer = on_ledger(&console, move |ledger| {
        let height = ledger.state().height();
        let top = q.before.map_or(height, |b| b.saturating_sub(1).min(height));
        let limit = q.limit.clamp(1, MAX_BLOCKS);
        let bottom = top.saturating_sub(limit - 1).max(1);
        let blocks = (bottom..=top)
            .rev()
            .map(|h| report::block_row(ledger, h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Blocks { height, blocks })
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/blocks/{height}`.
pub(super) async fn block(
    State(console): State<Console>,
    Path(height): Path<String>,
) -> Result<Response, ApiError> {
    let height: u64 = height.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{height:?} is not a block height"),
        )
    })?;
    let row = on_ledger(&console, move |ledger| {
        if height == 0 || height > ledger.state().height() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no block at height {height} (the ledger holds 1 to {})",
                    ledger.state().height()
                ),
            ));
        }
        Ok(report::block_row(ledger, height)?)
    })
    .await?;
    Ok(Json(row).into_response())
}

/// `GET /api/v1/transactions/{id}/proof`: the inclusion proof `medfl ledger prove` writes.
pub(super) async fn proof(
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Hash = id.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a transaction id (64 hex digits): {e}"),
        )
    })?;
    let proof: InclusionProof = on_ledger(&console, move |ledger| {
        if !ledger.state().contains_tx(&id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no transaction {id} on the ledger"),
            ));
        }
        Ok(ledger.prove(&id)?)
    })
    .await?;
    Ok(Json(proof).into_response())
}
