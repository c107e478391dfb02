//! The three whole models: GPU against the CPU reference, the CPU reference against
//! finite differences, causality and context on the GPU path (and that the causality
//! test catches broken masks and a wrong right-to-left shift), and masks kept through
//! training.

mod common;

use common::{bytes, gpu, rng, uniform, Tolerance, KERNEL};
use pixelrnn::conv::tap_offset;
use pixelrnn::model::{self, init_params, Arch, Block, ModelConfig, ParamLayout};
use pixelrnn::network::{Defect, Mode, Network};
use pixelrnn::ops::{Optimizer, LEVELS};

fn small(arch: Arch, channels: usize) -> ModelConfig {
    ModelConfig {
        arch,
        channels,
        size: 6,
        layers: 2,
        hidden: 12,
        out_hidden: 16,
        small: None,
    }
}

/// `small(arch, channels)` conditioned on a 3x3 small image (one upsampling layer).
fn conditional(arch: Arch, channels: usize) -> ModelConfig {
    ModelConfig {
        small: Some(3),
        ..small(arch, channels)
    }
}

/// Every model, grey and RGB, unconditional and conditional, and one conditioned on a
/// 2x2 image through two upsampling layers.
fn configs() -> Vec<ModelConfig> {
    let mut all: Vec<ModelConfig> = Arch::ALL
        .into_iter()
        .flat_map(|a| {
            [
                small(a, 1),
                small(a, 3),
                conditional(a, 1),
                conditional(a, 3),
            ]
        })
        .collect();
    all.push(ModelConfig {
        size: 8,
        small: Some(2),
        ..small(Arch::RowLstm, 1)
    });
    all
}

/// Random parameters with non-zero biases and initial states, so that no path is
/// silenced by chance.
fn random_params(config: &ModelConfig, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(config);
    let mut flat = init_params(config, seed);
    let mut r = rng(seed + 1);
    for i in 0..layout.convs.len() {
        let (w, _) = layout.unpack(&flat, i);
        let b: Vec<f32> = uniform(&mut r, layout.convs[i].shape.out_ch)
            .iter()
            .map(|v| 0.1 * v)
            .collect();
        layout.pack_into(&mut flat, i, &w, &b);
    }
    for i in 0..layout.vectors.len() {
        let v = layout.vector_mut(&mut flat, i);
        let noise = uniform(&mut r, v.len());
        v.iter_mut().zip(noise).for_each(|(a, n)| *a += 0.1 * n);
    }
    flat
}

#[test]
fn gpu_loss_and_gradients_match_cpu_reference() {
    let gpu = gpu();
    for config in configs() {
        let (arch, channels) = (config.arch, config.channels);
        let params = random_params(&config, 5);
        let batch = 2;
        let images = bytes(&mut rng(9), batch * config.dims());
        let mode = Mode {
            param_grads: true,
            input_grad: true,
            ..Mode::default()
        };
        let net = Network::new(&gpu, config, batch, &params, mode).unwrap();
        net.set_batch(&images).unwrap();
        net.loss_and_grad();

        let read = |b: &wgpu::Buffer| pollster::block_on(gpu.read_all(b)).unwrap();
        let (nll, dparams, dx) = model::cpu::loss_and_grad(&config, &params, &images);
        let tol = Tolerance {
            rel: 1e-3,
            abs: 1e-6,
        };
        let what = |name: &str| format!("{arch}, C = {channels}, small {:?}: {name}", config.small);
        KERNEL.assert(&what("nll"), &read(&net.nll), &nll);
        tol.assert(&what("dparams"), &read(&net.grads), &dparams);
        tol.assert(&what("dinput"), &read(&net.dinput)[..dx.len()], &dx);

        // A conditional model's gradient w.r.t. its small images, from the same loss.
        if let Some(s) = config.small {
            let small_images = model::subsample(&images, config.size, channels, s);
            let logits = model::cpu::logits_given(&config, &params, &images, &small_images);
            let targets = model::cpu::targets(&images);
            let scale = 1.0 / targets.len() as f32;
            let (_, dlogits) = pixelrnn::ops::cpu::softmax_nll(&logits, &targets, scale);
            let (_, _, dsmall) = model::cpu::backward_from_logits_given(
                &config,
                &params,
                &images,
                &small_images,
                &dlogits,
            );
            let got = read(net.dsmall.as_ref().expect("a small-image gradient"));
            tol.assert(&what("dsmall"), &got, &dsmall);
            assert!(
                dsmall.iter().any(|&d| d != 0.0),
                "{}",
                what("dsmall is zero")
            );
        }
    }
}

