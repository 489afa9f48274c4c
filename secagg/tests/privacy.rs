//! What the server (or a small coalition) sees reveals nothing: masked
//! vectors look uniform, fewer than t shares fit any secret, and material
//! from one round is worthless in another.

mod common;

use std::collections::BTreeMap;

use curve25519_dalek::Scalar;
use medfl_secagg::crypto;
use medfl_secagg::message::{ClientMessage, ServerMessage, TranscriptEntry};
use medfl_secagg::shamir::{self, SecretShare, eval_point};
use medfl_secagg::sim::{Interceptor, Simulation, make_identities};
use medfl_secagg::{
    ClientId, ClientSession, ClientStatus, SecAggConfig, SecAggError, ServerSession,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Captures every masked input the server receives.
#[derive(Default)]
struct Capture {
    masked: BTreeMap<ClientId, Vec<u64>>,
}

impl Interceptor for Capture {
    fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
        if let ClientMessage::MaskedInput { masked, .. } = msg {
            // Every test here uses the default 32-bit ring: 4 bytes per coordinate.
            let d = masked.len() / 4;
            self.masked
                .insert(from, masked.unpack(d, 32).expect("valid packing"));
        }
        true
    }
}

/// Upper-tail p-value of a chi-square statistic (Wilson–Hilferty normal
/// approximation, accurate to a few percent in relative terms for df ≥ 30).
fn chi_square_p_value(stat: f64, df: f64) -> f64 {
    let h = 2.0 / (9.0 * df);
    let z = ((stat / df).powf(1.0 / 3.0) - (1.0 - h)) / h.sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes `erfcc`, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Chi-square p-value of the top `bucket_bits` bits of `values` (ring width `bits`).
fn uniformity_p_value(values: &[u64], bits: u32, bucket_bits: u32) -> f64 {
    let buckets = 1usize << bucket_bits;
    let mut counts = vec![0u64; buckets];
    for &v in values {
        counts[(v >> (bits - bucket_bits)) as usize] += 1;
    }
    let expected = values.len() as f64 / buckets as f64;
    let stat: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    chi_square_p_value(stat, (buckets - 1) as f64)
}

#[test]
fn chi_square_helper_is_calibrated() {
    // Published quantiles of chi-square(250): 50% 249.33, 95% 287.88, 99% 304.94.
    assert!((chi_square_p_value(249.33, 250.0) - 0.5).abs() < 0.005);
    assert!((chi_square_p_value(287.88, 250.0) - 0.05).abs() < 0.002);
    assert!((chi_square_p_value(304.94, 250.0) - 0.01).abs() < 0.0005);
}

#[test]
fn masked_vectors_are_uniform_even_for_constant_inputs() {
    let n = 6;
    let d = 16_384;
    let mut config = SecAggConfig::new(11, d);
    config.neighbours = Some(4);
    config.threshold = Some(3);
    let mut sim = Simulation::new(config, n, [21; 32]).unwrap();
    // The most structured input there is: all zeros, and all the same large value.
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n)
        .map(|i| {
            (
                ClientId(i),
                vec![if i % 2 == 0 { 0 } else { 0xDEAD_BEEF }; d],
            )
        })
        .collect();
    sim.provide_inputs(&inputs).unwrap();
    let mut cap = Capture::default();
    assert!(sim.run_with(&mut cap).outcome.is_ok());
    assert_eq!(cap.masked.len(), n as usize);
    for (id, y) in &cap.masked {
        // Top byte and low byte, 256 buckets each over 16384 coordinates.
        let p_top = uniformity_p_value(y, 32, 8);
        let low: Vec<u64> = y.iter().map(|v| (v & 0xFF) << 24).collect();
        let p_low = uniformity_p_value(&low, 32, 8);
        assert!(
            p_top > 1e-4 && p_low > 1e-4,
            "client {id}: p_top={p_top} p_low={p_low}"
        );
        // Masked vectors of different clients are unrelated to each other.
        assert_ne!(y, &cap.masked[&ClientId((id.0 + 1) % n)]);
    }
}

#[test]
fn the_uniformity_test_has_power() {
    // Negative control: a quantized, unmasked Gaussian-ish input fails the same test.
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let q = medfl_secagg::Quantizer::new(3.0, 32, 10).unwrap();
    let xs: Vec<f32> = (0..16_384)
        .map(|_| {
            let s: f32 = (0..4)
                .map(|_| rand::RngExt::random::<f32>(&mut rng) - 0.5)
                .sum();
            s
        })
        .collect();
    let enc = q.encode(&xs, &mut rng).unwrap();
    let shifted: Vec<u64> = enc.iter().map(|v| v * 10).collect(); // spread over the whole ring
    assert!(uniformity_p_value(&shifted, 32, 8) < 1e-10);
}

