//! Replays a simulated hospital's week, attacks included, through `medfl monitor` as the EHR's
//! own plain `AuditEvent`s (no medfl extension: the flags come from the hospital's context
//! feeds), once over HTTP (FHIR batch Bundles) and once over syslog (IHE ATNA, RFC 5424 on one
//! TCP connection), and sets each path's per-attack detection beside `medfl eval`'s offline
//! figures for the same model and stream. Run with
//! `cargo run --release --example monitor_replay`.
//!
//! The monitors run with `--replay` (their clock follows the accesses' times), since the week
//! is older than the day a live monitor accepts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use medfl::daemon::{self, InsecureKeys};
use medfl_accesslog::{AttackKind, OnError};
use medfl_model::evaluate::{Evaluation, evaluate};
use medfl_monitor::Verdict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/monitor_setup.rs"]
mod monitor_setup;

/// Events per FHIR Bundle.
const BUNDLE: usize = 500;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!("setting up: a week of one hospital's log, a model trained on it ...");
    let setup = monitor_setup::setup(dir.path(), 20)?;
    let member = setup
        .config
        .parent()
        .context("the config has a folder")?
        .to_owned();
    let model = member.join("models/current.model");

    // Offline: what `medfl eval` says of the model on this stream.
    let csv = setup.log_dir.join("events.csv");
    let labels_csv = setup.log_dir.join("labels.csv");
    let ds = medfl::data::load(&csv, None, Some(&labels_csv), None, OnError::Reject)?;
    let offline: serde_json::Value =
        serde_json::from_str(&medfl::standalone::eval(&ds, &model, true)?)?;
    let offline: Evaluation = serde_json::from_value(offline["evaluation"].clone())
        .context("medfl eval gave no evaluation")?;
    let text = std::fs::read_to_string(&labels_csv)?;
    let labels: Vec<Option<AttackKind>> =
        medfl_accesslog::csv::read_labels(text.as_bytes(), OnError::Reject)?
            .records
            .into_iter()
            .map(|l| l.attack)
            .collect();

    // The stream as the EHR writes it.
    let mut buf = Vec::new();
    medfl_accesslog::fhir::write_audit_events(&mut buf, &setup.events)?;
    let plain: Vec<serde_json::Value> = String::from_utf8(buf)?
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("extension");
                o.remove("id");
            }
            if let Some(a) = v["agent"][0].as_object_mut() {
                a.remove("role");
            }
            Ok(v)
        })
        .collect::<Result<_>>()?;
    let n = plain.len();

    // Two monitors, one per path, each on its own copy of the member's folder.
    let cons = member.parent().context("the member has a consortium")?;
    let copy = dir.path().join("cons-syslog");
    copy_tree(cons, &copy)?;
    let member2 = copy.join(member.file_name().context("member folder")?);
    let http_port = free_port()?;
    let (port2, syslog_port) = (free_port()?, free_port()?);
    start(&setup.config, http_port, None).await?;
    start(&member2.join("config.toml"), port2, Some(syslog_port)).await?;

    eprintln!("replaying {n} accesses over HTTP (FHIR batch Bundles of {BUNDLE}) ...");
    let t = Instant::now();
    for chunk in plain.chunks(BUNDLE) {
        let entry: Vec<serde_json::Value> = chunk
            .iter()
            .map(|r| serde_json::json!({"resource": r, "request": {"method": "POST", "url": "AuditEvent"}}))
            .collect();
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": entry});
        let (status, body) = post(http_port, "/fhir", &serde_json::to_vec(&bundle)?).await?;
        if status != 200 || body.contains("\"400 ") {
            bail!(
                "a Bundle was refused ({status}): {}",
                body.chars().take(600).collect::<String>()
            );
        }
    }
    let http_s = t.elapsed().as_secs_f64();

    eprintln!("replaying {n} accesses over syslog (one TCP connection) ...");
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", syslog_port)).await?;
    let mut frames = Vec::new();
    for v in &plain {
        let msg = format!("<110>1 - ehr medfl-replay - - - {v}");
        frames.extend_from_slice(format!("{} {msg}", msg.len()).as_bytes());
    }
    s.write_all(&frames).await?;
    wait_for(port2, n).await?;
    let syslog_s = t.elapsed().as_secs_f64();
    drop(s);

    let (http_scores, http_detector, http_verdicts) = logged(&member)?;
    let (syslog_scores, syslog_detector, syslog_verdicts) = logged(&member2)?;
    if http_scores.len() != n || syslog_scores.len() != n {
        bail!(
            "{} and {} decisions logged for {n} accesses",
            http_scores.len(),
            syslog_scores.len()
        );
    }
    let threshold = offline.threshold;
    let over_http = evaluate(&http_detector, &http_scores, &labels, threshold)?;
    let over_syslog = evaluate(&syslog_detector, &syslog_scores, &labels, threshold)?;
    let same = http_scores
        .iter()
        .zip(&syslog_scores)
        .filter(|(a, b)| a.to_bits() == b.to_bits())
        .count();
    let same_verdicts = http_verdicts
        .iter()
        .zip(&syslog_verdicts)
        .filter(|(a, b)| a == b)
        .count();

    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let acted = |verdicts: &[Verdict], kind: Option<AttackKind>| {
        let (mut hit, mut all) = (0usize, 0usize);
        for (v, l) in verdicts.iter().zip(&labels) {
            if *l == kind {
                all += 1;
                hit += usize::from(*v != Verdict::Allow);
            }
        }
        hit as f64 / all.max(1) as f64
    };
    let mut rows = Vec::new();
    for (i, row) in offline.per_attack.iter().enumerate() {
        let (h, s) = (&over_http.per_attack[i], &over_syslog.per_attack[i]);
        rows.push(vec![
            row.attack.to_string(),
            row.events.to_string(),
            pct(row.recall),
            pct(h.recall),
            pct(s.recall),
            pct(acted(&http_verdicts, Some(row.attack))),
            pct(acted(&syslog_verdicts, Some(row.attack))),
        ]);
    }
    rows.push(vec![
        "normal (false positives)".into(),
        (offline.events - offline.attacks).to_string(),
        pct(offline.fpr),
        pct(over_http.fpr),
        pct(over_syslog.fpr),
        pct(acted(&http_verdicts, None)),
        pct(acted(&syslog_verdicts, None)),
    ]);
    println!(
        "{} accesses ({} attack), model threshold {threshold:.4}\n",
        offline.events, offline.attacks
    );
    print!(
        "{}",
        medfl::report::table(
            &[
                "events",
                "n",
                "offline eval",
                "HTTP (FHIR)",
                "syslog (ATNA)",
                "HTTP alerted/denied",
                "syslog alerted/denied",
            ],
            &rows
        )
    );
    println!(
        "\nHTTP vs syslog: scores equal bit for bit {same} of {n}, verdicts equal \
         {same_verdicts} of {n}.\ndetection columns count score > threshold and the role \
         policy's alerts, as `medfl eval` does (the monitor's from its logged reasons); \
         alerted/denied is the monitor's verdict, which adds break-the-glass, the consent rules \
         and blocks (no officer reviews during a replay, so a blocked user stays denied)"
    );
    println!(
        "replay speed: HTTP {:.0} accesses/s, syslog {:.0} accesses/s (each durably logged)",
        n as f64 / http_s,
        n as f64 / syslog_s
    );
    let equal = offline
        .per_attack
        .iter()
        .zip(&over_http.per_attack)
        .zip(&over_syslog.per_attack)
        .all(|((o, h), s)| o.recall == h.recall && o.recall == s.recall)
        && offline.fpr == over_http.fpr
        && offline.fpr == over_syslog.fpr;
    if !equal || same != n || same_verdicts != n {
        bail!("the monitor's detection differs from the offline evaluation");
    }
    println!("every rate equals the offline evaluation's");
    Ok(())
}

