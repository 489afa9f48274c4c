//! Round parameters, client identities, and the resolved per-round plan.
//!
//! [`SecAggConfig`] is what a deployment chooses; [`RoundPlan`] is what both
//! sides derive from it plus the roster: the effective degree `k`, threshold `t`
//! and survivor minimum, and a session tag that every signature, key derivation
//! and associated-data string binds, so that nothing produced for one round (or
//! one parameter set, or one caller context) is accepted in another. The
//! neighbour graph itself is fixed later, by the clients' nonces.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::error::SecAggError;
use crate::graph::NeighbourGraph;

/// Identifier of a client within a federation; small and ordered so that
/// "lower id adds, higher id subtracts" is well defined.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Zeroize,
)]
#[serde(transparent)]
pub struct ClientId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Every member's long-term ed25519 verifying key, known to all parties out of band.
pub type Roster = BTreeMap<ClientId, VerifyingKey>;

/// Largest accepted vector length; bounds the memory a malicious peer can make us allocate.
pub const MAX_VECTOR_LEN: usize = 1 << 26;

/// Parameters of one aggregation round, identical at every party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggConfig {
    /// Round (session) id; bound into every signature and derived key.
    pub round: u64,
    /// Number of coordinates in each input vector.
    pub vector_len: usize,
    /// Bit width `b` of the ring `Z_{2^b}` the sum lives in (1..=64).
    pub bits: u32,
    /// Neighbour-graph degree `k`; `None` picks [`default_degree`].
    pub neighbours: Option<usize>,
    /// Shamir threshold `t` within each neighbourhood; `None` picks `floor(deg/2)+1`,
    /// where `deg` is the graph degree (`k`, or `k+1` when `k` and `N` are both odd).
    pub threshold: Option<usize>,
    /// Public context mixed into the neighbour-graph seed. The seed itself comes from the
    /// clients' commit-reveal (see [`crate::graph`]), so whoever picks this value cannot steer
    /// the graph with it.
    pub graph_seed: [u8; 32],
    /// What this attempt belongs to, bound into the session tag and so into every signature,
    /// key derivation and commitment: the agent puts the hash of the genesis, the agreement,
    /// the round number and the attempt number here, so nothing from another consortium,
    /// round or attempt verifies in this one.
    pub context: [u8; 32],
    /// Fewest survivors a client accepts: no client signs a survivor set, or reveals a
    /// share, for fewer inputs than this. The distributed DP noise is calibrated for this many
    /// survivors. Values below the Shamir threshold are raised to it.
    pub min_survivors: usize,
}

impl SecAggConfig {
    /// A config with defaults: 32-bit ring, `O(log N)` degree, majority threshold.
    pub fn new(round: u64, vector_len: usize) -> Self {
        Self {
            round,
            vector_len,
            bits: 32,
            neighbours: None,
            threshold: None,
            graph_seed: [0u8; 32],
            context: [0u8; 32],
            min_survivors: 0,
        }
    }
}

/// Default degree `k = min(N-1, max(4, 3*ceil(log2 N)))`.
///
/// Bell et al. show `O(log N)` neighbours suffice for privacy and correctness
/// against a constant fraction of dropouts and corruptions. The constant sets
/// how many dropped neighbours a round survives: with the default threshold
/// `t = floor(deg/2)+1` a secret stays recoverable while at most `deg - t`
/// of its holders drop. With factor 2 (`k = 14` at `N = 100`) that is 6, and
/// 10 random dropouts out of 100 break about 1 round in 500; factor 3 gives
/// `k = 21, t = 11` at `N = 100`, which survives any 10 dropouts, wherever
/// they fall. The floor of 4 keeps small federations close to classic
/// SecAgg, where the asymptotics mean little.
pub fn default_degree(n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    let log2 = usize::BITS - (n - 1).leading_zeros(); // ceil(log2 n)
    (n - 1).min((3 * log2 as usize).max(4))
}

