//! The web console: a consortium's rounds, privacy and ledger, in a browser, served by the
//! process that holds them (`medfl simulate --serve`, `medfl coordinator --console`; the
//! monitor serves the hospital's own view, see `daemon::monitor`).
//!
//! Every page is plain HTML with small scripts embedded in the binary (hospital networks are
//! closed: no CDN, no web font), and every page reads the same JSON API a script can call,
//! documented in `docs/openapi.json` (a test holds the file and [`routes`] to each other).
//!
//! What the browser is asked to trust is kept small. The ledger explorer does not take the
//! server's word that a transaction is on the ledger: the page fetches the genesis's canonical
//! bytes, hashes them itself, and checks each inclusion proof (Merkle path, header chain,
//! coordinators' Ed25519 signatures, and that the proof is for the transaction asked about)
//! with the browser's own WebCrypto, as `medfl ledger check-proof` does. The "verified up to
//! height N" badge is the page's own check of every signed header from the genesis. The
//! genesis itself is the one pinned: in the address (`#genesis=HASH`, the hash a member
//! holds) or else in the browser at its first visit; another is refused.
//!
//! What that protects against, stated plainly: a ledger file damaged or rewritten under the
//! server (it no longer chains from the pinned genesis). It cannot protect against whoever
//! serves the page, since the server sends the script too; and the console speaks plain HTTP,
//! so a proxy on the path is such a server. Bind it to loopback or a trusted network (or
//! behind a TLS proxy); an auditor who trusts no server runs `medfl ledger verify` on a copy.
//! The console is unauthenticated: it shows what every member of the consortium sees on the
//! ledger (rounds, each hospital's privacy spent, opt-out counts) to whoever reaches it.
//!
//! Responses carry a strict Content-Security-Policy (scripts and styles from this origin only,
//! no inline code, no framing) and requests are refused unless their `Host` names the address
//! the console listens on, so a web page elsewhere cannot read it through DNS rebinding.

mod api;
mod assets;
mod run;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

pub use self::assets::{asset_response, hospital_page};
pub use self::run::RunDir;

/// The policy every response carries: nothing from another origin, no inline script or style,
/// no plugin, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// What the console's handlers share: the run they show.
#[derive(Clone)]
struct Console {
    run: Arc<RunDir>,
}

/// One route: its method, its path as `docs/openapi.json` writes it, and its handler.
type Route = (&'static str, &'static str, MethodRouter<Console>);

/// Every route the console serves, pages and API alike: the one list the router is built
/// from and the OpenAPI file is checked against.
fn routes() -> Vec<Route> {
    use axum::routing::get;
    vec![
        ("GET", "/", get(assets::consortium_page)),
        ("GET", "/assets/{name}", get(assets::asset)),
        ("GET", "/api/openapi.json", get(assets::openapi)),
        ("GET", "/api/v1/consortium", get(api::consortium)),
        ("GET", "/api/v1/rounds", get(api::rounds)),
        ("GET", "/api/v1/privacy", get(api::privacy)),
        ("GET", "/api/v1/genesis", get(api::genesis)),
        ("GET", "/api/v1/headers", get(api::headers)),
        ("GET", "/api/v1/blocks", get(api::blocks)),
        ("GET", "/api/v1/blocks/{height}", get(api::block)),
        ("GET", "/api/v1/transactions/{id}/proof", get(api::proof)),
    ]
}

/// The console's router for `run`, answering only requests addressed to `listening`.
pub fn router(run: RunDir, listening: SocketAddr) -> Router {
    let console = Console { run: Arc::new(run) };
    routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        })
        .fallback(api::not_found)
        .with_state(console)
        .layer(middleware::from_fn_with_state(listening, only_our_host))
        // Outermost, so that every answer carries them, a refused host's included.
        .layer(middleware::map_response(secure_headers))
}

/// Serves the console of `run` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, run: RunDir) -> Result<()> {
    let addr = listener.local_addr()?;
    let app = router(run, addr);
    axum::serve(listener, app)
        .await
        .context("serving the console")
}

/// The console's address for a person to open: with the genesis pinned in it
/// (`#genesis=HASH`) when known, so the page checks the ledger against that genesis and no
/// other.
pub fn link(bound: SocketAddr, genesis: Option<medfl_ledger::Hash>) -> String {
    match genesis {
        Some(g) => format!("http://{bound}/#genesis={g}"),
        None => format!("http://{bound}/"),
    }
}

/// The genesis hash of the ledger in `ledger_dir`, if it can be read now.
pub fn genesis_of(ledger_dir: &std::path::Path) -> Option<medfl_ledger::Hash> {
    medfl_ledger::Ledger::open_snapshot(ledger_dir)
        .ok()
        .and_then(|l| l.genesis().hash().ok())
}

/// Binds `addr` and serves the console of `run` from a thread of its own (the caller may be
/// busy simulating, or running a coordinator); returns the address bound (`addr` may ask for
/// port 0).
pub fn spawn(addr: SocketAddr, run: RunDir) -> Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} for the console"))?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build();
            let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
                rt.block_on(async {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    serve(listener, run).await
                })
            });
            if let Err(e) = result {
                eprintln!("the console stopped: {e:#}");
            }
        })
        .context("starting the console's thread")?;
    Ok(bound)
}

/// Whether a request to the console on `listening` may carry `host`: an IP address with the
/// console's port (a rebinding attack needs a DNS name, so a literal address is never one), or
/// `localhost` with the port. Any other name is refused: a page on another site that rebinds
/// its name to this address would otherwise read the console as its own origin.
fn host_allowed(listening: SocketAddr, host: &str) -> bool {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return addr.port() == listening.port();
    }
    host.eq_ignore_ascii_case(&format!("localhost:{}", listening.port()))
}

/// Refuses a request whose `Host` is not one [`host_allowed`] admits.
async fn only_our_host(State(listening): State<SocketAddr>, req: Request, next: Next) -> Response {
    let allowed = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| host_allowed(listening, h));
    if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this console answers only requests addressed to its IP address or localhost",
        )
            .into_response()
    }
}

/// Adds the security headers to every response (the monitor's hospital console uses it too).
pub async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI file names exactly the routes the console serves, method and path.
    #[test]
    fn the_openapi_file_documents_every_route_and_no_other() {
        let spec: serde_json::Value =
            serde_json::from_str(assets::OPENAPI).expect("docs/openapi.json is JSON");
        let mut documented = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn only_ip_addresses_and_localhost_with_the_port_reach_the_console() {
        let on: SocketAddr = "127.0.0.1:8090".parse().unwrap();
        for ok in [
            "127.0.0.1:8090",
            "localhost:8090",
            "LOCALHOST:8090",
            "[::1]:8090",
        ] {
            assert!(host_allowed(on, ok), "{ok}");
        }
        for refused in [
            "evil.example:8090",
            "127.0.0.1:80",
            "localhost",
            "127.0.0.1",
            "",
        ] {
            assert!(!host_allowed(on, refused), "{refused}");
        }
    }
}
