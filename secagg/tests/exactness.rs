//! The unmasked aggregate equals the plain modular sum of the survivors'
//! inputs, bit for bit, under random sizes, parameters and dropouts at every
//! stage; when too few clients remain the round aborts with a typed error.

mod common;

use std::collections::BTreeMap;

use medfl_secagg::sim::{DropPoint, Simulation};
use medfl_secagg::{ClientId, Quantizer, SecAggConfig, SecAggError};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use common::{Expect, oracle, plain_sum};

/// Drop points that leave the round a chance: a client silent before revealing its nonce always
/// stops the attempt (tested on its own below), so random cases drop clients elsewhere.
const AFTER_NONCE: [DropPoint; 5] = [
    DropPoint::BeforeAdvertise,
    DropPoint::BeforeShareKeys,
    DropPoint::BeforeMaskedInput,
    DropPoint::BeforeConsistency,
    DropPoint::BeforeUnmask,
];

#[derive(Debug, Clone)]
struct Case {
    n: u32,
    d: usize,
    bits: u32,
    k: usize,
    t: usize,
    drops: BTreeMap<ClientId, DropPoint>,
    seed: [u8; 32],
}

fn case(max_n: u32) -> impl Strategy<Value = Case> {
    (2..=max_n, 1usize..=24, 1u32..=64, any::<[u8; 32]>())
        .prop_flat_map(|(n, d, bits, seed)| {
            let max_k = (n - 1) as usize;
            (Just((n, d, bits, seed)), 1..=max_k)
        })
        .prop_flat_map(|((n, d, bits, seed), k)| {
            // The graph degree is k, or k+1 when k and n are both odd.
            let deg = if k % 2 == 1 && n % 2 == 1 { k + 1 } else { k };
            (
                Just((n, d, bits, seed, k)),
                (deg / 2 + 1)..=deg,
                // ~1 in 6 clients drops, at a uniformly chosen stage.
                proptest::collection::vec(
                    proptest::option::weighted(0.17, 0usize..AFTER_NONCE.len()),
                    n as usize,
                ),
            )
        })
        .prop_map(|((n, d, bits, seed, k), t, drop_at)| Case {
            n,
            d,
            bits,
            k,
            t,
            drops: drop_at
                .into_iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|p| (ClientId(i as u32), AFTER_NONCE[p])))
                .collect(),
            seed,
        })
}

fn run_case(c: &Case) -> Result<(), TestCaseError> {
    let mut config = SecAggConfig::new(7, c.d);
    config.bits = c.bits;
    config.neighbours = Some(c.k);
    config.threshold = Some(c.t);
    config.graph_seed = c.seed;
    let mut sim = Simulation::new(config, c.n, c.seed).expect("valid config");
    let mut rng = ChaCha20Rng::from_seed(c.seed);
    let mask = if c.bits == 64 {
        u64::MAX
    } else {
        (1u64 << c.bits) - 1
    };
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..c.n)
        .map(|i| {
            let v = (0..c.d)
                .map(|_| rand::Rng::next_u64(&mut rng) & mask)
                .collect();
            (ClientId(i), v)
        })
        .collect();
    sim.provide_inputs(&inputs).expect("inputs in range");
    for (&id, &p) in &c.drops {
        sim.drop_client(id, p);
    }
    let report = sim.run();
    let graph = sim.server.graph().cloned();
    prop_assert!(
        report.server_rejections.is_empty(),
        "{:?}",
        report.server_rejections
    );
    match (oracle(graph.as_ref(), c.n, c.t, &c.drops), report.outcome) {
        (Ok(expected), Ok(agg)) => {
            if std::env::var_os("SECAGG_TRACE").is_some() {
                eprintln!(
                    "ok n={} k={} t={} drops={} survivors={}",
                    c.n,
                    c.k,
                    c.t,
                    c.drops.len(),
                    expected.len()
                );
            }
            prop_assert_eq!(
                &agg.survivors,
                &expected.iter().copied().collect::<Vec<_>>()
            );
            prop_assert_eq!(agg.sum, plain_sum(&inputs, &expected, c.bits, c.d));
            // Every client that signed vouched for exactly the set the sum covers, which is
            // what its endorsement is later checked against.
            for (id, client) in &sim.clients {
                if let Some(signed) = client.signed_survivors() {
                    prop_assert_eq!(signed, agg.survivors.as_slice(), "client {:?}", id);
                }
            }
        }
        (Err(Expect::TooFewSurvivors), Err(SecAggError::TooFewSurvivors { .. }))
        | (Err(Expect::TooFewShares), Err(SecAggError::TooFewShares { .. }))
        | (Err(Expect::MissingNonce), Err(SecAggError::MissingNonce(_))) => {}
        (want, got) => prop_assert!(false, "oracle {:?}, got {:?}", want, got),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn aggregate_is_exact_under_dropouts(c in case(30)) {
        run_case(&c)?;
    }

    #[test]
    fn quantized_floats_sum_exactly(
        n in 3u32..=12,
        xs in proptest::collection::vec(proptest::collection::vec(-2.0f32..2.0, 6), 12),
        seed in any::<[u8; 32]>(),
    ) {
        let d = 6;
        let config = SecAggConfig::new(1, d);
        let q = Quantizer::new(1.5, config.bits, u64::from(n)).expect("fits");
        let mut rng = ChaCha20Rng::from_seed(seed);
        let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
            .map(|i| (ClientId(i), q.encode(&xs[i as usize], &mut rng).expect("finite")))
            .collect();
        let mut sim = Simulation::new(config, n, seed).expect("valid config");
        sim.provide_inputs(&inputs).expect("in range");
        let agg = sim.run().outcome.expect("no dropouts");
        let all = inputs.keys().copied().collect();
        prop_assert_eq!(&agg.sum, &plain_sum(&inputs, &all, 32, d));
        // And the decoded mean is the clipped mean up to one quantization step.
        let mean = q.decode_mean(&agg.sum, u64::from(n)).expect("n > 0");
        let step = 3.0 / q.levels() as f64;
        for (j, m) in mean.iter().enumerate() {
            let truth: f64 = (0..n as usize)
                .map(|i| f64::from(xs[i][j].clamp(-1.5, 1.5)))
                .sum::<f64>() / f64::from(n);
            prop_assert!((m - truth).abs() <= step + 1e-9, "{} vs {}", m, truth);
        }
    }
}

