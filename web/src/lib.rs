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
use pixelrnn::model::ModelConfig;
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
        serde_json::json!({
            "model": c.arch.name(),
            "title": c.arch.title(),
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

    /// -log2 p of every sub-pixel of `image` (`[H, W, C]` bytes), in the same order.
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
        let net = network(&self.gpu, &self.checkpoint, count.max(1))?;
        let known = known.iter().map(|&k| k != 0).collect();
        let draw = (temperature, seed);
        let completion = sample::Sampler::new(&net, images, known, draw, SamplerKind::Incremental)
            .map_err(js)?;
        Ok(Sampler { net, completion })
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
/// sampler where the model has one.
#[wasm_bindgen]
pub struct Sampler {
    net: Network,
    completion: sample::Sampler,
}

#[wasm_bindgen]
impl Sampler {
    /// Runs up to `positions` more sub-pixel steps of every image; resolves to
    /// whether the images are finished.
    pub async fn advance(&mut self, positions: usize) -> Result<bool, JsError> {
        self.completion
            .advance(&self.net, positions)
            .await
            .map_err(js)
    }

    /// The images as drawn so far, `[count, H, W, C]` bytes.
    pub fn images(&self) -> Vec<u8> {
        self.completion.images().to_vec()
    }

    /// Sub-pixel steps taken so far.
    pub fn done(&self) -> usize {
        self.completion.progress().0
    }

    /// Sub-pixel steps in all.
    pub fn total(&self) -> usize {
        self.completion.progress().1
    }
}
