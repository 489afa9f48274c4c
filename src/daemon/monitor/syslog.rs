//! IHE ATNA audit messages over syslog: the monitor stands in for the hospital's audit
//! repository. Each TCP connection is read frame by frame (RFC 6587); each frame's RFC 5424
//! MSG is a FHIR `AuditEvent` in JSON, decided like one posted over HTTP.
//!
//! Syslog has no answers: a frame that cannot be read is counted (`refused_total{source=
//! "syslog"}`) and logged with its sender and reason, and the connection goes on. The frames of
//! one read are decided together and the next read waits for their commit, so a sender is
//! slowed by TCP, never dropped, when the monitor is busy; frames of one connection are decided
//! in the order sent.
//!
//! With `[monitor.tls]` the listener speaks TLS only (RFC 5425, as RFC 9662 updates it): the
//! handshake comes first, with the sender's certificate checked against the hospital's client
//! CA if one is configured; the frames inside are read exactly as over plain TCP (RFC 5425 §4.3
//! uses the octet-counted framing, which [`FrameReader`] reads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medfl_monitor::intake::delivery_of_json;
use medfl_monitor::syslog::{FrameReader, SyslogError, parse_message};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;

use super::tls::{self, Tls};
use tracing::{info, warn};

use super::metrics::Source;
use super::{Server, send};

/// Syslog connections served at once at most (fewer if the open-file limit is low); more are
/// closed at accept.
pub(super) const MAX_CONNECTIONS: usize = 1024;

/// A connection silent this long is closed (a sender reconnects), so idle connections cannot
/// hold every slot.
const IDLE: Duration = Duration::from_secs(300);

/// How long one frame may take to arrive once started (a sender trickling a byte now and then
/// would otherwise hold its connection for ever).
const FRAME_DEADLINE: Duration = Duration::from_secs(60);

/// Refused frames logged one by one per connection; after that, one line per thousand.
const LOGGED_REFUSALS: u64 = 10;

/// Unlisted senders named in the log at most this many times a minute: a host retrying in a
/// loop must not fill it (each is still counted in the handshake failures).
const SENDER_WARNINGS_PER_MINUTE: u32 = 10;

/// The minute's start, the warnings in it, and those left out since the last one logged.
static SENDER_WARNINGS: std::sync::Mutex<(Option<Instant>, u32, u64)> =
    std::sync::Mutex::new((None, 0, 0));

/// Whether a refused sender may be named in the log now; if so, how many were left out
/// before it.
fn sender_warning(now: Instant) -> Option<u64> {
    let Ok(mut w) = SENDER_WARNINGS.lock() else {
        return Some(0);
    };
    let (start, logged, left_out) = &mut *w;
    if start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(60)) {
        (*start, *logged) = (Some(now), 0);
    }
    if *logged >= SENDER_WARNINGS_PER_MINUTE {
        *left_out = left_out.saturating_add(1);
        return None;
    }
    *logged += 1;
    Some(std::mem::take(left_out))
}

/// Accepts syslog connections (over TLS with `tls`) until the process ends.
pub(super) async fn serve(listener: TcpListener, tls: Option<Tls>, server: Server) {
    let slots = server.syslog_slots.clone();
    loop {
        let (stream, peer, slot) = super::accept(&listener, &slots.permits, "syslog").await;
        let server = server.clone();
        let Some(tls) = tls.clone() else {
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = connection(stream, peer, &server).await {
                    warn!(%peer, error = %e, "syslog connection ended");
                }
            });
            continue;
        };
        // One address cannot hold every slot with handshakes it never finishes.
        let crowded = slots.crowded();
        let Some(handshaking) = tls.syslog_handshakes.admit(peer.ip(), crowded) else {
            server.metrics.handshake_failed(Source::Syslog);
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let refused = |why: &dyn std::fmt::Display| {
                // Port scans and health checks end here too: counted, logged without alarm.
                server.metrics.handshake_failed(Source::Syslog);
                info!(%peer, error = %why, "syslog TLS handshake failed or refused");
            };
            let stream = match tls::handshake(&tls.syslog, stream, tls.handshake_deadline).await {
                Ok(stream) => stream,
                Err(e) => return refused(&e),
            };
            drop(handshaking);
            // The CA verified any certificate shown; with a client CA one must be shown, and
            // with `senders` it must be a listed one.
            let sender = tls.sender(stream.get_ref().1);
            match sender {
                Some(fp) => info!(%peer, certificate = %fp, "syslog sender authenticated"),
                None if tls.intake_needs_client_cert => {
                    // Named, so that an operator can list a sender that belongs.
                    let shown = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| tls::fingerprint(c))
                        .unwrap_or_default();
                    server.metrics.handshake_failed(Source::Syslog);
                    if let Some(left_out) = sender_warning(Instant::now()) {
                        warn!(%peer, certificate = %shown, left_out, "syslog sender refused: its certificate is not among the listed senders");
                    }
                    return;
                }
                None => {}
            }
            if let Err(e) = connection(stream, peer, &server).await {
                warn!(%peer, error = %e, "syslog connection ended");
            }
        });
    }
}

