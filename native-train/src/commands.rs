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
use pixelrnn::model::{init_params, subsample, Arch, ModelConfig};
use pixelrnn::multiscale;
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

/// One model being trained: the full image's, or a Multi-Scale PixelRNN's first
/// stage, which learns the subsampled images of the same batches.
struct Stage {
    config: ModelConfig,
    net: Network,
    eval_net: Network,
    test: Dataset,
    /// Prefix of its metric names: "" for the checkpoint's own model, "stage1_".
    key: &'static str,
    since_log: u64,
}

impl Stage {
    /// This stage's view of `batch`, images of the full size.
    fn images(&self, batch: &[u8], full: &ModelConfig) -> Vec<u8> {
        if self.config.size == full.size {
            batch.to_vec()
        } else {
            subsample(batch, full.size, full.channels, self.config.size)
        }
    }
}

/// The configuration `train` builds from its flags and the data, and that of the
/// first stage when the model is multi-scale.
fn train_configs(
    a: &TrainArgs,
    data: &Dataset,
) -> anyhow::Result<(ModelConfig, Option<ModelConfig>)> {
    let config = |arch, size, small| ModelConfig {
        arch,
        channels: data.channels,
        size,
        layers: a.layers,
        hidden: a.hidden,
        out_hidden: a.out_hidden,
        small,
    };
    let Some(arch) = a.model.arch() else {
        let archs: Vec<Arch> = a.stages.iter().filter_map(|m| m.arch()).collect();
        let [first, second] = archs[..] else {
            bail!("--stages takes two of pixelcnn, row-lstm, diag-bilstm, e.g. row-lstm,row-lstm");
        };
        let s = a.small_size.unwrap_or(data.size / 2);
        let full = config(second, data.size, Some(s));
        full.validate()?;
        return Ok((full, Some(config(first, s, None))));
    };
    Ok((config(arch, data.size, None), None))
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
    let (config, stage1) = match &resumed {
        Some(c) => (c.config, c.stage1.as_ref().map(|s| s.config)),
        None => train_configs(&a, &train_set)?,
    };
    config.validate()?;
    if let Some(s) = &stage1 {
        s.validate()?;
    }
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
    let mode = Mode {
        optimizer: Some(optimizer),
        ..Mode::default()
    };

    // The checkpoint's own model first, then a multi-scale model's first stage.
    let mut stages = Vec::new();
    let models = std::iter::once((config, resumed.as_ref(), "")).chain(stage1.map(|c| {
        (
            c,
            resumed.as_ref().and_then(|r| r.stage1.as_deref()),
            "stage1_",
        )
    }));
    for (i, (c, from, key)) in models.enumerate() {
        let params = match from {
            Some(ckpt) => ckpt.params.clone(),
            None => init_params(&c, a.seed + i as u64),
        };
        let mut net = Network::new(&gpu, c, a.batch, &params, mode)?;
        let eval_net = Network::new(&gpu, c, 64.min(test_set.len()), &params, Mode::default())?;
        if let Some(state) = from.and_then(|ckpt| ckpt.optimizer.as_ref()) {
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
        let test = Dataset {
            images: if c.size == config.size {
                test_set.images.clone()
            } else {
                subsample(&test_set.images, config.size, config.channels, c.size)
            },
            size: c.size,
            channels: c.channels,
        };
        stages.push(Stage {
            config: c,
            net,
            eval_net,
            test,
            key,
            since_log: 0,
        });
    }

    let per_epoch = (train_set.len() / a.batch) as u64;
    let total = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * per_epoch,
        (None, None) => per_epoch,
    };
    let start = stages[0].net.step();
    if start >= total {
        println!("{} is already at step {start} of {total}", last.display());
        return Ok(());
    }
    let described: Vec<String> = stages
        .iter()
        .map(|s| {
            let c = &s.config;
            let given = c.small.map_or(String::new(), |v| format!(" given {v}x{v}"));
            format!(
                "{} of {}x{}{given} ({} layers, h = {}, {} parameters)",
                c.arch.title(),
                c.size,
                c.size,
                c.layers,
                c.hidden,
                c.parameters()
            )
        })
        .rev()
        .collect();
    println!(
        "training {} on {} images {}x{}x{}, {} on {}",
        described.join(", then "),
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
    let info = |step: u64, test_bpd: &[Option<f64>]| {
        let mut m = std::collections::HashMap::new();
        m.insert("data".to_string(), a.data.clone());
        m.insert("seed".to_string(), a.seed.to_string());
        m.insert("lr".to_string(), a.lr.to_string());
        m.insert("batch".to_string(), a.batch.to_string());
        m.insert("step".to_string(), step.to_string());
        for (stage, b) in stages_keys(test_bpd.len()).iter().zip(test_bpd) {
            if let Some(b) = b {
                m.insert(format!("{stage}test_bits_per_dim"), format!("{b:.4}"));
            }
        }
        m
    };
    let save = |stages: &[Stage], test_bpd: &[Option<f64>]| -> anyhow::Result<()> {
        let mut ckpts = Vec::new();
        for stage in stages {
            let net = &stage.net;
            let params = pollster::block_on(net.read_params())?;
            if params.iter().any(|p| !p.is_finite()) {
                bail!(
                    "parameters became NaN or infinite by step {}; lower --lr ({} keeps the last good checkpoint)",
                    net.step(),
                    last.display()
                );
            }
            let (m, v) = pollster::block_on(net.read_moments())?;
            ckpts.push(Checkpoint {
                config: stage.config,
                params,
                optimizer: Some(OptimizerState {
                    name: optimizer.name().into(),
                    step: net.step(),
                    m,
                    v,
                }),
                info: Default::default(),
                stage1: None,
            });
        }
        let mut ckpt = ckpts.remove(0);
        ckpt.stage1 = ckpts.pop().map(Box::new);
        ckpt.info = info(stages[0].net.step(), test_bpd);
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
    let mut test_bpd = vec![None; stages.len()];
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
        for stage in &mut stages {
            let images = stage.images(&batch, &config);
            stage.net.set_batch(&images)?;
            stage.net.train_step();
            stage.since_log += 1;
        }

        let done = step + 1;
        if done % a.log_every == 0 || done == total {
            let mut message = Vec::new();
            for stage in &mut stages {
                let nats = pollster::block_on(stage.net.take_mean_loss(stage.since_log))?;
                stage.since_log = 0;
                if !nats.is_finite() {
                    progress.abandon();
                    return Err(pixelrnn::Error::Diverged {
                        step: done,
                        value: nats,
                    }
                    .into());
                }
                message.push(format!("{}train {:.3}", stage_label(stage.key), bits(nats)));
                writeln!(
                    metrics,
                    "{{\"step\":{done},\"{}train_bits_per_dim\":{:.5}}}",
                    stage.key,
                    bits(nats)
                )?;
            }
            let images_per_s =
                (done - start) as f64 * a.batch as f64 / started.elapsed().as_secs_f64();
            progress.set_message(format!(
                "{} bits/dim, {images_per_s:.1} images/s",
                message.join(", ")
            ));
        }
        let eval_now = a.eval_every > 0 && done % a.eval_every == 0;
        if eval_now || done == total {
            for (stage, slot) in stages.iter().zip(&mut test_bpd) {
                stage.eval_net.copy_params_from(&stage.net);
                let label = format!("  {}test", stage_label(stage.key));
                let bpd = bits(evaluate(&stage.eval_net, &stage.test, &label)?);
                *slot = Some(bpd);
                progress.println(format!(
                    "step {done}: {}test {bpd:.4} bits/dim ({} images{})",
                    stage_label(stage.key),
                    stage.test.len(),
                    given(&stage.config)
                ));
                writeln!(
                    metrics,
                    "{{\"step\":{done},\"{}test_bits_per_dim\":{bpd:.5}}}",
                    stage.key
                )?;
            }
        }
        if done % a.checkpoint_every == 0 || done == total {
            save(&stages, &test_bpd)?;
        }
        progress.set_position(done);
    }
    progress.finish();
    let tests: Vec<String> = stages
        .iter()
        .zip(&test_bpd)
        .map(|(s, b)| {
            format!(
                "{}test {:.4} bits/dim{}",
                stage_label(s.key),
                b.unwrap_or(f64::NAN),
                given(&s.config)
            )
        })
        .collect();
    println!(
        "done: {} steps in {:.0} s; {}; checkpoint {}",
        total - start,
        started.elapsed().as_secs_f64(),
        tests.join(", "),
        last.display()
    );
    Ok(())
}

/// The metric prefixes of `n` stages: the checkpoint's own model, then the first stage.
fn stages_keys(n: usize) -> Vec<&'static str> {
    ["", "stage1_"].into_iter().take(n).collect()
}

