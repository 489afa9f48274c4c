//! The console's pages, scripts and styles, compiled into the binary: a hospital's closed
//! network serves them without reaching anywhere else.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::api::ApiError;

/// `docs/openapi.json`: the API's description, served at `/api/openapi.json`.
pub(super) const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Every file under `/assets/`, with its media type.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "consortium.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/consortium.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dom.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/charts.js"),
    ),
    (
        "hospital.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/hospital.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
    (
        "proof.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/proof.js"),
    ),
];

fn with_type(media: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    r
}

/// `GET /`: the consortium page.
pub(super) async fn consortium_page() -> Response {
    with_type(
        "text/html; charset=utf-8",
        include_str!("assets/consortium.html"),
    )
}

/// The hospital console's page (served by the monitor at `/console`).
pub fn hospital_page() -> Response {
    with_type(
        "text/html; charset=utf-8",
        include_str!("assets/hospital.html"),
    )
}

/// `GET /assets/{name}`, for the monitor's router (whose state differs from the console's).
pub async fn asset_response(name: Path<String>) -> Response {
    match asset(name).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `GET /assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, media, body)| with_type(media, body))
        .ok_or_else(|| ApiError::not_found(format!("no asset {name:?}")))
}

/// `GET /api/openapi.json`.
pub(super) async fn openapi() -> Response {
    with_type("application/json", OPENAPI)
}
