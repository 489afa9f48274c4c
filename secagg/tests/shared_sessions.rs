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

/// A server that passes one member's consistency signature off as another's, to a client whose
/// peers checked the genuine one: the client refuses to reveal, with the same error whether or
/// not its session shares checks with theirs.
#[test]
fn a_signature_passed_off_as_another_signers_is_refused_the_same_way_when_sessions_share() {
    let outcome = |shared: Option<&Arc<SharedSessions>>| {
        let n = 12;
        let mut sim = Simulation::new(SecAggConfig::new(5, 4), n, [5; 32]).unwrap();
        let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
            .map(|i| (ClientId(i), vec![u64::from(i); 4]))
            .collect();
        sim.provide_inputs(&inputs).unwrap();
        if let Some(shared) = shared {
            for client in sim.clients.values_mut() {
                client.share(shared);
            }
        }
        sim.run_with(&mut SwappedSignature)
            .client_status
            .get(&ClientId(11))
            .cloned()
    };
    let alone = outcome(None);
    let shared = SharedSessions::new(SignatureCache::new(4096));
    let together = outcome(Some(&shared));
    assert_eq!(alone, together);
    assert!(
        matches!(
            &alone,
            Some(medfl_secagg::ClientStatus::Aborted(
                medfl_secagg::SecAggError::ConsistencyCheckFailed(ClientId(1))
            ))
        ),
        "{alone:?}"
    );
}

/// In client 11's unmask request (the last one sent, so its peers have checked the genuine
/// signatures first), client 2's signature stands in for client 1's.
struct SwappedSignature;

impl Interceptor for SwappedSignature {
    fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
        if let (ClientId(11), ServerMessage::UnmaskRequest { signatures, .. }) = (to, msg) {
            let mut forged = signatures.to_vec();
            forged[1].1 = forged[2].1.clone();
            *signatures = forged.into();
        }
        true
    }
}

/// Client 0 (the first to check the nonces) is shown a list with one nonce changed; everyone
/// else is shown the genuine list. Client 0 refuses it, and its refusal, remembered for the
/// allocation it was sent, reaches no one else: each status is what it is without sharing.
struct OneTamperedNonceList;

impl Interceptor for OneTamperedNonceList {
    fn server_to_client(&mut self, to: ClientId, msg: &mut ServerMessage) -> bool {
        if let (ClientId(0), ServerMessage::KeyRoster { nonces, .. }) = (to, msg) {
            Arc::make_mut(nonces)[2].1[0] ^= 1;
        }
        true
    }
}

#[test]
fn a_nonce_list_shown_to_one_client_is_refused_by_it_alone_when_sessions_share() {
    let statuses = |shared: Option<&Arc<SharedSessions>>| {
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
        sim.run_with(&mut OneTamperedNonceList).client_status
    };
    let alone = statuses(None);
    let together = statuses(Some(&SharedSessions::new(SignatureCache::new(4096))));
    assert_eq!(alone, together);
    assert_eq!(
        alone.get(&ClientId(0)),
        Some(&ClientStatus::Aborted(SecAggError::BadNonce(ClientId(2))))
    );
    let bad_nonce = |s: &ClientStatus| matches!(s, ClientStatus::Aborted(SecAggError::BadNonce(_)));
    assert!(
        !together
            .iter()
            .any(|(&id, s)| id != ClientId(0) && bad_nonce(s)),
        "{together:?}"
    );
}