/// d(mean NLL)/d(theta) of each CPU reference model against differences of the mean
/// NLL, on a sample of parameters from every tensor.
#[test]
fn cpu_model_gradients_match_finite_differences() {
    for config in Arch::ALL
        .into_iter()
        .flat_map(|a| [small(a, 3), conditional(a, 3)])
    {
        let arch = config.arch;
        let params = random_params(&config, 21);
        let images = bytes(&mut rng(22), config.dims());
        let layout = ParamLayout::new(&config);
        let (_, dparams, _) = model::cpu::loss_and_grad(&config, &params, &images);
        let mean_nll = |p: &[f32]| -> f64 {
            let (nll, _, _) = model::cpu::loss_and_grad(&config, p, &images);
            nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len() as f64
        };

        // Three kept weights and one bias of each convolution, three values of each
        // other tensor.
        let mut indices = Vec::new();
        for (i, c) in layout.convs.iter().enumerate() {
            let s = c.shape;
            let kept: Vec<usize> = (0..s.weight_len())
                .filter(|&j| {
                    s.kept(
                        j / (s.in_ch * s.out_ch),
                        j / s.out_ch % s.in_ch,
                        j % s.out_ch,
                    )
                })
                .collect();
            let flat = |j: usize| layout.offsets[i] + (j / s.out_ch) * c.out_pad + j % s.out_ch;
            for j in [kept[0], kept[kept.len() / 2], kept[kept.len() - 1]] {
                indices.push((layout.conv_names[i].clone(), flat(j)));
            }
            indices.push((
                layout.conv_names[i].clone(),
                layout.offsets[i] + c.bias_offset(),
            ));
        }
        for v in &layout.vectors {
            for j in [0, v.len / 2, v.len - 1] {
                indices.push((v.name.clone(), v.offset + j));
            }
        }

        let h = 1e-3f32;
        let fd = Tolerance {
            rel: 5e-2,
            abs: 2e-4,
        };
        for (name, k) in &indices {
            let at = |d: f32| {
                let mut p = params.clone();
                p[*k] += d;
                mean_nll(&p)
            };
            let (down, mid, up) = (at(-h), at(0.0), at(h));
            // A ReLU switching inside [-h, h] bends the loss; on a side where none
            // switches, the one-sided difference is the gradient.
            let estimates = [
                (up - down) / (2.0 * h as f64),
                (up - mid) / h as f64,
                (mid - down) / h as f64,
            ];
            let g = dparams[*k];
            let close = |e: &f64| (g - *e as f32).abs() <= fd.abs + fd.rel * (*e as f32).abs();
            assert!(
                estimates.iter().any(close),
                "{arch}, small {:?}: {name} value {k}: gradient {g}, finite differences \
                 {estimates:?}",
                config.small
            );
        }
        assert_eq!(
            indices.len(),
            4 * layout.convs.len() + 3 * layout.vectors.len()
        );
    }
}

/// Sub-pixel (row, col, colour) of a size x size x C image, in raster order then R, G, B.
fn order(row: usize, col: usize, colour: usize, config: &ModelConfig) -> usize {
    (row * config.size + col) * config.channels + colour
}

/// Which input sub-pixels each sub-pixel's logits have a non-zero derivative towards:
/// `any[t][i]` when at least one of the 256 logits of sub-pixel t does, `all[t][i]`
/// when every live one does. A logit is dead when the output stack's ReLUs are all
/// off on its every path, so that it depends on no input at all; `dead` counts those.
struct Dependence {
    any: Vec<Vec<bool>>,
    all: Vec<Vec<bool>>,
    dead: usize,
    /// For a conditional model, `small[t][j]` when a logit of sub-pixel t depends on
    /// sub-pixel j of the small image.
    small: Vec<Vec<bool>>,
}

