//! Misbehaving clients and a misbehaving server: every attack yields a typed
//! error, the server's round survives bad client messages, and honest
//! clients abort rather than reveal anything to a cheating server.

use std::collections::BTreeMap;

use ed25519_dalek::Signer;
use medfl_secagg::crypto;
use medfl_secagg::message::{
    AdvertiseKeys, ClientMessage, EncryptedShare, ServerMessage, ShareCommitments, ShareKind,
};
use medfl_secagg::sim::{Interceptor, Simulation, make_identities};
use medfl_secagg::{ClientId, ClientStatus, PackedVector, SecAggConfig, SecAggError, Stage};
use proptest::prelude::*;

const N: u32 = 6;
const SEED: [u8; 32] = [77; 32];

fn config() -> SecAggConfig {
    let mut c = SecAggConfig::new(5, 8);
    c.neighbours = Some(4);
    c.threshold = Some(3);
    c
}

fn sim() -> Simulation {
    let mut s = Simulation::new(config(), N, SEED).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..N)
        .map(|i| (ClientId(i), vec![u64::from(i); 8]))
        .collect();
    s.provide_inputs(&inputs).unwrap();
    s
}

fn aborted_with(status: &ClientStatus) -> Option<&SecAggError> {
    match status {
        ClientStatus::Aborted(e) => Some(e),
        _ => None,
    }
}

/// Pulls client 0's advertisement out of a fresh simulation.
fn advert_of_0(s: &mut Simulation) -> AdvertiseKeys {
    match s.clients.get_mut(&ClientId(0)).unwrap().poll_outgoing() {
        Some(ClientMessage::AdvertiseKeys(a)) => a,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn forged_advertisement_signature_is_rejected() {
    let mut s = sim();
    let mut adv = advert_of_0(&mut s);
    adv.signature[5] ^= 0x40;
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv.clone())),
        Err(SecAggError::InvalidSignature(ClientId(0)))
    );
    // Swapping in a key of the attacker's choice breaks the signature too.
    adv.signature[5] ^= 0x40;
    adv.mask_key = vec![9; 32];
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv)),
        Err(SecAggError::InvalidSignature(ClientId(0)))
    );
    // Signed by the wrong identity (client 1 impersonating client 0).
    let (_, keys) = make_identities(N, SEED);
    let plan = s.server.plan().clone();
    let t = crypto::advertise_transcript(
        &plan.session,
        ClientId(0),
        &[9; 32],
        &[8; 32],
        &[7; 32],
        &[6; 32],
    );
    let forged = AdvertiseKeys {
        round: 5,
        sender: ClientId(0),
        mask_key: vec![9; 32],
        share_key: vec![8; 32],
        nonce_commitment: vec![7; 32],
        self_mask_commitment: vec![6; 32],
        signature: keys[&ClientId(1)].sign(&t).to_bytes().to_vec(),
    };
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(forged)),
        Err(SecAggError::InvalidSignature(ClientId(0)))
    );
}

#[test]
fn server_injecting_a_forged_key_makes_clients_abort() {
    struct Inject;
    impl Interceptor for Inject {
        fn server_to_client(&mut self, _to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::KeyRoster { keys, .. } = msg
                && let Some(k) = keys.first_mut()
            {
                k.mask_key = vec![0x42; 32]; // a key the server knows the secret of
            }
            true
        }
    }
    let report = sim().run_with(&mut Inject);
    assert!(report.outcome.is_err());
    // The forged advertisement no longer matches its digest in the key transcript; listing
    // the forgery's digest instead makes its owner refuse the transcript, and its signature
    // would not verify either.
    for status in report.client_status.values() {
        assert!(
            matches!(
                aborted_with(status),
                Some(SecAggError::KeyTranscriptMismatch(_))
            ),
            "{status:?}"
        );
    }
}

#[test]
fn low_order_key_is_rejected_even_when_signed() {
    let mut s = sim();
    let (_, keys) = make_identities(N, SEED);
    let plan = s.server.plan().clone();
    let zero = [0u8; 32];
    let share = [7u8; 32];
    let t = crypto::advertise_transcript(
        &plan.session,
        ClientId(0),
        &zero,
        &share,
        &[1; 32],
        &[2; 32],
    );
    let adv = AdvertiseKeys {
        round: 5,
        sender: ClientId(0),
        mask_key: zero.to_vec(),
        share_key: share.to_vec(),
        nonce_commitment: vec![1; 32],
        self_mask_commitment: vec![2; 32],
        signature: keys[&ClientId(0)].sign(&t).to_bytes().to_vec(),
    };
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv)),
        Err(SecAggError::NonContributoryKey(ClientId(0)))
    );
}

