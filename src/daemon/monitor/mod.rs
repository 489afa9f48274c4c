//! `medfl monitor`: the hospital's access monitor over HTTP (or HTTPS) and syslog.
//!
//! It serves [`medfl_monitor::Monitor`] at `POST /v1/access`: each request is decided, appended
//! to the hospital's audit log and committed durably, and only then answered (a decision the
//! caller saw is never lost, even to a kill). Around the decisions it keeps what they depend on
//! current, between two requests and without a restart: the monitor model `medfl client`
//! writes when a round is anchored (`models/current.model`, swapped when its hash changes), and
//! what the hospital's own ledger copy says about consent and data-use agreements. Every
//! minute (or 4,096 records) it seals the new records into a batch and queues the batch's
//! Merkle root as an `AnchorAuditLog` transaction the hospital signs itself; the running
//! `medfl client` submits it. On start it replays its audit log, so the users' feature history
//! and standing blocks survive a restart.
//!
//! Endpoints: `POST /v1/access` (JSON [`AccessRequest`]; answers the decision with its record
//! number), `POST /fhir/AuditEvent` and `POST /fhir` (the EHR's own FHIR R4 `AuditEvent`s,
//! alone or in transaction and batch Bundles, answered in FHIR; see [`fhir`]), `GET
//! /fhir/metadata`, `GET /v1/alerts` (the latest alerts and denials), `GET /v1/cases` (the
//! same grouped into cases, one per user and UTC day, ranked), `POST /v1/unblock` (a
//! security officer lifts a user's block: `Authorization: Bearer TOKEN`, JSON `{"user",
//! "note"}`; the review is logged before the block is lifted), `GET /healthz`, and `GET
//! /metrics` (Prometheus). With `--syslog`, IHE ATNA audit messages over TCP too ([`syslog`]);
//! with `[monitor.tls]`, both listeners speak TLS only ([`tls`]).
//!
//! An EHR's `AuditEvent` carries no medfl extensions: the user's role and department, the
//! patient's department and the relation flags come from the hospital's context feeds in
//! `<member>/context/` (see `medfl_accesslog::context`), re-read when they change.
//!
//! Officers' tokens are 256-bit random values made by `medfl officer-token`; the monitor keeps
//! only their SHA-256 (in `monitor/officers`), so the file does not hold a usable token. A
//! slow password hash would add nothing for tokens this long.

mod console;
mod fhir;
mod metrics;
pub mod officers;
mod sessions;
mod syslog;
pub mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use medfl_accesslog::consent::PseudonymKey;
use medfl_accesslog::context::{self as feeds, Context as Feeds};
use medfl_ledger::{Ledger, Role, Timestamp, Transaction, TxBody};
use medfl_model::cases::{CaseBook, CaseRules, Noted, NotedDay, Review, Standing};
use medfl_monitor::audit::{AuditLog, RecordBody, ReviewAction};
use medfl_monitor::decide::Consent;
use medfl_monitor::{
    AccessRequest, Decision, Delivery, DeliveryId, Monitor, Policy, Scorer, Verdict,
};
use serde::Serialize;
use tracing::{info, warn};

use self::metrics::{Metrics, Source};
pub use self::officers::add_officer;
use self::officers::{OfficerRole, authorize};
use super::{Member, queue_signed};

/// HTTP connections served at once at most; more are closed at accept.
const MAX_HTTP_CONNECTIONS: usize = 16 * 1024;

/// File descriptors kept for everything but connections (the audit log, the ledger copy, the
/// model and context files, the outbox, logs).
const RESERVED_FDS: u64 = 256;

/// A listener's connection slots: a permit per open connection, out of `total`.
#[derive(Clone)]
struct Slots {
    permits: Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl Slots {
    fn new(total: usize) -> Slots {
        Slots {
            permits: Arc::new(tokio::sync::Semaphore::new(total)),
            total,
        }
    }

    /// Connections open now.
    fn open(&self) -> usize {
        self.total.saturating_sub(self.permits.available_permits())
    }

    /// Whether fewer than half the slots are free: the per-source limits apply from then on.
    fn crowded(&self) -> bool {
        self.permits.available_permits() < self.total / 2
    }
}

/// The connection slots of the HTTP and syslog listeners that the process's file descriptors
/// allow. The soft limit is raised to the hard one first (often 1,024 against 500,000): slots
/// the descriptors cannot back would let a flood of connections fail every `accept`, and every
/// file the monitor opens, before any limit of its own applied.
fn connection_slots() -> (usize, usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; assuming 1,024");
            1024
        }
    };
    let usable = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    let syslog = (usable / 16).clamp(1, syslog::MAX_CONNECTIONS);
    let http = usable.saturating_sub(syslog).clamp(1, MAX_HTTP_CONNECTIONS);
    if http < MAX_HTTP_CONNECTIONS {
        warn!(
            open_files = limit,
            http,
            syslog,
            "the open-file limit caps the monitor's connections (raise it: LimitNOFILE=65536)"
        );
    }
    (http, syslog)
}

/// Turns transparent huge pages off for this process, so no decision waits on the kernel
/// assembling one.
///
/// The allocator asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), and with the
/// common `defrag` setting of `madvise` the first touch of such a page reclaims and compacts
/// memory synchronously to find 2 MiB free. The decision writer, which allocates as it scores,
/// then stalled for 5 to 15 ms at a time, several times a second, and every request queued
/// behind it waited as long: at 10,000 connections and 20,000 accesses/s the p99 was 48-94 ms
/// with huge pages and 8.7 ms without (README, "The access monitor under load"). The monitor's
/// working set is small, so the TLB savings huge pages buy are not worth it. The flag is the
/// whole process's (and its children's); where the kernel refuses it, the monitor runs on
/// with a warning.
fn no_huge_page_stalls() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        warn!(error = %e, "cannot turn transparent huge pages off; expect latency spikes");
    }
}

/// A connection's read buffer at most, in bytes (a request's head must fit).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Largest request body accepted, in bytes (an access is a few hundred).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Alerts kept in memory for `GET /v1/alerts`.
const RECENT_ALERTS: usize = 1000;

/// Alerts a slow alert stream may fall behind by before it is told it missed some.
const ALERT_STREAM_BUFFER: usize = 1024;

/// How long a context folder that failed to load is left before it is tried again unchanged.
const CONTEXT_RETRY: Duration = Duration::from_secs(30);

/// Alert streams open at once; more get 503.
const MAX_ALERT_STREAMS: usize = 64;

/// How often an open alert stream re-checks its token (a revoked token ends it).
const STREAM_RECHECK: Duration = Duration::from_secs(30);

/// Longest review note, in bytes.
const MAX_NOTE_BYTES: usize = 4096;

/// How often the model file and the ledger copy are looked at, and batches sealed.
const REFRESH: Duration = Duration::from_secs(2);

/// Command-line options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to take syslog (ATNA) audit messages, if anywhere.
    pub syslog: Option<SocketAddr>,
    /// Replay an archived audit trail: the monitor's clock follows the accesses' own times
    /// instead of the wall clock (see [`Clock`]). Never for live use.
    pub replay: bool,
    /// How long a client may take to send a request's head (and an idle connection may wait
    /// for its next request).
    pub header_timeout: Duration,
    /// Seconds between audit batches.
    pub seal_every: Duration,
    /// Whether a key derived from a public seed is accepted.
    pub insecure_keys: super::InsecureKeys,
    /// TLS on every listener, from `[monitor.tls]`; plain TCP without it.
    pub tls: Option<tls::Tls>,
    /// DNS names the console may be reached by, from `[monitor] console_hosts`.
    pub console_hosts: Vec<String>,
}

/// What the alert stream carries, each as it is logged: alerts, and the reviews of them, so
/// that every open console sees another officer's acknowledgement or unblock at once.
#[derive(Clone, Debug)]
enum StreamEvent {
    /// An alert (`event: alert`, `id:` its record).
    Alert(AlertView),
    /// A review (`event: acknowledged` or `unblocked`, `id:` the review's record).
    Review(ReviewView),
}

