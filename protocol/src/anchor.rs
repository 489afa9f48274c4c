//! The round anchor, built the same way by the coordinator (to submit it) and by every endorser
//! (to sign it): an endorsement signs the whole outcome (participants, dropped, spends, model,
//! server state, parameters, transcript), so the anchor can only say what the hospitals checked.

use std::collections::BTreeSet;

use medfl_ledger::Hash;
use medfl_ledger::tx::{PrivacySpend, RoundAnchor};
use medfl_secagg::ClientId;

use crate::config::RoundConfig;
use crate::error::ProtocolError;
use crate::privacy;

/// The hash of a server optimizer state (FedAdam's moments), anchored after each round.
///
/// The state before a consortium's first round is the empty one, whose hash is
/// `server_state_hash(&[])`; the agent accepts a state only if it hashes to what the ledger
/// anchored last (or to that of the empty state before any round).
pub fn server_state_hash(state: &[f32]) -> Hash {
    let bytes: Vec<u8> = state
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    Hash::tagged(
        b"medfl/server-state/v1",
        &[&(state.len() as u64).to_le_bytes(), &bytes],
    )
}

/// The anchor of `config`'s outcome, without endorsements: `survivors` are the clients in the
/// aggregate, `model` and `server_state` what the round's strategy produced from it.
pub fn round_anchor(
    config: &RoundConfig,
    survivors: &[ClientId],
    model: &Hash,
    server_state: &Hash,
    transcript: &Hash,
) -> Result<RoundAnchor, ProtocolError> {
    let n = config.participants.len();
    let mut set = BTreeSet::new();
    for c in survivors {
        if c.0 as usize >= n || !set.insert(c.0) {
            return Err(ProtocolError::invalid(
                "survivors",
                format!("{c} is not a participant, or is listed twice"),
            ));
        }
    }
    let mut participants = Vec::new();
    let mut dropped = Vec::new();
    for (i, (m, eps)) in config
        .participants
        .iter()
        .zip(&config.epsilon_after)
        .enumerate()
    {
        if set.contains(&(i as u32)) {
            participants.push((
                m.clone(),
                PrivacySpend {
                    epsilon_total: *eps,
                },
            ));
        } else {
            dropped.push(m.clone());
        }
    }
    Ok(RoundAnchor {
        agreement: config.agreement.clone(),
        round: config.round,
        previous_model: config.previous_model,
        model: *model,
        participants,
        dropped,
        dp: privacy::anchored_params(&config.training, config.model)?,
        aggregation: config.aggregation_params(),
        strategy: config.strategy,
        server_state: *server_state,
        secagg_transcript: *transcript,
        endorsements: Vec::new(),
    })
}

/// The bytes an endorser signs for `anchor` in the consortium of `genesis`.
pub fn endorsement_message(genesis: &Hash, anchor: &RoundAnchor) -> Result<Vec<u8>, ProtocolError> {
    anchor
        .endorsement_message(genesis)
        .map_err(|e| ProtocolError::invalid("anchor", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_state_hash_separates_lengths_and_values() {
        let empty = server_state_hash(&[]);
        assert_ne!(empty, server_state_hash(&[0.0]));
        assert_ne!(server_state_hash(&[0.0]), server_state_hash(&[-0.0]));
        assert_eq!(
            server_state_hash(&[1.5, 2.0]),
            server_state_hash(&[1.5, 2.0])
        );
    }
}