/// The 256 logits of one sub-pixel are differentiated at once, one per image of a
/// batch of 256 copies of the same random image, on the GPU.
/// With `stop_at_leak`, it stops at the first sub-pixel whose logits see their own or a
/// later input.
fn dependence(
    config: &ModelConfig,
    params: &[f32],
    defect: Option<Defect>,
    stop_at_leak: bool,
) -> Dependence {
    let gpu = gpu();
    let batch = LEVELS;
    let image = bytes(&mut rng(32), config.dims());
    let mode = Mode {
        input_grad: true,
        defect,
        ..Mode::default()
    };
    let net = Network::new(&gpu, *config, batch, params, mode).unwrap();
    net.set_batch(&image.repeat(batch)).unwrap();
    let dims = config.dims();
    let small_dims = config.small.map_or(0, |s| s * s * config.channels);
    let mut dep = Dependence {
        any: vec![vec![false; dims]; dims],
        all: vec![vec![true; dims]; dims],
        dead: 0,
        small: vec![vec![false; small_dims]; dims],
    };
    for target in 0..dims {
        // Image b back-propagates from logit b of the target sub-pixel.
        let mut dlogits = vec![0.0f32; batch * dims * LEVELS];
        for b in 0..batch {
            dlogits[(b * dims + target) * LEVELS + b] = 1.0;
        }
        gpu.queue
            .write_buffer(&net.dlogits, 0, bytemuck::cast_slice(&dlogits));
        net.backward_from_dlogits();
        let dx = pollster::block_on(gpu.read_all(&net.dinput)).unwrap();
        if let Some(dsmall) = &net.dsmall {
            let ds = pollster::block_on(gpu.read_all(dsmall)).unwrap();
            for seen in ds.chunks(small_dims) {
                for (j, &d) in seen.iter().enumerate() {
                    dep.small[target][j] |= d != 0.0;
                }
            }
        }
        for b in 0..batch {
            let seen = &dx[b * dims..][..dims];
            if seen.iter().all(|&d| d == 0.0) {
                dep.dead += 1;
                continue;
            }
            for (i, &d) in seen.iter().enumerate() {
                dep.any[target][i] |= d != 0.0;
                dep.all[target][i] &= d != 0.0;
            }
        }
        if stop_at_leak && dep.any[target][target..].iter().any(|&d| d) {
            break;
        }
    }
    dep
}

impl Dependence {
    /// The first (sub-pixel, input) pair where a logit sees its own or a later input.
    fn first_leak(&self) -> Option<(usize, usize)> {
        (0..self.any.len()).find_map(|t| {
            (t..self.any.len())
                .find(|&i| self.any[t][i])
                .map(|i| (t, i))
        })
    }
}

/// `params` with the output stack's hidden biases at one, so that its ReLUs are
/// mostly on and few logits lose every path to the input.
fn live_output(config: &ModelConfig, params: &[f32]) -> Vec<f32> {
    let layout = ParamLayout::new(config);
    let i = layout.convs.len() - 2;
    let (w, b) = layout.unpack(params, i);
    let mut out = params.to_vec();
    layout.pack_into(&mut out, i, &w, &vec![1.0; b.len()]);
    out
}

/// Parameters with every weight of convolution `conv` set, masked or not: a broken mask.
fn unmasked(config: &ModelConfig, params: &[f32], conv: usize) -> Vec<f32> {
    let layout = ParamLayout::new(config);
    let (w, b) = layout.unpack(params, conv);
    let mut r = rng(77);
    let w: Vec<f32> = w
        .iter()
        .zip(uniform(&mut r, w.len()))
        .map(|(_, n)| 0.5 * n)
        .collect();
    let mut out = params.to_vec();
    layout.pack_into(&mut out, conv, &w, &b);
    out
}

