//! The three architectures of the paper around one residual stream of 2h maps: a 7x7
//! mask-A convolution from the image, a stack of residual layers, and a ReLU / 1x1
//! output stack giving a 256-way softmax per sub-pixel.
//!
//! - **PixelCNN** (section 3.4): block i maps the stream x to
//!   x + W3 * ReLU(W2 * ReLU(W1 * ReLU(x))), with W1 a 1x1 convolution down to h maps,
//!   W2 a 3x3 mask-B convolution, W3 a 1x1 convolution back to 2h.
//! - **Row LSTM** and **Diagonal BiLSTM** (sections 3.1 and 3.2): each layer is a
//!   recurrent layer of [`crate::rnn`], x + K^out ⊛ h.
//!
//! Every convolution is masked, so the colour groups stay causal through the 1x1
//! layers too.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::conv::{self, ConvLayout, ConvShape, Grid, Mask};
use crate::deconv::{self, DeconvShape};
use crate::ops::LEVELS;
use crate::rnn::{self, Kind};
use crate::Error;

/// Which of the paper's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// PixelCNN: residual blocks of masked convolutions.
    PixelCnn,
    /// Row LSTM layers.
    RowLstm,
    /// Diagonal BiLSTM layers.
    DiagBiLstm,
}

impl Arch {
    /// Every architecture, fastest first.
    pub const ALL: [Arch; 3] = [Arch::PixelCnn, Arch::RowLstm, Arch::DiagBiLstm];

    /// The name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Arch::PixelCnn => "pixelcnn",
            Arch::RowLstm => "row-lstm",
            Arch::DiagBiLstm => "diag-bilstm",
        }
    }

    /// The name used in the paper.
    pub fn title(self) -> &'static str {
        match self {
            Arch::PixelCnn => "PixelCNN",
            Arch::RowLstm => "Row LSTM",
            Arch::DiagBiLstm => "Diagonal BiLSTM",
        }
    }

    /// The recurrent layer kind, None for PixelCNN.
    pub fn rnn(self) -> Option<Kind> {
        match self {
            Arch::PixelCnn => None,
            Arch::RowLstm => Some(Kind::Row),
            Arch::DiagBiLstm => Some(Kind::Diagonal),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "model '{s}' is not one of pixelcnn, row-lstm, diag-bilstm"
                ))
            })
    }
}

/// Architecture of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// PixelCNN, Row LSTM or Diagonal BiLSTM.
    pub arch: Arch,
    /// Colour channels of the images: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Image height and width.
    pub size: usize,
    /// Residual blocks or recurrent layers after the 7x7 layer.
    pub layers: usize,
    /// h: maps inside a block, or LSTM state channels; the residual stream has 2h.
    pub hidden: usize,
    /// Maps of the hidden 1x1 layer of the output stack.
    pub out_hidden: usize,
    /// For the second stage of a Multi-Scale PixelRNN: the size of the small image
    /// the model is conditioned on. It is upsampled by 4 x 4, stride 2 transposed
    /// convolutions to h maps of the full size, and a 1x1 unmasked convolution of
    /// those maps is added to every block's first masked convolution (a PixelCNN
    /// block's 1x1 down to h, an LSTM direction's input-to-state convolution). None
    /// for an unconditional model.
    pub small: Option<usize>,
}

impl ModelConfig {
    /// Checks the sizes the kernels rely on; the error names the offending value.
    pub fn validate(&self) -> Result<(), Error> {
        let bad =
            |what: &str, v: usize, why: &str| Err(Error::Config(format!("{what} = {v}: {why}")));
        if self.channels != 1 && self.channels != 3 {
            return bad("channels", self.channels, "must be 1 or 3");
        }
        if self.size == 0 || self.size > 1024 {
            return bad("size", self.size, "must be between 1 and 1024");
        }
        if self.hidden == 0 || !self.hidden.is_multiple_of(4) || self.hidden < self.channels {
            return bad("hidden", self.hidden, "must be a positive multiple of 4");
        }
        if self.out_hidden == 0 || !self.out_hidden.is_multiple_of(4) {
            return bad(
                "out_hidden",
                self.out_hidden,
                "must be a positive multiple of 4",
            );
        }
        if let Some(s) = self.small {
            let f = self.size / s.max(1);
            if s == 0 || f * s != self.size || f < 2 || !f.is_power_of_two() {
                return bad(
                    "small image size",
                    s,
                    "must divide the image size by a power of two (2, 4, ...)",
                );
            }
        }
        Ok(())
    }

