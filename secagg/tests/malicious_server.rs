//! Attacks by a malicious server (the coordinator), possibly colluding with a minority of
//! members, written from the attacker's side: the attacker drives the real client state
//! machines and tries to learn an individual input or steer the round. Each test asserts that
//! the honest clients' own checks stop it.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use medfl_secagg::graph::NeighbourGraph;
use medfl_secagg::message::{
    AdvertiseKeys, ClientMessage, RevealedShare, ServerMessage, ShareKind,
};
use medfl_secagg::prg::{self, MaskDomain, Seed, Sign};
use medfl_secagg::shamir::{self, SecretShare};
use medfl_secagg::sim::{Interceptor, Simulation, make_identities};
use medfl_secagg::{
    ClientId, ClientSession, ClientStatus, PackedVector, Roster, SecAggConfig, SecAggError,
    ServerSession, Stage, crypto,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x25519_dalek::StaticSecret;

const D: usize = 8;

fn session(
    config: &SecAggConfig,
    id: ClientId,
    keys: &BTreeMap<ClientId, SigningKey>,
    roster: &Roster,
    seed: u8,
) -> ClientSession {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    ClientSession::new(config.clone(), id, keys[&id].clone(), roster, &mut rng).unwrap()
}

fn aborted_with(status: &ClientStatus) -> Option<&SecAggError> {
    match status {
        ClientStatus::Aborted(e) => Some(e),
        _ => None,
    }
}

/// One member as the attacker sees it: its real state machine and, for a colluder, a second
/// copy built from the same randomness, which the attacker can steer down another branch
/// (this is how a colluding member hands over both of the shares it holds).
struct Party {
    main: ClientSession,
    twin: Option<ClientSession>,
}

/// What the attacker observed on the way to the survivor-set stage.
#[derive(Default)]
struct Observed {
    adverts: BTreeMap<ClientId, AdvertiseKeys>,
    masked: BTreeMap<ClientId, PackedVector>,
}

/// Routes every message honestly through a real server until it announces the survivor set,
/// which the attacker withholds (it will send survivor sets of its own choosing).
fn run_until_survivor_set(
    server: &mut ServerSession,
    parties: &mut BTreeMap<ClientId, Party>,
) -> Observed {
    let mut seen = Observed::default();
    loop {
        let mut moved = false;
        for (&id, p) in parties.iter_mut() {
            while let Some(m) = p.main.poll_outgoing() {
                moved = true;
                match &m {
                    ClientMessage::AdvertiseKeys(a) => {
                        seen.adverts.insert(id, a.clone());
                    }
                    ClientMessage::MaskedInput { masked, .. } => {
                        seen.masked.insert(id, masked.clone());
                    }
                    _ => {}
                }
                server.handle_message(id, m).unwrap();
            }
            if let Some(t) = &mut p.twin {
                while t.poll_outgoing().is_some() {}
            }
        }
        let mut at_survivors = false;
        while let Some((to, m)) = server.poll_outgoing() {
            moved = true;
            if matches!(m, ServerMessage::SurvivorSet { .. }) {
                at_survivors = true;
                continue;
            }
            let p = parties.get_mut(&to).unwrap();
            if let Some(t) = &mut p.twin {
                t.handle_message(m.clone()).unwrap();
            }
            p.main.handle_message(m).unwrap();
        }
        if at_survivors {
            return seen;
        }
        if !moved {
            let stage = server.stage().expect("round still open");
            server.close_stage(stage);
        }
    }
}

/// Shows `client` the survivor set `survivors` and returns its consistency signature, if any.
fn sign_survivors(
    client: &mut ClientSession,
    round: u64,
    survivors: &[ClientId],
) -> Option<Vec<u8>> {
    let _ = client.handle_message(ServerMessage::SurvivorSet {
        round,
        survivors: survivors.into(),
    });
    match client.poll_outgoing() {
        Some(ClientMessage::ConsistencySignature { signature, .. }) => Some(signature),
        _ => None,
    }
}

/// Sends `client` an unmask request and returns the shares it reveals (none if it refuses).
fn request_shares(
    client: &mut ClientSession,
    round: u64,
    signatures: &BTreeMap<ClientId, Vec<u8>>,
    reveal: Vec<(ClientId, ShareKind)>,
) -> Vec<RevealedShare> {
    let _ = client.handle_message(ServerMessage::UnmaskRequest {
        round,
        signatures: signatures.iter().map(|(c, s)| (*c, s.clone())).collect(),
        reveal,
    });
    match client.poll_outgoing() {
        Some(ClientMessage::UnmaskShares { shares, .. }) => shares,
        _ => Vec::new(),
    }
}

/// Issue #11, attack 1: a server reuses one session (same config and roster) for two attempts.
/// In attempt 1 it announces a survivor set without the victim and collects everyone's
/// signature on it. In attempt 2 (fresh keys, the victim's masked input received) it shows
/// one honest neighbour the full set, which yields a share of the victim's self mask, and
/// another honest neighbour the set without the victim, "proved" by attempt 1's signatures,
/// which yields a share of the victim's mask key. With `t - 1` colluding neighbours holding
/// both, that is `t` shares of each secret: the victim's input in the clear.
#[test]
fn consistency_signatures_replayed_from_an_earlier_attempt_do_not_unmask_a_victim() {
    let n = 5u32;
    let mut config = SecAggConfig::new(5, D);
    config.neighbours = Some(4); // complete graph: every member holds shares of the victim
    config.threshold = Some(3);
    let (roster, keys) = make_identities(n, [31; 32]);
    let round = config.round;
    let victim = ClientId(0);
    let colluders = [ClientId(1), ClientId(2)];
    let (honest_a, honest_b) = (ClientId(3), ClientId(4));
    let x_victim: Vec<u64> = (0..D as u64).map(|j| 0xC0FFEE + j).collect();
    let all: Vec<ClientId> = (0..n).map(ClientId).collect();
    let without_victim: Vec<ClientId> = all.iter().copied().filter(|&c| c != victim).collect();

    let make = |seed_base: u8, twins: bool| -> BTreeMap<ClientId, Party> {
        all.iter()
            .map(|&id| {
                let seed = seed_base + id.0 as u8;
                let twin = (twins && colluders.contains(&id))
                    .then(|| session(&config, id, &keys, &roster, seed));
                let mut p = Party {
                    main: session(&config, id, &keys, &roster, seed),
                    twin,
                };
                let x = if id == victim {
                    x_victim.clone()
                } else {
                    vec![7; D]
                };
                p.main.provide_input(x.clone()).unwrap();
                if let Some(t) = &mut p.twin {
                    t.provide_input(x).unwrap();
                }
                (id, p)
            })
            .collect()
    };

    // Attempt 1: everyone but the victim signs a survivor set without the victim.
    let mut server = ServerSession::new(config.clone(), &roster).unwrap();
    let mut parties = make(100, false);
    run_until_survivor_set(&mut server, &mut parties);
    let mut old_signatures = BTreeMap::new();
    for &id in &without_victim {
        let sig = sign_survivors(
            &mut parties.get_mut(&id).unwrap().main,
            round,
            &without_victim,
        )
        .expect("attempt 1 signature");
        old_signatures.insert(id, sig);
    }

    // Attempt 2: same session, fresh randomness; the victim's masked input arrives.
    let mut server = ServerSession::new(config.clone(), &roster).unwrap();
    let mut parties = make(200, true);
    let seen = run_until_survivor_set(&mut server, &mut parties);
    let y_victim = seen.masked[&victim].unpack(D, config.bits).unwrap();

    // Camp A (victim, honest_a, colluders' main copies) sees the full set and signs it.
    let mut sigs_full = BTreeMap::new();
    for id in [victim, colluders[0], colluders[1], honest_a] {
        if let Some(sig) = sign_survivors(&mut parties.get_mut(&id).unwrap().main, round, &all) {
            sigs_full.insert(id, sig);
        }
    }
    // Camp B (honest_b, colluders' twins) sees the set without the victim.
    let _ = sign_survivors(
        &mut parties.get_mut(&honest_b).unwrap().main,
        round,
        &without_victim,
    );
    for c in colluders {
        let twin = parties.get_mut(&c).unwrap().twin.as_mut().unwrap();
        let _ = sign_survivors(twin, round, &without_victim);
    }

    let mut self_mask_shares: Vec<SecretShare> = Vec::new();
    let mut mask_key_shares: Vec<SecretShare> = Vec::new();
    for id in [colluders[0], colluders[1], honest_a] {
        let shares = request_shares(
            &mut parties.get_mut(&id).unwrap().main,
            round,
            &sigs_full,
            vec![(victim, ShareKind::SelfMask)],
        );
        for s in shares {
            self_mask_shares.push(SecretShare::from_bytes(id, &s.share).unwrap());
        }
    }
    for c in colluders {
        let twin = parties.get_mut(&c).unwrap().twin.as_mut().unwrap();
        for s in request_shares(
            twin,
            round,
            &old_signatures,
            vec![(victim, ShareKind::MaskKey)],
        ) {
            mask_key_shares.push(SecretShare::from_bytes(c, &s.share).unwrap());
        }
    }
    let revealed_by_b = request_shares(
        &mut parties.get_mut(&honest_b).unwrap().main,
        round,
        &old_signatures,
        vec![(victim, ShareKind::MaskKey)],
    );
    for s in &revealed_by_b {
        mask_key_shares.push(SecretShare::from_bytes(honest_b, &s.share).unwrap());
    }
    // The first half of the attack works: the full set is honestly signed by a quorum.
    assert_eq!(
        self_mask_shares.len(),
        3,
        "camp A revealed the self-mask shares"
    );

    // The attacker unmasks whatever it can.
    let t = 3;
    let recovered = (self_mask_shares.len() >= t && mask_key_shares.len() >= t).then(|| {
        let b = shamir::reconstruct_secret(victim, &self_mask_shares, t).unwrap();
        let c =
            StaticSecret::from(*shamir::reconstruct_secret(victim, &mask_key_shares, t).unwrap());
        let plan = server.plan().clone();
        let mut x = y_victim.clone();
        let self_seed = Seed(*b);
        let pair: Vec<Seed> = without_victim
            .iter()
            .map(|&j| {
                let pk = crypto::parse_public_key(&seen.adverts[&j].mask_key, "mask_key").unwrap();
                crypto::pairwise_seed(&plan.session, &c, &pk, victim, j).unwrap()
            })
            .collect();
        let masks: Vec<(&Seed, MaskDomain, Sign)> =
            std::iter::once((&self_seed, MaskDomain::SelfMask, Sign::Subtract))
                .chain(
                    pair.iter()
                        .map(|s| (s, MaskDomain::Pairwise, Sign::Subtract)),
                )
                .collect();
        prg::apply_masks(&mut x, &masks, config.bits);
        x
    });
    assert_ne!(
        recovered.as_ref(),
        Some(&x_victim),
        "the server unmasked the victim's input"
    );
    assert!(
        revealed_by_b.is_empty(),
        "honest client revealed a mask-key share"
    );
    assert!(
        matches!(
            aborted_with(&parties[&honest_b].main.status()),
            Some(SecAggError::ConsistencyCheckFailed(_))
        ),
        "{:?}",
        parties[&honest_b].main.status()
    );
}

/// Issue #11, attack 2: the server grinds the graph seed until its colluders fill a victim's
/// neighbourhood, then hands the victim the keys of that neighbourhood. The victim must not
/// deal its shares to it.
#[test]
fn a_ground_graph_seed_cannot_surround_a_victim_with_colluders() {
    let n = 10u32;
    let (k, t) = (4usize, 3usize);
    let victim = ClientId(0);
    let colluders: BTreeSet<ClientId> = [7, 8, 9].into_iter().map(ClientId).collect();
    let ids: Vec<ClientId> = (0..n).map(ClientId).collect();
    let surrounded =
        |g: &NeighbourGraph| g.neighbours(victim).intersection(&colluders).count() >= t;
    let ground = (0u32..)
        .map(|s| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&s.to_le_bytes());
            seed
        })
        .find(|seed| surrounded(&NeighbourGraph::harary(&ids, k, seed)))
        .unwrap();
    let ground_neighbours: Vec<ClientId> = NeighbourGraph::harary(&ids, k, &ground)
        .neighbours(victim)
        .iter()
        .copied()
        .collect();

    let mut config = SecAggConfig::new(9, D);
    config.neighbours = Some(k);
    config.threshold = Some(t);
    config.graph_seed = ground;
    let mut sim = Simulation::new(config, n, [41; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> =
        ids.iter().map(|&i| (i, vec![u64::from(i.0); D])).collect();
    sim.provide_inputs(&inputs).unwrap();

    struct Grind {
        victim: ClientId,
        ground_neighbours: Vec<ClientId>,
        adverts: BTreeMap<ClientId, AdvertiseKeys>,
        victim_dealt_to: Vec<ClientId>,
    }
    impl Interceptor for Grind {
        fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
            match msg {
                ClientMessage::AdvertiseKeys(a) => {
                    self.adverts.insert(from, a.clone());
                }
                ClientMessage::ShareKeys { shares, .. } if from == self.victim => {
                    self.victim_dealt_to = shares.iter().map(|s| s.peer).collect();
                }
                _ => {}
            }
            true
        }
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if to == self.victim
                && let ServerMessage::KeyRoster { keys, .. } = msg
            {
                *keys = self
                    .ground_neighbours
                    .iter()
                    .filter_map(|j| self.adverts.get(j).cloned())
                    .collect();
            }
            true
        }
    }
    let mut grind = Grind {
        victim,
        ground_neighbours,
        adverts: BTreeMap::new(),
        victim_dealt_to: Vec::new(),
    };
    let report = sim.run_with(&mut grind);
    let to_colluders = grind
        .victim_dealt_to
        .iter()
        .filter(|c| colluders.contains(c))
        .count();
    assert!(
        to_colluders < t,
        "the victim dealt its shares to {to_colluders} colluders: {:?}",
        grind.victim_dealt_to
    );
    assert!(
        matches!(
            aborted_with(&report.client_status[&victim]),
            Some(SecAggError::NotANeighbour { .. })
        ),
        "{:?}",
        report.client_status[&victim]
    );
}

