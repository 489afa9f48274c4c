//! Sessions of one process (a simulated consortium's) share plans, graphs and signature
//! checks. Sharing must change what is held, never an outcome.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::plain_sum;
use medfl_memo::SignatureCache;
use medfl_secagg::sim::{DropPoint, Simulation};
use medfl_secagg::{ClientId, SecAggConfig, SharedSessions};

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
fn sessions_over_different_rosters_keep_their_own_plans() {
    let shared = SharedSessions::new(SignatureCache::new(64));
    let config = SecAggConfig::new(5, 8);
    let mut one = Simulation::new(config.clone(), 6, [1; 32]).unwrap();
    let mut other = Simulation::new(config, 6, [2; 32]).unwrap();
    let a = one.clients.get_mut(&ClientId(0)).unwrap();
    a.share(&shared);
    let b = other.clients.get_mut(&ClientId(0)).unwrap();
    b.share(&shared);
    assert!(!std::ptr::eq(
        one.clients[&ClientId(0)].plan(),
        other.clients[&ClientId(0)].plan()
    ));
}
