//! Sampling and completion: draws follow the softmax, the sampler conditions every
//! draw on what came before, known sub-pixels stay known, and seeds repeat.

mod common;

use common::{bytes, gpu, rng};
use pixelrnn::gpu::{submit, View};
use pixelrnn::incremental::IncrementalSampler;
use pixelrnn::model::{self, init_params, Arch, ModelConfig, ParamLayout};
use pixelrnn::network::{Mode, Network};
use pixelrnn::ops::LEVELS;
use pixelrnn::sample::{
    complete, draw, sample, seed32, uniform01, Completion, DrawOp, Occlusion, SamplerKind,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn draw_inverts_the_softmax_cdf() {
    // p = (1/4, 3/4, 0, ...): u below 1/4 draws 0, above draws 1, never beyond.
    let mut logits = vec![f32::NEG_INFINITY; LEVELS];
    logits[0] = 0.0;
    logits[1] = 3f32.ln();
    assert_eq!(draw(&logits, 1.0, 0.0), 0);
    assert_eq!(draw(&logits, 1.0, 0.249), 0);
    assert_eq!(draw(&logits, 1.0, 0.251), 1);
    assert_eq!(draw(&logits, 1.0, 0.999_999), 1);

    // Low temperature sharpens towards the argmax; high flattens.
    assert_eq!(draw(&logits, 0.01, 0.5), 1);
    assert_eq!(draw(&logits, 0.01, 0.01), 1);
    assert_eq!(draw(&logits, 100.0, 0.45), 0);

    // Empirical frequencies of a random softmax match its probabilities.
    let mut r = ChaCha8Rng::seed_from_u64(5);
    let l: Vec<f32> = (0..LEVELS).map(|i| ((i % 7) as f32) * 0.5).collect();
    let z: f64 = l.iter().map(|&v| (v as f64).exp()).sum();
    let n = 200_000;
    let mut counts = vec![0usize; LEVELS];
    for _ in 0..n {
        counts[draw(&l, 1.0, r.random()) as usize] += 1;
    }
    for (v, &c) in counts.iter().enumerate() {
        let p = (l[v] as f64).exp() / z;
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (c as f64 / n as f64 - p).abs() < 5.0 * sd + 1e-6,
            "level {v}"
        );
    }
}

/// The samplers' random numbers: uniform over [0, 1) (16 equal bins within 5 standard
/// deviations over 160,000 numbers), and different for neighbouring images, sub-pixels
/// and seeds.
#[test]
fn counter_based_uniforms_are_uniform_and_distinct() {
    let mut bins = [0usize; 16];
    let n = 160_000;
    for i in 0..n {
        let u = uniform01(7, (i % 16) as u32, (i / 16) as u32);
        assert!((0.0..1.0).contains(&u), "{u}");
        bins[(u * 16.0) as usize] += 1;
    }
    let expect = n as f64 / 16.0;
    for (k, &c) in bins.iter().enumerate() {
        assert!(
            (c as f64 - expect).abs() < 5.0 * (expect * 15.0 / 16.0).sqrt(),
            "bin {k}: {c}"
        );
    }
    let u = uniform01(7, 3, 5);
    for other in [uniform01(8, 3, 5), uniform01(7, 4, 5), uniform01(7, 3, 6)] {
        assert_ne!(u, other);
    }
    assert_ne!(seed32(1), seed32(1 << 32 | 2));
}

/// The draw kernel, stepping through a list of sub-pixels with its cursor, writes
/// exactly what the CPU twin draws with the same uniform numbers, leaves known
/// sub-pixels alone, and writes the scaled value into the input; temperature 0 takes
/// the argmax.
#[test]
fn gpu_draws_match_the_cpu_twin() {
    let g = gpu();
    let (batch, dims) = (70, 6);
    let mut r = rng(3);
    let logits: Vec<f32> = (0..batch * dims * LEVELS)
        .map(|_| r.random_range(-4.0..4.0))
        .collect();
    let known: Vec<bool> = (0..batch * dims).map(|i| i % 5 == 0).collect();
    let images: Vec<u8> = (0..batch * dims).map(|i| (i * 7) as u8).collect();
    let order = [0, 2, 3, 5];
    for temperature in [1.0, 0.7, 0.0] {
        let logits_v = View::whole(&g.buffer_from("logits", &logits));
        let input = View::whole(&g.zeros("input", batch * dims));
        let seed = 11;
        let op = DrawOp::new(
            &g,
            batch,
            dims,
            (&images, &known),
            &order,
            (temperature, seed),
        );
        let launch = op.draw(&g, &logits_v, &input);
        let steps: Vec<_> = order
            .iter()
            .flat_map(|_| [launch.clone(), op.advance.clone()])
            .collect();
        submit(&g, &[&steps]);
        let got = pollster::block_on(op.read_images(&g)).unwrap();
        let got_input = pollster::block_on(g.read_all(&input.buffer)).unwrap();
        for b in 0..batch {
            for i in 0..dims {
                let at = b * dims + i;
                let want = if known[at] || !order.contains(&i) {
                    images[at]
                } else {
                    let u = uniform01(seed32(seed), b as u32, i as u32);
                    draw(&logits[at * LEVELS..][..LEVELS], temperature, u)
                };
                assert_eq!(got[at], want, "T = {temperature}, image {b}, sub-pixel {i}");
                if want != images[at] || (!known[at] && order.contains(&i)) {
                    assert_eq!(got_input[at], want as f32 / 127.5 - 1.0);
                }
            }
        }
    }
}

