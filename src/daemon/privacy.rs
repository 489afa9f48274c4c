//! The hospital's privacy ledger on disk: every charge the agent makes
//! ([`medfl_client::spend`]) is committed to a redb table before the update it pays for
//! leaves. redb commits durably (fsync) by default, so after a crash the store holds every
//! charge whose update could have gone out.

use std::path::Path;

use anyhow::{Context, Result, bail};
use medfl_client::spend::{Charge, PrivacyBudget, PrivacySpend};
use medfl_ledger::{Genesis, MemberId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// Charge number (0, 1, …) to the charge as JSON.
const CHARGES: TableDefinition<u64, &[u8]> = TableDefinition::new("charges");

/// Largest stored charge accepted when reading the store back.
const MAX_CHARGE_BYTES: usize = 4096;

/// The open store.
pub struct PrivacyStore {
    db: redb::Database,
    next: u64,
}

impl PrivacyStore {
    /// Opens (or creates) the store at `path` and reads every charge back, oldest first.
    pub fn open(path: &Path) -> Result<(PrivacyStore, Vec<Charge>)> {
        let db = redb::Database::create(path)
            .with_context(|| format!("opening the privacy ledger {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(CHARGES)?;
        txn.commit()?;
        let mut charges = Vec::new();
        {
            let read = db.begin_read()?;
            let table = read.open_table(CHARGES)?;
            for (expected, entry) in (0u64..).zip(table.iter()?) {
                let (k, v) = entry?;
                if k.value() != expected {
                    bail!(
                        "privacy ledger {}: charge {} missing (found {})",
                        path.display(),
                        expected,
                        k.value()
                    );
                }
                let bytes = v.value();
                if bytes.len() > MAX_CHARGE_BYTES {
                    bail!(
                        "privacy ledger {}: charge {expected} is oversized",
                        path.display()
                    );
                }
                let c: Charge = serde_json::from_slice(bytes).with_context(|| {
                    format!("privacy ledger {}: charge {expected}", path.display())
                })?;
                charges.push(c);
            }
        }
        let next = charges.len() as u64;
        Ok((PrivacyStore { db, next }, charges))
    }

    /// Commits `charge` durably.
    pub fn append(&mut self, charge: &Charge) -> Result<()> {
        let bytes = serde_json::to_vec(charge)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(CHARGES)?;
            table.insert(self.next, bytes.as_slice())?;
        }
        txn.commit().context("committing a privacy charge")?;
        self.next += 1;
        Ok(())
    }
}

/// The hospital's budget: its own if configured, else the tightest of the agreements that list
/// it in `genesis` (an error if none does).
pub fn own_budget(
    configured: Option<(f64, f64)>,
    genesis: &Genesis,
    me: &MemberId,
) -> Result<PrivacyBudget> {
    let (epsilon, delta) = match configured {
        Some(b) => b,
        None => genesis
            .agreements
            .iter()
            .filter(|a| a.members.contains(me))
            .map(|a| (a.budget.epsilon, a.budget.delta))
            .reduce(|x, y| (x.0.min(y.0), x.1.min(y.1)))
            .with_context(|| {
                format!(
                    "no agreement in the genesis lists {me}: set [data] privacy_budget = [epsilon, delta] in its config"
                )
            })?,
    };
    PrivacyBudget::new(epsilon, delta).context("the hospital's privacy budget")
}

/// Opens the store and the agent's view of it.
pub fn load(path: &Path, budget: PrivacyBudget) -> Result<(PrivacyStore, PrivacySpend)> {
    let (store, charges) = PrivacyStore::open(path)?;
    let spend = PrivacySpend::new(budget, charges).context("the privacy ledger's history")?;
    Ok((store, spend))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medfl_client::spend::Charge;
    use medfl_ledger::AgreementId;

    fn charge(session: u64) -> Charge {
        Charge {
            agreement: AgreementId::new("dua").unwrap(),
            round: 1,
            session,
            event: event(),
            aggregate: None,
        }
    }

    fn event() -> medfl_client::spend::PrivacyEvent {
        medfl_client::spend::PrivacyEvent::PoissonGaussian {
            q: 0.01,
            noise_multiplier: 1.0,
            steps: 100,
        }
    }

    #[test]
    fn charges_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privacy.redb");
        let budget = PrivacyBudget::new(50.0, 1e-6).unwrap();
        {
            let (mut store, spend) = load(&path, budget).unwrap();
            assert!(spend.charges().is_empty());
            store.append(&charge(7)).unwrap();
            store.append(&charge(8)).unwrap();
        }
        let (_, spend) = load(&path, budget).unwrap();
        let sessions: Vec<u64> = spend.charges().iter().map(|c| c.session).collect();
        assert_eq!(sessions, vec![7, 8]);
        assert!(spend.spent().unwrap() > 0.0);
    }
}