/// A review as the alert stream sends it.
#[derive(Clone, Debug, Serialize)]
struct ReviewView {
    /// The review's own record.
    record: u64,
    /// The officer who made it.
    officer: String,
    /// The alert acknowledged, if it acknowledges one.
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<u64>,
    /// The user whose block was lifted, if it lifts one.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

impl StreamEvent {
    /// The server-sent event.
    fn to_event(&self) -> axum::response::sse::Event {
        use axum::response::sse::Event;
        let (name, id, data) = match self {
            StreamEvent::Alert(a) => ("alert", a.seq, serde_json::to_string(a)),
            StreamEvent::Review(r) => {
                let name = if r.alert.is_some() {
                    "acknowledged"
                } else {
                    "unblocked"
                };
                (name, r.record, serde_json::to_string(r))
            }
        };
        match data {
            Ok(data) => Event::default().event(name).id(id.to_string()).data(data),
            Err(_) => Event::default().event("error"),
        }
    }
}

/// An alert as `GET /v1/alerts` lists it and the alert stream sends it.
#[derive(Clone, Debug, Serialize)]
struct AlertView {
    seq: u64,
    user: String,
    patient: String,
    time_ms: u64,
    verdict: Verdict,
    reasons: Vec<String>,
    explanation: String,
    /// The model's score and the alert threshold, when a model judged it.
    score: Option<f32>,
    threshold: Option<f32>,
    /// The officer who acknowledged it, once one has.
    acknowledged_by: Option<String>,
    /// Whether the access had a reason on record (`unexplained`, `care_team`,
    /// `break_glass`): what its alert adds to its case, shown so an officer sees why a case
    /// with a high score has no evidence.
    standing: Standing,
}

/// Days of cases the monitor ranks (the case book's windows): an officer's queue and the
/// fortnight before it. Older days are folded into what each user carries, exactly.
const CASE_DAYS: u64 = 14;

/// A case as `GET /v1/cases` lists it: one user's alerts and denials in one UTC day.
#[derive(Debug, Serialize)]
struct CaseView {
    user: String,
    /// The UTC day, `YYYY-MM-DD`.
    day: String,
    /// The case's place among its day's ranked cases (1 = most suspicious), when it has
    /// evidence; the office reviews the first `budget` of each day.
    rank: Option<usize>,
    /// Whether it is among its day's first `budget` (`GET /v1/cases` gives the budget):
    /// the cases the office reviews.
    reviewed: bool,
    /// Alerts the model raised that day (every one, listed or not).
    model_alerts: usize,
    /// Alerts and denials of the day still listed (the last `RECENT_ALERTS` of the
    /// hospital), and how many are denials: rule-raised ones (consent, a standing block,
    /// break-the-glass) as well as the model's.
    alerts: usize,
    denials: usize,
    /// Of those listed, not yet acknowledged by an officer.
    open: usize,
    /// The sum over its model alerts on unexplained accesses of `ln(score / threshold)`
    /// (`medfl_model::cases::evidence_of`); alerts on a care-team patient or under
    /// break-the-glass, and alerts raised by a rule alone, add none.
    evidence: f64,
    /// The evidence the user carries in from earlier days (`medfl_model::cases::carried_in`,
    /// at the default `CaseRules` carry of one half a day): the case ranks by the two added,
    /// as the experiments rank cases (`medfl_model::cases::CaseBook`).
    carried: f64,
    top_score: Option<f32>,
    /// The first and last listed alert's time (none once its alerts have left the list).
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    /// The listed records, oldest first (each acknowledged through `/v1/alerts/{record}/ack`).
    records: Vec<u64>,
}

/// An employee-day with a declared emergency or a role-policy alert, as `GET /v1/cases` lists
/// it under `break_glass` or `role_policy`: each access gets a review of its own, outside the
/// budget of ranked cases.
#[derive(Debug, Serialize)]
struct NotedView {
    user: String,
    /// The UTC day, `YYYY-MM-DD`.
    day: String,
    /// Such accesses that day (every one, listed or not).
    accesses: u64,
    /// Of the accesses held one by one, those no officer has acknowledged yet, and every held
    /// one's record (oldest first), and the open ones'.
    open: usize,
    records: Vec<u64>,
    open_records: Vec<u64>,
    /// Accesses past the first [`medfl_model::cases::MAX_NOTED_PER_DAY`] of the day: counted,
    /// not held one by one (the user-day is reviewed from the user's activity report).
    unheld: u64,
}

/// The UTC day (`YYYY-MM-DD`) a case window of `window_ms` starts on.
fn window_day(window: u64, window_ms: u64) -> String {
    medfl_accesslog::time::format_instant(window.saturating_mul(window_ms))
        .chars()
        .take(10)
        .collect()
}

/// The book's days of one review (`noted`: window, user, its accesses), newest first and by
/// user. Each access's review is the book's, so an access whose alert has left the recent
/// list still shows open until an officer acknowledges it.
fn noted_of(noted: Vec<(u64, String, NotedDay)>, window_ms: u64) -> Vec<NotedView> {
    let mut out: Vec<(u64, NotedView)> = noted
        .into_iter()
        .map(|(window, user, day)| {
            let sorted = |it: &mut dyn Iterator<Item = &Noted>| {
                let mut v: Vec<u64> = it.map(|a| a.record).collect();
                v.sort_unstable();
                v
            };
            let records = sorted(&mut day.held.iter());
            let open_records = sorted(&mut day.open());
            let view = NotedView {
                day: window_day(window, window_ms),
                user,
                accesses: day.accesses(),
                open: open_records.len(),
                records,
                open_records,
                unheld: day.beyond,
            };
            (window, view)
        })
        .collect();
    out.sort_by(|(wa, a), (wb, b)| wb.cmp(wa).then_with(|| a.user.cmp(&b.user)));
    out.into_iter().map(|(_, v)| v).collect()
}

/// The book's cases (`ranked`, as [`CaseBook::ranked`] gives them, from `oldest` on), with
/// what the recent alerts list of each, and the cases of listed alerts the model did not raise
/// (no evidence): newest day first, then in the book's rank order, then by alerts and user.
/// `budget` is the reviews a day (none without a staff directory to size it by).
fn cases_of<'a>(
    ranked: Vec<medfl_model::cases::Case<String>>,
    (oldest, window_ms): (u64, u64),
    alerts: impl IntoIterator<Item = &'a AlertView>,
    budget: Option<usize>,
) -> Vec<CaseView> {
    use std::collections::BTreeMap;
    let view = |user: &str, window: u64| CaseView {
        user: user.to_owned(),
        day: window_day(window, window_ms),
        rank: None,
        reviewed: false,
        model_alerts: 0,
        alerts: 0,
        denials: 0,
        open: 0,
        evidence: 0.0,
        carried: 0.0,
        top_score: None,
        first_ms: None,
        last_ms: None,
        records: Vec::new(),
    };
    // The book's cases in its order: by day, then by rank within a day (cases with evidence
    // come first, so a case's rank is its place).
    let mut by_day: BTreeMap<u64, Vec<CaseView>> = BTreeMap::new();
    let mut index: BTreeMap<(u64, String), (u64, usize)> = BTreeMap::new();
    for c in ranked {
        let day = by_day.entry(c.window).or_default();
        let rank = (c.total_evidence() > 0.0).then_some(day.len() + 1);
        index.insert((c.window, c.employee.clone()), (c.window, day.len()));
        day.push(CaseView {
            rank,
            reviewed: matches!((rank, budget), (Some(r), Some(b)) if r <= b),
            model_alerts: c.alerts,
            evidence: c.evidence,
            carried: c.carried,
            top_score: Some(c.top_score),
            ..view(&c.employee, c.window)
        });
    }
    // The listed alerts of the days held: into their book case, or a case of their own after
    // the book's. (An older day's alerts are still in `/v1/alerts`.)
    for a in alerts {
        let window = a.time_ms / window_ms;
        if window < oldest {
            continue;
        }
        let key = (window, a.user.clone());
        let (w, at) = match index.get(&key) {
            Some(&at) => at,
            None => {
                let day = by_day.entry(window).or_default();
                day.push(view(&a.user, window));
                let at = (window, day.len() - 1);
                index.insert(key, at);
                at
            }
        };
        let Some(case) = by_day.get_mut(&w).and_then(|d| d.get_mut(at)) else {
            continue;
        };
        case.alerts += 1;
        case.denials += usize::from(a.verdict == Verdict::Deny);
        case.open += usize::from(a.acknowledged_by.is_none());
        case.first_ms = Some(case.first_ms.map_or(a.time_ms, |t| t.min(a.time_ms)));
        case.last_ms = Some(case.last_ms.map_or(a.time_ms, |t| t.max(a.time_ms)));
        if case.model_alerts == 0
            && let Some(s) = a.score.filter(|s| !s.is_nan())
        {
            case.top_score = Some(case.top_score.map_or(s, |top| top.max(s)));
        }
        case.records.push(a.seq);
    }
    let mut out = Vec::new();
    for (_, mut day) in by_day.into_iter().rev() {
        // The book's cases keep their order (stable); the others follow by alerts and user.
        let in_book = |c: &CaseView| c.model_alerts > 0;
        day.sort_by(|a, b| {
            in_book(b)
                .cmp(&in_book(a))
                .then_with(|| match (in_book(a), in_book(b)) {
                    (true, true) => std::cmp::Ordering::Equal,
                    _ => b.alerts.cmp(&a.alerts).then_with(|| a.user.cmp(&b.user)),
                })
        });
        for mut c in day {
            c.records.sort_unstable();
            out.push(c);
        }
    }
    out
}

struct Shared {
    monitor: Monitor,
    log: AuditLog,
    /// The issue time of the last consent transaction an officer recorded: each is later than
    /// the one before, so the ledger applies two choices in the order they were logged.
    last_consent_ms: u64,
    alerts: VecDeque<AlertView>,
    /// Every model alert of the last [`CASE_DAYS`] days as cases, ranked as the experiments
    /// rank them (rebuilt from the audit log on start).
    cases: CaseBook<String>,
    /// The model file's hash in use, and the ledger height consent was read at.
    model_hash: Option<String>,
    /// Records that raised a block, not yet sealed and anchored (see `seal_and_anchor`).
    raised: Vec<u64>,
    /// Every record that raised a block (a few): what a re-queue of lost anchors looks at.
    raised_all: Vec<u64>,
    consent_height: Option<u64>,
    /// Size and modification time of the model file and the ledger copy when last read.
    model_seen: Stamp,
    ledger_seen: Stamp,
    /// The same for the ledger copy and the outbox together (consent's two sources).
    consent_seen: Option<(Stamp, Stamp)>,
    /// The same for each file of the context folder, when last read.
    context_seen: Vec<Stamp>,
    /// Stamps seen changed once, read if still the same at the next refresh.
    context_pending: Option<Vec<Stamp>>,
    /// Stamps and time of the last attempt that failed (retried when something changes, or
    /// after [`CONTEXT_RETRY`]).
    context_failed: Option<(Vec<Stamp>, std::time::Instant)>,
    /// Whether context feeds were ever read (a file can vanish only from feeds in use).
    context_loaded: bool,
    /// Why the context feeds could not be read last time, if they could not.
    context_error: Option<String>,
}

type App = Arc<Mutex<Shared>>;

/// What the HTTP handlers and the syslog listener share: the state, the queue to the decision
/// writer, the context feeds, the counters.
#[derive(Clone)]
struct Server {
    app: App,
    queue: std::sync::mpsc::SyncSender<Pending>,
    /// The context feeds in use, swapped whole when they change (read without the state's
    /// lock, which a decision holds through its fsync).
    context: Arc<RwLock<Option<Arc<Feeds>>>>,
    metrics: Arc<Metrics>,
    /// New alerts, as they are logged, for the alert streams.
    alerts: tokio::sync::broadcast::Sender<StreamEvent>,
    /// The decisions' clock.
    clock: Arc<Clock>,
    /// The member's folder (officers' tokens), fixed at start: read without a lock.
    member_dir: Arc<PathBuf>,
    /// Permits for open alert streams.
    streams: Arc<tokio::sync::Semaphore>,
    /// Permits for requests in flight ([`MAX_IN_FLIGHT`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Permits for FHIR bodies being read and parsed at once.
    fhir_bodies: Arc<tokio::sync::Semaphore>,
    /// Connection slots of the HTTP listener.
    http_slots: Slots,
    /// Connection slots of the syslog listener.
    syslog_slots: Slots,
    /// Whether submitting an access needs a certified TLS peer ([`Server::refuse_uncertified`]).
    intake_needs_client_cert: bool,
    /// The console's signed-in browsers.
    sessions: Arc<sessions::Sessions>,
    /// Permits for reports reading the audit log at once.
    reports: Arc<tokio::sync::Semaphore>,
    /// The officers whose report is running (one each at a time).
    reports_running: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Reads the audit log for reports without the state's lock.
    reader: medfl_monitor::audit::AuditReader,
    /// The hospital: its key signs the consent transactions officers record.
    member: Arc<Member>,
    /// Turns a patient id into the salted pseudonym the ledger records.
    pseudonyms: PseudonymKey,
    /// The hospital's privacy standing, from its ledger copy (re-read when it changes).
    privacy: Arc<RwLock<Option<Arc<console::PrivacyView>>>>,
}

impl Server {
    /// The context feeds in use, if any.
    fn context(&self) -> Option<Arc<Feeds>> {
        self.context.read().ok().and_then(|c| c.clone())
    }
}

/// The monitor's options: each given on the command line, else from the `[monitor]` table of
/// the member's `config.toml`, else the defaults (HTTP on 127.0.0.1:8088, no syslog, a seal a
/// minute, a 10 s header timeout).
///
/// # Errors
/// The config cannot be read, or a duration is not a positive number of seconds.
pub fn options(
    config: &Path,
    listen: Option<SocketAddr>,
    syslog: Option<SocketAddr>,
    seal_every_s: Option<f64>,
    header_timeout_s: Option<f64>,
    replay: bool,
    insecure_keys: super::InsecureKeys,
) -> Result<Options> {
    let set = settings(config)?;
    // Bounded both ways: a timeout of a few nanoseconds cuts every connection, and one of
    // 1e19 s overflows the timer (and panics every connection).
    let seconds = |v: f64, what: &str, min: f64, max: f64| {
        if !(min..=max).contains(&v) {
            bail!("{what} must be between {min} and {max} seconds (got {v})");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8088));
    let mut opts = Options {
        listen: listen
            .or(set.as_ref().map(|m| m.listen))
            .unwrap_or(default_listen),
        syslog: syslog.or(set.as_ref().and_then(|m| m.syslog)),
        replay,
        seal_every: seconds(
            seal_every_s
                .or(set.as_ref().map(|m| m.seal_every_s))
                .unwrap_or(60.0),
            "the seal interval",
            0.1,
            86_400.0,
        )?,
        header_timeout: seconds(
            header_timeout_s
                .or(set.as_ref().map(|m| m.header_timeout_s))
                .unwrap_or(10.0),
            "the header timeout",
            0.1,
            3_600.0,
        )?,
        insecure_keys,
        tls: set
            .as_ref()
            .and_then(|m| m.tls.as_ref())
            .map(|t| tls::load(t, config.parent().unwrap_or(Path::new("."))))
            .transpose()
            .context("loading the monitor's TLS identity ([monitor.tls])")?,
        console_hosts: set
            .as_ref()
            .map(|m| {
                m.console_hosts
                    .iter()
                    .map(|h| console_host(h))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default(),
    };
    // A handshake is a request's head too: no longer than the header timeout.
    opts.tls = opts
        .tls
        .map(|t| t.with_deadline_at_most(opts.header_timeout));
    Ok(opts)
}

/// A `[monitor] console_hosts` entry as a browser's `Host` header spells it: a DNS name (no
/// scheme, no trailing dot), with `:port` unless the port is 80 or 443; lowercased.
fn console_host(entry: &str) -> Result<String> {
    let host = entry.to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host.as_str(), None),
    };
    let name_ok = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !name_ok || !port_ok {
        bail!(
            "[monitor] console_hosts: {entry:?} is not a host name as a browser sends it \
             (monitor.hospital.example or monitor.hospital.example:8088; no scheme, path or \
             trailing dot)"
        );
    }
    Ok(host)
}

/// The `[monitor]` table of the member config at `config`, if it has one.
///
/// # Errors
/// The file cannot be read or is not a member config.
pub fn settings(config: &Path) -> Result<Option<crate::provision::MonitorSettings>> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let member: crate::provision::MemberConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a member config", config.display()))?;
    Ok(member.monitor)
}

