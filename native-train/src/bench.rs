//! `pixelrnn bench`: one training step of each model on Fashion-MNIST-sized batches, at
//! the same depth and h, on the GPU and on the CPU reference, measured side by side in
//! one run; and PixelCNN's convolution kernels alone.

use std::time::Instant;

use anyhow::Context;
use pixelrnn::gpu::{self, Dispatch, Gpu, GpuOptions};
use pixelrnn::incremental::IncrementalSampler;
use pixelrnn::model::{self, init_params, Arch, ModelConfig, ParamLayout};
use pixelrnn::network::{Mode, Network};
use pixelrnn::ops::Optimizer;
use pixelrnn::sample::Completion;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{BenchArgs, BenchTarget, Model};

/// Median seconds of `reps` runs of `f`, after one warm-up run.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The benchmarked model of `arch`: Fashion-MNIST-sized, at the flags' depth and width.
fn shape(arch: Arch, a: &BenchArgs) -> ModelConfig {
    ModelConfig {
        arch,
        channels: 1,
        size: 28,
        layers: a.layers,
        hidden: a.hidden,
        out_hidden: a.out_hidden,
        small: None,
    }
}

/// Submits `dispatches` in one command buffer and waits for the GPU.
fn run_and_wait(gpu: &Gpu, dispatches: &[Dispatch]) {
    gpu::submit(gpu, &[dispatches]);
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("device lost");
}

/// One model's training step: GPU and CPU reference seconds, and the step's
/// multiply-adds, with PixelCNN's convolution kernels timed alone.
struct Measured {
    config: ModelConfig,
    /// The model's name and title: the architecture's, or the multi-scale model's.
    name: &'static str,
    title: &'static str,
    /// Trainable values (both stages' for the multi-scale model).
    parameters: usize,
    gpu_step: f64,
    cpu_step: f64,
    /// Multiply-adds of one training step of the batch: forward, and the backward
    /// pass's two (input and weight gradients).
    step_macs: usize,
    /// Seconds of the forward, weight-gradient and input-gradient convolutions, and
    /// their multiply-adds.
    kernels: Option<[(f64, usize); 3]>,
}

