//! The networked system with real processes on 127.0.0.1: `medfl coordinator` and five
//! `medfl client`s, killed, restarted, revoked and attacked.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, ok, p};
use medfl_ledger::{Ledger, MemberId, TxBody, verify_dir};

const HOSPITALS: [&str; 6] = ["h-a", "h-b", "h-c", "h-d", "h-e", "h-spare"];

/// A child process killed (SIGKILL) when dropped, its stderr in a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(args: &[&str], log: PathBuf) -> Proc {
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medfl"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `times` times; panics with the log on timeout.
    fn wait_for(&self, needle: &str, times: usize, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self.text().matches(needle).count() >= times {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{needle:?} x{times} not seen in {secs} s:\n{}", self.text());
    }

    fn wait_exit(&mut self, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} did not exit in {secs} s:\n{}",
            self.log.display(),
            self.text()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A provisioned consortium of a coordinator and six hospitals on free ports, with logs.
struct Net {
    dir: tempfile::TempDir,
    events: PathBuf,
}

impl Net {
    fn new(rounds: u64, min_participants: usize) -> Net {
        Net::with_budget(rounds, min_participants, 50.0)
    }

    /// A consortium whose agreement allows each hospital `epsilon` in all.
    fn with_budget(rounds: u64, min_participants: usize, epsilon: f64) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut plan = format!(
            "name = \"test\"\ncreated_at = \"2026-11-01T00:00:00Z\"\nquorum = 3\n\n[[members]]\nid = \"coordinator\"\nrole = \"coordinator\"\naddress = \"/ip4/127.0.0.1/tcp/{port}\"\n"
        );
        for h in HOSPITALS {
            plan.push_str(&format!(
                "\n[[members]]\nid = \"{h}\"\nrole = \"hospital\"\n"
            ));
        }
        plan.push_str("\n[[members]]\nid = \"auditor\"\nrole = \"auditor\"\n");
        let members: Vec<String> = HOSPITALS.iter().map(|h| format!("\"{h}\"")).collect();
        plan.push_str(&format!(
            "\n[[agreements]]\nid = \"dua\"\npurpose = \"test\"\nmembers = [{}]\nexpires_at = \"2030-01-01T00:00:00Z\"\nepsilon = {epsilon:?}\ndelta = 1e-5\n",
            members.join(", ")
        ));
        fs::write(dir.path().join("plan.toml"), plan).unwrap();
        let cons = dir.path().join("cons");
        ok(&[
            "provision",
            "--consortium",
            p(&dir.path().join("plan.toml")),
            "--out",
            p(&cons),
            "--generate-keys-centrally",
            "--insecure-deterministic-seed",
            "3",
        ]);
        let coord = cons.join("coordinator/config.toml");
        let text = fs::read_to_string(&coord).unwrap();
        let text = text
            .replace("rounds = 10", &format!("rounds = {rounds}"))
            .replace(
                "min_participants = 2",
                &format!("min_participants = {min_participants}"),
            )
            .replace("gather_s = 10.0", "gather_s = 3.0")
            .replace("interval_s = 1.0", "interval_s = 0.2")
            .replace("stage_timeout_s = 30.0", "stage_timeout_s = 8.0")
            .replace("training_timeout_s = 600.0", "training_timeout_s = 60.0")
            .replace("endorse_timeout_s = 30.0", "endorse_timeout_s = 8.0")
            .replace("sampling_rate = 0.01", "sampling_rate = 0.05");
        fs::write(&coord, text).unwrap();
        // One small hospital's two weeks of logs, shared by every client (the protocol is the
        // subject here, not detection).
        let scenario = dir.path().join("small.toml");
        let full = medfl_simulations::scenario::DEFAULT_TOML;
        let second = full.match_indices("[[hospital]]").nth(1).unwrap().0;
        fs::write(&scenario, full[..second].replace("days = 21", "days = 14")).unwrap();
        let logs = dir.path().join("logs");
        ok(&["logs", "--scenario", p(&scenario), "--out", p(&logs)]);
        let events = logs.join("rural-clinic/events.csv");
        assert!(events.is_file());
        Net { dir, events }
    }

    fn folder(&self, member: &str) -> PathBuf {
        self.dir.path().join("cons").join(member)
    }

    fn coordinator(&self, tag: &str) -> Proc {
        let config = self.folder("coordinator").join("config.toml");
        Proc::start(
            &[
                "coordinator",
                "--allow-insecure-keys",
                "--config",
                p(&config),
            ],
            self.dir.path().join(format!("coordinator-{tag}.log")),
        )
    }

    fn client(&self, member: &str, until: u64) -> Proc {
        self.client_with(member, &["--until-round", &until.to_string()])
    }

    fn client_with(&self, member: &str, extra: &[&str]) -> Proc {
        let config = self.folder(member).join("config.toml");
        let mut args = vec![
            "client",
            "--allow-insecure-keys",
            "--config",
            p(&config),
            "--data",
            p(&self.events),
        ];
        args.extend_from_slice(extra);
        Proc::start(&args, self.dir.path().join(format!("{member}.log")))
    }

    /// The coordinator's listen address, from its config.
    fn coordinator_addr(&self) -> medfl_net::Multiaddr {
        let config = fs::read_to_string(self.folder("coordinator").join("config.toml")).unwrap();
        config
            .lines()
            .find_map(|l| l.strip_prefix("listen = \""))
            .unwrap()
            .trim_end_matches('"')
            .parse()
            .unwrap()
    }

    /// `medfl ledger submit` for `member`, with the transaction's arguments.
    fn submit(&self, member: &str, args: &[&str]) -> String {
        let config = self.folder(member).join("config.toml");
        let mut all = vec![
            "ledger",
            "submit",
            "--allow-insecure-keys",
            "--config",
            p(&config),
        ];
        all.extend_from_slice(args);
        ok(&all)
    }

    /// The client's `status.json`.
    fn status(&self, member: &str) -> serde_json::Value {
        let text = fs::read_to_string(self.folder(member).join("status.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    fn anchors(&self) -> Vec<medfl_ledger::tx::RoundAnchor> {
        // A snapshot: the running coordinator holds the file itself.
        let ledger = Ledger::open_snapshot(&self.folder("coordinator").join("ledger")).unwrap();
        let mut out = Vec::new();
        for h in 1..=ledger.state().height() {
            for tx in ledger.block(h).unwrap().unwrap().txs {
                if let TxBody::AnchorRound(r) = tx.body {
                    out.push(r);
                }
            }
        }
        out
    }

    fn client_model(&self, member: &str) -> String {
        fs::read_to_string(self.folder(member).join("models/current.global")).unwrap_or_default()
    }
}

fn id(s: &str) -> MemberId {
    MemberId::new(s).unwrap()
}

#[test]
fn five_clients_run_three_rounds_and_hold_the_anchored_model() {
    let net = Net::new(3, 5);
    let mut coord = net.coordinator("1");
    let mut clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 3)).collect();
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    for c in &mut clients {
        assert!(c.wait_exit(60), "client failed:\n{}", c.text());
    }
    let report = verify_dir(&net.folder("coordinator").join("ledger"), None).unwrap();
    assert_eq!(report.height, 3);
    let anchors = net.anchors();
    assert_eq!(
        anchors.iter().map(|a| a.round).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        anchors
            .iter()
            .all(|a| a.participants.len() == 5 && a.dropped.is_empty())
    );
    let last = anchors[2].model.to_string();
    for h in &HOSPITALS[..5] {
        assert_eq!(net.client_model(h), last, "{h} holds another model");
        // Every hospital's ledger copy verifies and agrees.
        let r = verify_dir(&net.folder(h).join("ledger"), None).unwrap();
        assert_eq!(r.height, 3, "{h}");
    }
    let metrics = fs::read_to_string(net.folder("coordinator").join("metrics.jsonl")).unwrap();
    let rounds = metrics
        .lines()
        .filter(|l| !l.contains("\"waiting\""))
        .count();
    assert_eq!(rounds, 3, "{metrics}");
    assert!(metrics.contains("\"stage_ms\""));
}

