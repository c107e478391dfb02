//! The `pixelrnn` library in the browser: load a checkpoint, sample or complete images
//! a few sub-pixels at a time, and score an image's sub-pixels, all through WebGPU.
//!
//! The page (`www/app.js`) drives it: every call that touches the GPU returns a
//! promise, and sampling is split into [`Sampler::advance`] steps so that the page
//! can draw between them and stay responsive.
#![warn(missing_docs)]

use std::f64::consts::LN_2;

use pixelrnn::checkpoint::Checkpoint;
use pixelrnn::data::from_dynamic;
use pixelrnn::gpu::Gpu;
use pixelrnn::model::{subsample, ModelConfig};
use pixelrnn::multiscale;
use pixelrnn::network::{Mode, Network};
use pixelrnn::sample::{self, SamplerKind};
use wasm_bindgen::prelude::*;

/// Turns library errors into JavaScript `Error`s carrying the same one-line message.
fn js(e: pixelrnn::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Installs a panic hook that reports Rust panics on the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// A trained model on the GPU.
#[wasm_bindgen]
pub struct Model {
    gpu: Gpu,
    checkpoint: Checkpoint,
    /// A one-image network for likelihoods.
    scorer: Network,
}

/// What a sampler of a Multi-Scale PixelRNN keeps for its second stage while the
/// first stage draws the small images.
struct SecondStage {
    net: Network,
    images: Vec<u8>,
    known: Vec<bool>,
}

#[wasm_bindgen]
impl Model {
    /// Opens the GPU and loads a checkpoint from the bytes of its file; `name` names
    /// the file in error messages.
    pub async fn load(bytes: Vec<u8>, name: String) -> Result<Model, JsError> {
        let checkpoint = Checkpoint::from_bytes(&bytes, &name).map_err(js)?;
        let gpu = Gpu::new().await.map_err(js)?;
        let scorer = network(&gpu, &checkpoint, 1)?;
        Ok(Self {
            gpu,
            checkpoint,
            scorer,
        })
    }

    /// Image height and width.
    pub fn size(&self) -> usize {
        self.config().size
    }

    /// Colour channels: 1 or 3.
    pub fn channels(&self) -> usize {
        self.config().channels
    }

    /// The architecture, the checkpoint's notes and the adapter, as a JSON object.
    pub fn describe(&self) -> String {
        let c = self.config();
        let info = &self.gpu.adapter_info;
        // Browsers often keep the adapter's name to themselves.
        let adapter = match info.name.as_str() {
            "" => "the browser's WebGPU adapter".to_string(),
            name => name.to_string(),
        };
        let stage1 = self.checkpoint.stage1.as_ref().map(|first| {
            let f = first.config;
            serde_json::json!({
                "model": f.arch.name(),
                "title": f.arch.title(),
                "size": f.size,
                "layers": f.layers,
                "hidden": f.hidden,
                "parameters": f.parameters(),
            })
        });
        let (model, title) = match &stage1 {
            Some(_) => ("multiscale", "Multi-Scale PixelRNN"),
            None => (c.arch.name(), c.arch.title()),
        };
        serde_json::json!({
            "model": model,
            "title": title,
            "arch": c.arch.name(),
            "arch_title": c.arch.title(),
            "stage1": stage1,
            "channels": c.channels,
            "size": c.size,
            "layers": c.layers,
            "hidden": c.hidden,
            "out_hidden": c.out_hidden,
            "parameters": c.parameters(),
            "info": self.checkpoint.info,
            "adapter": adapter,
            "subgroup_kernels": self.gpu.subgroups(),
        })
        .to_string()
    }

    /// Converts an RGBA picture of any size (as a canvas gives it) to the model's
    /// input: centre-cropped to a square, resized to `size` and turned grey or RGB,
    /// `[H, W, C]` bytes.
    pub fn fit_image(&self, rgba: Vec<u8>, width: u32, height: u32) -> Result<Vec<u8>, JsError> {
        let picture = image::RgbaImage::from_raw(width, height, rgba).ok_or_else(|| {
            JsError::new(&format!("{width}x{height} picture: wrong number of bytes"))
        })?;
        let c = self.config();
        Ok(from_dynamic(&picture.into(), c.channels, c.size))
    }

    /// -log2 p of every sub-pixel of `image` (`[H, W, C]` bytes), in the same order;
    /// for a multi-scale model, under its second stage given the image's own
    /// subsampled small image.
    pub async fn surprise(&self, image: Vec<u8>) -> Result<Vec<f32>, JsError> {
        let nats = self.scorer.nll_of(&image, |_, _| {}).await.map_err(js)?;
        Ok(nats.iter().map(|&v| (v as f64 / LN_2) as f32).collect())
    }

    /// A sampler drawing `count` new images.
    pub fn sampler(&self, count: usize, seed: u64, temperature: f32) -> Result<Sampler, JsError> {
        let len = count * self.config().dims();
        self.completer(vec![0; len], vec![0; len], count, seed, temperature)
    }

    /// A sampler completing `count` copies of `images` (`[count, H, W, C]` bytes)
    /// where `known` (one byte per sub-pixel, non-zero where known) is zero.
    pub fn completer(
        &self,
        images: Vec<u8>,
        known: Vec<u8>,
        count: usize,
        seed: u64,
        temperature: f32,
    ) -> Result<Sampler, JsError> {
        let batch = count.max(1);
        let net = network(&self.gpu, &self.checkpoint, batch)?;
        let known: Vec<bool> = known.iter().map(|&k| k != 0).collect();
        let draw = (temperature, seed);
        let c = self.config();
        let total = c.dims();

        // A multi-scale model draws the small images first, with its first stage.
        if let Some(first) = &self.checkpoint.stage1 {
            let f = first.config;
            multiscale::check_stages(&f, &c).map_err(js)?;
            let small_net = network(&self.gpu, first, batch)?;
            let small = subsample(&images, c.size, c.channels, f.size);
            let small_known = subsample(&known, c.size, c.channels, f.size);
            let completion = sample::Sampler::new(
                &small_net,
                small,
                small_known,
                draw,
                SamplerKind::Incremental,
            )
            .map_err(js)?;
            return Ok(Sampler {
                net: small_net,
                completion,
                second: Some(SecondStage { net, images, known }),
                draw,
                full: c,
                done_before: 0,
                total: f.dims() + c.dims(),
                small: None,
            });
        }
        if let Some(s) = c.small {
            return Err(JsError::new(&format!(
                "a model conditioned on {s}x{s} images without the first stage that draws them"
            )));
        }
        let completion = sample::Sampler::new(&net, images, known, draw, SamplerKind::Incremental)
            .map_err(js)?;
        Ok(Sampler {
            net,
            completion,
            second: None,
            draw,
            full: c,
            done_before: 0,
            total,
            small: None,
        })
    }
}

impl Model {
    fn config(&self) -> ModelConfig {
        self.checkpoint.config
    }
}

fn network(gpu: &Gpu, checkpoint: &Checkpoint, batch: usize) -> Result<Network, JsError> {
    Network::new(
        gpu,
        checkpoint.config,
        batch,
        &checkpoint.params,
        Mode::default(),
    )
    .map_err(js)
}

/// Images being drawn sub-pixel by sub-pixel in raster order, with the incremental
/// sampler; for a multi-scale model, the small images first, then the full ones.
#[wasm_bindgen]
pub struct Sampler {
    /// The network of the stage now drawing.
    net: Network,
    completion: sample::Sampler,
    /// A multi-scale model's second stage, until the first has finished.
    second: Option<SecondStage>,
    draw: (f32, u64),
    /// The full images' model.
    full: ModelConfig,
    /// Steps of finished stages.
    done_before: usize,
    total: usize,
    /// A multi-scale model's drawn small images and their size, once drawn.
    small: Option<(Vec<u8>, usize)>,
}

#[wasm_bindgen]
impl Sampler {
    /// Runs up to `positions` more sub-pixel steps of every image; resolves to
    /// whether the images are finished.
    pub async fn advance(&mut self, positions: usize) -> Result<bool, JsError> {
        let finished = self
            .completion
            .advance(&self.net, positions)
            .await
            .map_err(js)?;
        if !finished {
            return Ok(false);
        }
        let Some(second) = self.second.take() else {
            return Ok(true);
        };

        // The small images are drawn: the second stage starts, given them.
        let small = self.completion.images().to_vec();
        second.net.set_small(&small).map_err(js)?;
        let s = self.net.config.size;
        self.done_before = self.net.config.dims();
        self.completion = sample::Sampler::new(
            &second.net,
            second.images,
            second.known,
            (self.draw.0, multiscale::second_stage_seed(self.draw.1)),
            SamplerKind::Incremental,
        )
        .map_err(js)?;
        self.net = second.net;
        self.small = Some((small, s));
        Ok(false)
    }

    /// The images as drawn so far, `[count, H, W, C]` bytes. While a multi-scale
    /// model draws, the small images, enlarged, stand in for what is not drawn yet.
    pub fn images(&self) -> Vec<u8> {
        let f = self.full;
        let now = self.completion.images();
        let (small, s, drawn) = match (&self.small, &self.second) {
            (Some((small, s)), _) => (small.as_slice(), *s, self.completion.progress().0),
            (None, Some(_)) => (now, self.net.config.size, 0),
            (None, None) => return now.to_vec(),
        };
        let dims = f.dims();
        let step = f.size / s;
        let mut out = if drawn > 0 {
            now.to_vec()
        } else {
            vec![0; self.net.batch * dims]
        };
        for (b, image) in out.chunks_mut(dims).enumerate() {
            for (i, v) in image.iter_mut().enumerate().skip(drawn) {
                let (pixel, c) = (i / f.channels, i % f.channels);
                let (r, q) = (pixel / f.size / step, pixel % f.size / step);
                *v = small[(b * s * s + r * s + q) * f.channels + c];
            }
        }
        out
    }

    /// Sub-pixel steps taken so far (of both stages; a step fills one sub-pixel of
    /// every image).
    pub fn done(&self) -> usize {
        self.done_before + self.completion.progress().0
    }

    /// Sub-pixel steps in all (of both stages).
    pub fn total(&self) -> usize {
        self.total
    }
}
