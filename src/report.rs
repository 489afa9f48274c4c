//! What `medfl ledger show` prints: one summary, rendered as tables for people or JSON for
//! programs (the JSON is the same data, complete).

use std::fmt::Write;

use medfl_ledger::tx::ConsentChoice;
use medfl_ledger::{Block, ChainState, Hash, Ledger, LedgerError, Timestamp, Transaction, TxBody};
use serde::Serialize;

/// Everything `show` reports about a ledger.
#[derive(Debug, Serialize)]
pub struct LedgerSummary {
    /// The head, members and agreements.
    #[serde(flatten)]
    pub head: LedgerHead,
    /// Blocks, oldest first.
    pub blocks: Vec<BlockRow>,
}

/// A ledger at a glance: where it stands, who is in it, under which agreements.
#[derive(Debug, Serialize)]
pub struct LedgerHead {
    /// Consortium name.
    pub consortium: String,
    /// Genesis hash.
    pub genesis: Hash,
    /// Blocks after genesis.
    pub height: u64,
    /// Hash of the last block.
    pub tip: Hash,
    /// Time of the last block (the founding time at height 0).
    pub tip_time: Timestamp,
    /// Endorsements a round needs.
    pub quorum: u32,
    /// Members, in id order.
    pub members: Vec<MemberRow>,
    /// Agreements, in id order.
    pub agreements: Vec<AgreementRow>,
}

/// One member.
#[derive(Debug, Serialize)]
pub struct MemberRow {
    /// Id.
    pub id: String,
    /// Role.
    pub role: String,
    /// `active` or `revoked`.
    pub status: &'static str,
    /// Public key, hex.
    pub public_key: String,
    /// Address.
    pub address: String,
    /// Who revoked it, when and why (revoked members only).
    pub revocation: Option<RevocationRow>,
}

/// A revocation as the ledger records it.
#[derive(Debug, Serialize)]
pub struct RevocationRow {
    /// Who signed it.
    pub by: String,
    /// Time of its block.
    pub at: Timestamp,
    /// The reason given.
    pub reason: String,
}

/// One member's standing under an agreement.
#[derive(Debug, Serialize)]
pub struct AgreementMemberRow {
    /// The hospital.
    pub member: String,
    /// Whether it accepted the agreement.
    pub accepted: bool,
    /// Cumulative epsilon spent, at the agreement's delta.
    pub epsilon_spent: f64,
}

/// One agreement and its totals.
#[derive(Debug, Serialize)]
pub struct AgreementRow {
    /// Id.
    pub id: String,
    /// Purpose.
    pub purpose: String,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Epsilon budget per member.
    pub epsilon_budget: f64,
    /// Delta.
    pub delta: f64,
    /// Covered hospitals, whether each accepted, and what each spent.
    pub members: Vec<AgreementMemberRow>,
    /// Last anchored round.
    pub last_round: u64,
    /// Model of the last anchored round.
    pub last_model: Option<Hash>,
}

/// One block.
#[derive(Debug, Serialize)]
pub struct BlockRow {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: Hash,
    /// Time.
    pub time: Timestamp,
    /// Proposer.
    pub proposer: String,
    /// Transactions, in block order.
    pub txs: Vec<TxRow>,
}

/// One transaction.
#[derive(Debug, Serialize)]
pub struct TxRow {
    /// Id (what `medfl ledger prove` takes).
    pub id: Hash,
    /// Kind.
    pub kind: &'static str,
    /// Signer.
    pub signer: String,
    /// What it says, in one line.
    pub summary: String,
    /// For a round anchor: who took part, with what they spent, and who dropped out.
    pub round: Option<RoundRow>,
}

/// What a round anchor records.
#[derive(Debug, Serialize)]
pub struct RoundRow {
    /// Agreement.
    pub agreement: String,
    /// Round number.
    pub round: u64,
    /// The new model.
    pub model: Hash,
    /// Participants with their cumulative epsilon after the round.
    pub participants: Vec<ParticipantRow>,
    /// Selected members that dropped out.
    pub dropped: Vec<String>,
    /// The delta every epsilon of the round is stated at.
    pub delta: f64,
    /// Endorsements.
    pub endorsements: usize,
}

