//! The one place that turns ledger values into bytes and back.
//!
//! Hashes and signatures cover these bytes, so the format is fixed: bincode 2.0.1, little-endian,
//! fixed-width integers (one encoding per value, unlike varints), with a decode limit so that a
//! hostile length prefix cannot make us allocate gigabytes. Decoding is *canonical*: the input must
//! be consumed entirely and re-encode to the very same bytes, so two different byte strings never
//! stand for one value and every flipped byte is visible to a hash.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded value we accept (a block of 10,000 transactions fits well inside).
pub const MAX_ENCODED_LEN: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_ENCODED_LEN>()
}

/// Why bytes could not be turned into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// A valid value was followed by extra bytes.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// The value could not be encoded (too large, or not representable).
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Encodes a value in the ledger's canonical format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// How many bytes [`encode`] would write, without writing them: for counting what a simulated
/// transport moves, where allocating every message would cost more than delivering it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(size.bytes_written)
}

/// Decodes a value, refusing trailing bytes and non-canonical encodings.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    if encode(&value)? != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_is_the_length_encode_writes() {
        let v: (u32, String, Vec<u64>) = (70_000, "hospital".into(), vec![1, u64::MAX, 300]);
        assert_eq!(encoded_len(&v).unwrap(), encode(&v).unwrap().len());
    }

    #[test]
    fn roundtrip_and_rejections() {
        let v: (u32, String, Vec<u8>) = (7, "hospital".into(), vec![1, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&bytes).unwrap(), v);

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<(u32, String, Vec<u8>)>(&trailing),
            Err(CodecError::Trailing(1))
        ));

        assert!(matches!(
            decode::<(u32, String, Vec<u8>)>(&bytes[..bytes.len() - 1]),
            Err(CodecError::Malformed(_))
        ));
        // A bool is one byte, 0 or 1: anything else is refused rather than read as `true`.
        assert!(decode::<bool>(&[2]).is_err());
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A Vec claiming 2^63 elements must fail fast, not abort on allocation.
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }
}
