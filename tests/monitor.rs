//! `medfl monitor` as a process on 127.0.0.1: decisions over HTTP, bad input refused with a
//! clear 4xx and nothing logged, a SIGKILL losing no answered decision, and `medfl audit`
//! verifying and reading the log it left.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Proc, free_port, ok, p};
use medfl_accesslog::AccessEvent;
use medfl_monitor::AccessRequest;

/// One HTTP/1.1 exchange; returns the status and the body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(port, method, path, "", body)
}

/// [`http`] with extra header lines (each ending in CRLF).
fn http_with(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body and close: a failed write is fine.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn start(config: &Path, port: u16, log: PathBuf) -> Proc {
    start_with(config, port, log, &[])
}

/// [`start`] with more command-line arguments.
fn start_with(config: &Path, port: u16, log: PathBuf, extra: &[&str]) -> Proc {
    let log_file = log.clone();
    let child = Command::new(env!("CARGO_BIN_EXE_medfl"))
        .args([
            "monitor",
            "--allow-insecure-keys",
            "--config",
            p(config),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--seal-every-s",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    // Owned at once: killed and waited for however the test ends.
    let proc = Proc(child);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return proc;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the monitor did not listen: {}",
        fs::read_to_string(&log_file).unwrap_or_default()
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A provisioned one-hospital consortium, a log for the hospital, and a monitor model trained on it.
fn setup(dir: &Path) -> (PathBuf, Vec<AccessEvent>) {
    let plan = "name = \"t\"\ncreated_at = \"2026-11-01T00:00:00Z\"\nquorum = 1\n\n[[members]]\nid = \"coordinator\"\nrole = \"coordinator\"\naddress = \"/ip4/127.0.0.1/tcp/1\"\n\n[[members]]\nid = \"h-a\"\nrole = \"hospital\"\n\n[[agreements]]\nid = \"dua\"\npurpose = \"t\"\nmembers = [\"h-a\"]\nexpires_at = \"2030-01-01T00:00:00Z\"\nepsilon = 5.0\ndelta = 1e-6\n";
    let cons = common::provision(dir, plan, 5);
    let scenario = dir.join("small.toml");
    let full = medfl_simulations::scenario::DEFAULT_TOML;
    let second = full.match_indices("[[hospital]]").nth(1).unwrap().0;
    fs::write(&scenario, full[..second].replace("days = 21", "days = 7")).unwrap();
    let logs = dir.join("logs");
    ok(&["logs", "--scenario", p(&scenario), "--out", p(&logs)]);
    let events_csv = logs.join("rural-clinic/events.csv");
    let models = cons.join("h-a/models");
    fs::create_dir_all(&models).unwrap();
    // Held out with its labels, as a hospital holds out audited traffic: the role policy's
    // share of it is then the coders' reading, not the log's own role-misuse attacks.
    ok(&[
        "train",
        "--data",
        p(&events_csv),
        "--labels",
        p(&logs.join("rural-clinic/labels.csv")),
        "--out",
        p(&models.join("current.model")),
        "--epochs",
        "1",
    ]);
    let text = fs::read_to_string(&events_csv).unwrap();
    let events =
        medfl_accesslog::csv::read_events(text.as_bytes(), medfl_accesslog::OnError::Reject)
            .unwrap()
            .records;
    (cons.join("h-a/config.toml"), events)
}

#[test]
fn decisions_are_logged_durably_bad_input_is_refused_and_the_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = setup(dir.path());
    let port = free_port();
    let mut monitor = start(&config, port, dir.path().join("monitor-1.log"));
    // The log's last 150 events, shifted to end now (the monitor refuses far-off times).
    let events: Vec<AccessEvent> = events[events.len() - 150..].to_vec();
    let shift = now_ms() - events.last().unwrap().time_ms;
    let mut answered = 0u64;
    let mut verdicts = std::collections::BTreeMap::new();
    for e in &events {
        let mut r = AccessRequest::from_event(e);
        r.time_ms += shift;
        let (status, body) = http(port, "POST", "/v1/access", &serde_json::to_vec(&r).unwrap());
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["record"].as_u64(), Some(answered), "{body}");
        assert!(v["score"].as_f64().is_some(), "the model scored it: {body}");
        assert!(v["model"].as_str().is_some(), "{body}");
        *verdicts
            .entry(v["verdict"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
        answered += 1;
    }
    assert!(verdicts.contains_key("allow"), "{verdicts:?}");

    // Bad input: a clear 4xx, nothing logged.
    let good = serde_json::to_value(AccessRequest::from_event(&events[0])).unwrap();
    let mut unknown = good.clone();
    unknown["break_glas"] = serde_json::Value::Bool(true);
    let mut empty = good.clone();
    empty["patient"] = serde_json::Value::from("");
    let mut future = good.clone();
    future["time_ms"] = serde_json::Value::from(now_ms() + 10 * 86_400_000);
    for (body, needle) in [
        (b"{not json".to_vec(), "invalid request"),
        (serde_json::to_vec(&unknown).unwrap(), "unknown field"),
        (serde_json::to_vec(&empty).unwrap(), "patient"),
        (
            serde_json::to_vec(&future).unwrap(),
            "after the monitor's clock",
        ),
        (vec![0xff, 0xfe, 0x00], "invalid request"),
    ] {
        let (status, text) = http(port, "POST", "/v1/access", &body);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let (status, _) = http(port, "POST", "/v1/access", &vec![b' '; 10 * 1024 * 1024]);
    assert_eq!(status, 413);
    let (status, health) = http(port, "GET", "/healthz", b"");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["records"].as_u64(), Some(answered), "{health}");

    // Lifting a block takes a security officer's token.
    let token = officer_token(&config, &["--officer", "sec-1"]);
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token}");
    let lift = br#"{"user": "nobody", "note": "checked"}"#;
    let (status, text) = http(port, "POST", "/v1/unblock", lift);
    assert_eq!(status, 401, "{text}");
    let wrong = format!("Authorization: Bearer {}\r\n", "0".repeat(64));
    let (status, _) = http_with(port, "POST", "/v1/unblock", &wrong, lift);
    assert_eq!(status, 401);
    let right = format!("Authorization: Bearer {token}\r\n");
    let (status, text) = http_with(port, "POST", "/v1/unblock", &right, lift);
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("not blocked"), "{text}");
    let (_, health) = http(port, "GET", "/healthz", b"");
    assert!(
        health.contains(&format!("\"records\":{answered}")),
        "nothing logged: {health}"
    );

    // Alerts are for officers and auditors; an auditor reads and streams, only an officer acts.
    let auditor = officer_token(&config, &["--officer", "aud-1", "--role", "auditor"]);
    let auditor = format!("Authorization: Bearer {}\r\n", auditor.trim());
    let (status, _) = http(port, "GET", "/v1/alerts", b"");
    assert_eq!(status, 401);
    let (status, text) = http_with(port, "GET", "/v1/alerts", &auditor, b"");
    assert_eq!(status, 200, "{text}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("GET /v1/alerts/stream HTTP/1.1\r\nHost: x\r\n{auditor}\r\n").as_bytes())
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    // Break-the-glass is always alerted: the stream carries it as it is logged.
    let mut btg = AccessRequest::from_event(&events[0]);
    btg.time_ms = now_ms();
    btg.patient = "p-emergency".into();
    btg.break_glass = true;
    let (status, body) = http(
        port,
        "POST",
        "/v1/access",
        &serde_json::to_vec(&btg).unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let alert_record = answered;
    answered += 1;
    while !seen.contains(&format!("id: {alert_record}")) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("event: alert"), "{seen}");
    assert!(seen.contains("p-emergency"), "{seen}");
    // Its standing says why its case gains no evidence from it.
    assert!(seen.contains(r#""standing":"break_glass""#), "{seen}");
    let (status, _) = http(port, "GET", "/v1/alerts/stream", b"");
    assert_eq!(status, 401, "a stream needs a token");
    let (status, text) = http_with(port, "POST", "/v1/unblock", &auditor, lift);
    assert_eq!(status, 403, "an auditor cannot lift a block: {text}");
    let ack = format!("/v1/alerts/{alert_record}/ack");
    let note = br#"{"note": "emergency confirmed with the ward"}"#;
    let (status, text) = http_with(port, "POST", &ack, &auditor, note);
    assert_eq!(status, 403, "{text}");
    let (status, text) = http_with(port, "POST", &ack, &right, note);
    assert_eq!(status, 200, "{text}");
    // Every console open sees the acknowledgement as it is logged.
    let review = answered;
    answered += 1;
    while !seen.contains(&format!("id: {review}")) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("event: acknowledged"), "{seen}");
    assert!(
        seen.contains(&format!("\"alert\":{alert_record}"))
            && seen.contains("\"officer\":\"sec-1\""),
        "{seen}"
    );
    drop(stream);
    let (status, text) = http_with(port, "POST", &ack, &right, note);
    assert_eq!(status, 409, "{text}");
    let (_, text) = http_with(port, "GET", "/v1/alerts", &auditor, b"");
    assert!(text.contains("\"acknowledged_by\":\"sec-1\""), "{text}");
    // The same alerts as cases, one per user and day: every alert in exactly one case, and
    // the acknowledged one no longer open.
    let alerts: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut listed: Vec<u64> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    let (status, _) = http(port, "GET", "/v1/cases", b"");
    assert_eq!(status, 401);
    let (status, text) = http_with(port, "GET", "/v1/cases", &auditor, b"");
    assert_eq!(status, 200, "{text}");
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{text}");
    let mut in_cases: Vec<u64> = cases
        .iter()
        .flat_map(|c| {
            c["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_u64().unwrap())
        })
        .collect();
    listed.sort_unstable();
    in_cases.sort_unstable();
    assert_eq!(listed, in_cases);
    let with_ack = cases
        .iter()
        .find(|c| {
            c["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_u64() == Some(alert_record))
        })
        .unwrap();
    assert!(
        with_ack["open"].as_u64().unwrap() < with_ack["alerts"].as_u64().unwrap(),
        "{with_ack}"
    );
    // A revoked token is refused at once.
    let out = officer_token(&config, &["--officer", "aud-1", "--revoke"]);
    assert!(out.contains("1 token(s) of aud-1 revoked"), "{out}");
    let (status, _) = http_with(port, "GET", "/v1/alerts", &auditor, b"");
    assert_eq!(status, 401);
    // An expired token is refused.
    let officers = config.parent().unwrap().join("monitor/officers");
    let listed = fs::read_to_string(&officers).unwrap();
    let expired: String = listed
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("{} {} 1 {}\n", f[0], f[1], f[3])
        })
        .collect();
    fs::write(&officers, expired).unwrap();
    let (status, text) = http_with(port, "POST", &ack, &right, note);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("expired"), "{text}");
    let (_, health) = http(port, "GET", "/healthz", b"");
    assert!(
        health.contains(&format!("\"records\":{answered}")),
        "the alert and its review logged, nothing else: {health}"
    );

    // Killed without warning: every answered decision is on disk, and the monitor goes on.
    let _ = monitor.0.kill();
    let _ = monitor.0.wait();
    let monitor = start(&config, port, dir.path().join("monitor-2.log"));
    let (_, health) = http(port, "GET", "/healthz", b"");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["records"].as_u64(), Some(answered), "{health}");
    // Wait for a sealed batch and its anchor in the hospital's outbox.
    let outbox = config.parent().unwrap().join("outbox");
    let end = Instant::now() + Duration::from_secs(30);
    while fs::read_dir(&outbox).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < end, "no audit anchor was queued");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(monitor);

    let out = medfl_audit(&config, &["verify"]);
    assert!(out.contains(&format!("{answered} records")), "{out}");
    let patient = &events[0].patient;
    let expected = events.iter().filter(|e| &e.patient == patient).count();
    let out = medfl_audit(&config, &["history", "--patient", patient]);
    assert!(
        out.starts_with(&format!(
            "{expected} accesses to the record of patient {patient}"
        )),
        "{out}"
    );
}

/// The last `n` events of the log, shifted to end now (the monitor refuses far-off times).
fn recent(events: &[AccessEvent], n: usize) -> Vec<AccessEvent> {
    let mut out = events[events.len() - n..].to_vec();
    let shift = now_ms() - out.last().unwrap().time_ms;
    for e in &mut out {
        e.time_ms += shift;
    }
    out
}

/// Each event as an EHR writes its `AuditEvent`: no medfl extension, no medfl role code, no id
/// (the server assigns one).
fn plain_audit_events(events: &[AccessEvent]) -> Vec<serde_json::Value> {
    let mut buf = Vec::new();
    medfl_accesslog::fhir::write_audit_events(&mut buf, events).unwrap();
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("extension");
            o.remove("id");
            o["agent"][0].as_object_mut().unwrap().remove("role");
            v
        })
        .collect()
}