#[test]
fn a_client_killed_mid_round_is_recorded_as_dropped() {
    let net = Net::new(2, 3);
    let mut coord = net.coordinator("1");
    let mut clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 2)).collect();
    clients[0].wait_for("round started", 1, 120);
    clients[0].kill();
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    let anchors = net.anchors();
    assert_eq!(anchors.len(), 2);
    // Killed after it advertised its keys, it is recorded as dropped; killed before it revealed
    // its graph nonce, the attempt stops (the server may not pick the graph by dropping nonces)
    // and the round is retried without it. Either way round 1 goes on without h-a.
    assert!(
        anchors[0].dropped.is_empty() || anchors[0].dropped == vec![id("h-a")],
        "{:?}",
        anchors[0]
    );
    assert_eq!(anchors[0].participants.len(), 4);
    assert!(anchors[0].participants.iter().all(|(m, _)| m != &id("h-a")));
    assert!(anchors[1].participants.iter().all(|(m, _)| m != &id("h-a")));
    verify_dir(&net.folder("coordinator").join("ledger"), None).unwrap();
}

/// A hospital SIGKILLed while it trains is dropped when its connection closes: the round
/// anchors seconds after the kill, not at the training deadline (600 s, as deployed).
#[test]
fn a_hospital_killed_in_training_does_not_hold_the_round_to_its_deadline() {
    let net = Net::new(1, 3);
    let config = net.folder("coordinator").join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("training_timeout_s = 60.0", "training_timeout_s = 600.0"),
    )
    .unwrap();
    let mut coord = net.coordinator("1");
    let mut clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 1)).collect();
    // Polled closely: the kill must land inside training (about a second here).
    assert!(
        eventually_every(120, Duration::from_millis(5), || clients[0]
            .text()
            .contains("local training started")),
        "h-a never started training:\n{}",
        clients[0].text()
    );
    clients[0].kill();
    let killed = Instant::now();
    assert!(
        !clients[0].text().contains("local training done"),
        "the kill came after h-a's training had ended (a loaded machine?): nothing to test"
    );
    assert!(
        coord.wait_exit(120),
        "coordinator failed:\n{}",
        coord.text()
    );
    let waited = killed.elapsed();
    eprintln!(
        "round anchored {:.1} s after the kill",
        waited.as_secs_f64()
    );
    // Well inside one stage deadline (8 s here) plus the others' training; nowhere near 600 s.
    assert!(
        waited < Duration::from_secs(60),
        "the round anchored {waited:?} after the kill"
    );
    let anchors = net.anchors();
    assert_eq!(anchors.len(), 1);
    assert!(anchors[0].participants.iter().all(|(m, _)| m != &id("h-a")));
    let metrics = fs::read_to_string(net.folder("coordinator").join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"gone\":[\"h-a\"]"), "{metrics}");
}

