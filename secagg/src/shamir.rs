//! Shamir secret sharing over the scalar field of curve25519.
//!
//! # Math
//!
//! Let `F = Z/ℓZ` with `ℓ = 2^252 + 27742317777372353535851937790883648493`,
//! the prime order of the ristretto/ed25519 group, as implemented by
//! [`curve25519_dalek::Scalar`]. To share `s ∈ F` with threshold `t`, draw
//! `a_1, …, a_{t-1}` uniformly from `F` and set
//!
//! ```text
//!     f(X) = s + a_1 X + … + a_{t-1} X^{t-1},      share_j = f(x_j),
//! ```
//!
//! where `x_j = id_j + 1 ≠ 0` is the holder's public evaluation point. Any `t`
//! shares determine `f` and hence `s = f(0)` by Lagrange interpolation,
//!
//! ```text
//!     f(x) = Σ_j y_j · λ_j(x),   λ_j(x) = Π_{m ≠ j} (x - x_m) / (x_j - x_m),
//! ```
//!
//! while any `t-1` shares are consistent with every `s`: for each candidate
//! secret there is exactly one polynomial of degree `< t` through the `t-1`
//! points and `(0, s)`, so the shares are independent of `s`.
//!
//! # Encoding 32-byte secrets
//!
//! A 32-byte string (a PRG seed or an X25519 secret key) does not fit in
//! `F` (`ℓ < 2^253`). We split it into two 16-byte little-endian halves, each
//! `< 2^128 < ℓ`, and share each half with an independent polynomial. After
//! interpolation each half must again be `< 2^128`; anything else proves the
//! shares were not produced from one secret and is reported, never truncated.
//! Reconstruction is therefore exact.

use std::fmt;

use curve25519_dalek::Scalar;
use rand::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::config::ClientId;
use crate::error::SecAggError;

/// The public evaluation point of a holder: `id + 1`, never zero.
pub fn eval_point(holder: ClientId) -> Scalar {
    Scalar::from(u64::from(holder.0) + 1)
}

/// Shares `secret` with threshold `t` at the points `xs`; returns `f(x)` for each `x`.
///
/// Callers guarantee `1 <= t`; the coefficients come from `rng`.
pub fn split_scalar<R: CryptoRng + ?Sized>(
    secret: &Scalar,
    t: usize,
    xs: &[Scalar],
    rng: &mut R,
) -> Vec<Scalar> {
    let mut coeffs: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(t.max(1)));
    coeffs.push(*secret);
    for _ in 1..t {
        coeffs.push(Scalar::random(rng));
    }
    xs.iter()
        .map(|x| {
            // Horner: fewer multiplications than evaluating powers.
            coeffs.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)
        })
        .collect()
}

/// The Lagrange basis of a fixed set of distinct points, ready to evaluate anywhere.
///
/// The denominators `Π_{m≠j} (x_j - x_m)` depend only on the points, so they
/// are inverted once (one batched inversion); each evaluation point then costs
/// `O(t)` multiplications via prefix and suffix products of `(at - x_m)`.
#[derive(Debug, Clone)]
pub struct LagrangeBasis {
    xs: Vec<Scalar>,
    inv_den: Vec<Scalar>,
}

impl LagrangeBasis {
    /// Prepares the basis; fails if two points coincide.
    pub fn new(xs: &[Scalar]) -> Result<Self, SecAggError> {
        let mut inv_den = Vec::with_capacity(xs.len());
        for (j, xj) in xs.iter().enumerate() {
            let mut den = Scalar::ONE;
            for (m, xm) in xs.iter().enumerate() {
                if m != j {
                    den *= xj - xm;
                }
            }
            if den == Scalar::ZERO {
                return Err(SecAggError::Internal("repeated Shamir evaluation point"));
            }
            inv_den.push(den);
        }
        Scalar::invert_batch_alloc(&mut inv_den);
        Ok(Self {
            xs: xs.to_vec(),
            inv_den,
        })
    }

    /// `λ_j(at)` for every point `j`.
    pub fn at(&self, at: &Scalar) -> Vec<Scalar> {
        let n = self.xs.len();
        // suffix[j] = Π_{m ≥ j} (at - x_m)
        let mut suffix = vec![Scalar::ONE; n + 1];
        for m in (0..n).rev() {
            suffix[m] = suffix[m + 1] * (at - self.xs[m]);
        }
        let mut prefix = Scalar::ONE;
        let mut out = Vec::with_capacity(n);
        for j in 0..n {
            out.push(prefix * suffix[j + 1] * self.inv_den[j]);
            prefix *= at - self.xs[j];
        }
        out
    }
}

/// Lagrange basis values `λ_j(at)` for the distinct points `xs`.
pub fn lagrange_coefficients(xs: &[Scalar], at: &Scalar) -> Result<Vec<Scalar>, SecAggError> {
    Ok(LagrangeBasis::new(xs)?.at(at))
}

