//! Sessions of one process (a simulated consortium's) share plans, graphs and signature
//! checks. Sharing must change what is held, never an outcome.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::plain_sum;
use medfl_memo::SignatureCache;
use medfl_secagg::sim::{DropPoint, Interceptor, Simulation};
use medfl_secagg::{
    ClientId, ClientStatus, SecAggConfig, SecAggError, ServerMessage, SharedSessions,
    default_degree,
};

fn round(shared: Option<&Arc<SharedSessions>>) -> (Simulation, medfl_secagg::sim::SimReport) {
    let n = 24;
    let mut config = SecAggConfig::new(5, 40);
    config.neighbours = Some(10);
    config.threshold = Some(6);
    let mut sim = Simulation::new(config, n, [3; 32]).unwrap();
    if let Some(shared) = shared {
        for client in sim.clients.values_mut() {
            client.share(shared);
        }
    }
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
        .map(|i| {
            (
                ClientId(i),
                (0..40).map(|j| u64::from(i) * 100 + j).collect(),
            )
        })
        .collect();
    sim.provide_inputs(&inputs).unwrap();
    sim.drop_client(ClientId(3), DropPoint::BeforeMaskedInput);
    sim.drop_client(ClientId(11), DropPoint::BeforeUnmask);
    let report = sim.run();
    let agg = report.outcome.as_ref().expect("recoverable");
    let survivors = agg.survivors.iter().copied().collect();
    assert_eq!(agg.sum, plain_sum(&inputs, &survivors, 32, 40));
    (sim, report)
}

#[test]
fn shared_sessions_reach_the_same_sum_and_hold_one_plan_and_one_graph() {
    let (_, alone) = round(None);
    let shared = SharedSessions::new(SignatureCache::new(4096));
    let (sim, together) = round(Some(&shared));
    let (a, b) = (alone.outcome.unwrap(), together.outcome.unwrap());
    assert_eq!((a.sum, a.survivors), (b.sum, b.survivors));
    assert_eq!(alone.stages, together.stages);

    let clients: Vec<_> = sim.clients.values().collect();
    let (first, others) = clients.split_first().unwrap();
    for c in others {
        assert!(std::ptr::eq(first.plan(), c.plan()), "one plan");
        let (g, h) = (first.graph().unwrap(), c.graph().unwrap());
        assert!(std::ptr::eq(g, h), "one graph");
    }
    // The clients' signature checks (consistency signatures, share commitments) were
    // remembered for the next client that met the same bytes.
    assert!(!shared.signatures().is_empty());
}

#[test]
fn sessions_keep_their_own_plan_when_another_differs_under_the_same_tag() {
    // `neighbours: None` and `Some(default_degree(n))` resolve to the same degree, so the two
    // plans have the same session tag; their configurations still differ, and the comparison
    // in full keeps them apart.
    let n = 6;
    let shared = SharedSessions::new(SignatureCache::new(64));
    let implicit = SecAggConfig::new(5, 8);
    let mut explicit = implicit.clone();
    explicit.neighbours = Some(default_degree(n as usize));
    let mut one = Simulation::new(implicit, n, [1; 32]).unwrap();
    let mut other = Simulation::new(explicit, n, [1; 32]).unwrap();
    for id in [1, 2] {
        other.clients.get_mut(&ClientId(id)).unwrap().share(&shared);
    }
    let a = one.clients.get_mut(&ClientId(0)).unwrap();
    a.share(&shared);
    let (a, b, c) = (
        &one.clients[&ClientId(0)],
        &other.clients[&ClientId(1)],
        &other.clients[&ClientId(2)],
    );
    assert_eq!(a.plan().session, b.plan().session, "the same tag");
    assert!(
        std::ptr::eq(b.plan(), c.plan()),
        "one configuration, one plan"
    );
    assert!(
        !std::ptr::eq(a.plan(), b.plan()),
        "another configuration keeps its own"
    );
}

/// The server shows client `to` a list changed by `change` (in place: `Arc::make_mut` moves it
/// to an allocation of its own, as a server that shows one client another list would send).
struct Tamper {
    to: ClientId,
    change: fn(&mut ServerMessage),
}

impl Interceptor for Tamper {
    fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
        if to == self.to {
            (self.change)(msg);
        }
        true
    }
}

fn flip_third_nonce(msg: &mut ServerMessage) {
    if let ServerMessage::KeyRoster { nonces, .. } = msg {
        Arc::make_mut(nonces)[2].1[0] ^= 1;
    }
}