/// Hospitals whose privacy budget cannot pay for a round are connected but not eligible: the
/// coordinator says so for each, in its log, in `metrics.jsonl` and in `status.json`.
#[test]
fn a_spent_budget_is_named_as_the_reason_no_round_starts() {
    let net = Net::with_budget(1, 3, 0.01);
    let coord = net.coordinator("1");
    let _clients: Vec<Proc> = HOSPITALS[..3].iter().map(|h| net.client(h, 1)).collect();
    coord.wait_for("privacy budget spent", 1, 120);
    let status_path = net.folder("coordinator").join("status.json");
    assert!(
        eventually(30, || {
            let status: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&status_path).unwrap_or_default())
                    .unwrap_or_default();
            status["connected"].as_array().is_some_and(|c| c.len() == 3)
                && status["eligibility"]["ineligible"]["h-a"]["reason"] == "budget-spent"
                && status["eligibility"]["ineligible"]["h-d"]["reason"] == "budget-spent"
        }),
        "{}",
        fs::read_to_string(&status_path).unwrap_or_default()
    );
    let metrics = fs::read_to_string(net.folder("coordinator").join("metrics.jsonl")).unwrap();
    let waiting: Vec<serde_json::Value> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("waiting").is_some())
        .collect();
    assert!(
        waiting
            .iter()
            .any(|w| w["waiting"]["not_eligible"]["h-b"]["reason"] == "budget-spent"),
        "{metrics}"
    );
    assert!(net.anchors().is_empty());
}

