//! Bit-packed wire encoding of vectors over `Z_{2^b}`.
//!
//! A masked input is `d` coordinates of `b` bits each; sending them as
//! varint-encoded `u64`s costs about 5 bytes per coordinate at `b = 32`
//! (uniform masks defeat varints). [`PackedVector`] sends exactly
//! `ceil(d*b/8)` bytes instead.
//!
//! # Layout
//!
//! The byte string is read as one little-endian bit stream: bit `j` of the
//! stream is bit `j mod 8` (least significant first) of byte `j / 8`.
//! Coordinate `i` occupies stream bits `i*b .. (i+1)*b`, least significant bit
//! first. For `b` a multiple of 8 this is simply each coordinate as a
//! little-endian `b/8`-byte word, one after the other. The last byte's unused
//! high bits (`8*ceil(d*b/8) - d*b` of them) must be zero, so every vector has
//! exactly one encoding and a decoder cannot be fed hidden data.
//!
//! # Serde
//!
//! The bytes serialize through `serialize_bytes`, so bincode writes a length
//! prefix and the raw bytes rather than a sequence of integers.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::MAX_VECTOR_LEN;
use crate::error::SecAggError;

/// Coordinates unpacked per chunk when accumulating, so that no `d`-long
/// temporary is allocated; a multiple of 8 keeps chunks byte-aligned for every `b`.
const CHUNK: usize = 1024;

/// Number of bytes that hold `len` coordinates of `bits` bits: `ceil(len*bits/8)`.
pub fn packed_len(len: usize, bits: u32) -> Result<usize, SecAggError> {
    check_bits(bits)?;
    let total = (len as u128) * u128::from(bits);
    usize::try_from(total.div_ceil(8)).map_err(|_| SecAggError::InvalidConfig("vector too long"))
}

fn check_bits(bits: u32) -> Result<(), SecAggError> {
    if (1..=64).contains(&bits) {
        Ok(())
    } else {
        Err(SecAggError::InvalidConfig("bits must be in 1..=64"))
    }
}

fn word_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// A vector over `Z_{2^b}` packed to `b` bits per coordinate (layout in the module docs).
///
/// The struct does not know `d` or `b`: those are round parameters, so the
/// receiver checks the encoding against its plan with [`PackedVector::validate`]
/// (or implicitly in [`PackedVector::unpack`] / [`PackedVector::add_to`]).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PackedVector(Vec<u8>);

impl fmt::Debug for PackedVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedVector({} bytes)", self.0.len())
    }
}

impl PackedVector {
    /// Packs `values` at `bits` per coordinate; bits above `bits` are ignored.
    pub fn pack(values: &[u64], bits: u32) -> Result<Self, SecAggError> {
        let mut out = vec![0u8; packed_len(values.len(), bits)?];
        pack_into(values, bits, &mut out);
        Ok(Self(out))
    }

    /// Wraps raw bytes without checking them (they are checked against the round on use).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the encoding is empty (only valid for `len = 0`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks that this encodes exactly `len` coordinates of `bits` bits.
    ///
    /// Errors with [`SecAggError::Malformed`] on a wrong byte length and
    /// [`SecAggError::NonZeroPadding`] if the last byte's unused bits are set.
    pub fn validate(&self, len: usize, bits: u32) -> Result<(), SecAggError> {
        let expected = packed_len(len, bits)?;
        if self.0.len() != expected {
            return Err(SecAggError::Malformed {
                field: "masked",
                expected,
                got: self.0.len(),
            });
        }
        let used = ((len as u128 * u128::from(bits)) % 8) as u32;
        if used != 0
            && let Some(&last) = self.0.last()
            && last >> used != 0
        {
            return Err(SecAggError::NonZeroPadding);
        }
        Ok(())
    }

    /// Decodes `len` coordinates of `bits` bits, after [`PackedVector::validate`].
    pub fn unpack(&self, len: usize, bits: u32) -> Result<Vec<u64>, SecAggError> {
        self.validate(len, bits)?;
        let mut out = vec![0u64; len];
        unpack_into(&self.0, bits, &mut out);
        Ok(out)
    }

