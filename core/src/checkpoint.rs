//! Checkpoints in safetensors, with the model configuration in the metadata.
//!
//! Tensor names and layouts are documented in `docs/checkpoint.md`: each convolution
//! is stored as a PyTorch-style `[C_out, C_in, k, k]` weight (masked entries zero)
//! and a `[C_out]` bias, the LSTMs' state-to-state weights and initial states as they
//! are held; the optimizer moments, when present, are stored the same way under
//! `optimizer.m.` and `optimizer.v.`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::conv::{self, ConvShape};
use crate::model::{Arch, ModelConfig, ParamLayout};
use crate::Error;

/// The value of the `format` metadata key that marks our checkpoints.
pub const FORMAT: &str = "pixelrnn";

/// Optimizer state saved for resuming.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// `rmsprop` or `adam`.
    pub name: String,
    /// Steps taken.
    pub step: u64,
    /// First moments, in the flat parameter layout (stored like the parameters).
    pub m: Vec<f32>,
    /// Second moments, in the flat parameter layout (stored like the parameters).
    pub v: Vec<f32>,
}

/// A trained (or training) model.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The architecture.
    pub config: ModelConfig,
    /// Parameters in the flat layout of [`ParamLayout`].
    pub params: Vec<f32>,
    /// Optimizer state, for resuming training.
    pub optimizer: Option<OptimizerState>,
    /// Free-form string metadata (dataset, seed, test bits/dim, ...).
    pub info: HashMap<String, String>,
    /// A Multi-Scale PixelRNN's first stage, the unconditional model of the small
    /// images (its tensors and keys are stored under [`STAGE1`]); this checkpoint's
    /// own model is then the second stage, conditioned on them.
    pub stage1: Option<Box<Checkpoint>>,
}

/// `[T, C_in, C_out]` causal taps to a full `[C_out, C_in, k, k]` kernel.
fn to_oihw(s: &ConvShape, w: &[f32]) -> Vec<f32> {
    let (k, r) = (s.k, (s.k / 2) as isize);
    let mut out = vec![0.0; s.out_ch * s.in_ch * k * k];
    for t in 0..s.taps() {
        let (dy, dx) = s.offset(t);
        let (ky, kx) = ((dy + r) as usize, (dx + r) as usize);
        for ci in 0..s.in_ch {
            for co in 0..s.out_ch {
                out[((co * s.in_ch + ci) * k + ky) * k + kx] =
                    w[(t * s.in_ch + ci) * s.out_ch + co];
            }
        }
    }
    out
}

/// A full `[C_out, C_in, k, k]` kernel to its causal taps `[T, C_in, C_out]`, masked.
fn from_oihw(s: &ConvShape, full: &[f32]) -> Vec<f32> {
    let (k, r) = (s.k, (s.k / 2) as isize);
    let mut w = vec![0.0; s.weight_len()];
    for t in 0..s.taps() {
        let (dy, dx) = s.offset(t);
        let (ky, kx) = ((dy + r) as usize, (dx + r) as usize);
        for ci in 0..s.in_ch {
            for co in 0..s.out_ch {
                w[(t * s.in_ch + ci) * s.out_ch + co] =
                    full[((co * s.in_ch + ci) * k + ky) * k + kx];
            }
        }
    }
    conv::cpu::apply_mask(s, &mut w);
    w
}

/// Named tensors of a flat parameter buffer (convolutions as `[C_out, C_in, k, k]`
/// weights and `[C_out]` biases), each name prefixed by `prefix`.
fn named_tensors(
    config: &ModelConfig,
    flat: &[f32],
    prefix: &str,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let layout = ParamLayout::new(config);
    let mut out = Vec::new();
    for (i, cl) in layout.convs.iter().enumerate() {
        let s = cl.shape;
        let (w, b) = layout.unpack(flat, i);
        let name = format!("{prefix}{}", layout.conv_names[i]);
        out.push((
            format!("{name}.weight"),
            vec![s.out_ch, s.in_ch, s.k, s.k],
            to_oihw(&s, &w),
        ));
        out.push((format!("{name}.bias"), vec![s.out_ch], b));
    }
    for (i, v) in layout.vectors.iter().enumerate() {
        let values = layout.vector_of(flat, i).to_vec();
        out.push((format!("{prefix}{}", v.name), v.shape.clone(), values));
    }
    out
}

/// Metadata keys that describe a model (each also under the first stage's prefix);
/// the rest is free-form [`Checkpoint::info`].
const MODEL_KEYS: [&str; 10] = [
    "format",
    "model",
    "channels",
    "size",
    "layers",
    "hidden",
    "out_hidden",
    "small",
    "optimizer",
    "optimizer_step",
];

/// The prefix of a Multi-Scale PixelRNN's first stage, on its metadata keys and
/// tensor names.
pub const STAGE1: &str = "stage1.";