/// Evaluates, at `at`, the unique polynomial of degree `< points.len()` through `points`.
pub fn interpolate(points: &[(Scalar, Scalar)], at: &Scalar) -> Result<Scalar, SecAggError> {
    let xs: Vec<Scalar> = points.iter().map(|p| p.0).collect();
    let lambdas = lagrange_coefficients(&xs, at)?;
    Ok(points.iter().zip(&lambdas).map(|((_, y), l)| y * l).sum())
}

/// One holder's share of a 32-byte secret: the values of two polynomials at
/// the holder's point, one per 16-byte half.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretShare {
    /// Who holds the share; fixes the evaluation point `id + 1`.
    #[zeroize(skip)]
    pub holder: ClientId,
    /// `f_lo(x)` and `f_hi(x)`.
    pub values: [Scalar; 2],
}

impl fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretShare")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// Length of [`SecretShare::to_bytes`].
pub const SHARE_BYTES: usize = 64;

impl SecretShare {
    /// Canonical encoding: the two scalars, little-endian.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SHARE_BYTES]> {
        let mut out = Zeroizing::new([0u8; SHARE_BYTES]);
        out[..32].copy_from_slice(self.values[0].as_bytes());
        out[32..].copy_from_slice(self.values[1].as_bytes());
        out
    }

    /// Parses [`SecretShare::to_bytes`], rejecting wrong lengths and non-canonical scalars.
    pub fn from_bytes(holder: ClientId, bytes: &[u8]) -> Result<Self, SecAggError> {
        if bytes.len() != SHARE_BYTES {
            return Err(SecAggError::Malformed {
                field: "share",
                expected: SHARE_BYTES,
                got: bytes.len(),
            });
        }
        let parse = |chunk: &[u8]| -> Option<Scalar> {
            let mut b = Zeroizing::new([0u8; 32]);
            b.copy_from_slice(chunk);
            Option::from(Scalar::from_canonical_bytes(*b))
        };
        match (parse(&bytes[..32]), parse(&bytes[32..])) {
            (Some(lo), Some(hi)) => Ok(Self {
                holder,
                values: [lo, hi],
            }),
            _ => Err(SecAggError::Malformed {
                field: "share scalar (non-canonical)",
                expected: 32,
                got: 32,
            }),
        }
    }
}

fn half_to_scalar(half: &[u8]) -> Scalar {
    let mut b = Zeroizing::new([0u8; 32]);
    b[..16].copy_from_slice(half);
    // < 2^128 < ℓ, so reduction is the identity.
    Scalar::from_bytes_mod_order(*b)
}

/// Splits a 32-byte secret into shares for `holders` with threshold `t`.
pub fn split_secret<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    t: usize,
    holders: &[ClientId],
    rng: &mut R,
) -> Vec<SecretShare> {
    let xs: Vec<Scalar> = holders.iter().map(|&h| eval_point(h)).collect();
    let mut lo = half_to_scalar(&secret[..16]);
    let mut hi = half_to_scalar(&secret[16..]);
    let ys_lo = split_scalar(&lo, t, &xs, rng);
    let ys_hi = split_scalar(&hi, t, &xs, rng);
    lo.zeroize();
    hi.zeroize();
    holders
        .iter()
        .zip(ys_lo.into_iter().zip(ys_hi))
        .map(|(&holder, (a, b))| SecretShare {
            holder,
            values: [a, b],
        })
        .collect()
}