#[test]
fn replays_and_duplicates_are_rejected() {
    let mut s = sim();
    let adv = advert_of_0(&mut s);
    s.server
        .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv.clone()))
        .unwrap();
    // Same message again.
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv.clone())),
        Err(SecAggError::Duplicate(ClientId(0)))
    );
    // Client 0's advertisement replayed by client 1.
    assert_eq!(
        s.server
            .handle_message(ClientId(1), ClientMessage::AdvertiseKeys(adv.clone())),
        Err(SecAggError::SenderMismatch {
            claimed: ClientId(0),
            actual: ClientId(1)
        })
    );
    // From another round.
    let mut old = adv.clone();
    old.round = 4;
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(old)),
        Err(SecAggError::WrongRound {
            expected: 5,
            got: 4
        })
    );
    // A message for a later stage.
    assert_eq!(
        s.server.handle_message(
            ClientId(0),
            ClientMessage::MaskedInput {
                round: 5,
                masked: PackedVector::pack(&[0; 8], 32).unwrap()
            }
        ),
        Err(SecAggError::UnexpectedMessage {
            stage: Stage::AdvertiseKeys
        })
    );
    // After the stage moves on, the advertisement is stale.
    s.server.close_stage(Stage::AdvertiseKeys);
    assert!(matches!(
        s.server.poll_event(),
        Some(medfl_secagg::ServerEvent::StageClosed { .. })
    ));
    // Only client 0 advertised, below threshold: the round aborted, and says so.
    assert!(matches!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv)),
        Err(SecAggError::Aborted(_))
    ));
}

#[test]
fn duplicate_masked_input_and_stale_messages_rejected_mid_round() {
    // Let every client reach the masked-input stage, then replay.
    struct Replay {
        last: Option<(ClientId, ClientMessage)>,
        errors: Vec<SecAggError>,
    }
    impl Interceptor for Replay {
        fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
            if matches!(msg, ClientMessage::MaskedInput { .. }) && self.last.is_none() {
                self.last = Some((from, msg.clone()));
            }
            true
        }
    }
    let mut s = sim();
    let mut r = Replay {
        last: None,
        errors: vec![],
    };
    let report = s.run_with(&mut r);
    assert!(report.outcome.is_ok());
    let (from, msg) = r.last.unwrap();
    r.errors
        .push(s.server.handle_message(from, msg).unwrap_err());
    assert_eq!(r.errors, vec![SecAggError::Finished]);

    // Within the stage: deliver client 0's masked input twice, before the
    // others answer (client 0 is served first), so the stage is still open.
    let mut s = sim();
    let mut dup_err = None;
    while dup_err.is_none() {
        let mut moved = false;
        for (&id, c) in s.clients.iter_mut() {
            while let Some(m) = c.poll_outgoing() {
                moved = true;
                let replay = (id == ClientId(0) && matches!(m, ClientMessage::MaskedInput { .. }))
                    .then(|| m.clone());
                s.server.handle_message(id, m).unwrap();
                if let Some(r) = replay {
                    dup_err = s.server.handle_message(id, r).err();
                }
            }
        }
        while let Some((to, m)) = s.server.poll_outgoing() {
            moved = true;
            s.clients.get_mut(&to).unwrap().handle_message(m).unwrap();
        }
        assert!(moved, "stalled");
    }
    assert_eq!(dup_err, Some(SecAggError::Duplicate(ClientId(0))));
}

#[test]
fn malformed_messages_are_rejected_with_typed_errors() {
    let mut s = sim();
    let good = advert_of_0(&mut s);
    let mut short_key = good.clone();
    short_key.mask_key.pop();
    assert!(matches!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(short_key)),
        Err(SecAggError::Malformed {
            field: "mask_key",
            expected: 32,
            got: 31
        })
    ));
    let mut long_sig = good.clone();
    long_sig.signature.push(0);
    assert!(matches!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(long_sig)),
        Err(SecAggError::Malformed {
            field: "signature",
            ..
        })
    ));
    let mut stranger = good.clone();
    stranger.sender = ClientId(999);
    assert_eq!(
        s.server
            .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(stranger)),
        Err(SecAggError::UnknownClient(ClientId(999)))
    );
    assert_eq!(
        s.server
            .handle_message(ClientId(999), ClientMessage::AdvertiseKeys(good.clone())),
        Err(SecAggError::UnknownClient(ClientId(999)))
    );
    // 8 coordinates of 32 bits are exactly 32 bytes; 7 coordinates' worth is refused.
    assert!(matches!(
        s.server.handle_message(
            ClientId(0),
            ClientMessage::MaskedInput {
                round: 5,
                masked: PackedVector::pack(&[0; 7], 32).unwrap()
            }
        ),
        Err(SecAggError::Malformed {
            field: "masked",
            expected: 32,
            got: 28
        })
    ));
    // One byte too many: a 33-bit coordinate cannot be smuggled in.
    assert!(matches!(
        s.server.handle_message(
            ClientId(0),
            ClientMessage::MaskedInput {
                round: 5,
                masked: PackedVector::from_bytes(vec![0xFF; 33])
            }
        ),
        Err(SecAggError::Malformed {
            field: "masked",
            expected: 32,
            got: 33
        })
    ));
    assert!(matches!(
        s.server.handle_message(
            ClientId(0),
            ClientMessage::ShareKeys {
                round: 5,
                shares: vec![EncryptedShare {
                    peer: ClientId(1),
                    ciphertext: vec![0; 10]
                }],
                commitments: ShareCommitments {
                    dealer: ClientId(0),
                    entries: vec![],
                    signature: vec![0; 64],
                },
            }
        ),
        Err(SecAggError::Malformed {
            field: "ciphertext",
            ..
        })
    ));
    // None of this disturbed the round: an honest run still completes.
    s.server
        .handle_message(ClientId(0), ClientMessage::AdvertiseKeys(good))
        .unwrap();
    let report = s.run();
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
}

