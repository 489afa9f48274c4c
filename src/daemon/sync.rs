//! `medfl ledger sync --config`: bring a member's ledger copy (an auditor's, typically) up to
//! date from the running coordinator over the network, checking every block against the copy
//! as a hospital's daemon does, then stop.
//!
//! The member connects with its own key (any active member may), says how many blocks it has
//! (`Hello`), and appends what the coordinator's catch-up sends, in order. A gap makes it ask
//! again from its own height; a block it holds with other contents is a fork, reported with
//! both hashes; a block the copy refuses stops the sync. It ends once no block has come for
//! `idle` after the last one.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use medfl_ledger::{Hash, Role};
use medfl_net::{Multiaddr, NetConfig, NetEvent};
use medfl_protocol::{Envelope, ToAgent, ToCoordinator};

use super::{InsecureKeys, Member};

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
    let coordinator = member
        .genesis
        .members
        .iter()
        .find(|m| m.role == Role::Coordinator)
        .context("the genesis lists no coordinator")?;
    let coordinator_peer = medfl_net::peer_id_of(coordinator.public_key.as_dalek());
    let address: Multiaddr = member
        .config
        .coordinators
        .first()
        .context("the config lists no coordinator address")?
        .parse()
        .context("coordinator address")?;
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
    loop {
        let event = match tokio::time::timeout(idle, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the network stopped"),
            Err(_) => break, // nothing more came: caught up
        };
        match event {
            NetEvent::Message {
                from,
                msg: Envelope::ToAgent(ToAgent::Block(block)),
            } if from == coordinator_peer => {
                let height = block.header.header.height;
                let ours = ledger.state().height();
                if height <= ours {
                    let held = ledger
                        .block(height)?
                        .with_context(|| format!("block {height} missing in the copy"))?;
                    if held.header != block.header {
                        bail!(
                            "the coordinator sent another block at height {height} than the copy holds ({} vs {}): a fork; the copy is unchanged",
                            block.header.hash()?,
                            held.header.hash()?
                        );
                    }
                } else if height > ours + 1 {
                    if asked_at != ours {
                        asked_at = ours;
                        net.send(coordinator_peer, &hello(ours)).await?;
                    }
                } else {
                    ledger
                        .append_block(&block)
                        .with_context(|| format!("block {height} from the coordinator refused"))?;
                }
            }
            NetEvent::Message {
                from,
                msg: Envelope::ToAgent(ToAgent::Refused { notice, .. }),
            } if from == coordinator_peer => {
                bail!(
                    "the coordinator refuses this member: {}",
                    notice.refusal.reason
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
    Ok(SyncReport {
        appended: ledger.state().height() - start,
        height: ledger.state().height(),
        tip: ledger.state().tip(),
    })
}