/// Why a frame was not decided.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error(transparent)]
    Syslog(#[from] SyslogError),
    #[error("{}", .0.diagnostics)]
    AuditEvent(medfl_monitor::intake::Issue),
}

/// Reads one connection to its end.
async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    server: &Server,
) -> std::io::Result<()> {
    info!(%peer, "syslog sender connected");
    let mut frames = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut refusals = 0u64;
    let mut refuse = |why: &dyn std::fmt::Display| {
        server.metrics.refused(Source::Syslog);
        refusals += 1;
        if refusals <= LOGGED_REFUSALS || refusals.is_multiple_of(1000) {
            warn!(%peer, refusals, error = %why, "syslog audit event refused");
        }
    };
    let mut frame_started: Option<Instant> = None;
    loop {
        let wait = match frame_started {
            Some(t) => FRAME_DEADLINE.saturating_sub(t.elapsed()),
            None => IDLE,
        };
        let n = match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => {
                if frame_started.is_some() {
                    refuse(&"a frame took over a minute to arrive; the connection is closed");
                } else {
                    info!(%peer, "idle syslog connection closed");
                }
                return Ok(());
            }
        };
        if n == 0 {
            if frames.buffered() > 0 {
                refuse(&"the connection closed inside a frame");
            }
            return Ok(());
        }
        let started = Instant::now();
        frames.push(&buf[..n]);
        let context = server.context();
        let mut requests = Vec::new();
        let mut fatal = None;
        let mut taken = 0usize;
        while let Some(frame) = frames.next_frame() {
            taken += 1;
            let request = frame.map_err(FrameError::from).and_then(|f| {
                let m = parse_message(&f)?;
                delivery_of_json(m.msg.as_bytes(), context.as_deref())
                    .map_err(FrameError::AuditEvent)
            });
            match request {
                Ok(r) => requests.push(r),
                Err(FrameError::Syslog(e)) if e.is_fatal() => {
                    refuse(&e);
                    fatal = Some(e);
                    break;
                }
                Err(e) => refuse(&e),
            }
        }
        // What was read before a fatal frame is decided before the connection is closed.
        if !requests.is_empty() {
            for answer in decide(server, requests).await {
                match answer {
                    Ok(_) => server.metrics.answered(Source::Syslog, started.elapsed()),
                    Err((_, why)) => refuse(&why),
                }
            }
        }
        if let Some(e) = fatal {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
        // The frame now in the buffer started with this read if a frame ended in it.
        // The monitor's own wait (backpressure, the commit) is not the sender's: a frame
        // that began in this read starts its clock now.
        frame_started = match (frames.buffered(), frame_started) {
            (0, _) => None,
            (_, Some(t)) if taken == 0 => Some(t),
            _ => Some(Instant::now()),
        };
    }
}

/// Hands `requests` to the decision writer, waiting while the monitor is full (the sender is
/// slowed through TCP, not dropped), and returns their answers.
async fn decide(server: &Server, requests: Vec<medfl_monitor::Delivery>) -> Vec<super::Answer> {
    let n = requests.len();
    let failed = |why: &str| -> Vec<super::Answer> {
        (0..n)
            .map(|_| {
                Err((
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    why.to_owned(),
                ))
            })
            .collect()
    };
    let Ok(count) = u32::try_from(n) else {
        return failed("too many events in one read");
    };
    let Ok(permits) = Arc::clone(&server.in_flight)
        .acquire_many_owned(count)
        .await
    else {
        return failed("the monitor is stopping");
    };
    send(server, requests, false, permits)
        .await
        .unwrap_or_else(|(_, why)| failed(&why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender refused in a loop is named ten times a minute, and the next line logged says
    /// how many were left out.
    #[test]
    fn refused_senders_are_logged_ten_times_a_minute() {
        let t0 = Instant::now();
        let allowed = (0..25).filter(|_| sender_warning(t0).is_some()).count();
        assert_eq!(allowed, 10);
        assert_eq!(sender_warning(t0 + Duration::from_secs(61)), Some(15));
        assert_eq!(sender_warning(t0 + Duration::from_secs(62)), Some(0));
    }
}
