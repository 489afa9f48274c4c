//! The genesis: the founding consortium, read from a TOML file, and the root of every hash chain.
//!
//! The same file format serves two moments. Before provisioning, members have no `public_key`
//! yet (a consortium *plan*); `medfl provision` generates the keys and writes the completed file,
//! which is the genesis every member receives and every light client trusts.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::bytes::{Hash, PublicKey};
use crate::codec::{self, CodecError};
use crate::member::{AgreementId, Member, MemberId, Role, check_address};
use crate::privacy::{AggregationFloors, PrivacyBudget};
use crate::timestamp::Timestamp;
use crate::tx::{DataUseAgreement, MAX_LISTED_MEMBERS, MAX_TEXT_LEN, Strategy};

/// The consortium as founded: members, agreements and the endorsement quorum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    /// The consortium's name.
    pub name: String,
    /// When it was founded; no block may be older.
    pub created_at: Timestamp,
    /// Endorsements a round anchor needs.
    pub quorum: u32,
    /// Founding members.
    pub members: Vec<Member>,
    /// Founding agreements, accepted by every member they list.
    pub agreements: Vec<DataUseAgreement>,
}

/// A genesis or consortium file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// Not valid TOML, or not the expected shape.
    #[error("consortium file: {0}")]
    Parse(String),
    /// Parsed, but breaks a rule.
    #[error("consortium file: {0}")]
    Invalid(String),
    /// A member has no public key (run `medfl provision` first).
    #[error("consortium file: member {0} has no public_key; `medfl provision` generates keys")]
    MissingKey(MemberId),
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One member in the TOML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// Stable id.
    pub id: MemberId,
    /// Role.
    pub role: Role,
    /// Hex ed25519 public key; absent in a plan before provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// libp2p multiaddr.
    #[serde(default)]
    pub address: String,
}

/// One agreement in the TOML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementEntry {
    /// Unique id.
    pub id: AgreementId,
    /// Purpose.
    pub purpose: String,
    /// Hospitals covered.
    pub members: Vec<MemberId>,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// Per-member epsilon budget.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// Floors under the secure-aggregation and noise parameters (safe defaults if absent).
    #[serde(default)]
    pub floors: AggregationFloors,
    /// The server strategy rounds run with (FedAvg with rate 1 if absent).
    #[serde(default)]
    pub strategy: Strategy,
}

/// The TOML file: a consortium plan or, with every key filled in, a genesis.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsortiumFile {
    /// The consortium's name.
    pub name: String,
    /// RFC 3339 founding time.
    pub created_at: String,
    /// Endorsements a round anchor needs.
    pub quorum: u32,
    /// Members.
    pub members: Vec<MemberEntry>,
    /// Agreements.
    #[serde(default)]
    pub agreements: Vec<AgreementEntry>,
}

impl ConsortiumFile {
    /// Parses TOML text, refusing unknown keys.
    pub fn from_toml(text: &str) -> Result<ConsortiumFile, GenesisError> {
        toml::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))
    }

    /// Writes TOML text.
    pub fn to_toml(&self) -> Result<String, GenesisError> {
        toml::to_string_pretty(self).map_err(|e| GenesisError::Parse(e.to_string()))
    }

    /// Checks the plan's rules, keys aside: what `provision` needs before generating keys.
    pub fn check_plan(&self) -> Result<(), GenesisError> {
        // Stand-in keys, distinct per member, only so the genesis rules can run unchanged.
        let ids: HashMap<&MemberId, usize> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (&m.id, i))
            .collect();
        self.to_genesis_with(|m| {
            let i = ids.get(&m.id).copied().unwrap_or(0) as u64;
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .into())
        })
        .map(|_| ())
    }

    /// Builds the genesis; every member must have a key.
    pub fn to_genesis(&self) -> Result<Genesis, GenesisError> {
        self.to_genesis_with(|m| {
            m.public_key
                .ok_or_else(|| GenesisError::MissingKey(m.id.clone()))
        })
    }

    fn to_genesis_with(
        &self,
        key_of: impl Fn(&MemberEntry) -> Result<PublicKey, GenesisError>,
    ) -> Result<Genesis, GenesisError> {
        let members = self
            .members
            .iter()
            .map(|m| {
                Ok(Member {
                    id: m.id.clone(),
                    role: m.role,
                    public_key: key_of(m)?,
                    address: m.address.clone(),
                })
            })
            .collect::<Result<Vec<_>, GenesisError>>()?;
        let agreements = self
            .agreements
            .iter()
            .map(|a| {
                Ok(DataUseAgreement {
                    id: a.id.clone(),
                    purpose: a.purpose.clone(),
                    members: a.members.clone(),
                    expires_at: Timestamp::parse_rfc3339(&a.expires_at)
                        .map_err(|e| GenesisError::Invalid(format!("agreement {}: {e}", a.id)))?,
                    budget: PrivacyBudget {
                        epsilon: a.epsilon,
                        delta: a.delta,
                    },
                    floors: a.floors,
                    strategy: a.strategy,
                })
            })
            .collect::<Result<Vec<_>, GenesisError>>()?;
        let genesis = Genesis {
            name: self.name.clone(),
            created_at: Timestamp::parse_rfc3339(&self.created_at)
                .map_err(GenesisError::Invalid)?,
            quorum: self.quorum,
            members,
            agreements,
        };
        genesis.check()?;
        Ok(genesis)
    }
}