fn measure(gpu: &Gpu, config: ModelConfig, a: &BenchArgs) -> anyhow::Result<Measured> {
    config.validate()?;
    let params = init_params(&config, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let images: Vec<u8> = (0..a.batch * config.dims()).map(|_| rng.random()).collect();
    let mode = Mode {
        optimizer: Some(Optimizer::rmsprop(1e-4)),
        ..Mode::default()
    };
    let mut net = Network::new(gpu, config, a.batch, &params, mode)?;
    net.set_batch(&images)?;

    // Whole GPU training step: forward, loss, backward, update; one submission.
    let gpu_step = median_secs(a.reps, || {
        net.train_step();
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device lost");
    });

    // PixelCNN's convolution kernels alone, each pass in its own submission.
    let k = net.conv_kernels.clone();
    let kernels = (config.arch == Arch::PixelCnn).then(|| {
        [
            (
                median_secs(a.reps, || run_and_wait(gpu, &k.forward)),
                k.forward_macs,
            ),
            (
                median_secs(a.reps, || run_and_wait(gpu, &k.weight_grad)),
                k.forward_macs,
            ),
            (
                median_secs(a.reps, || run_and_wait(gpu, &k.input_grad)),
                k.input_grad_macs,
            ),
        ]
    });

    // The same step on the CPU reference: loss, gradients and the RMSProp update.
    let layout = ParamLayout::new(&config);
    let mut theta = params.clone();
    let (mut m, mut v) = (vec![0.0; layout.len], vec![0.0; layout.len]);
    let cpu_reps = a.reps.clamp(1, 3);
    let mut t = 0;
    let cpu_step = median_secs(cpu_reps, || {
        t += 1;
        let (_, grad, _) = model::cpu::loss_and_grad(&config, &theta, &images);
        Optimizer::rmsprop(1e-4).step_cpu(t, &mut theta, &grad, &mut m, &mut v);
    });

    Ok(Measured {
        config,
        name: config.arch.name(),
        title: config.arch.title(),
        parameters: config.parameters(),
        gpu_step,
        cpu_step,
        step_macs: 3 * config.forward_macs() * a.batch,
        kernels,
    })
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let options = GpuOptions {
        subgroups: !a.portable,
    };
    let gpu = pollster::block_on(Gpu::with_options(options))?;
    let models = if a.model.is_empty() {
        vec![
            Model::Pixelcnn,
            Model::RowLstm,
            Model::DiagBilstm,
            Model::Multiscale,
        ]
    } else {
        a.model.clone()
    };
    if a.target == BenchTarget::Sample {
        return sampling(&gpu, &models, &a);
    }
    let mut measured = Vec::new();
    for m in models {
        let Some(arch) = m.arch() else {
            // Both stages' steps, on the same batch.
            let [small, full] = multiscale_shapes(&a);
            let (first, second) = (measure(&gpu, small, &a)?, measure(&gpu, full, &a)?);
            measured.push(Measured {
                name: "multiscale",
                title: "Multi-Scale PixelRNN",
                parameters: first.parameters + second.parameters,
                gpu_step: first.gpu_step + second.gpu_step,
                cpu_step: first.cpu_step + second.cpu_step,
                step_macs: first.step_macs + second.step_macs,
                ..second
            });
            continue;
        };
        measured.push(measure(&gpu, shape(arch, &a), &a)?);
    }
    let torch = match measured.iter().any(|m| m.config.arch == Arch::PixelCnn) {
        true if a.vs_torch => torch_step(&a)?,
        _ => None,
    };
    let gflops = |macs: usize, secs: f64| 2.0 * macs as f64 / secs / 1e9;
    let images_per_s = |secs: f64| a.batch as f64 / secs;

    let models: Vec<_> = measured
        .iter()
        .map(|m| {
            let mut o = serde_json::json!({
                "model": m.name,
                "parameters": m.parameters,
                "gpu_step_s": m.gpu_step,
                "gpu_images_per_s": images_per_s(m.gpu_step),
                "gpu_step_gflops": gflops(m.step_macs, m.gpu_step),
                "cpu_reference_step_s": m.cpu_step,
                "cpu_reference_images_per_s": images_per_s(m.cpu_step),
                "gpu_vs_cpu_reference": m.cpu_step / m.gpu_step,
            });
            if let Some([f, w, i]) = m.kernels {
                o["conv_forward_gflops"] = gflops(f.1, f.0).into();
                o["conv_weight_grad_gflops"] = gflops(w.1, w.0).into();
                o["conv_input_grad_gflops"] = gflops(i.1, i.0).into();
                o["torch_step_s"] = torch.into();
                o["gpu_vs_torch"] = torch.map(|t| t / m.gpu_step).into();
            }
            o
        })
        .collect();
    let report = serde_json::json!({
        "adapter": format!("{} ({:?})", gpu.adapter_info.name, gpu.adapter_info.backend),
        "subgroup_kernels": gpu.subgroups(),
        "shape": { "layers": a.layers, "hidden": a.hidden, "out_hidden": a.out_hidden,
                   "batch": a.batch, "size": 28, "channels": 1 },
        "models": models,
    });
    if a.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "training step, batch {} of 28x28x1, {} layers, h = {}, output {} maps",
        a.batch, a.layers, a.hidden, a.out_hidden
    );
    println!(
        "adapter: {}, {} convolution kernels",
        report["adapter"].as_str().unwrap_or("?"),
        if gpu.subgroups() {
            "subgroup"
        } else {
            "portable"
        }
    );
    println!(
        "{:<34} {:>10} {:>12} {:>10}",
        "", "ms", "images/s", "GFLOP/s"
    );
    let row = |name: &str, secs: f64, macs: Option<usize>| {
        let rate = macs.map_or(String::new(), |m| format!("{:.2}", gflops(m, secs)));
        let per_s = if name.starts_with("conv") {
            String::new()
        } else {
            format!("{:.1}", images_per_s(secs))
        };
        println!("{name:<34} {:>10.2} {per_s:>12} {rate:>10}", secs * 1e3);
    };
    for m in &measured {
        let title = m.title;
        row(&format!("{title}: GPU step"), m.gpu_step, Some(m.step_macs));
        row(
            &format!("{title}: CPU reference"),
            m.cpu_step,
            Some(m.step_macs),
        );
    }
    if let Some(t) = torch {
        row("PixelCNN: PyTorch step (CPU)", t, None);
    }
    for m in &measured {
        if let Some([f, w, i]) = m.kernels {
            row("conv forward", f.0, Some(f.1));
            row("conv weight gradient", w.0, Some(w.1));
            row("conv input gradient", i.0, Some(i.1));
        }
    }
    let fastest = measured
        .iter()
        .map(|m| m.gpu_step)
        .fold(f64::INFINITY, f64::min);
    for m in &measured {
        println!(
            "{}: GPU step {:.1}x the CPU reference, {:.2}x the fastest model's time",
            m.title,
            m.cpu_step / m.gpu_step,
            m.gpu_step / fastest
        );
    }
    if let (Some(t), Some(m)) = (torch, measured.iter().find(|m| m.kernels.is_some())) {
        println!(
            "PixelCNN GPU step is {:.2}x PyTorch on this CPU",
            t / m.gpu_step
        );
    }
    Ok(())
}