/// A round's participant.
#[derive(Debug, Serialize)]
pub struct ParticipantRow {
    /// The hospital.
    pub member: String,
    /// Its cumulative epsilon under the agreement after the round, at the round's delta.
    pub epsilon_total: f64,
}

/// The row of one transaction.
fn tx_row(id: Hash, tx: &Transaction) -> TxRow {
    let (summary, round) = match &tx.body {
        TxBody::AddMember(m) => (format!("admits {} as {}", m.id, m.role), None),
        TxBody::RevokeMember { member, reason } => (format!("revokes {member}: {reason}"), None),
        TxBody::RegisterAgreement(a) => (
            format!(
                "registers {} for {} members, epsilon {} at delta {:e}, until {}",
                a.id,
                a.members.len(),
                a.budget.epsilon,
                a.budget.delta,
                a.expires_at
            ),
            None,
        ),
        TxBody::AcceptAgreement { agreement } => (format!("accepts {agreement}"), None),
        TxBody::AcceptTerms {
            agreement,
            expires_at,
        } => (format!("accepts {agreement} until {expires_at}"), None),
        TxBody::ExtendAgreement {
            agreement,
            expires_at,
        } => (
            format!("extends {agreement} to {expires_at} (its members accept again)"),
            None,
        ),
        TxBody::Consent { subject, choice } => (
            format!(
                "patient {}.. {}",
                &subject.0.to_string()[..12],
                match choice {
                    ConsentChoice::OptOut => "opts out",
                    ConsentChoice::OptIn => "opts in",
                }
            ),
            None,
        ),
        TxBody::AnchorRound(r) => {
            let row = RoundRow {
                agreement: r.agreement.to_string(),
                round: r.round,
                model: r.model,
                participants: r
                    .participants
                    .iter()
                    .map(|(m, spend)| ParticipantRow {
                        member: m.to_string(),
                        epsilon_total: spend.epsilon_total,
                    })
                    .collect(),
                dropped: r.dropped.iter().map(ToString::to_string).collect(),
                delta: r.dp.delta,
                endorsements: r.endorsements.len(),
            };
            let summary = format!(
                "round {} of {}: model {}.., {} participants ({}), dropped [{}], epsilon at delta {:e}",
                r.round,
                r.agreement,
                short(&r.model),
                row.participants.len(),
                row.participants
                    .iter()
                    .map(|p| format!("{} {:.3}", p.member, p.epsilon_total))
                    .collect::<Vec<_>>()
                    .join(", "),
                row.dropped.join(", "),
                r.dp.delta
            );
            (summary, Some(row))
        }
        TxBody::AnchorAuditLog(a) => (
            format!(
                "{} audit events {} to {}, root {}..",
                a.count,
                a.first_event_at,
                a.last_event_at,
                short(&a.merkle_root)
            ),
            None,
        ),
        TxBody::AnchorAlert(a) => (
            format!(
                "{:?} alert {}.. raised {}",
                a.severity,
                short(&a.alert),
                a.raised_at
            ),
            None,
        ),
    };
    TxRow {
        id,
        kind: tx.body.kind(),
        signer: tx.signer.to_string(),
        summary,
        round,
    }
}

/// The members, in id order, with their standing.
pub fn member_rows(state: &ChainState) -> Vec<MemberRow> {
    state
        .members()
        .map(|r| MemberRow {
            id: r.member.id.to_string(),
            role: r.member.role.to_string(),
            status: if r.revoked { "revoked" } else { "active" },
            public_key: r.member.public_key.to_string(),
            address: r.member.address.clone(),
            revocation: r.revocation.as_ref().map(|v| RevocationRow {
                by: v.by.to_string(),
                at: v.at,
                reason: v.reason.clone(),
            }),
        })
        .collect()
}