/// Rebuilds the 32-byte secret of `owner` from at least `t` shares.
///
/// The first `t` shares define the polynomials; every further share must lie
/// on them, so a single corrupted share among more than `t` is detected. The
/// result must decode to two halves `< 2^128`.
pub fn reconstruct_secret(
    owner: ClientId,
    shares: &[SecretShare],
    t: usize,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    if t == 0 || shares.len() < t {
        return Err(SecAggError::TooFewShares {
            owner,
            got: shares.len(),
            need: t,
        });
    }
    let mut holders: Vec<ClientId> = shares.iter().map(|s| s.holder).collect();
    holders.sort_unstable();
    if let Some(w) = holders.windows(2).find(|w| w[0] == w[1]) {
        return Err(SecAggError::Duplicate(w[0]));
    }
    let (base, extra) = shares.split_at(t);
    let xs: Vec<Scalar> = base.iter().map(|s| eval_point(s.holder)).collect();
    let basis = LagrangeBasis::new(&xs)?;
    let lambdas0 = basis.at(&Scalar::ZERO);
    for check in extra {
        let lambdas = basis.at(&eval_point(check.holder));
        for half in 0..2 {
            let expected: Scalar = base
                .iter()
                .zip(&lambdas)
                .map(|(s, l)| s.values[half] * l)
                .sum();
            if expected != check.values[half] {
                return Err(SecAggError::InconsistentShares(owner));
            }
        }
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for half in 0..2 {
        let value: Scalar = base
            .iter()
            .zip(&lambdas0)
            .map(|(s, l)| s.values[half] * l)
            .sum();
        let bytes = Zeroizing::new(value.to_bytes());
        if bytes[16..].iter().any(|&b| b != 0) {
            return Err(SecAggError::InconsistentShares(owner));
        }
        out[half * 16..half * 16 + 16].copy_from_slice(&bytes[..16]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    fn rng(seed: u8) -> chacha20::ChaCha20Rng {
        chacha20::ChaCha20Rng::from_seed([seed; 32])
    }

    fn holders(n: u32) -> Vec<ClientId> {
        (0..n).map(|i| ClientId(3 * i + 5)).collect()
    }

    #[test]
    fn roundtrip_with_all_shares() {
        let mut r = rng(1);
        let secret = [0xAB; 32];
        let shares = split_secret(&secret, 3, &holders(5), &mut r);
        let got = reconstruct_secret(ClientId(0), &shares, 3).unwrap();
        assert_eq!(*got, secret);
    }

    #[test]
    fn any_t_of_n_reconstruct_and_t_minus_one_do_not() {
        let mut r = rng(2);
        for (n, t) in [(1u32, 1usize), (5, 3), (8, 5), (12, 7)] {
            let mut secret = [0u8; 32];
            rand::Rng::fill_bytes(&mut r, &mut secret);
            secret[31] = 0xFF; // exercise the top bits of the high half
            let shares = split_secret(&secret, t, &holders(n), &mut r);
            for _ in 0..10 {
                let mut subset = shares.clone();
                subset.shuffle(&mut r);
                subset.truncate(t);
                assert_eq!(
                    *reconstruct_secret(ClientId(1), &subset, t).unwrap(),
                    secret
                );
                subset.truncate(t - 1);
                assert_eq!(
                    reconstruct_secret(ClientId(1), &subset, t),
                    Err(SecAggError::TooFewShares {
                        owner: ClientId(1),
                        got: t - 1,
                        need: t
                    })
                );
            }
        }
    }

    #[test]
    fn t_minus_one_shares_with_a_forged_point_give_another_secret() {
        let mut r = rng(3);
        let secret = [0x11; 32];
        let shares = split_secret(&secret, 4, &holders(6), &mut r);
        let mut forged = shares[..4].to_vec();
        forged[3].values[0] += Scalar::ONE;
        forged[3].values[1] += Scalar::ONE;
        match reconstruct_secret(ClientId(1), &forged, 4) {
            Ok(s) => assert_ne!(*s, secret),
            Err(e) => assert_eq!(e, SecAggError::InconsistentShares(ClientId(1))),
        }
    }

    #[test]
    fn extra_shares_are_checked() {
        let mut r = rng(4);
        let secret = [0x42; 32];
        let mut shares = split_secret(&secret, 3, &holders(6), &mut r);
        shares[5].values[1] += Scalar::ONE;
        assert_eq!(
            reconstruct_secret(ClientId(9), &shares, 3),
            Err(SecAggError::InconsistentShares(ClientId(9)))
        );
        assert_eq!(
            *reconstruct_secret(ClientId(9), &shares[..5], 3).unwrap(),
            secret
        );
    }

    #[test]
    fn lagrange_basis_matches_direct_formula() {
        let xs: Vec<Scalar> = [2u64, 5, 11, 17].iter().map(|&x| Scalar::from(x)).collect();
        let at = Scalar::from(23u64);
        let fast = lagrange_coefficients(&xs, &at).unwrap();
        for (j, l) in fast.iter().enumerate() {
            let mut direct = Scalar::ONE;
            for (m, xm) in xs.iter().enumerate() {
                if m != j {
                    direct *= (at - xm) * (xs[j] - xm).invert();
                }
            }
            assert_eq!(*l, direct);
        }
        // The basis sums to one (it reproduces the constant polynomial).
        assert_eq!(fast.iter().sum::<Scalar>(), Scalar::ONE);
        assert!(lagrange_coefficients(&[Scalar::ONE, Scalar::ONE], &at).is_err());
    }

    #[test]
    fn duplicate_holders_rejected() {
        let mut r = rng(5);
        let shares = split_secret(&[1; 32], 2, &holders(3), &mut r);
        let dup = vec![shares[0].clone(), shares[0].clone()];
        assert!(matches!(
            reconstruct_secret(ClientId(0), &dup, 2),
            Err(SecAggError::Duplicate(_))
        ));
    }

    #[test]
    fn share_bytes_roundtrip_and_reject_noncanonical() {
        let mut r = rng(6);
        let shares = split_secret(&[9; 32], 2, &holders(2), &mut r);
        let bytes = shares[0].to_bytes();
        let back = SecretShare::from_bytes(shares[0].holder, &bytes[..]).unwrap();
        assert_eq!(back, shares[0]);
        assert!(SecretShare::from_bytes(ClientId(0), &bytes[..63]).is_err());
        let mut bad = *bytes;
        bad[31] = 0xFF; // ≥ ℓ: not canonical
        assert!(SecretShare::from_bytes(ClientId(0), &bad).is_err());
    }
}