/// For every model and sub-pixel, every one of its 256 logits has exactly zero
/// derivative with respect to every input value at or after that sub-pixel.
///
/// So that this cannot pass on a network that sees nothing, each model must also see
/// its context: every Diagonal BiLSTM logit depends on every earlier sub-pixel but one
/// (the last of the previous row, for pixels more than three columns from the right
/// edge: see the test body), and is shown not to see that one; every Row LSTM logit on its pixel's earlier colours, the pixel to
/// its left and the triangle above (rows r - d, columns c - d to c + d); PixelCNN,
/// whose ReLUs may switch a few paths off in a small random network, must have nearly
/// every sub-pixel after the first see something earlier. (In the LSTM models, the
/// output stack's ReLUs can leave a logit seeing nothing at all: its hidden biases
/// are set to one to make that rare, at most 2% of the logits after the first
/// sub-pixel's may be such dead logits, and every other one must see its whole
/// context.)
///
/// And so that it is known to catch faults, it must fail for models with a broken
/// mask (the first layer's, or an LSTM's input-to-state) and for a Diagonal BiLSTM
/// whose right-to-left output is shifted up instead of down, or not at all.
#[test]
fn gpu_models_are_causal_and_see_their_context() {
    for (arch, channels) in Arch::ALL.into_iter().flat_map(|a| [(a, 3), (a, 1)]) {
        let config = small(arch, channels);
        let params = random_params(&config, 31);
        let dep = dependence(&config, &live_output(&config, &params), None, false);
        let name = format!("{arch}, C = {channels}");
        if let Some((t, i)) = dep.first_leak() {
            panic!("{name}: a logit of sub-pixel {t} depends on input sub-pixel {i}");
        }

        let dims = config.dims();
        let (n, c) = (config.size, channels);
        // The first sub-pixel's logits see nothing, by design.
        let dead = dep.dead - LEVELS;
        assert!(
            dead * 50 <= (dims - 1) * LEVELS,
            "{name}: {dead} of {} logits see nothing",
            (dims - 1) * LEVELS
        );
        match arch {
            Arch::PixelCnn => {
                let with_context = (1..dims)
                    .filter(|&t| dep.any[t][..t].iter().any(|&d| d))
                    .count();
                let need = (dims - 1) * 9 / 10;
                assert!(
                    with_context >= need,
                    "{name}: only {with_context} of {} sub-pixels see their context",
                    dims - 1
                );
            }
            Arch::DiagBiLstm => {
                for t in 0..dims {
                    let (row, col) = (t / c / n, t / c % n);
                    // The one exception: the last sub-pixel of the previous row is seen
                    // only by the positions after it, on this row; the left-to-right
                    // LSTM brings it from those at most 3 columns left (the 7x7 layer's
                    // reach), and the right-to-left one only from the row above.
                    let blind =
                        (row > 0 && col + 3 < n - 1).then(|| order(row - 1, n - 1, c - 1, &config));
                    for i in 0..t {
                        if Some(i) == blind {
                            assert!(
                                !dep.any[t][i],
                                "{name}: sub-pixel {t} sees {i}, thought blind"
                            );
                        } else {
                            assert!(
                                dep.all[t][i],
                                "{name}: not every logit of sub-pixel {t} sees input sub-pixel {i}"
                            );
                        }
                    }
                }
            }
            Arch::RowLstm => {
                for (row, col, colour) in
                    (0..n).flat_map(|r| (0..n).flat_map(move |q| (0..c).map(move |k| (r, q, k))))
                {
                    let t = order(row, col, colour, &config);
                    let mut context: Vec<usize> =
                        (0..colour).map(|k| order(row, col, k, &config)).collect();
                    let mut pixels = Vec::new();
                    if col > 0 {
                        pixels.push((row, col - 1));
                    }
                    for d in 1..=row {
                        let lo = col.saturating_sub(d);
                        let hi = (col + d).min(n - 1);
                        pixels.extend((lo..=hi).map(|q| (row - d, q)));
                    }
                    context.extend(
                        pixels
                            .into_iter()
                            .flat_map(|(r, q)| (0..c).map(move |k| (r, q, k)))
                            .map(|(r, q, k)| order(r, q, k, &config)),
                    );
                    for i in context {
                        assert!(dep.all[t][i], "{name}: not every logit of ({row}, {col}, {colour}) sees input sub-pixel {i}");
                    }
                }
            }
        }
    }

    // Faults the test must catch, in RGB.
    for arch in Arch::ALL {
        let config = small(arch, 3);
        let params = random_params(&config, 31);
        let layout = ParamLayout::new(&config);
        let mut faults = vec![("unmasked first layer", unmasked(&config, &params, 0), None)];
        if let Some(Block::Recurrent { dirs, .. }) = layout.blocks.first() {
            let kis = unmasked(&config, &params, dirs[0].kis);
            faults.push(("unmasked input-to-state", kis, None));
        }
        if arch == Arch::DiagBiLstm {
            for (what, shift) in [
                ("right-to-left shifted up", -1),
                ("right-to-left not shifted", 0),
            ] {
                faults.push((what, params.clone(), Some(Defect::RightToLeftShift(shift))));
            }
        }
        for (what, p, defect) in faults {
            let dep = dependence(&config, &p, defect, true);
            assert!(
                dep.first_leak().is_some(),
                "{arch} with {what} passes the causality test"
            );
        }
    }

    // The taps themselves never reach below or right of the centre.
    for k in [1, 3, 7] {
        let taps = (k / 2) * k + k / 2 + 1;
        for t in 0..taps {
            let (dy, dx) = tap_offset(t, k);
            assert!(
                dy < 0 || (dy == 0 && dx <= 0),
                "tap {t} of {k}x{k} is {dy},{dx}"
            );
        }
    }
}