/// The agreements, in id order, with what each covered hospital accepted and spent.
pub fn agreement_rows(state: &ChainState) -> Vec<AgreementRow> {
    state
        .agreements()
        .map(|a| AgreementRow {
            id: a.agreement.id.to_string(),
            purpose: a.agreement.purpose.clone(),
            expires_at: a.agreement.expires_at,
            epsilon_budget: a.agreement.budget.epsilon,
            delta: a.agreement.budget.delta,
            members: a
                .agreement
                .members
                .iter()
                .map(|m| AgreementMemberRow {
                    member: m.to_string(),
                    accepted: a.accepted.contains(m),
                    epsilon_spent: a.spent.get(m).copied().unwrap_or(0.0),
                })
                .collect(),
            last_round: a.last_round,
            last_model: a.last_model,
        })
        .collect()
}

/// The block at `height` as a row: its header and every transaction in words.
pub fn block_row(ledger: &Ledger, height: u64) -> Result<BlockRow, LedgerError> {
    let block: Block = ledger.block(height)?.ok_or_else(|| LedgerError::Damaged {
        height,
        source: "block missing".into(),
    })?;
    let ids = block.tx_ids()?;
    Ok(BlockRow {
        height,
        hash: block.header.hash()?,
        time: block.header.header.timestamp,
        proposer: block.header.header.proposer.to_string(),
        txs: block
            .txs
            .iter()
            .zip(ids)
            .map(|(tx, id)| tx_row(id, tx))
            .collect(),
    })
}

/// The head of an open ledger, its members and agreements.
pub fn head(ledger: &Ledger) -> LedgerHead {
    let state = ledger.state();
    LedgerHead {
        consortium: ledger.genesis().name.clone(),
        genesis: state.genesis_hash(),
        height: state.height(),
        tip: state.tip(),
        tip_time: state.tip_time(),
        quorum: state.quorum(),
        members: member_rows(state),
        agreements: agreement_rows(state),
    }
}

/// Gathers the summary of an open ledger.
pub fn summarize(ledger: &Ledger) -> Result<LedgerSummary, LedgerError> {
    let blocks = (1..=ledger.state().height())
        .map(|height| block_row(ledger, height))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LedgerSummary {
        head: head(ledger),
        blocks,
    })
}

/// Lays out rows under headers with columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &mut rule.iter().map(String::as_str));
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

fn short(h: &Hash) -> String {
    h.to_string()[..16].to_string()
}

/// Renders the summary for a terminal; `last_blocks` limits the block list.
pub fn render_text(s: &LedgerSummary, last_blocks: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "consortium  {}", s.head.consortium);
    let _ = writeln!(out, "genesis     {}", s.head.genesis);
    let _ = writeln!(
        out,
        "height      {}   (last block {})",
        s.head.height, s.head.tip_time
    );
    let _ = writeln!(out, "tip         {}", s.head.tip);
    let _ = writeln!(
        out,
        "quorum      {} endorsements per round\n",
        s.head.quorum
    );

    let rows: Vec<Vec<String>> = s
        .head
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.role.clone(),
                m.status.into(),
                format!("{}..", &m.public_key[..16]),
                m.address.clone(),
            ]
        })
        .collect();
    out.push_str("members\n");
    out.push_str(&table(&["id", "role", "status", "key", "address"], &rows));
    for m in &s.head.members {
        if let Some(v) = &m.revocation {
            let _ = writeln!(
                out,
                "  {} revoked by {} at {}: {}",
                m.id, v.by, v.at, v.reason
            );
        }
    }

    for a in &s.head.agreements {
        let _ = writeln!(
            out,
            "\nagreement {}  (expires {}, budget epsilon {} at delta {:e}; last round {}{})",
            a.id,
            a.expires_at,
            a.epsilon_budget,
            a.delta,
            a.last_round,
            a.last_model
                .map(|m| format!(", model {}..", short(&m)))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "  purpose: {}", a.purpose);
        let rows: Vec<Vec<String>> = a
            .members
            .iter()
            .map(|m| {
                let used = 100.0 * m.epsilon_spent / a.epsilon_budget;
                vec![
                    m.member.clone(),
                    if m.accepted { "yes" } else { "no" }.into(),
                    format!("{:.3}", m.epsilon_spent),
                    format!("{used:.1}%"),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "member",
                "accepted",
                &format!("epsilon spent (delta {:e})", a.delta),
                "of budget",
            ],
            &rows,
        ));
    }

    let skip = s.blocks.len().saturating_sub(last_blocks);
    let _ = writeln!(
        out,
        "\nblocks{}",
        if skip > 0 {
            format!(" (last {last_blocks} of {})", s.blocks.len())
        } else {
            String::new()
        }
    );
    let rows: Vec<Vec<String>> = s.blocks[skip..]
        .iter()
        .map(|b| {
            let mut kinds: Vec<(&str, usize)> = Vec::new();
            for tx in &b.txs {
                let kind = &tx.kind;
                match kinds.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, n)) => *n += 1,
                    None => kinds.push((kind, 1)),
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            vec![
                b.height.to_string(),
                b.time.to_string(),
                format!("{}..", short(&b.hash)),
                b.proposer.clone(),
                kinds.join(", "),
            ]
        })
        .collect();
    out.push_str(&table(
        &["height", "time", "hash", "proposer", "transactions"],
        &rows,
    ));

    let _ = writeln!(out, "\ntransactions (ids for `medfl ledger prove`)");
    let rows: Vec<Vec<String>> = s.blocks[skip..]
        .iter()
        .flat_map(|b| {
            b.txs.iter().map(|t| {
                vec![
                    b.height.to_string(),
                    t.id.to_string(),
                    t.kind.to_owned(),
                    t.signer.clone(),
                    t.summary.clone(),
                ]
            })
        })
        .collect();
    out.push_str(&table(&["height", "id", "kind", "signer", "what"], &rows));
    out
}