fn flip_third_commitment(msg: &mut ServerMessage) {
    if let ServerMessage::KeyTranscript { entries, .. } = msg {
        Arc::make_mut(entries)[2].nonce_commitment[0] ^= 1;
    }
}

fn swap_first_two_entries(msg: &mut ServerMessage) {
    if let ServerMessage::KeyTranscript { entries, .. } = msg {
        Arc::make_mut(entries).swap(0, 1);
    }
}

/// Every client's status after a round of 12 under `tamper`, with and without sharing: they
/// must be equal, and are returned.
fn statuses_alike(tamper: &mut Tamper) -> BTreeMap<ClientId, ClientStatus> {
    let mut run = |shared: Option<&Arc<SharedSessions>>| {
        let n = 12;
        let mut sim = Simulation::new(SecAggConfig::new(5, 4), n, [9; 32]).unwrap();
        let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
            .map(|i| (ClientId(i), vec![u64::from(i); 4]))
            .collect();
        sim.provide_inputs(&inputs).unwrap();
        if let Some(shared) = shared {
            for client in sim.clients.values_mut() {
                client.share(shared);
            }
        }
        sim.run_with(tamper).client_status
    };
    let alone = run(None);
    let together = run(Some(&SharedSessions::new(SignatureCache::new(4096))));
    assert_eq!(alone, together);
    together
}

/// The refusal of a tampered list reaches only the client shown it, whether that client checks
/// first (client 0: the genuine list is still held by the others) or last (client 11: by then
/// its list may be the genuine allocation's last holder, and the remembered answer's `Weak`
/// is what makes `make_mut` move it).
#[test]
fn a_nonce_list_shown_to_one_client_is_refused_by_it_alone_when_sessions_share() {
    for victim in [ClientId(0), ClientId(11)] {
        let statuses = statuses_alike(&mut Tamper {
            to: victim,
            change: flip_third_nonce,
        });
        assert_eq!(
            statuses.get(&victim),
            Some(&ClientStatus::Aborted(SecAggError::BadNonce(ClientId(2))))
        );
        let bad_nonce =
            |s: &ClientStatus| matches!(s, ClientStatus::Aborted(SecAggError::BadNonce(_)));
        assert!(
            !statuses.iter().any(|(&id, s)| id != victim && bad_nonce(s)),
            "{statuses:?}"
        );
    }
}

/// One client is shown a transcript in which another member's nonce commitment differs (a
/// split view): the genuine nonce then fails against it, for that client alone.
#[test]
fn a_transcript_shown_to_one_client_is_checked_by_it_alone_when_sessions_share() {
    let statuses = statuses_alike(&mut Tamper {
        to: ClientId(5),
        change: flip_third_commitment,
    });
    assert_eq!(
        statuses.get(&ClientId(5)),
        Some(&ClientStatus::Aborted(SecAggError::BadNonce(ClientId(2))))
    );
}

/// The client looks entries up by binary search, so a transcript out of order must never get
/// that far.
#[test]
fn a_transcript_out_of_order_is_refused_before_any_lookup() {
    let statuses = statuses_alike(&mut Tamper {
        to: ClientId(4),
        change: swap_first_two_entries,
    });
    assert_eq!(
        statuses.get(&ClientId(4)),
        Some(&ClientStatus::Aborted(SecAggError::Unsorted(
            "key transcript"
        )))
    );
}

fn swap_two_signatures(msg: &mut ServerMessage) {
    if let ServerMessage::UnmaskRequest { signatures, .. } = msg {
        let proof = Arc::make_mut(signatures);
        let second = proof[2].1.clone();
        proof[1].1 = second;
    }
}

/// A consistency proof in which client 2's signature stands in for client 1's, shown to the
/// first or the last client to check it (the others checked the genuine one): that client
/// refuses to reveal, naming client 1, with the same error whether or not its session shares
/// checks with theirs, and no one else refuses.
#[test]
fn a_forged_consistency_proof_is_refused_by_the_client_shown_it_alone_when_sessions_share() {
    for victim in [ClientId(0), ClientId(11)] {
        let statuses = statuses_alike(&mut Tamper {
            to: victim,
            change: swap_two_signatures,
        });
        let refused = |s: &ClientStatus| {
            matches!(
                s,
                ClientStatus::Aborted(SecAggError::ConsistencyCheckFailed(_))
            )
        };
        assert_eq!(
            statuses.get(&victim),
            Some(&ClientStatus::Aborted(SecAggError::ConsistencyCheckFailed(
                ClientId(1)
            )))
        );
        assert!(
            !statuses.iter().any(|(&id, s)| id != victim && refused(s)),
            "{statuses:?}"
        );
    }
}
