//! Signatures already checked, remembered so that members sharing one process check each once.
//!
//! A simulated consortium runs every hospital in one process, and every hospital validates for
//! itself: its own ledger copy checks each anchor's endorsements, its own secure-aggregation
//! session checks a quorum of consistency signatures. That is `n` checks of the same `n`
//! signatures, `O(n^2)` curve work a round, though all of them are checks of identical bytes.
//! A check of `(key, message, signature)` is a pure function of those bytes, so its answer can
//! be shared: every member still runs every rule, and the first to meet a signature pays for
//! the curve arithmetic. (Bitcoin Core's signature cache does the same for its mempool and
//! blocks.)
//!
//! # What makes this safe
//! - Only *successes* are remembered, and only under a SHA-256 digest of all three inputs and
//!   of how they were checked: finding another triple the cache would vouch for means a
//!   SHA-256 collision.
//! - Strict and batch verification disagree on some signatures (a nonce point with a torsion
//!   component can pass a batch by luck); a triple that passed a batch never vouches for a
//!   strict check. A strict pass vouches for both.
//! - The cache is a handle a driver passes in, never a global: a daemon, one member to a
//!   process, gains nothing from one and runs without; a benchmark of one member's costs gives
//!   it none, so its figures are a deployment's.
//! - It is bounded: when full it forgets everything and starts again (a miss costs one check,
//!   never a wrong answer).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// How a remembered signature was checked.
#[derive(Clone, Copy)]
enum Check {
    /// `verify_strict`: canonical `s`, and `R` exactly the recomputed nonce point.
    Strict,
    /// Part of a batch that passed (`ed25519_dalek::verify_batch`).
    Batch,
}

/// A shared set of `(key, message, signature)` triples that passed a check; cheap to clone.
#[derive(Clone)]
pub struct SignatureCache {
    inner: Arc<Mutex<HashSet<[u8; 32]>>>,
    capacity: usize,
}

impl std::fmt::Debug for SignatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureCache")
            .field("remembered", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl SignatureCache {
    /// A cache that remembers up to `capacity` signatures (32 bytes each) before starting over.
    pub fn new(capacity: usize) -> SignatureCache {
        SignatureCache {
            inner: Arc::new(Mutex::new(HashSet::new())),
            capacity: capacity.max(1),
        }
    }

    /// How many signatures it remembers now.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `key.verify_strict(message, signature)`, answered from memory when this exact triple
    /// passed a strict check before.
    pub fn verify_strict(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        let id = triple_id(Check::Strict, key, message, signature);
        if self.set().contains(&id) {
            return true;
        }
        let ok = key.verify_strict(message, signature).is_ok();
        if ok {
            self.remember([id]);
        }
        ok
    }

    /// `ed25519_dalek::verify_batch` over the triples not already known to pass; `true` when
    /// every triple passes (a strict pass or an earlier batch counts).
    ///
    /// The slices are parallel, as `verify_batch` takes them; unequal lengths fail.
    pub fn verify_batch(
        &self,
        messages: &[&[u8]],
        signatures: &[Signature],
        keys: &[VerifyingKey],
    ) -> bool {
        if messages.len() != signatures.len() || keys.len() != signatures.len() {
            return false;
        }
        let mut unknown = Vec::new();
        {
            let set = self.set();
            for (i, ((m, s), k)) in messages.iter().zip(signatures).zip(keys).enumerate() {
                let batch = triple_id(Check::Batch, k, m, s);
                if !set.contains(&batch) && !set.contains(&triple_id(Check::Strict, k, m, s)) {
                    unknown.push((i, batch));
                }
            }
        }
        if unknown.is_empty() {
            return true;
        }
        let m: Vec<&[u8]> = unknown.iter().map(|&(i, _)| messages[i]).collect();
        let s: Vec<Signature> = unknown.iter().map(|&(i, _)| signatures[i]).collect();
        let k: Vec<VerifyingKey> = unknown.iter().map(|&(i, _)| keys[i]).collect();
        let ok = ed25519_dalek::verify_batch(&m, &s, &k).is_ok();
        if ok {
            self.remember(unknown.into_iter().map(|(_, id)| id));
        }
        ok
    }

    fn remember(&self, ids: impl IntoIterator<Item = [u8; 32]>) {
        let mut set = self.set();
        for id in ids {
            if set.len() >= self.capacity {
                set.clear();
            }
            set.insert(id);
        }
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A set of digests is valid whatever a panicking holder was doing with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// SHA-256 of how the triple was checked, the key, the signature and the message, each of
/// fixed length but the last: an unambiguous name for the triple.
fn triple_id(check: Check, key: &VerifyingKey, message: &[u8], signature: &Signature) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(match check {
        Check::Strict => b"medfl-memo/v1/signature/strict",
        Check::Batch => b"medfl-memo/v1/signature/batch!",
    });
    h.update(key.as_bytes());
    h.update(signature.to_bytes());
    h.update(message);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(seed: u8, message: &[u8]) -> (VerifyingKey, Signature) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        (key.verifying_key(), key.sign(message))
    }

    #[test]
    fn a_remembered_signature_vouches_only_for_its_own_bytes() {
        let cache = SignatureCache::new(16);
        let (key, sig) = signed(1, b"endorse round 7");
        assert!(cache.verify_strict(&key, b"endorse round 7", &sig));
        assert_eq!(cache.len(), 1);
        assert!(cache.verify_strict(&key, b"endorse round 7", &sig));
        assert!(!cache.verify_strict(&key, b"endorse round 8", &sig));
        let (other, _) = signed(2, b"");
        assert!(!cache.verify_strict(&other, b"endorse round 7", &sig));
        assert_eq!(cache.len(), 1, "failures are not remembered");
    }

    #[test]
    fn a_batch_pass_never_vouches_for_a_strict_check() {
        let cache = SignatureCache::new(16);
        let (key, sig) = signed(1, b"m");
        assert!(cache.verify_batch(&[b"m"], &[sig], &[key]));
        let set = cache.set().clone();
        assert!(set.contains(&triple_id(Check::Batch, &key, b"m", &sig)));
        assert!(!set.contains(&triple_id(Check::Strict, &key, b"m", &sig)));
        // The strict check runs (and passes, for an honest signature) and is remembered apart.
        assert!(cache.verify_strict(&key, b"m", &sig));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_batch_with_one_bad_signature_fails_and_remembers_nothing() {
        let cache = SignatureCache::new(16);
        let (a, sa) = signed(1, b"a");
        let (b, _) = signed(2, b"b");
        assert!(!cache.verify_batch(&[b"a", b"b"], &[sa, sa], &[a, b]));
        assert!(cache.is_empty());
        assert!(
            !cache.verify_batch(&[b"a"], &[sa, sa], &[a, b]),
            "unequal lengths"
        );
        // Known triples are skipped; the unknown one is still checked.
        assert!(cache.verify_strict(&a, b"a", &sa));
        assert!(!cache.verify_batch(&[b"a", b"b"], &[sa, sa], &[a, b]));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = SignatureCache::new(2);
        for seed in 1..=3u8 {
            let (key, sig) = signed(seed, b"m");
            assert!(cache.verify_strict(&key, b"m", &sig));
        }
        assert_eq!(cache.len(), 1);
    }
}