/// An auditor syncs its own copy from the running coordinator over the network: every block
/// checked against the copy, and the copy verifies from the genesis it holds.
#[test]
fn an_auditor_syncs_its_copy_from_the_running_coordinator() {
    let net = Net::new(3, 3);
    let mut coord = net.coordinator("1");
    let _clients: Vec<Proc> = HOSPITALS[..3].iter().map(|h| net.client(h, 3)).collect();
    coord.wait_for("round anchored", 1, 180);
    let config = net.folder("auditor").join("config.toml");
    let out = ok(&[
        "ledger",
        "sync",
        "--allow-insecure-keys",
        "--config",
        p(&config),
        "--idle-s",
        "2",
    ]);
    assert!(out.starts_with("synced "), "{out}");
    let copy = net.folder("auditor").join("ledger");
    let report = verify_dir(&copy, None).unwrap();
    assert!(report.height >= 1, "{out}");
    // A second sync after the last round adds the rest and agrees with the coordinator.
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    let coordinator_tip = verify_dir(&net.folder("coordinator").join("ledger"), None).unwrap();
    // Restarted with a further target, it stays up (waiting for hospitals) and serves catch-up.
    let c2 = Proc::start(
        &[
            "coordinator",
            "--allow-insecure-keys",
            "--config",
            p(&net.folder("coordinator").join("config.toml")),
            "--rounds",
            "4",
        ],
        net.dir.path().join("coordinator-2.log"),
    );
    c2.wait_for("listening", 1, 60);
    ok(&[
        "ledger",
        "sync",
        "--allow-insecure-keys",
        "--config",
        p(&config),
        "--idle-s",
        "2",
    ]);
    assert_eq!(verify_dir(&copy, None).unwrap().tip, coordinator_tip.tip);
}

#[test]
fn outsiders_are_refused_and_a_revoked_member_is_cut_off() {
    let net = Net::new(2, 3);
    // An outsider: a hospital of another consortium (other keys) pointed at our coordinator.
    let other = net.dir.path().join("other");
    let plan = fs::read_to_string(net.dir.path().join("plan.toml")).unwrap();
    fs::write(net.dir.path().join("plan2.toml"), plan).unwrap();
    ok(&[
        "provision",
        "--consortium",
        p(&net.dir.path().join("plan2.toml")),
        "--out",
        p(&other),
        "--generate-keys-centrally",
        "--insecure-deterministic-seed",
        "99",
    ]);

    let mut coord = net.coordinator("1");
    let mut clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 2)).collect();
    let outsider = Proc::start(
        &[
            "client",
            "--allow-insecure-keys",
            "--config",
            p(&other.join("h-a/config.toml")),
            "--data",
            p(&net.events),
        ],
        net.dir.path().join("outsider.log"),
    );
    coord.wait_for("round anchored", 1, 180);
    ok(&[
        "ledger",
        "revoke",
        "--allow-insecure-keys",
        "--config",
        p(&net.folder("coordinator").join("config.toml")),
        "--member",
        "h-e",
        "--reason",
        "credentials leaked",
    ]);
    // The revoked member learns it (from the revocation block, or from the coordinator's
    // signed notice when it redials) and stops with the reason, instead of redialing forever.
    assert!(
        !clients[4].wait_exit(60),
        "the revoked client exited cleanly"
    );
    let revoked_log = clients[4].text();
    assert!(
        revoked_log.contains("this member is revoked")
            && revoked_log.contains("credentials leaked"),
        "{revoked_log}"
    );
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    let log = coord.text();
    assert!(!log.contains("not on the ledger"), "{log}");
    // The outsider (another consortium's member) finds a coordinator it does not know at the
    // address, takes no part, and waits ever longer between dials instead of 5 a second.
    let outsider_log = outsider.text();
    assert!(
        !outsider_log.contains("round started"),
        "the outsider took part:\n{outsider_log}"
    );
    assert!(
        outsider_log.contains("cannot reach the coordinator")
            && outsider_log.contains("wait_s=6.4"),
        "{outsider_log}"
    );
    assert!(
        outsider_log.matches("cannot reach the coordinator").count() < 15,
        "{outsider_log}"
    );
    let anchors = net.anchors();
    assert_eq!(anchors.len(), 2);
    assert!(
        anchors[1].participants.iter().all(|(m, _)| m != &id("h-e")),
        "{:?}",
        anchors[1]
    );
    assert!(anchors[1].dropped.iter().all(|m| m != &id("h-e")));
    let ledger = Ledger::open(&net.folder("coordinator").join("ledger")).unwrap();
    let revoked = ledger.state().member(&id("h-e")).unwrap();
    assert!(revoked.revoked);
    assert_eq!(
        revoked.revocation.as_ref().map(|r| r.reason.as_str()),
        Some("credentials leaked")
    );
    drop(clients);
}