/// Runs the monitor of the hospital described by `config` until killed.
pub async fn run(config: &Path, opts: Options) -> Result<()> {
    no_huge_page_stalls();
    let member = Member::load(config, opts.insecure_keys)?;
    member.expect_role(Role::Hospital)?;
    let file = audit_file(&member.dir, opts.replay);
    let dir = file.parent().unwrap_or(&member.dir).to_owned();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = AuditLog::open(&file).context("opening the audit log")?;
    if opts.replay && !log.is_empty() {
        // A replay's records are judged on the trail's own clock: never mixed into another
        // replay's, and never into the live log (they have a log of their own).
        bail!(
            "a replay starts from an empty log: {} holds {} records (move it away first)",
            file.display(),
            log.len()
        );
    }
    let mut monitor = Monitor::new(Policy::default());
    let mut alerts = VecDeque::new();
    let mut cases = CaseBook::new(CaseRules::default(), CASE_DAYS);
    let mut raised = Vec::new();
    let mut last_consent_ms = 0;
    replay(
        &log,
        &mut monitor,
        (&mut alerts, &mut cases),
        &mut raised,
        &mut last_consent_ms,
    )?;
    // Blocks raised in sealed batches had their anchors queued at the seal (or lost to a
    // crash just after it: queued again here); the rest wait for the next seal.
    let unsealed = log.first_unsealed().context("reading the sealed batches")?;
    let raised_all = raised.clone();
    let raised: Vec<u64> = raised.into_iter().filter(|seq| *seq >= unsealed).collect();
    info!(
        records = log.len(),
        blocked = monitor.blocks().len(),
        "audit log replayed"
    );
    let pseudonyms = crate::data::pseudonym_key(&member.key, &member.config.member)?;
    let reader = log.reader();
    let app: App = Arc::new(Mutex::new(Shared {
        monitor,
        log,
        alerts,
        cases,
        model_hash: None,
        raised,
        raised_all,
        consent_height: None,
        model_seen: None,
        ledger_seen: None,
        consent_seen: None,
        context_seen: Vec::new(),
        context_pending: None,
        context_failed: None,
        context_loaded: false,
        context_error: None,
        last_consent_ms,
    }));
    let (http_slots, syslog_slots) = connection_slots();
    let metrics = Arc::new(Metrics::default());
    let metrics_for_http = Arc::clone(&metrics);
    let (queue, waiting) = std::sync::mpsc::sync_channel(MAX_QUEUED);
    let (alerts, _) = tokio::sync::broadcast::channel(ALERT_STREAM_BUFFER);
    let clock = Arc::new(Clock {
        replay: opts.replay,
        ..Clock::default()
    });
    if opts.replay {
        warn!("replay: the monitor's clock follows the accesses' times, not the wall clock");
    }
    let server = Server {
        app: Arc::clone(&app),
        queue,
        context: Arc::new(RwLock::new(None)),
        metrics: Arc::clone(&metrics),
        alerts: alerts.clone(),
        clock: Arc::clone(&clock),
        member_dir: Arc::new(member.dir.clone()),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_ALERT_STREAMS)),
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT as usize)),
        fhir_bodies: Arc::new(tokio::sync::Semaphore::new(fhir::MAX_BODIES_AT_ONCE)),
        http_slots: Slots::new(http_slots),
        syslog_slots: Slots::new(syslog_slots),
        intake_needs_client_cert: opts
            .tls
            .as_ref()
            .is_some_and(|t| t.intake_needs_client_cert),
        sessions: Arc::new(sessions::Sessions::new(
            opts.tls.is_some(),
            opts.console_hosts.clone(),
        )),
        reports: Arc::new(tokio::sync::Semaphore::new(console::MAX_REPORTS_AT_ONCE)),
        reports_running: Arc::default(),
        reader,
        member: Arc::new(member.clone()),
        pseudonyms: pseudonyms.clone(),
        privacy: Arc::new(RwLock::new(None)),
    };
    refresh(&server, &member, &pseudonyms);
    let writer = Arc::clone(&app);
    std::thread::Builder::new()
        .name("decision-writer".into())
        .spawn(move || decision_writer(writer, waiting, metrics, alerts, clock))
        .context("starting the decision writer")?;
    let router = router(server.clone());
    let listener = listen(opts.listen).with_context(|| format!("listening on {}", opts.listen))?;
    let scheme = if opts.tls.is_some() { "HTTPS" } else { "HTTP" };
    info!(addr = %listener.local_addr()?, scheme, "access monitor listening");
    if let Some(addr) = opts.syslog {
        let syslog = listen(addr).with_context(|| format!("listening for syslog on {addr}"))?;
        let transport = if opts.tls.is_some() {
            "TLS, RFC 5425"
        } else {
            "TCP"
        };
        info!(addr = %syslog.local_addr()?, transport, "taking ATNA audit messages over syslog");
        tokio::spawn(syslog::serve(syslog, opts.tls.clone(), server.clone()));
    }
    let background = server.clone();
    tokio::spawn(async move {
        let mut last_seal = std::time::Instant::now();
        // Anchors lost to a crash (or a failed write) are looked for once at start, and again
        // after any look or seal that failed, with a growing wait (a look copies the ledger).
        // Until a look succeeds, seals commit but queue nothing: a later batch's anchor must
        // not reach the ledger before a lost earlier one (the contract would then refuse it).
        // A replay's log is never anchored.
        let mut requeue = !opts.replay;
        let mut next_look = std::time::Instant::now();
        let mut wait = REFRESH;
        loop {
            tokio::time::sleep(REFRESH).await;
            let b = background.clone();
            let m = member.clone();
            let p = pseudonyms.clone();
            // A replay's log is the hospital's analysis, not its trail: never anchored.
            let seal = !opts.replay && last_seal.elapsed() >= opts.seal_every;
            let look = requeue && std::time::Instant::now() >= next_look;
            let pending = requeue;
            // File and ledger reads, and the seal's commit, off the request path's threads.
            let done = tokio::task::spawn_blocking(move || {
                refresh(&b, &m, &p);
                let mut looked = !pending;
                if look {
                    match requeue_lost_anchors(&b.app, &m) {
                        Ok(()) => looked = true,
                        Err(e) => warn!(error = %format!("{e:#}"), "cannot look for lost anchors"),
                    }
                }
                let mut sealed = true;
                if seal && let Err(e) = seal_and_anchor(&b.app, &m, looked) {
                    warn!(error = %format!("{e:#}"), "cannot seal an audit batch");
                    sealed = false;
                }
                (looked, sealed)
            })
            .await;
            match done {
                Ok((looked, sealed)) => {
                    requeue = !looked || !sealed;
                    if look && !looked {
                        wait = (wait * 2).min(Duration::from_secs(300));
                        next_look = std::time::Instant::now() + wait;
                    } else if looked {
                        wait = REFRESH;
                    }
                }
                Err(_) => {
                    warn!("the monitor's refresh failed");
                    requeue |= look || seal;
                }
            }
            if seal {
                last_seal = std::time::Instant::now();
            }
        }
    });
    serve_http(
        listener,
        server.http_slots.clone(),
        router,
        opts.tls,
        opts.header_timeout,
        metrics_for_http,
    )
    .await;
    Ok(())
}

/// One route: its method, its path as `docs/monitor-openapi.json` writes it, its handler.
type Route = (
    &'static str,
    &'static str,
    axum::routing::MethodRouter<Server>,
);

/// The routes whose bodies axum reads (under [`MAX_BODY_BYTES`]): decisions, alerts and
/// reviews, the hospital console and its reports, health and metrics.
fn api_routes() -> Vec<Route> {
    vec![
        ("POST", "/v1/access", post(access)),
        ("GET", "/v1/alerts", get(list_alerts)),
        ("GET", "/v1/cases", get(list_cases)),
        ("GET", "/v1/alerts/stream", get(stream_alerts)),
        ("POST", "/v1/alerts/{record}/ack", post(acknowledge)),
        ("POST", "/v1/unblock", post(unblock)),
        ("GET", "/healthz", get(health)),
        ("GET", "/metrics", get(metrics::serve)),
        ("GET", "/console", get(console::page)),
        ("GET", "/assets/{name}", get(console::asset)),
        ("GET", "/v1/session", get(console::session)),
        ("POST", "/v1/session", post(console::login)),
        (
            "DELETE",
            "/v1/session",
            axum::routing::delete(console::logout),
        ),
        ("GET", "/v1/blocked", get(console::blocked)),
        ("GET", "/v1/users/{user}/activity", get(console::activity)),
        (
            "GET",
            "/v1/patients/{patient}/accesses",
            get(console::patient_report),
        ),
        ("POST", "/v1/consent", post(console::consent)),
        ("GET", "/v1/privacy", get(console::privacy)),
    ]
}

/// The FHIR routes: they read their bodies themselves, to answer an oversized one in FHIR.
fn fhir_routes() -> Vec<Route> {
    vec![
        ("POST", "/fhir", post(fhir::post)),
        ("POST", "/fhir/", post(fhir::post)),
        ("POST", "/fhir/AuditEvent", post(fhir::post)),
        ("GET", "/fhir/metadata", get(fhir::metadata)),
    ]
}

/// The monitor's HTTP API: [`api_routes`] and [`fhir_routes`], every answer with the console's
/// security headers.
fn router(server: Server) -> Router {
    let add = |r: Router<Server>, (_, path, handler): Route| r.route(path, handler);
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), add)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    fhir_routes()
        .into_iter()
        .fold(api, add)
        .with_state(server)
        .layer(axum::middleware::map_response(
            crate::console::secure_headers,
        ))
}

/// Connections the kernel completes ahead of the accept loop: when a hospital's thousands of
/// EHR sessions reconnect at once, a shorter queue drops their SYNs, and each dropped one
/// waits a second or more to retry (the kernel caps this at `net.core.somaxconn`).
const ACCEPT_QUEUE: u32 = 4096;

/// A listener on `addr` with an accept queue of [`ACCEPT_QUEUE`].
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's `bind` do: a restarted monitor may take its port back at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_QUEUE)
}

/// The next connection on `listener` with a slot of `slots` for it. A failed accept (out of
/// file descriptors, say) waits rather than spins; a connection over the cap is closed at once
/// (it would only wait for a slot).
async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<tokio::sync::Semaphore>,
    what: &str,
) -> (
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match Arc::clone(slots).try_acquire_owned() {
                Ok(slot) => return (stream, peer, slot),
                Err(_) => warn!(%peer, "too many {what} connections; closing this one"),
            },
            Err(e) => {
                warn!(error = %e, "cannot accept a {what} connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Who is on the other end of an HTTP connection, as TLS established it; every request
/// carries it (as an extension) to the handlers that admit accesses.
#[derive(Clone, Copy, Debug)]
struct Caller {
    /// Whether the peer showed a certificate the hospital's client CA issued.
    certified: bool,
}

impl Server {
    /// `Some(refusal)` if the caller may not submit accesses: with a client CA configured, only
    /// a peer holding a certificate it issued may.
    fn refuse_uncertified(&self, caller: Caller) -> Option<&'static str> {
        (self.intake_needs_client_cert && !caller.certified).then_some(
            "submitting accesses needs a client certificate issued by the hospital's CA \
             ([monitor.tls] client_ca) and, if senders are listed, one of theirs",
        )
    }
}

/// Serves HTTP/1.1 (HTTPS with `tls`) on `listener` until the process ends. Unlike
/// `axum::serve`, a client must send a request's whole head within `header_timeout` (a
/// slow-loris sender, trickling header bytes to hold connections open, is cut off), and a
/// connection waiting for its next request is held as long only.
async fn serve_http(
    listener: tokio::net::TcpListener,
    slots: Slots,
    router: Router,
    tls: Option<tls::Tls>,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    loop {
        let (stream, peer, slot) = accept(&listener, &slots.permits, "HTTP").await;
        let router = router.clone();
        let Some(tls) = tls.clone() else {
            tokio::spawn(async move {
                let _slot = slot;
                let caller = Caller { certified: false };
                serve_connection(stream, caller, router, header_timeout).await;
            });
            continue;
        };
        let crowded = slots.crowded();
        let Some(handshaking) = tls.http_handshakes.admit(peer.ip(), crowded) else {
            metrics.handshake_failed(Source::Json);
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let slots_now = slots.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // The handshake runs on the connection's own task: a slow one delays no other.
            let stream = match tls::handshake(&tls.http, stream, tls.handshake_deadline).await {
                Ok(stream) => stream,
                Err(e) => {
                    metrics.handshake_failed(Source::Json);
                    info!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            drop(handshaking);
            let certified = tls.sender(stream.get_ref().1).is_some();
            // A peer without a certificate that counts may read, on a few connections per
            // address: it cannot hold every slot.
            let _counted = if certified {
                None
            } else {
                // Judged now, not at accept: the handshake took time.
                match tls.uncertified.admit(peer.ip(), slots_now.crowded()) {
                    Some(c) => Some(c),
                    None => {
                        metrics.handshake_failed(Source::Json);
                        info!(%peer, "too many HTTPS connections without a certificate");
                        return;
                    }
                }
            };
            serve_connection(stream, Caller { certified }, router, header_timeout).await;
        });
    }
}

/// Serves one HTTP/1.1 connection; every request carries `caller`.
async fn serve_connection<S>(io: S, caller: Caller, router: Router, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<_>| {
        request.extensions_mut().insert(caller);
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Heads are small: a connection's read buffer stays within this, not hyper's 400 KiB.
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(TokioIo::new(io), service);
    // A client that goes away or times out ends its own connection only.
    let _ = connection.await;
}

/// What an officer sends to lift a block.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnblockRequest {
    user: String,
    note: String,
}

/// An officer's action: their name, once their token is checked, and the JSON body it sends.
async fn officer_request<T: serde::de::DeserializeOwned>(
    server: &Server,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<(String, T), Response> {
    let officer = officer_for(server, headers, OfficerRole::Officer, true)
        .await
        .map_err(|(status, why)| refuse(status, why))?;
    let body = read_body(body).await?;
    let req = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))?;
    Ok((officer.name, req))
}

/// `POST /v1/unblock`: an officer lifts a block; the review is durable before it takes effect.
async fn unblock(
    State(server): State<Server>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (officer, req): (String, UnblockRequest) =
        match officer_request(&server, &headers, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let (app, stream) = (server.app, server.alerts);
    if req.user == officer {
        return refuse(StatusCode::FORBIDDEN, "no one lifts their own block");
    }
    if req.note.len() > MAX_NOTE_BYTES || req.user.len() > medfl_monitor::request::MAX_ID_BYTES {
        return refuse(StatusCode::BAD_REQUEST, "user or note too long");
    }
    let done = tokio::task::spawn_blocking(move || {
        let Ok(mut shared) = app.lock() else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the monitor failed".to_owned(),
            ));
        };
        if !shared.monitor.blocks().contains_key(&req.user) {
            return Err((
                StatusCode::NOT_FOUND,
                format!("{} is not blocked", req.user),
            ));
        }
        let body = RecordBody::Review {
            officer: officer.clone(),
            action: ReviewAction::Unblock {
                user: req.user.clone(),
            },
            note: req.note,
        };
        let record = shared.log.append(now_ms(), body).map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the review could not be logged, the block stands: {e}"),
            )
        })?;
        shared.monitor.unblock(&req.user);
        info!(
            officer,
            user = req.user,
            record = record.seq,
            "block lifted"
        );
        let _ = stream.send(StreamEvent::Review(ReviewView {
            record: record.seq,
            officer,
            alert: None,
            user: Some(req.user),
        }));
        Ok(record.seq)
    })
    .await;
    review_answer(done)
}