/// Parameters resolved against the roster; both client and server build the same plan.
///
/// The neighbour graph is not part of the plan: its seed is only known once every client has
/// revealed its nonce ([`RoundPlan::graph`] builds it then). Its degree is known now, because
/// a Harary graph's degree does not depend on the seed.
#[derive(Clone, PartialEq)]
pub struct RoundPlan {
    /// The configuration this plan came from.
    pub config: SecAggConfig,
    /// Members and their identity keys.
    pub roster: Roster,
    /// Requested graph degree `k` (the graph has degree `k`, or `k+1` when `k` and `N` are odd).
    pub neighbours: usize,
    /// Degree of every vertex of the neighbour graph.
    pub degree: usize,
    /// Shamir threshold within a neighbourhood.
    pub threshold: usize,
    /// Fewest survivors any client accepts: `max(config.min_survivors, threshold)`.
    pub min_survivors: usize,
    /// `2^b - 1`, the mask that reduces a `u64` into `Z_{2^b}`.
    pub modulus_mask: u64,
    /// Hash of every public parameter; domain-separates this round from all others.
    pub session: [u8; 32],
}

impl RoundPlan {
    /// Signatures a survivor set needs before any client reveals a share: more than
    /// `(n + c) / 2` of the roster's `n` clients, with `c = t - 1` colluding clients tolerated.
    ///
    /// Each honest client signs one set. Two different sets that both reach this quorum would
    /// need `2Q <= (n - c) + 2c` signers, which `Q > (n + c) / 2` rules out: a malicious server
    /// cannot show some of `v`'s neighbours that `v` survived and others that it dropped, which
    /// is what it would need to collect both of `v`'s secrets. (Fewer than `t` colluders are
    /// the protocol's assumption anyway: `t` colluding neighbours hold enough shares alone.)
    pub fn consistency_quorum(&self) -> usize {
        let n = self.roster.len();
        let c = self.threshold.saturating_sub(1);
        ((n + c) / 2 + 1).max(self.threshold)
    }
}