    /// Adds the decoded vector to `acc` coordinate-wise (wrapping in `Z_{2^64}`).
    ///
    /// Validates first, so `acc` is untouched on error. Decodes in chunks so
    /// a server summing many inputs never materialises a second `d`-vector.
    pub fn add_to(&self, acc: &mut [u64], bits: u32) -> Result<(), SecAggError> {
        self.validate(acc.len(), bits)?;
        let chunk_bytes = CHUNK * bits as usize / 8;
        let mut buf = [0u64; CHUNK];
        for (dst, src) in acc.chunks_mut(CHUNK).zip(self.0.chunks(chunk_bytes)) {
            let tmp = &mut buf[..dst.len()];
            unpack_into(src, bits, tmp);
            for (a, v) in dst.iter_mut().zip(tmp.iter()) {
                *a = a.wrapping_add(*v);
            }
        }
        Ok(())
    }
}

/// Writes `values` into `out`, which must be exactly `packed_len(values.len(), bits)` zeroed bytes.
///
/// Packing consecutive chunks of a multiple of 8 coordinates into consecutive
/// byte ranges gives the same bytes as packing the whole vector at once.
pub(crate) fn pack_into(values: &[u64], bits: u32, out: &mut [u8]) {
    macro_rules! aligned {
        ($t:ty, $n:expr) => {
            for (dst, &v) in out.chunks_exact_mut($n).zip(values) {
                // Truncation is the reduction mod 2^b.
                dst.copy_from_slice(&(v as $t).to_le_bytes());
            }
        };
    }
    match bits {
        8 => aligned!(u8, 1),
        16 => aligned!(u16, 2),
        32 => aligned!(u32, 4),
        64 => aligned!(u64, 8),
        _ => {
            let mask = word_mask(bits);
            // `acc` holds `n < 64` pending bits before each push, so `n + bits < 128`.
            let mut acc: u128 = 0;
            let mut n = 0u32;
            let mut words = out.chunks_mut(8);
            for &v in values {
                acc |= u128::from(v & mask) << n;
                n += bits;
                if n >= 64 {
                    if let Some(dst) = words.next() {
                        dst.copy_from_slice(&(acc as u64).to_le_bytes()[..dst.len()]);
                    }
                    acc >>= 64;
                    n -= 64;
                }
            }
            if n > 0
                && let Some(dst) = words.next()
            {
                let k = dst.len();
                dst.copy_from_slice(&acc.to_le_bytes()[..k]);
            }
        }
    }
}

/// Fills `out` from `bytes`, which must hold at least `out.len() * bits` bits.
pub(crate) fn unpack_into(bytes: &[u8], bits: u32, out: &mut [u64]) {
    macro_rules! aligned {
        ($t:ty, $n:expr) => {
            for (slot, src) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                let mut le = [0u8; $n];
                le.copy_from_slice(src);
                *slot = u64::from(<$t>::from_le_bytes(le));
            }
        };
    }
    match bits {
        8 => aligned!(u8, 1),
        16 => aligned!(u16, 2),
        32 => aligned!(u32, 4),
        64 => aligned!(u64, 8),
        _ => {
            let mask = word_mask(bits);
            // Refill 64 bits whenever fewer than `bits` are pending: `n < 64` then.
            let mut acc: u128 = 0;
            let mut n = 0u32;
            let mut words = bytes.chunks(8);
            for slot in out.iter_mut() {
                if n < bits
                    && let Some(src) = words.next()
                {
                    let mut le = [0u8; 8];
                    le[..src.len()].copy_from_slice(src);
                    acc |= u128::from(u64::from_le_bytes(le)) << n;
                    n += 64;
                }
                *slot = (acc as u64) & mask;
                acc >>= bits;
                // Only short if the caller passed too few bytes; the missing bits read as 0.
                n = n.saturating_sub(bits);
            }
        }
    }
}

impl Serialize for PackedVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

/// Most bytes a packed vector can take: [`MAX_VECTOR_LEN`] coordinates of 64 bits.
///
/// Deserialization refuses anything longer before allocating for it.
pub const MAX_PACKED_BYTES: usize = MAX_VECTOR_LEN * 8;