    /// The maps of a batch of `batch` images.
    pub fn grid(&self, batch: usize) -> Grid {
        Grid {
            batch,
            height: self.size,
            width: self.size,
        }
    }

    /// The recurrent layer of this model over `batch` images, None for PixelCNN.
    pub fn rnn_layer(&self, batch: usize) -> Option<rnn::Layer> {
        self.arch.rnn().map(|kind| rnn::Layer {
            kind,
            grid: self.grid(batch),
            maps: 2 * self.hidden,
            hidden: self.hidden,
            groups: self.channels,
            shift: 1,
        })
    }

    /// Trainable values: every causal tap's weights and every bias, the LSTMs'
    /// state-to-state weights and initial states.
    pub fn parameters(&self) -> usize {
        let layout = ParamLayout::new(self);
        let convs: usize = layout
            .convs
            .iter()
            .map(|c| c.shape.weight_len() + c.shape.out_ch)
            .sum();
        convs + layout.vectors.iter().map(|v| v.len).sum::<usize>()
    }

    /// Multiply-adds of one forward pass over one image: every convolution's causal
    /// taps at every pixel, and the state-to-state term at every position of every scan.
    pub fn forward_macs(&self) -> usize {
        let layout = ParamLayout::new(self);
        let pixels = self.size * self.size;
        let convs: usize = layout.convs.iter().map(|c| c.shape.macs(pixels)).sum();
        let scans = self.rnn_layer(1).map_or(0, |l| {
            self.layers * l.kind.directions() * l.scan().positions() * l.kss_len()
        });
        convs + scans
    }

    /// Sub-pixels per image, the "dims" of bits/dim.
    pub fn dims(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// The transposed convolutions that upsample the small image (none for an
    /// unconditional model): each doubles the size, the first from the C colours to h
    /// maps, the others h to h.
    pub fn upsampling(&self) -> Vec<DeconvShape> {
        let Some(s) = self.small else {
            return Vec::new();
        };
        let layers = (self.size / s).trailing_zeros() as usize;
        let h = self.hidden;
        (0..layers)
            .map(|j| DeconvShape::doubling(if j == 0 { self.channels } else { h }, h))
            .collect()
    }
}

/// The small image of the Multi-Scale PixelRNN: every `size / small`-th pixel of each
/// of `images` (`[N, size, size, C]`, bytes or any per-sub-pixel value), from the
/// top left, `[N, small, small, C]`.
pub fn subsample<T: Copy>(images: &[T], size: usize, channels: usize, small: usize) -> Vec<T> {
    let f = size / small;
    let mut out = Vec::with_capacity(images.len() / (f * f));
    for image in images.chunks(size * size * channels) {
        for r in 0..small {
            for c in 0..small {
                let at = ((r * f) * size + c * f) * channels;
                out.extend_from_slice(&image[at..at + channels]);
            }
        }
    }
    out
}

/// A parameter tensor that is not a convolution: K^ss or an initial state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorParam {
    /// Its checkpoint name.
    pub name: String,
    /// Its shape, as stored.
    pub shape: Vec<usize>,
    /// Offset in the flat parameter buffer, a multiple of 64.
    pub offset: usize,
    /// Values.
    pub len: usize,
}

