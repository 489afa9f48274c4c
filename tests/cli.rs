//! The `medfl` binary end to end: provisioning, ledger init/verify/show/prove/check-proof, and
//! bad input giving a clear error and a non-zero exit, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, medfl, ok, p};

use medfl::daemon::InsecureKeys;
use medfl::provision::MemberConfig;
use medfl_ledger::testkit::{Fixture, HOUR, T0};
use medfl_ledger::tx::{ConsentChoice, Pseudonym};
use medfl_ledger::{Genesis, Hash, Ledger, Timestamp, TxBody};

fn plan() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/consortium.toml")
        .display()
        .to_string()
}

/// The member's public key as `medfl keygen` prints it.
fn printed_public_key(stdout: &str) -> medfl_ledger::PublicKey {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no public key printed: {stdout}"))
        .parse()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The default flow: each member makes its key where it runs, the consortium file carries
/// public keys only, and provisioning writes no secret key anywhere.
#[test]
fn keys_are_born_where_they_are_used() {
    let tmp = tempfile::tempdir().unwrap();
    let mut file =
        medfl_ledger::ConsortiumFile::from_toml(&std::fs::read_to_string(plan()).unwrap()).unwrap();
    // Without public keys, provisioning refuses and says what to do.
    let refused = fails(&[
        "provision",
        "--consortium",
        &plan(),
        "--out",
        p(&tmp.path().join("refused")),
    ]);
    assert!(
        refused.contains("medfl keygen") && refused.contains("st-olaf"),
        "{refused}"
    );
    assert!(!tmp.path().join("refused").exists());
    // The seed flag alone would silently generate keys: it needs the explicit flag.
    fails(&[
        "provision",
        "--consortium",
        &plan(),
        "--out",
        p(&tmp.path().join("refused")),
        "--insecure-deterministic-seed",
        "5",
    ]);

    for m in &mut file.members {
        let dir = tmp.path().join("machines").join(m.id.as_str());
        let out = ok(&["keygen", "--out", p(&dir)]);
        let public = printed_public_key(&out);
        let secret = medfl_ledger::keyfile::read(&dir.join("member.key")).unwrap();
        assert_eq!(
            medfl_ledger::PublicKey::from(secret.verifying_key()),
            public
        );
        assert_eq!(mode(&dir.join("member.key")), 0o600);
        let peer = medfl_net::peer_id_of(&secret.verifying_key()).to_string();
        let card = std::fs::read_to_string(dir.join("member.pub")).unwrap();
        assert!(
            card.contains(&public.to_string()) && card.contains(&peer),
            "{card}"
        );
        assert!(out.contains(&peer), "{out}");
        m.public_key = Some(public);
    }
    let again = fails(&["keygen", "--out", p(&tmp.path().join("machines/st-olaf"))]);
    assert!(again.contains("never overwrites"), "{again}");

    let consortium = tmp.path().join("consortium.toml");
    std::fs::write(&consortium, file.to_toml().unwrap()).unwrap();
    let cons = tmp.path().join("cons");
    let printed = ok(&[
        "provision",
        "--consortium",
        p(&consortium),
        "--out",
        p(&cons),
    ]);
    assert!(printed.contains("no secret key was written"), "{printed}");
    let genesis =
        Genesis::from_toml(&std::fs::read_to_string(cons.join("genesis.toml")).unwrap()).unwrap();
    for (m, planned) in genesis.members.iter().zip(&file.members) {
        assert_eq!(Some(m.public_key), planned.public_key);
        assert!(!cons.join(m.id.as_str()).join("member.key").exists());
        assert!(
            cons.join(m.id.as_str())
                .join("KEY-NOT-INCLUDED.txt")
                .is_file()
        );
    }
    for path in files_under(&cons) {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{}", path.display());
    }

    // A member without its key in place gets told what to do; with it, it starts.
    let config = cons.join("st-olaf/config.toml");
    let err = match medfl::daemon::Member::load(&config, InsecureKeys::Refuse) {
        Ok(_) => panic!("loaded a member without a key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("medfl keygen"), "{err}");
    std::fs::rename(
        tmp.path().join("machines/st-olaf/member.key"),
        cons.join("st-olaf/member.key"),
    )
    .unwrap();
    let member = medfl::daemon::Member::load(&config, InsecureKeys::Refuse).unwrap();
    assert_eq!(member.genesis, genesis);
    // Another member's key in the wrong folder is refused.
    std::fs::rename(
        tmp.path().join("machines/riverside/member.key"),
        cons.join("mercy-general/member.key"),
    )
    .unwrap();
    assert!(
        medfl::daemon::Member::load(
            &cons.join("mercy-general/config.toml"),
            InsecureKeys::Refuse
        )
        .is_err()
    );
}

#[test]
fn provision_can_still_generate_keys_centrally_when_told() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("consortium");
    let central = [
        "provision",
        "--consortium",
        &plan(),
        "--generate-keys-centrally",
        "--out",
    ];
    let run = medfl(&[&central[..], &[p(&out)]].concat());
    assert!(run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("can sign as each of those members"),
        "the cost is said"
    );
    let genesis =
        Genesis::from_toml(&std::fs::read_to_string(out.join("genesis.toml")).unwrap()).unwrap();
    assert_eq!(genesis.members.len(), 7);
    for m in &genesis.members {
        let dir = out.join(m.id.as_str());
        let key_path = dir.join("member.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key_path.display());
        }
        let key = medfl_ledger::keyfile::read(&key_path).unwrap();
        assert_eq!(
            medfl_ledger::PublicKey::from(key.verifying_key()),
            m.public_key,
            "the key file matches the genesis"
        );
        let config: MemberConfig =
            toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        assert_eq!((config.member.clone(), config.role), (m.id.clone(), m.role));
        assert_eq!(
            config.coordinators,
            vec!["/ip4/127.0.0.1/tcp/7000".to_string()]
        );
        let own = Genesis::from_toml(&std::fs::read_to_string(dir.join("genesis.toml")).unwrap())
            .unwrap();
        assert_eq!(own, genesis);
        let peers = std::fs::read_to_string(dir.join("peers.toml")).unwrap();
        assert!(
            !peers.contains(&format!("id = \"{}\"", m.id)),
            "a member is not its own peer"
        );
    }
    // Never overwrites; OS keys differ between runs; a public seed reproduces.
    assert!(fails(&[&central[..], &[p(&out)]].concat()).contains("not empty"));
    let again = tmp.path().join("again");
    ok(&[&central[..], &[p(&again)]].concat());
    assert_ne!(
        std::fs::read(out.join("genesis.toml")).unwrap(),
        std::fs::read(again.join("genesis.toml")).unwrap()
    );
    let (s1, s2) = (tmp.path().join("s1"), tmp.path().join("s2"));
    for s in [&s1, &s2] {
        ok(&[&central[..], &[p(s), "--insecure-deterministic-seed", "5"]].concat());
    }
    assert_eq!(
        std::fs::read(s1.join("genesis.toml")).unwrap(),
        std::fs::read(s2.join("genesis.toml")).unwrap()
    );
    // Seeded keys are marked inside their files; the daemons refuse them unless told.
    let seeded = s1.join("st-olaf/member.key");
    assert!(
        std::fs::read_to_string(&seeded)
            .unwrap()
            .starts_with(medfl_ledger::keyfile::INSECURE_MARKER)
    );
    assert!(medfl_ledger::keyfile::read(&seeded).is_err());
    let config = s1.join("st-olaf/config.toml");
    let err = match medfl::daemon::Member::load(&config, InsecureKeys::Refuse) {
        Ok(_) => panic!("a seeded key was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--allow-insecure-keys"), "{err}");
    medfl::daemon::Member::load(&config, InsecureKeys::Allow).unwrap();
    let coordinator = s1.join("coordinator/config.toml");
    assert!(
        fails(&["coordinator", "--config", p(&coordinator)]).contains("public seed"),
        "the daemon refuses at startup"
    );
    assert!(
        fails(&[
            "ledger",
            "revoke",
            "--config",
            p(&coordinator),
            "--member",
            "riverside",
            "--reason",
            "test"
        ])
        .contains("--allow-insecure-keys")
    );
    // Same for a seeded keygen.
    let machine = tmp.path().join("machine");
    ok(&[
        "keygen",
        "--out",
        p(&machine),
        "--insecure-deterministic-seed",
        "9",
    ]);
    assert!(medfl_ledger::keyfile::read(&machine.join("member.key")).is_err());

    // The provisioned genesis starts a ledger that verifies.
    let ledger = tmp.path().join("ledger");
    ok(&[
        "ledger",
        "init",
        "--genesis",
        p(&out.join("genesis.toml")),
        p(&ledger),
    ]);
    let genesis_path = out.join("genesis.toml");
    assert!(
        ok(&[
            "ledger",
            "verify",
            "--genesis",
            p(&genesis_path),
            p(&ledger)
        ])
        .starts_with("ok: 0 blocks")
    );
    assert!(
        fails(&[
            "ledger",
            "init",
            "--genesis",
            p(&out.join("genesis.toml")),
            p(&ledger)
        ])
        .contains("already holds a ledger")
    );
}

/// A ledger of 3 blocks of consent changes, built with the library.
fn sample_ledger(dir: &Path) -> (Fixture, Vec<Hash>) {
    let f = Fixture::new(3, 3, 1);
    let mut ledger = Ledger::create(dir, &f.genesis).unwrap();
    let (coord, key) = f.coordinator();
    let mut ids = Vec::new();
    for b in 1..=3u64 {
        let at = Timestamp(T0.0 + b * HOUR);
        let txs = (0..b)
            .map(|i| {
                let who = Fixture::id(&format!("hospital-{i}"));
                let subject = Pseudonym(Hash::tagged(b"cli", &[&(b * 10 + i).to_le_bytes()]));
                f.tx(
                    &who,
                    at,
                    TxBody::Consent {
                        subject,
                        choice: ConsentChoice::OptOut,
                    },
                )
            })
            .collect();
        ids.extend(ledger.append(txs, at, coord, key).unwrap().tx_ids);
    }
    (f, ids)
}

#[test]
fn verify_show_prove_and_check_proof() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (_f, ids) = sample_ledger(&dir);

    let genesis = dir.join("genesis.toml");
    let verify = ["ledger", "verify", "--genesis", p(&genesis), p(&dir)];
    assert!(ok(&verify).starts_with("ok: 3 blocks, 6 transactions"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&[&verify[..], &["--json"]].concat())).unwrap();
    assert_eq!(
        (json["ok"].as_bool(), json["height"].as_u64()),
        (Some(true), Some(3))
    );

    let text = ok(&["ledger", "show", p(&dir)]);
    assert!(
        text.contains("height      3") && text.contains("3 consent"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["ledger", "show", p(&dir), "--json"])).unwrap();
    assert_eq!(json["blocks"].as_array().unwrap().len(), 3);
    assert_eq!(json["members"].as_array().unwrap().len(), 5);
    // Transactions by id, with named fields.
    let tx = &json["blocks"][2]["txs"][1];
    assert_eq!(tx["id"].as_str(), Some(ids[4].to_string().as_str()));
    assert_eq!(tx["kind"].as_str(), Some("consent"));
    assert!(tx["summary"].as_str().unwrap().contains("opts out"), "{tx}");
    assert!(json["agreements"][0]["members"][0]["epsilon_spent"].is_f64());
    assert!(text.contains(&ids[4].to_string()), "{text}");

    let proof = tmp.path().join("proof.json");
    let id = ids[4].to_string();
    ok(&["ledger", "prove", p(&dir), &id, "--out", p(&proof)]);
    let checked = ok(&[
        "ledger",
        "check-proof",
        "--genesis",
        p(&dir.join("genesis.toml")),
        p(&proof),
    ]);
    assert!(
        checked.starts_with(&format!("ok: consent transaction {id} signed by hospital-"))
            && checked.contains("is in block 3"),
        "{checked}"
    );

    // A doctored proof is rejected.
    let doctored =
        std::fs::read_to_string(&proof)
            .unwrap()
            .replacen("\"height\": 2", "\"height\": 7", 1);
    std::fs::write(&proof, doctored).unwrap();
    assert!(
        fails(&[
            "ledger",
            "check-proof",
            "--genesis",
            p(&dir.join("genesis.toml")),
            p(&proof)
        ])
        .contains("proof rejected")
    );
    // Unknown transaction.
    assert!(
        fails(&["ledger", "prove", p(&dir), &Hash::ZERO.to_string()]).contains("not on the ledger")
    );
}

/// A round anchor (floats in its DP parameters and epsilons) proves and checks from the CLI.
#[test]
fn a_round_anchor_proves_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let f = Fixture::new(5, 3, 2);
    let mut ledger = Ledger::create(&dir, &f.genesis).unwrap();
    let (coord, key) = f.coordinator();
    let hospitals: Vec<_> = (0..3)
        .map(|i| Fixture::id(&format!("hospital-{i}")))
        .collect();
    let at = Timestamp(T0.0 + HOUR);
    let round = f.round_on(ledger.state(), 1, Hash::ZERO, &hospitals);
    let id = ledger
        .append(
            vec![f.tx(coord, at, TxBody::AnchorRound(round))],
            at,
            coord,
            key,
        )
        .unwrap()
        .tx_ids[0]
        .to_string();
    let revoke = f.tx(
        coord,
        Timestamp(T0.0 + 2 * HOUR),
        TxBody::RevokeMember {
            member: Fixture::id("hospital-2"),
            reason: "left the consortium".into(),
        },
    );
    ledger
        .append(vec![revoke], Timestamp(T0.0 + 2 * HOUR), coord, key)
        .unwrap();
    drop(ledger);

    // `show` names each transaction, a round's participants with their epsilon and its delta,
    // and why a member was revoked.
    let text = ok(&["ledger", "show", p(&dir)]);
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("3 participants (hospital-0 "), "{text}");
    assert!(text.contains("epsilon at delta 1e-"), "{text}");
    assert!(
        text.contains("hospital-2 revoked by coordinator at ")
            && text.contains("left the consortium"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["ledger", "show", p(&dir), "--json"])).unwrap();
    let round = &json["blocks"][0]["txs"][0]["round"];
    assert_eq!(round["participants"].as_array().unwrap().len(), 3);
    assert!(round["participants"][0]["epsilon_total"].as_f64().unwrap() > 0.0);
    assert!(round["delta"].as_f64().unwrap() > 0.0);
    assert_eq!(
        json["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "hospital-2")
            .unwrap()["revocation"]["reason"],
        "left the consortium"
    );

    let proof = tmp.path().join("proof.json");
    ok(&["ledger", "prove", p(&dir), &id, "--out", p(&proof)]);
    let checked = ok(&[
        "ledger",
        "check-proof",
        "--genesis",
        p(&dir.join("genesis.toml")),
        p(&proof),
    ]);
    assert!(
        checked.starts_with(&format!(
            "ok: anchor-round transaction {id} signed by coordinator is in block 1"
        )),
        "{checked}"
    );
}

