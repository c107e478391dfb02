//! The train, eval, sample and complete commands.

use std::f64::consts::LN_2;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use pixelrnn::checkpoint::{Checkpoint, OptimizerState};
use pixelrnn::data::{self, Dataset, Source, Split};
use pixelrnn::gpu::Gpu;
use pixelrnn::model::{init_params, ModelConfig};
use pixelrnn::network::{Mode, Network};
use pixelrnn::ops::Optimizer;
use pixelrnn::sample::{self, Occlusion, SamplerKind};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::picture;
use crate::{CompleteArgs, EvalArgs, ExportArgs, OptimizerName, SampleArgs, TrainArgs};

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn open_gpu() -> anyhow::Result<Gpu> {
    let gpu = pollster::block_on(Gpu::new())?;
    log::info!(
        "using {} ({:?})",
        gpu.adapter_info.name,
        gpu.adapter_info.backend
    );
    Ok(gpu)
}

fn load_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    Ok(Checkpoint::load(path)?)
}

/// Loads `split` of `source` in the model's channels and size.
fn load_data(source: &str, split: Split, config: &ModelConfig) -> anyhow::Result<Dataset> {
    let source: Source = source.parse()?;
    Ok(data::load(
        &source,
        split,
        Some(config.channels),
        Some(config.size),
    )?)
}

/// Bits per sub-pixel from nats per sub-pixel.
fn bits(nats: f64) -> f64 {
    nats / LN_2
}