/// The answer to a review: its record, or why it was not logged.
fn review_answer(
    done: Result<Result<u64, (StatusCode, String)>, tokio::task::JoinError>,
) -> Response {
    match done {
        Ok(Ok(seq)) => axum::Json(serde_json::json!({ "record": seq })).into_response(),
        Ok(Err((status, why))) => refuse(status, why),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the review failed"),
    }
}

/// Rebuilds the users' history, blocks and recent alerts from the audit log.
fn replay(
    log: &AuditLog,
    monitor: &mut Monitor,
    (alerts, cases): (&mut VecDeque<AlertView>, &mut CaseBook<String>),
    raised: &mut Vec<u64>,
    last_consent_ms: &mut u64,
) -> Result<()> {
    let mut seq = 0;
    loop {
        let chunk = log.records(seq, 4096).context("replaying the audit log")?;
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        seq = last.seq + 1;
        for r in chunk {
            match r.body {
                RecordBody::Decision { request, decision }
                | RecordBody::Delivered {
                    request, decision, ..
                } => {
                    if decision.raises_block() {
                        raised.push(r.seq);
                    }
                    monitor.replay(&request, &decision, r.at_ms);
                    note_alert((alerts, cases), r.seq, &request, &decision);
                }
                RecordBody::Review {
                    action: ReviewAction::Unblock { user },
                    ..
                } => {
                    monitor.unblock(&user);
                }
                RecordBody::Review {
                    officer,
                    action: ReviewAction::Acknowledge { seq },
                    ..
                } => {
                    if let Some(a) = alerts.iter_mut().find(|a| a.seq == seq) {
                        a.acknowledged_by = Some(officer);
                    }
                    cases.review_noted(seq);
                }
                // The choice takes effect from the ledger, where the queued transaction goes;
                // its time only bounds the next choice's issue time.
                RecordBody::Review {
                    action: ReviewAction::Consent { .. },
                    ..
                } => {
                    *last_consent_ms = (*last_consent_ms).max(r.at_ms);
                }
                // A report read changes nothing the monitor holds.
                RecordBody::Review {
                    action:
                        ReviewAction::ReadPatientReport { .. } | ReviewAction::ReadUserActivity { .. },
                    ..
                } => {}
            }
        }
    }
}

/// Files a model alert in the case book, and keeps an alert or denial among the recent ones;
/// returns it (`None` for an allow).
fn note_alert(
    (alerts, cases): (&mut VecDeque<AlertView>, &mut CaseBook<String>),
    seq: u64,
    r: &AccessRequest,
    d: &Decision,
) -> Option<AlertView> {
    let model_alert = d
        .score
        .zip(d.threshold)
        .filter(|&(score, threshold)| medfl_model::cases::is_alert(score, threshold));
    // A declared emergency goes to its queue whatever was decided of it.
    if model_alert.is_none() && d.verdict == Verdict::Allow && !r.break_glass {
        return None;
    }
    let standing = Standing::of(&r.to_event(seq));
    let reviews = [
        (standing == Standing::BreakGlass, Review::BreakGlass),
        (d.by_role_policy(), Review::RolePolicy),
    ];
    for (_, review) in reviews.into_iter().filter(|(noted, _)| *noted) {
        if cases.note(review, &r.user, r.time_ms, seq) == medfl_model::cases::Filed::TooLate
            && cases.noted_too_late(review) == 1
        {
            warn!(
                user = %r.user,
                time_ms = r.time_ms,
                ?review,
                "an access older than the review queue's days is not listed (was the clock stepped?)"
            );
        }
    }
    if let Some((score, threshold)) = model_alert {
        // An alert for a day already folded (an access more than `CASE_DAYS` older than the
        // newest filed) stays in the log and the list; its case has left the queue. Intake
        // holds access times within a day of the clock, so only a clock stepped back (or
        // forward, then back) can do it: say so once, and count it in `/v1/cases`.
        if cases.file(&r.user, r.time_ms, score, threshold, standing)
            == medfl_model::cases::Filed::TooLate
            && cases.too_late() == 1
        {
            warn!(
                user = %r.user,
                time_ms = r.time_ms,
                "an alert older than the case queue's days is not ranked (was the clock stepped?)"
            );
        }
    }
    if d.verdict == Verdict::Allow {
        return None;
    }
    if alerts.len() >= RECENT_ALERTS {
        alerts.pop_front();
    }
    let view = AlertView {
        seq,
        user: r.user.clone(),
        patient: r.patient.clone(),
        time_ms: r.time_ms,
        verdict: d.verdict,
        reasons: d.reasons.clone(),
        explanation: d.explanation.clone(),
        score: d.score,
        threshold: d.threshold,
        acknowledged_by: None,
        standing,
    };
    alerts.push_back(view.clone());
    Some(view)
}

/// Stops the process: its state has moved past its audit log, and only a restart (which
/// replays the log) makes them agree again. The request that caused it gets no answer.
fn fail_stop(why: &str) -> ! {
    tracing::error!(
        reason = why,
        "the monitor stops; restart it to replay its audit log"
    );
    std::process::exit(3)
}

/// The time decisions are made at: the wall clock, or in a replay the latest access time
/// seen (so an archived trail is judged as it was lived, its alert windows and blocks
/// included, and its old times are not refused as clock faults).
#[derive(Debug, Default)]
struct Clock {
    replay: bool,
    latest: std::sync::atomic::AtomicU64,
}

impl Clock {
    /// The time an access at `t_ms` would be decided at (for checks before the writer's).
    fn for_access(&self, t_ms: u64) -> u64 {
        if self.replay {
            self.latest().max(t_ms).min(now_ms())
        } else {
            now_ms()
        }
    }