#[test]
fn occlusions_parse_and_hide_the_right_pixels() {
    let half: Occlusion = "bottom-half".parse().unwrap();
    let known = half.known(4, 3);
    assert_eq!(known.len(), 48);
    assert!(known[..24].iter().all(|&k| k) && known[24..].iter().all(|&k| !k));

    let rect: Occlusion = "rect:1,2,2,1".parse().unwrap();
    let hidden: Vec<(usize, usize)> = (0..4)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .filter(|&(r, c)| rect.hides(r, c, 4))
        .collect();
    assert_eq!(hidden, [(2, 1), (2, 2)]);
    for bad in ["rect:1,2,3", "rect:1,2,0,4", "left", "rect:a,b,c,d"] {
        let msg = bad.parse::<Occlusion>().unwrap_err().to_string();
        assert!(msg.contains(bad), "{msg}");
    }
}

/// For each model, every drawn sub-pixel is the draw, with the sampler's random
/// number, from the CPU reference's softmax at that position given the final image:
/// so each draw saw exactly the sub-pixels before it, and the known ones stayed.
#[test]
fn completion_draws_each_sub_pixel_from_its_conditional() {
    for arch in Arch::ALL {
        completion_draws_from_conditionals(arch);
    }
}

fn completion_draws_from_conditionals(arch: Arch) {
    let config = ModelConfig {
        arch,
        channels: 3,
        size: 5,
        layers: 1,
        hidden: 12,
        out_hidden: 16,
        small: None,
    };
    let params = init_params(&config, 11);
    let g = gpu();
    let batch = 2;
    let net = Network::new(&g, config, batch, &params, Mode::default()).unwrap();
    let dims = config.dims();
    let original = bytes(&mut rng(4), batch * dims);
    let known: Vec<bool> = (0..batch)
        .flat_map(|b| {
            let occ = if b == 0 {
                Occlusion::BottomHalf
            } else {
                Occlusion::Rect {
                    x: 1,
                    y: 1,
                    w: 2,
                    h: 2,
                }
            };
            occ.known(config.size, config.channels)
        })
        .collect();
    let mut images: Vec<u8> = original
        .iter()
        .zip(&known)
        .map(|(&v, &k)| if k { v } else { 0 })
        .collect();
    let (temperature, seed) = (0.9, 17);
    pollster::block_on(complete(
        &net,
        &mut images,
        &known,
        (temperature, seed),
        SamplerKind::Incremental,
        |_, _| {},
    ))
    .unwrap();

    for i in 0..images.len() {
        if known[i] {
            assert_eq!(images[i], original[i], "known sub-pixel {i} changed");
        }
    }
    let logits = model::cpu::logits(&config, &params, &images);
    let mut drawn = 0;
    for i in 0..dims {
        for b in 0..batch {
            let u = uniform01(seed32(seed), b as u32, i as u32);
            let at = b * dims + i;
            if !known[at] {
                let want = draw(&logits[at * LEVELS..][..LEVELS], temperature, u);
                assert_eq!(images[at], want, "{arch}: image {b}, sub-pixel {i}");
                drawn += 1;
            }
        }
    }
    assert_eq!(drawn, known.iter().filter(|&&k| !k).count());

    // The same seed draws the same images; another seed others. At temperature 0
    // every seed draws the same (most likely) images.
    let again =
        pollster::block_on(sample(&net, (1.0, 3), SamplerKind::Incremental, |_, _| {})).unwrap();
    let same =
        pollster::block_on(sample(&net, (1.0, 3), SamplerKind::Incremental, |_, _| {})).unwrap();
    let other =
        pollster::block_on(sample(&net, (1.0, 4), SamplerKind::Incremental, |_, _| {})).unwrap();
    assert_eq!(again, same);
    assert_ne!(again, other);
    let cold =
        pollster::block_on(sample(&net, (0.0, 3), SamplerKind::Incremental, |_, _| {})).unwrap();
    assert_eq!(
        cold,
        pollster::block_on(sample(&net, (0.0, 5), SamplerKind::Incremental, |_, _| {})).unwrap()
    );
}