fn check_claimed_len<E: de::Error>(len: usize) -> Result<(), E> {
    if len > MAX_PACKED_BYTES {
        return Err(E::invalid_length(len, &BytesVisitor));
    }
    Ok(())
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = PackedVector;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string of at most {MAX_PACKED_BYTES} bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        check_claimed_len(v.len())?;
        Ok(PackedVector(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        check_claimed_len(v.len())?;
        Ok(PackedVector(v))
    }

    // Self-describing formats without a byte type (e.g. JSON) send a list of integers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // A length hint is only a claim: refuse one above the cap, and never
        // reserve more than a page for it; the bytes themselves must follow.
        let hint = seq.size_hint().unwrap_or(0);
        check_claimed_len(hint)?;
        let mut v = Vec::with_capacity(hint.min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            check_claimed_len(v.len() + 1)?;
            v.push(b);
        }
        Ok(PackedVector(v))
    }
}

impl<'de> Deserialize<'de> for PackedVector {
    /// Reads a byte string of at most [`MAX_PACKED_BYTES`] bytes.
    ///
    /// Asks for *borrowed* bytes, so a decoder over an in-memory buffer (bincode's
    /// `decode_from_slice`) checks the claimed length against the bytes actually
    /// present and the visitor checks it against the cap, both before anything
    /// is allocated; only then are the bytes copied. A decoder over a stream
    /// (`decode_from_std_read`) allocates the claimed length itself before the
    /// visitor sees it: give such a decoder a byte limit (bincode's `with_limit`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference encoder: one bit at a time, straight from the layout definition.
    fn pack_bitwise(values: &[u64], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; (values.len() * bits as usize).div_ceil(8)];
        for (i, &v) in values.iter().enumerate() {
            for j in 0..bits as usize {
                if v >> j & 1 == 1 {
                    let pos = i * bits as usize + j;
                    out[pos / 8] |= 1 << (pos % 8);
                }
            }
        }
        out
    }

    #[test]
    fn layout_is_little_endian_bit_order() {
        // 3 coordinates of 4 bits: nibbles low-first, the last byte's high nibble is padding.
        let p = PackedVector::pack(&[0x1, 0x2, 0x3], 4).unwrap();
        assert_eq!(p.as_bytes(), &[0x21, 0x03]);
        // 10-bit coordinates straddle bytes, least significant bit first.
        let p = PackedVector::pack(&[0x3FF, 0x001], 10).unwrap();
        assert_eq!(p.as_bytes(), &[0xFF, 0x07, 0x00]);
        let p = PackedVector::pack(&[0x0102_0304], 32).unwrap();
        assert_eq!(p.as_bytes(), &[4, 3, 2, 1]);
    }

    #[test]
    fn length_is_exactly_ceil_d_b_over_8() {
        for bits in 1..=64u32 {
            for d in [0usize, 1, 7, 8, 9, 1023, 1024, 1025, 3000] {
                let v = vec![u64::MAX; d];
                let p = PackedVector::pack(&v, bits).unwrap();
                assert_eq!(p.len(), (d * bits as usize).div_ceil(8), "d={d} b={bits}");
            }
        }
    }

    #[test]
    fn wrong_length_is_rejected() {
        let p = PackedVector::pack(&[1, 2, 3, 4, 5], 12).unwrap();
        assert_eq!(p.len(), 8);
        let mut short = p.as_bytes().to_vec();
        short.pop();
        let mut long = p.as_bytes().to_vec();
        long.push(0);
        for (bytes, got) in [(short, 7), (long, 9), (vec![], 0)] {
            assert_eq!(
                PackedVector::from_bytes(bytes).unpack(5, 12),
                Err(SecAggError::Malformed {
                    field: "masked",
                    expected: 8,
                    got
                })
            );
        }
        // Right bytes, wrong round parameters.
        assert!(p.unpack(6, 12).is_err());
        assert!(p.unpack(5, 13).is_err());
        assert!(p.unpack(5, 0).is_err());
        assert!(p.unpack(5, 65).is_err());
    }

    #[test]
    fn nonzero_padding_is_rejected_for_every_width() {
        for bits in 1..=64u32 {
            for d in 1..=8usize {
                let used = (d * bits as usize) % 8;
                if used == 0 {
                    continue;
                }
                let p = PackedVector::pack(&vec![0; d], bits).unwrap();
                for bit in used..8 {
                    let mut bytes = p.as_bytes().to_vec();
                    *bytes.last_mut().unwrap() |= 1 << bit;
                    let bad = PackedVector::from_bytes(bytes);
                    assert_eq!(bad.unpack(d, bits), Err(SecAggError::NonZeroPadding));
                    let mut acc = vec![7u64; d];
                    assert_eq!(bad.add_to(&mut acc, bits), Err(SecAggError::NonZeroPadding));
                    assert!(acc.iter().all(|&x| x == 7), "acc touched on error");
                }
            }
        }
    }

    #[test]
    fn high_bits_of_inputs_are_dropped() {
        let p = PackedVector::pack(&[u64::MAX, 0, u64::MAX], 5).unwrap();
        assert_eq!(p.unpack(3, 5).unwrap(), vec![31, 0, 31]);
    }

    #[test]
    fn add_to_spans_chunks() {
        for bits in [1u32, 7, 8, 13, 32, 33, 63, 64] {
            let d = 3 * CHUNK + 5;
            let mask = word_mask(bits);
            let v: Vec<u64> = (0..d as u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & mask)
                .collect();
            let p = PackedVector::pack(&v, bits).unwrap();
            let mut acc = vec![1u64; d];
            p.add_to(&mut acc, bits).unwrap();
            let want: Vec<u64> = v.iter().map(|x| x.wrapping_add(1)).collect();
            assert_eq!(acc, want, "bits={bits}");
            let mut short = vec![0u64; d - 8];
            assert!(p.add_to(&mut short, bits).is_err());
        }
    }

    #[test]
    fn bincode_writes_a_length_prefixed_byte_string() {
        let cfg = bincode::config::standard();
        let v: Vec<u64> = (0..1000).map(|i| 0xFFFF_FFFF - i).collect();
        let p = PackedVector::pack(&v, 32).unwrap();
        let enc = bincode::serde::encode_to_vec(&p, cfg).unwrap();
        // 4000 bytes of payload, 3-byte varint length (251 marker + u16).
        assert_eq!(enc.len(), 4000 + 3);
        assert_eq!(&enc[3..], p.as_bytes());
        let (back, used): (PackedVector, usize) =
            bincode::serde::decode_from_slice(&enc, cfg).unwrap();
        assert_eq!(used, enc.len());
        assert_eq!(back, p);
        assert_eq!(back.unpack(1000, 32).unwrap(), v);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn roundtrip_every_width(
            bits in 1u32..=64,
            raw in proptest::collection::vec(any::<u64>(), 0..300),
        ) {
            let mask = word_mask(bits);
            let v: Vec<u64> = raw.iter().map(|x| x & mask).collect();
            let p = PackedVector::pack(&v, bits).unwrap();
            prop_assert_eq!(p.as_bytes(), &pack_bitwise(&v, bits)[..]);
            prop_assert_eq!(p.unpack(v.len(), bits).unwrap(), v.clone());
            let enc = bincode::serde::encode_to_vec(&p, bincode::config::standard()).unwrap();
            let (back, _): (PackedVector, usize) =
                bincode::serde::decode_from_slice(&enc, bincode::config::standard()).unwrap();
            prop_assert_eq!(back.unpack(v.len(), bits).unwrap(), v);
        }

        #[test]
        fn right_length_bytes_decode_iff_padding_is_zero_and_canonically(
            (bits, d, bytes) in (1u32..=64, 0usize..64).prop_flat_map(|(b, d)| {
                let n = (d * b as usize).div_ceil(8);
                (Just(b), Just(d), proptest::collection::vec(any::<u8>(), n))
            }),
        ) {
            let used = (d * bits as usize) % 8;
            let padding_clear = used == 0 || bytes.last().is_none_or(|&l| l >> used == 0);
            let p = PackedVector::from_bytes(bytes);
            match p.unpack(d, bits) {
                Ok(v) => {
                    prop_assert!(padding_clear);
                    // Whatever decodes re-encodes to the very same bytes.
                    prop_assert_eq!(PackedVector::pack(&v, bits).unwrap(), p);
                }
                Err(e) => {
                    prop_assert!(!padding_clear);
                    prop_assert_eq!(e, SecAggError::NonZeroPadding);
                }
            }
        }

        #[test]
        fn wrong_length_bytes_are_rejected(
            bits in 1u32..=64,
            d in 0usize..64,
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let n = (d * bits as usize).div_ceil(8);
            prop_assume!(bytes.len() != n);
            let got = bytes.len();
            prop_assert_eq!(
                PackedVector::from_bytes(bytes).unpack(d, bits),
                Err(SecAggError::Malformed { field: "masked", expected: n, got })
            );
        }
    }

    #[test]
    fn every_width_roundtrips_exhaustive_small() {
        for bits in 1..=64u32 {
            let mask = word_mask(bits);
            for d in 0..=17usize {
                let v: Vec<u64> = (0..d as u64)
                    .map(|i| (i.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (u64::MAX >> i)) & mask)
                    .collect();
                let p = PackedVector::pack(&v, bits).unwrap();
                assert_eq!(p.as_bytes(), &pack_bitwise(&v, bits)[..], "b={bits} d={d}");
                assert_eq!(p.unpack(d, bits).unwrap(), v, "b={bits} d={d}");
            }
        }
    }

    #[test]
    fn claimed_length_beyond_the_bytes_present_is_refused_without_allocating() {
        let cfg = bincode::config::standard();
        // bincode's varint: 253 announces a u64 length. 2^62 bytes could never be
        // allocated (the old `deserialize_byte_buf` path tried and aborted).
        for claimed in [1u64 << 62, (MAX_PACKED_BYTES + 1) as u64, 1000] {
            let mut enc = vec![253u8];
            enc.extend_from_slice(&claimed.to_le_bytes());
            enc.extend_from_slice(&[7u8; 16]);
            let r: Result<(PackedVector, usize), _> = bincode::serde::decode_from_slice(&enc, cfg);
            assert!(r.is_err(), "claimed {claimed}");
        }
    }

    #[test]
    fn claimed_length_above_the_cap_is_refused_before_reading() {
        use serde::de::value::{Error, SeqDeserializer};
        // An exact size hint above the cap: refused up front, without reserving it
        // or reading (and copying) half a gigabyte first.
        let seq = SeqDeserializer::<_, Error>::new(std::iter::repeat_n(0u8, MAX_PACKED_BYTES + 1));
        let err = PackedVector::deserialize(seq).unwrap_err();
        assert!(err.to_string().contains("invalid length"), "{err}");
        // Within the cap the sequence form still decodes.
        let seq = SeqDeserializer::<_, Error>::new([1u8, 2, 3].into_iter());
        assert_eq!(
            PackedVector::deserialize(seq).unwrap().as_bytes(),
            &[1, 2, 3]
        );
    }

    #[test]
    fn packing_masked_chunks_equals_masking_then_packing() {
        use crate::prg::{self, MaskDomain, Seed, Sign};
        let seeds = [Seed([1; 32]), Seed([2; 32])];
        let masks = [
            (&seeds[0], MaskDomain::SelfMask, Sign::Add),
            (&seeds[1], MaskDomain::Pairwise, Sign::Subtract),
        ];
        for bits in [1u32, 7, 12, 32, 33, 64] {
            let d = 2 * prg::CHUNK_WORDS + 77;
            let input: Vec<u64> = (0..d as u64).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
            let mut whole = input.clone();
            prg::apply_masks(&mut whole, &masks, bits);
            let expect = PackedVector::pack(&whole, bits).unwrap();
            let mut bytes = vec![0u8; packed_len(d, bits).unwrap()];
            let mut masker = prg::Masker::new(&masks, bits);
            let chunk_bytes = prg::CHUNK_WORDS * bits as usize / 8;
            for (src, dst) in input
                .chunks(prg::CHUNK_WORDS)
                .zip(bytes.chunks_mut(chunk_bytes))
            {
                pack_into(masker.mask_chunk(src), bits, dst);
            }
            assert_eq!(bytes, expect.as_bytes(), "bits={bits}");
        }
    }
}