#[test]
fn shares_for_non_neighbours_are_rejected() {
    struct Misroute;
    impl Interceptor for Misroute {
        fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
            if from == ClientId(0)
                && let ClientMessage::ShareKeys { shares, .. } = msg
            {
                // Client 0 addresses its first share to itself, never a neighbour.
                shares[0].peer = ClientId(0);
            }
            true
        }
    }
    let mut m = Misroute;
    let report = sim().run_with(&mut m);
    assert!(report.server_rejections.contains(&(
        ClientId(0),
        SecAggError::NotANeighbour {
            of: ClientId(0),
            peer: ClientId(0)
        }
    )));
    // Client 0 is treated as a dropout; the others still aggregate.
    let agg = report.outcome.unwrap();
    assert!(!agg.survivors.contains(&ClientId(0)));
}

#[test]
fn tampered_encrypted_share_makes_recipient_abort() {
    struct Flip;
    impl Interceptor for Flip {
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if to == ClientId(2)
                && let ServerMessage::ForwardShares { shares, .. } = msg
            {
                shares[0].ciphertext[17] ^= 1;
            }
            true
        }
    }
    let report = sim().run_with(&mut Flip);
    let e = aborted_with(&report.client_status[&ClientId(2)]).cloned();
    assert!(matches!(e, Some(SecAggError::DecryptionFailed(_))), "{e:?}");
    // The others finish; client 2 just counts as a dropout.
    let agg = report.outcome.unwrap();
    assert!(!agg.survivors.contains(&ClientId(2)));
}

#[test]
fn relabelled_share_is_caught_by_the_associated_data() {
    struct Relabel;
    impl Interceptor for Relabel {
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if to == ClientId(3)
                && let ServerMessage::ForwardShares { shares, .. } = msg
            {
                let a = shares[0].peer;
                shares[0].peer = shares[1].peer;
                shares[1].peer = a;
            }
            true
        }
    }
    let report = sim().run_with(&mut Relabel);
    let e = aborted_with(&report.client_status[&ClientId(3)]).cloned();
    assert!(matches!(e, Some(SecAggError::DecryptionFailed(_))), "{e:?}");
}

/// A server that tells client 0 that client `victim` dropped, while telling
/// everyone else it survived, hoping to collect both of the victim's secrets.
/// The victim is client 0's first neighbour, read off the keys forwarded to it.
struct Equivocate {
    victim: Option<ClientId>,
    sig_of_0: Option<Vec<u8>>,
    unmask_shares_sent: usize,
}

impl Interceptor for Equivocate {
    fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
        match msg {
            ClientMessage::ConsistencySignature { signature, .. } if from == ClientId(0) => {
                self.sig_of_0 = Some(signature.clone());
            }
            ClientMessage::UnmaskShares { .. } => self.unmask_shares_sent += 1,
            _ => {}
        }
        true
    }
    fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
        match msg {
            ServerMessage::KeyRoster { keys, .. } if to == ClientId(0) => {
                self.victim = keys.first().map(|k| k.sender);
            }
            ServerMessage::SurvivorSet { survivors, .. } if to == ClientId(0) => {
                *survivors = survivors
                    .iter()
                    .copied()
                    .filter(|&c| Some(c) != self.victim)
                    .collect();
            }
            ServerMessage::UnmaskRequest { signatures, .. } => {
                // Forward client 0's signature as if it covered the common set.
                if let Some(sig) = &self.sig_of_0
                    && !signatures.iter().any(|(c, _)| *c == ClientId(0))
                {
                    let mut forged = signatures.to_vec();
                    forged.push((ClientId(0), sig.clone()));
                    forged.sort();
                    *signatures = forged.into();
                }
            }
            _ => {}
        }
        true
    }
}

