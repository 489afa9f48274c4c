//! Patients' consent: the pseudonym under which a hospital records a patient's choice on the
//! ledger, and the filter that takes opted-out patients' events out of a log before any feature
//! is computed.
//!
//! # The pseudonym
//!
//! `pseudonym = HMAC-SHA256(k, "medfl/consent-subject/v1" || len(patient) u64 LE || patient)`
//! with `k = HKDF-SHA256(salt = "medfl/consent-pseudonym/v1", ikm = the hospital's secret,
//! info = the hospital's member id)`. The secret is the hospital's own key material (its
//! ledger signing key), which nobody else holds. A public consortium salt would not do: patient
//! ids are short and structured (an MRN has a few million possible values), so anyone who reads
//! the ledger and knows the salt (every member, auditor and light client) could hash every
//! possible id and reverse the pseudonyms. With a key only the hospital holds, a pseudonym is a
//! PRF output: it reveals nothing and links nothing across hospitals. Consent is recorded per
//! (hospital, pseudonym) on the ledger, so no other party ever needs to compute it.
//!
//! # The filter
//!
//! [`training_features`] drops every event of an opted-out patient from the stream *before*
//! feature extraction, so the features of the remaining events (per-user rates, novelty, time
//! of day) are computed as if the opted-out patients' records had never been accessed: nothing
//! derived from their records reaches training.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::event::AccessEvent;
use crate::features::{EmployeeIndex, FeatureExtractor, N_FEATURES};

/// A consent pseudonym: 32 bytes, as the ledger stores it.
pub type Pseudonym = [u8; 32];

/// The key could not be derived (never happens for the fixed sizes used; typed all the same).
#[derive(Debug, thiserror::Error)]
#[error("consent pseudonym key: {0}")]
pub struct KeyError(&'static str);

/// A hospital's secret key for its patients' consent pseudonyms (see the module docs).
#[derive(Clone)]
pub struct PseudonymKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("PseudonymKey").finish_non_exhaustive()
    }
}

impl PseudonymKey {
    /// Derives the key from the hospital's secret (its ledger signing key's 32 secret bytes) and
    /// its member id, so one secret never yields the same key for two purposes or members.
    pub fn derive(secret: &[u8; 32], hospital: &str) -> Result<PseudonymKey, KeyError> {
        let hk = Hkdf::<Sha256>::new(Some(b"medfl/consent-pseudonym/v1"), secret);
        let mut k = Zeroizing::new([0u8; 32]);
        hk.expand(hospital.as_bytes(), k.as_mut())
            .map_err(|_| KeyError("HKDF output length"))?;
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(k.as_ref())
            .map_err(|_| KeyError("HMAC key length"))?;
        Ok(PseudonymKey { mac })
    }