/// Where one direction of a recurrent layer keeps its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionIndex {
    /// K^is, an index into [`ParamLayout::convs`].
    pub kis: usize,
    /// K^ss, an index into [`ParamLayout::vectors`].
    pub kss: usize,
    /// h_0 and c_0, an index into [`ParamLayout::vectors`].
    pub init: usize,
}

/// One residual layer's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A PixelCNN block: its three convolutions.
    Conv([usize; 3]),
    /// A recurrent layer: each direction's LSTM, then K^out.
    Recurrent {
        /// One (Row LSTM) or two (Diagonal BiLSTM: left to right, right to left).
        dirs: Vec<DirectionIndex>,
        /// K^out, an index into [`ParamLayout::convs`].
        out: usize,
    },
}

/// Where each parameter tensor sits in the flat parameter buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    /// Each convolution's padded layout, the 7x7 layer first, the output stack last.
    pub convs: Vec<ConvLayout>,
    /// Each convolution's offset, in values, a multiple of 64.
    pub offsets: Vec<usize>,
    /// Each convolution's checkpoint name.
    pub conv_names: Vec<String>,
    /// The other tensors.
    pub vectors: Vec<VectorParam>,
    /// The residual layers.
    pub blocks: Vec<Block>,
    /// A conditional model's upsampling layers (see [`ModelConfig::small`]), indices
    /// into [`ParamLayout::vectors`] of each one's weights, its bias right after them.
    pub upsampling: Vec<usize>,
    /// A conditional model's 1x1 convolutions of the upsampled maps, per block: one per
    /// LSTM direction, or one for a PixelCNN block; indices into
    /// [`ParamLayout::convs`]. Empty for an unconditional model.
    pub cond: Vec<Vec<usize>>,
    /// Total values.
    pub len: usize,
}

impl ParamLayout {
    /// The layout of `config`'s parameters.
    pub fn new(config: &ModelConfig) -> Self {
        let mut layout = Self {
            convs: Vec::new(),
            offsets: Vec::new(),
            conv_names: Vec::new(),
            vectors: Vec::new(),
            blocks: Vec::new(),
            upsampling: Vec::new(),
            cond: Vec::new(),
            len: 0,
        };
        let g = config.channels;
        let h = config.hidden;
        let shape = |k, in_ch, out_ch, mask| ConvShape::new(k, in_ch, out_ch, mask, g);

        layout.conv("input", shape(7, g, 2 * h, Mask::A));
        for l in 0..config.layers {
            let block = match config.rnn_layer(1) {
                None => Block::Conv([
                    layout.conv(&format!("block{l}.conv1"), shape(1, 2 * h, h, Mask::B)),
                    layout.conv(&format!("block{l}.conv2"), shape(3, h, h, Mask::B)),
                    layout.conv(&format!("block{l}.conv3"), shape(1, h, 2 * h, Mask::B)),
                ]),
                Some(layer) => {
                    let dirs = (0..layer.kind.directions())
                        .map(|d| {
                            let name = match (layer.kind, d) {
                                (Kind::Row, _) => format!("layer{l}"),
                                (Kind::Diagonal, 0) => format!("layer{l}.lr"),
                                (Kind::Diagonal, _) => format!("layer{l}.rl"),
                            };
                            let taps = layer.kind.taps().len();
                            DirectionIndex {
                                kis: layout.conv(&format!("{name}.is"), layer.kis()),
                                kss: layout.vector(&format!("{name}.ss.weight"), &[taps, h, 4 * h]),
                                init: layout.vector(&format!("{name}.init"), &[2, h]),
                            }
                        })
                        .collect();
                    let out = layout.conv(&format!("layer{l}.out"), layer.out());
                    Block::Recurrent { dirs, out }
                }
            };
            layout.blocks.push(block);
        }
        // The conditioning: the upsampling, then each block's 1x1 convolutions of it
        // (one colour group: every map may see the whole small image). The output
        // stack stays last.
        if config.small.is_some() {
            for (j, d) in config.upsampling().iter().enumerate() {
                let w = layout.vector(
                    &format!("upsample{j}.weight"),
                    &[d.k, d.k, d.in_ch, d.out_ch],
                );
                let b = layout.vector(&format!("upsample{j}.bias"), &[d.out_ch]);
                assert_eq!(
                    layout.vectors[b].offset,
                    layout.vectors[w].offset + d.weight_len(),
                    "an upsampling layer's bias follows its weights"
                );
                layout.upsampling.push(w);
            }
            let unmasked = |out_ch| ConvShape::new(1, h, out_ch, Mask::B, 1);
            for l in 0..layout.blocks.len() {
                let convs = match &layout.blocks[l] {
                    Block::Conv(_) => vec![(format!("block{l}.cond"), h)],
                    Block::Recurrent { dirs, .. } if dirs.len() == 1 => {
                        vec![(format!("layer{l}.cond"), 4 * h)]
                    }
                    Block::Recurrent { .. } => vec![
                        (format!("layer{l}.lr.cond"), 4 * h),
                        (format!("layer{l}.rl.cond"), 4 * h),
                    ],
                };
                let indices = convs
                    .into_iter()
                    .map(|(name, ch)| layout.conv(&name, unmasked(ch)))
                    .collect();
                layout.cond.push(indices);
            }
        }
        layout.conv("output.conv1", shape(1, 2 * h, config.out_hidden, Mask::B));
        layout.conv(
            "output.conv2",
            shape(1, config.out_hidden, g * LEVELS, Mask::B),
        );
        layout
    }

