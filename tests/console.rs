//! The web console (`medfl simulate --serve`): its API against its OpenAPI file, its refusals,
//! and the consortium view in Debian's headless Chromium (Playwright and axe-core from npm,
//! installed by `.ci/run` under `tests/browser/`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_port, ok, p, small_scenario};

/// Starts `medfl simulate` with `args` and `--serve` on a free port; waits until it listens.
fn serve(args: &[&str], log: &Path) -> (Proc, u16) {
    let port = free_port();
    let serve = format!("127.0.0.1:{port}");
    let all: Vec<&str> = ["simulate"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--serve", &serve])
        .collect();
    let proc = daemon(&all, log);
    wait_listening(port, log);
    (proc, port)
}

/// One HTTP/1.1 GET with `host` as its Host: status, headers (lowercase names) and body.
fn get(port: u16, path: &str, host: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A finished run of five rounds over two hospitals.
fn finished_run(dir: &Path) -> PathBuf {
    let sc = small_scenario(dir);
    let out = dir.join("run");
    ok(&[
        "simulate",
        "--scenario",
        &sc,
        "--rounds",
        "5",
        "--out",
        p(&out),
    ]);
    out
}

/// Every route the OpenAPI file documents answers as documented on a finished run, with the
/// security headers; what is malformed, unknown or addressed to another host is refused with
/// a reason.
#[test]
fn the_console_api_answers_as_documented_and_refuses_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let run = finished_run(tmp.path());
    let (_proc, port) = serve(&["--view", p(&run)], &tmp.path().join("console.log"));
    let host = format!("127.0.0.1:{port}");

    let (status, _, body) = get(port, "/api/v1/blocks?limit=1", &host);
    assert_eq!(status, 200, "{body}");
    let blocks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(blocks["height"], 5);
    let tx = blocks["blocks"][0]["txs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("docs/openapi.json").unwrap()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{name}", "console.css")
            .replace("{height}", "5")
            .replace("{id}", &tx);
        let (status, head, body) = get(port, &concrete, &host);
        assert_eq!(status, 200, "GET {concrete}: {body}");
        let documented = item["get"]["responses"]["200"]["content"]
            .as_object()
            .and_then(|c| c.keys().next().cloned())
            .unwrap();
        let media = if concrete.ends_with(".css") {
            "text/css"
        } else {
            &documented
        };
        assert!(
            head.contains(&format!("content-type: {media}")),
            "GET {concrete}: {head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "GET {concrete}: {head}"
        );
        assert!(head.contains("x-frame-options: deny"), "{head}");
    }

    let (_, _, body) = get(port, "/api/v1/rounds?after=3", &host);
    let rounds: serde_json::Value = serde_json::from_str(&body).unwrap();
    let steps: Vec<u64> = rounds["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![4, 5]);
    assert_eq!(rounds["finished"], true);

    let (_, _, body) = get(port, "/api/v1/privacy", &host);
    let privacy: serde_json::Value = serde_json::from_str(&body).unwrap();
    let series = privacy[0]["members"][0]["series"].as_array().unwrap();
    assert_eq!(series.len(), 5, "{body}");
    let spent = privacy[0]["members"][0]["spent"].as_f64().unwrap();
    assert_eq!(series[4][1].as_f64().unwrap(), spent);

    // The proof the console serves is the one `medfl ledger check-proof` accepts.
    let (_, _, proof) = get(port, &format!("/api/v1/transactions/{tx}/proof"), &host);
    let proof_file = tmp.path().join("proof.json");
    std::fs::write(&proof_file, &proof).unwrap();
    let genesis = run.join("ledger").join("genesis.toml");
    ok(&[
        "ledger",
        "check-proof",
        "--genesis",
        p(&genesis),
        p(&proof_file),
    ]);

    for (path, want, says) in [
        ("/api/v1/blocks/0", 404, "no block at height 0"),
        ("/api/v1/blocks/6", 404, "the ledger holds 1 to 5"),
        ("/api/v1/blocks/five", 400, "not a block height"),
        (
            "/api/v1/transactions/abc/proof",
            400,
            "not a transaction id",
        ),
        (
            &format!("/api/v1/transactions/{}/proof", "0".repeat(64)),
            404,
            "no transaction",
        ),
        ("/api/v1/headers?from=0", 400, "from counts heights from 1"),
        ("/api/v1/nothing", 404, "no such page"),
        ("/assets/../Cargo.toml", 404, ""),
        ("/assets/secret.js", 404, "no asset"),
    ] {
        let (status, head, body) = get(port, path, &host);
        assert_eq!(status, want, "GET {path}: {body}");
        assert!(body.contains(says), "GET {path}: {body}");
        assert!(
            head.contains("content-security-policy"),
            "GET {path}: {head}"
        );
    }

    // A page elsewhere that rebinds its DNS name to this address reads nothing.
    let (status, head, _) = get(port, "/api/v1/consortium", &format!("evil.example:{port}"));
    assert_eq!(status, 421);
    assert!(head.contains("content-security-policy"), "{head}");
}

/// `--view` of a directory that holds no run is refused by name, before anything listens.
#[test]
fn viewing_a_folder_without_a_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = common::fails(&[
        "simulate",
        "--serve",
        "127.0.0.1:0",
        "--view",
        p(tmp.path()),
    ]);
    assert!(err.contains("holds no run"), "{err}");
    let err = common::fails(&["simulate", "--view", p(tmp.path())]);
    assert!(err.contains("--serve"), "{err}");
}