/// Explanations first: for each generated hospital, the shares of its normal accesses the
/// hospital's own records explain (care team or order at the time, else the patient's department) and
/// the share of its attack accesses they leave unexplained.
pub fn explained(summaries: &[medfl_simulations::HospitalSummary]) -> String {
    let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.1}%", 100.0 * v));
    let share = |n: usize, of: usize| pct((of > 0).then(|| n as f64 / of as f64));
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let (n, a) = (&s.normal_explained, &s.attack_explained);
            vec![
                s.name.clone(),
                share(n.care_team, n.events),
                share(n.department, n.events),
                pct(n.share()),
                share(a.unexplained(), a.events),
            ]
        })
        .collect();
    format!(
        "\nwhat the hospital's records explain (care team or order at the time, else the patient's department)\n\n{}",
        table(
            &[
                "hospital",
                "normal: care team",
                "normal: department",
                "normal explained",
                "attacks unexplained"
            ],
            &rows
        )
    )
}

/// The generated logs' figures beside published figures of real EHR audit logs: each
/// statistic's range over the hospitals, the published range, its source, and whether the
/// hospitals fall inside it.
pub fn realism(summaries: &[medfl_simulations::HospitalSummary]) -> String {
    use medfl_simulations::published::PUBLISHED;
    let stats: Vec<_> = summaries
        .iter()
        .filter_map(|s| s.normal_statistics.as_ref())
        .collect();
    let rows: Vec<Vec<String>> = PUBLISHED
        .iter()
        .map(|p| {
            let values: Vec<f64> = stats.iter().filter_map(|s| p.statistic.of(s)).collect();
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let show = |v: f64| p.statistic.show(v);
            let ours = if values.is_empty() {
                "-".to_owned()
            } else if show(lo) == show(hi) {
                show(lo)
            } else {
                format!("{}-{}", show(lo), show(hi))
            };
            let inside = values.iter().filter(|v| p.contains(**v)).count();
            vec![
                p.statistic.to_string(),
                ours,
                format!("{}-{}", show(p.low), show(p.high)),
                format!("{}/{}", inside, values.len()),
                p.source.to_owned(),
            ]
        })
        .collect();
    format!(
        "\nnormal traffic against published figures of real EHR audit logs (docs/realism.md)\n\n{}",
        table(
            &[
                "statistic",
                "this scenario",
                "published",
                "hospitals in range",
                "source"
            ],
            &rows
        )
    )
}
