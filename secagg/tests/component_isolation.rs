//! A malicious server that only fakes dropouts at the masked-input stage, after the graph is
//! fixed, can cut a small honest group off the Harary ring: it discards the inputs of the
//! clients around the group, asks for their mask-key shares, and the group's pairwise masks
//! with the rest are then known while those inside cancel. On the code before this test the
//! server learned the sum of 22 chosen clients out of 100 (a survivor set of 60, above
//! `min_survivors`). Honest clients now refuse a survivor set that leaves more than
//! `degree - t` clients out, so the ring stays connected and nothing is revealed.
use std::collections::{BTreeMap, BTreeSet};

use medfl_secagg::message::{ClientMessage, ServerMessage, ShareKind};
use medfl_secagg::shamir::SecretShare;
use medfl_secagg::sim::{Interceptor, Simulation, make_identities};
use medfl_secagg::{ClientId, RoundPlan, SecAggConfig, crypto};
use medfl_secagg::{ClientStatus, SecAggError};
use sha2::{Digest, Sha256};

const N: u32 = 100;
const DIM: usize = 4;

struct Attacker {
    plan: RoundPlan,
    transcript: Option<[u8; 32]>,
    ring: Vec<ClientId>,
    c: BTreeSet<ClientId>,
    d: BTreeSet<ClientId>,
    mask_keys: BTreeMap<ClientId, [u8; 32]>,
    y: BTreeMap<ClientId, medfl_secagg::PackedVector>,
    shares: BTreeMap<(ClientId, ShareKind), Vec<SecretShare>>,
}

impl Interceptor for Attacker {
    fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
        match msg {
            ClientMessage::AdvertiseKeys(a) => {
                self.mask_keys
                    .insert(from, a.mask_key.clone().try_into().unwrap());
            }
            ClientMessage::MaskedInput { masked, .. } => {
                self.y.insert(from, masked.clone());
                if self.d.contains(&from) {
                    return false; // "timed out"
                }
            }
            ClientMessage::UnmaskShares { shares, .. } => {
                for s in shares.iter() {
                    self.shares
                        .entry((s.owner, s.kind))
                        .or_default()
                        .push(SecretShare::from_bytes(from, &s.share).unwrap());
                }
            }
            _ => {}
        }
        true
    }
    fn server_to_client(&mut self, _to: ClientId, msg: &mut ServerMessage) -> bool {
        match msg {
            ServerMessage::KeyTranscript { entries, .. } if self.transcript.is_none() => {
                self.transcript = Some(crypto::key_transcript_hash(&self.plan.session, entries));
            }
            ServerMessage::KeyRoster { nonces, .. } if self.ring.is_empty() => {
                let revealed: Vec<(ClientId, [u8; 32])> = nonces
                    .iter()
                    .map(|(i, n)| (*i, n.clone().try_into().unwrap()))
                    .collect();
                let seed =
                    crypto::graph_seed(&self.plan.session, &self.transcript.unwrap(), &revealed);
                let mut ring: Vec<([u8; 32], ClientId)> = (0..N)
                    .map(|i| {
                        let mut h = Sha256::new();
                        h.update(b"medfl-secagg/v1/graph");
                        h.update(seed);
                        h.update(i.to_le_bytes());
                        (h.finalize().into(), ClientId(i))
                    })
                    .collect();
                ring.sort();
                self.ring = ring.into_iter().map(|(_, id)| id).collect();
                // A = ring[0..=10], B = A + 50; D = the 10 positions either side of A and B.
                let pos = |p: i64| self.ring[p.rem_euclid(N as i64) as usize];
                for base in [0i64, 50] {
                    for p in 0..=10 {
                        self.c.insert(pos(base + p));
                    }
                    for p in 11..=20 {
                        self.d.insert(pos(base + p));
                    }
                    for p in -10..=-1 {
                        self.d.insert(pos(base + p));
                    }
                }
            }
            _ => {}
        }
        true
    }
}

#[test]
fn a_server_faking_dropouts_cannot_isolate_a_small_group() {
    let mut config = SecAggConfig::new(9, DIM);
    config.min_survivors = 60;
    let (roster, _) = make_identities(N, [77; 32]);
    let plan = RoundPlan::new(&config, &roster).unwrap();
    assert_eq!((plan.degree, plan.threshold), (21, 11));
    let mut sim = Simulation::new(config, N, [77; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..N)
        .map(|i| {
            (
                ClientId(i),
                (0..DIM as u64).map(|j| 1000 * i as u64 + j).collect(),
            )
        })
        .collect();
    sim.provide_inputs(&inputs).unwrap();
    let mut atk = Attacker {
        plan: plan.clone(),
        transcript: None,
        ring: vec![],
        c: BTreeSet::new(),
        d: BTreeSet::new(),
        mask_keys: BTreeMap::new(),
        y: BTreeMap::new(),
        shares: BTreeMap::new(),
    };
    let report = sim.run_with(&mut atk);
    // The attack was staged as before: 22 clients fenced in by 40 discarded ones.
    assert_eq!(atk.c.len(), 22);
    assert_eq!(atk.d.len(), 40);
    assert_eq!((atk.mask_keys.len(), atk.y.len()), (100, 100));
    assert!(report.outcome.is_err(), "the round must not produce a sum");
    assert!(
        atk.shares.is_empty(),
        "no client may reveal a share for a survivor set that cuts the ring"
    );
    let refused = report
        .client_status
        .iter()
        .filter(|(id, _)| !atk.d.contains(id))
        .filter(|(_, s)| {
            matches!(
                s,
                ClientStatus::Aborted(SecAggError::TooFewSurvivors { .. })
            )
        })
        .count();
    assert_eq!(refused, 60, "every survivor refuses the survivor set");
}