/// Mean NLL in nats per sub-pixel of `data` under the parameters of `net`.
fn evaluate(net: &Network, data: &Dataset, label: &str) -> anyhow::Result<f64> {
    let progress = bar(
        data.len() as u64,
        &format!("{label} {{bar:30}} {{pos}}/{{len}} images"),
    );
    let nll =
        pollster::block_on(net.nll_of(&data.images, |done, _| progress.set_position(done as u64)))?;
    progress.finish_and_clear();
    Ok(nll.iter().map(|&v| v as f64).sum::<f64>() / nll.len() as f64)
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let last = a.out.join("last.safetensors");
    let source: Source = a.data.parse()?;

    // The model: from the checkpoint when resuming, else from the flags and the data.
    let resumed = if a.resume {
        if !last.exists() {
            bail!("--resume: {} does not exist", last.display());
        }
        Some(load_checkpoint(&last)?)
    } else {
        None
    };
    let mut train_set = data::load(
        &source,
        Split::Train,
        resumed.as_ref().map(|c| c.config.channels).or(a.channels),
        resumed.as_ref().map(|c| c.config.size).or(a.size),
    )?;
    if let Some(n) = a.limit {
        train_set.truncate(n);
    }
    let config = match &resumed {
        Some(c) => c.config,
        None => ModelConfig {
            arch: a.model.into(),
            channels: train_set.channels,
            size: train_set.size,
            layers: a.layers,
            hidden: a.hidden,
            out_hidden: a.out_hidden,
            small: None,
        },
    };
    config.validate()?;
    let mut test_set = data::load(
        &source,
        Split::Test,
        Some(config.channels),
        Some(config.size),
    )?;
    test_set.truncate(a.eval_limit.max(1));
    if train_set.len() < a.batch {
        bail!(
            "{} training images are fewer than one batch of {}",
            train_set.len(),
            a.batch
        );
    }

    let optimizer = match a.optimizer {
        OptimizerName::Rmsprop => Optimizer::rmsprop(a.lr),
        OptimizerName::Adam => Optimizer::adam(a.lr),
    };
    let gpu = open_gpu()?;
    let params = match &resumed {
        Some(c) => c.params.clone(),
        None => init_params(&config, a.seed),
    };
    let mode = Mode {
        optimizer: Some(optimizer),
        ..Mode::default()
    };
    let mut net = Network::new(&gpu, config, a.batch, &params, mode)?;
    let eval_net = Network::new(
        &gpu,
        config,
        64.min(test_set.len()),
        &params,
        Mode::default(),
    )?;
    if let Some(state) = resumed.as_ref().and_then(|c| c.optimizer.as_ref()) {
        if state.name != optimizer.name() {
            bail!(
                "{}: trained with {}, resumed with --optimizer {}",
                last.display(),
                state.name,
                optimizer.name()
            );
        }
        net.write_moments(&state.m, &state.v)?;
        net.set_step(state.step);
    }

    let per_epoch = (train_set.len() / a.batch) as u64;
    let total = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * per_epoch,
        (None, None) => per_epoch,
    };
    let start = net.step();
    if start >= total {
        println!("{} is already at step {start} of {total}", last.display());
        return Ok(());
    }
    println!(
        "training {} ({} layers, h = {}, {} parameters) on {} images {}x{}x{}, {} on {}",
        config.arch.title(),
        config.layers,
        config.hidden,
        config.parameters(),
        train_set.len(),
        config.size,
        config.size,
        config.channels,
        optimizer.name(),
        gpu.adapter_info.name
    );

    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("metrics.jsonl"))
        .context("cannot open metrics.jsonl")?;
    let info = |step: u64, test_bpd: Option<f64>| {
        let mut m = std::collections::HashMap::new();
        m.insert("data".to_string(), a.data.clone());
        m.insert("seed".to_string(), a.seed.to_string());
        m.insert("lr".to_string(), a.lr.to_string());
        m.insert("batch".to_string(), a.batch.to_string());
        m.insert("step".to_string(), step.to_string());
        if let Some(b) = test_bpd {
            m.insert("test_bits_per_dim".to_string(), format!("{b:.4}"));
        }
        m
    };
    let save = |net: &Network, test_bpd: Option<f64>| -> anyhow::Result<()> {
        let params = pollster::block_on(net.read_params())?;
        if params.iter().any(|p| !p.is_finite()) {
            bail!(
                "parameters became NaN or infinite by step {}; lower --lr ({} keeps the last good checkpoint)",
                net.step(),
                last.display()
            );
        }
        let (m, v) = pollster::block_on(net.read_moments())?;
        let ckpt = Checkpoint {
            config,
            params,
            optimizer: Some(OptimizerState {
                name: optimizer.name().into(),
                step: net.step(),
                m,
                v,
            }),
            info: info(net.step(), test_bpd),
        };
        Ok(ckpt.save(&last)?)
    };

    let progress = bar(
        total,
        "{spinner} step {pos}/{len} [{bar:30}] {msg} {per_sec} ETA {eta}",
    );
    progress.set_position(start);
    let dims = config.dims();
    let mut batch = vec![0u8; a.batch * dims];
    let mut order: Vec<usize> = Vec::new();
    let mut epoch = u64::MAX;
    let mut since_log = 0;
    let mut test_bpd = None;
    let started = Instant::now();
    for step in start..total {
        // The data order of each epoch depends only on the seed and the epoch, so a
        // resumed run sees the same batches as an uninterrupted one.
        if step / per_epoch != epoch {
            epoch = step / per_epoch;
            order = (0..train_set.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                a.seed ^ (epoch + 1).wrapping_mul(0x9e37_79b9),
            ));
        }
        let first = ((step % per_epoch) as usize) * a.batch;
        for (slot, &i) in order[first..first + a.batch].iter().enumerate() {
            batch[slot * dims..][..dims].copy_from_slice(train_set.image(i));
        }
        net.set_images(&batch)?;
        net.train_step();
        since_log += 1;

        let done = step + 1;
        if done % a.log_every == 0 || done == total {
            let nats = pollster::block_on(net.take_mean_loss(since_log))?;
            since_log = 0;
            if !nats.is_finite() {
                progress.abandon();
                return Err(pixelrnn::Error::Diverged {
                    step: done,
                    value: nats,
                }
                .into());
            }
            let images_per_s =
                (done - start) as f64 * a.batch as f64 / started.elapsed().as_secs_f64();
            progress.set_message(format!(
                "train {:.3} bits/dim, {images_per_s:.1} images/s",
                bits(nats)
            ));
            writeln!(
                metrics,
                "{{\"step\":{done},\"train_bits_per_dim\":{:.5}}}",
                bits(nats)
            )?;
        }
        let eval_now = a.eval_every > 0 && done % a.eval_every == 0;
        if eval_now || done == total {
            eval_net.copy_params_from(&net);
            let bpd = bits(evaluate(&eval_net, &test_set, "  test")?);
            test_bpd = Some(bpd);
            progress.println(format!(
                "step {done}: test {bpd:.4} bits/dim ({} images)",
                test_set.len()
            ));
            writeln!(
                metrics,
                "{{\"step\":{done},\"test_bits_per_dim\":{bpd:.5}}}"
            )?;
        }
        if done % a.checkpoint_every == 0 || done == total {
            save(&net, test_bpd)?;
        }
        progress.set_position(done);
    }
    progress.finish();
    println!(
        "done: {} steps in {:.0} s; test {:.4} bits/dim; checkpoint {}",
        total - start,
        started.elapsed().as_secs_f64(),
        test_bpd.unwrap_or(f64::NAN),
        last.display()
    );
    Ok(())
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint)?;
    let config = ckpt.config;
    let split: Split = a.split.parse()?;
    let mut data = load_data(&a.data, split, &config)?;
    if let Some(n) = a.limit {
        data.truncate(n);
    }
    let gpu = open_gpu()?;
    let net = Network::new(
        &gpu,
        config,
        a.batch.min(data.len()).max(1),
        &ckpt.params,
        Mode::default(),
    )?;
    let progress = bar(
        data.len() as u64,
        "eval {bar:30} {pos}/{len} images ETA {eta}",
    );
    let nll =
        pollster::block_on(net.nll_of(&data.images, |done, _| progress.set_position(done as u64)))?;
    progress.finish_and_clear();

    let nats: f64 = nll.iter().map(|&v| v as f64).sum();
    let images = data.len();
    let bits_per_dim = bits(nats / nll.len() as f64);
    let nats_per_image = nats / images as f64;
    if let Some(path) = &a.per_pixel {
        // [N, H, W, C] nats to [N, C, H, W] bits.
        let (s, c) = (config.size, config.channels);
        let mut out = vec![0f32; nll.len()];
        for n in 0..images {
            for p in 0..s * s {
                for ch in 0..c {
                    out[(n * c + ch) * s * s + p] =
                        (nll[(n * s * s + p) * c + ch] as f64 / LN_2) as f32;
                }
            }
        }
        write_npy(path, &out, &[images, c, s, s])?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": config.arch.name(),
                "parameters": config.parameters(),
                "bits_per_dim": bits_per_dim,
                "nats_per_image": nats_per_image,
                "images": images,
                "split": a.split,
                "data": a.data,
                "checkpoint": a.checkpoint.display().to_string(),
            })
        );
    } else {
        println!(
            "{}, {images} {} images: {bits_per_dim:.4} bits/dim, {nats_per_image:.2} nats/image",
            config.arch.title(),
            a.split
        );
    }
    Ok(())
}