#[test]
fn verify_names_the_broken_height() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    sample_ledger(&dir);
    // Flip one byte of block 2 where it lies in the file.
    let block2 = Ledger::open(&dir).unwrap().block(2).unwrap().unwrap();
    let bytes = medfl_ledger::codec::encode(&block2).unwrap();
    let path = dir.join("ledger.redb");
    let mut file = std::fs::read(&path).unwrap();
    let at = file
        .windows(bytes.len())
        .rposition(|w| w == bytes.as_slice())
        .expect("block 2 in the file");
    file[at + bytes.len() / 2] ^= 1;
    std::fs::write(&path, file).unwrap();
    let genesis = dir.join("genesis.toml");
    let stderr = fails(&["ledger", "verify", "--genesis", p(&genesis), p(&dir)]);
    assert!(stderr.contains("height 2"), "{stderr}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::new(1, 2, 1);
    let genesis = tmp.path().join("genesis.toml");
    std::fs::write(&genesis, f.genesis.to_file().to_toml().unwrap()).unwrap();
    // Unknown paths and subcommands.
    assert!(
        fails(&[
            "ledger",
            "verify",
            "--genesis",
            p(&genesis),
            "/no/such/ledger"
        ])
        .contains("not a directory")
    );
    assert!(
        fails(&[
            "ledger",
            "verify",
            "--genesis",
            "/no/such/genesis.toml",
            p(tmp.path())
        ])
        .contains("/no/such/genesis.toml")
    );
    assert!(fails(&["ledger", "show", p(tmp.path())]).contains("holds no ledger"));
    fails(&["ledger", "frobnicate"]);
    fails(&[
        "provision",
        "--consortium",
        "/no/such/plan.toml",
        "--out",
        p(&tmp.path().join("x")),
    ]);
    // A garbage database.
    let garbage = tmp.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("ledger.redb"), vec![0xA5; 10_000]).unwrap();
    assert!(
        fails(&["ledger", "verify", "--genesis", p(&genesis), p(&garbage)]).contains("height 0")
    );
    fails(&["ledger", "show", p(&garbage)]);
    // A genesis with a duplicate member, and one with a malformed key.
    let text = f.genesis.to_file().to_toml().unwrap();
    let dup = text.replace("id = \"hospital-1\"", "id = \"hospital-0\"");
    let dup_path = tmp.path().join("dup.toml");
    std::fs::write(&dup_path, dup).unwrap();
    assert!(
        fails(&[
            "ledger",
            "init",
            "--genesis",
            p(&dup_path),
            p(&tmp.path().join("l1"))
        ])
        .contains("listed twice")
    );
    let key = f.genesis.members[1].public_key.to_string();
    let bad_key = text.replace(&key, &key[..40]);
    let bad_path = tmp.path().join("badkey.toml");
    std::fs::write(&bad_path, bad_key).unwrap();
    assert!(
        fails(&[
            "ledger",
            "init",
            "--genesis",
            p(&bad_path),
            p(&tmp.path().join("l2"))
        ])
        .contains("hex")
    );
    // A plan with an unknown key.
    let plan_path = tmp.path().join("plan.toml");
    std::fs::write(
        &plan_path,
        std::fs::read_to_string(plan())
            .unwrap()
            .replace("quorum = 3", "quorum = 3\nqourum = 2"),
    )
    .unwrap();
    assert!(
        fails(&[
            "provision",
            "--consortium",
            p(&plan_path),
            "--out",
            p(&tmp.path().join("y"))
        ])
        .contains("unknown field")
    );
}