/// Corrupts the share of `owner` that `holder` reveals; drops the unmask message of `silent`.
struct BadHolder {
    owner: ClientId,
    holder: Option<ClientId>,
    silent: Option<ClientId>,
    /// Pick `holder` (and `silent`, if wanted) among the owner's neighbours once they are known.
    want_silent: bool,
}

impl Interceptor for BadHolder {
    fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
        if let ClientMessage::UnmaskShares { shares, .. } = msg {
            if Some(from) == self.silent {
                return false;
            }
            if Some(from) == self.holder {
                for s in shares.iter_mut().filter(|s| s.owner == self.owner) {
                    s.share[0] ^= 1; // still a canonical scalar, just the wrong one
                }
            }
        }
        true
    }
    fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
        if to == self.owner
            && let ServerMessage::KeyRoster { keys, .. } = msg
        {
            let mut neighbours = keys.iter().map(|a| a.sender);
            if self.want_silent {
                self.silent = neighbours.next();
            }
            self.holder = neighbours.next();
        }
        true
    }
}

fn plain_sum(inputs: &BTreeMap<ClientId, Vec<u64>>, who: &[ClientId]) -> Vec<u64> {
    let mut s = vec![0u64; D];
    for i in who {
        for (a, x) in s.iter_mut().zip(&inputs[i]) {
            *a = (*a + x) & 0xFFFF_FFFF;
        }
    }
    s
}