    /// Upsampling layer `j`'s weights then bias, as one slice of `flat`.
    pub fn upsampling_params<'a>(
        &self,
        flat: &'a [f32],
        config: &ModelConfig,
        j: usize,
    ) -> &'a [f32] {
        let len = config.upsampling()[j].len();
        &flat[self.vectors[self.upsampling[j]].offset..][..len]
    }

    /// Places the next `len` values, 64-aligned so that each tensor can be bound alone.
    fn place(&mut self, len: usize) -> usize {
        let offset = self.len;
        self.len += len.div_ceil(64) * 64;
        offset
    }

    fn conv(&mut self, name: &str, shape: ConvShape) -> usize {
        let layout = ConvLayout::new(shape);
        let offset = self.place(layout.len());
        self.convs.push(layout);
        self.offsets.push(offset);
        self.conv_names.push(name.to_string());
        self.convs.len() - 1
    }

    fn vector(&mut self, name: &str, shape: &[usize]) -> usize {
        let len = shape.iter().product();
        let offset = self.place(len);
        self.vectors.push(VectorParam {
            name: name.to_string(),
            shape: shape.to_vec(),
            offset,
            len,
        });
        self.vectors.len() - 1
    }

    /// Unpacks conv `i` into (`[T, C_in, C_out]` weights, `[C_out]` bias).
    pub fn unpack(&self, flat: &[f32], i: usize) -> (Vec<f32>, Vec<f32>) {
        self.convs[i].unpack(&flat[self.offsets[i]..][..self.convs[i].len()])
    }

    /// Writes conv `i`'s weights and bias into the flat buffer.
    pub fn pack_into(&self, flat: &mut [f32], i: usize, w: &[f32], b: &[f32]) {
        let packed = self.convs[i].pack(w, b);
        flat[self.offsets[i]..][..packed.len()].copy_from_slice(&packed);
    }

    /// The values of vector tensor `i`.
    pub fn vector_of<'a>(&self, flat: &'a [f32], i: usize) -> &'a [f32] {
        let v = &self.vectors[i];
        &flat[v.offset..][..v.len]
    }

    /// The values of vector tensor `i`, to write.
    pub fn vector_mut<'a>(&self, flat: &'a mut [f32], i: usize) -> &'a mut [f32] {
        let v = &self.vectors[i];
        &mut flat[v.offset..][..v.len]
    }

    /// The weights of recurrent layer `block` (its index in [`ParamLayout::blocks`]).
    pub fn rnn_weights(&self, flat: &[f32], block: usize) -> rnn::Weights {
        let Block::Recurrent { dirs, out } = &self.blocks[block] else {
            panic!("block {block} is not a recurrent layer");
        };
        rnn::Weights {
            dirs: dirs
                .iter()
                .map(|d| rnn::Direction {
                    kis: self.unpack(flat, d.kis),
                    kss: self.vector_of(flat, d.kss).to_vec(),
                    init: self.vector_of(flat, d.init).to_vec(),
                })
                .collect(),
            out: self.unpack(flat, *out),
        }
    }

    /// Writes the weights (or gradients) of recurrent layer `block` into the flat buffer.
    pub fn pack_rnn_into(&self, flat: &mut [f32], block: usize, w: &rnn::Weights) {
        let Block::Recurrent { dirs, out } = &self.blocks[block] else {
            panic!("block {block} is not a recurrent layer");
        };
        for (d, dw) in dirs.iter().zip(&w.dirs) {
            self.pack_into(flat, d.kis, &dw.kis.0, &dw.kis.1);
            self.vector_mut(flat, d.kss).copy_from_slice(&dw.kss);
            self.vector_mut(flat, d.init).copy_from_slice(&dw.init);
        }
        self.pack_into(flat, *out, &w.out.0, &w.out.1);
    }

    /// Whether conv `i` is an LSTM's input-to-state convolution.
    pub fn is_kis(&self, i: usize) -> bool {
        self.convs[i].shape.out_run == 4
    }
}