/// A ledger of one block like [`sample_ledger`]'s first, for the consortium of `seed`.
fn other_consortium_ledger(dir: &Path, seed: u64) -> Fixture {
    let f = Fixture::new(seed, 3, 1);
    let mut ledger = Ledger::create(dir, &f.genesis).unwrap();
    let (coord, key) = f.coordinator();
    let at = Timestamp(T0.0 + HOUR);
    let who = Fixture::id("hospital-0");
    let tx = f.tx(
        &who,
        at,
        TxBody::Consent {
            subject: Pseudonym(Hash::tagged(b"cli", &[b"other"])),
            choice: ConsentChoice::OptOut,
        },
    );
    ledger.append(vec![tx], at, coord, key).unwrap();
    f
}

/// The attacker hands an auditor a whole other chain: another consortium's genesis, keys and
/// blocks, correct within itself (its own `genesis.toml` beside it). Verification pinned to the
/// genesis the auditor holds refuses it; the same command accepts the auditor's own ledger and
/// names the genesis it verified from.
#[test]
fn verify_pinned_to_a_genesis_refuses_a_substituted_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let (f, _) = sample_ledger(&ours);
    let our_genesis = tmp.path().join("our-genesis.toml");
    std::fs::write(&our_genesis, f.genesis.to_file().to_toml().unwrap()).unwrap();
    let out = ok(&["ledger", "verify", "--genesis", p(&our_genesis), p(&ours)]);
    assert!(
        out.contains(&format!("genesis {}", f.genesis_hash)),
        "names the genesis: {out}"
    );

    let theirs = tmp.path().join("theirs");
    let other = other_consortium_ledger(&theirs, 77);
    // Self-consistent: it verifies against its own genesis.
    let their_genesis = theirs.join("genesis.toml");
    ok(&[
        "ledger",
        "verify",
        "--genesis",
        p(&their_genesis),
        p(&theirs),
    ]);
    let stderr = fails(&["ledger", "verify", "--genesis", p(&our_genesis), p(&theirs)]);
    assert!(
        stderr.contains(&other.genesis_hash.to_string())
            && stderr.contains(&f.genesis_hash.to_string())
            && stderr.contains("not the genesis you hold"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &medfl(&[
            "ledger",
            "verify",
            "--json",
            "--genesis",
            p(&our_genesis),
            p(&theirs),
        ])
        .stdout
        .iter()
        .map(|b| *b as char)
        .collect::<String>(),
    )
    .unwrap();
    assert_eq!(json["ok"].as_bool(), Some(false));
}

