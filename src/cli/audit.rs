//! `medfl audit`: a hospital's access-monitor audit log, checked against its anchors and read
//! as a patient-access report.

use anyhow::{Context, Result};

use super::args::AuditCommand;
use super::emit;

/// `medfl audit verify|history`.
pub(crate) fn run(cmd: AuditCommand) -> Result<()> {
    use medfl_monitor::audit::RecordBody;
    match cmd {
        AuditCommand::Verify { config, insecure } => {
            let member = medfl::daemon::Member::load(&config, insecure.policy())?;
            // The anchors first, then the log: the log only grows, so the copy holds every
            // record an anchor read here can name.
            let anchors = medfl::daemon::monitor::own_anchors(&member)?;
            let (_copy, log) = medfl::daemon::monitor::open_copy(&member.dir)?;
            let r = log
                .verify(&anchors.audit)
                .context("the audit log does not verify")?;
            let alerts = log
                .check_alert_anchors(&anchors.alerts)
                .context("the alert anchors do not match the audit log")?;
            emit(&format!(
                "audit log verifies: {} records; {} sealed batches, {} of them anchored on the ledger copy; {} records not yet sealed (protected by the hash chain only); {} blocks raised in sealed batches, {} of them with an alert anchor on the ledger copy; {} alert anchors not the monitor's (severity below critical, or naming a model)",
                r.records,
                r.batches,
                r.anchored,
                r.unsealed,
                alerts.raised,
                alerts.anchored,
                alerts.other
            ))
        }
        AuditCommand::History {
            config,
            patient,
            json,
            insecure,
        } => {
            let member = medfl::daemon::Member::load(&config, insecure.policy())?;
            let (_copy, log) = medfl::daemon::monitor::open_copy(&member.dir)?;
            let records = log.history(&patient)?;
            if json {
                let list: Vec<_> = records
                    .iter()
                    .filter_map(|r| {
                        let (request, decision) = r.body.decision()?;
                        let mut row = serde_json::json!({
                            "record": r.seq, "request": request, "decision": decision,
                        });
                        if let RecordBody::Delivered { id, .. } = &r.body {
                            row["delivery_id"] = serde_json::Value::from(id.as_str());
                        }
                        Some(row)
                    })
                    .collect();
                return emit(&serde_json::to_string_pretty(&list)?);
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .filter_map(|r| {
                    let (request, decision) = r.body.decision()?;
                    Some(vec![
                        r.seq.to_string(),
                        medfl::ledger::Timestamp(request.time_ms).to_string(),
                        format!(
                            "{} ({}, {})",
                            request.user, request.role, request.department
                        ),
                        format!("{} {}", request.action, request.resource),
                        format!("{} / {}", request.source_ip, request.workstation),
                        format!("{:?}", decision.verdict).to_lowercase(),
                    ])
                })
                .collect();
            let mut text = format!(
                "{} accesses to the record of patient {patient}\n",
                rows.len()
            );
            text.push_str(&medfl::report::table(
                &["record", "when (UTC)", "who", "what", "from", "decision"],
                &rows,
            ));
            emit(&text)
        }
    }
}
