//! The distributed discrete Gaussian through the real SecAgg+ protocol (`medfl-secagg`'s
//! deterministic simulator), including a client that drops out before sending its input.

use std::collections::BTreeMap;

use medfl_dp::clip::clip_l2;
use medfl_dp::{DdpConfig, DdpPlan};
use medfl_secagg::sim::{DropPoint, Simulation};
use medfl_secagg::{ClientId, SecAggConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[test]
fn noisy_sum_through_secure_aggregation() {
    let (n, d) = (12u32, 2000usize);
    // Plan for n - 1 to n survivors: noise calibrated to the minimum, the modulus to the maximum.
    let mut config = DdpConfig::new(d, u64::from(n - 1), 1.0, 0.5, 1e-3);
    config.max_clients = u64::from(n);
    let plan = DdpPlan::new(config, [4; 32]).unwrap();
    let mut cfg = SecAggConfig::new(1, plan.encoded_len());
    cfg.bits = plan.bits();
    let mut sim = Simulation::new(cfg, n, [8; 32]).unwrap();
    let dropped = ClientId(5);
    sim.drop_client(dropped, DropPoint::BeforeMaskedInput);

    let mut data_rng = ChaCha20Rng::seed_from_u64(99);
    let mut inputs = BTreeMap::new();
    let mut truth = vec![0.0; d];
    for i in 0..n {
        let x: Vec<f64> = (0..d)
            .map(|_| (data_rng.next_u32() as f64 / u32::MAX as f64 - 0.5) * 0.1)
            .collect();
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(i));
        inputs.insert(ClientId(i), plan.encode(&x, &mut rng).unwrap());
        if ClientId(i) != dropped {
            let mut c = x;
            clip_l2(&mut c, 1.0).unwrap();
            truth.iter_mut().zip(&c).for_each(|(t, v)| *t += v);
        }
    }
    sim.provide_inputs(&inputs).unwrap();
    let report = sim.run();
    let aggregate = report.outcome.unwrap();
    assert_eq!(aggregate.survivors.len(), n as usize - 1);
    assert!(!aggregate.survivors.contains(&dropped));

    let got = plan.decode_sum(&aggregate.sum).unwrap();
    let resid: Vec<f64> = got.iter().zip(&truth).map(|(g, t)| g - t).collect();
    let var = resid.iter().map(|r| r * r).sum::<f64>() / d as f64;
    let intended = f64::from(n - 1) * (plan.local_sigma() * 1e-3).powi(2);
    assert!((intended.sqrt() - 0.5).abs() < 1e-6);
    let tol = 4.0 * (2.0 / d as f64).sqrt() * intended;
    assert!((var - intended).abs() < tol, "variance {var} vs {intended}");
}
