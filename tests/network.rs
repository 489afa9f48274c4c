//! The networked system with real processes on 127.0.0.1: `medfl coordinator` and five
//! `medfl client`s, killed, restarted, revoked and attacked.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, p};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A provisioned consortium of a coordinator and six hospitals on free ports, with logs.
struct Net {
    dir: tempfile::TempDir,
    events: PathBuf,
}

impl Net {
    fn new(rounds: u64, min_participants: usize) -> Net {
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
        let members: Vec<String> = HOSPITALS.iter().map(|h| format!("\"{h}\"")).collect();
        plan.push_str(&format!(
            "\n[[agreements]]\nid = \"dua\"\npurpose = \"test\"\nmembers = [{}]\nexpires_at = \"2030-01-01T00:00:00Z\"\nepsilon = 50.0\ndelta = 1e-5\n",
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
        let config = self.folder(member).join("config.toml");
        let until = until.to_string();
        Proc::start(
            &[
                "client",
                "--allow-insecure-keys",
                "--config",
                p(&config),
                "--data",
                p(&self.events),
                "--until-round",
                &until,
            ],
            self.dir.path().join(format!("{member}.log")),
        )
    }

    fn anchors(&self) -> Vec<medfl_ledger::tx::RoundAnchor> {
        let ledger = Ledger::open(&self.folder("coordinator").join("ledger")).unwrap();
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
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
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
    assert_eq!(anchors[0].dropped, vec![id("h-a")], "{:?}", anchors[0]);
    assert_eq!(anchors[0].participants.len(), 4);
    assert!(anchors[1].participants.iter().all(|(m, _)| m != &id("h-a")));
    verify_dir(&net.folder("coordinator").join("ledger"), None).unwrap();
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
    let clients: Vec<Proc> = HOSPITALS[..5].iter().map(|h| net.client(h, 2)).collect();
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
    assert!(
        coord.wait_exit(240),
        "coordinator failed:\n{}",
        coord.text()
    );
    let log = coord.text();
    assert!(
        log.contains("refused a peer that is not on the ledger"),
        "{log}"
    );
    assert!(
        !outsider.text().contains("round started"),
        "the outsider took part:\n{}",
        outsider.text()
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
    assert!(ledger.state().member(&id("h-e")).unwrap().revoked);
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
        #[derive(serde::Serialize, serde::Deserialize)]
        enum Junk {
            A(u8),
            B(u8),
            C(u8),
            Blob(Vec<u8>),
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