#[test]
fn equivocating_survivor_sets_are_caught_before_any_share_is_revealed() {
    let mut s = sim();
    let mut eq = Equivocate {
        victim: None,
        sig_of_0: None,
        unmask_shares_sent: 0,
    };
    let report = s.run_with(&mut eq);
    assert!(eq.victim.is_some());
    assert_eq!(eq.unmask_shares_sent, 0, "no client revealed anything");
    assert!(report.outcome.is_err());
    for (id, status) in &report.client_status {
        if *id == ClientId(0) {
            continue; // its signature was refused by the server, so it never got a request
        }
        assert_eq!(
            aborted_with(status),
            Some(&SecAggError::ConsistencyCheckFailed(ClientId(0))),
            "client {id}"
        );
    }
}

#[test]
fn asking_for_both_shares_of_a_neighbour_is_refused() {
    struct Greedy;
    impl Interceptor for Greedy {
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if to == ClientId(1)
                && let ServerMessage::UnmaskRequest { reveal, .. } = msg
            {
                let (j, _) = reveal[0];
                reveal.push((j, ShareKind::MaskKey));
            }
            true
        }
    }
    let report = sim().run_with(&mut Greedy);
    let e = aborted_with(&report.client_status[&ClientId(1)]).cloned();
    assert!(
        matches!(e, Some(SecAggError::BothSharesRequested(_))),
        "{e:?}"
    );
}

#[test]
fn asking_for_the_key_share_of_a_survivor_is_refused() {
    struct Sneaky;
    impl Interceptor for Sneaky {
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if to == ClientId(1)
                && let ServerMessage::UnmaskRequest { reveal, .. } = msg
            {
                reveal[0].1 = ShareKind::MaskKey;
            }
            true
        }
    }
    let report = sim().run_with(&mut Sneaky);
    let e = aborted_with(&report.client_status[&ClientId(1)]).cloned();
    assert!(
        matches!(e, Some(SecAggError::InconsistentUnmaskRequest(_))),
        "{e:?}"
    );
    // An aborted client stays aborted.
    let mut s = sim();
    s.run_with(&mut Sneaky);
    let c1 = s.clients.get_mut(&ClientId(1)).unwrap();
    assert!(matches!(
        c1.handle_message(ServerMessage::SurvivorSet {
            round: 5,
            survivors: Vec::new().into()
        }),
        Err(SecAggError::Aborted(_))
    ));
    assert!(c1.poll_outgoing().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder or the server, whatever stage it is in.
    #[test]
    fn random_bytes_never_panic_the_server(bytes in proptest::collection::vec(any::<u8>(), 0..300), from in 0u32..8) {
        let mut s = sim();
        let cfg = bincode::config::standard();
        if let Ok((msg, _)) = bincode::serde::decode_from_slice::<ClientMessage, _>(&bytes, cfg) {
            let _ = s.server.handle_message(ClientId(from), msg);
        }
        let mut c = sim();
        if let Ok((msg, _)) = bincode::serde::decode_from_slice::<ServerMessage, _>(&bytes, cfg) {
            let client = c.clients.get_mut(&ClientId(0)).unwrap();
            let _ = client.handle_message(msg);
        }
    }
}

/// A server that forwards only `t` valid consistency signatures (enough for the old rule, which
/// a server splitting clients into camps could meet in each camp) is refused: a client reveals
/// nothing until more than `(n + t - 1) / 2` of the roster signed its survivor set.
#[test]
fn too_few_consistency_signatures_for_the_quorum_reveal_nothing() {
    struct Starve {
        keep: usize,
        unmask_shares_sent: usize,
    }
    impl Interceptor for Starve {
        fn client_to_server(&mut self, _from: ClientId, msg: &mut ClientMessage) -> bool {
            if let ClientMessage::UnmaskShares { .. } = msg {
                self.unmask_shares_sent += 1;
            }
            true
        }
        fn server_to_client(&mut self, _to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::UnmaskRequest { signatures, .. } = msg {
                *signatures = signatures[..self.keep.min(signatures.len())].into();
            }
            true
        }
    }
    let mut s = sim();
    let plan = s.server.plan().clone();
    assert!(
        plan.consistency_quorum() > plan.threshold,
        "the fixture must tell the two rules apart"
    );
    let mut starve = Starve {
        keep: plan.threshold,
        unmask_shares_sent: 0,
    };
    let report = s.run_with(&mut starve);
    assert_eq!(starve.unmask_shares_sent, 0, "no client revealed anything");
    assert!(report.outcome.is_err());
    for (id, status) in &report.client_status {
        assert!(
            matches!(
                aborted_with(status),
                Some(SecAggError::TooFewSurvivors {
                    stage: Stage::ConsistencyCheck,
                    ..
                })
            ),
            "client {id}: {status:?}"
        );
    }
}
