//! PixelCNN (van den Oord et al., 2016, section 3.4): a 7x7 mask-A convolution,
//! residual blocks around 3x3 mask-B convolutions, and a ReLU / 1x1 output stack
//! giving a 256-way softmax per sub-pixel.
//!
//! Block i maps the residual stream h (2h' maps, h' = `hidden`) to
//! h + W3 * ReLU(W2 * ReLU(W1 * ReLU(h))), with W1 a 1x1 convolution down to h' maps,
//! W2 a 3x3 mask-B convolution, W3 a 1x1 convolution back to 2h'. Every convolution is
//! masked, so the colour groups stay causal through the 1x1 layers too.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::conv::{self, ConvLayout, ConvShape, Grid, Mask};
use crate::ops::LEVELS;
use crate::Error;

/// Architecture of a PixelCNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelCnnConfig {
    /// Colour channels of the images: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Image height and width.
    pub size: usize,
    /// Residual blocks after the 7x7 layer.
    pub layers: usize,
    /// h: maps inside a block; the residual stream has 2h.
    pub hidden: usize,
    /// Maps of the hidden 1x1 layer of the output stack.
    pub out_hidden: usize,
}

impl PixelCnnConfig {
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
        Ok(())
    }

    /// Every convolution in order: the 7x7 layer, three per block, two in the output.
    pub fn convs(&self) -> Vec<ConvShape> {
        let g = self.channels;
        let h = self.hidden;
        let shape = |k, in_ch, out_ch, mask| ConvShape::new(k, in_ch, out_ch, mask, g);
        let mut convs = vec![shape(7, self.channels, 2 * h, Mask::A)];
        for _ in 0..self.layers {
            convs.push(shape(1, 2 * h, h, Mask::B));
            convs.push(shape(3, h, h, Mask::B));
            convs.push(shape(1, h, 2 * h, Mask::B));
        }
        convs.push(shape(1, 2 * h, self.out_hidden, Mask::B));
        convs.push(shape(1, self.out_hidden, self.channels * LEVELS, Mask::B));
        convs
    }

    /// Trainable values: every causal tap's weights and every bias.
    pub fn parameters(&self) -> usize {
        self.convs().iter().map(|c| c.weight_len() + c.out_ch).sum()
    }

    /// Sub-pixels per image, the "dims" of bits/dim.
    pub fn dims(&self) -> usize {
        self.channels * self.size * self.size
    }
}

/// Where each convolution's parameters sit in the flat parameter buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    /// Each convolution's padded layout.
    pub convs: Vec<ConvLayout>,
    /// Each convolution's offset, in values, a multiple of 64.
    pub offsets: Vec<usize>,
    /// Total values.
    pub len: usize,
}

impl ParamLayout {
    /// The layout of `config`'s parameters.
    pub fn new(config: &PixelCnnConfig) -> Self {
        let convs: Vec<_> = config.convs().into_iter().map(ConvLayout::new).collect();
        let mut offsets = Vec::with_capacity(convs.len());
        let mut len = 0;
        for c in &convs {
            offsets.push(len);
            len += c.len().div_ceil(64) * 64;
        }
        Self {
            convs,
            offsets,
            len,
        }
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
}

/// Random masked initial parameters, packed: weights uniform with variance 1 / fan-in
/// (counting the causal taps), biases zero.
pub fn init_params(config: &PixelCnnConfig, seed: u64) -> Vec<f32> {
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
        layout.pack_into(&mut flat, i, &w, &vec![0.0; s.out_ch]);
    }
    flat
}

/// The network's input for images `[N, H, W, C]` of bytes: intensities scaled to [-1, 1].
pub fn encode_input(images: &[u8]) -> Vec<f32> {
    images.iter().map(|&v| v as f32 / 127.5 - 1.0).collect()
}

/// The CPU reference PixelCNN: forward pass, loss and gradients with plain loops.
pub mod cpu {
    use super::*;
    use crate::ops::cpu::{relu, relu_backward, softmax_nll};

    /// Logits `[P, C * 256]` for `images` `[N, H, W, C]`.
    pub fn logits(config: &PixelCnnConfig, params: &[f32], images: &[u8]) -> Vec<f32> {
        forward(config, params, images).logits
    }

