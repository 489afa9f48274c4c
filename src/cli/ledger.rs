//! `medfl ledger`: create, sync, verify, show and prove a ledger copy, and sign a member's own
//! transactions for its daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use medfl::ledger::{Genesis, InclusionProof, Ledger, verify_dir_from};
use medfl::report;

use super::args::{InsecureKeysArg, LedgerCommand, SubmitBody};
use super::{check_dir, emit, load_genesis, open_snapshot, read, runtime};

pub(crate) fn run(cmd: LedgerCommand) -> Result<ExitCode> {
    match cmd {
        LedgerCommand::Init { genesis, dir } => {
            let g = load_genesis(&genesis)?;
            let ledger = Ledger::create(&dir, &g)?;
            println!(
                "created ledger {} (genesis {})",
                dir.display(),
                ledger.state().genesis_hash()
            );
        }
        LedgerCommand::Verify {
            dir,
            genesis,
            tip,
            json,
        } => {
            let pinned = load_genesis(&genesis)?;
            check_dir(&dir)?;
            let result = verify_dir_from(&dir, &pinned, tip);
            if json {
                let value = match &result {
                    Ok(r) => serde_json::json!({
                        "ok": true, "height": r.height, "transactions": r.transactions,
                        "tip": r.tip.to_string(), "genesis": r.genesis.to_string(),
                    }),
                    Err(e) => {
                        serde_json::json!({ "ok": false, "height": e.height, "reason": e.reason })
                    }
                };
                emit(&serde_json::to_string_pretty(&value)?)?;
            }
            match result {
                Ok(r) => {
                    if !json {
                        println!(
                            "ok: {} blocks, {} transactions verified from genesis {}; tip {}",
                            r.height, r.transactions, r.genesis, r.tip
                        );
                    }
                }
                Err(e) => {
                    eprintln!("verification failed at height {}: {}", e.height, e.reason);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        LedgerCommand::Show { dir, json, blocks } => {
            let ledger = open_snapshot(&dir)?;
            let summary = report::summarize(&ledger)?;
            if json {
                emit(&serde_json::to_string_pretty(&summary)?)?;
            } else {
                emit(report::render_text(&summary, blocks).trim_end())?;
            }
        }
        LedgerCommand::Prove { dir, tx_id, out } => {
            let ledger = open_snapshot(&dir)?;
            let proof = ledger.prove(&tx_id)?;
            let text = serde_json::to_string_pretty(&proof)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "proof of {tx_id} (block {}) written to {}",
                        proof.headers.len(),
                        path.display()
                    );
                }
                None => emit(&text)?,
            }
        }
        // The same path as `submit revoke`: checked on the coordinator's copy, then queued.
        LedgerCommand::Revoke {
            config,
            insecure,
            member,
            reason,
        } => submit(
            &config,
            insecure,
            false,
            SubmitBody::Revoke { member, reason },
        )?,
        LedgerCommand::Submit {
            config,
            skip_check,
            insecure,
            body,
        } => submit(&config, insecure, skip_check, body)?,
        LedgerCommand::Sync {
            config: Some(config),
            insecure,
            idle_s,
            ..
        } => {
            let idle = std::time::Duration::try_from_secs_f64(idle_s)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--idle-s must be a positive number of seconds")?;
            let r = runtime()?.block_on(medfl::daemon::sync::from_coordinator(
                &config,
                insecure.policy(),
                idle,
            ))?;
            println!(
                "synced {} blocks from the coordinator: height {}, tip {} (each checked against the copy)",
                r.appended, r.height, r.tip
            );
        }
        LedgerCommand::Sync {
            from: Some(from),
            genesis: Some(genesis),
            dir: Some(dir),
            ..
        } => {
            let pinned = load_genesis(&genesis)?;
            // The source's raw bytes only: nothing of it is trusted or replayed; each block is
            // judged by our copy's rules (signatures first) as it is appended.
            check_dir(&from)?;
            let source = medfl::ledger::store::RedbStore::open_snapshot(
                &from.join(medfl::ledger::ledger::DB_FILE),
            )
            .with_context(|| format!("reading {}", from.display()))?;
            let their_block = |height: u64| -> Result<Option<medfl::ledger::Block>> {
                use medfl::ledger::store::BlockStore;
                source
                    .block(height)?
                    .map(|bytes| medfl::ledger::codec::decode(&bytes))
                    .transpose()
                    .with_context(|| format!("block {height} of {} is damaged", from.display()))
            };
            let their_genesis: Genesis = {
                use medfl::ledger::store::BlockStore;
                let bytes = source
                    .genesis()?
                    .with_context(|| format!("{} stores no genesis", from.display()))?;
                medfl::ledger::codec::decode(&bytes)
                    .with_context(|| format!("the genesis stored in {}", from.display()))?
            };
            if their_genesis.hash()? != pinned.hash()? {
                bail!(
                    "{} starts from genesis {}, not the one you hold ({}): another chain",
                    from.display(),
                    their_genesis.hash()?,
                    pinned.hash()?
                );
            }
            let mut copy = if dir.join(medfl::ledger::ledger::DB_FILE).exists() {
                Ledger::open_verified(&dir, &pinned)
                    .with_context(|| format!("your copy in {} does not verify", dir.display()))?
            } else {
                Ledger::create(&dir, &pinned)
                    .with_context(|| format!("creating {}", dir.display()))?
            };
            let ours = copy.state().height();
            // The source must extend our copy, not fork from it.
            if ours > 0 {
                match their_block(ours)? {
                    Some(theirs) if theirs.header.hash()? != copy.state().tip() => bail!(
                        "{} holds another block at height {ours} than your copy ({} vs {}): a fork; keep both as evidence",
                        from.display(),
                        theirs.header.hash()?,
                        copy.state().tip()
                    ),
                    Some(_) => {}
                    None => bail!(
                        "{} ends before your copy's height {ours}: nothing to sync from it",
                        from.display()
                    ),
                }
            }
            let mut height = ours + 1;
            while let Some(block) = their_block(height)? {
                copy.append_block(&block).with_context(|| {
                    format!(
                        "block {height} of {} refused (your copy keeps blocks 1 to {})",
                        from.display(),
                        height - 1
                    )
                })?;
                height += 1;
            }
            println!(
                "synced {} blocks from {}: {} at height {}, tip {} (each checked against your copy from the genesis you hold)",
                copy.state().height() - ours,
                from.display(),
                dir.display(),
                copy.state().height(),
                copy.state().tip()
            );
        }
        LedgerCommand::Sync { .. } => {
            bail!("give --from DIR --genesis FILE with your copy's DIR, or --config")
        }
        LedgerCommand::CheckProof { genesis, proof } => {
            let g = load_genesis(&genesis)?;
            let text = read(&proof)?;
            let p: InclusionProof = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a medfl inclusion proof", proof.display()))?;
            match p.verify(&g) {
                Ok(t) => println!(
                    "ok: {} transaction {} signed by {} is in block {} ({}){}",
                    t.kind,
                    t.id,
                    t.signer,
                    t.height,
                    t.block_time,
                    if t.signer_checked {
                        "; signer's signature checked"
                    } else {
                        "; signer admitted after genesis, its signature not checkable from the genesis alone"
                    }
                ),
                Err(e) => {
                    eprintln!("proof rejected: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Signs `body` as the member configured in `config`, tries it against the contracts on the
/// member's own ledger copy (unless `skip_check`), and queues it for the member's daemon.
pub(crate) fn submit(
    config: &Path,
    insecure: InsecureKeysArg,
    skip_check: bool,
    body: SubmitBody,
) -> Result<()> {
    let me = medfl::daemon::Member::load(config, insecure.policy())?;
    // The member's own copy, read as a snapshot (its daemon may be running).
    let copy = me.dir.join(&me.config.ledger_dir);
    let ledger = Ledger::open_snapshot(&copy)
        .with_context(|| format!("reading the ledger copy in {}", copy.display()))?;
    if ledger.state().genesis_hash() != me.genesis.hash()? {
        bail!(
            "the ledger copy in {} belongs to another consortium",
            copy.display()
        );
    }
    let body = body.into_body(&me.config.member, ledger.state())?;
    let kind = body.kind();
    // What is checked is what is queued: one signature, one issue time.
    let now = medfl::daemon::wall_now();
    let tx = medfl::ledger::Transaction::sign(
        &me.genesis.hash()?,
        me.config.member.clone(),
        &me.key,
        now,
        body,
    )?;
    if let Err(e) = ledger.state().check_tx(&tx, now)
        && !skip_check
    {
        bail!(
            "the contracts refuse this {kind} transaction on {}'s ledger copy (height {}): {e}; nothing was queued",
            me.config.member,
            ledger.state().height()
        );
    }
    drop(ledger);
    let (path, id) = medfl::daemon::queue_signed(&me, &tx)?;
    println!(
        "{kind} transaction {id} queued for {}'s daemon: {}",
        me.config.member,
        path.display()
    );
    Ok(())
}
