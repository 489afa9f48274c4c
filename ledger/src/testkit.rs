//! A deterministic consortium for tests, benchmarks and demos: keys from a seed, a genesis with
//! one coordinator, `n` hospitals and an auditor, and helpers that sign transactions.
//!
//! Keys made here come from a public seed: never use them outside tests.

use ed25519_dalek::{Signer, SigningKey};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::bytes::Hash;
use crate::genesis::Genesis;
use crate::member::{AgreementId, Member, MemberId, Role};
use crate::privacy::{AggregationFloors, AggregationParams, DpMechanism, DpParams, PrivacyBudget};
use crate::timestamp::Timestamp;
use crate::tx::{
    DataUseAgreement, Endorsement, PrivacySpend, RoundAnchor, Strategy, Transaction, TxBody,
};

/// 2026-01-01T00:00:00Z, the fixture's founding time.
pub const T0: Timestamp = Timestamp(1_767_225_600_000);
/// One hour in milliseconds.
pub const HOUR: u64 = 3_600_000;

/// A consortium with its secret keys.
pub struct Fixture {
    /// The genesis.
    pub genesis: Genesis,
    /// Its hash.
    pub genesis_hash: Hash,
    /// Every founding member's id and key, coordinator first, auditor last.
    pub keys: Vec<(MemberId, SigningKey)>,
}

/// A signing key drawn from `rng`.
pub fn key_from(rng: &mut ChaCha20Rng) -> SigningKey {
    SigningKey::generate(rng)
}

impl Fixture {
    /// `hospitals` hospitals (at least 1), quorum `quorum`, one agreement `dua` over all of them
    /// with budget epsilon 10, delta 1e-5, expiring a year after founding, FedAvg with rate 1
    /// and [`Self::floors`].
    pub fn new(seed: u64, hospitals: usize, quorum: u32) -> Fixture {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut keys = Vec::new();
        let mut members = Vec::new();
        let mut add = |id: String, role: Role, rng: &mut ChaCha20Rng, keys: &mut Vec<_>| {
            let key = key_from(rng);
            let id = MemberId::new(id).unwrap_or_else(|e| unreachable!("fixture id: {e}"));
            members.push(Member {
                id: id.clone(),
                role,
                public_key: key.verifying_key().into(),
                address: format!("/ip4/127.0.0.1/tcp/{}", 7000 + keys.len()),
            });
            keys.push((id, key));
        };
        add("coordinator".into(), Role::Coordinator, &mut rng, &mut keys);
        for i in 0..hospitals {
            add(format!("hospital-{i}"), Role::Hospital, &mut rng, &mut keys);
        }
        add("auditor".into(), Role::Auditor, &mut rng, &mut keys);
        let hospital_ids: Vec<MemberId> = keys
            .iter()
            .filter(|(id, _)| id.as_str().starts_with("hospital"))
            .map(|(id, _)| id.clone())
            .collect();
        let genesis = Genesis {
            name: "test consortium".into(),
            created_at: T0,
            quorum,
            members,
            agreements: vec![DataUseAgreement {
                id: Self::dua(),
                purpose: "learn a model of abnormal access to health records".into(),
                members: hospital_ids,
                expires_at: Timestamp(T0.0 + 365 * 24 * HOUR),
                budget: PrivacyBudget {
                    epsilon: 10.0,
                    delta: 1e-5,
                },
                floors: Self::floors(),
                strategy: Strategy::default(),
            }],
        };
        let genesis_hash = genesis
            .hash()
            .unwrap_or_else(|e| unreachable!("fixture genesis: {e}"));
        Fixture {
            genesis,
            genesis_hash,
            keys,
        }
    }