impl fmt::Debug for RoundPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundPlan")
            .field("round", &self.config.round)
            .field("clients", &self.roster.len())
            .field("degree", &self.degree)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl RoundPlan {
    /// Validates `config` against `roster` and derives graph, threshold and session tag.
    ///
    /// With `deg` the degree of the (regular) neighbour graph, the threshold
    /// must satisfy `deg/2 < t <= deg`: above `deg/2` so that a server cannot
    /// split one neighbourhood into two disjoint groups each holding `t`
    /// shares (one revealing self-mask shares, the other mask-key shares); at
    /// most `deg` because only the neighbours hold shares.
    pub fn new(config: &SecAggConfig, roster: &Roster) -> Result<Self, SecAggError> {
        if !(1..=64).contains(&config.bits) {
            return Err(SecAggError::InvalidConfig("bits must be in 1..=64"));
        }
        if config.vector_len == 0 || config.vector_len > MAX_VECTOR_LEN {
            return Err(SecAggError::InvalidConfig("vector_len must be in 1..=2^26"));
        }
        let n = roster.len();
        if n < 2 {
            return Err(SecAggError::InvalidConfig(
                "roster needs at least two clients",
            ));
        }
        let k = config.neighbours.unwrap_or_else(|| default_degree(n));
        if k == 0 || k > n - 1 {
            return Err(SecAggError::InvalidConfig("neighbours must be in 1..=N-1"));
        }
        // The Harary graph is regular whatever its seed; its degree is k, or k+1 when k and N
        // are both odd (see `NeighbourGraph::harary`).
        let degree = if k % 2 == 1 && n % 2 == 1 { k + 1 } else { k };
        let t = config.threshold.unwrap_or(degree / 2 + 1);
        if t == 0 || t <= degree / 2 || t > degree {
            return Err(SecAggError::InvalidConfig(
                "threshold must satisfy degree/2 < t <= degree",
            ));
        }
        if config.min_survivors > n {
            return Err(SecAggError::InvalidConfig(
                "min_survivors must not exceed the roster size",
            ));
        }
        let min_survivors = config.min_survivors.max(t);
        let modulus_mask = if config.bits == 64 {
            u64::MAX
        } else {
            (1u64 << config.bits) - 1
        };
        let mut h = Sha256::new();
        // v4: consistency signatures cover the survivor set's digest (v3 signed the list; v3
        // brought the commit-reveal graph seed, key transcript and share commitments; v1
        // expanded masks with ChaCha20). Every signature and key derivation binds this tag, so
        // an older peer fails loudly at the first signature check, its key advertisement,
        // before any input or privacy charge, instead of at the consistency check after both.
        h.update(b"medfl-secagg/v4/session");
        h.update(config.round.to_le_bytes());
        h.update(config.bits.to_le_bytes());
        h.update((config.vector_len as u64).to_le_bytes());
        h.update((k as u64).to_le_bytes());
        h.update((t as u64).to_le_bytes());
        h.update(config.graph_seed);
        h.update(config.context);
        h.update((min_survivors as u64).to_le_bytes());
        h.update((n as u64).to_le_bytes());
        for (id, vk) in roster {
            h.update(id.0.to_le_bytes());
            h.update(vk.as_bytes());
        }
        let session: [u8; 32] = h.finalize().into();
        Ok(Self {
            config: config.clone(),
            roster: roster.clone(),
            neighbours: k,
            degree,
            threshold: t,
            min_survivors,
            modulus_mask,
            session,
        })
    }

    /// The neighbour graph for a graph seed (see [`crate::crypto::graph_seed`]).
    pub fn graph(&self, seed: &[u8; 32]) -> NeighbourGraph {
        let ids: Vec<ClientId> = self.roster.keys().copied().collect();
        NeighbourGraph::harary(&ids, self.neighbours, seed)
    }

    /// Errors unless `id` is a roster member.
    pub fn check_member(&self, id: ClientId) -> Result<(), SecAggError> {
        if self.roster.contains_key(&id) {
            Ok(())
        } else {
            Err(SecAggError::UnknownClient(id))
        }
    }

    /// Errors unless `round` is this plan's round.
    pub fn check_round(&self, round: u64) -> Result<(), SecAggError> {
        if round == self.config.round {
            Ok(())
        } else {
            Err(SecAggError::WrongRound {
                expected: self.config.round,
                got: round,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_degree_is_logarithmic_and_capped() {
        assert_eq!(default_degree(2), 1);
        assert_eq!(default_degree(3), 2);
        assert_eq!(default_degree(5), 4);
        assert_eq!(default_degree(10), 9);
        assert_eq!(default_degree(50), 18);
        assert_eq!(default_degree(100), 21);
        assert_eq!(default_degree(1000), 30);
    }

    #[test]
    fn defaults_survive_ten_percent_dropout_anywhere() {
        // A secret is lost only if more than deg - t of its holders drop; with the
        // defaults that margin covers a 10 % dropout even if every dropped client
        // is a neighbour of the same client.
        for n in [10u32, 20, 50, 100] {
            let plan = RoundPlan::new(&SecAggConfig::new(1, 4), &roster(n)).unwrap();
            let margin = plan.degree - plan.threshold;
            assert!(margin >= n as usize / 10, "n={n}: margin {margin}");
        }
    }

    fn roster(n: u32) -> Roster {
        (0..n)
            .map(|i| {
                let sk = ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 1; 32]);
                (ClientId(i), sk.verifying_key())
            })
            .collect()
    }

    #[test]
    fn threshold_must_be_a_strict_majority_of_the_degree() {
        let mut c = SecAggConfig::new(1, 4);
        c.neighbours = Some(4);
        for (t, ok) in [(0, false), (2, false), (3, true), (4, true), (5, false)] {
            c.threshold = Some(t);
            assert_eq!(RoundPlan::new(&c, &roster(10)).is_ok(), ok, "t={t}");
        }
        // k = 3 with N odd gives a 4-regular graph, so t = 2 is not a majority.
        c.neighbours = Some(3);
        c.threshold = Some(2);
        assert!(RoundPlan::new(&c, &roster(9)).is_err());
        c.threshold = None;
        assert_eq!(RoundPlan::new(&c, &roster(9)).unwrap().threshold, 3);
        assert_eq!(RoundPlan::new(&c, &roster(10)).unwrap().threshold, 2);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut c = SecAggConfig::new(1, 4);
        c.bits = 0;
        assert!(RoundPlan::new(&c, &roster(4)).is_err());
        c.bits = 65;
        assert!(RoundPlan::new(&c, &roster(4)).is_err());
        c.bits = 64;
        assert_eq!(
            RoundPlan::new(&c, &roster(4)).unwrap().modulus_mask,
            u64::MAX
        );
        c.vector_len = 0;
        assert!(RoundPlan::new(&c, &roster(4)).is_err());
        c.vector_len = 4;
        c.neighbours = Some(4);
        assert!(RoundPlan::new(&c, &roster(4)).is_err());
        assert!(RoundPlan::new(&SecAggConfig::new(1, 4), &roster(1)).is_err());
    }
}