/// Where the browser tests live, with their npm packages installed.
fn browser_tests() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && dir.join("node_modules/axe-core").is_dir(),
        "the browser tests need Playwright and axe-core: cd tests/browser && npm ci (.ci/run does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's chromium: apt-get install chromium (.ci/run does)"
    );
    dir
}

/// Where the browser tests save their screenshots.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The consortium view, opened in headless Chromium while a simulation runs: rounds appear
/// without a reload, the page's own check of the header chain reaches the tip, an inclusion
/// proof verifies in the page and a forged one is refused, every control is reachable by
/// keyboard, axe-core finds nothing serious, and the finished view loads in under a second.
#[test]
fn the_consortium_view_follows_a_running_simulation_in_chromium() {
    // Enough rounds that a browser started on a busy machine still finds the run young (at 8
    // rounds, a CI run with the machine loaded lost the race: the run had finished first).
    const ROUNDS: u64 = 24;
    let rounds = ROUNDS.to_string();
    let browser = browser_tests();
    let tmp = tempfile::tempdir().unwrap();
    let sc = small_scenario(tmp.path());
    let out = tmp.path().join("run");
    let (_proc, port) = serve(
        &["--scenario", &sc, "--rounds", &rounds, "--out", p(&out)],
        &tmp.path().join("simulate.log"),
    );
    let shots = screenshots();
    let result = Command::new("node")
        .current_dir(&browser)
        .args([
            "consortium.mjs",
            &format!("http://127.0.0.1:{port}/"),
            &rounds,
            p(&shots),
        ])
        .output()
        .expect("run node (the browser tests need Node.js)");
    assert!(
        result.status.success(),
        "the browser test failed: {}{}\nsimulate: {}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
        std::fs::read_to_string(tmp.path().join("simulate.log")).unwrap_or_default()
    );
    let measured: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&result.stdout).trim()).unwrap();
    println!("consortium view: {measured}");
    assert_eq!(measured["ledger_height"], ROUNDS);
    assert!(shots.join("consortium.png").is_file());
}