/// Random masked initial parameters, packed: weights uniform with variance 1 / fan-in
/// (counting the causal taps), biases zero but for the LSTMs' forget gates (one), and
/// zero initial states.
pub fn init_params(config: &ModelConfig, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(config);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut flat = vec![0.0; layout.len];
    for (i, c) in layout.convs.iter().enumerate() {
        let s = c.shape;
        let a = (3.0 / (s.taps() * s.in_ch) as f32).sqrt();
        let mut w: Vec<f32> = (0..s.weight_len())
            .map(|_| rng.random_range(-a..a))
            .collect();
        conv::cpu::apply_mask(&s, &mut w);
        let forget = |co: usize| (layout.is_kis(i) && co % 4 == 1) as u8 as f32;
        let b: Vec<f32> = (0..s.out_ch).map(forget).collect();
        layout.pack_into(&mut flat, i, &w, &b);
    }
    for v in &layout.vectors {
        let fan_in = if v.name.ends_with(".ss.weight") {
            // [T, n, 4n]: the fan-in is T n.
            v.shape[0] * v.shape[1]
        } else if v.name.starts_with("upsample") && v.name.ends_with(".weight") {
            // [k, k, C_in, C_out] at stride 2: each output sees k k / 4 taps of C_in.
            v.shape[0] * v.shape[1] * v.shape[2] / 4
        } else {
            continue;
        };
        let a = (3.0 / fan_in as f32).sqrt();
        for x in &mut flat[v.offset..][..v.len] {
            *x = rng.random_range(-a..a);
        }
    }
    flat
}

/// The network's input for images `[N, H, W, C]` of bytes: intensities scaled to [-1, 1].
pub fn encode_input(images: &[u8]) -> Vec<f32> {
    images.iter().map(|&v| v as f32 / 127.5 - 1.0).collect()
}

/// The CPU reference models: forward pass, loss and gradients with plain loops.
pub mod cpu {
    use super::*;
    use crate::ops::cpu::{relu, relu_backward, softmax_nll};

    /// Logits `[P, C * 256]` for `images` `[N, H, W, C]` (given their subsampled
    /// small images, for a conditional model).
    pub fn logits(config: &ModelConfig, params: &[f32], images: &[u8]) -> Vec<f32> {
        forward(config, params, images, None).logits
    }

