//! A tour of what medfl can do today, in one process: provision a consortium, start its ledger,
//! record consent, audit batches and three anchored rounds, verify everything, prove one round to
//! a light client, and catch a flipped byte.
//!
//! The rounds' model hashes and epsilons are stand-ins (the model and the accountant arrive with
//! later issues); everything about the ledger is real: keys, signatures, endorsements, contracts,
//! durable storage.
//!
//! Run: `cargo run --release --example ledger_tour [-- OUT_DIR]`

use std::path::PathBuf;

use anyhow::{Context, Result};
use ed25519_dalek::Signer;
use medfl::ledger::tx::{
    AuditAnchor, ConsentChoice, Endorsement, PrivacySpend, Pseudonym, RoundAnchor, Strategy,
};
use medfl::ledger::{
    AggregationParams, ConsortiumFile, DpMechanism, DpParams, Hash, Ledger, Role, Timestamp,
    Transaction, TxBody, keyfile, verify_dir,
};
use medfl::provision::{self, KeyGeneration, KeySource};
use medfl::report;

const MINUTE: u64 = 60_000;

/// A tour of the ledger: provisioning, members' transactions, a round anchor, verification,
/// tampering and an inclusion proof.
#[derive(clap::Parser)]
struct Args {
    /// Where to write the tour's consortium (default: a fresh folder under the temp dir).
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let out = args
        .out
        .unwrap_or_else(|| std::env::temp_dir().join(format!("medfl-tour-{}", std::process::id())));
    let plan_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/consortium.toml");
    let plan = ConsortiumFile::from_toml(&std::fs::read_to_string(&plan_path)?)?;

    println!(
        "1. provisioning {} members into {}",
        plan.members.len(),
        out.join("consortium").display()
    );
    // A demo makes every key here from a public seed; a real consortium runs `medfl keygen`
    // on each member's machine and provisions from the public keys alone.
    let kit = provision::provision(
        &plan,
        &out.join("consortium"),
        KeyGeneration::Central(KeySource::InsecureSeed(2026)),
    )?;
    let genesis = kit.genesis.clone();
    let genesis_hash = genesis.hash()?;
    // Each member loads its own key from its startup folder, as a deployed agent would.
    let mut keys = Vec::new();
    for (id, dir) in &kit.folders {
        let (key, _seeded) = keyfile::read_with_origin(&dir.join(provision::files::KEY))?;
        keys.push((id.clone(), key));
    }
    let key = |id: &medfl::ledger::MemberId| {
        &keys
            .iter()
            .find(|(i, _)| i == id)
            .expect("every member has a key")
            .1
    };
    let coordinator = genesis
        .members
        .iter()
        .find(|m| m.role == Role::Coordinator)
        .context("no coordinator")?
        .id
        .clone();
    let hospitals: Vec<_> = genesis
        .members
        .iter()
        .filter(|m| m.role == Role::Hospital)
        .map(|m| m.id.clone())
        .collect();
    let agreement = genesis.agreements[0].id.clone();

    let ledger_dir = out.join("ledger");
    println!("2. creating the ledger in {}", ledger_dir.display());
    let mut ledger = Ledger::create(&ledger_dir, &genesis)?;
    let mut now = genesis.created_at.0 + 60 * MINUTE;
    let sign = |signer: &medfl::ledger::MemberId, at: u64, body: TxBody| {
        Transaction::sign(
            &genesis_hash,
            signer.clone(),
            key(signer),
            Timestamp(at),
            body,
        )
    };

    println!("3. hospitals record consent opt-outs and anchor their access-audit batches");
    let mut txs = Vec::new();
    for (i, h) in hospitals.iter().enumerate() {
        let subject = Pseudonym(Hash::tagged(
            b"tour-salted-patient-id",
            &[h.as_str().as_bytes(), &[i as u8]],
        ));
        txs.push(sign(
            h,
            now,
            TxBody::Consent {
                subject,
                choice: ConsentChoice::OptOut,
            },
        )?);
        let batch = AuditAnchor {
            merkle_root: Hash::tagged(b"tour-audit-batch", &[h.as_str().as_bytes()]),
            count: 1_000 + 250 * i as u64,
            first_event_at: Timestamp(now - 60 * MINUTE),
            last_event_at: Timestamp(now - MINUTE),
        };
        txs.push(sign(h, now, TxBody::AnchorAuditLog(batch))?);
    }
    ledger.append(txs, Timestamp(now), &coordinator, key(&coordinator))?;