    struct Forward {
        grid: Grid,
        x: Vec<f32>,
        // Per block: the three ReLU outputs feeding its convolutions.
        blocks: Vec<[Vec<f32>; 3]>,
        ro: Vec<f32>,
        ro2: Vec<f32>,
        logits: Vec<f32>,
    }

    fn forward(config: &PixelCnnConfig, params: &[f32], images: &[u8]) -> Forward {
        let layout = ParamLayout::new(config);
        let grid = Grid {
            batch: images.len() / config.dims(),
            height: config.size,
            width: config.size,
        };
        let conv = |i: usize, x: &[f32]| {
            let (w, b) = layout.unpack(params, i);
            conv::cpu::forward(&layout.convs[i].shape, grid, x, &w, &b)
        };
        let x = encode_input(images);

        let mut h = conv(0, &x);
        let mut blocks = Vec::new();
        for l in 0..config.layers {
            let r1 = relu(&h);
            let r2 = relu(&conv(1 + 3 * l, &r1));
            let r3 = relu(&conv(2 + 3 * l, &r2));
            let b3 = conv(3 + 3 * l, &r3);
            h.iter_mut().zip(&b3).for_each(|(a, b)| *a += b);
            blocks.push([r1, r2, r3]);
        }

        let n = layout.convs.len();
        let ro = relu(&h);
        let ro2 = relu(&conv(n - 2, &ro));
        let logits = conv(n - 1, &ro2);
        Forward {
            grid,
            x,
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
        config: &PixelCnnConfig,
        params: &[f32],
        images: &[u8],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let f = forward(config, params, images);
        let target = targets(images);
        let (nll, dlogits) = softmax_nll(&f.logits, &target, 1.0 / target.len() as f32);
        let (dparams, dx) = backward(config, params, &f, &dlogits);
        (nll, dparams, dx)
    }

    /// Gradients w.r.t. the packed parameters and the encoded input, given the
    /// gradient w.r.t. the logits of `images`.
    pub fn backward_from_logits(
        config: &PixelCnnConfig,
        params: &[f32],
        images: &[u8],
        dlogits: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        backward(config, params, &forward(config, params, images), dlogits)
    }

    fn backward(
        config: &PixelCnnConfig,
        params: &[f32],
        f: &Forward,
        dlogits: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let layout = ParamLayout::new(config);
        let mut dparams = vec![0.0; layout.len];
        let mut conv_back = |i: usize, x: &[f32], dy: &[f32]| {
            let s = layout.convs[i].shape;
            let (w, _) = layout.unpack(params, i);
            let (dw, db) = conv::cpu::backward_params(&s, f.grid, x, dy);
            layout.pack_into(&mut dparams, i, &dw, &db);
            conv::cpu::backward_input(&s, f.grid, dy, &w)
        };

        let n = layout.convs.len();
        let d_ro2 = conv_back(n - 1, &f.ro2, dlogits);
        let d_ro = conv_back(n - 2, &f.ro, &relu_backward(&d_ro2, &f.ro2));
        let mut dh = relu_backward(&d_ro, &f.ro);
        for l in (0..config.layers).rev() {
            let [r1, r2, r3] = &f.blocks[l];
            let d_r3 = conv_back(3 + 3 * l, r3, &dh);
            let d_r2 = conv_back(2 + 3 * l, r2, &relu_backward(&d_r3, r3));
            let d_r1 = conv_back(1 + 3 * l, r1, &relu_backward(&d_r2, r2));
            let d_h = relu_backward(&d_r1, r1);
            dh.iter_mut().zip(&d_h).for_each(|(a, b)| *a += b);
        }
        let dx = conv_back(0, &f.x, &dh);
        (dparams, dx)
    }
}

/// Checks that `len` image bytes hold whole images of `config`'s shape.
pub fn check_images(config: &PixelCnnConfig, len: usize) -> Result<usize, Error> {
    if len == 0 || !len.is_multiple_of(config.dims()) {
        return Err(Error::Data(format!(
            "{len} bytes are not whole {}x{}x{} images",
            config.size, config.size, config.channels
        )));
    }
    Ok(len / config.dims())
}