/// A member's startup folder with a ledger someone else wrote into it: a chain of the right
/// consortium whose block is signed by a key that is not the coordinator's (anyone with write
/// access to the folder, or a peer that handed over a copy). Opening it must verify it first.
#[test]
fn daemons_refuse_a_tampered_ledger_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let cons = provision_small(tmp.path(), "11");
    let genesis =
        Genesis::from_toml(&std::fs::read_to_string(cons.join("genesis.toml")).unwrap()).unwrap();
    for member in ["coordinator", "h-a"] {
        forge_ledger(&cons.join(member).join("ledger"), &genesis);
    }

    let hospital =
        medfl::daemon::Member::load(&cons.join("h-a/config.toml"), InsecureKeys::Allow).unwrap();
    let err = match hospital.open_ledger() {
        Ok(_) => panic!("the hospital trusted a ledger it did not verify"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("height 1") && err.contains("signature"),
        "{err}"
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medfl"))
        .args(["coordinator", "--allow-insecure-keys", "--config"])
        .arg(cons.join("coordinator/config.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status =
        status.unwrap_or_else(|| panic!("the coordinator ran on a forged ledger:\n{stderr}"));
    assert!(!status.success());
    assert!(
        stderr.contains("height 1") && stderr.contains("signature"),
        "{stderr}"
    );
}

/// Writes a ledger for `genesis` whose block 1 is well formed but signed by an outsider's key,
/// straight into the store (no append would accept it).
fn forge_ledger(dir: &Path, genesis: &Genesis) {
    use medfl_ledger::block::{BLOCK_VERSION, Block, BlockHeader};
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("genesis.toml"),
        genesis.to_file().to_toml().unwrap(),
    )
    .unwrap();
    use medfl_ledger::store::BlockStore;
    let mut store = medfl_ledger::store::RedbStore::create(
        &dir.join("ledger.redb"),
        &medfl_ledger::codec::encode(genesis).unwrap(),
    )
    .unwrap();
    let outsider = ed25519_dalek::SigningKey::from_bytes(&[66; 32]);
    let genesis_hash = genesis.hash().unwrap();
    let at = Timestamp(genesis.created_at.0 + HOUR);
    let tx = medfl_ledger::Transaction::sign(
        &genesis_hash,
        medfl_ledger::MemberId::new("h-a").unwrap(),
        &outsider,
        at,
        TxBody::Consent {
            subject: Pseudonym(Hash::tagged(b"forged", &[])),
            choice: ConsentChoice::OptOut,
        },
    )
    .unwrap();
    let ids = vec![tx.id().unwrap()];
    let header = BlockHeader {
        version: BLOCK_VERSION,
        height: 1,
        previous: genesis_hash,
        tx_root: medfl_ledger::merkle::root(&ids),
        tx_count: 1,
        timestamp: at,
        proposer: medfl_ledger::MemberId::new("coordinator").unwrap(),
    }
    .sign(&genesis_hash, &outsider)
    .unwrap();
    let hash = header.hash().unwrap();
    let block = Block {
        header,
        txs: vec![tx],
    };
    let mut tip = 1u64.to_le_bytes().to_vec();
    tip.extend_from_slice(&hash.0);
    store
        .append(1, &medfl_ledger::codec::encode(&block).unwrap(), &ids, &tip)
        .unwrap();
}

/// An auditor reads evidence without writing to it or needing its lock: verify, show and
/// prove work beside the process that keeps the ledger, and leave the file byte for byte.
#[test]
fn inspecting_a_ledger_never_writes_it_nor_needs_its_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (_f, ids) = sample_ledger(&dir);
    // Holds redb's exclusive lock, as the daemon that keeps this ledger does.
    let owner = Ledger::open(&dir).unwrap();
    let db = dir.join("ledger.redb");
    let before = std::fs::read(&db).unwrap();
    let genesis = dir.join("genesis.toml");
    assert!(
        ok(&["ledger", "verify", "--genesis", p(&genesis), p(&dir)]).starts_with("ok: 3 blocks")
    );
    assert!(ok(&["ledger", "show", p(&dir)]).contains("height      3"));
    ok(&["ledger", "prove", p(&dir), &ids[0].to_string()]);
    assert!(
        std::fs::read(&db).unwrap() == before,
        "inspection changed the ledger file"
    );
    drop(owner);
}

/// Single-bit flips in the ledger file: `verify` reports each as an error or passes it (a
/// flip outside anything read); it never crashes (exit 101) nor prints a panic.
#[test]
fn a_damaged_ledger_file_is_an_error_never_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    sample_ledger(&dir);
    let file = std::fs::read(dir.join("ledger.redb")).unwrap();
    let genesis = dir.join("genesis.toml");
    let mut refused = 0;
    for i in 0..12 {
        let copy = tmp.path().join(format!("flip-{i}"));
        std::fs::create_dir(&copy).unwrap();
        std::fs::copy(&genesis, copy.join("genesis.toml")).unwrap();
        let mut damaged = file.clone();
        damaged[i * file.len() / 12 + 3 * i] ^= 1 << (i % 8);
        std::fs::write(copy.join("ledger.redb"), &damaged).unwrap();
        let out = medfl(&["ledger", "verify", "--genesis", p(&genesis), p(&copy)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !stderr.contains("panicked"),
            "flip {i}: {:?} {stderr}",
            out.status
        );
        refused += usize::from(out.status.code() == Some(1));
    }
    assert!(refused > 0);
}

/// `medfl ledger show --json | head` stops quietly when the reader goes away.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    sample_ledger(&dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medfl"))
        .args(["ledger", "show", "--json", p(&dir)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the child writes: its write meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{:?} {stderr}",
        out.status
    );
}

/// A data file of random bytes is refused with its name and what is wrong, not a bare
/// "stream did not contain valid UTF-8".
#[test]
fn a_binary_data_file_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("events.csv");
    std::fs::write(&data, [0x9f_u8, 0x92, 0x96, 0xff, 0x00, 0x41, b'\n', 0xfe]).unwrap();
    let stderr = fails(&[
        "train",
        "--data",
        p(&data),
        "--out",
        p(&tmp.path().join("m")),
    ]);
    assert!(
        stderr.contains("events.csv") && stderr.contains("not UTF-8"),
        "{stderr}"
    );
}