    /// Logits `[P, C * 256]` for `images` given the small images `small`
    /// (`[N, s, s, C]`) of a conditional model.
    pub fn logits_given(
        config: &ModelConfig,
        params: &[f32],
        images: &[u8],
        small: &[u8],
    ) -> Vec<f32> {
        forward(config, params, images, Some(small)).logits
    }

    /// A conditional model's conditioning: the upsampling layers' outputs (after
    /// their ReLUs; the last is the map the 1x1 convolutions read) and each block's
    /// terms.
    struct Conditioning {
        small: Vec<f32>,
        ups: Vec<Vec<f32>>,
        terms: Vec<Vec<Vec<f32>>>,
    }

    fn conditioning(
        config: &ModelConfig,
        layout: &ParamLayout,
        params: &[f32],
        grid: Grid,
        small: &[u8],
    ) -> Conditioning {
        let s = config.small.expect("a conditional model");
        let small = encode_input(small);
        let mut ups: Vec<Vec<f32>> = Vec::new();
        let mut n = s;
        for (j, d) in config.upsampling().iter().enumerate() {
            let x = ups.last().unwrap_or(&small);
            let y = deconv::cpu::forward(d, n, x, layout.upsampling_params(params, config, j));
            ups.push(relu(&y));
            n *= 2;
        }
        let u = ups.last().expect("at least one upsampling layer");
        let terms = layout
            .cond
            .iter()
            .map(|convs| {
                convs
                    .iter()
                    .map(|&i| {
                        let (w, b) = layout.unpack(params, i);
                        conv::cpu::forward(&layout.convs[i].shape, grid, u, &w, &b)
                    })
                    .collect()
            })
            .collect();
        Conditioning { small, ups, terms }
    }

    /// What one residual layer's backward pass needs.
    enum BlockForward {
        /// The three ReLU outputs feeding a PixelCNN block's convolutions.
        Conv([Vec<f32>; 3]),
        /// A recurrent layer's input and forward pass.
        Recurrent(Vec<f32>, rnn::cpu::Forward),
    }

    struct Forward {
        grid: Grid,
        x: Vec<f32>,
        cond: Option<Conditioning>,
        blocks: Vec<BlockForward>,
        ro: Vec<f32>,
        ro2: Vec<f32>,
        logits: Vec<f32>,
    }

    fn forward(
        config: &ModelConfig,
        params: &[f32],
        images: &[u8],
        small: Option<&[u8]>,
    ) -> Forward {
        let layout = ParamLayout::new(config);
        let batch = images.len() / config.dims();
        let grid = config.grid(batch);
        let conv = |i: usize, x: &[f32]| {
            let (w, b) = layout.unpack(params, i);
            conv::cpu::forward(&layout.convs[i].shape, grid, x, &w, &b)
        };
        let x = encode_input(images);
        let cond = config.small.map(|s| {
            let given = match small {
                Some(v) => v.to_vec(),
                None => subsample(images, config.size, config.channels, s),
            };
            conditioning(config, &layout, params, grid, &given)
        });
        let term = |l: usize, d: usize| cond.as_ref().map(|c| c.terms[l][d].as_slice());

        let mut h = conv(0, &x);
        let mut blocks = Vec::new();
        for (l, block) in layout.blocks.iter().enumerate() {
            match block {
                Block::Conv([c1, c2, c3]) => {
                    let r1 = relu(&h);
                    let mut b1 = conv(*c1, &r1);
                    if let Some(t) = term(l, 0) {
                        b1.iter_mut().zip(t).for_each(|(a, b)| *a += b);
                    }
                    let r2 = relu(&b1);
                    let r3 = relu(&conv(*c2, &r2));
                    let b3 = conv(*c3, &r3);
                    h.iter_mut().zip(&b3).for_each(|(a, b)| *a += b);
                    blocks.push(BlockForward::Conv([r1, r2, r3]));
                }
                Block::Recurrent { .. } => {
                    let layer = config.rnn_layer(batch).expect("a recurrent model");
                    let w = layout.rnn_weights(params, l);
                    let terms: Vec<&[f32]> = (0..w.dirs.len()).filter_map(|d| term(l, d)).collect();
                    let f = rnn::cpu::forward_given(&layer, &w, &h, &terms);
                    let next = f.y.clone();
                    blocks.push(BlockForward::Recurrent(std::mem::replace(&mut h, next), f));
                }
            }
        }

        let n = layout.convs.len();
        let ro = relu(&h);
        let ro2 = relu(&conv(n - 2, &ro));
        let logits = conv(n - 1, &ro2);
        Forward {
            grid,
            x,
            cond,
            blocks,
            ro,
            ro2,
            logits,
        }
    }

