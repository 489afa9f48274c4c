//! Signature checks gathered across a block and verified once its contracts pass.
//!
//! Every signature is checked on its own with strict semantics ([`PublicKey::verify`]): the
//! same function a light client runs on an inclusion proof, so full verification and proofs
//! accept exactly the same signatures.
//!
//! Why not ed25519 batch verification: a batch checks a random linear combination of the
//! verification equations, so a signature whose nonce point `R` carries a small-order
//! (torsion) component passes whenever the random coefficient is a multiple of that
//! component's order: one try in two to eight, and a signer can grind for it. Strict
//! verification refuses every such signature. Making a batch agree means proving each `R`
//! torsion-free first, a full scalar multiplication per signature, which costs as much as
//! the strict check itself; so the strict check is the whole rule.

use medfl_memo::{SignatureCache, SignatureRule};

use crate::bytes::{PublicKey, Signature};

/// [`PublicKey::verify`], the ledger's one signature rule, as the copies of one process share
/// its passes.
struct LedgerRule;

impl SignatureRule for LedgerRule {
    type Key = PublicKey;
    const NAME: &'static str = "medfl-ledger/public-key-verify";
    fn key_bytes(key: &PublicKey) -> [u8; 32] {
        key.to_bytes()
    }
    fn check(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        key.verify(message, &Signature(*signature))
    }
}

/// One signature to check, and what to blame if it fails.
pub(crate) struct PendingSig<C> {
    pub(crate) message: Vec<u8>,
    pub(crate) signature: Signature,
    pub(crate) key: PublicKey,
    pub(crate) culprit: C,
}

/// Checks every signature strictly; on failure returns the culprit of the first bad one.
///
/// With a `cache`, a signature another copy in this process already passed through
/// [`PublicKey::verify`] is not checked again (see [`medfl_memo`]): same bytes, same rule,
/// same answer.
pub(crate) fn verify_all<C: Clone>(
    pending: &[PendingSig<C>],
    cache: Option<&SignatureCache>,
) -> Result<(), C> {
    let passes = |p: &PendingSig<C>| match cache {
        Some(cache) => cache.verify::<LedgerRule>(&p.key, &p.message, &p.signature.0),
        None => p.key.verify(&p.message, &p.signature),
    };
    match pending.iter().find(|p| !passes(p)) {
        Some(bad) => Err(bad.culprit.clone()),
        None => Ok(()),
    }
}
