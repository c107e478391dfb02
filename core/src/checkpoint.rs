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

/// Metadata keys that describe the model; the rest is free-form [`Checkpoint::info`].
const MODEL_KEYS: [&str; 9] = [
    "format",
    "model",
    "channels",
    "size",
    "layers",
    "hidden",
    "out_hidden",
    "optimizer",
    "optimizer_step",
];

impl Checkpoint {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let c = &self.config;
        let mut tensors = named_tensors(c, &self.params, "");
        let mut meta = self.info.clone();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("model".into(), c.arch.name().into());
        meta.insert("channels".into(), c.channels.to_string());
        meta.insert("size".into(), c.size.to_string());
        meta.insert("layers".into(), c.layers.to_string());
        meta.insert("hidden".into(), c.hidden.to_string());
        meta.insert("out_hidden".into(), c.out_hidden.to_string());
        if let Some(o) = &self.optimizer {
            meta.insert("optimizer".into(), o.name.clone());
            meta.insert("optimizer_step".into(), o.step.to_string());
            tensors.extend(named_tensors(c, &o.m, "optimizer.m."));
            tensors.extend(named_tensors(c, &o.v, "optimizer.v."));
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
        let model = meta.get("model").map(String::as_str).unwrap_or("?");
        let arch: Arch = model
            .parse()
            .map_err(|_| fail(format!("model '{model}' is not supported")))?;
        let number = |key: &str| -> Result<usize, Error> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| fail(format!("metadata '{key}' is missing or not a number")))
        };
        let config = ModelConfig {
            arch,
            channels: number("channels")?,
            size: number("size")?,
            layers: number("layers")?,
            hidden: number("hidden")?,
            out_hidden: number("out_hidden")?,
            small: None,
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

        let params = read_flat("")?;
        let optimizer = match meta.get("optimizer") {
            Some(name) => Some(OptimizerState {
                name: name.clone(),
                step: number("optimizer_step")? as u64,
                m: read_flat("optimizer.m.")?,
                v: read_flat("optimizer.v.")?,
            }),
            None => None,
        };
        let info = meta
            .into_iter()
            .filter(|(k, _)| !MODEL_KEYS.contains(&k.as_str()))
            .collect();
        Ok(Self {
            config,
            params,
            optimizer,
            info,
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
