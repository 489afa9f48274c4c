//! Mask expansion: a 256-bit seed stretched into a vector over `Z_{2^b}` by ChaCha20.
//!
//! # Construction
//!
//! The seed is used as a ChaCha20 key (RFC 8439, 20 rounds) with a fixed,
//! domain-specific nonce, and the keystream is read as little-endian words of
//! `ceil(b/8)` bytes, each reduced mod `2^b` by masking. The low `b` bits of a
//! uniform byte string are uniform, so every coordinate is uniform in
//! `Z_{2^b}` as long as ChaCha20 is a PRF. Reading only `ceil(b/8)` bytes per
//! coordinate (4 for the default `b = 32`) halves the keystream the server has
//! to generate compared with always reading a `u64`.
//!
//! Seeds are single-use per domain: a pairwise seed is derived per round and
//! per ordered pair, a self-mask seed is fresh per round, so the fixed nonce
//! never repeats under one key within a domain. The two domains use distinct
//! nonces so that even an accidental seed collision could not correlate a
//! self mask with a pairwise mask.

use std::fmt;

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit PRG seed; wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Seed(pub [u8; 32]);

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seed").finish_non_exhaustive()
    }
}

/// Which kind of mask a seed expands to; selects the ChaCha20 nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskDomain {
    /// A client's private self mask `PRG(b_i)`.
    SelfMask,
    /// The mask shared by a pair of neighbours `PRG(s_ij)`.
    Pairwise,
}

impl MaskDomain {
    fn nonce(self) -> [u8; 12] {
        match self {
            MaskDomain::SelfMask => *b"secagg+self\0",
            MaskDomain::Pairwise => *b"secagg+pair\0",
        }
    }
}

/// Whether a mask is added to or subtracted from the accumulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// `acc += mask`.
    Add,
    /// `acc -= mask`.
    Subtract,
}

/// Bytes of keystream consumed per coordinate for a `bits`-wide ring.
pub fn bytes_per_word(bits: u32) -> usize {
    bits.div_ceil(8) as usize
}

/// Adds or subtracts `PRG(seed)` to `acc`, coordinate-wise with wrapping `u64` arithmetic.
///
/// Wrapping in `Z_{2^64}` and reducing mod `2^b` once at the end is exact,
/// because `2^b` divides `2^64`; callers reduce with [`reduce`].
pub fn apply_mask(acc: &mut [u64], seed: &Seed, domain: MaskDomain, sign: Sign, bits: u32) {
    apply_masks(acc, &[(seed, domain, sign)], bits);
}

/// Applies several masks at once; same result as [`apply_mask`] for each in turn.
///
/// Runs chunk-major: every keystream is advanced over one cache-sized chunk
/// of `acc` before moving on, so `acc` (8 bytes per coordinate, megabytes at
/// large `d`) stays in L1 instead of streaming through memory once per mask.
/// With many masks that is the difference between memory-bound and
/// keystream-bound unmasking.
pub fn apply_masks(acc: &mut [u64], masks: &[(&Seed, MaskDomain, Sign)], bits: u32) {
    const CHUNK_WORDS: usize = 1024;
    let bpw = bytes_per_word(bits);
    let word_mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut ciphers: Vec<(ChaCha20, Sign)> = masks
        .iter()
        .map(|(seed, domain, sign)| (ChaCha20::new(&seed.0.into(), &domain.nonce().into()), *sign))
        .collect();
    let mut buf = [0u8; CHUNK_WORDS * 8];
    for chunk in acc.chunks_mut(CHUNK_WORDS) {
        let bytes = &mut buf[..chunk.len() * bpw];
        for (cipher, sign) in ciphers.iter_mut() {
            cipher.write_keystream(bytes);
            match sign {
                Sign::Add => combine(chunk, bytes, bpw, word_mask, u64::wrapping_add),
                Sign::Subtract => combine(chunk, bytes, bpw, word_mask, u64::wrapping_sub),
            }
        }
    }
    buf.zeroize();
}