/// A conditional model (the Multi-Scale PixelRNN's second stage) may see the whole
/// small image, but the full image only through its masks: no logit has a non-zero
/// derivative towards its own or a later sub-pixel of the full image; every
/// sub-pixel of the small image is seen by some logit, the first sub-pixel's logits
/// (which see nothing of the full image) see the small image, and pixel (1, 1) sees
/// the small pixel of full pixel (2, 2), a future the conditioning reveals.
#[test]
fn gpu_conditional_models_are_causal_and_see_the_small_image() {
    for arch in Arch::ALL {
        let config = conditional(arch, 3);
        let params = random_params(&config, 33);
        let dep = dependence(&config, &live_output(&config, &params), None, false);
        let name = format!("conditional {arch}");
        if let Some((t, i)) = dep.first_leak() {
            panic!("{name}: a logit of sub-pixel {t} depends on input sub-pixel {i}");
        }
        let s = config.small.unwrap();
        let c = config.channels;
        for j in 0..s * s * c {
            assert!(
                dep.small.iter().any(|seen| seen[j]),
                "{name}: no logit sees small-image sub-pixel {j}"
            );
        }
        assert!(
            dep.small[0].iter().any(|&d| d),
            "{name}: the first sub-pixel does not see the small image"
        );
        // Small pixel (1, 1) is full pixel (2, 2), after pixel (1, 1), whose term
        // the upsampling computes from it.
        let ahead = (s + 1) * c;
        assert!(
            (0..c).any(|k| dep.small[order(1, 1, k, &config)][ahead]),
            "{name}: pixel (1, 1) does not see small pixel (1, 1)"
        );
    }
}

/// Masked weights are zero after initialisation and stay exactly zero through
/// training with either optimizer, and training lowers the loss.
#[test]
fn masked_weights_stay_zero_through_training() {
    let gpu = gpu();
    let runs = Arch::ALL.into_iter().flat_map(|a| {
        [
            (small(a, 3), Optimizer::rmsprop(1e-3)),
            (small(a, 3), Optimizer::adam(1e-3)),
            (conditional(a, 3), Optimizer::rmsprop(1e-3)),
        ]
    });
    for (config, optimizer) in runs {
        let arch = config.arch;
        let layout = ParamLayout::new(&config);
        let params = init_params(&config, 41);
        let batch = 4;
        let images = bytes(&mut rng(42), batch * config.dims());
        let mode = Mode {
            optimizer: Some(optimizer),
            ..Mode::default()
        };
        let mut net = Network::new(&gpu, config, batch, &params, mode).unwrap();
        net.set_batch(&images).unwrap();
        net.train_step();
        let first = pollster::block_on(net.take_mean_loss(1)).unwrap();
        for _ in 0..20 {
            net.train_step();
        }
        let last = pollster::block_on(net.take_mean_loss(20)).unwrap();
        assert!(
            last < first,
            "{arch}, {}: loss went from {first} to {last}",
            optimizer.name()
        );

        let trained = pollster::block_on(net.read_params()).unwrap();
        let mut masked = 0;
        let mut moved = 0;
        for (i, c) in layout.convs.iter().enumerate() {
            let s = c.shape;
            let (w, _) = layout.unpack(&trained, i);
            let (w0, _) = layout.unpack(&params, i);
            for (j, (&v, &v0)) in w.iter().zip(&w0).enumerate() {
                let (t, ci, co) = (
                    j / (s.in_ch * s.out_ch),
                    j / s.out_ch % s.in_ch,
                    j % s.out_ch,
                );
                if !s.kept(t, ci, co) {
                    assert_eq!(v, 0.0, "masked weight {j} of conv {i} became {v}");
                    masked += 1;
                } else if v != v0 {
                    moved += 1;
                }
            }
        }
        assert!(masked > 0 && moved > 0, "masked {masked}, moved {moved}");
    }
}
