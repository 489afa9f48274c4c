//! `medfl ledger sync --config`: bring a member's ledger copy (an auditor's, typically) up to
//! date from the running coordinator over the network, checking every block against the copy
//! as a hospital's daemon does, then stop.
//!
//! The member connects with its own key (any active member may), says how many blocks it has
//! (`Hello`), and appends what the coordinator's catch-up sends, in order. A gap makes it ask
//! again from its own height; a coordinator-signed block it holds with other contents is a
//! fork, saved as evidence (both headers) and reported; a block the copy refuses stops the
//! sync. It ends once the copy has not grown for `idle` (whatever else arrives), or after
//! [`MAX_SYNC`] in all; if it saw a block beyond where the copy ends, it says the copy is
//! behind and fails. What it cannot see: blocks the coordinator withholds and never mentions.

use std::path::Path;
use std::time::Duration;

use medfl_ledger::codec;
use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use medfl_ledger::Hash;
use medfl_net::{NetConfig, NetEvent};
use medfl_protocol::{Envelope, ToAgent, ToCoordinator};

use super::{InsecureKeys, Member, write_atomic};

/// The longest a sync runs, however the coordinator paces its blocks.
pub const MAX_SYNC: Duration = Duration::from_secs(3600);

/// What a sync did.
#[derive(Debug)]
pub struct SyncReport {
    /// Blocks appended.
    pub appended: u64,
    /// The copy's height afterwards.
    pub height: u64,
    /// The copy's tip afterwards.
    pub tip: Hash,
}

/// Syncs the ledger copy of the member configured in `config` from its coordinator.
pub async fn from_coordinator(
    config: &Path,
    insecure: InsecureKeys,
    idle: Duration,
) -> Result<SyncReport> {
    let member = Member::load(config, insecure)?;
    let mut ledger = member.open_ledger()?;
    let start = ledger.state().height();
    let (coordinator_peer, address) = member.coordinator()?;
    let (net, mut events) = medfl_net::spawn::<Envelope>(
        &member.key,
        NetConfig::default(),
        [coordinator_peer].into_iter().collect(),
    )
    .await
    .context("starting the network")?;
    net.dial(address.clone())
        .await
        .with_context(|| format!("cannot reach the coordinator at {address}"))?;
    let hello = |height| Envelope::ToCoordinator(ToCoordinator::Hello { height });
    net.send(coordinator_peer, &hello(ledger.state().height()))
        .await
        .context("asking for the blocks")?;
    let mut asked_at = ledger.state().height();
    // Heights the coordinator showed us; above the copy's at the end means "behind".
    let mut highest_seen = ledger.state().height();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        // Idle counts from the last block appended, not the last message: a coordinator
        // repeating what the copy holds cannot keep the sync running.
        let deadline = (last_progress + idle).min(started + MAX_SYNC);
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the network stopped"),
            Err(_) => break,
        };
        match event {
            NetEvent::Message {
                from,
                msg: Envelope::ToAgent(ToAgent::Block(block)),
            } if from == coordinator_peer => {
                let height = block.header.header.height;
                let ours = ledger.state().height();
                if height == 0 {
                    bail!("the coordinator sent a block at height 0, which no chain has");
                }
                highest_seen = highest_seen.max(height);
                if height <= ours {
                    let held = ledger
                        .block(height)?
                        .with_context(|| format!("the copy lacks its own block {height}"))?;
                    if held.header != block.header
                        && medfl_client::hospital::signed_by_a_coordinator(&ledger, &block)
                    {
                        let path = member.dir.join(format!("equivocation-{height}.bin"));
                        let saved = codec::encode(&(&held.header, &block.header))
                            .map_err(anyhow::Error::from)
                            .and_then(|b| write_atomic(&path, &b));
                        bail!(
                            "the coordinator signed another block at height {height} than the copy holds ({} vs {}): a fork; the copy is unchanged{}",
                            block.header.hash()?,
                            held.header.hash()?,
                            if saved.is_ok() {
                                format!("; both headers saved in {}", path.display())
                            } else {
                                String::new()
                            }
                        );
                    }
                } else if height > ours + 1 {
                    if asked_at != ours {
                        asked_at = ours;
                        net.send(coordinator_peer, &hello(ours)).await?;
                    }
                } else {
                    ledger.append_block(&block).with_context(|| {
                        format!(
                            "block {height} from the coordinator refused (the copy keeps blocks 1 to {ours})"
                        )
                    })?;
                    last_progress = Instant::now();
                }
            }
            NetEvent::Message {
                from,
                msg: Envelope::ToAgent(ToAgent::Refused { notice, .. }),
            } if from == coordinator_peer => {
                bail!(
                    "the coordinator refuses this member: {} (its word, signed by {})",
                    notice.refusal.reason,
                    notice.signer
                )
            }
            NetEvent::Disconnected(p) if p == coordinator_peer => {
                bail!("the coordinator closed the connection")
            }
            // Round traffic and everything else is not a sync's business.
            _ => {}
        }
    }
    net.shutdown().await;
    let height = ledger.state().height();
    if highest_seen > height {
        bail!(
            "the copy is behind: the coordinator showed block {highest_seen}, the copy ends at {height} after {} new blocks (try again; a coordinator that withholds blocks looks the same)",
            height - start
        );
    }
    Ok(SyncReport {
        appended: ledger.state().height() - start,
        height: ledger.state().height(),
        tip: ledger.state().tip(),
    })
}