/// The client, `train` and `eval` share one rule for a malformed row: the file is refused,
/// naming the line, unless `--skip-bad-rows` says to skip (and report) such rows.
#[test]
fn the_client_refuses_a_malformed_row_as_eval_does() {
    let tmp = tempfile::tempdir().unwrap();
    let cons = provision_small(tmp.path(), "12");
    let events = tmp.path().join("events.csv");
    std::fs::write(
        &events,
        format!(
            "{}\nnot,a,valid,row\n",
            medfl_accesslog::csv::EVENT_COLUMNS.join(",")
        ),
    )
    .unwrap();
    let config = cons.join("h-a/config.toml");
    let args = [
        "client",
        "--allow-insecure-keys",
        "--config",
        p(&config),
        "--data",
        p(&events),
    ];
    let stderr = fails(&args);
    assert!(
        stderr.contains("events.csv") && stderr.contains("line 2"),
        "{stderr}"
    );
    // Told to skip, it reports the row and goes on (to find no usable rows here).
    let stderr = fails(&[&args[..], &["--skip-bad-rows"]].concat());
    assert!(
        stderr.contains("skipped 1 malformed rows") && stderr.contains("usable rows"),
        "{stderr}"
    );
}

/// A consortium of a coordinator and two hospitals (agreement `dua`), provisioned into
/// `dir/cons` with keys from the public `seed`.
fn provision_small(dir: &Path, seed: &str) -> PathBuf {
    let plan_path = dir.join("plan.toml");
    std::fs::write(
        &plan_path,
        "name = \"t\"\ncreated_at = \"2026-11-01T00:00:00Z\"\nquorum = 1\n\n\
         [[members]]\nid = \"coordinator\"\nrole = \"coordinator\"\naddress = \"/ip4/127.0.0.1/tcp/9\"\n\n\
         [[members]]\nid = \"h-a\"\nrole = \"hospital\"\n\n\
         [[members]]\nid = \"h-b\"\nrole = \"hospital\"\n\n\
         [[agreements]]\nid = \"dua\"\npurpose = \"test\"\nmembers = [\"h-a\", \"h-b\"]\n\
         expires_at = \"2030-01-01T00:00:00Z\"\nepsilon = 5.0\ndelta = 1e-5\n",
    )
    .unwrap();
    let cons = dir.join("cons");
    ok(&[
        "provision",
        "--consortium",
        p(&plan_path),
        "--out",
        p(&cons),
        "--generate-keys-centrally",
        "--insecure-deterministic-seed",
        seed,
    ]);
    cons
}

