//! Signature checks gathered across a block and verified in one batch.
//!
//! ed25519 batch verification checks n signatures for roughly the cost of n/2 single checks.
//! When the batch fails we fall back to checking one by one, only to name the culprit: that
//! path costs more but runs only on a block that is being refused anyway.

use crate::bytes::{PublicKey, Signature};

/// One signature to check, and what to blame if it fails.
pub(crate) struct PendingSig<C> {
    pub(crate) message: Vec<u8>,
    pub(crate) signature: Signature,
    pub(crate) key: PublicKey,
    pub(crate) culprit: C,
}

/// Checks every signature; on failure returns the culprit of the first bad one.
pub(crate) fn verify_all<C: Clone>(pending: &[PendingSig<C>]) -> Result<(), C> {
    if pending.is_empty() {
        return Ok(());
    }
    let messages: Vec<&[u8]> = pending.iter().map(|p| p.message.as_slice()).collect();
    let signatures: Vec<ed25519_dalek::Signature> =
        pending.iter().map(|p| p.signature.to_dalek()).collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> =
        pending.iter().map(|p| *p.key.as_dalek()).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Ok(());
    }
    match pending
        .iter()
        .find(|p| !p.key.verify(&p.message, &p.signature))
    {
        Some(bad) => Err(bad.culprit.clone()),
        // Strict single verification is the rule; the batch is only a fast path to it.
        None => Ok(()),
    }
}