    /// The fixture's agreement id.
    pub fn dua() -> AgreementId {
        AgreementId::new("dua").unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// A member id by name.
    pub fn id(name: &str) -> MemberId {
        MemberId::new(name).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The key of a founding member.
    pub fn key(&self, id: &MemberId) -> &SigningKey {
        &self
            .keys
            .iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| unreachable!("no key for {id}"))
            .1
    }

    /// The coordinator's id and key.
    pub fn coordinator(&self) -> (&MemberId, &SigningKey) {
        let (id, key) = &self.keys[0];
        (id, key)
    }

    /// Signs `body` as `signer` (whose key must be known to the fixture).
    pub fn tx(&self, signer: &MemberId, issued_at: Timestamp, body: TxBody) -> Transaction {
        self.tx_with_key(signer, self.key(signer), issued_at, body)
    }

    /// Signs `body` as `signer` with an explicit key.
    pub fn tx_with_key(
        &self,
        signer: &MemberId,
        key: &SigningKey,
        issued_at: Timestamp,
        body: TxBody,
    ) -> Transaction {
        Transaction::sign(&self.genesis_hash, signer.clone(), key, issued_at, body)
            .unwrap_or_else(|e| unreachable!("fixture tx: {e}"))
    }

    /// The fixture agreement's floors: the defaults, but two survivors suffice (small rounds
    /// keep tests short).
    pub fn floors() -> AggregationFloors {
        AggregationFloors {
            min_survivors: 2,
            ..AggregationFloors::default()
        }
    }

    /// Secure-aggregation parameters that meet [`Self::floors`].
    pub fn aggregation() -> AggregationParams {
        AggregationParams {
            neighbours: 2,
            threshold: 2,
            min_survivors: 2,
            bits: 32,
            noise_multiplier: 0.5,
        }
    }

    /// A round anchor for `round` over `participants` (each spending `epsilon_total`),
    /// endorsed by all of them, with [`Self::aggregation`]'s parameters.
    pub fn round(
        &self,
        round: u64,
        previous: Hash,
        participants: &[MemberId],
        epsilon_total: f64,
    ) -> RoundAnchor {
        let model = Hash::tagged(b"test-model", &[&round.to_le_bytes()]);
        let mut anchor = RoundAnchor {
            agreement: Self::dua(),
            round,
            previous_model: previous,
            model,
            participants: participants
                .iter()
                .map(|m| (m.clone(), PrivacySpend { epsilon_total }))
                .collect(),
            dropped: vec![],
            dp: DpParams {
                mechanism: DpMechanism::DpSgd,
                noise_multiplier: 1.1,
                sampling_rate: 0.01,
                steps: 100,
                clip_norm: 1.0,
                delta: 1e-5,
            },
            aggregation: Self::aggregation(),
            strategy: Strategy::default(),
            server_state: Hash::tagged(b"test-server-state", &[]),
            secagg_transcript: Hash::tagged(b"test-transcript", &[&round.to_le_bytes()]),
            endorsements: vec![],
        };
        self.endorse(&mut anchor, participants);
        anchor
    }

    /// [`Self::round`] with the epsilons the contract recomputes on `state`, endorsed by all
    /// participants: an anchor an honest coordinator would write.
    pub fn round_on(
        &self,
        state: &crate::state::ChainState,
        round: u64,
        previous: Hash,
        participants: &[MemberId],
    ) -> RoundAnchor {
        let mut anchor = self.round(round, previous, participants, 0.0);
        self.set_epsilons(state, &mut anchor);
        anchor
    }

    /// Sets every participant's epsilon to what the contract recomputes on `state` for the
    /// anchor's DP parameters, and re-endorses the anchor by all participants.
    pub fn set_epsilons(&self, state: &crate::state::ChainState, anchor: &mut RoundAnchor) {
        for (m, spend) in &mut anchor.participants {
            spend.epsilon_total = state
                .epsilon_after(&anchor.agreement, m, &anchor.dp)
                .unwrap_or(f64::NAN);
        }
        let endorsers: Vec<MemberId> = anchor.participants.iter().map(|(m, _)| m.clone()).collect();
        self.endorse(anchor, &endorsers);
    }

    /// Replaces the endorsements of `anchor` with signatures by `endorsers`.
    pub fn endorse(&self, anchor: &mut RoundAnchor, endorsers: &[MemberId]) {
        let message = anchor
            .endorsement_message(&self.genesis_hash)
            .unwrap_or_else(|e| unreachable!("fixture anchor: {e}"));
        anchor.endorsements = endorsers
            .iter()
            .map(|m| Endorsement {
                member: m.clone(),
                signature: self.key(m).sign(&message).into(),
            })
            .collect();
    }
}

impl Fixture {
    /// A block of `txs` on top of `state`, proposed and signed by the coordinator.
    pub fn block(
        &self,
        state: &crate::state::ChainState,
        txs: Vec<Transaction>,
        time: Timestamp,
    ) -> crate::block::Block {
        let ids: Vec<_> = txs
            .iter()
            .map(|t| t.id().unwrap_or_else(|e| unreachable!("{e}")))
            .collect();
        let (proposer, key) = self.coordinator();
        let header = crate::block::BlockHeader {
            version: crate::block::BLOCK_VERSION,
            height: state.height() + 1,
            previous: state.tip(),
            tx_root: crate::merkle::root(&ids),
            tx_count: txs.len() as u32,
            timestamp: time,
            proposer: proposer.clone(),
        };
        let header = header
            .sign(&self.genesis_hash, key)
            .unwrap_or_else(|e| unreachable!("{e}"));
        crate::block::Block { header, txs }
    }
}
