//! The `medfl` binary end to end: provisioning, ledger init/verify/show/prove/check-proof, and
//! bad input giving a clear error and a non-zero exit, never a panic.

mod common;

use std::path::Path;

use common::{fails, ok, p};

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

#[test]
fn provision_writes_a_startup_folder_per_member() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("consortium");
    ok(&["provision", "--consortium", &plan(), "--out", p(&out)]);
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
    assert!(fails(&["provision", "--consortium", &plan(), "--out", p(&out)]).contains("not empty"));
    let again = tmp.path().join("again");
    ok(&["provision", "--consortium", &plan(), "--out", p(&again)]);
    assert_ne!(
        std::fs::read(out.join("genesis.toml")).unwrap(),
        std::fs::read(again.join("genesis.toml")).unwrap()
    );
    let (s1, s2) = (tmp.path().join("s1"), tmp.path().join("s2"));
    ok(&[
        "provision",
        "--consortium",
        &plan(),
        "--out",
        p(&s1),
        "--insecure-deterministic-seed",
        "5",
    ]);
    ok(&[
        "provision",
        "--consortium",
        &plan(),
        "--out",
        p(&s2),
        "--insecure-deterministic-seed",
        "5",
    ]);
    assert_eq!(
        std::fs::read(s1.join("genesis.toml")).unwrap(),
        std::fs::read(s2.join("genesis.toml")).unwrap()
    );

    // The provisioned genesis starts a ledger that verifies.
    let ledger = tmp.path().join("ledger");
    ok(&[
        "ledger",
        "init",
        "--genesis",
        p(&out.join("genesis.toml")),
        p(&ledger),
    ]);
    assert!(ok(&["ledger", "verify", p(&ledger)]).starts_with("ok: 0 blocks"));
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

    assert!(ok(&["ledger", "verify", p(&dir)]).starts_with("ok: 3 blocks, 6 transactions"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["ledger", "verify", p(&dir), "--json"])).unwrap();
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
        checked.starts_with(&format!("ok: transaction {id} is in block 3")),
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
    let stderr = fails(&["ledger", "verify", p(&dir)]);
    assert!(stderr.contains("height 2"), "{stderr}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Unknown paths and subcommands.
    assert!(fails(&["ledger", "verify", "/no/such/ledger"]).contains("not a directory"));
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
    assert!(fails(&["ledger", "verify", p(&garbage)]).contains("height 0"));
    fails(&["ledger", "show", p(&garbage)]);
    // A genesis with a duplicate member, and one with a malformed key.
    let f = Fixture::new(1, 2, 1);
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