/// Starts a replaying monitor in this process and waits until it listens.
async fn start(config: &Path, port: u16, syslog: Option<u16>) -> Result<()> {
    let opts = daemon::monitor::Options {
        listen: format!("127.0.0.1:{port}").parse()?,
        syslog: syslog
            .map(|p| format!("127.0.0.1:{p}").parse())
            .transpose()?,
        replay: true,
        header_timeout: Duration::from_secs(10),
        seal_every: Duration::from_secs(3600),
        insecure_keys: InsecureKeys::Allow,
        tls: None,
        console_hosts: Vec::new(),
    };
    let config = config.to_owned();
    tokio::spawn(async move {
        if let Err(e) = daemon::monitor::run(&config, opts).await {
            eprintln!("monitor: {e:#}");
        }
    });
    for _ in 0..200 {
        if let Ok((200, health)) = get(port, "/healthz").await
            && health.contains("\"staff\"")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the monitor on port {port} did not come up with its context feeds")
}

/// The scores and verdicts a monitor logged, in order.
/// The logged decisions' scores, their detector scores (the role policy's alerts at +inf, as
/// `medfl eval` judges them) and verdicts.
fn logged(member: &Path) -> Result<(Vec<f32>, Vec<f32>, Vec<Verdict>)> {
    let (_copy, log) = daemon::monitor::open_copy_of(&daemon::monitor::audit_file(member, true))?;
    let (mut scores, mut detector, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
    for r in log.records(0, usize::MAX)? {
        if let Some((_, decision)) = r.body.decision() {
            let score = decision.score.context("a decision without a model")?;
            scores.push(score);
            // The monitor's own word: the role policy is among its reasons.
            let by_policy = decision
                .reasons
                .iter()
                .any(|r| r.starts_with("role policy"));
            detector.push(if by_policy { f32::INFINITY } else { score });
            verdicts.push(decision.verdict);
        }
    }
    Ok((scores, detector, verdicts))
}

async fn wait_for(port: u16, n: usize) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(600);
    while Instant::now() < end {
        let (_, health) = get(port, "/healthz").await?;
        let v: serde_json::Value = serde_json::from_str(&health)?;
        if v["records"].as_u64() == Some(n as u64) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the syslog replay did not finish")
}

async fn request(port: u16, head: String, body: &[u8]) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    ))
}

async fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    request(port, head, b"").await
}

async fn post(port: u16, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(port, head, body).await
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