    /// Targets `[P, C]` for `images`: the intensities themselves.
    pub fn targets(images: &[u8]) -> Vec<u32> {
        images.iter().map(|&v| v as u32).collect()
    }

    /// (NLL per sub-pixel in nats, gradient of the mean NLL w.r.t. the packed
    /// parameters, gradient of the mean NLL w.r.t. the encoded input).
    pub fn loss_and_grad(
        config: &ModelConfig,
        params: &[f32],
        images: &[u8],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let f = forward(config, params, images, None);
        let target = targets(images);
        let (nll, dlogits) = softmax_nll(&f.logits, &target, 1.0 / target.len() as f32);
        let (dparams, dx) = backward(config, params, &f, &dlogits);
        (nll, dparams, dx)
    }

    /// Gradients w.r.t. the packed parameters and the encoded input, given the
    /// gradient w.r.t. the logits of `images`.
    pub fn backward_from_logits(
        config: &ModelConfig,
        params: &[f32],
        images: &[u8],
        dlogits: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        backward(
            config,
            params,
            &forward(config, params, images, None),
            dlogits,
        )
    }

    /// [`backward_from_logits`] of a conditional model given the small images
    /// `small`, also returning the gradient w.r.t. the encoded small images.
    pub fn backward_from_logits_given(
        config: &ModelConfig,
        params: &[f32],
        images: &[u8],
        small: &[u8],
        dlogits: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let f = forward(config, params, images, Some(small));
        let (mut dparams, dx, dterms) = backward_terms(config, params, &f, dlogits);
        let dsmall = conditioning_backward(config, params, &f, &dterms, &mut dparams);
        (dparams, dx, dsmall)
    }

    fn backward(
        config: &ModelConfig,
        params: &[f32],
        f: &Forward,
        dlogits: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let (mut dparams, dx, dterms) = backward_terms(config, params, f, dlogits);
        if f.cond.is_some() {
            conditioning_backward(config, params, f, &dterms, &mut dparams);
        }
        (dparams, dx)
    }

    /// Backward through the conditioning from the gradients of its terms, into
    /// `dparams`; returns the gradient w.r.t. the encoded small images.
    fn conditioning_backward(
        config: &ModelConfig,
        params: &[f32],
        f: &Forward,
        dterms: &[Vec<Vec<f32>>],
        dparams: &mut [f32],
    ) -> Vec<f32> {
        let layout = ParamLayout::new(config);
        let c = f.cond.as_ref().expect("a conditional model");
        let u = c.ups.last().expect("at least one upsampling layer");
        let mut du = vec![0.0; u.len()];
        for (convs, dts) in layout.cond.iter().zip(dterms) {
            for (&i, dt) in convs.iter().zip(dts) {
                let s = layout.convs[i].shape;
                let (w, _) = layout.unpack(params, i);
                let (dw, db) = conv::cpu::backward_params(&s, f.grid, u, dt);
                layout.pack_into(dparams, i, &dw, &db);
                let through = conv::cpu::backward_input(&s, f.grid, dt, &w);
                du.iter_mut().zip(&through).for_each(|(a, b)| *a += b);
            }
        }
        let shapes = config.upsampling();
        let mut n = config.small.expect("a conditional model") << shapes.len();
        for (j, d) in shapes.iter().enumerate().rev() {
            n /= 2;
            let dy = relu_backward(&du, &c.ups[j]);
            let x = if j == 0 { &c.small } else { &c.ups[j - 1] };
            let p = layout.upsampling_params(params, config, j);
            let (dx, dp) = deconv::cpu::backward(d, n, x, p, &dy);
            let at = layout.vectors[layout.upsampling[j]].offset;
            dparams[at..][..dp.len()].copy_from_slice(&dp);
            du = dx;
        }
        du
    }