/// Writes a float32 array in NumPy's .npy format (version 1.0, little-endian, C order).
fn write_npy(path: &Path, data: &[f32], shape: &[usize]) -> anyhow::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(bytemuck::cast_slice::<f32, u8>(data));
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

pub fn sample(a: SampleArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint)?;
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let gpu = open_gpu()?;
    let config = ckpt.config;
    let net = Network::new(&gpu, config, a.count, &ckpt.params, Mode::default())?;
    let progress = bar(
        config.dims() as u64,
        "sample {bar:30} {pos}/{len} sub-pixels ETA {eta}",
    );
    let started = Instant::now();
    let mut first_row = None;
    let kind = sampler_kind(a.naive);
    let images = pollster::block_on(sample::sample(
        &net,
        (a.temperature, a.seed),
        kind,
        |d, _| {
            first_row.get_or_insert_with(|| started.elapsed());
            progress.set_position(d as u64)
        },
    ))?;
    let total = started.elapsed();
    progress.finish_and_clear();
    let cells: Vec<&[u8]> = images.chunks(config.dims()).collect();
    let cols = (a.count as f64).sqrt().ceil() as usize;
    picture::save_grid(&a.out, &cells, cols, config.size, config.channels)?;
    println!(
        "{} samples written to {} in {:.1} s (first row after {:.0} ms, {:.0} ms per image)",
        a.count,
        a.out.display(),
        total.as_secs_f64(),
        first_row.unwrap_or(total).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / a.count as f64
    );
    Ok(())
}

