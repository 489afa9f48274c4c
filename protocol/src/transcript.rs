//! The hash that binds a round's outcome to its inputs, anchored as `secagg_transcript`.

use medfl_ledger::{Hash, codec};
use medfl_secagg::ClientId;
use serde::Serialize;

use crate::config::RoundConfig;
use crate::error::ProtocolError;

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ProtocolError> {
    codec::encode(value).map_err(|e| ProtocolError::invalid("transcript", e.to_string()))
}

/// `H(config, survivors, aggregate, server state before)`: what each endorser checked.
pub fn round_transcript(
    config: &RoundConfig,
    survivors: &[ClientId],
    aggregate: &[u64],
    server_state: &[f32],
) -> Result<Hash, ProtocolError> {
    let parts = [
        encode(config)?,
        encode(survivors)?,
        encode(aggregate)?,
        encode(
            &server_state
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<u32>>(),
        )?,
    ];
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(Hash::tagged(b"medfl/round-transcript/v1", &refs))
}