#[test]
fn garbage_and_oversized_messages_cut_the_sender_off_and_rounds_go_on() {
    let net = Net::new(4, 3);
    let mut coord = net.coordinator("1");
    let _clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 4)).collect();
    coord.wait_for("round started", 1, 120);
    // A member's key (h-spare's) speaking nonsense: first garbage, then 70 MiB.
    let (key, _) =
        medfl_ledger::keyfile::read_with_origin(&net.folder("h-spare").join("member.key")).unwrap();
    let config = fs::read_to_string(net.folder("coordinator").join("config.toml")).unwrap();
    let addr: medfl_net::Multiaddr = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        /// What the junk node sends: nonsense under the wire's framing.
        #[derive(serde::Serialize)]
        enum Junk {
            _A(u8),
            _B(u8),
            C(u8),
            Blob(Vec<u8>),
        }
        /// It reads what the coordinator broadcasts (blocks, round starts) as a real client
        /// would; a node that cannot decode them would hang up on the coordinator itself and
        /// lose the blob in flight (the test then waited for a refusal that never came).
        impl<'de> serde::Deserialize<'de> for Junk {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                medfl_protocol::Envelope::deserialize(d).map(|_| Junk::C(0))
            }
        }
        let cfg = medfl_net::NetConfig {
            max_message_bytes: 128 << 20,
            ..medfl_net::NetConfig::default()
        };
        let coordinator_peer = medfl_net::peer_id_of(&net_coordinator_key(&net));
        let (h, _events) =
            medfl_net::spawn::<Junk>(&key, cfg, [coordinator_peer].into_iter().collect())
                .await
                .unwrap();
        h.dial(addr.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.send(coordinator_peer, &Junk::C(7)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.dial(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.send(coordinator_peer, &Junk::Blob(vec![0u8; 70 << 20]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.shutdown().await;
    });
    // The transport refuses both (the second by its length prefix, before reading the body).
    coord.wait_for("disconnecting misbehaving peer", 2, 60);
    assert!(
        coord.text().contains("exceeds the limit"),
        "{}",
        coord.text()
    );
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    let anchors = net.anchors();
    assert_eq!(anchors.len(), 4, "rounds went on");
    assert!(anchors.iter().all(|a| a.participants.len() >= 5));
}

fn net_coordinator_key(net: &Net) -> ed25519_dalek::VerifyingKey {
    medfl_ledger::keyfile::read_with_origin(&net.folder("coordinator").join("member.key"))
        .unwrap()
        .0
        .verifying_key()
}

#[test]
fn a_restarted_coordinator_continues_from_the_last_anchored_round() {
    let net = Net::new(3, 5);
    let mut coord = net.coordinator("1");
    let mut clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 3)).collect();
    coord.wait_for("round anchored", 1, 180);
    coord.wait_for("round started", 2, 60);
    coord.kill(); // mid round 2
    let mut coord = net.coordinator("2");
    assert!(
        coord.wait_exit(240),
        "restarted coordinator failed:\n{}",
        coord.text()
    );
    assert!(
        coord
            .text()
            .contains("resuming from the last anchored round round=1"),
        "{}",
        coord.text()
    );
    for c in &mut clients {
        assert!(c.wait_exit(60), "client failed:\n{}", c.text());
    }
    let anchors = net.anchors();
    assert_eq!(
        anchors.iter().map(|a| a.round).collect::<Vec<_>>(),
        [1, 2, 3],
        "no round twice, none lost"
    );
    for w in anchors.windows(2) {
        assert_eq!(w[1].previous_model, w[0].model);
    }
    verify_dir(&net.folder("coordinator").join("ledger"), None).unwrap();
    let last = anchors[2].model.to_string();
    for h in &HOSPITALS[..5] {
        assert_eq!(net.client_model(h), last, "{h}");
    }
}