/// Issue #11, attack 3: a member reveals a wrong share of a neighbour's self mask. The server
/// names it, drops its shares and still completes with the honest ones.
#[test]
fn a_bad_unmask_share_is_named_and_the_round_completes_without_it() {
    let n = 6u32;
    let mut config = SecAggConfig::new(5, D);
    config.neighbours = Some(4);
    config.threshold = Some(3);
    let mut sim = Simulation::new(config, n, [51; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
        .map(|i| (ClientId(i), vec![u64::from(i) * 3 + 1; D]))
        .collect();
    sim.provide_inputs(&inputs).unwrap();
    let mut bad = BadHolder {
        owner: ClientId(0),
        holder: None,
        silent: None,
        want_silent: false,
    };
    let report = sim.run_with(&mut bad);
    let agg = report
        .outcome
        .as_ref()
        .expect("the round completes without the bad share");
    let all: Vec<ClientId> = (0..n).map(ClientId).collect();
    assert_eq!(agg.survivors, all);
    assert_eq!(agg.sum, plain_sum(&inputs, &all));
    let holder = bad.holder.expect("a holder was picked");
    let named = SecAggError::BadShare {
        holder,
        owner: ClientId(0),
    };
    assert_eq!(report.misbehaved, vec![(holder, named.clone())]);
    assert!(report.server_rejections.contains(&(holder, named)));
}

/// With exactly `t` shares of a secret, one of them wrong, the old server rebuilt a wrong seed
/// and published a wrong sum. Now the wrong share is caught and the round aborts instead.
#[test]
fn a_bad_share_among_exactly_t_does_not_go_unnoticed() {
    let n = 4u32;
    let mut config = SecAggConfig::new(5, D);
    config.neighbours = Some(3); // complete graph, t = 2: the owner has 3 holders, one silent
    config.threshold = Some(2);
    let mut sim = Simulation::new(config, n, [52; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
        .map(|i| (ClientId(i), vec![u64::from(i) + 10; D]))
        .collect();
    sim.provide_inputs(&inputs).unwrap();
    let mut bad = BadHolder {
        owner: ClientId(0),
        holder: None,
        silent: None,
        want_silent: true,
    };
    let report = sim.run_with(&mut bad);
    if let Ok(agg) = &report.outcome {
        assert_eq!(
            agg.sum,
            plain_sum(&inputs, &agg.survivors),
            "a wrong sum was published"
        );
    }
    assert!(
        matches!(
            report.outcome,
            Err(SecAggError::TooFewShares {
                owner: ClientId(0),
                ..
            })
        ),
        "{:?}",
        report.outcome
    );
    let holder = bad.holder.expect("a holder was picked");
    assert_eq!(
        report.misbehaved,
        vec![(
            holder,
            SecAggError::BadShare {
                holder,
                owner: ClientId(0)
            }
        )]
    );
}

/// Issue #11, attack 4: a server announces a survivor set smaller than the number of
/// survivors the distributed DP noise is calibrated for (here: it drops honest inputs to leave
/// a victim among few others). No client signs it, so no share is revealed.
#[test]
fn no_client_signs_a_survivor_set_below_the_minimum() {
    const MIN_SURVIVORS: usize = 5;
    let n = 6u32;
    let mut config = SecAggConfig::new(5, D);
    config.neighbours = Some(5);
    config.threshold = Some(3);
    config.min_survivors = MIN_SURVIVORS;
    let mut sim = Simulation::new(config, n, [61; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n).map(|i| (ClientId(i), vec![1; D])).collect();
    sim.provide_inputs(&inputs).unwrap();
    struct Shrink {
        small: Vec<ClientId>,
        signed: usize,
        revealed: usize,
    }
    impl Interceptor for Shrink {
        fn client_to_server(&mut self, _from: ClientId, msg: &mut ClientMessage) -> bool {
            match msg {
                ClientMessage::ConsistencySignature { .. } => self.signed += 1,
                ClientMessage::UnmaskShares { .. } => self.revealed += 1,
                _ => {}
            }
            true
        }
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::SurvivorSet { survivors, .. } = msg {
                if !self.small.contains(&to) {
                    return false;
                }
                *survivors = self.small.as_slice().into();
            }
            true
        }
    }
    let mut shrink = Shrink {
        small: (0..MIN_SURVIVORS as u32 - 1).map(ClientId).collect(),
        signed: 0,
        revealed: 0,
    };
    let report = sim.run_with(&mut shrink);
    assert_eq!(
        shrink.signed, 0,
        "a client signed a survivor set below the minimum"
    );
    assert_eq!(shrink.revealed, 0);
    assert!(report.outcome.is_err());
    for id in &shrink.small {
        assert!(
            matches!(
                aborted_with(&report.client_status[id]),
                Some(SecAggError::TooFewSurvivors {
                    stage: Stage::MaskedInput,
                    ..
                })
            ),
            "{:?}",
            report.client_status[id]
        );
    }
}

fn small_round(seed: u8) -> Simulation {
    let n = 6u32;
    let mut config = SecAggConfig::new(5, D);
    config.neighbours = Some(4);
    config.threshold = Some(3);
    let mut sim = Simulation::new(config, n, [seed; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n).map(|i| (ClientId(i), vec![2; D])).collect();
    sim.provide_inputs(&inputs).unwrap();
    sim
}

/// Counts the shares dealt: a client that deals has accepted the graph.
#[derive(Default)]
struct Dealt(usize);

fn dealt(msg: &ClientMessage, count: &mut Dealt) {
    if matches!(msg, ClientMessage::ShareKeys { .. }) {
        count.0 += 1;
    }
}

/// Selective abort: the server withholds one member's nonce (say, because with it the graph
/// came out wrong for it). Nobody accepts a graph without every nonce.
#[test]
fn a_withheld_nonce_stops_every_client() {
    struct Withhold(Dealt);
    impl Interceptor for Withhold {
        fn client_to_server(&mut self, _from: ClientId, msg: &mut ClientMessage) -> bool {
            dealt(msg, &mut self.0);
            true
        }
        fn server_to_client(&mut self, _to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::KeyRoster { nonces, .. } = msg {
                *nonces = nonces
                    .iter()
                    .filter(|(id, _)| *id != ClientId(3))
                    .cloned()
                    .collect();
            }
            true
        }
    }
    let mut w = Withhold(Dealt::default());
    let report = small_round(71).run_with(&mut w);
    assert_eq!(
        w.0.0, 0,
        "a client dealt shares over a graph missing a nonce"
    );
    for status in report.client_status.values() {
        assert_eq!(
            aborted_with(status),
            Some(&SecAggError::MissingNonce(ClientId(3)))
        );
    }
}

/// The server swaps a member's nonce for one of its choosing, after seeing the others.
#[test]
fn a_substituted_nonce_is_refused() {
    struct Swap(Dealt);
    impl Interceptor for Swap {
        fn client_to_server(&mut self, _from: ClientId, msg: &mut ClientMessage) -> bool {
            dealt(msg, &mut self.0);
            true
        }
        fn server_to_client(&mut self, _to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::KeyRoster { nonces, .. } = msg {
                std::sync::Arc::make_mut(nonces)[2].1 = vec![0x42; 32];
            }
            true
        }
    }
    let mut w = Swap(Dealt::default());
    let report = small_round(72).run_with(&mut w);
    assert_eq!(w.0.0, 0);
    for status in report.client_status.values() {
        assert_eq!(
            aborted_with(status),
            Some(&SecAggError::BadNonce(ClientId(2)))
        );
    }
}

/// The server shows a client a key transcript that does not hold its own advertisement (it
/// could then show it nonces it never committed to): the client reveals nothing.
#[test]
fn a_key_transcript_without_the_clients_own_advertisement_is_refused() {
    struct Forge(usize);
    impl Interceptor for Forge {
        fn client_to_server(&mut self, _from: ClientId, msg: &mut ClientMessage) -> bool {
            if matches!(msg, ClientMessage::RevealNonce { .. }) {
                self.0 += 1;
            }
            true
        }
        fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::KeyTranscript { entries, .. } = msg {
                for e in std::sync::Arc::make_mut(entries)
                    .iter_mut()
                    .filter(|e| e.client == to)
                {
                    e.nonce_commitment = vec![0x13; 32];
                }
            }
            true
        }
    }
    let mut f = Forge(0);
    let report = small_round(73).run_with(&mut f);
    assert_eq!(f.0, 0, "a nonce was revealed against a forged transcript");
    for (id, status) in &report.client_status {
        assert_eq!(
            aborted_with(status),
            Some(&SecAggError::KeyTranscriptMismatch(*id))
        );
    }
}

/// A malicious dealer signs share commitments that do not match the shares it encrypted: the
/// holder that decrypts a mismatching share aborts naming the dealer.
#[test]
fn a_dealing_that_contradicts_its_commitments_names_the_dealer() {
    let (_, keys) = make_identities(6, [74; 32]);
    struct Cheat {
        dealer: ClientId,
        key: SigningKey,
        session: [u8; 32],
        transcript: Option<[u8; 32]>,
        victim: Option<ClientId>,
    }
    impl Interceptor for Cheat {
        fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
            if from == self.dealer
                && let ClientMessage::ShareKeys { commitments, .. } = msg
                && let Some(transcript) = self.transcript
            {
                let first = &mut commitments.entries[0];
                first.self_mask[0] ^= 1;
                self.victim = Some(first.holder);
                let signed = crypto::share_commitments_transcript(
                    &self.session,
                    &transcript,
                    from,
                    &commitments.entries,
                );
                commitments.signature = crypto::sign(&self.key, &signed);
            }
            true
        }
        fn server_to_client(&mut self, _to: ClientId, msg: &mut ServerMessage) -> bool {
            if let ServerMessage::KeyTranscript { entries, .. } = msg {
                self.transcript = Some(crypto::key_transcript_hash(&self.session, entries));
            }
            true
        }
    }
    let mut sim = small_round(74);
    let dealer = ClientId(1);
    let mut cheat = Cheat {
        dealer,
        key: keys[&dealer].clone(),
        session: sim.server.plan().session,
        transcript: None,
        victim: None,
    };
    let report = sim.run_with(&mut cheat);
    let victim = cheat.victim.expect("the dealer dealt");
    assert_eq!(
        aborted_with(&report.client_status[&victim]),
        Some(&SecAggError::BadDealing(dealer))
    );
}
