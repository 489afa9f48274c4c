//! IHE ATNA audit messages over syslog: the monitor stands in for the hospital's audit
//! repository. Each TCP connection is read frame by frame (RFC 6587); each frame's RFC 5424
//! MSG is a FHIR `AuditEvent` in JSON, decided like one posted over HTTP.
//!
//! Syslog has no answers: a frame that cannot be read is counted (`refused_total{source=
//! "syslog"}`) and logged with its sender and reason, and the connection goes on. The frames of
//! one read are decided together and the next read waits for their commit, so a sender is
//! slowed by TCP, never dropped, when the monitor is busy; frames of one connection are decided
//! in the order sent. TLS (RFC 5425) is not served yet: put a TLS terminator in front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medfl_monitor::intake::request_of;
use medfl_monitor::syslog::{FrameReader, SyslogError, parse_message};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use super::metrics::Source;
use super::{Pending, Server};

/// Syslog connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;

/// Accepts syslog connections until the process ends.
pub(super) async fn serve(listener: TcpListener, server: Server) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                warn!(error = %e, "cannot accept a syslog connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(%peer, "too many syslog connections; closing this one");
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match connection(stream, peer, &server).await {
                Ok(()) => {}
                Err(e) => warn!(%peer, error = %e, "syslog connection ended"),
            }
        });
    }
}

/// Why a frame was not decided.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error(transparent)]
    Syslog(#[from] SyslogError),
    #[error("MSG is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{}", .0.diagnostics)]
    AuditEvent(medfl_monitor::intake::Issue),
}

/// Reads one connection to its end.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: &Server,
) -> std::io::Result<()> {
    info!(%peer, "syslog sender connected");
    let mut frames = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            if frames.buffered() > 0 {
                warn!(%peer, bytes = frames.buffered(), "the connection closed inside a frame");
                server.metrics.refused(Source::Syslog);
            }
            return Ok(());
        }
        let started = Instant::now();
        frames.push(&buf[..n]);
        let context = server.context();
        let mut requests = Vec::new();
        while let Some(frame) = frames.next_frame() {
            let request = frame.map_err(FrameError::from).and_then(|f| {
                let m = parse_message(&f)?;
                let value: serde_json::Value = serde_json::from_str(m.msg)?;
                request_of(&value, context.as_deref()).map_err(FrameError::AuditEvent)
            });
            match request {
                Ok(r) => requests.push(r),
                Err(FrameError::Syslog(e)) if e.is_fatal() => {
                    server.metrics.refused(Source::Syslog);
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
                Err(e) => {
                    server.metrics.refused(Source::Syslog);
                    warn!(%peer, error = %e, "syslog frame refused");
                }
            }
        }
        if requests.is_empty() {
            continue;
        }
        for answer in decide(server, requests).await {
            match answer {
                Ok(_) => server.metrics.answered(Source::Syslog, started.elapsed()),
                Err((_, why)) => {
                    server.metrics.refused(Source::Syslog);
                    warn!(%peer, error = why, "syslog audit event refused");
                }
            }
        }
    }
}

/// Hands `requests` to the decision writer, waiting while its queue is full (the sender is
/// slowed through TCP, not dropped), and returns their answers.
async fn decide(
    server: &Server,
    requests: Vec<medfl_monitor::AccessRequest>,
) -> Vec<super::Answer> {
    let n = requests.len();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let mut pending = Pending { requests, reply };
    loop {
        match server.queue.try_send(pending) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(p)) => {
                pending = p;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return failed(n);
            }
        }
    }
    answer.await.unwrap_or_else(|_| failed(n))
}

fn failed(n: usize) -> Vec<super::Answer> {
    (0..n)
        .map(|_| {
            Err((
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the decision failed".to_owned(),
            ))
        })
        .collect()
}
