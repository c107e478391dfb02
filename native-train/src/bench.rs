//! `pixelrnn bench`: one PixelCNN training step on Fashion-MNIST-sized batches, on the
//! GPU and on the CPU reference, measured side by side in one run.

use std::time::Instant;

use anyhow::Context;
use pixelrnn::gpu::{self, Dispatch, Gpu, GpuOptions};
use pixelrnn::model::{self, init_params, ParamLayout, PixelCnnConfig};
use pixelrnn::network::{Mode, Network};
use pixelrnn::ops::Optimizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::BenchArgs;

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

/// Submits `dispatches` in one command buffer and waits for the GPU.
fn run_and_wait(gpu: &Gpu, dispatches: &[Dispatch]) {
    gpu::submit(gpu, &[dispatches]);
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("device lost");
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let config = PixelCnnConfig {
        channels: 1,
        size: 28,
        layers: a.layers,
        hidden: a.hidden,
        out_hidden: a.out_hidden,
    };
    config.validate()?;
    let options = GpuOptions {
        subgroups: !a.portable,
    };
    let gpu = pollster::block_on(Gpu::with_options(options))?;
    let params = init_params(&config, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let images: Vec<u8> = (0..a.batch * config.dims()).map(|_| rng.random()).collect();
    let mode = Mode {
        optimizer: Some(Optimizer::rmsprop(1e-4)),
        ..Mode::default()
    };
    let mut net = Network::new(&gpu, config, a.batch, &params, mode)?;
    net.set_images(&images)?;

    // Whole GPU training step: forward, loss, backward, update; one submission.
    let gpu_step = median_secs(a.reps, || {
        net.train_step();
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device lost");
    });

    // The convolution kernels alone, each pass in its own submission.
    let k = net.conv_kernels.clone();
    let fwd = median_secs(a.reps, || run_and_wait(&gpu, &k.forward));
    let wgrad = median_secs(a.reps, || run_and_wait(&gpu, &k.weight_grad));
    let igrad = median_secs(a.reps, || run_and_wait(&gpu, &k.input_grad));
    let gflops = |macs: usize, secs: f64| 2.0 * macs as f64 / secs / 1e9;

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

    let torch = if a.vs_torch { torch_step(&a)? } else { None };

    let step_macs = 2 * k.forward_macs + k.input_grad_macs;
    let report = serde_json::json!({
        "adapter": format!("{} ({:?})", gpu.adapter_info.name, gpu.adapter_info.backend),
        "subgroup_kernels": gpu.subgroups(),
        "model": { "layers": a.layers, "hidden": a.hidden, "out_hidden": a.out_hidden,
                   "batch": a.batch, "size": 28, "channels": 1 },
        "gpu_step_s": gpu_step,
        "gpu_images_per_s": a.batch as f64 / gpu_step,
        "cpu_reference_step_s": cpu_step,
        "cpu_reference_images_per_s": a.batch as f64 / cpu_step,
        "gpu_vs_cpu_reference": cpu_step / gpu_step,
        "conv_forward_gflops": gflops(k.forward_macs, fwd),
        "conv_weight_grad_gflops": gflops(k.forward_macs, wgrad),
        "conv_input_grad_gflops": gflops(k.input_grad_macs, igrad),
        "gpu_step_conv_gflops": gflops(step_macs, gpu_step),
        "torch_step_s": torch,
        "gpu_vs_torch": torch.map(|t| t / gpu_step),
    });
    if a.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "PixelCNN training step, batch {} of 28x28x1, {} blocks, h = {}",
        a.batch, a.layers, a.hidden
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
    let row = |name: &str, secs: f64, macs: usize| {
        println!(
            "{name:<34} {:>10.2} {:>12.1} {:>10.2}",
            secs * 1e3,
            a.batch as f64 / secs,
            gflops(macs, secs)
        );
    };
    row("GPU step (all kernels)", gpu_step, step_macs);
    row("CPU reference step", cpu_step, step_macs);
    if let Some(t) = torch {
        row("PyTorch step (CPU)", t, step_macs);
    }
    println!(
        "{:<34} {:>10.2} {:>12} {:>10.2}",
        "conv forward",
        fwd * 1e3,
        "",
        gflops(k.forward_macs, fwd)
    );
    println!(
        "{:<34} {:>10.2} {:>12} {:>10.2}",
        "conv weight gradient",
        wgrad * 1e3,
        "",
        gflops(k.forward_macs, wgrad)
    );
    println!(
        "{:<34} {:>10.2} {:>12} {:>10.2}",
        "conv input gradient",
        igrad * 1e3,
        "",
        gflops(k.input_grad_macs, igrad)
    );
    println!("GPU step is {:.1}x the CPU reference", cpu_step / gpu_step);
    if let Some(t) = torch {
        println!("GPU step is {:.2}x PyTorch on this CPU", t / gpu_step);
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
