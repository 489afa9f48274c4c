//! Differential privacy for medfl: clipping, exact noise samplers, distributed DP under secure
//! aggregation, and the privacy accountant.
//!
//! Two ways of protecting a hospital's contribution are supported:
//!
//! - **Distributed DP** ([`ddp`]): each client clips, rotates, quantizes and adds a share of
//!   discrete Gaussian noise, and secure aggregation (`medfl-secagg`) sums the shares in
//!   `Z_{2^b}`; the server only sees the noisy sum.
//! - **DP-SGD building blocks**: per-example [`clip::clip_factor`] and real-valued lattice
//!   Gaussian noise ([`sampler::LatticeGaussian`]) with `σ = noise_multiplier · clip`, accounted
//!   as the Poisson-subsampled Gaussian.
//!
//! All randomness comes from a caller-supplied, caller-seeded RNG (`rand::CryptoRng`, e.g.
//! `rand_chacha::ChaCha20Rng`), so runs are reproducible and the library never touches the OS RNG.
//! Budgets are checked with [`budget::MemberBudget`] before any data is used.
//!
//! # Example: one distributed-DP round, charged before any data is touched
//!
//! ```
//! use medfl_dp::{DdpConfig, DdpPlan, MemberBudget, PrivacyBudget, PrivacyEvent};
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha20Rng;
//!
//! # fn main() -> Result<(), medfl_dp::DpError> {
//! // 3 clients, 8 parameters, clip 1, noise multiplier 1, one integer step = 0.01.
//! let plan = DdpPlan::new(DdpConfig::new(8, 3, 1.0, 1.0, 0.01), [42; 32])?;
//! let mut member = MemberBudget::new(PrivacyBudget::new(10.0, 1e-6)?);
//! let round = PrivacyEvent::DistributedDiscreteGaussian { privacy: plan.privacy(), rounds: 1 };
//! member.charge(&round)?; // refuses (typed error, nothing changed) if over budget
//!
//! let mut sum = vec![0u64; plan.encoded_len()];
//! for client in 0..3u64 {
//!     let mut rng = ChaCha20Rng::seed_from_u64(client);
//!     let update = vec![0.1; 8];
//!     let masked_input = plan.encode(&update, &mut rng)?; // Vec<u64> in Z_{2^b}, for secagg
//!     plan.add_mod(&mut sum, &masked_input)?; // secure aggregation does this in production
//! }
//! let noisy_sum = plan.decode_sum(&sum)?;
//! assert_eq!(noisy_sum.len(), 8);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`clip`]: L2 clipping of `f32`/`f64` vectors, with the rounding margin stated.
//! - [`sampler`]: the exact discrete Gaussian (Canonne, Kamath & Steinke 2020) with integer-only
//!   coins, and the lattice Gaussian for real-valued noise.
//! - [`hadamard`]: the randomized Hadamard rotation and its inverse.
//! - [`ddp`]: the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021): encode, decode, bit
//!   width and wrap-probability bound.
//! - [`accountant`]: RDP of the subsampled Gaussian and the distributed discrete Gaussian,
//!   composition, conversion to `(ε, δ)` as in Google's `dp-accounting`.
//! - [`pld`]: privacy loss distributions of the subsampled Gaussian (connect-the-dots, FFT
//!   composition), matching `dp-accounting`'s `PLDAccountant`.
//! - [`loss`]: [`PrivacyLoss`], everything one unit's data went through, priced by the tighter
//!   of the two accountants; what the ledger, the coordinator and each hospital all call.
//! - [`budget`]: a member's `(ε, δ)` agreement, `would_exceed` and `charge`.
//! - [`error`]: the single typed error.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod accountant;
pub mod budget;
pub mod clip;
pub mod ddp;
pub mod error;
pub mod hadamard;
pub mod loss;
pub mod pld;
pub mod sampler;

pub use accountant::{DdgPrivacy, RdpAccountant, calibrate_poisson_gaussian};
pub use budget::{MemberBudget, PrivacyBudget, PrivacyEvent};
pub use ddp::{DdpConfig, DdpPlan};
pub use error::DpError;
pub use loss::PrivacyLoss;
pub use sampler::{DiscreteGaussian, LatticeGaussian};
