//! Mask expansion: a 256-bit seed stretched into a vector over `Z_{2^b}` by
//! AES-256 in counter mode.
//!
//! # Construction
//!
//! The seed is an AES-256 key. Keystream block `i` (16 bytes) is
//! `AES-256_seed(nonce || i)`, with an 8-byte, domain-specific `nonce` and the
//! block counter `i` as a 64-bit big-endian integer starting at 0 — exactly
//! CTR mode (NIST SP 800-38A) with a 64-bit counter, as the `ctr` crate's
//! `Ctr64BE` computes it (a test checks this). The keystream is read as
//! little-endian words of `ceil(b/8)` bytes, each reduced mod `2^b` by masking.
//! The low `b` bits of a uniform byte string are uniform, so every coordinate
//! is uniform in `Z_{2^b}` as long as AES-256 is a pseudorandom permutation:
//! a mask of at most [`MAX_VECTOR_LEN`](crate::config::MAX_VECTOR_LEN)
//! 8-byte words uses at most `2^25` blocks, so by the PRP/PRF switching lemma
//! it is distinguishable from uniform with advantage at most `2^50 / 2^129`
//! beyond attacking AES itself. Reading only `ceil(b/8)` bytes per coordinate
//! (4 for the default `b = 32`) halves the keystream compared with always
//! reading a `u64`.
//!
//! # Why AES and not ChaCha20
//!
//! Mask expansion is most of a client's work at large `d` and nearly all of
//! the server's. The `aes` crate detects AES-NI, VAES and AVX-512 at run time
//! (no build flags), and on the project machine (VAES + AVX-512) it generates
//! AES-256-CTR keystream at about 5–6.8 GB/s against 2.3 GB/s for the
//! `chacha20` crate's AVX2 ChaCha20 (`examples/prg_throughput.rs` measures
//! both). Both are standard stream constructions with 256-bit keys; without
//! AES instructions the `aes` crate falls back to a constant-time bitsliced
//! implementation, slower than ChaCha20 but still correct.
//!
//! Seeds are single-use per domain: a pairwise seed is derived (by HKDF) per
//! round and per ordered pair, a self-mask seed is fresh per round, so a
//! counter block never repeats under one key within a domain. The domains use
//! distinct nonces so that even an accidental seed collision could not
//! correlate a self mask with a pairwise mask.

use std::fmt;

use aes::Aes256;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit PRG seed; wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Seed(pub [u8; 32]);

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seed").finish_non_exhaustive()
    }
}

/// Which kind of mask a seed expands to; selects the CTR nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskDomain {
    /// A client's private self mask `PRG(b_i)`.
    SelfMask,
    /// The mask shared by a pair of neighbours `PRG(s_ij)`.
    Pairwise,
    /// Randomness for stochastic rounding in [`crate::quantize`]; never a mask.
    Rounding,
}

