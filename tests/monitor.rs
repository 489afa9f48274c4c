//! `medfl monitor` as a process on 127.0.0.1: decisions over HTTP, bad input refused with a
//! clear 4xx and nothing logged, a SIGKILL losing no answered decision, and `medfl audit`
//! verifying and reading the log it left.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ok, p};
use medfl_accesslog::AccessEvent;
use medfl_monitor::AccessRequest;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    panic!("the monitor did not listen");
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
    fs::write(dir.join("plan.toml"), plan).unwrap();
    let cons = dir.join("cons");
    ok(&[
        "provision",
        "--consortium",
        p(&dir.join("plan.toml")),
        "--out",
        p(&cons),
        "--generate-keys-centrally",
        "--insecure-deterministic-seed",
        "5",
    ]);
    let scenario = dir.join("small.toml");
    let full = medfl_simulations::scenario::DEFAULT_TOML;
    let second = full.match_indices("[[hospital]]").nth(1).unwrap().0;
    fs::write(&scenario, full[..second].replace("days = 21", "days = 7")).unwrap();
    let logs = dir.join("logs");
    ok(&["logs", "--scenario", p(&scenario), "--out", p(&logs)]);
    let events_csv = logs.join("rural-clinic/events.csv");
    let models = cons.join("h-a/models");
    fs::create_dir_all(&models).unwrap();
    ok(&[
        "train",
        "--data",
        p(&events_csv),
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
    let token = ok(&[
        "officer-token",
        "--allow-insecure-keys",
        "--config",
        p(&config),
        "--officer",
        "sec-1",
    ]);
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

    let out = ok(&[
        "audit",
        "verify",
        "--allow-insecure-keys",
        "--config",
        p(&config),
    ]);
    assert!(out.contains(&format!("{answered} records")), "{out}");
    let patient = &events[0].patient;
    let expected = events.iter().filter(|e| &e.patient == patient).count();
    let out = ok(&[
        "audit",
        "history",
        "--allow-insecure-keys",
        "--config",
        p(&config),
        "--patient",
        patient,
    ]);
    assert!(
        out.starts_with(&format!(
            "{expected} accesses to the record of patient {patient}"
        )),
        "{out}"
    );
}
