//! Sampling and completion: draws follow the softmax, the sampler conditions every
//! draw on what came before, known sub-pixels stay known, and seeds repeat.

mod common;

use common::{bytes, gpu, rng};
use pixelrnn::model::{self, init_params, Arch, ModelConfig};
use pixelrnn::network::{Mode, Network};
use pixelrnn::ops::LEVELS;
use pixelrnn::sample::{complete, draw, sample, Completion, Occlusion};
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
        temperature,
        seed,
        |_, _| {},
    ))
    .unwrap();

    for i in 0..images.len() {
        if known[i] {
            assert_eq!(images[i], original[i], "known sub-pixel {i} changed");
        }
    }
    let logits = model::cpu::logits(&config, &params, &images);
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let open = (0..dims).filter(|&i| (0..batch).any(|b| !known[b * dims + i]));
    let mut drawn = 0;
    for i in open {
        for b in 0..batch {
            let u: f32 = r.random();
            let at = b * dims + i;
            if !known[at] {
                let want = draw(&logits[at * LEVELS..][..LEVELS], temperature, u);
                assert_eq!(images[at], want, "{arch}: image {b}, sub-pixel {i}");
                drawn += 1;
            }
        }
    }
    assert_eq!(drawn, known.iter().filter(|&&k| !k).count());

    // The same seed draws the same images; another seed others.
    let again = pollster::block_on(sample(&net, 1.0, 3, |_, _| {})).unwrap();
    let same = pollster::block_on(sample(&net, 1.0, 3, |_, _| {})).unwrap();
    let other = pollster::block_on(sample(&net, 1.0, 4, |_, _| {})).unwrap();
    assert_eq!(again, same);
    assert_ne!(again, other);
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
    };
    let params = init_params(&config, 2);
    let g = gpu();
    let net = Network::new(&g, config, 2, &params, Mode::default()).unwrap();
    let whole = pollster::block_on(sample(&net, 1.0, 9, |_, _| {})).unwrap();

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
