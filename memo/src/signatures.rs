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
//!   of the rule that checked them: finding another triple the cache would vouch for means a
//!   SHA-256 collision.
//! - On a miss the cache runs the rule's own check (a [`SignatureRule`], named once in its
//!   type), so a shared copy checks exactly what an unshared one does, and no caller can
//!   record a pass without running the check it names.
//! - Only deterministic, per-signature checks belong here (strict verification). A batch check
//!   is not a function of one signature: ed25519-dalek derives its coefficients from the whole
//!   batch, so a signature with a torsion component passes some batches and fails others, and
//!   remembering it would make one member's verdict depend on which member checked first.
//! - The cache is a handle a driver passes in, never a global: a daemon, one member to a
//!   process, gains nothing from one and runs without; a benchmark of one member's costs gives
//!   it none, so its figures are a deployment's.
//! - It is bounded: when full it forgets everything and starts again (a miss costs one check,
//!   never a wrong answer).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// A deterministic check of one signature, whose passes members of one process may share.
pub trait SignatureRule {
    /// What the signature is checked against.
    type Key;
    /// A name no other rule sharing a cache uses.
    const NAME: &'static str;
    /// The key's canonical bytes, which name it in the cache.
    fn key_bytes(key: &Self::Key) -> [u8; 32];
    /// Whether `signature` by `key` over `message` passes; a function of those bytes alone.
    fn check(key: &Self::Key, message: &[u8], signature: &[u8; 64]) -> bool;
}

/// A shared set of `(rule, key, message, signature)` that passed a check; cheap to clone.
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

    /// `R::check(key, message, signature)`, answered from memory when these exact bytes passed
    /// `R` before.
    pub fn verify<R: SignatureRule>(
        &self,
        key: &R::Key,
        message: &[u8],
        signature: &[u8; 64],
    ) -> bool {
        let id = signature_id(R::NAME, &R::key_bytes(key), message, signature);
        if self.set().contains(&id) {
            return true;
        }
        // Checked outside the lock: other members' checks go on meanwhile.
        let ok = R::check(key, message, signature);
        if ok {
            let mut set = self.set();
            if set.len() >= self.capacity {
                set.clear();
            }
            set.insert(id);
        }
        ok
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A set of digests is valid whatever a panicking holder was doing with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// SHA-256 of the rule's name and length, the key, the signature and the message: an
/// unambiguous name for the check (every part but the last is of fixed length, or prefixed by
/// its length).
fn signature_id(rule: &str, key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medfl-memo/v1/signature");
    h.update((rule.len() as u64).to_le_bytes());
    h.update(rule.as_bytes());
    h.update(key);
    h.update(signature);
    h.update(message);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How many times [`Strict`] really ran (only one test uses the rule, so no other moves it).
    static CHECKS: AtomicUsize = AtomicUsize::new(0);

    struct Strict;

    impl SignatureRule for Strict {
        type Key = VerifyingKey;
        const NAME: &'static str = "test/strict";
        fn key_bytes(key: &VerifyingKey) -> [u8; 32] {
            key.to_bytes()
        }
        fn check(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
            CHECKS.fetch_add(1, Ordering::SeqCst);
            key.verify_strict(message, &Signature::from_bytes(signature))
                .is_ok()
        }
    }

    /// A rule that passes everything: what a shared pass must never vouch for.
    struct Lax;

    impl SignatureRule for Lax {
        type Key = VerifyingKey;
        const NAME: &'static str = "test/lax";
        fn key_bytes(key: &VerifyingKey) -> [u8; 32] {
            key.to_bytes()
        }
        fn check(_: &VerifyingKey, _: &[u8], _: &[u8; 64]) -> bool {
            true
        }
    }

    fn signed(seed: u8, message: &[u8]) -> (VerifyingKey, Signature) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        (key.verifying_key(), key.sign(message))
    }

    fn strict(cache: &SignatureCache, key: &VerifyingKey, message: &[u8], sig: &Signature) -> bool {
        cache.verify::<Strict>(key, message, &sig.to_bytes())
    }

    #[test]
    fn a_remembered_signature_vouches_only_for_its_own_bytes_and_rule() {
        let cache = SignatureCache::new(16);
        let (key, sig) = signed(1, b"endorse round 7");
        assert!(strict(&cache, &key, b"endorse round 7", &sig));
        assert_eq!(cache.len(), 1);
        // Remembered: the check does not run again.
        let before = CHECKS.load(Ordering::SeqCst);
        assert!(strict(&cache, &key, b"endorse round 7", &sig));
        assert_eq!(CHECKS.load(Ordering::SeqCst), before);
        assert!(!strict(&cache, &key, b"endorse round 8", &sig));
        let (other, _) = signed(2, b"");
        assert!(!strict(&cache, &other, b"endorse round 7", &sig));
        // A pass of another rule, however lax, does not vouch for this one.
        assert!(cache.verify::<Lax>(&key, b"endorse round 8", &sig.to_bytes()));
        assert!(!strict(&cache, &key, b"endorse round 8", &sig));
        assert_eq!(cache.len(), 2, "failures are not remembered");
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = SignatureCache::new(2);
        for seed in 1..=3u8 {
            let (key, sig) = signed(seed, b"m");
            assert!(cache.verify::<Lax>(&key, b"m", &sig.to_bytes()));
        }
        assert_eq!(cache.len(), 1);
    }
}
