//! Who may take part: member ids, roles, and the registered member record.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bytes::PublicKey;

/// Longest member, agreement or other identifier we accept.
pub const MAX_ID_LEN: usize = 64;

/// Checks an identifier: 1 to 64 characters from `a-z 0-9 - _ .`, starting with a letter or digit.
///
/// Ids end up in file names (a member's startup folder) and logs, so the alphabet is narrow.
pub(crate) fn check_id(kind: &str, s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(format!(
            "{kind} id {s:?} must have 1 to {MAX_ID_LEN} characters"
        ));
    }
    if !s.chars().all(ok_char) || !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{kind} id {s:?} may use only a-z, 0-9, '-', '_', '.' and must start with a letter or digit"
        ));
    }
    Ok(())
}

macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Held as an `Arc<str>`: every ledger state, anchor and round plan keys maps by it,
        /// and a copy is then a count, not an allocation. On the wire it is a string.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks and wraps an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                check_id($kind, &s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::new(s)
            }
        }
    };
}

checked_id!(
    /// A member's stable, human-readable id (`"st-olaf-hospital"`).
    MemberId,
    "member"
);
checked_id!(
    /// A data-use agreement's id (`"dua-2027-access-anomaly"`).
    AgreementId,
    "agreement"
);

/// What a member may do on the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs rounds, proposes blocks, admits and revokes members, registers agreements.
    Coordinator,
    /// Trains on its own logs, records consent, audit and alert anchors, endorses models.
    Hospital,
    /// Reads and verifies the ledger; signs nothing but its own departure.
    Auditor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Coordinator => "coordinator",
            Role::Hospital => "hospital",
            Role::Auditor => "auditor",
        })
    }
}

/// Longest network address we accept.
pub const MAX_ADDRESS_LEN: usize = 256;

/// A member as registered: id, role, identity key and where peers reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable id.
    pub id: MemberId,
    /// What it may do.
    pub role: Role,
    /// Its ed25519 identity key: signs its transactions and, later, its libp2p PeerId.
    pub public_key: PublicKey,
    /// A libp2p multiaddr such as `/ip4/10.0.0.5/tcp/7000` (empty if it only dials out).
    pub address: String,
}

impl Member {
    /// Checks the fields that the types alone do not.
    pub fn check(&self) -> Result<(), String> {
        check_address(&self.address)
    }
}

/// Checks the shape of a multiaddr: empty, or `/`-separated printable ASCII without spaces.
pub(crate) fn check_address(a: &str) -> Result<(), String> {
    if a.is_empty() {
        return Ok(());
    }
    if a.len() > MAX_ADDRESS_LEN || !a.starts_with('/') || !a.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "address {a:?} is not a multiaddr such as /ip4/127.0.0.1/tcp/7000"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(MemberId::new("hospital-a").is_ok());
        for bad in ["", "Hospital", "-x", "a b", "x/..", &"a".repeat(65)] {
            assert!(MemberId::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<MemberId>("\"../etc\"").is_err());
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("/ip4/127.0.0.1/tcp/7000").is_ok());
        assert!(check_address("").is_ok());
        assert!(check_address("127.0.0.1:7000").is_err());
        assert!(check_address("/ip4/1.2.3.4/tcp/1 x").is_err());
    }
}