/// A `medfl` daemon with its log in `log`, killed when the test ends.
fn daemon(args: &[&str], log: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_medfl"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Waits until something listens on `port`, or fails naming `log`.
fn wait_listening(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The hospital console of a running networked consortium (a coordinator serving the
/// consortium view, three hospitals' clients, one hospital's monitor), in headless Chromium: an
/// officer signs in, an alert arrives live and is acknowledged, the patient-access report
/// lists it, a patient's opt-out recorded in the console reaches the ledger and verifies in
/// the consortium view; requests without a valid token, without the CSRF token, from another
/// origin or from an auditor are refused and log nothing.
#[test]
fn the_hospital_console_records_reviews_and_consent_that_reach_the_ledger_in_chromium() {
    let browser = browser_tests();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p2p = free_port();
    let plan = format!(
        "name = \"console\"\ncreated_at = \"2026-11-01T00:00:00Z\"\nquorum = 1\n\n\
         [[members]]\nid = \"coordinator\"\nrole = \"coordinator\"\naddress = \"/ip4/127.0.0.1/tcp/{p2p}\"\n\n\
         [[members]]\nid = \"h-a\"\nrole = \"hospital\"\n\n[[members]]\nid = \"h-b\"\nrole = \"hospital\"\n\n\
         [[members]]\nid = \"h-c\"\nrole = \"hospital\"\n\n\
         [[agreements]]\nid = \"dua\"\npurpose = \"access-anomaly detection\"\nmembers = [\"h-a\", \"h-b\", \"h-c\"]\n\
         expires_at = \"2030-01-01T00:00:00Z\"\nepsilon = 50.0\ndelta = 1e-5\n"
    );
    let cons = common::provision(dir, &plan, 9);
    let coordinator_config = cons.join("coordinator/config.toml");
    let text = std::fs::read_to_string(&coordinator_config).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("min_participants") {
                "min_participants = 3"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("rounds = 10", "rounds = 1000")
        .replace("gather_s = 10.0", "gather_s = 3.0")
        .replace("interval_s = 1.0", "interval_s = 0.5")
        .replace("stage_timeout_s = 30.0", "stage_timeout_s = 8.0")
        .replace("training_timeout_s = 600.0", "training_timeout_s = 60.0")
        .replace("endorse_timeout_s = 30.0", "endorse_timeout_s = 8.0")
        .replace("sampling_rate = 0.01", "sampling_rate = 0.05");
    std::fs::write(&coordinator_config, text).unwrap();
    let scenario = small_scenario(dir);
    let logs = dir.join("logs");
    ok(&["logs", "--scenario", &scenario, "--out", p(&logs)]);
    let events = logs.join("rural-clinic/events.csv");

    let token = |role: &str, name: &str| {
        let out = ok(&[
            "officer-token",
            "--allow-insecure-keys",
            "--config",
            p(&cons.join("h-a/config.toml")),
            "--officer",
            name,
            "--role",
            role,
        ]);
        out.split_whitespace()
            .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no token in {out}"))
            .to_owned()
    };
    let officer = token("officer", "dana");
    let auditor = token("auditor", "avi");

    let console_port = free_port();
    let coordinator_log = dir.join("coordinator.log");
    let _coordinator = daemon(
        &[
            "coordinator",
            "--allow-insecure-keys",
            "--config",
            p(&coordinator_config),
            "--console",
            &format!("127.0.0.1:{console_port}"),
        ],
        &coordinator_log,
    );
    let clients: Vec<Proc> = ["h-a", "h-b", "h-c"]
        .iter()
        .map(|h| {
            daemon(
                &[
                    "client",
                    "--allow-insecure-keys",
                    "--config",
                    p(&cons.join(h).join("config.toml")),
                    "--data",
                    p(&events),
                ],
                &dir.join(format!("{h}.log")),
            )
        })
        .collect();
    let monitor_port = free_port();
    let monitor_log = dir.join("monitor.log");
    let _monitor = daemon(
        &[
            "monitor",
            "--allow-insecure-keys",
            "--config",
            p(&cons.join("h-a/config.toml")),
            "--listen",
            &format!("127.0.0.1:{monitor_port}"),
            "--seal-every-s",
            "1",
        ],
        &monitor_log,
    );
    wait_listening(console_port, &coordinator_log);
    wait_listening(monitor_port, &monitor_log);

    let shots = screenshots();
    let result = Command::new("node")
        .current_dir(&browser)
        .args([
            "hospital.mjs",
            &format!("http://127.0.0.1:{console_port}/"),
            &format!("http://127.0.0.1:{monitor_port}/"),
            &officer,
            &auditor,
            p(&shots),
        ])
        .output()
        .expect("run node (the browser tests need Node.js)");
    drop(clients);
    let logs_of = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert!(
        result.status.success(),
        "the browser test failed: {}{}\nmonitor: {}\ncoordinator: {}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
        logs_of("monitor.log"),
        logs_of("coordinator.log"),
    );
    println!(
        "hospital console: {}",
        String::from_utf8_lossy(&result.stdout).trim()
    );
    assert!(shots.join("hospital.png").is_file());
}