/// [`provision_small`], with the coordinator's and h-a's ledger copies created as their
/// daemons would on first start.
fn small_consortium(dir: &Path, seed: &str) -> PathBuf {
    let cons = provision_small(dir, seed);
    for m in ["coordinator", "h-a"] {
        medfl::daemon::Member::load(&cons.join(m).join("config.toml"), InsecureKeys::Allow)
            .unwrap()
            .open_ledger()
            .unwrap();
    }
    cons
}

/// Governance from the command line: a coordinator proposes members, agreements and
/// revocations; the contracts are tried on the proposer's own copy first, so a transaction
/// they refuse is refused at once, naming the rule, and nothing is queued.
#[test]
fn governance_is_proposed_from_the_cli_and_checked_before_it_is_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let cons = small_consortium(tmp.path(), "13");
    let coord = cons.join("coordinator/config.toml");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let public_key = hex::encode(key.verifying_key().to_bytes());
    let propose = |config: &Path, args: &[&str]| -> Vec<String> {
        [
            &[
                "ledger",
                "propose",
                "--allow-insecure-keys",
                "--config",
                p(config),
            ][..],
            args,
        ]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&refs)
    };
    let refuse = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&refs)
    };
    let out = run(propose(
        &coord,
        &[
            "add-member",
            "--id",
            "h-c",
            "--role",
            "hospital",
            "--public-key",
            &public_key,
        ],
    ));
    assert!(out.contains("add-member transaction"), "{out}");
    let out = run(propose(
        &coord,
        &[
            "register-agreement",
            "--id",
            "study-2",
            "--purpose",
            "second study",
            "--members",
            "h-a,h-b",
            "--expires",
            "2031-01-01T00:00:00Z",
            "--epsilon",
            "4",
            "--delta",
            "1e-6",
            "--like",
            "dua",
        ],
    ));
    assert!(out.contains("register-agreement transaction"), "{out}");
    let out = run(propose(
        &coord,
        &[
            "extend-agreement",
            "--agreement",
            "dua",
            "--expires",
            "2032-01-01T00:00:00Z",
        ],
    ));
    assert!(out.contains("extend-agreement transaction"), "{out}");
    let err = refuse(propose(
        &coord,
        &[
            "extend-agreement",
            "--agreement",
            "dua",
            "--expires",
            "2029-01-01T00:00:00Z",
        ],
    ));
    assert!(err.contains("extension-later"), "{err}");
    let queued = std::fs::read_dir(cons.join("coordinator/inbox"))
        .unwrap()
        .count();
    assert_eq!(queued, 3);

    // The contracts refuse, here and now: a hospital adding a member, an unknown member revoked.
    let hospital = cons.join("h-a/config.toml");
    let err = refuse(propose(
        &hospital,
        &[
            "add-member",
            "--id",
            "h-d",
            "--role",
            "hospital",
            "--public-key",
            &public_key,
        ],
    ));
    assert!(
        err.contains("the contracts refuse this add-member") && err.contains("nothing was queued"),
        "{err}"
    );
    let err = refuse(propose(
        &coord,
        &["revoke", "--member", "nobody", "--reason", "x"],
    ));
    assert!(
        err.contains("the contracts refuse this revoke-member"),
        "{err}"
    );
    assert!(std::fs::read_dir(cons.join("h-a/outbox")).map_or(0, |d| d.count()) == 0);
    assert_eq!(
        std::fs::read_dir(cons.join("coordinator/inbox"))
            .unwrap()
            .count(),
        3
    );
    // Told to skip its own check (its copy may be behind), it queues anyway.
    run(propose(
        &coord,
        &[
            "--skip-check",
            "revoke",
            "--member",
            "nobody",
            "--reason",
            "x",
        ],
    ));
    assert_eq!(
        std::fs::read_dir(cons.join("coordinator/inbox"))
            .unwrap()
            .count(),
        4
    );
}