    /// The replay's clock: the latest decision time so far.
    fn latest(&self) -> u64 {
        self.latest.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the replay's clock up to `t_ms`.
    fn reached(&self, t_ms: u64) {
        self.latest
            .fetch_max(t_ms, std::sync::atomic::Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An error answer: a status and a JSON body naming the problem.
fn refuse(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": error.to_string() })),
    )
        .into_response()
}

/// How long a JSON body may take to arrive once its head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON route's body, at most [`MAX_BODY_BYTES`], arriving within [`BODY_TIMEOUT`] (a sender
/// trickling it cannot hold the connection).
async fn read_body(body: axum::body::Body) -> Result<Bytes, Response> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY_BYTES} bytes (or was cut short)"),
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// What the decision writer answers a request with.
type Answer = Result<(u64, Decision), (StatusCode, String)>;

/// Requests waiting for the decision writer, decided in order and committed together (a FHIR
/// Bundle's entries, or the frames of one syslog read), with one answer each.
struct Pending {
    requests: Vec<Delivery>,
    /// A FHIR transaction: if one request cannot be decided, none is.
    all_or_nothing: bool,
    reply: tokio::sync::oneshot::Sender<Vec<Answer>>,
    /// Its share of [`MAX_IN_FLIGHT`], held until it is answered (not until its caller stops
    /// waiting: a caller that goes away leaves its requests queued).
    _permits: tokio::sync::OwnedSemaphorePermit,
}

/// Requests one group commit takes at most (a submission is never split).
const MAX_GROUP: usize = 1024;

/// Submissions waiting for the writer at most (each holds at least one of the
/// [`MAX_IN_FLIGHT`] permits, so the queue is never the bound).
const MAX_QUEUED: usize = MAX_IN_FLIGHT as usize;

/// The decision writer (one thread): takes every submission waiting, decides each request in
/// arrival order, appends them all to the audit log in one durable commit, then answers them
/// (group commit: one fsync per group, and no answer before its record is on disk).
fn decision_writer(
    app: App,
    queue: std::sync::mpsc::Receiver<Pending>,
    metrics: Arc<Metrics>,
    alerts: tokio::sync::broadcast::Sender<StreamEvent>,
    clock: Arc<Clock>,
) {
    while let Ok(first) = queue.recv() {
        let mut size = first.requests.len();
        let mut group = vec![first];
        while size < MAX_GROUP {
            match queue.try_recv() {
                Ok(p) => {
                    size += p.requests.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let Ok(mut shared) = app.lock() else {
            fail_stop("the monitor's state is poisoned");
        };
        // Each request's decision time, fixed once: live, the group's one wall-clock time; in
        // a replay, each access's own time (never before the previous one's, never past the
        // wall clock). The transaction check and the decisions use these same times, so a
        // transaction that passes is decided whole.
        let wall = now_ms();
        let mut running = clock.latest();
        let mut times: Vec<Vec<u64>> = Vec::with_capacity(group.len());
        // A transaction one of whose requests would be refused is refused whole, before
        // anything of it is decided (and, in a replay, without moving the clock).
        let mut refused: Vec<Option<(StatusCode, String)>> = Vec::with_capacity(group.len());
        for p in &group {
            let before = running;
            let t: Vec<u64> = p
                .requests
                .iter()
                .map(|r| {
                    if clock.replay {
                        running = running.max(r.request.time_ms).min(wall);
                        running
                    } else {
                        wall
                    }
                })
                .collect();
            let why = if p.all_or_nothing {
                p.requests
                    .iter()
                    .zip(&t)
                    .enumerate()
                    .find_map(|(i, (r, now))| {
                        r.request.check(*now).err().map(|e| {
                            (
                                StatusCode::BAD_REQUEST,
                                format!("entry {i}: {e}; the transaction was not applied"),
                            )
                        })
                    })
            } else {
                None
            };
            if why.is_some() {
                running = before;
            }
            times.push(t);
            refused.push(why);
        }
        // Repeats are sorted out before anything is decided. A delivery whose look-up fails is
        // not decided (its sender retries); a transaction holding one is refused whole (it
        // must not be half applied), and the rest sorted again.
        let (deliveries, times, sorted) = loop {
            let (owners, (deliveries, times)): (Vec<usize>, (Vec<Delivery>, Vec<u64>)) = group
                .iter()
                .zip(&times)
                .zip(&refused)
                .enumerate()
                .filter(|(_, (_, why))| why.is_none())
                .flat_map(|(owner, ((p, t), _))| {
                    p.requests
                        .iter()
                        .cloned()
                        .zip(t.iter().copied())
                        .map(move |dt| (owner, dt))
                })
                .unzip();
            let sorted = sort_repeats(&shared.log, &deliveries);
            let mut whole = false;
            for (at, why) in &sorted.failed {
                let owner = owners[*at];
                if group[owner].all_or_nothing {
                    let why = format!("{why}; the transaction was not applied");
                    refused[owner] = Some((StatusCode::INTERNAL_SERVER_ERROR, why));
                    whole = true;
                }
            }
            if !whole {
                break (deliveries, times, sorted);
            }
        };
        let Sorted {
            fresh,
            repeats,
            held,
            failed,
        } = sorted;
        // Each delivery's answer; `None` until it is decided.
        let mut answers: Vec<Option<Answer>> = vec![None; deliveries.len()];
        for (at, why) in failed {
            answers[at] = Some(Err((StatusCode::INTERNAL_SERVER_ERROR, why)));
        }
        for (at, found) in held {
            answers[at] = Some(Ok(found));
            metrics.repeated();
        }
        let requests: Vec<&AccessRequest> = fresh.iter().map(|&i| &deliveries[i].request).collect();
        let times: Vec<u64> = fresh.iter().map(|&i| times[i]).collect();
        // Live, a group is scored in one pass; a replay decides each access at its own time.
        let decisions: Vec<_> = if clock.replay {
            requests
                .iter()
                .zip(&times)
                .map(|(r, now)| {
                    let d = shared.monitor.decide_all(std::slice::from_ref(r), *now);
                    d.into_iter()
                        .next()
                        .unwrap_or_else(|| fail_stop("a decision went missing"))
                })
                .collect()
        } else {
            shared.monitor.decide_all(&requests, wall)
        };
        if let Some(last) = times.iter().max() {
            clock.reached(*last);
        }
        let mut items = Vec::with_capacity(fresh.len());
        let mut decided = Vec::with_capacity(fresh.len());
        for ((at, d), now) in fresh.into_iter().zip(decisions).zip(times) {
            let Delivery { request, id } = &deliveries[at];
            match d {
                Ok(d) => {
                    let (request, decision) = (Box::new(request.clone()), Box::new(d.clone()));
                    let body = match id {
                        Some(id) => RecordBody::Delivered {
                            id: id.clone(),
                            request,
                            decision,
                        },
                        None => RecordBody::Decision { request, decision },
                    };
                    items.push((now, body));
                    decided.push((at, d));
                }
                Err(medfl_monitor::decide::MonitorError::Request(e)) => {
                    answers[at] = Some(Err((StatusCode::BAD_REQUEST, e.to_string())));
                }
                // The access is in the users' history but in no record: stop, and let the
                // restart rebuild the state from the log.
                Err(e) => fail_stop(&format!("the model failed: {e}")),
            }
        }
        if !items.is_empty() {
            let records = match shared.log.append_all(items) {
                Ok(r) => r,
                // Decided but neither recorded nor answered: memory is ahead of the log.
                Err(e) => fail_stop(&format!("cannot append to the audit log: {e}")),
            };
            for ((at, decision), record) in decided.into_iter().zip(records) {
                if decision.raises_block() {
                    shared.raised.push(record.seq);
                    shared.raised_all.push(record.seq);
                }
                let request = &deliveries[at].request;
                let state = &mut *shared;
                let recent = (&mut state.alerts, &mut state.cases);
                if let Some(view) = note_alert(recent, record.seq, request, &decision) {
                    // No stream listening is fine: the alert is in the log and the list.
                    let _ = alerts.send(StreamEvent::Alert(view));
                }
                metrics.decided(decision.verdict);
                answers[at] = Some(Ok((record.seq, decision)));
            }
        }
        // A delivery repeated within the group gets its first one's answer.
        for (at, first) in repeats {
            answers[at] = answers[first].clone();
            if matches!(answers[at], Some(Ok(_))) {
                metrics.repeated();
            }
        }
        drop(shared);
        let mut answers = answers.into_iter();
        for (p, why) in group.into_iter().zip(refused) {
            if let Some(why) = why {
                let mine = p.requests.iter().map(|_| Err(why.clone())).collect();
                let _ = p.reply.send(mine);
                continue;
            }
            let mine: Vec<Answer> = answers
                .by_ref()
                .take(p.requests.len())
                .map(|a| {
                    a.unwrap_or_else(|| {
                        Err((StatusCode::INTERNAL_SERVER_ERROR, "not decided".into()))
                    })
                })
                .collect();
            let _ = p.reply.send(mine);
        }
    }
}

/// A group's deliveries sorted by [`sort_repeats`].
struct Sorted {
    /// To decide, in order.
    fresh: Vec<usize>,
    /// Repeats of a delivery earlier in the group: `(repeat, first)`.
    repeats: Vec<(usize, usize)>,
    /// Repeats of a delivery the log holds, with its record and decision.
    held: Vec<(usize, (u64, Decision))>,
    /// Deliveries whose look-up failed, and why: not decided.
    failed: Vec<(usize, String)>,
}

/// Sorts a group's deliveries into those to decide, repeats and failures: a delivery its
/// sender names again (the same id, the same access) is answered from the record that
/// decided it, or, when its first delivery is in this very group, with the first one's
/// answer. That answer is the repeat's own even when it is a refusal: decision times only
/// grow through a group and an access is never dated after its own (the wall clock caps
/// both alike), so a check the first copy fails the repeat fails too, and a transaction
/// holding it was refused whole before anything was decided.
fn sort_repeats(log: &AuditLog, deliveries: &[Delivery]) -> Sorted {
    let mut sorted = Sorted {
        fresh: Vec::with_capacity(deliveries.len()),
        repeats: Vec::new(),
        held: Vec::new(),
        failed: Vec::new(),
    };
    let mut named = std::collections::HashMap::new();
    for (at, d) in deliveries.iter().enumerate() {
        let Some(id) = &d.id else {
            sorted.fresh.push(at);
            continue;
        };
        let key = match medfl_monitor::audit::delivery_key(id, &d.request) {
            Ok(key) => key,
            Err(e) => {
                sorted.failed.push((at, failed_look_up(id, &e)));
                continue;
            }
        };
        if let Some(first) = named.get(&key) {
            sorted.repeats.push((at, *first));
            continue;
        }
        match log.delivered(id, &d.request) {
            Ok(Some(found)) => sorted.held.push((at, found)),
            Ok(None) => {
                named.insert(key, at);
                sorted.fresh.push(at);
            }
            Err(e) => sorted.failed.push((at, failed_look_up(id, &e))),
        }
    }
    sorted
}

/// Why a delivery whose look-up failed is not decided (and a warning saying so).
fn failed_look_up(id: &DeliveryId, e: &medfl_monitor::audit::AuditError) -> String {
    warn!(id = %id, error = %e, "cannot look up a named delivery; not deciding it");
    format!("cannot tell whether delivery {id} was decided before: {e}")
}

/// Why a submission got no answers: the monitor is overloaded, or the writer is gone.
type Refusal = (StatusCode, String);

/// Requests waiting for or in the decision writer at most, over all submissions: the bound on
/// the queue's memory. Beyond it, HTTP callers get 503 at once and syslog senders wait.
const MAX_IN_FLIGHT: u32 = 16 * 1024;

/// Hands `requests` to the decision writer and waits for their answers; refuses at once when
/// the monitor already holds [`MAX_IN_FLIGHT`] requests (the caller may retry).
async fn submit(
    server: &Server,
    requests: Vec<Delivery>,
    all_or_nothing: bool,
) -> Result<Vec<Answer>, Refusal> {
    let overloaded = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the monitor is overloaded; retry".to_owned(),
        )
    };
    let n = u32::try_from(requests.len()).map_err(|_| overloaded())?;
    let permits = Arc::clone(&server.in_flight)
        .try_acquire_many_owned(n)
        .map_err(|_| overloaded())?;
    send(server, requests, all_or_nothing, permits).await
}

/// Queues a submission holding its in-flight permits and waits for its answers.
async fn send(
    server: &Server,
    requests: Vec<Delivery>,
    all_or_nothing: bool,
    permits: tokio::sync::OwnedSemaphorePermit,
) -> Result<Vec<Answer>, Refusal> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let pending = Pending {
        requests,
        all_or_nothing,
        reply,
        _permits: permits,
    };
    let failed = || {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the decision failed".to_owned(),
        )
    };
    // The queue holds at most MAX_IN_FLIGHT submissions of at least one permit each, each
    // permit released only once its submission is answered, so it is never full here.
    match server.queue.try_send(pending) {
        Ok(()) => {}
        Err(std::sync::mpsc::TrySendError::Full(_)) => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the monitor is overloaded; retry".to_owned(),
            ));
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(failed()),
    }
    answer.await.map_err(|_| failed())
}

/// `POST /v1/access`: hands the request to the decision writer and answers once it is
/// decided and durable.
async fn access(
    State(server): State<Server>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let started = Instant::now();
    if let Some(why) = server.refuse_uncertified(caller) {
        server.metrics.refused(Source::Json);
        return refuse(StatusCode::FORBIDDEN, why);
    }
    if sessions::sent_by_a_page(&headers) {
        // A web page a member of staff has open must not inject accesses (to get a colleague
        // blocked, say), even one rebound to the monitor's own origin.
        server.metrics.refused(Source::Json);
        return refuse(
            StatusCode::FORBIDDEN,
            "accesses are not taken from web pages",
        );
    }
    let id = match delivery_id(&headers) {
        Ok(id) => id,
        Err(why) => {
            server.metrics.refused(Source::Json);
            return refuse(StatusCode::BAD_REQUEST, why);
        }
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => {
            server.metrics.refused(Source::Json);
            return r;
        }
    };
    let request: AccessRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            server.metrics.refused(Source::Json);
            return refuse(StatusCode::BAD_REQUEST, format!("invalid request: {e}"));
        }
    };
    let mut request = request;
    if let Some(context) = server.context() {
        if let Err(issue) = medfl_monitor::intake::check_known(&request, &context) {
            // Refused as bad input (the issue's rule), but never silently: the EHR's own trail
            // has the access, and this log line and the refusal count say it was not judged.
            warn!(error = %issue.diagnostics, "an access by or to an unknown identity was refused");
            server.metrics.refused(Source::Json);
            return refuse(StatusCode::BAD_REQUEST, issue.diagnostics);
        }
        medfl_monitor::intake::apply_context(&mut request, &context);
    }
    let answer = submit(&server, vec![Delivery { request, id }], false).await;
    let response = match answer.map(|mut a| a.pop()) {
        Ok(Some(Ok((seq, decision)))) => {
            server.metrics.answered(Source::Json, started.elapsed());
            let mut v = serde_json::to_value(&decision).unwrap_or_default();
            v["record"] = serde_json::Value::from(seq);
            return axum::Json(v).into_response();
        }
        Ok(Some(Err((status, why)))) | Err((status, why)) => refuse(status, why),
        Ok(None) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the decision failed"),
    };
    server.metrics.refused(Source::Json);
    response
}

/// The caller's name for this delivery: the `Idempotency-Key` header (IETF httpapi
/// draft-ietf-httpapi-idempotency-key-header §2: a string, here visible ASCII up to
/// [`medfl_monitor::request::MAX_ID_BYTES`]), if it sent one. The quotes of the draft's
/// structured-field form are taken off.
fn delivery_id(headers: &axum::http::HeaderMap) -> Result<Option<DeliveryId>, String> {
    let mut keys = headers.get_all("idempotency-key").iter();
    let Some(key) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err("more than one Idempotency-Key header".into());
    }
    let key = key
        .to_str()
        .map_err(|_| "Idempotency-Key: only visible ASCII".to_owned())?;
    let key = match (key.strip_prefix('"'), key.ends_with('"')) {
        (Some(quoted), true) => quoted.strip_suffix('"').unwrap_or(quoted),
        (None, false) => key,
        _ => return Err("Idempotency-Key: an unbalanced quote".into()),
    };
    DeliveryId::new(key)
        .map(Some)
        .map_err(|e| format!("Idempotency-Key: {e}"))
}

/// How a request shows who sends it: a bearer token (a script), or the session cookie of a
/// signed-in console page.
#[derive(Clone)]
enum Credential {
    Bearer(String),
    Session { id: String, token: String },
}