impl Checkpoint {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut tensors = Vec::new();
        let mut meta = self.info.clone();
        meta.insert("format".into(), FORMAT.into());
        self.describe("", &mut meta, &mut tensors);
        if let Some(stage1) = &self.stage1 {
            stage1.describe(STAGE1, &mut meta, &mut tensors);
        }
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, shape, v)| (n, shape, bytemuck::cast_slice::<f32, u8>(&v).to_vec()))
            .collect();
        let views = bytes
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("cannot build tensor: {e}")))?;
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Config(format!("cannot serialise checkpoint: {e}")))
    }

    /// This checkpoint's model keys and tensors (not its first stage's), under
    /// `prefix`.
    #[allow(clippy::type_complexity)]
    fn describe(
        &self,
        prefix: &str,
        meta: &mut HashMap<String, String>,
        tensors: &mut Vec<(String, Vec<usize>, Vec<f32>)>,
    ) {
        let c = &self.config;
        let mut put = |key: &str, value: String| meta.insert(format!("{prefix}{key}"), value);
        put("model", c.arch.name().into());
        put("channels", c.channels.to_string());
        put("size", c.size.to_string());
        put("layers", c.layers.to_string());
        put("hidden", c.hidden.to_string());
        put("out_hidden", c.out_hidden.to_string());
        if let Some(s) = c.small {
            put("small", s.to_string());
        }
        tensors.extend(named_tensors(c, &self.params, prefix));
        if let Some(o) = &self.optimizer {
            put("optimizer", o.name.clone());
            put("optimizer_step", o.step.to_string());
            tensors.extend(named_tensors(c, &o.m, &format!("{prefix}optimizer.m.")));
            tensors.extend(named_tensors(c, &o.v, &format!("{prefix}optimizer.v.")));
        }
    }

    /// Parses safetensors bytes; `path` only names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::Checkpoint {
            path: path.to_string(),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| fail(format!("not a readable safetensors file ({e})")))?;
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| fail(format!("not a readable safetensors file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(fail(
                "not a pixelrnn checkpoint (no format=pixelrnn metadata)".into(),
            ));
        }
        let mut checkpoint = Self::read_stage(&meta, &tensors, "", &fail)?;
        if meta.contains_key(&format!("{STAGE1}model")) {
            let stage1 = Self::read_stage(&meta, &tensors, STAGE1, &fail)?;
            let (s, c) = (stage1.config, checkpoint.config);
            if c.small != Some(s.size) || s.channels != c.channels || s.small.is_some() {
                return Err(fail(format!(
                    "the first stage models {}x{} images, the second is conditioned on {}",
                    s.size,
                    s.size,
                    c.small.map_or("none".into(), |v| format!("{v}x{v}"))
                )));
            }
            checkpoint.stage1 = Some(Box::new(stage1));
        }
        checkpoint.info = meta
            .into_iter()
            .filter(|(k, _)| {
                let k = k.strip_prefix(STAGE1).unwrap_or(k);
                !MODEL_KEYS.contains(&k)
            })
            .collect();
        Ok(checkpoint)
    }

    /// The model whose keys and tensors are under `prefix` (no info, no first stage).
    fn read_stage(
        meta: &HashMap<String, String>,
        tensors: &SafeTensors<'_>,
        prefix: &str,
        fail: &dyn Fn(String) -> Error,
    ) -> Result<Self, Error> {
        let key = |k: &str| format!("{prefix}{k}");
        let model = meta.get(&key("model")).map(String::as_str).unwrap_or("?");
        let arch: Arch = model
            .parse()
            .map_err(|_| fail(format!("model '{model}' is not supported")))?;
        let number = |k: &str| -> Result<usize, Error> {
            meta.get(&key(k))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| fail(format!("metadata '{}' is missing or not a number", key(k))))
        };
        let config = ModelConfig {
            arch,
            channels: number("channels")?,
            size: number("size")?,
            layers: number("layers")?,
            hidden: number("hidden")?,
            out_hidden: number("out_hidden")?,
            small: meta
                .get(&key("small"))
                .map(|_| number("small"))
                .transpose()?,
        };
        config.validate().map_err(|e| fail(e.to_string()))?;

        // Reads the tensors of one flat parameter buffer, names prefixed by `prefix`.
        let read_flat = |prefix: &str| -> Result<Vec<f32>, Error> {
            let layout = ParamLayout::new(&config);
            let mut flat = vec![0.0; layout.len];
            let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, Error> {
                let t = tensors
                    .tensor(name)
                    .map_err(|_| fail(format!("tensor '{name}' is missing")))?;
                if t.dtype() != Dtype::F32 || t.shape() != shape {
                    return Err(fail(format!(
                        "tensor '{name}' is {:?} {:?}, the configuration needs F32 {shape:?}",
                        t.dtype(),
                        t.shape()
                    )));
                }
                let v: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(fail(format!(
                        "tensor '{name}' holds NaN or infinite values"
                    )));
                }
                Ok(v)
            };
            for (i, cl) in layout.convs.iter().enumerate() {
                let s = cl.shape;
                let name = format!("{prefix}{}", layout.conv_names[i]);
                let full = read(&format!("{name}.weight"), &[s.out_ch, s.in_ch, s.k, s.k])?;
                let b = read(&format!("{name}.bias"), &[s.out_ch])?;
                layout.pack_into(&mut flat, i, &from_oihw(&s, &full), &b);
            }
            for (i, v) in layout.vectors.iter().enumerate() {
                let values = read(&format!("{prefix}{}", v.name), &v.shape)?;
                layout.vector_mut(&mut flat, i).copy_from_slice(&values);
            }
            Ok(flat)
        };

        let params = read_flat(prefix)?;
        let optimizer = match meta.get(&key("optimizer")) {
            Some(name) => Some(OptimizerState {
                name: name.clone(),
                step: number("optimizer_step")? as u64,
                m: read_flat(&key("optimizer.m."))?,
                v: read_flat(&key("optimizer.v."))?,
            }),
            None => None,
        };
        Ok(Self {
            config,
            params,
            optimizer,
            info: HashMap::new(),
            stage1: None,
        })
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes atomically: to a temporary file beside `path`, synced, then renamed over
    /// it, so that a crash never leaves a half-written checkpoint.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension("safetensors.tmp");
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| Error::Io { path: p, source }
        };
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))
    }
}