/// An auditor syncs its copy from any member's ledger directory: every new block is checked
/// against the copy, a second sync adds nothing, and a source of another consortium or one
/// that forks from the copy is refused.
#[test]
fn an_auditor_syncs_a_copy_from_a_members_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("member-ledger");
    let (_f, _) = sample_ledger(&source);
    let genesis = source.join("genesis.toml");
    let mine = tmp.path().join("auditor-copy");
    let sync = |from: &Path| {
        medfl(&[
            "ledger",
            "sync",
            "--from",
            p(from),
            "--genesis",
            p(&genesis),
            p(&mine),
        ])
    };
    let out = sync(&source);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("synced 3 blocks"), "{text}");
    let again = String::from_utf8_lossy(&sync(&source).stdout).into_owned();
    assert!(again.starts_with("synced 0 blocks"), "{again}");
    assert!(
        ok(&["ledger", "verify", "--genesis", p(&genesis), p(&mine)]).starts_with("ok: 3 blocks")
    );

    // A ledger of the same consortium whose blocks differ from the copy's is a fork: refused.
    let forked = tmp.path().join("forked");
    let f = Fixture::new(3, 3, 1);
    let mut ledger = Ledger::create(&forked, &f.genesis).unwrap();
    let (coord, key) = f.coordinator();
    for b in 1..=4u64 {
        let at = Timestamp(T0.0 + b * HOUR);
        let who = Fixture::id("hospital-0");
        let subject = Pseudonym(Hash::tagged(b"fork", &[&b.to_le_bytes()]));
        let tx = f.tx(
            &who,
            at,
            TxBody::Consent {
                subject,
                choice: ConsentChoice::OptOut,
            },
        );
        ledger.append(vec![tx], at, coord, key).unwrap();
    }
    drop(ledger);
    let out = sync(&forked);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a fork"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another consortium's ledger is refused.
    let other = tmp.path().join("other");
    other_consortium_ledger(&other, 77);
    let out = sync(&other);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another chain"));
}
