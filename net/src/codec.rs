//! The one place that knows how a protocol message becomes bytes.
//!
//! Format: bincode 2.0.1 through serde with [`bincode::config::standard`] (little endian,
//! variable-length integers) and a decode limit of [`DECODE_LIMIT`] bytes. The configuration is
//! fixed: ledger hashes may be computed over these bytes, so changing it is a format change.
//!
//! **Invariant:** a successful [`decode`] consumed the whole input; trailing bytes are an error,
//! so every value has exactly one accepted encoding length.
//!
//! A bincode length prefix is attacker-controlled, so a claimed length must never drive an
//! allocation. Decoding reads from a slice that the transport has already bounded
//! ([`NetConfig::max_message_bytes`](crate::NetConfig::max_message_bytes)); serde preallocates at
//! most 1 MiB from a claimed length (`size_hint::cautious`) and the slice reader fails as soon as
//! the claimed data is not there, so a 10-byte message that claims a `Vec` of 2^64 elements is
//! refused after allocating at most 1 MiB. The bincode limit bounds the bytes read in total.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Upper bound on the bytes bincode reads for one message (256 MiB); also the largest accepted [`NetConfig::max_message_bytes`](crate::NetConfig::max_message_bytes).
pub const DECODE_LIMIT: usize = 256 * 1024 * 1024;

/// The fixed bincode configuration (standard, with the decode limit).
type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

/// Returns the fixed bincode configuration.
const fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized (e.g. a map with non-string keys the format rejects).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type, or exceed the decode limit.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The bytes hold a valid value followed by `extra` bytes that belong to nothing.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Encodes `value` with the fixed configuration.
///
/// # Errors
/// [`CodecError::Encode`] if serde refuses the value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes exactly one `T` from `bytes` with the fixed configuration and limit.
///
/// # Errors
/// [`CodecError::Decode`] for malformed input or a claim over [`DECODE_LIMIT`];
/// [`CodecError::TrailingBytes`] if `bytes` is longer than the encoded value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    match bytes.len().checked_sub(used) {
        Some(0) => Ok(value),
        Some(extra) => Err(CodecError::TrailingBytes { extra }),
        None => Err(CodecError::Decode("decoder read past the input".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Hello { round: u64 },
        Update(Vec<f32>),
    }

    #[test]
    fn round_trips() {
        for m in [Msg::Hello { round: 7 }, Msg::Update(vec![1.0, -2.5, 3.25])] {
            let bytes = encode(&m).unwrap();
            assert_eq!(decode::<Msg>(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&Msg::Hello { round: 1 }).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<Msg>(&bytes),
            Err(CodecError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn rejects_unknown_variant_and_truncation() {
        assert!(matches!(decode::<Msg>(&[9]), Err(CodecError::Decode(_))));
        let bytes = encode(&Msg::Update(vec![1.0; 10])).unwrap();
        assert!(matches!(
            decode::<Msg>(&bytes[..bytes.len() - 1]),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn huge_claimed_length_is_refused_without_allocating() {
        // Variant 1 (`Update`), then a varint length of u64::MAX (marker 253 + 8 bytes).
        let mut bytes = vec![1u8, 253];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<Msg>(&bytes), Err(CodecError::Decode(_))));
        // A claim just over the limit in elements of 4 bytes (marker 252 + u32).
        let mut bytes = vec![1u8, 252];
        let claim = u32::try_from(DECODE_LIMIT / 4 + 1).unwrap();
        bytes.extend_from_slice(&claim.to_le_bytes());
        assert!(matches!(decode::<Msg>(&bytes), Err(CodecError::Decode(_))));
    }
}