/// A subject pseudonym for consent transactions in these tests.
const SUBJECT: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// Polls `cond` every 100 ms for `secs` seconds.
fn eventually(secs: u64, cond: impl FnMut() -> bool) -> bool {
    eventually_every(secs, Duration::from_millis(100), cond)
}

/// Polls `cond` every `every` for `secs` seconds.
fn eventually_every(secs: u64, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

/// The coordinator played by the test: the coordinator's own key on its address, taking
/// h-a's connection; its events are what h-a sends.
fn fake_coordinator(
    net: &Net,
) -> (
    tokio::runtime::Runtime,
    medfl_net::NetHandle<medfl_protocol::Envelope>,
    tokio::sync::mpsc::Receiver<medfl_net::NetEvent<medfl_protocol::Envelope>>,
) {
    let key = |member: &str| {
        medfl_ledger::keyfile::read_with_origin(&net.folder(member).join("member.key"))
            .unwrap()
            .0
    };
    let (coordinator_key, hospital) = (key("coordinator"), key("h-a"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (handle, events) = rt.block_on(async {
        let cfg = medfl_net::NetConfig {
            listen: vec![net.coordinator_addr()],
            ..medfl_net::NetConfig::default()
        };
        let allowed = [medfl_net::peer_id_of(&hospital.verifying_key())];
        medfl_net::spawn::<medfl_protocol::Envelope>(
            &coordinator_key,
            cfg,
            allowed.into_iter().collect(),
        )
        .await
        .unwrap()
    });
    (rt, handle, events)
}

/// Attack: the coordinator (the single orderer) silently drops a hospital's transaction. Here
/// the coordinator is played by the test with the coordinator's own key on its address: it
/// takes the hospital's connection and its `SubmitTx` and never orders it. The hospital's agent
/// must notice that its transaction is not in a block by the deadline, say so (a warning and
/// `status.json`), and send it again.
#[test]
fn a_coordinator_that_drops_a_hospitals_transaction_is_reported_as_censoring() {
    use medfl_protocol::{Envelope, ToCoordinator};
    let net = Net::new(1, 3);
    let (rt, handle, mut events) = fake_coordinator(&net);
    let client = net.client_with("h-a", &["--submit-deadline-s", "2"]);
    client.wait_for("connected to the coordinator", 1, 60);
    let out = net.submit(
        "h-a",
        &["consent", "--subject", SUBJECT, "--choice", "opt-out"],
    );
    assert!(out.contains("queued"), "{out}");
    // The dropping coordinator sees the transaction, then sees it again after the deadline.
    let submitted = rt.block_on(async {
        let mut ids = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        while ids.len() < 2 {
            let ev = tokio::time::timeout_at(end, events.recv()).await;
            let Ok(Some(ev)) = ev else { break };
            if let medfl_net::NetEvent::Message {
                msg: Envelope::ToCoordinator(ToCoordinator::SubmitTx(tx)),
                ..
            } = ev
            {
                ids.push(tx.id().unwrap());
            }
        }
        ids
    });
    assert_eq!(submitted.len(), 2, "sent, then re-sent:\n{}", client.text());
    assert_eq!(submitted[0], submitted[1]);
    client.wait_for("censored", 1, 30);
    let id = submitted[0].to_string();
    assert!(
        eventually(10, || {
            let status = net.status("h-a");
            status["censored"]
                .as_array()
                .is_some_and(|c| c.iter().any(|e| e["tx"] == id.as_str()))
        }),
        "status.json does not report {id} as censored: {}",
        net.status("h-a")
    );
    rt.block_on(handle.shutdown());
}

/// Attack: a coordinator that holds the anchors of audit batches k and k+1 together can order
/// k+1 first, and the contracts then refuse k's for good. The hospital's agent sends a batch
/// anchor only when none is in flight: the coordinator sitting on k's sees k's again at each
/// deadline, and never k+1's.
#[test]
fn a_coordinator_never_holds_two_audit_anchors_of_one_hospital() {
    use medfl_ledger::TxBody;
    use medfl_protocol::{Envelope, ToCoordinator};
    let net = Net::new(1, 3);
    let (rt, handle, mut events) = fake_coordinator(&net);
    let client = net.client_with("h-a", &["--submit-deadline-s", "2"]);
    client.wait_for("connected to the coordinator", 1, 60);
    // Both batches are in the outbox within one scan or two: either way the agent could send
    // them together.
    let root = |b: u8| format!("{b:02x}").repeat(32);
    for (b, first, last) in [
        (1, "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"),
        (2, "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"),
    ] {
        let out = net.submit(
            "h-a",
            &[
                "audit",
                "--root",
                &root(b),
                "--count",
                "5",
                "--first",
                first,
                "--last",
                last,
            ],
        );
        assert!(out.contains("queued"), "{out}");
    }
    let roots = rt.block_on(async {
        let mut roots = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(7);
        while let Ok(Some(ev)) = tokio::time::timeout_at(end, events.recv()).await {
            if let medfl_net::NetEvent::Message {
                msg: Envelope::ToCoordinator(ToCoordinator::SubmitTx(tx)),
                ..
            } = ev
                && let TxBody::AnchorAuditLog(a) = &tx.body
            {
                roots.push(a.merkle_root.to_string());
            }
        }
        roots
    });
    assert!(
        roots.len() >= 2,
        "batch 1 sent, then sent again at its deadline: {roots:?}\n{}",
        client.text()
    );
    assert!(
        roots.iter().all(|r| *r == root(1)),
        "the coordinator got batch 2's anchor while batch 1's was unordered: {roots:?}"
    );
    let status = net.status("h-a");
    assert_eq!(
        status["pending"].as_array().map(Vec::len),
        Some(1),
        "batch 2 waits in the outbox, not in flight: {status}"
    );
    assert_eq!(
        status["anchors_waiting"], 1,
        "and the status says so: {status}"
    );
    rt.block_on(handle.shutdown());
}

/// The honest coordinator orders a hospital's own transaction into its next block, and answers
/// one the contracts refuse with the contract's reason; neither is reported as censored.
#[test]
fn an_honest_coordinator_orders_a_hospitals_transaction_or_says_why_not() {
    let net = Net::new(1, 3); // three hospitals needed: no round starts with one client
    let mut coord = net.coordinator("1");
    let client = net.client_with("h-a", &["--submit-deadline-s", "2"]);
    client.wait_for("connected to the coordinator", 1, 60);
    net.submit(
        "h-a",
        &["consent", "--subject", SUBJECT, "--choice", "opt-out"],
    );
    client.wait_for("transaction ordered into a block", 1, 30);
    // Accepting an agreement the genesis already has it in is refused by the contract.
    // (queued past the CLI's own check, which refuses it on h-a's copy already)
    net.submit("h-a", &["--skip-check", "accept", "--agreement", "dua"]);
    client.wait_for("transaction refused", 1, 30);
    assert!(client.text().contains("already"), "{}", client.text());
    std::thread::sleep(Duration::from_secs(3)); // past the deadline: still nothing censored
    assert!(!client.text().contains("censored"), "{}", client.text());
    coord.kill(); // the running coordinator holds its ledger's lock
    let ledger = Ledger::open(&net.folder("coordinator").join("ledger")).unwrap();
    let subject = medfl_ledger::tx::Pseudonym(SUBJECT.parse().unwrap());
    assert!(ledger.state().is_opted_out(&id("h-a"), &subject));
    let status = net.status("h-a");
    assert_eq!(
        status["censored"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    assert_eq!(
        status["pending"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
}

/// Attack: a member floods the coordinator with thousands of `Hello { height: 0 }` (each asking
/// for the whole chain) and thousands of long declines. The coordinator sends it the chain at
/// most a few times, records one decline for it, and the rounds complete.
#[test]
fn a_member_flooding_hellos_and_declines_gets_bounded_answers_and_rounds_go_on() {
    use medfl_protocol::{Envelope, ToAgent, ToCoordinator};
    let net = Net::new(2, 3);
    let mut coord = net.coordinator("1");
    let _clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 2)).collect();
    coord.wait_for("round anchored", 1, 180);
    let key = medfl_ledger::keyfile::read_with_origin(&net.folder("h-spare").join("member.key"))
        .unwrap()
        .0;
    let coordinator_peer = medfl_net::peer_id_of(&net_coordinator_key(&net));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blocks = rt.block_on(async {
        let cfg = medfl_net::NetConfig {
            max_queued_per_peer: 1 << 20, // the attacker queues as much as it likes
            ..medfl_net::NetConfig::default()
        };
        let (h, mut events) =
            medfl_net::spawn::<Envelope>(&key, cfg, [coordinator_peer].into_iter().collect())
                .await
                .unwrap();
        h.dial(net.coordinator_addr()).await.unwrap();
        // Joined as an eligible hospital, it is picked for round 2: flood with its session.
        let mut session = None;
        let mut blocks = 0;
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        while session.is_none() {
            let Ok(Some(ev)) = tokio::time::timeout_at(end, events.recv()).await else {
                break;
            };
            match ev {
                medfl_net::NetEvent::Message {
                    msg: Envelope::ToAgent(ToAgent::RoundStart(c)),
                    ..
                } => session = Some(c.session),
                medfl_net::NetEvent::Message {
                    msg: Envelope::ToAgent(ToAgent::Block(_)),
                    ..
                } => blocks += 1,
                _ => {}
            }
        }
        let session = session.expect("the flooder was never picked for a round");
        let reason = "z".repeat(10_000);
        for _ in 0..3_000 {
            let hello = Envelope::ToCoordinator(ToCoordinator::Hello { height: 0 });
            h.send(coordinator_peer, &hello).await.unwrap();
            let decline = Envelope::ToCoordinator(ToCoordinator::Decline {
                session,
                reason: medfl_protocol::DeclineReason::Invalid(reason.clone()),
            });
            h.send(coordinator_peer, &decline).await.unwrap();
        }
        // Count the blocks the flood earned, until the coordinator has been quiet a while.
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
            match next {
                Ok(Some(medfl_net::NetEvent::Message {
                    msg: Envelope::ToAgent(ToAgent::Block(_)),
                    ..
                })) => blocks += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        h.shutdown().await;
        blocks
    });
    assert!(
        blocks <= 20,
        "3,000 hellos earned {blocks} blocks: catch-up is not rate-limited"
    );
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    assert_eq!(net.anchors().len(), 2, "rounds went on");
    let metrics = fs::read_to_string(net.folder("coordinator").join("metrics.jsonl")).unwrap();
    let flooded = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|m| m["declines_repeated"].as_u64().unwrap_or(0) > 0)
        .unwrap_or_else(|| panic!("no round counted repeated declines:\n{metrics}"));
    assert_eq!(
        flooded["declined"].as_array().unwrap().len(),
        1,
        "{flooded}"
    );
    assert!(flooded["declined"][0].as_str().unwrap().len() < 1_000);
}