impl MaskDomain {
    /// The 8-byte nonce that fills the upper half of every counter block.
    pub fn nonce(self) -> [u8; 8] {
        match self {
            MaskDomain::SelfMask => *b"sa+self\0",
            MaskDomain::Pairwise => *b"sa+pair\0",
            MaskDomain::Rounding => *b"sa+rnd\0\0",
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

/// One AES block.
type Block = Array<u8, aes::cipher::consts::U16>;

/// An AES-256-CTR keystream (layout in the module docs).
///
/// The expanded key is wiped on drop (the `aes` crate's `zeroize` feature).
pub struct Keystream {
    cipher: Aes256,
    nonce: [u8; 8],
    /// Index of the next block to generate.
    counter: u64,
}

impl fmt::Debug for Keystream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystream")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Keystream {
    /// The keystream of `seed` in `domain`, from block 0.
    pub fn new(seed: &Seed, domain: MaskDomain) -> Self {
        Self {
            cipher: Aes256::new(&seed.0.into()),
            nonce: domain.nonce(),
            counter: 0,
        }
    }

    /// Overwrites `blocks` with the next `blocks.len()` keystream blocks.
    fn fill_blocks(&mut self, blocks: &mut [Block]) {
        for b in blocks.iter_mut() {
            b[..8].copy_from_slice(&self.nonce);
            b[8..].copy_from_slice(&self.counter.to_be_bytes());
            // At most 2^25 blocks per vector (module docs): never wraps.
            self.counter += 1;
        }
        // Encrypting the counter blocks in place is CTR mode; the cipher runs
        // them through its widest parallel backend (VAES: 64 blocks at once).
        self.cipher.encrypt_blocks(blocks);
    }

    /// Overwrites `buf` with the next keystream bytes, whole blocks at a time.
    ///
    /// A `buf` that is not a multiple of 16 bytes discards the rest of the
    /// last block, so only the final call of a stream may be short.
    pub fn fill(&mut self, buf: &mut [u8]) {
        // Encrypt the counter blocks right in `buf`: no copy.
        let (blocks, tail) = Array::slice_as_chunks_mut(buf);
        self.fill_blocks(blocks);
        if !tail.is_empty() {
            let mut last = [Block::default()];
            self.fill_blocks(&mut last);
            tail.copy_from_slice(&last[0][..tail.len()]);
            last[0].zeroize();
        }
    }
}

/// Coordinates processed per chunk; a multiple of 16, so every chunk but the
/// last consumes whole blocks for every word width and the masks stay one
/// contiguous keystream, and a multiple of 8, so a chunk packs to whole bytes.
pub const CHUNK_WORDS: usize = 2048;
/// Keystream blocks per chunk at the widest word (8 bytes per coordinate).
const CHUNK_BLOCKS: usize = CHUNK_WORDS * 8 / 16;

/// Adds or subtracts `PRG(seed)` to `acc` in `Z_{2^b}`; same as [`apply_masks`] with one mask.
pub fn apply_mask(acc: &mut [u64], seed: &Seed, domain: MaskDomain, sign: Sign, bits: u32) {
    apply_masks(acc, &[(seed, domain, sign)], bits);
}

/// Sets `acc[i] = (acc[i] ± PRG(seed)[i]) mod 2^b` for every mask, in order.
///
/// The input may have bits above `b` set (they are ignored: `2^b` divides
/// both `2^32` and `2^64`, so wrapping arithmetic and one final reduction are
/// exact); the output is always reduced. See [`Masker`] for how.
pub fn apply_masks(acc: &mut [u64], masks: &[(&Seed, MaskDomain, Sign)], bits: u32) {
    let mut masker = Masker::new(masks, bits);
    for chunk in acc.chunks_mut(CHUNK_WORDS) {
        let masked = masker.mask_chunk(chunk);
        chunk.copy_from_slice(masked);
    }
}

/// Applies a fixed list of masks to consecutive chunks of a vector.
///
/// Runs chunk-major: every keystream is advanced over one cache-sized chunk
/// ([`CHUNK_WORDS`] coordinates) before moving on, so the running sum stays
/// in L1 instead of streaming through memory once per mask. With many masks
/// that is the difference between memory-bound and keystream-bound
/// unmasking. For `b <= 32` a chunk is summed in `u32` lanes, twice as many
/// per vector instruction as `u64`. A caller that only needs the masked
/// chunks (to pack them, say) never writes a masked `d`-vector at all.
///
/// Scratch buffers (keystream and partial sums) are wiped on drop.
pub struct Masker {
    streams: Vec<(Keystream, Sign)>,
    bits: u32,
    blocks: Vec<Block>,
    lanes32: Vec<u32>,
    lanes64: Vec<u64>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("masks", &self.streams.len())
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Starts every mask's keystream at coordinate 0; `bits` must be in `1..=64`.
    pub fn new(masks: &[(&Seed, MaskDomain, Sign)], bits: u32) -> Self {
        Self {
            streams: masks
                .iter()
                .map(|(seed, domain, sign)| (Keystream::new(seed, *domain), *sign))
                .collect(),
            bits,
            blocks: vec![Block::default(); CHUNK_BLOCKS],
            lanes32: vec![0; if bits <= 32 { CHUNK_WORDS } else { 0 }],
            lanes64: vec![0; CHUNK_WORDS],
        }
    }

    /// Returns `(chunk ± masks) mod 2^b` for the next `chunk.len()` coordinates.
    ///
    /// Every chunk but the last must hold exactly [`CHUNK_WORDS`] coordinates
    /// (the keystreams advance by whole blocks per chunk).
    pub fn mask_chunk(&mut self, chunk: &[u64]) -> &[u64] {
        let bits = self.bits;
        let bpw = bytes_per_word(bits);
        let len = chunk.len() * bpw;
        let used = &mut self.blocks[..len.div_ceil(16)];
        let out = &mut self.lanes64[..chunk.len()];
        if bits <= 32 {
            let mask = u32::MAX >> (32 - bits);
            let lanes = &mut self.lanes32[..chunk.len()];
            // Truncation to u32 is exact mod 2^b.
            lanes
                .iter_mut()
                .zip(chunk)
                .for_each(|(l, a)| *l = *a as u32);
            for (stream, sign) in self.streams.iter_mut() {
                stream.fill_blocks(used);
                let bytes = &Array::slice_as_flattened(used)[..len];
                match sign {
                    Sign::Add => combine32(lanes, bytes, bpw, u32::wrapping_add),
                    Sign::Subtract => combine32(lanes, bytes, bpw, u32::wrapping_sub),
                }
            }
            out.iter_mut()
                .zip(lanes.iter())
                .for_each(|(o, l)| *o = u64::from(l & mask));
        } else {
            let mask = u64::MAX >> (64 - bits);
            out.copy_from_slice(chunk);
            for (stream, sign) in self.streams.iter_mut() {
                stream.fill_blocks(used);
                let bytes = &Array::slice_as_flattened(used)[..len];
                match sign {
                    Sign::Add => combine64(out, bytes, bpw, u64::wrapping_add),
                    Sign::Subtract => combine64(out, bytes, bpw, u64::wrapping_sub),
                }
            }
            out.iter_mut().for_each(|a| *a &= mask);
        }
        out
    }
}

impl Drop for Masker {
    fn drop(&mut self) {
        Array::slice_as_flattened_mut(&mut self.blocks).zeroize();
        self.lanes32.zeroize();
        self.lanes64.zeroize();
    }
}

/// `acc[i] = op(acc[i], word_i)` over little-endian `bpw`-byte words, `bpw <= 4`.
///
/// Monomorphised per word width and operation: with a constant width the
/// word loads compile to plain (vectorisable) loads instead of a variable-length
/// copy per coordinate, which otherwise costs several times the keystream itself.
/// Bits above `b` in a word are left for the caller's final reduction.
#[inline(always)]
fn combine32(acc: &mut [u32], bytes: &[u8], bpw: usize, op: impl Fn(u32, u32) -> u32) {
    #[inline(always)]
    fn words<const W: usize>(acc: &mut [u32], bytes: &[u8], op: impl Fn(u32, u32) -> u32) {
        for (slot, w) in acc.iter_mut().zip(bytes.chunks_exact(W)) {
            let mut le = [0u8; 4];
            le[..W].copy_from_slice(w);
            *slot = op(*slot, u32::from_le_bytes(le));
        }
    }
    match bpw {
        1 => words::<1>(acc, bytes, op),
        2 => words::<2>(acc, bytes, op),
        3 => words::<3>(acc, bytes, op),
        _ => words::<4>(acc, bytes, op),
    }
}

/// As [`combine32`] for `5 <= bpw <= 8` in `u64` lanes.
#[inline(always)]
fn combine64(acc: &mut [u64], bytes: &[u8], bpw: usize, op: impl Fn(u64, u64) -> u64) {
    #[inline(always)]
    fn words<const W: usize>(acc: &mut [u64], bytes: &[u8], op: impl Fn(u64, u64) -> u64) {
        for (slot, w) in acc.iter_mut().zip(bytes.chunks_exact(W)) {
            let mut le = [0u8; 8];
            le[..W].copy_from_slice(w);
            *slot = op(*slot, u64::from_le_bytes(le));
        }
    }
    match bpw {
        5 => words::<5>(acc, bytes, op),
        6 => words::<6>(acc, bytes, op),
        7 => words::<7>(acc, bytes, op),
        _ => words::<8>(acc, bytes, op),
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
        let long = expand(&Seed([3; 32]), MaskDomain::SelfMask, 5000, 64);
        let short = expand(&Seed([3; 32]), MaskDomain::SelfMask, 2500, 64);
        assert_eq!(&long[..2500], &short[..]);
    }

    #[test]
    fn matches_reference_aes256_ctr_keystream() {
        use ctr::cipher::{KeyIvInit, StreamCipher};
        // CTR with the nonce in the upper and a 64-bit big-endian counter in the lower half.
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&MaskDomain::Pairwise.nonce());
        let mut reference = ctr::Ctr64BE::<Aes256>::new(&[5u8; 32].into(), &iv.into());
        let mut ks = vec![0u8; 4 * 5000];
        reference.apply_keystream(&mut ks);
        let v = expand(&Seed([5; 32]), MaskDomain::Pairwise, 5000, 32);
        for (i, x) in v.iter().enumerate() {
            let w = u32::from_le_bytes(ks[4 * i..4 * i + 4].try_into().unwrap());
            assert_eq!(*x, u64::from(w), "coordinate {i}");
        }
        let mut bytes = vec![0u8; 4 * 5000 - 3];
        Keystream::new(&Seed([5; 32]), MaskDomain::Pairwise).fill(&mut bytes);
        assert_eq!(bytes[..], ks[..bytes.len()]);
    }

    #[test]
    fn keystream_is_continuous_across_chunks_for_odd_widths() {
        // 24-bit words: a chunk of CHUNK_WORDS coordinates uses 3 * CHUNK_WORDS bytes,
        // a whole number of blocks, so the mask is one contiguous keystream.
        let d = 3 * CHUNK_WORDS + 5;
        let v = expand(&Seed([6; 32]), MaskDomain::SelfMask, d, 24);
        let mut ks = vec![0u8; 3 * d];
        Keystream::new(&Seed([6; 32]), MaskDomain::SelfMask).fill(&mut ks);
        for (i, x) in v.iter().enumerate() {
            let w = u32::from_le_bytes([ks[3 * i], ks[3 * i + 1], ks[3 * i + 2], 0]);
            assert_eq!(*x, u64::from(w), "coordinate {i}");
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