    /// The backward pass down to the input, with the gradients of the conditioning
    /// terms (per block and direction; empty for an unconditional model).
    #[allow(clippy::type_complexity)]
    fn backward_terms(
        config: &ModelConfig,
        params: &[f32],
        f: &Forward,
        dlogits: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<Vec<Vec<f32>>>) {
        let layout = ParamLayout::new(config);
        let mut dterms = vec![Vec::new(); layout.cond.len()];
        let mut dparams = vec![0.0; layout.len];
        let conv_back = |dparams: &mut [f32], i: usize, x: &[f32], dy: &[f32]| {
            let s = layout.convs[i].shape;
            let (w, _) = layout.unpack(params, i);
            let (dw, db) = conv::cpu::backward_params(&s, f.grid, x, dy);
            layout.pack_into(dparams, i, &dw, &db);
            conv::cpu::backward_input(&s, f.grid, dy, &w)
        };

        let n = layout.convs.len();
        let d_ro2 = conv_back(&mut dparams, n - 1, &f.ro2, dlogits);
        let d_ro = conv_back(&mut dparams, n - 2, &f.ro, &relu_backward(&d_ro2, &f.ro2));
        let mut dh = relu_backward(&d_ro, &f.ro);
        for (l, (block, fb)) in layout.blocks.iter().zip(&f.blocks).enumerate().rev() {
            match (block, fb) {
                (Block::Conv([c1, c2, c3]), BlockForward::Conv([r1, r2, r3])) => {
                    let d_r3 = conv_back(&mut dparams, *c3, r3, &dh);
                    let d_r2 = conv_back(&mut dparams, *c2, r2, &relu_backward(&d_r3, r3));
                    let d_b1 = relu_backward(&d_r2, r2);
                    let d_r1 = conv_back(&mut dparams, *c1, r1, &d_b1);
                    if f.cond.is_some() {
                        dterms[l].push(d_b1);
                    }
                    let d_h = relu_backward(&d_r1, r1);
                    dh.iter_mut().zip(&d_h).for_each(|(a, b)| *a += b);
                }
                (Block::Recurrent { .. }, BlockForward::Recurrent(x, fl)) => {
                    let layer = config.rnn_layer(f.grid.batch).expect("a recurrent model");
                    let w = layout.rnn_weights(params, l);
                    let (dx, grads, dpre) = rnn::cpu::backward_full(&layer, &w, x, fl, &dh);
                    layout.pack_rnn_into(&mut dparams, l, &grads);
                    if f.cond.is_some() {
                        dterms[l] = dpre;
                    }
                    dh = dx;
                }
                _ => unreachable!("forward and layout blocks line up"),
            }
        }
        let dx = conv_back(&mut dparams, 0, &f.x, &dh);
        (dparams, dx, dterms)
    }
}

/// Checks that `len` image bytes hold whole images of `config`'s shape.
pub fn check_images(config: &ModelConfig, len: usize) -> Result<usize, Error> {
    if len == 0 || !len.is_multiple_of(config.dims()) {
        return Err(Error::Data(format!(
            "{len} bytes are not whole {}x{}x{} images",
            config.size, config.size, config.channels
        )));
    }
    Ok(len / config.dims())
}