impl Credential {
    /// The officer's token behind the credential.
    fn token(&self) -> &str {
        match self {
            Credential::Bearer(t) | Credential::Session { token: t, .. } => t,
        }
    }
}

/// The credential `headers` carry. A write through a session must come from the console's own
/// page: the session's CSRF token in `X-CSRF-Token`, and no sign of another origin.
fn credential(
    server: &Server,
    headers: &axum::http::HeaderMap,
    write: bool,
) -> Result<Credential, (StatusCode, String)> {
    if let Some(token) = officers::bearer(headers) {
        return Ok(Credential::Bearer(token));
    }
    let Some((id, session)) = server.sessions.of(headers, now_ms()) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a security officer's token is needed".into(),
        ));
    };
    if !server.sessions.host_allowed(headers) {
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            "the console answers signed-in browsers only at its own address \
             ([monitor] console_hosts names the DNS names it may be reached by)"
                .into(),
        ));
    }
    if write
        && (!sessions::same_origin(headers)
            || !sessions::csrf_matches(&session, headers.get(sessions::CSRF_HEADER)))
    {
        return Err((
            StatusCode::FORBIDDEN,
            "a write through the console needs its CSRF token and its own origin".into(),
        ));
    }
    Ok(Credential::Session {
        id,
        token: session.token,
    })
}

/// The officer whose credential `headers` carry, if their role reaches `needs`; `write` for a
/// request that changes something (see [`credential`]).
async fn officer_for(
    server: &Server,
    headers: &axum::http::HeaderMap,
    needs: OfficerRole,
    write: bool,
) -> Result<officers::Officer, (StatusCode, String)> {
    // A request without a well-formed credential is refused before any work is done for it.
    let credential = credential(server, headers, write)?;
    authorize_credential(server, credential, needs).await
}

/// Checks `credential`'s token against the officers file (so a revoked token stops at once,
/// whatever session it opened).
async fn authorize_credential(
    server: &Server,
    credential: Credential,
    needs: OfficerRole,
) -> Result<officers::Officer, (StatusCode, String)> {
    let dir = Arc::clone(&server.member_dir);
    // The officers file is read from disk: off the runtime's threads.
    tokio::task::spawn_blocking(move || authorize(&dir, credential.token(), needs, now_ms()))
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the authorization check failed".into(),
            ))
        })
}

/// `GET /v1/alerts`: the latest alerts and denials, newest first (an officer's or auditor's
/// token: alerts name staff and patients).
async fn list_alerts(State(server): State<Server>, headers: axum::http::HeaderMap) -> Response {
    if let Err((status, why)) = officer_for(&server, &headers, OfficerRole::Auditor, false).await {
        return refuse(status, why);
    }
    read_shared(server.app, |shared| {
        let list: Vec<&AlertView> = shared.alerts.iter().rev().collect();
        serde_json::json!({ "alerts": list })
    })
    .await
}

/// `GET /v1/cases`: the cases an officer reviews, one per user and UTC day, newest day first
/// and most suspicious first within it (an officer's or auditor's token, as for the alerts).
/// Every model alert of the last [`CASE_DAYS`] days is ranked, as the experiments rank cases;
/// `budget` is the reviews a day, 10 per 1,000 staff of the directory (none without one), and
/// each case says whether it is among them. Listed alerts the model did not raise (consent,
/// a standing block, break-the-glass below the threshold) make cases with no evidence.
/// `break_glass` is the other queue: every user-day of those days with a declared
/// emergency, each reviewed on its own whatever the ranking.
async fn list_cases(State(server): State<Server>, headers: axum::http::HeaderMap) -> Response {
    if let Err((status, why)) = officer_for(&server, &headers, OfficerRole::Auditor, false).await {
        return refuse(status, why);
    }
    let staff = server.context().map(|c| c.n_staff());
    // Copied under the lock (the decision writer waits for it), laid out after.
    let held = read_shared_value(server.app, |shared| {
        let book = &shared.cases;
        let listed: Vec<AlertView> = shared.alerts.iter().cloned().collect();
        // At most MAX_NOTED_PER_DAY records a user-day: a flood is copied as a count.
        let noted = |review| -> Vec<(u64, String, NotedDay)> {
            book.noted(review)
                .map(|(w, user, n)| (w, user.clone(), n.clone()))
                .collect()
        };
        let noted = (noted(Review::BreakGlass), noted(Review::RolePolicy));
        let too_late = [
            book.too_late(),
            book.noted_too_late(Review::BreakGlass),
            book.noted_too_late(Review::RolePolicy),
        ];
        let held = (book.oldest_window(), *book.rules());
        (book.ranked(), noted, held, too_late, listed)
    })
    .await;
    let Some((ranked, (glass, policy), (oldest, rules), too_late, listed)) = held else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the monitor failed");
    };
    let budget = staff.map(|n| rules.budget(n));
    let window_ms = rules.window_ms.max(1);
    axum::Json(serde_json::json!({
        "budget": budget,
        "days": CASE_DAYS,
        "too_late": too_late[0],
        "emergencies_too_late": too_late[1],
        "role_policy_too_late": too_late[2],
        "cases": cases_of(ranked, (oldest, window_ms), &listed, budget),
        "break_glass": noted_of(glass, window_ms),
        "role_policy": noted_of(policy, window_ms),
    }))
    .into_response()
}

/// `GET /v1/alerts/stream`: new alerts as server-sent events (`event: alert`, `id:` the
/// record, `data:` the alert as JSON), for as long as the caller listens. A caller too slow
/// to keep up gets `event: lagged` with how many it missed (they are in `GET /v1/alerts`).
async fn stream_alerts(State(server): State<Server>, headers: axum::http::HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let credential = match credential(&server, &headers, false) {
        Ok(c) => c,
        Err((status, why)) => return refuse(status, why),
    };
    let officer =
        match authorize_credential(&server, credential.clone(), OfficerRole::Auditor).await {
            Ok(o) => o,
            Err((status, why)) => return refuse(status, why),
        };
    let Ok(slot) = Arc::clone(&server.streams).try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_ALERT_STREAMS} alert streams are open already"),
        );
    };
    // The stream lives while its credential does: it ends at the token's (or session's)
    // expiry, and when a re-check (every STREAM_RECHECK) finds the token revoked or the
    // session closed.
    let expires_ms = match &credential {
        Credential::Session { id, .. } => server
            .sessions
            .of_id(id)
            .map_or(0, |s| s.expires_ms.min(officer.expires_ms)),
        Credential::Bearer(_) => officer.expires_ms,
    };
    struct Stream {
        rx: tokio::sync::broadcast::Receiver<StreamEvent>,
        dir: Arc<PathBuf>,
        credential: Credential,
        sessions: Arc<sessions::Sessions>,
        expires_ms: u64,
        recheck: tokio::time::Interval,
        session_check: tokio::time::Interval,
        _slot: tokio::sync::OwnedSemaphorePermit,
    }
    let mut recheck = tokio::time::interval(STREAM_RECHECK);
    recheck.reset();
    // A session closed (signed out, evicted) ends its stream within a second: the check is
    // in memory, unlike the token's.
    let mut session_check = tokio::time::interval(Duration::from_secs(1));
    session_check.reset();
    let state = Stream {
        rx: server.alerts.subscribe(),
        dir: Arc::clone(&server.member_dir),
        credential,
        sessions: Arc::clone(&server.sessions),
        expires_ms,
        recheck,
        session_check,
        _slot: slot,
    };
    let events = futures::stream::unfold(state, |mut s| async move {
        loop {
            let left = s.expires_ms.saturating_sub(now_ms());
            let event = tokio::select! {
                got = s.rx.recv() => match got {
                    Ok(e) => {
                        if let Credential::Session { id, .. } = &s.credential
                            && !s.sessions.is_open(id, now_ms())
                        {
                            return None;
                        }
                        e.to_event()
                    }
                    Err(RecvError::Lagged(n)) => {
                        Event::default().event("lagged").data(n.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = s.session_check.tick() => {
                    match &s.credential {
                        Credential::Session { id, .. } if !s.sessions.is_open(id, now_ms()) => {
                            return None;
                        }
                        _ => continue,
                    }
                }
                _ = s.recheck.tick() => {
                    let (dir, credential) = (Arc::clone(&s.dir), s.credential.clone());
                    let still = tokio::task::spawn_blocking(move || {
                        authorize(&dir, credential.token(), OfficerRole::Auditor, now_ms())
                    })
                    .await;
                    match still {
                        Ok(Ok(_)) => continue,
                        _ => return None,
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(left)) => return None,
            };
            return Some((Ok::<Event, std::convert::Infallible>(event), s));
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What an officer sends with an acknowledgement.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    note: String,
}

/// `POST /v1/alerts/{record}/ack`: an officer acknowledges an alert; the review is logged
/// (and so sealed and anchored) before the alert shows as acknowledged.
async fn acknowledge(
    State(server): State<Server>,
    axum::extract::Path(record): axum::extract::Path<u64>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (officer, req): (String, AckRequest) = match officer_request(&server, &headers, body).await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    if req.note.len() > MAX_NOTE_BYTES {
        return refuse(StatusCode::BAD_REQUEST, "note too long");
    }
    let (app, stream) = (server.app, server.alerts);
    let done = tokio::task::spawn_blocking(move || {
        let Ok(mut shared) = app.lock() else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the monitor failed".to_owned(),
            ));
        };
        // A declared emergency or a role-policy alert of the queue's days can be reviewed
        // after its alert has left the list: the case book knows it, its user and whether it
        // was reviewed.
        let noted = shared
            .cases
            .noted_reviewed(record)
            .zip(shared.cases.noted_employee(record).cloned());
        match shared.alerts.iter().find(|a| a.seq == record) {
            None => match noted {
                None => {
                    return Err((
                        StatusCode::NOT_FOUND,
                        format!("record {record} is not among the recent alerts"),
                    ));
                }
                Some((true, _)) => {
                    return Err((
                        StatusCode::CONFLICT,
                        format!("record {record} was acknowledged"),
                    ));
                }
                Some((false, user)) if user == officer => {
                    return Err((
                        StatusCode::FORBIDDEN,
                        "no one reviews their own alert".to_owned(),
                    ));
                }
                Some((false, _)) => {}
            },
            Some(AlertView {
                acknowledged_by: Some(by),
                ..
            }) => {
                return Err((
                    StatusCode::CONFLICT,
                    format!("record {record} was acknowledged by {by}"),
                ));
            }
            Some(a) if a.user == officer => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "no one reviews their own alert".to_owned(),
                ));
            }
            Some(_) => {}
        }
        let body = RecordBody::Review {
            officer: officer.clone(),
            action: ReviewAction::Acknowledge { seq: record },
            note: req.note,
        };
        let logged = shared.log.append(now_ms(), body).map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the review could not be logged: {e}"),
            )
        })?;
        if let Some(a) = shared.alerts.iter_mut().find(|a| a.seq == record) {
            a.acknowledged_by = Some(officer.clone());
        }
        shared.cases.review_noted(record);
        info!(
            officer,
            alert = record,
            review = logged.seq,
            "alert acknowledged"
        );
        let _ = stream.send(StreamEvent::Review(ReviewView {
            record: logged.seq,
            officer,
            alert: Some(record),
            user: None,
        }));
        Ok(logged.seq)
    })
    .await;
    review_answer(done)
}

/// Reads the shared state on a blocking thread (a decision may hold the lock through its
/// fsync) and answers what `f` makes of it.
async fn read_shared(
    app: App,
    f: impl FnOnce(&Shared) -> serde_json::Value + Send + 'static,
) -> Response {
    match read_shared_value(app, f).await {
        Some(v) => axum::Json(v).into_response(),
        None => refuse(StatusCode::SERVICE_UNAVAILABLE, "the monitor failed"),
    }
}

/// What `f` makes of the shared state, read on a blocking thread; `None` if the state failed.
async fn read_shared_value<T: Send + 'static>(
    app: App,
    f: impl FnOnce(&Shared) -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(move || app.lock().ok().map(|shared| f(&shared)))
        .await
        .ok()
        .flatten()
}

/// `GET /healthz`: the model in use, the log's length, the consent height.
async fn health(State(server): State<Server>) -> Response {
    let context = server
        .context()
        .map(|c| serde_json::json!({ "staff": c.n_staff(), "patients": c.n_patients() }));
    read_shared(server.app, move |shared| {
        serde_json::json!({
            "status": "ok",
            "model": shared.model_hash,
            "records": shared.log.len(),
            "consent_height": shared.consent_height,
            "blocked_users": shared.monitor.blocks().len(),
            "context": context,
            "context_error": shared.context_error,
        })
    })
    .await
}