fn records(port: u16) -> u64 {
    let (_, health) = http(port, "GET", "/healthz", b"");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    health["records"].as_u64().unwrap()
}

fn wait_for_records(port: u16, n: u64) {
    let end = Instant::now() + Duration::from_secs(60);
    while records(port) < n {
        assert!(
            Instant::now() < end,
            "only {} of {n} records",
            records(port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(records(port), n);
}

/// The decisions in a stopped monitor's audit log, in order.
fn logged_decisions(config: &Path) -> Vec<(AccessRequest, medfl_monitor::Decision)> {
    let file = config.parent().unwrap().join("monitor/audit.redb");
    let log = medfl_monitor::AuditLog::open(&file).unwrap();
    log.records(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            r.body
                .decision()
                .map(|(request, decision)| (request.clone(), decision.clone()))
        })
        .collect()
}

/// The EHR's own feed: plain FHIR `AuditEvent`s, posted by a FHIR client library and sent by
/// util-linux `logger` over syslog (both framings), completed from the hospital's context
/// feeds, are decided exactly as the same accesses sent with every flag through `/v1/access`;
/// what cannot be read gets an `OperationOutcome` (or is counted, over syslog) and nothing is
/// logged for it.
#[test]
fn the_ehrs_own_audit_feed_over_fhir_and_syslog_is_decided_as_the_json_api_decides() {
    let python_ok = Command::new("python3")
        .args(["-c", "import fhirclient"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python_ok,
        "this test drives the monitor with the fhirclient library: pip install fhirclient \
         (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = setup(dir.path());
    let member = config.parent().unwrap().to_owned();
    let stream = recent(&events, 120);
    let port = free_port();

    // The reference run: every access with its flags, through the JSON API.
    let monitor = start(&config, port, dir.path().join("monitor-json.log"));
    for e in &stream {
        let r = AccessRequest::from_event(e);
        let (status, body) = http(port, "POST", "/v1/access", &serde_json::to_vec(&r).unwrap());
        assert_eq!(status, 200, "{body}");
    }
    drop(monitor);
    let reference = logged_decisions(&config);
    assert_eq!(reference.len(), stream.len());
    // A fresh log for the second run.
    fs::remove_file(member.join("monitor/audit.redb")).unwrap();

    // The same accesses as the EHR's plain AuditEvents: without the context feeds they
    // cannot be judged; with them, the first half comes from the FHIR client, the rest over
    // syslog.
    let syslog_port = free_port();
    let monitor = start_with(
        &config,
        port,
        dir.path().join("monitor-feed.log"),
        &[
            "--syslog",
            &format!("127.0.0.1:{syslog_port}"),
            "--header-timeout-s",
            "1",
        ],
    );
    // A client trickling a request's head (slow loris) is cut off at the header timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let cut = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "the half-sent request was held {:?}",
        cut.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "{rest:?}"
    );
    let plain = plain_audit_events(&stream);
    let one = serde_json::to_vec(&plain[0]).unwrap();
    let (status, body) = http_with(port, "POST", "/fhir/AuditEvent", "", &one);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("OperationOutcome") && body.contains("no role"),
        "{body}"
    );
    copy_dir(
        &dir.path().join("logs/rural-clinic/context"),
        &member.join("context"),
    );
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = http(port, "GET", "/healthz", b"");
        if health.contains("\"staff\"") {
            break;
        }
        assert!(
            Instant::now() < end,
            "the context feeds were not picked up: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(records(port), 0, "nothing logged for the refused event");
    // With a staff directory and a patient list, an unknown user or patient is bad input.
    for (field, value, says) in [
        ("user", "u-ghost", "unknown user"),
        ("patient", "p-ghost", "unknown patient"),
    ] {
        let mut r = serde_json::to_value(AccessRequest::from_event(&stream[0])).unwrap();
        r[field] = value.into();
        let (status, body) = http(port, "POST", "/v1/access", &serde_json::to_vec(&r).unwrap());
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(says), "{body}");
    }
    assert_eq!(records(port), 0, "nothing logged for the refused requests");

    let half = stream.len() / 2;
    let feed = dir.path().join("feed.ndjson");
    let lines: Vec<String> = plain.iter().map(|v| v.to_string()).collect();
    fs::write(&feed, lines[..half].join("\n")).unwrap();
    let mut unknown = plain[0].clone();
    unknown["agent"][0]["who"]["identifier"]["value"] = "u-not-on-staff".into();
    let unknown_file = dir.path().join("unknown.json");
    fs::write(&unknown_file, unknown.to_string()).unwrap();
    let fhir_client = |args: &[&str]| -> Vec<serde_json::Value> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/fhir_post.py");
        let out = Command::new("python3")
            .arg(p(&script))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let base = format!("http://127.0.0.1:{port}/fhir/");
    let created = fhir_client(&["create", &base, p(&feed)]);
    assert_eq!(created.len(), half);
    for (i, a) in created.iter().enumerate() {
        assert_eq!(a["status"], 201, "{a}");
        assert_eq!(a["location"], format!("AuditEvent/{i}"), "{a}");
        assert_eq!(a["severity"], "information", "{a}");
        assert_eq!(a["verdict"], reference[i].1.verdict.as_str(), "{a}");
    }
    assert_eq!(records(port), half as u64);

    // Over syslog: the first quarter framed by line feeds, the rest octet-counted.
    let quarter = half + (stream.len() - half) / 2;
    // Two connections are two senders with no order between them: the second waits until the
    // first one's events are in.
    for (part, framing, upto) in [
        (&lines[half..quarter], None, quarter),
        (&lines[quarter..], Some("--octet-count"), stream.len()),
    ] {
        send_with_logger(syslog_port, framing.as_slice(), part);
        wait_for_records(port, upto as u64);
    }

    // A non-UTF-8 frame and a frame that is not JSON are refused; the connection goes on.
    let mut s = TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
    s.write_all(b"<13>1 - - - - - - \xff\xfe{}\n<13>1 - - - - - - not json\n")
        .unwrap();
    s.write_all(format!("<13>1 - - - - - - {}\n", lines[0]).as_bytes())
        .unwrap();
    wait_for_records(port, stream.len() as u64 + 1);
    drop(s);

    // Refusals, read back by the FHIR client: an unknown user; a transaction holding one is
    // refused whole, a batch answers entry by entry.
    let answers = fhir_client(&["refusals", &base, p(&feed), p(&unknown_file)]);
    let find = |kind: &str| answers.iter().find(|a| a["kind"] == kind).unwrap();
    let unknown_answer = find("unknown-user");
    assert_eq!(unknown_answer["status"], 400, "{unknown_answer}");
    assert_eq!(unknown_answer["severity"], "error", "{unknown_answer}");
    assert!(
        unknown_answer["diagnostics"]
            .as_str()
            .unwrap()
            .contains("u-not-on-staff"),
        "{unknown_answer}"
    );
    // The transaction was refused whole; the batch decided its two known entries.
    let transaction = find("transaction");
    assert_eq!(transaction["status"], 400, "{transaction}");
    assert_eq!(transaction["expression"][0], "Bundle.entry[1].resource");
    let batch = find("batch");
    assert_eq!(batch["status"], 200, "{batch}");
    assert_eq!(batch["type"], "batch-response");
    let statuses: Vec<&str> = batch["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "400 Bad Request", "201 Created"]);

    // A context file deleted by mistake is not taken as "no VIPs": the previous feeds stay,
    // and the health check says why.
    fs::remove_file(member.join("context/vip.csv")).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = http(port, "GET", "/healthz", b"");
        if health.contains("vip.csv disappeared") {
            assert!(health.contains("\"staff\""), "{health}");
            break;
        }
        assert!(
            Instant::now() < end,
            "the deletion was not noticed: {health}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... and stays refused when another file changes meanwhile.
    let staff = member.join("context/staff.csv");
    let mut listed = fs::read_to_string(&staff).unwrap();
    listed.push_str("u-new-hire,nurse,icu\n");
    fs::write(&staff, listed).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (_, health) = http(port, "GET", "/healthz", b"");
    assert!(health.contains("vip.csv disappeared"), "{health}");

    let (_, metrics) = http(port, "GET", "/metrics", b"");
    for line in [
        "medfl_monitor_refused_total{source=\"syslog\"} 2",
        &format!(
            "medfl_monitor_requests_total{{source=\"syslog\"}} {}",
            stream.len() - half + 1
        ),
        &format!("medfl_monitor_log_records {}", stream.len() + 3),
    ] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
    drop(monitor);

    // Bit for bit: the feed's accesses, completed from the context, are the reference's, and
    // so are their scores and verdicts.
    let mut fed = logged_decisions(&config);
    fed.truncate(stream.len());
    assert_eq!(fed.len(), reference.len());
    for (i, ((want_r, want_d), (got_r, got_d))) in reference.iter().zip(&fed).enumerate() {
        // A break-the-glass AuditEvent declares its purpose, treatment; nothing else does.
        let declared = got_r
            .break_glass
            .then_some(medfl_monitor::request::Purpose::Treatment);
        assert_eq!(got_r.purpose, declared, "purpose {i}");
        let mut got_r = got_r.clone();
        got_r.purpose = None;
        assert_eq!(&got_r, want_r, "request {i}");
        assert_eq!(
            got_d.score.map(f32::to_bits),
            want_d.score.map(f32::to_bits),
            "score {i}"
        );
        assert_eq!(got_d.verdict, want_d.verdict, "verdict {i}");
    }
}

/// Sends `lines` through util-linux `logger` to 127.0.0.1:`port` (TCP, RFC 5424), with
/// `extra` arguments (the framing).
fn send_with_logger(port: u16, extra: &[&str], lines: &[String]) {
    let mut child = Command::new("logger")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--tcp",
            "--rfc5424",
            "--size",
            "65536",
            "--tag",
            "ehr-audit",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .spawn()
        .expect("util-linux logger");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", lines.join("\n")).as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A delivery sent again is decided once: the JSON API's `Idempotency-Key`, a FHIR
/// `AuditEvent`'s own `id` (posted again, alone or in a batch Bundle) and an ATNA message
/// resent over syslog each get the first delivery's record back, and the log holds one record
/// for it, also after the monitor is killed and restarted. The same id naming another access
/// is a new delivery, decided on its own.
#[test]
fn a_delivery_sent_again_is_answered_from_its_first_record_not_decided_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = setup(dir.path());
    let stream = recent(&events, 3);
    let (port, syslog_port) = (free_port(), free_port());
    let syslog = format!("127.0.0.1:{syslog_port}");
    let args = ["--syslog", syslog.as_str()];
    let monitor = start_with(&config, port, dir.path().join("m1.log"), &args);
    let json = |e: &AccessEvent| serde_json::to_vec(&AccessRequest::from_event(e)).unwrap();
    let post = |key: &str, body: &[u8]| {
        let (status, answer) = http_with(
            port,
            "POST",
            "/v1/access",
            &format!("Idempotency-Key: {key}\r\n"),
            body,
        );
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        (v["record"].as_u64().unwrap(), v["verdict"].clone())
    };
    let first = post("\"retry-1\"", &json(&stream[0]));
    assert_eq!(first.0, 0);
    assert_eq!(post("retry-1", &json(&stream[0])), first, "the same answer");
    assert_eq!(records(port), 1, "decided once");
    assert_eq!(post("retry-1", &json(&stream[1])).0, 1, "another access");
    for bad in ["two words", "\"unbalanced"] {
        let (status, body) = http_with(
            port,
            "POST",
            "/v1/access",
            &format!("Idempotency-Key: {bad}\r\n"),
            &json(&stream[0]),
        );
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // The EHR's AuditEvent with its own id: posted, posted again, then inside a batch.
    let mut buf = Vec::new();
    medfl_accesslog::fhir::write_audit_events(&mut buf, &stream[2..3]).unwrap();
    let mut event: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    event["id"] = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f".into();
    let one = serde_json::to_vec(&event).unwrap();
    let (status, a) = http_with(port, "POST", "/fhir/AuditEvent", "", &one);
    assert_eq!(status, 201, "{a}");
    let (status, b) = http_with(port, "POST", "/fhir/AuditEvent", "", &one);
    assert_eq!(status, 201, "{b}");
    assert_eq!(a, b, "the same outcome");
    // A batch: the event again, and a new one twice (its first copy decides it).
    let mut buf = Vec::new();
    medfl_accesslog::fhir::write_audit_events(&mut buf, &stream[1..2]).unwrap();
    let mut fresh: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    fresh["id"] = "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e".into();
    let entry = |r: &serde_json::Value| serde_json::json!({"resource": r, "request": {"method": "POST", "url": "AuditEvent"}});
    let batch = serde_json::json!({"resourceType": "Bundle", "type": "batch",
        "entry": [entry(&event), entry(&fresh), entry(&fresh)]});
    let (status, c) = http_with(
        port,
        "POST",
        "/fhir",
        "",
        &serde_json::to_vec(&batch).unwrap(),
    );
    assert_eq!(status, 200, "{c}");
    let locations: Vec<String> = serde_json::from_str::<serde_json::Value>(&c).unwrap()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["location"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        locations,
        ["AuditEvent/2", "AuditEvent/3", "AuditEvent/3"],
        "{c}"
    );
    assert_eq!(records(port), 4);

    // An ATNA sender resending the same message after a reconnect.
    let line = serde_json::to_string(&event).unwrap();
    send_with_logger(syslog_port, &[], std::slice::from_ref(&line));
    let repeated = |port: u16| {
        let (_, metrics) = http(port, "GET", "/metrics", b"");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("medfl_monitor_repeated_deliveries_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(20);
    while repeated(port) < 5 {
        assert!(Instant::now() < end, "only {} repeats seen", repeated(port));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(records(port), 4, "nothing decided twice");

    // Killed and restarted: the deliveries are still known.
    drop(monitor); // SIGKILL, and waited for
    let _monitor = start_with(&config, port, dir.path().join("m2.log"), &args);
    assert_eq!(post("retry-1", &json(&stream[0])), first);
    let (status, again) = http_with(port, "POST", "/fhir/AuditEvent", "", &one);
    assert_eq!((status, again), (201, a));
    assert_eq!(records(port), 4);
    assert_eq!(repeated(port), 2, "counted since the restart");
}

/// `medfl audit <args>` for the member `config` (test keys allowed); its output.
fn medfl_audit(config: &Path, args: &[&str]) -> String {
    let (command, rest) = args.split_first().unwrap();
    let mut all = vec![
        "audit",
        command,
        "--allow-insecure-keys",
        "--config",
        p(config),
    ];
    all.extend_from_slice(rest);
    ok(&all)
}

/// `medfl officer-token` for the member `config` with `args`; its output.
fn officer_token(config: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "officer-token",
        "--allow-insecure-keys",
        "--config",
        p(config),
    ];
    all.extend_from_slice(args);
    ok(&all)
}

/// `medfl <command>` for the member `config` (test keys allowed), its log in `log`.
fn spawn_medfl(command: &str, config: &Path, log: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_medfl"))
        .args([command, "--allow-insecure-keys", "--config", p(config)])
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc(child)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A hospital whose `config.toml` has a `[monitor]` table gets its access monitor from
/// `medfl client`, in the same process as its agent; `medfl monitor` takes the same table.
#[test]
fn the_client_runs_the_monitor_its_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path());
    let member = config.parent().unwrap();
    fs::create_dir_all(member.join("data")).unwrap();
    fs::copy(
        dir.path().join("logs/rural-clinic/events.csv"),
        member.join("data/events.csv"),
    )
    .unwrap();
    let port = free_port();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[monitor]\nlisten = \"127.0.0.1:{port}\"\nseal_every_s = 5.0\n"
    ));
    fs::write(&config, text).unwrap();
    let wait_health = || {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, body) = http(port, "GET", "/healthz", b"");
                assert_eq!(status, 200, "{body}");
                return body;
            }
            assert!(Instant::now() < end, "no monitor on port {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let client = spawn_medfl("client", &config, &dir.path().join("client.log"));
    let health = wait_health();
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    // It was the client's: stopping the client stops it.
    drop(client);
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < end, "the monitor outlived its client");
        std::thread::sleep(Duration::from_millis(100));
    }
    // `medfl monitor` without --listen serves where the table says.
    let monitor = spawn_medfl("monitor", &config, &dir.path().join("monitor.log"));
    wait_health();
    drop(monitor);
}

/// One exchange with curl over HTTPS, trusting `ca`, showing `client` (certificate, key) if
/// given; returns the status (0 if no TLS session came up) and the body.
fn curl(
    port: u16,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("body");
    fs::write(&data, body).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert", p(ca), "-X", method]);
    cmd.args([
        "-H",
        "Content-Type: application/json",
        "-w",
        "\n%{http_code}",
    ]);
    if !body.is_empty() {
        cmd.args(["--data-binary", &format!("@{}", p(&data))]);
    }
    if let Some((cert, key)) = client {
        cmd.args(["--cert", p(cert), "--key", p(key)]);
    }
    let out = cmd
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// A CA of the hospital's own, a sender certificate it issued, an impostor's self-signed one,
/// and a workstation's the CA issued too (not a listed sender); each written as PEM
/// (certificate, key) into `dir`. Also returns the sender certificate's fingerprint.
fn sender_pki(dir: &Path) -> ([(PathBuf, PathBuf); 4], String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let write = |name: &str, cert: &rcgen::Certificate, key: &KeyPair| {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        fs::write(&c, cert.pem()).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "Hospital audit senders CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let sender = |name: &str| {
        let mut p = CertificateParams::new(vec![format!("{name}.hospital.test")]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        (p, KeyPair::generate().unwrap())
    };
    let (ehr, ehr_key) = sender("ehr");
    let ehr_cert = ehr.signed_by(&ehr_key, &ca_cert, &ca_key).unwrap();
    let (impostor, impostor_key) = sender("ehr");
    let impostor_cert = impostor.self_signed(&impostor_key).unwrap();
    let (workstation, workstation_key) = sender("ws-17");
    let workstation_cert = workstation
        .signed_by(&workstation_key, &ca_cert, &ca_key)
        .unwrap();
    (
        [
            write("senders-ca", &ca_cert, &ca_key),
            write("ehr", &ehr_cert, &ehr_key),
            write("impostor", &impostor_cert, &impostor_key),
            write("workstation", &workstation_cert, &workstation_key),
        ],
        medfl::daemon::monitor::tls::fingerprint(ehr_cert.der()),
    )
}

/// Sends one syslog frame over TLS with Python's `ssl` (OpenSSL), showing `client` if given;
/// returns "open" if the server kept the session open after the frame, else "refused" and
/// why.
fn tls_frame(port: u16, ca: &Path, client: Option<(&Path, &Path)>, frame: &str) -> String {
    let script = r#"
import socket, ssl, sys
port, ca, frame = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
ctx = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 5:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(b"%d %s" % (len(frame), frame))
    s.settimeout(3)
    s.recv(1)
    print("refused: closed after the frame")
except socket.timeout:
    print("open")
except (ssl.SSLError, ConnectionError) as e:
    print("refused", e)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string(), p(ca), frame]);
    if let Some((c, k)) = client {
        cmd.args([p(c), p(k)]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// IHE ATNA over TLS (RFC 5425) from rsyslog, a real syslog daemon, authenticated both ways: it
/// pins the monitor's fingerprint, the monitor checks its certificate against the hospital's
/// CA. A sender without such a certificate (none, an impostor's, or plain TCP) gets no frame
/// in; over HTTPS, reading needs no client certificate and submitting an access does (curl).
#[test]
fn atna_over_tls_from_rsyslog_and_https_intake_need_the_hospitals_client_certificate() {
    assert!(
        Command::new("rsyslogd")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test sends through rsyslog: apt-get install rsyslog rsyslog-gnutls (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = setup(dir.path());
    let member = config.parent().unwrap().to_owned();
    copy_dir(
        &dir.path().join("logs/rural-clinic/context"),
        &member.join("context"),
    );
    let names = ["--name", "localhost", "--name", "127.0.0.1"];
    let made = ok(&[&["tls-cert", "--config", p(&config)][..], &names].concat());
    let fingerprint = made
        .lines()
        .find_map(|l| l.strip_prefix("SHA-256 fingerprint: "))
        .unwrap()
        .to_owned();
    // The identity is never replaced: senders may have pinned it.
    let again = common::fails(&[&["tls-cert", "--config", p(&config)][..], &names].concat());
    assert!(again.contains("exists"), "{again}");
    let monitor_cert = member.join("tls/monitor.crt");
    let (
        [
            (ca, _),
            (ehr, ehr_key),
            (impostor, impostor_key),
            (ws, ws_key),
        ],
        ehr_fingerprint,
    ) = sender_pki(&member.join("tls"));
    let (port, syslog_port) = (free_port(), free_port());
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[monitor]\nlisten = \"127.0.0.1:{port}\"\nsyslog = \"127.0.0.1:{syslog_port}\"\n\
         header_timeout_s = 5\n\n\
         [monitor.tls]\ncert = \"tls/monitor.crt\"\nkey = \"tls/monitor.key\"\n\
         client_ca = \"tls/{}\"\nsenders = [\"{ehr_fingerprint}\"]\n",
        ca.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&config, text).unwrap();
    let _monitor = start(&config, port, dir.path().join("monitor-tls.log"));
    let https = |client, method, path: &str, body: &[u8]| {
        curl(port, &monitor_cert, client, method, path, body)
    };
    let records = || {
        let (status, health) = https(None, "GET", "/healthz", b"");
        assert_eq!(status, 200, "{health}");
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        health["records"].as_u64().unwrap()
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !https(None, "GET", "/healthz", b"").1.contains("\"staff\"") {
        assert!(Instant::now() < end, "the context feeds were not picked up");
        std::thread::sleep(Duration::from_millis(200));
    }

    // HTTPS: plain HTTP gets nothing; an access needs the sender's certificate.
    let (status, _) = http(port, "GET", "/healthz", b"");
    assert_ne!(status, 200);
    let stream = recent(&events, 40);
    let one = serde_json::to_vec(&AccessRequest::from_event(&stream[0])).unwrap();
    let (status, body) = https(None, "POST", "/v1/access", &one);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    let plain = plain_audit_events(&stream);
    let (status, body) = https(
        None,
        "POST",
        "/fhir/AuditEvent",
        plain[0].to_string().as_bytes(),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("OperationOutcome") && body.contains("security"),
        "{body}"
    );
    let (status, body) = https(Some((&impostor, &impostor_key)), "POST", "/v1/access", &one);
    assert_eq!(status, 0, "an impostor's certificate was taken: {body}");
    // A workstation's certificate from the same CA is not a listed sender: it may read only.
    let (status, body) = https(Some((&ws, &ws_key)), "POST", "/v1/access", &one);
    assert_eq!(status, 403, "{body}");
    // Reading alerts still takes an officer's token over HTTPS.
    let (status, body) = https(None, "GET", "/v1/alerts", b"");
    assert_eq!(status, 401, "{body}");
    assert_eq!(records(), 0);
    let (status, body) = https(Some((&ehr, &ehr_key)), "POST", "/v1/access", &one);
    assert_eq!(status, 200, "{body}");
    assert_eq!(records(), 1);

    // Syslog over TLS: no certificate, an impostor's, an unlisted one, or no TLS at all: not
    // one frame in.
    let frame = format!("<110>1 - ehr - - - - {}", plain[1]);
    for client in [
        None,
        Some((impostor.as_path(), impostor_key.as_path())),
        Some((ws.as_path(), ws_key.as_path())),
    ] {
        let said = tls_frame(syslog_port, &monitor_cert, client, &frame);
        assert!(said.starts_with("refused"), "{client:?}: {said}");
    }
    let mut s = TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
    s.write_all(format!("{frame}\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        records(),
        1,
        "a frame got in without the sender's certificate"
    );
    // The positive control: the sender's own certificate gets its frame in.
    let said = tls_frame(syslog_port, &monitor_cert, Some((&ehr, &ehr_key)), &frame);
    assert_eq!(said, "open");
    let end = Instant::now() + Duration::from_secs(10);
    while records() < 2 {
        assert!(Instant::now() < end, "the sender's frame was not decided");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Handshakes that never come, each held for the header timeout (5 s here). Nobody is
    // refused for its address while half the syslog slots (1,024 unless the open-file limit
    // is low) are free; past that, one address holds 32 at most, so the next silent
    // connection is closed at once.
    let gauge = |name: &str| {
        let (_, metrics) = https(None, "GET", "/metrics", b"");
        let line = format!("{name}{{listener=\"syslog\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap()
    };
    let slots = gauge("medfl_monitor_connection_slots");
    assert!(slots >= 64, "{slots} syslog slots");
    let half = slots - slots / 2;
    let mut silent: Vec<TcpStream> = (0..half)
        .map(|_| TcpStream::connect(("127.0.0.1", syslog_port)).unwrap())
        .collect();
    // Connected is not yet accepted: wait for the monitor to hold them all.
    let end = Instant::now() + Duration::from_secs(4);
    while gauge("medfl_monitor_connections") < half {
        assert!(
            Instant::now() < end,
            "only {} held",
            gauge("medfl_monitor_connections")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut extra = TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let got = extra.read(&mut [0u8; 1]).map_err(|e| e.kind());
    assert_eq!(got, Ok(0), "the connection past half the slots was held");
    let held = Instant::now();
    silent[0].set_nonblocking(true).unwrap();
    let still = silent[0].read(&mut [0u8; 1]).map_err(|e| e.kind());
    assert_eq!(
        still,
        Err(std::io::ErrorKind::WouldBlock),
        "not held at all"
    );
    for mut s in silent {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    assert!(
        held.elapsed() < Duration::from_secs(6),
        "{:?}",
        held.elapsed()
    );

    // rsyslog, as an EHR's audit forwarder: logger hands it the events over local TCP; it
    // forwards them over TLS (octet-counted, RFC 5424), pinning the monitor's fingerprint and
    // showing the certificate the hospital's CA issued.
    let relay_port = free_port();
    let work = dir.path().join("rsyslog");
    fs::create_dir_all(&work).unwrap();
    let conf = work.join("rsyslog.conf");
    fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}"
  defaultNetstreamDriverCAFile="{cert}"
  defaultNetstreamDriverCertFile="{ehr}"
  defaultNetstreamDriverKeyFile="{ehr_key}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{relay_port}")
action(type="omfwd" target="127.0.0.1" port="{syslog_port}" protocol="tcp"
  streamDriver="gtls" streamDriverMode="1" streamDriverAuthMode="x509/fingerprint"
  streamDriverPermittedPeers="SHA256:{fingerprint}"
  tcp_framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"#,
            work = p(&work),
            cert = p(&monitor_cert),
            ehr = p(&ehr),
            ehr_key = p(&ehr_key),
        ),
    )
    .unwrap();
    let rsyslog = Command::new("rsyslogd")
        .args(["-n", "-f", p(&conf), "-i", p(&work.join("pid"))])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("rsyslog.log")).unwrap())
        .spawn()
        .unwrap();
    let _rsyslog = Proc(rsyslog);
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", relay_port)).is_err() {
        assert!(Instant::now() < end, "rsyslogd did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines: Vec<String> = plain[2..].iter().map(|v| v.to_string()).collect();
    send_with_logger(relay_port, &["--octet-count"], &lines);
    let end = Instant::now() + Duration::from_secs(60);
    while records() < stream.len() as u64 {
        assert!(
            Instant::now() < end,
            "only {} of {} records; rsyslog said: {}",
            records(),
            stream.len(),
            fs::read_to_string(dir.path().join("rsyslog.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = https(None, "GET", "/metrics", b"");
    let slots = {
        let line = "medfl_monitor_connection_slots{listener=\"syslog\"} ";
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap()
    };
    let half = slots - slots / 2;
    let failures = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("medfl_monitor_tls_handshake_failures_total{listener=\"syslog\"} ")
        })
        .unwrap();
    // Three refused senders, plain TCP, the silent ones and the one over the limit.
    assert_eq!(failures, (3 + 1 + half + 1).to_string(), "{metrics}");
    drop(_monitor);
    let logged = logged_decisions(&config);
    assert_eq!(logged.len(), stream.len());
    for (i, ((request, _), event)) in logged.iter().zip(&stream).enumerate() {
        assert_eq!(
            request,
            &{
                let mut r = AccessRequest::from_event(event);
                r.purpose = request.purpose;
                r
            },
            "request {i}"
        );
    }
}

/// A block the monitor raises is anchored on its own: sealed, its record's hash goes into an
/// `AnchorAlert` transaction in the hospital's outbox, once (the user's later accesses, denied
/// because the block stands, raise none), and the ledger's contract accepts it.
#[test]
fn a_raised_block_gets_an_alert_anchor_of_its_own() {
    use medfl_ledger::TxBody;
    use medfl_model::modelfile::ModelFile;
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = setup(dir.path());
    let member = config.parent().unwrap().to_owned();
    // A threshold this small makes every score block.
    let model = member.join("models/current.model");
    let (mut file, _) = ModelFile::load(&model).unwrap();
    file.threshold = f32::MIN_POSITIVE;
    file.save(&model).unwrap();
    let port = free_port();
    let monitor = start(&config, port, dir.path().join("monitor.log"));
    let stream = recent(&events, 3);
    for e in &stream {
        let mut r = AccessRequest::from_event(e);
        r.user = stream[0].user.clone();
        let (status, body) = http(port, "POST", "/v1/access", &serde_json::to_vec(&r).unwrap());
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"deny\""), "{body}");
    }
    let outbox = member.join("outbox");
    let anchors = || -> Vec<medfl_ledger::Transaction> {
        fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(|f| fs::read(f.ok()?.path()).ok())
                    .filter_map(|b| medfl_ledger::codec::decode(&b).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !anchors()
        .iter()
        .any(|t| matches!(t.body, TxBody::AnchorAlert(_)))
    {
        assert!(Instant::now() < end, "no alert anchor was queued");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(monitor);
    let txs = anchors();
    let alerts: Vec<_> = txs
        .iter()
        .filter_map(|t| match &t.body {
            TxBody::AnchorAlert(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(alerts.len(), 1, "one block, one anchor: {alerts:?}");
    let log = medfl_monitor::AuditLog::open(&member.join("monitor/audit.redb")).unwrap();
    let records = log.records(0, 10).unwrap();
    assert_eq!(records.len(), stream.len());
    // Record 0 raised the block: record 1 links to its hash, which the anchor carries.
    assert_eq!(alerts[0].alert, records[1].prev);
    assert_eq!(alerts[0].severity, medfl_ledger::tx::Severity::Critical);
    assert_eq!(alerts[0].raised_at.0, records[0].at_ms);
    // The contract takes it, as every member's copy would check it in a block.
    let genesis_text = fs::read_to_string(member.join("genesis.toml")).unwrap();
    let genesis = medfl_ledger::Genesis::from_toml(&genesis_text).unwrap();
    let state = medfl_ledger::ChainState::from_genesis(&genesis).unwrap();
    let tx = txs
        .iter()
        .find(|t| matches!(t.body, TxBody::AnchorAlert(_)))
        .unwrap();
    state
        .check_tx(tx, medfl_ledger::Timestamp(now_ms() + 1000))
        .unwrap();

    // An outbox lost after the seal (a crash before the files were written, say): the next
    // start queues the very same transactions again, not new ones.
    let names = |dir: &Path| -> std::collections::BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    drop(log);
    let before = names(&outbox);
    assert!(before.len() >= 2, "{before:?}");
    // A monitor started on the log, stopped once it says it has looked for lost anchors.
    let again = |log: &str, want: &std::collections::BTreeSet<String>| {
        let log = dir.path().join(log);
        let monitor = start(&config, port, log.clone());
        let end = Instant::now() + Duration::from_secs(30);
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("looked for anchors lost between a seal and the outbox")
        {
            assert!(
                Instant::now() < end,
                "the monitor did not look for lost anchors"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(monitor);
        assert_eq!(&names(&outbox), want);
    };
    fs::remove_dir_all(&outbox).unwrap();
    again("monitor-again.log", &before);
    // The alert anchor held under another id (an older version's, signed at another time,
    // and already included): the block is anchored, and nothing is queued for it again.
    let alert_file = txs
        .iter()
        .find(|t| matches!(t.body, TxBody::AnchorAlert(_)))
        .map(|t| format!("{}.tx", t.id().unwrap()))
        .unwrap();
    fs::remove_file(outbox.join(&alert_file)).unwrap();
    let signer = medfl::daemon::Member::load(&config, medfl::daemon::InsecureKeys::Allow).unwrap();
    let older = medfl_ledger::Transaction::sign(
        &signer.genesis.hash().unwrap(),
        signer.config.member.clone(),
        &signer.key,
        medfl_ledger::Timestamp(records[0].at_ms + 5),
        TxBody::AnchorAlert(alerts[0].clone()),
    )
    .unwrap();
    let older_file = format!("{}.included", older.id().unwrap());
    fs::write(
        outbox.join(&older_file),
        medfl_ledger::codec::encode(&older).unwrap(),
    )
    .unwrap();
    let mut want = before.clone();
    want.remove(&alert_file);
    want.insert(older_file);
    again("monitor-third.log", &want);
    let out = medfl_audit(&config, &["verify"]);
    assert!(
        out.contains("1 blocks raised in sealed batches, 0 of them with an alert anchor"),
        "{out}"
    );
}

/// Posts `requests` in order on one keep-alive connection, each answered 200.
fn post_all(port: u16, requests: &[AccessRequest]) {
    use std::io::BufRead;
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answers = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    for r in requests {
        let body = serde_json::to_vec(r).unwrap();
        // One write: a head and a body written apart meet Nagle's algorithm and the
        // server's delayed ACK, 40 ms a request.
        let mut message = format!(
            "POST /v1/access HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(&body);
        out.write_all(&message).unwrap();
        let (mut status, mut length) = (String::new(), 0usize);
        answers.read_line(&mut status).unwrap();
        loop {
            let mut line = String::new();
            answers.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut answer = vec![0; length];
        answers.read_exact(&mut answer).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "{status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// The ranked cases of `GET /v1/cases`, per day: (user, evidence, carried) in rank order.
type Ranked = Vec<(String, String, f64, f64)>;

fn ranked_cases(port: u16, auditor: &str) -> (serde_json::Value, Ranked) {
    let (status, text) = http_with(port, "GET", "/v1/cases", auditor, b"");
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ranked = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["rank"].is_u64())
        .map(|c| {
            (
                c["day"].as_str().unwrap().to_owned(),
                c["user"].as_str().unwrap().to_owned(),
                c["evidence"].as_f64().unwrap(),
                c["carried"].as_f64().unwrap(),
            )
        })
        .collect();
    (v, ranked)
}

/// An officer's queue is the experiments' ranking: three days of a hospital's accesses
/// replayed through `/v1/access`, and every day's cases in `GET /v1/cases` rank, with the
/// same evidence and the same evidence carried in from the day before, as
/// `medfl_model::cases::cases` ranks the logged scores offline; a restart rebuilds the same
/// queue from the audit log, days whose alerts have left the list included.
#[test]
fn the_case_queue_ranks_as_the_experiments_do_and_a_restart_rebuilds_it() {
    use medfl_model::cases::{CaseKey, CaseRules, Standing, cases};
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = setup(dir.path());
    // Three UTC days, so that evidence carries from day to day.
    let day = 86_400_000;
    let from = (events.last().unwrap().time_ms / day - 2) * day;
    let requests: Vec<AccessRequest> = events
        .iter()
        .filter(|e| e.time_ms >= from)
        .map(AccessRequest::from_event)
        .collect();
    let port = free_port();
    let monitor = start_with(
        &config,
        port,
        dir.path().join("monitor-1.log"),
        &["--replay"],
    );
    post_all(port, &requests);
    let auditor = officer_token(&config, &["--officer", "aud-1", "--role", "auditor"]);
    let auditor = format!("Authorization: Bearer {}\r\n", auditor.trim());
    let (listed, live) = ranked_cases(port, &auditor);

    // A flood of alerts pushes the first emergency's alert out of the recent list: it stays
    // in the break-the-glass queue, open, and an officer can still acknowledge it (once).
    let first = listed["break_glass"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let record = first["records"][0].as_u64().unwrap();
    let last = requests.last().unwrap().clone();
    let flood: Vec<AccessRequest> = (0..1001)
        .map(|i| AccessRequest {
            user: "flooder".into(),
            break_glass: true,
            time_ms: last.time_ms + i,
            ..last.clone()
        })
        .collect();
    post_all(port, &flood);
    let (_, text) = http_with(port, "GET", "/v1/alerts", &auditor, b"");
    assert!(
        !text.contains(&format!("\"seq\":{record},")),
        "still listed"
    );
    let open_of = |v: &serde_json::Value| {
        v["break_glass"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["user"] == first["user"] && e["day"] == first["day"])
            .map(|e| e["open"].as_u64().unwrap())
    };
    let (flooded, _) = ranked_cases(port, &auditor);
    assert_eq!(open_of(&flooded), first["open"].as_u64(), "{first}");
    let officer = officer_token(&config, &["--officer", "sec-1"]);
    let officer = format!("Authorization: Bearer {}\r\n", officer.trim());
    let ack = format!("/v1/alerts/{record}/ack");
    let note = br#"{"note": "called the ward: a real emergency"}"#;
    // No one reviews their own alert or lifts their own block, listed or not: an officer
    // named as the EHR user is refused, and nothing is logged.
    let own = |user: &str| {
        let token = officer_token(&config, &["--officer", user]);
        format!("Authorization: Bearer {}\r\n", token.trim())
    };
    let before = records(port);
    let emergency_user = first["user"].as_str().unwrap();
    let (status, text) = http_with(port, "POST", &ack, &own(emergency_user), note);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("own alert"), "{text}");
    let flooder = own("flooder");
    let (_, text) = http_with(port, "GET", "/v1/alerts", &auditor, b"");
    let alerts: serde_json::Value = serde_json::from_str(&text).unwrap();
    let own_listed = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user"] == "flooder")
        .and_then(|a| a["seq"].as_u64())
        .unwrap();
    let own_ack = format!("/v1/alerts/{own_listed}/ack");
    let (status, text) = http_with(port, "POST", &own_ack, &flooder, note);
    assert_eq!(status, 403, "{text}");
    let unblock = br#"{"user": "flooder", "note": "mine"}"#;
    let (status, text) = http_with(port, "POST", "/v1/unblock", &flooder, unblock);
    assert_eq!(status, 403, "{text}");
    assert_eq!(records(port), before, "a refused review was logged");
    // Anyone else may.
    let (status, text) = http_with(port, "POST", &own_ack, &officer, note);
    assert_eq!(status, 200, "{text}");
    let (status, text) = http_with(port, "POST", &ack, &officer, note);
    assert_eq!(status, 200, "{text}");
    let (status, text) = http_with(port, "POST", &ack, &officer, note);
    assert_eq!(status, 409, "{text}");
    let (reviewed, _) = ranked_cases(port, &auditor);
    assert_eq!(
        open_of(&reviewed),
        first["open"].as_u64().map(|n| n - 1),
        "{first}"
    );
    // A role-policy alert is reviewed the same way, in its own queue, listed or not.
    let policy_open = |v: &serde_json::Value| -> u64 {
        v["role_policy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["open"].as_u64().unwrap())
            .sum()
    };
    let policy_record = reviewed["role_policy"][0]["records"][0].as_u64().unwrap();
    let ack = format!("/v1/alerts/{policy_record}/ack");
    let (status, text) = http_with(port, "POST", &ack, &officer, note);
    assert_eq!(status, 200, "{text}");
    let (status, text) = http_with(port, "POST", &ack, &officer, note);
    assert_eq!(status, 409, "{text}");
    let (policy_reviewed, _) = ranked_cases(port, &auditor);
    assert_eq!(policy_open(&policy_reviewed) + 1, policy_open(&reviewed));
    let reviewed = policy_reviewed;
    drop(monitor);

    // Offline: the logged scores, keyed by employee and standing as the experiments key them.
    let member = config.parent().unwrap();
    fs::create_dir_all(member.join("monitor")).unwrap();
    fs::rename(
        member.join("monitor-replay/audit.redb"),
        member.join("monitor/audit.redb"),
    )
    .unwrap();
    let mut logged = logged_decisions(&config);
    assert_eq!(logged.len(), requests.len() + flood.len());
    logged.truncate(requests.len());
    // Employees numbered in the order of their ids, so that exact ties (two users with the
    // same single alert) break as the monitor breaks them, by id.
    let mut index: std::collections::BTreeMap<String, u64> =
        logged.iter().map(|(r, _)| (r.user.clone(), 0)).collect();
    for (i, n) in index.values_mut().enumerate() {
        *n = i as u64;
    }
    let (mut scores, mut keys, mut threshold) = (Vec::new(), Vec::new(), None);
    for (seq, (request, decision)) in logged.iter().enumerate() {
        let employee = index[&request.user];
        scores.push(decision.score.unwrap());
        assert!(
            threshold.is_none() || threshold == decision.threshold,
            "one model"
        );
        threshold = decision.threshold;
        keys.push(CaseKey {
            employee,
            time_ms: request.time_ms,
            standing: Standing::of(&request.to_event(seq as u64)),
        });
    }
    let name: std::collections::BTreeMap<u64, String> =
        index.into_iter().map(|(u, i)| (i, u)).collect();
    let offline: Vec<_> = cases(&scores, &keys, threshold.unwrap(), &CaseRules::default())
        .unwrap()
        .into_iter()
        .rev()
        .filter(|c| c.total_evidence() > 0.0)
        .collect();
    // Newest day first in the queue; within a day the offline order is already by rank.
    let mut offline_by_day: Vec<(String, String, f64, f64)> = Vec::new();
    let days: Vec<u64> = {
        let mut d: Vec<u64> = offline.iter().map(|c| c.window).collect();
        d.dedup();
        d
    };
    for w in days {
        let date = medfl_accesslog::time::format_instant(w * day)[..10].to_owned();
        let mut of_day: Vec<_> = offline.iter().filter(|c| c.window == w).collect();
        of_day.reverse();
        offline_by_day.extend(of_day.into_iter().map(|c| {
            (
                date.clone(),
                name[&c.employee].clone(),
                c.evidence,
                c.carried,
            )
        }));
    }
    assert!(live.len() >= 10, "too few ranked cases to judge: {live:?}");
    assert!(
        live.iter().any(|c| c.3 > 0.0),
        "no case carries evidence in: {live:?}"
    );
    assert_eq!(live, offline_by_day);
    // The other queues: every user-day with a declared emergency, or with an access to a kind
    // of record the user's role never needs (the role policy), and how many.
    type Noted = fn(&AccessRequest, &medfl_monitor::Decision) -> bool;
    let queues: [(&str, Noted); 2] = [
        ("break_glass", |r, _| r.break_glass),
        ("role_policy", |_, d| d.by_role_policy()),
    ];
    for (list, noted) in queues {
        let mut logged_days = std::collections::BTreeMap::new();
        for (request, decision) in &logged {
            if noted(request, decision) {
                let date = medfl_accesslog::time::format_instant(request.time_ms)[..10].to_owned();
                *logged_days
                    .entry((date, request.user.clone()))
                    .or_insert(0u64) += 1;
            }
        }
        let listed_days: std::collections::BTreeMap<(String, String), u64> = listed[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let key = (
                    e["day"].as_str().unwrap().to_owned(),
                    e["user"].as_str().unwrap().to_owned(),
                );
                (key, e["accesses"].as_u64().unwrap())
            })
            .collect();
        assert!(!logged_days.is_empty(), "no {list} access in the stream");
        assert_eq!(listed_days, logged_days, "{list}");
    }
    // Every field `docs/monitor-openapi.json` says a case and a noted day carry, and no other.
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../docs/monitor-openapi.json")).unwrap();
    for (list, schema) in [
        ("cases", "Case"),
        ("break_glass", "Noted"),
        ("role_policy", "Noted"),
    ] {
        let mut required: Vec<&str> = spec["components"]["schemas"][schema]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        required.sort_unstable();
        for item in listed[list].as_array().unwrap() {
            let mut fields: Vec<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            fields.sort_unstable();
            assert_eq!(fields, required, "{schema}: {item}");
        }
    }

    // A restart replays the log into the same queue (the replay's log, moved where a live
    // monitor keeps its own).
    let port = free_port();
    let _monitor = start(&config, port, dir.path().join("monitor-2.log"));
    let (relisted, _) = ranked_cases(port, &auditor);
    assert_eq!(relisted, reviewed);
}
