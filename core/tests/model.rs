//! The whole PixelCNN: GPU against the CPU reference, the CPU reference against finite
//! differences, causality on the GPU path, and masks kept through training.

mod common;

use common::{bytes, gpu, rng, uniform, Tolerance, KERNEL};
use pixelrnn::conv::tap_offset;
use pixelrnn::model::{self, init_params, ParamLayout, ModelConfig};
use pixelrnn::network::{Mode, Network};
use pixelrnn::ops::{Optimizer, LEVELS};

fn small(channels: usize) -> ModelConfig {
    ModelConfig {
        channels,
        size: 6,
        layers: 2,
        hidden: 12,
        out_hidden: 16,
    }
}

/// Random parameters with non-zero biases, so that no path is silenced by chance.
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
    flat
}

#[test]
fn gpu_loss_and_gradients_match_cpu_reference() {
    let gpu = gpu();
    for channels in [1, 3] {
        let config = small(channels);
        let params = random_params(&config, 5);
        let batch = 2;
        let images = bytes(&mut rng(9), batch * config.dims());
        let mode = Mode {
            optimizer: None,
            param_grads: true,
            input_grad: true,
        };
        let net = Network::new(&gpu, config, batch, &params, mode).unwrap();
        net.set_images(&images).unwrap();
        net.loss_and_grad();

        let read = |b: &wgpu::Buffer| pollster::block_on(gpu.read_all(b)).unwrap();
        let (nll, dparams, dx) = model::cpu::loss_and_grad(&config, &params, &images);
        let tol = Tolerance {
            rel: 1e-3,
            abs: 1e-6,
        };
        KERNEL.assert("nll", &read(&net.nll), &nll);
        tol.assert("dparams", &read(&net.grads), &dparams);
        tol.assert("dinput", &read(&net.dinput)[..dx.len()], &dx);
    }
}

/// d(mean NLL)/d(theta) of the CPU reference model against differences of the mean
/// NLL, on a sample of parameters from every convolution.
#[test]
fn cpu_model_gradients_match_finite_differences() {
    let config = small(3);
    let params = random_params(&config, 21);
    let images = bytes(&mut rng(22), config.dims());
    let layout = ParamLayout::new(&config);
    let (_, dparams, _) = model::cpu::loss_and_grad(&config, &params, &images);
    let mean_nll = |p: &[f32]| -> f64 {
        let (nll, _, _) = model::cpu::loss_and_grad(&config, p, &images);
        nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len() as f64
    };
    let h = 1e-3f32;
    let fd = Tolerance {
        rel: 5e-2,
        abs: 2e-4,
    };
    let mut checked = 0;
    for (i, c) in layout.convs.iter().enumerate() {
        let (w, _) = layout.unpack(&params, i);
        // Three kept weights and one bias of each convolution.
        let s = c.shape;
        let kept: Vec<usize> = (0..w.len())
            .filter(|&j| {
                s.kept(
                    j / (s.in_ch * s.out_ch),
                    j / s.out_ch % s.in_ch,
                    j % s.out_ch,
                )
            })
            .collect();
        let picks = [kept[0], kept[kept.len() / 2], kept[kept.len() - 1]];
        let flat_index = |j: usize| layout.offsets[i] + (j / s.out_ch) * c.out_pad + j % s.out_ch;
        let mut indices: Vec<usize> = picks.iter().map(|&j| flat_index(j)).collect();
        indices.push(layout.offsets[i] + c.bias_offset());
        for k in indices {
            let at = |d: f32| {
                let mut p = params.clone();
                p[k] += d;
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
            let g = dparams[k];
            let close = |e: &f64| (g - *e as f32).abs() <= fd.abs + fd.rel * (*e as f32).abs();
            assert!(
                estimates.iter().any(close),
                "conv {i} param {k}: gradient {g}, finite differences {estimates:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * layout.convs.len());
}

/// Sub-pixel (row, col, colour) of a size x size x C image, in raster order then R, G, B.
fn order(row: usize, col: usize, colour: usize, config: &ModelConfig) -> usize {
    (row * config.size + col) * config.channels + colour
}

/// For every sub-pixel, every one of its 256 logits has exactly zero derivative with
/// respect to every input value at or after that sub-pixel. So that this cannot pass
/// on a network that sees nothing, nearly every sub-pixel after the first must also
/// have a non-zero derivative towards some earlier input (a few may lose theirs to
/// ReLUs that are off at that pixel in a small random network). The 256 logits of one sub-pixel are differentiated at once, one per
/// image of a batch of 256 copies of the same random image, on the GPU.
#[test]
fn gpu_pixelcnn_is_causal() {
    let gpu = gpu();
    for channels in [3, 1] {
        let config = small(channels);
        let params = random_params(&config, 31);
        let batch = LEVELS;
        let image = bytes(&mut rng(32), config.dims());
        let images = image.repeat(batch);
        let mode = Mode {
            optimizer: None,
            param_grads: false,
            input_grad: true,
        };
        let net = Network::new(&gpu, config, batch, &params, mode).unwrap();
        net.set_images(&images).unwrap();
        let dims = config.dims();
        let c = channels;
        let mut with_context = 0;

        for row in 0..config.size {
            for col in 0..config.size {
                for colour in 0..c {
                    let target = order(row, col, colour, &config);
                    let pixel = row * config.size + col;

                    // Image b back-propagates from logit b of the target sub-pixel.
                    let mut dlogits = vec![0.0f32; batch * dims * LEVELS];
                    for b in 0..batch {
                        let at = ((b * config.size * config.size + pixel) * c + colour) * LEVELS;
                        dlogits[at + b] = 1.0;
                    }
                    gpu.queue
                        .write_buffer(&net.dlogits, 0, bytemuck::cast_slice(&dlogits));
                    net.backward_from_dlogits();
                    let dx = pollster::block_on(gpu.read_all(&net.dinput)).unwrap();

                    let mut context = false;
                    for b in 0..batch {
                        for i in 0..dims {
                            let d = dx[b * dims + i];
                            if i >= target {
                                assert_eq!(
                                    d, 0.0,
                                    "logit {b} of sub-pixel ({row}, {col}, {colour}) depends \
                                     on input sub-pixel {i} (C = {c})"
                                );
                            } else if d != 0.0 {
                                context = true;
                            }
                        }
                    }
                    with_context += context as usize;
                }
            }
        }
        let need = (dims - 1) * 9 / 10;
        assert!(
            with_context >= need,
            "only {with_context} of {} sub-pixels see their context (C = {c})",
            dims - 1
        );
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

/// Masked weights are zero after initialisation and stay exactly zero through
/// training with either optimizer, and training lowers the loss.
#[test]
fn masked_weights_stay_zero_through_training() {
    let gpu = gpu();
    for optimizer in [Optimizer::rmsprop(1e-3), Optimizer::adam(1e-3)] {
        let config = small(3);
        let layout = ParamLayout::new(&config);
        let params = init_params(&config, 41);
        let batch = 4;
        let images = bytes(&mut rng(42), batch * config.dims());
        let mode = Mode {
            optimizer: Some(optimizer),
            ..Mode::default()
        };
        let mut net = Network::new(&gpu, config, batch, &params, mode).unwrap();
        net.set_images(&images).unwrap();
        net.train_step();
        let first = pollster::block_on(net.take_mean_loss(1)).unwrap();
        for _ in 0..20 {
            net.train_step();
        }
        let last = pollster::block_on(net.take_mean_loss(20)).unwrap();
        assert!(
            last < first,
            "{}: loss went from {first} to {last}",
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