/// Every drop point, each with exactly enough neighbours left, in a fixed graph.
#[test]
fn one_dropout_at_each_stage_is_recovered() {
    // k - 5 dropouts >= t for every neighbourhood, so recovery must succeed.
    let n = 16;
    let mut config = SecAggConfig::new(3, 50);
    config.neighbours = Some(12);
    config.threshold = Some(7);
    let mut sim = Simulation::new(config, n, [9; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
        .map(|i| {
            (
                ClientId(i),
                (0..50).map(|j| u64::from(i) * 1000 + j).collect(),
            )
        })
        .collect();
    sim.provide_inputs(&inputs).unwrap();
    for (i, p) in AFTER_NONCE.iter().enumerate() {
        sim.drop_client(ClientId(2 * i as u32), *p);
    }
    let drops: BTreeMap<_, _> = AFTER_NONCE
        .iter()
        .enumerate()
        .map(|(i, p)| (ClientId(2 * i as u32), *p))
        .collect();
    let report = sim.run();
    let expected = oracle(sim.server.graph(), n, 7, &drops).expect("recoverable");
    let agg = report.outcome.unwrap();
    assert_eq!(agg.survivors, expected.iter().copied().collect::<Vec<_>>());
    // Clients 0, 2, 4 dropped before their masked input; 6 and 8 after it.
    assert!(!agg.survivors.contains(&ClientId(4)));
    assert!(agg.survivors.contains(&ClientId(6)) && agg.survivors.contains(&ClientId(8)));
    assert_eq!(agg.sum, plain_sum(&inputs, &expected, 32, 50));
}

/// Inputs longer than one masking chunk (2,048 coordinates), at widths that do not divide a
/// byte: each client holds its input packed and unpacks it chunk by chunk to mask it.
#[test]
fn inputs_of_several_chunks_are_summed_exactly_at_any_width() {
    let (n, d) = (5u32, 5_000usize);
    for bits in [13u32, 32, 61, 64] {
        let mut config = SecAggConfig::new(3, d);
        config.bits = bits;
        let mut sim = Simulation::new(config, n, [bits as u8; 32]).unwrap();
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
            .map(|i| {
                let v = (0..d as u64)
                    .map(|j| (j.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(i)) & mask)
                    .collect();
                (ClientId(i), v)
            })
            .collect();
        sim.provide_inputs(&inputs).unwrap();
        let agg = sim.run().outcome.expect("no dropouts");
        let all = (0..n).map(ClientId).collect();
        assert_eq!(agg.sum, plain_sum(&inputs, &all, bits, d), "{bits} bits");
    }
}

/// Fewer than t survivors: typed abort, and no aggregate event at all.
#[test]
fn too_few_survivors_abort_without_result() {
    let n = 6;
    let mut config = SecAggConfig::new(3, 4);
    config.neighbours = Some(5);
    config.threshold = Some(4);
    let mut sim = Simulation::new(config, n, [1; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n).map(|i| (ClientId(i), vec![1; 4])).collect();
    sim.provide_inputs(&inputs).unwrap();
    for i in 0..3 {
        sim.drop_client(ClientId(i), DropPoint::BeforeMaskedInput);
    }
    let report = sim.run();
    assert_eq!(
        report.outcome,
        Err(SecAggError::TooFewSurvivors {
            stage: medfl_secagg::Stage::MaskedInput,
            got: 3,
            need: 4
        })
    );
}

/// Too many shareholders vanish before unmasking: typed abort.
#[test]
fn too_few_shares_abort_without_result() {
    let n = 10;
    let mut config = SecAggConfig::new(3, 4);
    config.neighbours = Some(4);
    config.threshold = Some(3);
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n).map(|i| (ClientId(i), vec![1; 4])).collect();
    // The graph comes from the clients' nonces, which the seed fixes: an honest rehearsal with
    // the same seed shows it.
    let mut rehearsal = Simulation::new(config.clone(), n, [2; 32]).unwrap();
    rehearsal.provide_inputs(&inputs).unwrap();
    assert!(rehearsal.run().outcome.is_ok());
    let graph = rehearsal.server.graph().unwrap().clone();
    let mut sim = Simulation::new(config, n, [2; 32]).unwrap();
    sim.provide_inputs(&inputs).unwrap();
    // Silence two of client 0's four neighbours at the unmask stage.
    let victims: Vec<ClientId> = graph
        .neighbours(ClientId(0))
        .iter()
        .copied()
        .take(2)
        .collect();
    for v in &victims {
        sim.drop_client(*v, DropPoint::BeforeUnmask);
    }
    let report = sim.run();
    assert!(
        matches!(
            report.outcome,
            Err(SecAggError::TooFewShares { need: 3, .. })
        ),
        "{:?}",
        report.outcome
    );
}

/// A client that advertised but never reveals its nonce stops the attempt: going on without it
/// would let a server choose among graphs by dropping nonces. Nobody reveals anything.
#[test]
fn a_missing_nonce_aborts_the_attempt() {
    let n = 6;
    let mut config = SecAggConfig::new(3, 4);
    config.neighbours = Some(4);
    config.threshold = Some(3);
    let mut sim = Simulation::new(config, n, [3; 32]).unwrap();
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n).map(|i| (ClientId(i), vec![1; 4])).collect();
    sim.provide_inputs(&inputs).unwrap();
    sim.drop_client(ClientId(4), DropPoint::BeforeRevealNonce);
    let report = sim.run();
    assert_eq!(report.outcome, Err(SecAggError::MissingNonce(ClientId(4))));
    assert!(sim.server.graph().is_none());
}

/// Larger federations, up to 100 clients (slow in debug builds).
#[test]
#[ignore]
fn aggregate_is_exact_up_to_100_clients() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    runner.run(&case(100), |c| run_case(&c)).unwrap();
}

/// A server told of each drop as it happens (a closed connection) closes every stage on the
/// last answer it waits for, never at a deadline, and reaches the very sum and survivors the
/// deadline-driven run reaches.
#[test]
fn drops_the_server_is_told_of_close_stages_without_waiting() {
    let n = 16;
    let mut config = SecAggConfig::new(3, 50);
    config.neighbours = Some(12);
    config.threshold = Some(7);
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
        .map(|i| (ClientId(i), (0..50).map(|j| u64::from(i) * 7 + j).collect()))
        .collect();
    let run = |announce: bool| {
        let mut sim = Simulation::new(config.clone(), n, [4; 32]).unwrap();
        sim.provide_inputs(&inputs).unwrap();
        for (i, p) in AFTER_NONCE.iter().enumerate() {
            sim.drop_client(ClientId(3 * i as u32 + 1), *p);
        }
        if announce {
            sim.announce_drops();
        }
        sim.run()
    };
    let (waited, told) = (run(false), run(true));
    assert!(waited.deadlines > 0);
    assert_eq!(told.deadlines, 0, "a stage waited for a client known gone");
    assert_eq!(told.outcome, waited.outcome);
    assert!(told.outcome.is_ok());
    assert!(told.server_rejections.is_empty());
}