/// `bench sample`: for each model, milliseconds per image of sampling a batch with the
/// plain sampler (timed over the first row of sub-pixels; every step costs the same
/// whole forward pass) and with the incremental one (timed whole), and of one forward
/// pass of the batch, in one run.
/// Seconds per image of the plain and the incremental sampler and of one forward pass
/// of the batch, for `config` (given random small images when it is conditional).
fn time_sampling(gpu: &Gpu, config: ModelConfig, a: &BenchArgs) -> anyhow::Result<[f64; 3]> {
    config.validate()?;
    let params = init_params(&config, 0);
    let net = Network::new(gpu, config, a.batch, &params, Mode::default())?;
    let dims = config.dims();
    let blank = vec![0u8; a.batch * dims];
    let wait = || {
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device lost");
    };
    net.set_images(&blank)?;
    if let Some(s) = config.small {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let small: Vec<u8> = (0..a.batch * s * s * config.channels)
            .map(|_| rng.random())
            .collect();
        net.set_small(&small)?;
    }
    let forward = median_secs(a.reps, || {
        net.forward_logits();
        wait();
    });

    let steps = config.size * config.channels;
    let mut plain = Completion::new(&net, blank.clone(), vec![false; blank.len()], 1.0, 0)?;
    let t = Instant::now();
    pollster::block_on(plain.advance(&net, steps))?;
    let naive = t.elapsed().as_secs_f64() / steps as f64 * dims as f64 / a.batch as f64;

    let mut fast = IncrementalSampler::new(&net, blank.clone(), vec![false; blank.len()], 1.0, 0)?;
    let t = Instant::now();
    pollster::block_on(fast.advance(gpu, dims))?;
    let incremental = t.elapsed().as_secs_f64() / a.batch as f64;
    Ok([naive, incremental, forward])
}

/// The Multi-Scale PixelRNN benchmarked: Row LSTMs, a 14x14 first stage and a 28x28
/// second stage given it, at the flags' depth and width.
fn multiscale_shapes(a: &BenchArgs) -> [ModelConfig; 2] {
    let full = ModelConfig {
        small: Some(14),
        ..shape(Arch::RowLstm, a)
    };
    [
        ModelConfig {
            size: 14,
            ..shape(Arch::RowLstm, a)
        },
        full,
    ]
}

fn sampling(gpu: &Gpu, models: &[Model], a: &BenchArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &m in models {
        let configs = match m.arch() {
            Some(arch) => vec![shape(arch, a)],
            None => multiscale_shapes(a).to_vec(),
        };
        // A multi-scale image costs both stages: each one's times are added.
        let mut t = [0.0; 3];
        for config in configs {
            let stage = time_sampling(gpu, config, a)?;
            t.iter_mut().zip(stage).for_each(|(a, b)| *a += b);
        }
        let [naive, incremental, forward] = t;
        let name = m.arch().map_or("multiscale", |arch| arch.name());
        rows.push(serde_json::json!({
            "model": name,
            "batch": a.batch,
            "naive_ms_per_image": naive * 1e3,
            "incremental_ms_per_image": incremental * 1e3,
            "speedup": naive / incremental,
            "forward_ms": forward * 1e3,
        }));
    }
    if a.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "sampling a batch of {} 28x28x1 images, {} layers, h = {}, output {} maps \
         (multiscale: Row LSTMs, 14x14 then 28x28, both stages' times added)",
        a.batch, a.layers, a.hidden, a.out_hidden
    );
    println!(
        "{:<18} {:>14} {:>14} {:>9} {:>12}",
        "", "naive ms/img", "incr. ms/img", "speedup", "forward ms"
    );
    for r in &rows {
        let num = |k: &str, p: usize| {
            r[k].as_f64()
                .map_or("-".to_string(), |v| format!("{v:.p$}"))
        };
        println!(
            "{:<18} {:>14} {:>14} {:>9} {:>12}",
            r["model"].as_str().unwrap_or("?"),
            num("naive_ms_per_image", 1),
            num("incremental_ms_per_image", 1),
            num("speedup", 1),
            num("forward_ms", 2)
        );
    }
    Ok(())
}

/// Seconds per step of the same model in PyTorch, or None when PyTorch is missing.
fn torch_step(a: &BenchArgs) -> anyhow::Result<Option<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/torch_bench.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            "--layers",
            &a.layers.to_string(),
            "--hidden",
            &a.hidden.to_string(),
        ])
        .args([
            "--out-hidden",
            &a.out_hidden.to_string(),
            "--batch",
            &a.batch.to_string(),
        ])
        .args(["--reps", &a.reps.to_string()])
        .output()
        .context("cannot run python3 for --vs-torch")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        println!(
            "--vs-torch: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("PyTorch run failed")
        );
        return Ok(None);
    }
    let secs: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("torch_bench.py printed '{}'", text.trim()))?;
    Ok(Some(secs))
}