/// A file's size and modification time, if it exists: enough to notice that it changed.
type Stamp = Option<(u64, SystemTime)>;

/// The [`Stamp`] of `path`.
fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Swaps in a new monitor model and re-reads consent, each only when its files changed (the
/// ledger copy, or the outbox where an opt-out waiting to be ordered already applies).
fn refresh(server: &Server, member: &Member, pseudonyms: &PseudonymKey) {
    refresh_context(server, member);
    let app = &server.app;
    let model_path = member.dir.join("models").join("current.model");
    let ledger_path = member
        .dir
        .join(&member.config.ledger_dir)
        .join("ledger.redb");
    let (model_seen, ledger_seen, consent_seen) = match app.lock() {
        Ok(shared) => (shared.model_seen, shared.ledger_seen, shared.consent_seen),
        Err(_) => fail_stop("the monitor's state is poisoned"),
    };
    let model_now = stamp(&model_path);
    let scorer = if model_now.is_some() && model_now != model_seen {
        match Scorer::load(&model_path) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, file = %model_path.display(), "monitor model not loaded; keeping the previous one");
                None
            }
        }
    } else {
        None
    };
    let ledger_now = stamp(&ledger_path);
    let consent_now = Some((ledger_now, stamp(&member.dir.join("outbox"))));
    let consent = if consent_now != consent_seen {
        read_consent(server, member, pseudonyms)
    } else {
        Ok(None)
    };
    let Ok(mut shared) = app.lock() else {
        fail_stop("the monitor's state is poisoned");
    };
    shared.model_seen = model_now;
    if let Some(s) = scorer
        && shared.model_hash.as_deref() != Some(s.hash())
    {
        info!(
            model = s.hash(),
            threshold = s.threshold(),
            "monitor model swapped in"
        );
        shared.model_hash = Some(s.hash().to_owned());
        shared.monitor.swap_model(s);
    }
    match consent {
        Ok(Some((height, c))) => {
            if ledger_now != ledger_seen {
                info!(
                    height,
                    opted_out = c.opted_out.len(),
                    "consent read from the ledger copy"
                );
            }
            shared.ledger_seen = ledger_now;
            shared.consent_seen = consent_now;
            shared.consent_height = Some(height);
            shared.monitor.set_consent(c);
        }
        Ok(None) => {}
        Err(e) => warn!(error = %format!("{e:#}"), "cannot read the ledger copy"),
    }
}

/// Re-reads the context feeds when a file of the folder changed and has stayed unchanged for
/// one more refresh (a file being written is not read half-way). A folder that cannot be read,
/// or from which a file disappeared, leaves the previous feeds in use, and `/healthz` says why:
/// a VIP list deleted by mistake must not silently unflag every VIP.
fn refresh_context(server: &Server, member: &Member) {
    let dir = member.dir.join(feeds::DIR);
    let now: Vec<Stamp> = feeds::FILES.iter().map(|f| stamp(&dir.join(f))).collect();
    let Ok(mut shared) = server.app.lock() else {
        fail_stop("the monitor's state is poisoned");
    };
    let first = shared.context_seen.is_empty();
    // Nothing changed since the feeds in use were read.
    if shared.context_seen == now {
        shared.context_pending = None;
        shared.context_failed = None;
        if shared.context_loaded {
            shared.context_error = None;
        }
        return;
    }
    // Nor since the last failed attempt, a short while ago (an I/O failure or a permission
    // fixed without touching the file is retried after that while).
    if let Some((stamps, at)) = &shared.context_failed
        && *stamps == now
        && at.elapsed() < CONTEXT_RETRY
    {
        return;
    }
    if !first && shared.context_pending.as_ref() != Some(&now) {
        shared.context_pending = Some(now);
        return;
    }
    // Against the feeds in use (not the last attempt): a file gone stays gone until it is
    // back, whatever else changes meanwhile.
    let gone: Vec<&str> = if shared.context_loaded {
        feeds::FILES
            .iter()
            .zip(shared.context_seen.iter().zip(&now))
            .filter(|(_, (was, is))| was.is_some() && is.is_none())
            .map(|(f, _)| *f)
            .collect()
    } else {
        // No feeds in use yet: nothing to keep.
        Vec::new()
    };
    shared.context_pending = None;
    drop(shared);
    let loaded = if !gone.is_empty() {
        Err(format!(
            "{} disappeared from {}; the previous feeds stay in use (restore it, or restart \
             the monitor to go on without it)",
            gone.join(", "),
            dir.display()
        ))
    } else if now.iter().all(Option::is_none) {
        info!(dir = %dir.display(), "no context feeds: AuditEvents must carry medfl's extensions");
        Ok(None)
    } else {
        Feeds::load_dir(&dir)
            .map(|c| {
                info!(
                    staff = c.n_staff(),
                    patients = c.n_patients(),
                    skipped = c.n_skipped(),
                    "context feeds read"
                );
                Some(Arc::new(c))
            })
            .map_err(|e| format!("{e}; the previous feeds stay in use"))
    };
    let Ok(mut shared) = server.app.lock() else {
        fail_stop("the monitor's state is poisoned");
    };
    match loaded {
        Ok(c) => {
            if let Ok(mut slot) = server.context.write() {
                *slot = c;
            }
            shared.context_seen = now;
            shared.context_loaded = true;
            shared.context_failed = None;
            shared.context_error = None;
        }
        Err(why) => {
            warn!(error = %why, "context feeds not read");
            if first {
                // Nothing in use yet: what is there is the baseline a change is seen from.
                shared.context_seen.clone_from(&now);
            }
            shared.context_failed = Some((now, std::time::Instant::now()));
            shared.context_error = Some(why);
        }
    }
}

/// What the hospital's own ledger copy says about research use, read from a snapshot (the
/// running `medfl client` holds the copy); `None` before the copy exists.
fn read_consent(
    server: &Server,
    member: &Member,
    pseudonyms: &PseudonymKey,
) -> Result<Option<(u64, Consent)>> {
    let dir = member.dir.join(&member.config.ledger_dir);
    if !dir.join("ledger.redb").exists() {
        return Ok(None);
    }
    let ledger = Ledger::open_snapshot(&dir)?;
    let chain = ledger.state();
    let me = &member.config.member;
    // The console's privacy view comes from the same read.
    let privacy = Arc::new(console::privacy_of(&ledger, me));
    if let Ok(mut p) = server.privacy.write() {
        *p = Some(privacy);
    }
    // The hospital's own opt-outs apply before the coordinator orders them: one it censors
    // must not keep research access open.
    let pending: Vec<Transaction> = super::agent::read_outbox(&member.dir.join("outbox"))
        .into_iter()
        .filter_map(|(_, tx)| tx.ok())
        .filter(|tx| &tx.signer == me && !chain.contains_tx(&tx.id().unwrap_or_default()))
        .collect();
    let opted_out = chain
        .opted_out(me)
        .into_iter()
        .chain(super::submit::opt_outs(&pending))
        .map(|p| p.0.0)
        .collect();
    let agreement_until = chain
        .agreements()
        .filter(|a| a.accepted.contains(me))
        .map(|a| a.agreement.expires_at.0)
        .max();
    Ok(Some((
        chain.height(),
        Consent {
            key: pseudonyms.clone(),
            opted_out,
            agreement_until,
            height: chain.height(),
        },
    )))
}

/// Seals the records since the last batch and queues their anchor for the hospital's client.
fn seal_and_anchor(app: &App, member: &Member, queue: bool) -> Result<()> {
    let (batches, raised, unread) = {
        let Ok(mut shared) = app.lock() else {
            bail!("the monitor failed");
        };
        let batches = shared.log.seal_all()?;
        // Only the few records the writer saw raise a block are read again, not the batch.
        let sealed_to = batches.last().map_or(0, |b| b.last.saturating_add(1));
        let (now, later): (Vec<u64>, Vec<u64>) =
            shared.raised.iter().partition(|seq| **seq < sealed_to);
        shared.raised = later;
        let mut raised = Vec::with_capacity(now.len());
        let mut unread = None;
        for seq in now {
            match shared.log.raised_block(seq) {
                Ok(Some(b)) => raised.push(b),
                Ok(None) => warn!(record = seq, "a record noted as raising a block does not"),
                // Still in `raised_all`: the look after this failed seal queues it.
                Err(e) => {
                    unread = Some(anyhow::Error::from(e).context(format!("reading record {seq}")))
                }
            }
        }
        (batches, raised, unread)
    };
    if !queue {
        // Sealed; anchored by the next look that succeeds, in order.
        return Ok(());
    }
    let genesis = member.genesis.hash()?;
    // The batches' anchors first: nothing about the blocks may keep them from the outbox.
    for batch in batches {
        queue_anchor(member, &genesis, &batch)?;
    }
    if !raised.is_empty() {
        queue_alert_anchors(member, &genesis, &raised)?;
    }
    unread.map_or(Ok(()), Err)
}

/// Signs an alert anchor for each block raised and leaves it in the outbox. The anchor names
/// no model: a decision names the monitor's file (the global model with the hospital's own
/// threshold), which is not the anchored round's model the contract would check; the record
/// the anchor commits to names it.
fn queue_alert_anchors(
    member: &Member,
    genesis: &medfl_ledger::Hash,
    raised: &[medfl_monitor::audit::RaisedBlock],
) -> Result<()> {
    for block in raised {
        let tx = Transaction::sign(
            genesis,
            member.config.member.clone(),
            &member.key,
            // The record's time: queued again, it is the same transaction.
            Timestamp(block.at_ms),
            TxBody::AnchorAlert(block.anchor(None)),
        )?;
        let (path, id) = queue_signed(member, &tx)?;
        info!(
            record = block.seq,
            alert = %block.record,
            tx = %id,
            file = %path.display(),
            "a block was raised; its alert anchor is queued for the ledger"
        );
    }
    Ok(())
}

/// Signs a sealed batch's anchor and leaves it in the outbox for the hospital's client.
fn queue_anchor(
    member: &Member,
    genesis: &medfl_ledger::Hash,
    batch: &medfl_monitor::audit::SealedBatch,
) -> Result<()> {
    let tx = Transaction::sign(
        genesis,
        member.config.member.clone(),
        &member.key,
        // The batch's own time, not the clock's: queued again, it is the same transaction.
        Timestamp(batch.last_at),
        TxBody::AnchorAuditLog(batch.anchor()),
    )?;
    let (path, id) = queue_signed(member, &tx)?;
    info!(
        batch = batch.index,
        records = batch.last - batch.first + 1,
        root = %batch.root,
        tx = %id,
        file = %path.display(),
        "audit batch sealed; its anchor is queued for the ledger"
    );
    Ok(())
}

/// The audit log of the hospital whose folder is `dir`, read from a private copy (the running
/// monitor holds the file).
pub fn open_copy(dir: &Path) -> Result<(tempfile::TempDir, AuditLog)> {
    open_copy_of(&audit_file(dir, false))
}

/// The audit log of the hospital whose folder is `member_dir`: its live trail, or the log a
/// `--replay` writes (kept apart, in `monitor-replay/`).
pub fn audit_file(member_dir: &Path, replay: bool) -> PathBuf {
    let folder = if replay { "monitor-replay" } else { "monitor" };
    member_dir.join(folder).join("audit.redb")
}

/// A private copy of the audit log `file` (a running monitor holds the file).
pub fn open_copy_of(file: &Path) -> Result<(tempfile::TempDir, AuditLog)> {
    let file = file.to_owned();
    if !file.exists() {
        bail!("{} holds no audit log", file.display());
    }
    let tmp = tempfile::tempdir()?;
    let copy: PathBuf = tmp.path().join("audit.redb");
    std::fs::copy(&file, &copy).with_context(|| format!("copying {}", file.display()))?;
    let log = AuditLog::open(&copy).with_context(|| {
        format!(
            "reading a copy of {} (if the monitor was committing, try again)",
            file.display()
        )
    })?;
    Ok((tmp, log))
}

/// The anchors the hospital itself signed that its ledger copy holds: its audit batches'
/// and its alerts'.
#[derive(Debug, Default)]
pub struct OwnAnchors {
    /// Audit-log batch anchors, in ledger order.
    pub audit: Vec<medfl_ledger::tx::AuditAnchor>,
    /// The last event time its latest anchored batch covers.
    pub audit_last: Option<Timestamp>,
    /// Alert anchors, in ledger order.
    pub alerts: Vec<medfl_ledger::tx::AlertAnchor>,
}