impl Genesis {
    /// Parses and checks a genesis TOML file (all keys present).
    pub fn from_toml(text: &str) -> Result<Genesis, GenesisError> {
        ConsortiumFile::from_toml(text)?.to_genesis()
    }

    /// The TOML form, which [`Genesis::from_toml`] reads back to an equal genesis.
    pub fn to_file(&self) -> ConsortiumFile {
        ConsortiumFile {
            name: self.name.clone(),
            created_at: self.created_at.to_rfc3339(),
            quorum: self.quorum,
            members: self
                .members
                .iter()
                .map(|m| MemberEntry {
                    id: m.id.clone(),
                    role: m.role,
                    public_key: Some(m.public_key),
                    address: m.address.clone(),
                })
                .collect(),
            agreements: self
                .agreements
                .iter()
                .map(|a| AgreementEntry {
                    id: a.id.clone(),
                    purpose: a.purpose.clone(),
                    members: a.members.clone(),
                    expires_at: a.expires_at.to_rfc3339(),
                    epsilon: a.budget.epsilon,
                    delta: a.budget.delta,
                    floors: a.floors,
                    strategy: a.strategy,
                })
                .collect(),
        }
    }

    /// The genesis hash: block 1's `previous` and the anchor of every signature.
    pub fn hash(&self) -> Result<Hash, CodecError> {
        Ok(Hash::tagged(b"medfl/genesis/v1", &[&codec::encode(self)?]))
    }

    /// The founding member with this id.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// Checks every founding rule: unique ids and keys, a coordinator, a reachable quorum,
    /// agreements over existing hospitals with valid budgets.
    pub fn check(&self) -> Result<(), GenesisError> {
        let bad = |m: String| Err(GenesisError::Invalid(m));
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return bad("name must have 1 to 128 characters".into());
        }
        if self.members.len() > MAX_LISTED_MEMBERS {
            return bad(format!("more than {MAX_LISTED_MEMBERS} members"));
        }
        // By id, so an agreement's members are looked up, not searched for: a consortium of
        // 10,000 hospitals is checked by each of them.
        let mut roles = HashMap::with_capacity(self.members.len());
        let mut keys = HashSet::new();
        for m in &self.members {
            if roles.insert(&m.id, m.role).is_some() {
                return bad(format!("member {} is listed twice", m.id));
            }
            if !keys.insert(m.public_key.to_bytes()) {
                return bad(format!("member {} and another share a public key", m.id));
            }
            check_address(&m.address)
                .map_err(|e| GenesisError::Invalid(format!("member {}: {e}", m.id)))?;
        }
        if !self.members.iter().any(|m| m.role == Role::Coordinator) {
            return bad("no member has the coordinator role".into());
        }
        let hospitals = self
            .members
            .iter()
            .filter(|m| m.role == Role::Hospital)
            .count();
        if self.quorum == 0 || self.quorum as usize > hospitals {
            return bad(format!(
                "quorum {} must be between 1 and the number of hospitals ({hospitals})",
                self.quorum
            ));
        }
        let mut agreement_ids = HashSet::new();
        for a in &self.agreements {
            if !agreement_ids.insert(&a.id) {
                return bad(format!("agreement {} is listed twice", a.id));
            }
            let in_agreement =
                |e: String| GenesisError::Invalid(format!("agreement {}: {e}", a.id));
            check_agreement_shape(a).map_err(in_agreement)?;
            for id in &a.members {
                match roles.get(id) {
                    Some(Role::Hospital) => {}
                    Some(_) => return Err(in_agreement(format!("member {id} is not a hospital"))),
                    None => {
                        return Err(in_agreement(format!(
                            "member {id} is not in the consortium"
                        )));
                    }
                }
            }
            if a.expires_at <= self.created_at {
                return Err(in_agreement(
                    "expires before the consortium is founded".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an agreement's own fields: purpose, a non-empty list without repeats, the budget.
pub(crate) fn check_agreement_shape(a: &DataUseAgreement) -> Result<(), String> {
    if a.purpose.trim().is_empty() || a.purpose.len() > MAX_TEXT_LEN {
        return Err(format!("purpose must have 1 to {MAX_TEXT_LEN} characters"));
    }
    if a.members.is_empty() || a.members.len() > MAX_LISTED_MEMBERS {
        return Err(format!("must list 1 to {MAX_LISTED_MEMBERS} members"));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = a.members.iter().find(|m| !seen.insert(*m)) {
        return Err(format!("lists member {dup} twice"));
    }
    a.budget.check()?;
    a.floors.check()?;
    a.strategy.check()
}