/// Drawing a few positions per step, as the page does between repaints, gives the
/// same images as drawing them all in one go, and reports its progress.
#[test]
fn stepwise_completion_matches_one_go() {
    let config = ModelConfig {
        arch: Arch::PixelCnn,
        channels: 1,
        size: 4,
        layers: 1,
        hidden: 8,
        out_hidden: 8,
        small: None,
    };
    let params = init_params(&config, 2);
    let g = gpu();
    let net = Network::new(&g, config, 2, &params, Mode::default()).unwrap();
    let whole = pollster::block_on(sample(&net, (1.0, 9), SamplerKind::Plain, |_, _| {})).unwrap();

    let len = 2 * config.dims();
    let mut stepwise = Completion::new(&net, vec![0; len], vec![false; len], 1.0, 9).unwrap();
    let mut steps = 0;
    while !pollster::block_on(stepwise.advance(&net, 3)).unwrap() {
        steps += 1;
        assert_eq!(stepwise.progress(), (3 * steps, config.dims()));
    }
    assert_eq!(steps, config.dims().div_ceil(3) - 1);
    assert!(stepwise.is_finished());
    assert_eq!(stepwise.into_images(), whole);
}

/// For the same weights, seed and temperature, the incremental sampler draws exactly
/// the images the plain one draws, for all three models, grey and RGB, unconditional
/// and conditioned on a small image, sampling and completing a hole (with known
/// sub-pixels after it).
#[test]
fn incremental_sampler_matches_the_plain_one() {
    let g = gpu();
    let variants = Arch::ALL
        .into_iter()
        .flat_map(|a| [(a, 1, None), (a, 3, None), (a, 1, Some(3)), (a, 3, Some(3))]);
    for (arch, channels, small) in variants {
        let config = ModelConfig {
            arch,
            channels,
            size: 6,
            layers: 2,
            hidden: 12,
            out_hidden: 16,
            small,
        };
        // Non-zero initial LSTM states, so that the first row's steps read them.
        let mut params = init_params(&config, 4);
        let layout = ParamLayout::new(&config);
        for v in 0..layout.vectors.len() {
            for (j, x) in layout.vector_mut(&mut params, v).iter_mut().enumerate() {
                *x += 0.05 * ((j % 7) as f32 - 3.0);
            }
        }
        // More images than one workgroup of the PixelCNN step takes (8).
        let batch = 10;
        let dims = config.dims();
        let net = Network::new(&g, config, batch, &params, Mode::default()).unwrap();
        if let Some(s) = small {
            net.set_small(&bytes(&mut rng(7), batch * s * s * channels))
                .unwrap();
        }
        let original = bytes(&mut rng(8), batch * dims);
        let hole = Occlusion::Rect {
            x: 1,
            y: 2,
            w: 3,
            h: 2,
        };
        for known in [
            vec![false; batch * dims],
            hole.known(config.size, channels).repeat(batch),
        ] {
            let start: Vec<u8> = original
                .iter()
                .zip(&known)
                .map(|(&v, &k)| if k { v } else { 0 })
                .collect();
            for temperature in [0.9, 0.0] {
                let mut plain =
                    Completion::new(&net, start.clone(), known.clone(), temperature, 21).unwrap();
                while !pollster::block_on(plain.advance(&net, 7)).unwrap() {}
                let mut fast =
                    IncrementalSampler::new(&net, start.clone(), known.clone(), temperature, 21)
                        .unwrap();
                while !pollster::block_on(fast.advance(&g, 5)).unwrap() {}
                let (want, got) = (plain.into_images(), fast.into_images());
                let differ = want.iter().zip(&got).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ,
                    0,
                    "{arch}, C = {channels}, small {small:?}, T = {temperature}, {} known: \
                     {differ} sub-pixels differ",
                    known.iter().filter(|&&k| k).count()
                );
                for (i, (&v, &k)) in got.iter().zip(&known).enumerate() {
                    if k {
                        assert_eq!(v, original[i], "known sub-pixel {i} changed");
                    }
                }
            }
        }
    }
}