/// The hospital's own anchors on its ledger copy (none if it has no copy yet).
///
/// # Errors
/// The copy cannot be read.
pub fn own_anchors(member: &Member) -> Result<OwnAnchors> {
    let dir = member.dir.join(&member.config.ledger_dir);
    let mut out = OwnAnchors::default();
    if !dir.join("ledger.redb").exists() {
        return Ok(out); // no copy yet (`medfl client` makes it): nothing anchored
    }
    let ledger = Ledger::open_snapshot(&dir)?;
    out.audit_last = ledger.state().audit_last(&member.config.member);
    for h in 1..=ledger.state().height() {
        let Some(block) = ledger.block(h)? else {
            bail!("block {h} is missing from the ledger copy");
        };
        for tx in block
            .txs
            .iter()
            .filter(|t| t.signer == member.config.member)
        {
            match &tx.body {
                TxBody::AnchorAuditLog(a) => out.audit.push(a.clone()),
                TxBody::AnchorAlert(a) => out.alerts.push(a.clone()),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Queues again every anchor a crash (or a failed write) may have lost between a seal and the
/// outbox: each sealed batch, and each block raised in one (`raised`: their records), whose
/// very anchor (signed by this hospital) neither the outbox (sent or included) nor the ledger
/// copy holds. An anchor's time is its batch's (or record's), so a re-queued one is the same
/// transaction as before. Batches go in order; one that starts before the hospital's latest
/// anchored batch ends can no longer be anchored (the contract's `audit-sequence` rule) and is
/// reported instead, for `medfl audit verify` shows it unanchored.
fn requeue_lost_anchors(app: &App, member: &Member) -> Result<()> {
    // The log's part under the state lock, briefly: its batches and the few raised blocks.
    let (batches, raised, unread) = {
        let Ok(shared) = app.lock() else {
            bail!("the monitor failed");
        };
        let sealed = shared.log.first_unsealed()?;
        let mut raised = Vec::new();
        let mut unread = None;
        for seq in shared.raised_all.iter().filter(|s| **s < sealed) {
            match shared.log.raised_block(*seq) {
                Ok(Some(b)) => raised.push(b),
                Ok(None) => {}
                // The others are queued; this look fails, so the next one tries again.
                Err(e) => {
                    unread = Some(anyhow::Error::from(e).context(format!("reading record {seq}")));
                }
            }
        }
        (shared.log.batches()?, raised, unread)
    };
    let me = &member.config.member;
    // The outbox first, then the ledger: an anchor the client moves from one to the other
    // in between is then seen in the ledger.
    // Held anchors by their whole content (an alert anchor of the monitor's kind: critical,
    // no model, so its record and time say it all); sets, for a year of batches is 500,000.
    let audit_key = |a: &medfl_ledger::tx::AuditAnchor| {
        (
            a.merkle_root,
            a.count,
            a.first_event_at.0,
            a.last_event_at.0,
        )
    };
    let alert_key = |a: &medfl_ledger::tx::AlertAnchor| {
        (a.severity == medfl_ledger::tx::Severity::Critical && a.model.is_none())
            .then_some((a.alert, a.raised_at.0))
    };
    let mut held_audit = std::collections::HashSet::new();
    let mut held_alerts = std::collections::HashSet::new();
    if let Ok(entries) = std::fs::read_dir(member.dir.join("outbox")) {
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if !path
                .extension()
                .is_some_and(|x| x == "tx" || x == "included" || x == "overtaken")
            {
                continue;
            }
            match super::agent::read_tx(&path) {
                Ok(tx) if &tx.signer == me => match &tx.body {
                    TxBody::AnchorAuditLog(a) => {
                        held_audit.insert(audit_key(a));
                    }
                    TxBody::AnchorAlert(a) => held_alerts.extend(alert_key(a)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    // The ledger copy only adds anchors whose outbox files are gone: a copy that cannot be
    // read steadily (a coordinator adding blocks faster than it copies) must not stop
    // anchoring. Without it, an anchor already on the ledger may be queued again: the same
    // transaction, refused as a replay.
    let on_ledger = own_anchors(member).unwrap_or_else(|e| {
        warn!(error = %format!("{e:#}"), "cannot read the ledger copy; judging lost anchors by the outbox alone");
        OwnAnchors::default()
    });
    held_audit.extend(on_ledger.audit.iter().map(audit_key));
    held_alerts.extend(on_ledger.alerts.iter().filter_map(alert_key));
    let audit_last = on_ledger.audit_last;
    let genesis = member.genesis.hash()?;
    let mut expected_first = 0u64;
    let mut failed = None;
    for batch in batches {
        // A damaged batch table is for `audit verify` to name, not for the key to sign.
        if batch.first != expected_first || batch.last < batch.first {
            warn!(
                batch = batch.index,
                "the sealed batches do not follow on; not re-queueing their anchors (run medfl audit verify)"
            );
            break;
        }
        expected_first = batch.last.saturating_add(1);
        let anchor = batch.anchor();
        if held_audit.contains(&audit_key(&anchor)) {
            continue;
        }
        if audit_last.is_some_and(|t| anchor.first_event_at < t) {
            warn!(
                batch = batch.index,
                "a sealed batch's anchor was lost and a later one is on the ledger: it can no longer be anchored"
            );
            continue;
        }
        warn!(
            batch = batch.index,
            "a sealed batch's anchor was lost; queueing it again"
        );
        if let Err(e) = queue_anchor(member, &genesis, &batch) {
            // Later batches must not overtake it: the next look starts here again.
            failed = Some(e.context(format!("queueing batch {}'s anchor", batch.index)));
            break;
        }
    }
    let lost: Vec<_> = raised
        .into_iter()
        .filter(|b| !held_alerts.contains(&(b.record, b.at_ms)))
        .inspect(|b| {
            warn!(
                record = b.seq,
                "a raised block's alert anchor was lost; queueing it again"
            )
        })
        .collect();
    queue_alert_anchors(member, &genesis, &lost)?;
    if let Some(e) = failed.or(unread) {
        return Err(e);
    }
    info!(
        alert_anchors_requeued = lost.len(),
        "looked for anchors lost between a seal and the outbox"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_hosts_are_host_names_as_browsers_send_them() {
        assert_eq!(
            console_host("Monitor.Hospital.Example:8088").unwrap(),
            "monitor.hospital.example:8088"
        );
        assert!(console_host("monitor.hospital.example").is_ok());
        for bad in [
            "",
            "https://monitor.example",
            "monitor.example.",
            "monitor.example:0",
            "monitor.example:http",
            "monitor.example/console",
        ] {
            assert!(console_host(bad).is_err(), "{bad:?}");
        }
    }

    /// `docs/monitor-openapi.json` names exactly the routes the monitor serves.
    #[test]
    fn the_openapi_file_documents_every_route_and_no_other() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/monitor-openapi.json")).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let served: std::collections::BTreeSet<(String, String)> = api_routes()
            .into_iter()
            .chain(fhir_routes())
            .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_monitor_runs_without_huge_pages() {
        no_huge_page_stalls();
        assert!(matches!(
            rustix::thread::transparent_huge_pages_are_disabled(),
            Ok(true)
        ));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        // Kernels since 6.x also say so in the process's status.
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert!(line.ends_with('0'), "{line}");
        }
    }

    fn alert(seq: u64, user: &str, hour: u64, score: Option<f32>, verdict: Verdict) -> AlertView {
        AlertView {
            seq,
            user: user.into(),
            patient: "p".into(),
            time_ms: 1_767_571_200_000 + hour * 3_600_000,
            verdict,
            reasons: Vec::new(),
            explanation: String::new(),
            score,
            threshold: score.map(|_| 0.5),
            acknowledged_by: None,
            standing: Standing::Unexplained,
        }
    }

    #[test]
    fn cases_group_a_users_day_and_rank_by_evidence_newest_day_first() {
        let alerts = [
            alert(1, "ann", 9, Some(0.6), Verdict::Alert),
            alert(2, "bob", 10, Some(4.0), Verdict::Deny),
            alert(3, "ann", 11, Some(0.6), Verdict::Alert),
            // Break-the-glass: listed, no evidence.
            alert(4, "cat", 12, None, Verdict::Alert),
            // The next UTC day.
            alert(5, "ann", 25, Some(0.7), Verdict::Alert),
            // Far above the line, but on a patient whose care team Dan is on, or in a
            // declared emergency: listed, no evidence.
            AlertView {
                standing: Standing::CareTeam,
                ..alert(6, "dan", 13, Some(4.0), Verdict::Alert)
            },
            AlertView {
                standing: Standing::BreakGlass,
                ..alert(7, "dan", 14, Some(4.0), Verdict::Alert)
            },
        ];
        let mut book = CaseBook::new(CaseRules::default(), CASE_DAYS);
        for a in &alerts {
            if let (Some(s), Some(t)) = (a.score, a.threshold) {
                let _ = book.file(&a.user, a.time_ms, s, t, a.standing);
            }
            if a.standing == Standing::BreakGlass {
                let _ = book.note(Review::BreakGlass, &a.user, a.time_ms, a.seq);
            }
        }
        // Bob's day has gone from the list: the book still ranks it. An alert still listed
        // from before the book's days makes no case (it is in `/v1/alerts`).
        let old = AlertView {
            time_ms: 1_767_571_200_000 - 20 * medfl_accesslog::time::DAY_MS,
            ..alert(0, "eve", 9, Some(4.0), Verdict::Alert)
        };
        let listed: Vec<&AlertView> = std::iter::once(&old)
            .chain(alerts.iter().filter(|a| a.user != "bob"))
            .collect();
        let held = (book.oldest_window(), medfl_accesslog::time::DAY_MS);
        let cases = cases_of(book.ranked(), held, listed, Some(1));
        let order: Vec<(&str, &str, usize)> = cases
            .iter()
            .map(|c| (c.day.as_str(), c.user.as_str(), c.alerts))
            .collect();
        assert_eq!(
            order,
            [
                ("2026-01-06", "ann", 1),
                ("2026-01-05", "bob", 0),
                ("2026-01-05", "ann", 2),
                ("2026-01-05", "dan", 2),
                ("2026-01-05", "cat", 1),
            ]
        );
        let ranks: Vec<(Option<usize>, bool, usize)> = cases
            .iter()
            .map(|c| (c.rank, c.reviewed, c.model_alerts))
            .collect();
        assert_eq!(
            ranks,
            [
                (Some(1), true, 1),
                (Some(1), true, 1),
                (Some(2), false, 2),
                (None, false, 2),
                (None, false, 0),
            ]
        );
        assert_eq!((cases[1].first_ms, cases[1].records.len()), (None, 0));
        assert!((cases[1].evidence - 8f64.ln()).abs() < 1e-6);
        assert!((cases[2].evidence - 2.0 * 1.2f64.ln()).abs() < 1e-6);
        // Ann's second day carries in half of her first day's evidence.
        assert!((cases[0].carried - 1.2f64.ln()).abs() < 1e-6);
        assert_eq!(cases[2].carried, 0.0);
        assert_eq!(cases[2].records, [1, 3]);
        assert_eq!((cases[3].evidence, cases[3].top_score), (0.0, Some(4.0)));
        assert_eq!(cases[4].evidence, 0.0);
        assert_eq!(cases[4].top_score, None);
        // Dan's emergency is the other queue's, with its listed alert.
        let noted = book
            .noted(Review::BreakGlass)
            .map(|(w, u, n)| (w, u.clone(), n.clone()))
            .collect();
        let emergencies = noted_of(noted, medfl_accesslog::time::DAY_MS);
        let got: Vec<(&str, &str, u64, usize, &[u64])> = emergencies
            .iter()
            .map(|e| {
                (
                    e.day.as_str(),
                    e.user.as_str(),
                    e.accesses,
                    e.open,
                    &e.records[..],
                )
            })
            .collect();
        assert_eq!(got, [("2026-01-05", "dan", 1, 1, &[7u64][..])]);
    }

    /// A user-day past the review's cap shows its held accesses one by one and counts the rest.
    #[test]
    fn a_noted_day_lists_what_it_holds_and_counts_the_rest() {
        let noted = |record, reviewed| Noted { record, reviewed };
        let day = NotedDay {
            held: vec![noted(9, false), noted(4, true), noted(6, false)],
            beyond: 3,
        };
        let views = noted_of(vec![(0, "eve".into(), day)], medfl_accesslog::time::DAY_MS);
        let v = &views[0];
        assert_eq!((v.accesses, v.open, v.unheld), (6, 2, 3));
        assert_eq!(
            (&v.records[..], &v.open_records[..]),
            (&[4, 6, 9][..], &[6, 9][..])
        );
    }
}