    println!("4. three federated rounds, each endorsed by the participating hospitals");
    let mut previous = Hash::of_bytes(b"initial model");
    for round in 1..=3u64 {
        now += 30 * MINUTE;
        let model = Hash::of_bytes(format!("global model after round {round}").as_bytes());
        // Round 2 loses one hospital mid-round: it is recorded as dropped and spends nothing.
        let (participants, dropped) = if round == 2 {
            (&hospitals[..4], &hospitals[4..])
        } else {
            (&hospitals[..], &hospitals[..0])
        };
        let mut anchor = RoundAnchor {
            agreement: agreement.clone(),
            round,
            previous_model: previous,
            model,
            // Filled in below: the epsilon the contract composes from the anchored rounds.
            participants: participants
                .iter()
                .map(|h| (h.clone(), PrivacySpend { epsilon_total: 0.0 }))
                .collect(),
            dropped: dropped.to_vec(),
            dp: DpParams {
                mechanism: DpMechanism::DpSgd,
                noise_multiplier: 1.1,
                sampling_rate: 0.01,
                steps: 200,
                clip_norm: 1.0,
                delta: 1e-5,
            },
            aggregation: AggregationParams {
                neighbours: 4,
                threshold: 3,
                min_survivors: 3,
                bits: 32,
                noise_multiplier: 0.5,
            },
            strategy: Strategy::default(),
            server_state: Hash::of_bytes(format!("server state after round {round}").as_bytes()),
            secagg_transcript: Hash::of_bytes(format!("secagg transcript {round}").as_bytes()),
            endorsements: vec![],
        };
        for (h, spend) in &mut anchor.participants {
            spend.epsilon_total = ledger
                .state()
                .epsilon_after(&agreement, h, &anchor.dp)
                .map_err(anyhow::Error::msg)?;
        }
        let message = anchor.endorsement_message(&genesis_hash)?;
        anchor.endorsements = participants
            .iter()
            .map(|h| Endorsement {
                member: h.clone(),
                signature: key(h).sign(&message).into(),
            })
            .collect();
        ledger.append(
            vec![sign(&coordinator, now, TxBody::AnchorRound(anchor))?],
            Timestamp(now),
            &coordinator,
            key(&coordinator),
        )?;
        previous = model;
    }
    let round3_tx = ledger
        .block(ledger.state().height())?
        .context("last block")?
        .tx_ids()?[0];
    print!(
        "\n{}",
        report::render_text(&report::summarize(&ledger)?, 10)
    );
    drop(ledger);

    println!("\n5. verifying from genesis");
    let report = verify_dir(&ledger_dir, None)?;
    println!(
        "   ok: {} blocks, {} transactions, tip {}",
        report.height, report.transactions, report.tip
    );

    println!("6. proving round 3's anchor to a light client that holds only the genesis");
    let proof = Ledger::open(&ledger_dir)?.prove(&round3_tx)?;
    let proven = proof.verify(&genesis)?;
    println!(
        "   ok: transaction {} is in block {} ({} bytes of proof as JSON)",
        proven.id,
        proven.height,
        serde_json::to_string(&proof)?.len()
    );

    println!("7. flipping one byte of block 2 in a copy of the database");
    let copy = out.join("tampered");
    std::fs::create_dir_all(&copy)?;
    for f in ["ledger.redb", "genesis.toml"] {
        std::fs::copy(ledger_dir.join(f), copy.join(f))?;
    }
    let block2 =
        medfl::ledger::codec::encode(&Ledger::open(&ledger_dir)?.block(2)?.context("block 2")?)?;
    let mut bytes = std::fs::read(copy.join("ledger.redb"))?;
    let at = bytes
        .windows(block2.len())
        .rposition(|w| w == block2.as_slice())
        .context("block 2 is stored contiguously")?;
    bytes[at + block2.len() / 2] ^= 0x01;
    std::fs::write(copy.join("ledger.redb"), bytes)?;
    match verify_dir(&copy, None) {
        Err(e) => println!("   caught: height {}: {}", e.height, e.reason),
        Ok(_) => anyhow::bail!("a tampered ledger verified"),
    }
    println!("\nfiles are in {}", out.display());
    Ok(())
}