#[test]
fn fewer_than_t_shares_are_consistent_with_any_secret() {
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    let holders: Vec<ClientId> = (0..7).map(ClientId).collect();
    let t = 4;
    let secret = [0x5Au8; 32];
    let shares = shamir::split_secret(&secret, t, &holders, &mut rng);
    let seen = &shares[..t - 1]; // what a coalition of t-1 holders knows
    for fake in [[0u8; 32], [0xFF; 32], [0x13; 32]] {
        // Complete the coalition's view with the one polynomial through (0, fake half).
        let target = holders[t - 1];
        let mut values = [Scalar::ZERO; 2];
        for (half, value) in values.iter_mut().enumerate() {
            let mut bytes = [0u8; 32];
            bytes[..16].copy_from_slice(&fake[half * 16..half * 16 + 16]);
            let mut points: Vec<(Scalar, Scalar)> = seen
                .iter()
                .map(|s| (eval_point(s.holder), s.values[half]))
                .collect();
            points.push((Scalar::ZERO, Scalar::from_bytes_mod_order(bytes)));
            *value = shamir::interpolate(&points, &eval_point(target)).unwrap();
        }
        let mut view = seen.to_vec();
        view.push(SecretShare {
            holder: target,
            values,
        });
        let rebuilt = shamir::reconstruct_secret(ClientId(99), &view, t).unwrap();
        // The same t-1 real shares explain the fake secret perfectly…
        assert_eq!(*rebuilt, fake);
        // …and the fake share differs from the real one, which gives the true secret.
        assert_ne!(view[t - 1], shares[t - 1]);
    }
    assert_eq!(
        *shamir::reconstruct_secret(ClientId(99), &shares[..t], t).unwrap(),
        secret
    );
}

#[test]
fn messages_from_one_round_are_refused_in_another() {
    let n = 4;
    let (roster, keys) = make_identities(n, [3; 32]);
    let mut c1 = SecAggConfig::new(1, 8);
    c1.neighbours = Some(3);
    let mut c2 = c1.clone();
    c2.round = 2;
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let mut old = ClientSession::new(
        c1,
        ClientId(0),
        keys[&ClientId(0)].clone(),
        &roster,
        &mut rng,
    )
    .unwrap();
    let Some(ClientMessage::AdvertiseKeys(adv)) = old.poll_outgoing() else {
        panic!("first message is the advertisement")
    };
    let mut server = ServerSession::new(c2.clone(), &roster).unwrap();
    // Verbatim replay: wrong round id.
    assert_eq!(
        server.handle_message(ClientId(0), ClientMessage::AdvertiseKeys(adv.clone())),
        Err(SecAggError::WrongRound {
            expected: 2,
            got: 1
        })
    );
    // Round id rewritten: the signature binds the session, so it no longer verifies.
    let mut relabelled = adv.clone();
    relabelled.round = 2;
    assert_eq!(
        server.handle_message(
            ClientId(0),
            ClientMessage::AdvertiseKeys(relabelled.clone())
        ),
        Err(SecAggError::InvalidSignature(ClientId(0)))
    );
    let mut fresh = ClientSession::new(
        c2,
        ClientId(1),
        keys[&ClientId(1)].clone(),
        &roster,
        &mut rng,
    )
    .unwrap();
    // A client of round 2 refuses a key transcript that lists the old advertisement and not its
    // own fresh one, and aborts.
    let entry = TranscriptEntry {
        client: ClientId(0),
        advert: crypto::advert_digest(&fresh.plan().session, &relabelled).to_vec(),
        nonce_commitment: relabelled.nonce_commitment.clone(),
    };
    let err = fresh
        .handle_message(ServerMessage::KeyTranscript {
            round: 2,
            entries: vec![entry].into(),
        })
        .unwrap_err();
    assert_eq!(err, SecAggError::KeyTranscriptMismatch(ClientId(1)));
    assert!(matches!(fresh.status(), ClientStatus::Aborted(_)));
    // And the signature itself is over a transcript that names the session tag.
    let plan = old.plan();
    let t = crypto::advertise_transcript(
        &plan.session,
        ClientId(0),
        &[0; 32],
        &[0; 32],
        &[0; 32],
        &[0; 32],
    );
    assert!(t.windows(32).any(|w| w == plan.session));
}

#[test]
fn consistency_signatures_do_not_transfer_between_rounds() {
    // A survivor-set signature from round 1 is refused by the round-2 server.
    let n = 3;
    let mut c1 = SecAggConfig::new(1, 2);
    c1.neighbours = Some(2);
    c1.threshold = Some(2);
    let mut c2 = c1.clone();
    c2.round = 2;
    struct Grab(Option<Vec<u8>>);
    impl Interceptor for Grab {
        fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
            if let (ClientId(0), ClientMessage::ConsistencySignature { signature, .. }) =
                (from, msg)
            {
                self.0 = Some(signature.clone());
            }
            true
        }
    }
    struct Swap(Vec<u8>);
    impl Interceptor for Swap {
        fn client_to_server(&mut self, from: ClientId, msg: &mut ClientMessage) -> bool {
            if let (ClientId(0), ClientMessage::ConsistencySignature { signature, .. }) =
                (from, msg)
            {
                *signature = self.0.clone();
            }
            true
        }
    }
    let inputs: BTreeMap<ClientId, Vec<u64>> = (0..n).map(|i| (ClientId(i), vec![1, 2])).collect();
    let mut s1 = Simulation::new(c1, n, [6; 32]).unwrap();
    s1.provide_inputs(&inputs).unwrap();
    let mut grab = Grab(None);
    assert!(s1.run_with(&mut grab).outcome.is_ok());
    let mut s2 = Simulation::new(c2, n, [6; 32]).unwrap();
    s2.provide_inputs(&inputs).unwrap();
    let report = s2.run_with(&mut Swap(grab.0.unwrap()));
    assert!(
        report
            .server_rejections
            .contains(&(ClientId(0), SecAggError::InvalidSignature(ClientId(0))))
    );
}
