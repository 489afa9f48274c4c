//! Fixed-size byte values (hashes, keys, signatures) and how they appear in files.
//!
//! In bincode they are raw bytes; in TOML and JSON they are lowercase hex, so that a person can
//! compare a model hash on screen with the one in a file.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Serde for `[u8; N]`: raw bytes in binary formats, hex in human-readable ones.
pub(crate) mod byte_array {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            // A tuple of N bytes: fixed length, so no length prefix to validate.
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(N)?;
            for b in bytes {
                t.serialize_element(b)?;
            }
            t.end()
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            parse_hex(&s).map_err(serde::de::Error::custom)
        } else {
            struct V<const N: usize>;
            impl<'de, const N: usize> serde::de::Visitor<'de> for V<N> {
                type Value = [u8; N];
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    write!(f, "{N} bytes")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<[u8; N], A::Error> {
                    let mut out = [0u8; N];
                    for (i, slot) in out.iter_mut().enumerate() {
                        *slot = seq
                            .next_element()?
                            .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                    }
                    Ok(out)
                }
            }
            d.deserialize_tuple(N, V::<N>)
        }
    }
}

/// Parses exactly `N` bytes of hex.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|e| format!("expected {} hex digits: {e}", 2 * N))?;
    Ok(out)
}

/// A SHA-256 digest: block hashes, transaction ids, Merkle roots, model hashes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hash(#[serde(with = "byte_array")] pub [u8; 32]);

impl Hash {
    /// The all-zero hash, used where "nothing before this" must be said.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Hashes `parts` after a domain tag, so that a hash of one kind of thing can never be
    /// mistaken for a hash of another.
    pub fn tagged(tag: &[u8], parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag);
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    /// The SHA-256 of a byte string, with no tag: for artefacts hashed outside medfl too
    /// (model files), so `sha256sum` gives the same answer.
    pub fn of_bytes(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &hex::encode(self.0)[..16])
    }
}

impl std::str::FromStr for Hash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Hash)
    }
}

/// An ed25519 signature, kept as bytes; checked with `verify_strict` semantics.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "byte_array")] pub [u8; 64]);

impl Signature {
    /// The dalek signature; parsing never fails (scalar checks happen at verification).
    pub fn to_dalek(&self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl From<ed25519_dalek::Signature> for Signature {
    fn from(s: ed25519_dalek::Signature) -> Self {
        Signature(s.to_bytes())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", &hex::encode(self.0)[..16])
    }
}

/// A member's ed25519 public key: its ledger identity (and its libp2p PeerId).
///
/// # Invariant
/// The bytes are the canonical encoding of a curve point in the prime-order subgroup, other
/// than the identity: no small-order key (which verifies signatures on any message) and no
/// torsion component (with which strict and batch verification disagree on some signatures).
/// Bytes from outside go through [`PublicKey::from_bytes`], which checks it; the `From`
/// conversion is for keys derived from a secret key, which always hold it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Checks and wraps 32 key bytes, refusing small-order, torsioned and non-canonical points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, String> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| "not a valid ed25519 public key".to_string())?;
        if key.is_weak() {
            return Err("a weak (small-order) ed25519 public key".into());
        }
        let point = key.to_edwards();
        if point.compress().to_bytes() != *bytes {
            return Err("a non-canonical encoding of an ed25519 public key".into());
        }
        if !point.is_torsion_free() {
            return Err(
                "an ed25519 public key with a small-order (torsion) component, outside the \
                 prime-order subgroup"
                    .into(),
            );
        }
        Ok(PublicKey(key))
    }

    /// The dalek key.
    pub fn as_dalek(&self) -> &ed25519_dalek::VerifyingKey {
        &self.0
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Checks `signature` over `message` with `verify_strict` semantics: `s` canonical, `R`
    /// exactly the recomputed nonce point (so never of small order nor carrying torsion, since
    /// the key has none). Every signature check of the ledger, block or proof, is this one.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.0.verify_strict(message, &signature.to_dalek()).is_ok()
    }
}

impl From<ed25519_dalek::VerifyingKey> for PublicKey {
    fn from(k: ed25519_dalek::VerifyingKey) -> Self {
        PublicKey(k)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.to_bytes()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_bytes(&parse_hex(s)?)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        byte_array::serialize(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: [u8; 32] = byte_array::deserialize(d)?;
        PublicKey::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_roundtrip_and_tags_separate_domains() {
        let h = Hash::tagged(b"a", &[b"bc"]);
        assert_eq!(h.to_string().parse::<Hash>().unwrap(), h);
        assert_ne!(h, Hash::tagged(b"ab", &[b"c"]));
        assert!("zz".parse::<Hash>().is_err());
    }

    #[test]
    fn small_order_key_is_refused() {
        // The identity point encodes as 1 followed by zeros: valid, but of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(&identity).is_err());
    }
}