/// The plain sampler with `--naive`, else the fastest the model has.
fn sampler_kind(naive: bool) -> SamplerKind {
    if naive {
        SamplerKind::Plain
    } else {
        SamplerKind::Incremental
    }
}

pub fn complete(a: CompleteArgs) -> anyhow::Result<()> {
    let ckpt = load_checkpoint(&a.checkpoint)?;
    let config = ckpt.config;
    let occlusion: Occlusion = a.occlude.parse()?;
    if let Occlusion::Rect { x, y, w, h } = occlusion {
        if x + w > config.size || y + h > config.size {
            bail!(
                "--occlude {}: outside the {}x{} image",
                a.occlude,
                config.size,
                config.size
            );
        }
    }
    if a.count == 0 || a.completions == 0 {
        bail!("--count and --completions must be at least 1");
    }
    let data = load_data(&a.data, Split::Test, &config)?;
    let mut picks: Vec<usize> = (0..data.len()).collect();
    picks.shuffle(&mut ChaCha8Rng::seed_from_u64(a.seed));
    picks.truncate(a.count);

    let dims = config.dims();
    let known_one = occlusion.known(config.size, config.channels);
    let mut images = Vec::with_capacity(a.count * a.completions * dims);
    let mut known = Vec::with_capacity(images.capacity());
    for &i in &picks {
        for _ in 0..a.completions {
            images.extend_from_slice(data.image(i));
            known.extend_from_slice(&known_one);
        }
    }
    // Hidden sub-pixels start from nothing the model could peek at.
    for (v, k) in images.iter_mut().zip(&known) {
        if !k {
            *v = 0;
        }
    }
    let gpu = open_gpu()?;
    let net = Network::new(
        &gpu,
        config,
        images.len() / dims,
        &ckpt.params,
        Mode::default(),
    )?;
    let progress = bar(0, "complete {bar:30} {pos}/{len} sub-pixels ETA {eta}");
    pollster::block_on(sample::complete(
        &net,
        &mut images,
        &known,
        (a.temperature, a.seed),
        sampler_kind(a.naive),
        |d, t| {
            progress.set_length(t as u64);
            progress.set_position(d as u64);
        },
    ))?;
    progress.finish_and_clear();

    // With --rank, each image's completions in order of the model's NLL of the whole
    // completed image: the known pixels after the hole count too, which the raster
    // order could not use while drawing.
    let mut order: Vec<usize> = (0..a.count * a.completions).collect();
    if a.rank {
        let nll = pollster::block_on(net.nll_of(&images, |_, _| {}))?;
        let bits: Vec<f64> = nll
            .chunks(dims)
            .map(|c| bits(c.iter().map(|&v| v as f64).sum::<f64>() / dims as f64))
            .collect();
        for (r, &i) in picks.iter().enumerate() {
            let row = &mut order[r * a.completions..][..a.completions];
            row.sort_by(|&x, &y| bits[x].total_cmp(&bits[y]));
            let ranked: Vec<String> = row.iter().map(|&c| format!("{:.4}", bits[c])).collect();
            println!(
                "test image {i}: completions at {} bits/dim",
                ranked.join(", ")
            );
        }
    }

    let mut rows: Vec<Vec<u8>> = Vec::new();
    for (r, &i) in picks.iter().enumerate() {
        rows.push(picture::occluded(data.image(i), &known_one));
        for &c in &order[r * a.completions..][..a.completions] {
            rows.push(images[c * dims..][..dims].to_vec());
        }
        rows.push(data.image(i).to_vec());
    }
    let cells: Vec<&[u8]> = rows.iter().map(|v| v.as_slice()).collect();
    picture::save_grid(
        &a.out,
        &cells,
        a.completions + 2,
        config.size,
        config.channels,
    )?;
    println!(
        "{} images x {} completions written to {} (columns: occluded, completions{}, original)",
        a.count,
        a.completions,
        a.out.display(),
        if a.rank {
            " from most to least likely"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let mut ckpt = load_checkpoint(&a.checkpoint)?;
    ckpt.optimizer = None;
    ckpt.save(&a.out)?;
    println!(
        "{} parameters of {} written to {}",
        ckpt.config.parameters(),
        a.checkpoint.display(),
        a.out.display()
    );
    Ok(())
}