    /// The pseudonym of the hospital's patient id `patient`.
    pub fn pseudonym(&self, patient: &str) -> Pseudonym {
        let mut mac = self.mac.clone();
        mac.update(b"medfl/consent-subject/v1");
        mac.update(&(patient.len() as u64).to_le_bytes());
        mac.update(patient.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Features of a log with opted-out patients removed, and what was removed.
#[derive(Clone, Debug, Default)]
pub struct ConsentedFeatures {
    /// Row-major feature rows of the kept events inside the window.
    pub data: Vec<f32>,
    /// The employee of each row (dense indices, [`crate::features::EmployeeIndex`]).
    pub employees: Vec<u64>,
    /// Columns ([`N_FEATURES`]).
    pub n_cols: usize,
    /// Pseudonyms of the patients whose events are in `data` (what a test or an audit checks).
    pub patients: BTreeSet<Pseudonym>,
    /// Events dropped because their patient opted out (whole log, not only the window).
    pub removed_events: usize,
}

impl ConsentedFeatures {
    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.data.len().checked_div(self.n_cols).unwrap_or(0)
    }
}

/// Drops every event of a patient whose pseudonym is in `opted_out`, extracts features from
/// what is left (in the given order, which must be time order), and keeps the rows of events
/// whose time is in `window` (`None`: all). Earlier kept events still warm up each user's
/// history, exactly as [`crate::extract`] would on a log that never held the removed ones.
pub fn training_features(
    events: &[AccessEvent],
    key: &PseudonymKey,
    opted_out: &BTreeSet<Pseudonym>,
    window: Option<Range<u64>>,
) -> ConsentedFeatures {
    // One HMAC per distinct patient, not per event.
    let mut seen: HashMap<&str, (Pseudonym, bool)> = HashMap::new();
    let mut fx = FeatureExtractor::new();
    let mut employees = EmployeeIndex::default();
    let mut out = ConsentedFeatures {
        n_cols: N_FEATURES,
        ..ConsentedFeatures::default()
    };
    for e in events {
        let (p, out_of_training) = *seen.entry(e.patient.as_str()).or_insert_with(|| {
            let p = key.pseudonym(&e.patient);
            (p, opted_out.contains(&p))
        });
        if out_of_training {
            out.removed_events += 1;
            continue;
        }
        let row = fx.push(e);
        if window.as_ref().is_none_or(|w| w.contains(&e.time_ms)) {
            out.data.extend_from_slice(&row);
            out.employees.push(employees.of(&e.user));
            out.patients.insert(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Resource, StaffRole};
    use crate::extract;

    fn ev(id: u64, t: u64, user: &str, patient: &str) -> AccessEvent {
        AccessEvent {
            event_id: id,
            time_ms: t,
            user: user.into(),
            role: StaffRole::Nurse,
            user_department: "er".into(),
            patient: patient.into(),
            patient_department: "er".into(),
            action: Action::View,
            resource: Resource::ClinicalNote,
            workstation: "ws1".into(),
            ip: "10.0.0.1".into(),
            break_glass: false,
            care_team: true,
            vip: false,
            family_link: false,
        }
    }

    #[test]
    fn pseudonyms_depend_on_the_secret_the_hospital_and_the_patient() {
        let a = PseudonymKey::derive(&[1; 32], "h1").unwrap();
        let b = PseudonymKey::derive(&[2; 32], "h1").unwrap();
        let c = PseudonymKey::derive(&[1; 32], "h2").unwrap();
        let p = a.pseudonym("p-1");
        assert_eq!(p, a.pseudonym("p-1"), "deterministic");
        assert_ne!(p, a.pseudonym("p-2"));
        assert_ne!(p, b.pseudonym("p-1"), "another secret");
        assert_ne!(p, c.pseudonym("p-1"), "another hospital");
        assert!(
            !format!("{a:?}").contains("mac"),
            "no key material in Debug"
        );
    }

    #[test]
    fn opted_out_patients_leave_no_row_and_no_trace_in_other_rows() {
        let key = PseudonymKey::derive(&[7; 32], "h").unwrap();
        let log = vec![
            ev(1, 1_000, "u1", "alice"),
            ev(2, 2_000, "u1", "bob"),
            ev(3, 3_000, "u1", "alice"),
            ev(4, 4_000, "u1", "carol"),
        ];
        let none = training_features(&log, &key, &BTreeSet::new(), None);
        assert_eq!(
            none.data,
            extract(&log).data,
            "no opt-out: the usual features"
        );
        assert_eq!(none.removed_events, 0);

        let out: BTreeSet<_> = [key.pseudonym("alice")].into();
        let f = training_features(&log, &key, &out, None);
        assert_eq!(f.removed_events, 2);
        assert_eq!(f.n_rows(), 2);
        assert!(!f.patients.contains(&key.pseudonym("alice")));
        // The kept rows are those of a log in which alice was never accessed.
        let without: Vec<_> = log
            .iter()
            .filter(|e| e.patient != "alice")
            .cloned()
            .collect();
        assert_eq!(f.data, extract(&without).data);
        assert_ne!(
            f.data,
            none.data[N_FEATURES..2 * N_FEATURES]
                .iter()
                .chain(&none.data[3 * N_FEATURES..])
                .copied()
                .collect::<Vec<_>>(),
            "dropping rows after extraction would differ: alice's accesses shaped them"
        );

        let windowed = training_features(&log, &key, &out, Some(3_000..5_000));
        assert_eq!(windowed.n_rows(), 1);
        assert_eq!(windowed.patients, [key.pseudonym("carol")].into());
    }
}