/// `acc[i] = op(acc[i], word_i & mask)` over little-endian `bpw`-byte words.
///
/// Monomorphised per word width and operation: with a constant width the
/// word loads compile to plain (vectorisable) loads instead of a variable-length
/// copy per coordinate, which otherwise costs several times the keystream itself.
#[inline(always)]
fn combine(acc: &mut [u64], bytes: &[u8], bpw: usize, mask: u64, op: impl Fn(u64, u64) -> u64) {
    #[inline(always)]
    fn words<const W: usize>(
        acc: &mut [u64],
        bytes: &[u8],
        mask: u64,
        op: impl Fn(u64, u64) -> u64,
    ) {
        for (slot, w) in acc.iter_mut().zip(bytes.chunks_exact(W)) {
            let mut le = [0u8; 8];
            le[..W].copy_from_slice(w);
            *slot = op(*slot, u64::from_le_bytes(le) & mask);
        }
    }
    match bpw {
        1 => words::<1>(acc, bytes, mask, op),
        2 => words::<2>(acc, bytes, mask, op),
        3 => words::<3>(acc, bytes, mask, op),
        4 => words::<4>(acc, bytes, mask, op),
        5 => words::<5>(acc, bytes, mask, op),
        6 => words::<6>(acc, bytes, mask, op),
        7 => words::<7>(acc, bytes, mask, op),
        _ => words::<8>(acc, bytes, mask, op),
    }
}

/// Expands `seed` into `len` coordinates of `Z_{2^bits}`.
pub fn expand(seed: &Seed, domain: MaskDomain, len: usize, bits: u32) -> Vec<u64> {
    let mut v = vec![0u64; len];
    apply_mask(&mut v, seed, domain, Sign::Add, bits);
    v
}

/// Reduces every coordinate mod `2^bits` in place.
pub fn reduce(v: &mut [u64], bits: u32) {
    if bits < 64 {
        let m = (1u64 << bits) - 1;
        v.iter_mut().for_each(|x| *x &= m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_sensitive() {
        let a = expand(&Seed([1; 32]), MaskDomain::Pairwise, 5000, 32);
        let b = expand(&Seed([1; 32]), MaskDomain::Pairwise, 5000, 32);
        let c = expand(&Seed([2; 32]), MaskDomain::Pairwise, 5000, 32);
        let d = expand(&Seed([1; 32]), MaskDomain::SelfMask, 5000, 32);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn prefix_stable_across_lengths_and_chunks() {
        let long = expand(&Seed([3; 32]), MaskDomain::SelfMask, 3000, 64);
        let short = expand(&Seed([3; 32]), MaskDomain::SelfMask, 1500, 64);
        assert_eq!(&long[..1500], &short[..]);
    }

    #[test]
    fn matches_raw_chacha20_keystream() {
        let mut ks = [0u8; 64];
        let mut c = ChaCha20::new(&[5u8; 32].into(), &MaskDomain::Pairwise.nonce().into());
        c.write_keystream(&mut ks);
        let v = expand(&Seed([5; 32]), MaskDomain::Pairwise, 16, 32);
        for (i, x) in v.iter().enumerate() {
            let w = u32::from_le_bytes(ks[4 * i..4 * i + 4].try_into().unwrap());
            assert_eq!(*x, u64::from(w));
        }
    }

    #[test]
    fn values_in_range_for_every_width() {
        for bits in 1..=64 {
            let v = expand(&Seed([bits as u8; 32]), MaskDomain::SelfMask, 200, bits);
            if bits < 64 {
                assert!(v.iter().all(|&x| x < (1u64 << bits)), "bits={bits}");
            }
            // Top bit of the range is set somewhere, i.e. we use all b bits.
            assert!(v.iter().any(|&x| x >> (bits - 1) == 1), "bits={bits}");
        }
    }

    #[test]
    fn batched_masks_equal_sequential_masks() {
        let seeds: Vec<Seed> = (0..5u8).map(|i| Seed([i + 40; 32])).collect();
        let plan = [
            (MaskDomain::SelfMask, Sign::Add),
            (MaskDomain::Pairwise, Sign::Subtract),
            (MaskDomain::Pairwise, Sign::Add),
            (MaskDomain::SelfMask, Sign::Subtract),
            (MaskDomain::Pairwise, Sign::Add),
        ];
        for bits in [1u32, 12, 32, 33, 64] {
            let mut one = vec![3u64; 2500];
            for (s, (dom, sign)) in seeds.iter().zip(plan) {
                apply_mask(&mut one, s, dom, sign, bits);
            }
            let mut batch = vec![3u64; 2500];
            let masks: Vec<_> = seeds
                .iter()
                .zip(plan)
                .map(|(s, (d, g))| (s, d, g))
                .collect();
            apply_masks(&mut batch, &masks, bits);
            assert_eq!(one, batch, "bits={bits}");
        }
    }

    #[test]
    fn add_then_subtract_cancels() {
        let mut acc = vec![7u64; 2500];
        let s = Seed([9; 32]);
        apply_mask(&mut acc, &s, MaskDomain::Pairwise, Sign::Add, 20);
        apply_mask(&mut acc, &s, MaskDomain::Pairwise, Sign::Subtract, 20);
        assert!(acc.iter().all(|&x| x == 7));
    }
}