/// How a stage is named in progress lines: nothing for the checkpoint's own model.
fn stage_label(key: &str) -> &'static str {
    if key.is_empty() {
        ""
    } else {
        "small "
    }
}

/// ", given the true s x s image" for a conditional model.
fn given(config: &ModelConfig) -> String {
    config
        .small
        .map_or(String::new(), |s| format!(", given the true {s}x{s} image"))
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

    // A multi-scale model: the first stage on the subsampled images too.
    let stage1 = match &ckpt.stage1 {
        Some(first) => {
            let c = first.config;
            let small = subsample(&data.images, config.size, config.channels, c.size);
            let small_net = Network::new(&gpu, c, net.batch, &first.params, Mode::default())?;
            let progress = bar(images as u64, "small {bar:30} {pos}/{len} images ETA {eta}");
            let nll = pollster::block_on(
                small_net.nll_of(&small, |done, _| progress.set_position(done as u64)),
            )?;
            progress.finish_and_clear();
            Some((first.config, nll.iter().map(|&v| v as f64).sum::<f64>()))
        }
        None => None,
    };
    let dims = (images * config.dims()) as f64;
    let two_stage = stage1.map(|(_, small_nats)| bits((nats + small_nats) / dims));

    if a.json {
        let mut o = serde_json::json!({
            "model": config.arch.name(),
            "parameters": config.parameters(),
            "bits_per_dim": bits_per_dim,
            "nats_per_image": nats_per_image,
            "images": images,
            "split": a.split,
            "data": a.data,
            "checkpoint": a.checkpoint.display().to_string(),
        });
        if let Some((c, small_nats)) = stage1 {
            o["model"] = "multiscale".into();
            o["quantity"] = format!(
                "bits_per_dim: -log2 p(image | its {0}x{0} subsampled image) per sub-pixel, \
                 the second stage; small_bits_per_dim: -log2 p(small image) per small \
                 sub-pixel, the first stage; two_stage_bits_per_dim: their sum per \
                 sub-pixel of the image, an upper bound on -log2 p(image)",
                c.size
            )
            .into();
            o["stages"] = serde_json::json!([c.arch.name(), config.arch.name()]);
            o["small_size"] = c.size.into();
            o["parameters"] = (config.parameters() + c.parameters()).into();
            o["small_bits_per_dim"] = bits(small_nats / (images * c.dims()) as f64).into();
            o["two_stage_bits_per_dim"] = two_stage.into();
        }
        println!("{o}");
    } else if let Some((c, small_nats)) = stage1 {
        println!(
            "Multi-Scale PixelRNN ({} of {}x{}, then {} of {}x{} given it), {images} {} images:",
            c.arch.title(),
            c.size,
            c.size,
            config.arch.title(),
            config.size,
            config.size,
            a.split
        );
        println!(
            "  the image given its true {0}x{0} image (second stage): {bits_per_dim:.4} bits/dim, \
             {nats_per_image:.2} nats/image",
            c.size
        );
        println!(
            "  the {0}x{0} image (first stage): {1:.4} bits/dim",
            c.size,
            bits(small_nats / (images * c.dims()) as f64)
        );
        println!(
            "  both stages: {:.4} bits/dim of the image (-log p(small) - log p(image | small), \
             an upper bound on -log p(image))",
            two_stage.unwrap_or(f64::NAN)
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
    let small_net = stage1_network(&gpu, &ckpt, &a.checkpoint, a.count)?;
    let progress = bar(0, "sample {bar:30} {pos}/{len} sub-pixels ETA {eta}");
    let started = Instant::now();
    let mut first_row = None;
    let kind = sampler_kind(a.naive);
    let draw = (a.temperature, a.seed);
    let mut shown = |d: usize, t: usize| {
        first_row.get_or_insert_with(|| started.elapsed());
        progress.set_length(t as u64);
        progress.set_position(d as u64)
    };
    let (images, small) = match &small_net {
        Some(first) => {
            let (images, small) =
                pollster::block_on(multiscale::sample(first, &net, draw, kind, &mut shown))?;
            (images, Some((small, first.config)))
        }
        None => (
            pollster::block_on(sample::sample(&net, draw, kind, &mut shown))?,
            None,
        ),
    };
    let total = started.elapsed();
    progress.finish_and_clear();
    let cells: Vec<&[u8]> = images.chunks(config.dims()).collect();
    let cols = (a.count as f64).sqrt().ceil() as usize;
    picture::save_grid(&a.out, &cells, cols, config.size, config.channels)?;
    if let Some((small, c)) = small {
        let path = small_path(&a.out);
        let cells: Vec<&[u8]> = small.chunks(c.dims()).collect();
        picture::save_grid(&path, &cells, cols, c.size, c.channels)?;
        println!(
            "the first stage's {}x{} images written to {}",
            c.size,
            c.size,
            path.display()
        );
    }
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

/// A multi-scale checkpoint's first stage on the GPU for batches of `batch`.
fn stage1_network(
    gpu: &Gpu,
    ckpt: &Checkpoint,
    path: &Path,
    batch: usize,
) -> anyhow::Result<Option<Network>> {
    let Some(first) = &ckpt.stage1 else {
        if let Some(s) = ckpt.config.small {
            bail!(
                "{}: a model conditioned on {s}x{s} images without the first stage that draws them",
                path.display()
            );
        }
        return Ok(None);
    };
    multiscale::check_stages(&first.config, &ckpt.config)?;
    let net = Network::new(gpu, first.config, batch, &first.params, Mode::default())?;
    Ok(Some(net))
}

/// Where the first stage's pictures go: `out` with `-small` before the extension.
fn small_path(out: &Path) -> std::path::PathBuf {
    let stem = out
        .file_stem()
        .map_or("samples".into(), |s| s.to_string_lossy());
    out.with_file_name(format!("{stem}-small.png"))
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
    let small_net = stage1_network(&gpu, &ckpt, &a.checkpoint, net.batch)?;
    let progress = bar(0, "complete {bar:30} {pos}/{len} sub-pixels ETA {eta}");
    let shown = |d: usize, t: usize| {
        progress.set_length(t as u64);
        progress.set_position(d as u64);
    };
    let (draw, kind) = ((a.temperature, a.seed), sampler_kind(a.naive));
    match &small_net {
        Some(first) => {
            let f = multiscale::complete(first, &net, &mut images, &known, draw, kind, shown);
            pollster::block_on(f)?;
        }
        None => pollster::block_on(sample::complete(
            &net,
            &mut images,
            &known,
            draw,
            kind,
            shown,
        ))?,
    }
    progress.finish_and_clear();

    // With --rank, each image's completions in order of the model's NLL of the whole
    // completed image: the known pixels after the hole count too, which the raster
    // order could not use while drawing.
    let mut order: Vec<usize> = (0..a.count * a.completions).collect();
    if a.rank {
        let nll = pollster::block_on(net.nll_of(&images, |_, _| {}))?;
        let mut nats: Vec<f64> = nll
            .chunks(dims)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
            .collect();
        // A multi-scale model's likelihood of the image is that of both stages.
        if let Some(first) = &small_net {
            let c = first.config;
            let small = subsample(&images, config.size, config.channels, c.size);
            let small_nll = pollster::block_on(first.nll_of(&small, |_, _| {}))?;
            for (n, s) in nats.iter_mut().zip(small_nll.chunks(c.dims())) {
                *n += s.iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        let bits: Vec<f64> = nats.iter().map(|n| bits(n / dims as f64)).collect();
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
    let mut parameters = ckpt.config.parameters();
    if let Some(first) = &mut ckpt.stage1 {
        first.optimizer = None;
        parameters += first.config.parameters();
    }
    ckpt.save(&a.out)?;
    println!(
        "{} parameters of {} written to {}",
        parameters,
        a.checkpoint.display(),
        a.out.display()
    );
    Ok(())
}
