//! Masked convolutions (masks A and B with the paper's R, G, B channel groups), on the
//! GPU and in a plain CPU twin.
//!
//! # Layout
//!
//! Feature maps are `[P, C]` with P = batch x height x width pixels in raster order and
//! channels last. A k x k kernel keeps only its causal taps (the rows above the centre,
//! then the centre row up to the centre), T = r k + r + 1 of them for r = k / 2, so
//! weights are `[T, C_in, C_out]` and tap t sits at [`tap_offset`]`(t, k)`. The centre
//! tap, the last, carries the colour mask: an output in colour group g sees inputs of
//! groups before g, and of g itself under mask B.

use crate::gpu::{grid_1d, round_up, Dispatch, Gpu, View};

/// Which raster-order mask a convolution uses (van den Oord et al., 2016, Figure 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// First layer: no connection from a colour to itself at the centre.
    A,
    /// Later layers: a colour's own maps are visible at the centre.
    B,
}

/// Shape of one masked convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Kernel size k (odd).
    pub k: usize,
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Mask A or B.
    pub mask: Mask,
    /// Colour groups: 3 for RGB, 1 for grey.
    pub groups: usize,
    /// Only the centre row's taps: the k x 1 convolution along the row of the Row
    /// LSTM's input-to-state term. Otherwise the rows above the centre too.
    pub row_only: bool,
    /// Output channels come in runs of this many that share a colour group: 1 for
    /// plain maps, 4 for LSTM gate pre-activations (the gates of one state channel).
    pub out_run: usize,
}

/// The (dy, dx) offset of causal tap `t` of a `k` x `k` kernel.
pub fn tap_offset(t: usize, k: usize) -> (isize, isize) {
    let r = k / 2;
    if t < r * k {
        ((t / k) as isize - r as isize, (t % k) as isize - r as isize)
    } else {
        (0, (t - r * k) as isize - r as isize)
    }
}

/// The colour group of channel `c` out of `count` split into `groups`.
pub fn colour_group(c: usize, count: usize, groups: usize) -> usize {
    c * groups / count
}

impl ConvShape {
    /// A k x k convolution with every causal tap, over plain maps.
    pub fn new(k: usize, in_ch: usize, out_ch: usize, mask: Mask, groups: usize) -> Self {
        Self {
            k,
            in_ch,
            out_ch,
            mask,
            groups,
            row_only: false,
            out_run: 1,
        }
    }

    /// Number of causal taps T.
    pub fn taps(&self) -> usize {
        let r = self.k / 2;
        r * self.k + r + 1 - self.first_tap()
    }

    /// Where this shape's taps start among the causal taps of a k x k kernel.
    pub fn first_tap(&self) -> usize {
        if self.row_only {
            self.k / 2 * self.k
        } else {
            0
        }
    }

    /// The (dy, dx) offset of tap `t`.
    pub fn offset(&self, t: usize) -> (isize, isize) {
        tap_offset(t + self.first_tap(), self.k)
    }

    /// Number of stored weights, T x C_in x C_out.
    pub fn weight_len(&self) -> usize {
        self.taps() * self.in_ch * self.out_ch
    }

    /// Whether weight (t, ci, co) survives the mask.
    pub fn kept(&self, t: usize, ci: usize, co: usize) -> bool {
        if t + 1 < self.taps() {
            return true;
        }
        let gi = colour_group(ci, self.in_ch, self.groups);
        let go = colour_group(co / self.out_run, self.out_ch / self.out_run, self.groups);
        gi < go || (self.mask == Mask::B && gi == go)
    }

    /// Multiply-adds of one forward pass over `pixels` pixels, counting every stored
    /// (causal) tap.
    pub fn macs(&self, pixels: usize) -> usize {
        pixels * self.weight_len()
    }
}

/// Geometry of the feature maps a convolution runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Images in the batch.
    pub batch: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Grid {
    /// Pixels P = batch x height x width.
    pub fn pixels(&self) -> usize {
        self.batch * self.height * self.width
    }

    /// The pixel at offset (dy, dx) from pixel `p` in the same image, if inside it.
    pub fn neighbour(&self, p: usize, (dy, dx): (isize, isize)) -> Option<usize> {
        let hw = self.height * self.width;
        let row = ((p % hw) / self.width) as isize + dy;
        let col = (p % self.width) as isize + dx;
        let inside =
            row >= 0 && row < self.height as isize && col >= 0 && col < self.width as isize;
        inside.then(|| (p as isize + dy * self.width as isize + dx) as usize)
    }
}

/// Plain CPU twins of the convolution kernels.
pub mod cpu {
    use super::*;

    /// y[p, co] = b[co] + sum over t, ci of x[p + offset(t), ci] w[t, ci, co].
    pub fn forward(s: &ConvShape, g: Grid, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; g.pixels() * s.out_ch];
        for p in 0..g.pixels() {
            let out = &mut y[p * s.out_ch..(p + 1) * s.out_ch];
            out.copy_from_slice(b);
            for t in 0..s.taps() {
                let Some(q) = g.neighbour(p, s.offset(t)) else {
                    continue;
                };
                for ci in 0..s.in_ch {
                    let xv = x[q * s.in_ch + ci];
                    let row = &w[(t * s.in_ch + ci) * s.out_ch..][..s.out_ch];
                    for (o, wv) in out.iter_mut().zip(row) {
                        *o += xv * wv;
                    }
                }
            }
        }
        y
    }

    /// dx[q, ci] = sum over t, co of dy[q - offset(t), co] w[t, ci, co].
    pub fn backward_input(s: &ConvShape, g: Grid, dy: &[f32], w: &[f32]) -> Vec<f32> {
        let mut dx = vec![0.0; g.pixels() * s.in_ch];
        for p in 0..g.pixels() {
            for t in 0..s.taps() {
                let Some(q) = g.neighbour(p, s.offset(t)) else {
                    continue;
                };
                let grad = &dy[p * s.out_ch..(p + 1) * s.out_ch];
                for ci in 0..s.in_ch {
                    let row = &w[(t * s.in_ch + ci) * s.out_ch..][..s.out_ch];
                    dx[q * s.in_ch + ci] += grad.iter().zip(row).map(|(a, b)| a * b).sum::<f32>();
                }
            }
        }
        dx
    }

    /// (dw, db): dw[t, ci, co] = mask(t, ci, co) sum over p of x[p + offset(t), ci] dy[p, co],
    /// db[co] = sum over p of dy[p, co].
    pub fn backward_params(s: &ConvShape, g: Grid, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut dw = vec![0.0; s.weight_len()];
        let mut db = vec![0.0; s.out_ch];
        for p in 0..g.pixels() {
            let grad = &dy[p * s.out_ch..(p + 1) * s.out_ch];
            for (d, v) in db.iter_mut().zip(grad) {
                *d += v;
            }
            for t in 0..s.taps() {
                let Some(q) = g.neighbour(p, s.offset(t)) else {
                    continue;
                };
                for ci in 0..s.in_ch {
                    let xv = x[q * s.in_ch + ci];
                    let row = &mut dw[(t * s.in_ch + ci) * s.out_ch..][..s.out_ch];
                    for (d, v) in row.iter_mut().zip(grad) {
                        *d += xv * v;
                    }
                }
            }
        }
        apply_mask(s, &mut dw);
        (dw, db)
    }

    /// Zeroes the weights that the mask removes.
    pub fn apply_mask(s: &ConvShape, w: &mut [f32]) {
        for t in 0..s.taps() {
            for ci in 0..s.in_ch {
                for co in 0..s.out_ch {
                    if !s.kept(t, ci, co) {
                        w[(t * s.in_ch + ci) * s.out_ch + co] = 0.0;
                    }
                }
            }
        }
    }
}

/// The parameters of [`ConvParams`]/`GradParams` in the shaders.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ForwardUniform {
    pixels: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    dir: i32,
    has_bias: u32,
    tap0: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GradUniform {
    pixels: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    rows: u32,
    chunk: u32,
    chunks: u32,
    mask_b: u32,
    groups: u32,
    tap0: u32,
    out_run: u32,
    _pad: u32,
}

/// Pixels summed by one invocation of the weight-gradient kernel.
const GRAD_CHUNK: usize = 256;

/// Output channels of the weights are padded to a multiple of this: the widest
/// column block of any kernel (32 in the subgroup kernels, 16 in the portable ones).
pub const COL_PAD: usize = 32;

/// The GPU layout of one convolution's parameters: weights `[T, C_in, NP]` with
/// NP = C_out rounded up to [`COL_PAD`] (zero columns past C_out), then the bias `[NP]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvLayout {
    /// The convolution.
    pub shape: ConvShape,
    /// Output channels padded to 16.
    pub out_pad: usize,
}

impl ConvLayout {
    /// The layout of `shape`.
    pub fn new(shape: ConvShape) -> Self {
        Self {
            shape,
            out_pad: round_up(shape.out_ch, COL_PAD),
        }
    }

    /// Padded weight values.
    pub fn weight_len(&self) -> usize {
        self.shape.taps() * self.shape.in_ch * self.out_pad
    }

    /// Where the bias starts: after the weights, aligned to 64 values (256 bytes) so
    /// that it can be bound on its own.
    pub fn bias_offset(&self) -> usize {
        round_up(self.weight_len(), 64)
    }

    /// Padded weights followed by the padded bias.
    pub fn len(&self) -> usize {
        self.bias_offset() + self.out_pad
    }

    /// Whether the layout holds no values (never, for a real convolution).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packs `[T, C_in, C_out]` weights and a `[C_out]` bias into the padded layout.
    pub fn pack(&self, w: &[f32], b: &[f32]) -> Vec<f32> {
        let s = self.shape;
        let mut out = vec![0.0; self.len()];
        for r in 0..s.taps() * s.in_ch {
            out[r * self.out_pad..][..s.out_ch].copy_from_slice(&w[r * s.out_ch..][..s.out_ch]);
        }
        out[self.bias_offset()..][..s.out_ch].copy_from_slice(b);
        out
    }

    /// Unpacks the padded layout into (`[T, C_in, C_out]` weights, `[C_out]` bias).
    pub fn unpack(&self, packed: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let s = self.shape;
        let mut w = Vec::with_capacity(s.weight_len());
        for r in 0..s.taps() * s.in_ch {
            w.extend_from_slice(&packed[r * self.out_pad..][..s.out_ch]);
        }
        let b = packed[self.bias_offset()..][..s.out_ch].to_vec();
        (w, b)
    }
}

/// One convolution recorded on the GPU for fixed buffers: its forward launch and,
/// when built with gradients, the launches of its backward pass.
#[derive(Debug, Clone)]
pub struct ConvOp {
    /// y = conv(x).
    pub forward: Vec<Dispatch>,
    /// dW and db into the gradient buffer.
    pub weight_grad: Vec<Dispatch>,
    /// dx, when an input gradient is wanted.
    pub input_grad: Vec<Dispatch>,
}

/// The buffers one [`ConvOp`] binds.
#[derive(Debug, Clone)]
pub struct ConvBuffers<'a> {
    /// Input maps `[P, C_in]`.
    pub x: &'a View,
    /// Packed parameters (see [`ConvLayout`]).
    pub params: &'a View,
    /// Output maps `[P, C_out]`.
    pub y: &'a View,
    /// Gradient of the loss w.r.t. y, `[P, C_out]`: set to record a backward pass.
    pub dy: Option<&'a View>,
    /// Where the packed parameter gradient goes, if wanted.
    pub dparams: Option<&'a View>,
    /// Where the input gradient `[P, C_in]` goes, if wanted.
    pub dx: Option<&'a View>,
}

impl ConvOp {
    /// Records the launches of one convolution over `grid`.
    pub fn new(gpu: &Gpu, layout: &ConvLayout, grid: Grid, b: &ConvBuffers<'_>) -> Self {
        let s = layout.shape;
        let k = &gpu.kernels;
        let pixels = grid.pixels();
        let weights = View {
            len: layout.weight_len(),
            ..b.params.clone()
        };
        let bias = View {
            offset: b.params.offset + layout.bias_offset(),
            len: layout.out_pad,
            ..b.params.clone()
        };
        let fwd = ForwardUniform {
            pixels: pixels as u32,
            height: grid.height as u32,
            width: grid.width as u32,
            k: s.k as u32,
            taps: s.taps() as u32,
            in_ch: s.in_ch as u32,
            out_ch: s.out_ch as u32,
            out_pad: layout.out_pad as u32,
            dir: 1,
            has_bias: 1,
            tap0: s.first_tap() as u32,
            _pad: 0,
        };
        // Both forward kernels take 4 pixels per invocation; the subgroup one 32
        // output channels, the portable one 16.
        // The subgroup kernel shares 8 input channels per step, so it needs a few.
        let (conv_kernel, cols) = match &k.conv_forward_subgroup {
            Some(kernel) if s.in_ch >= 8 => (kernel, 32),
            _ => (&k.conv_forward, 16),
        };
        let conv_grid = |out_pad: usize| {
            [
                pixels.div_ceil(4).div_ceil(64) as u32,
                (out_pad / cols) as u32,
                1,
            ]
        };
        let forward = vec![Dispatch::new(
            gpu,
            conv_kernel,
            &gpu.uniform("conv", &fwd),
            &[(1, b.x), (2, &weights), (3, &bias), (4, b.y)],
            conv_grid(layout.out_pad),
        )];

        let (mut weight_grad, mut input_grad) = (Vec::new(), Vec::new());
        let Some(dy) = b.dy else {
            return Self {
                forward,
                weight_grad,
                input_grad,
            };
        };
        assert_eq!(s.out_ch % 4, 0, "output channels must be a multiple of 4");
        let rows = round_up(s.taps() * s.in_ch, 4);
        let chunks = pixels.div_ceil(GRAD_CHUNK);
        let grad = GradUniform {
            pixels: pixels as u32,
            height: grid.height as u32,
            width: grid.width as u32,
            k: s.k as u32,
            taps: s.taps() as u32,
            in_ch: s.in_ch as u32,
            out_ch: s.out_ch as u32,
            out_pad: layout.out_pad as u32,
            rows: rows as u32,
            chunk: GRAD_CHUNK as u32,
            chunks: chunks as u32,
            mask_b: (s.mask == Mask::B) as u32,
            groups: s.groups as u32,
            tap0: s.first_tap() as u32,
            out_run: s.out_run as u32,
            _pad: 0,
        };

        // dW and db: partial sums over chunks of pixels, then their masked sum.
        if let Some(dparams) = b.dparams {
            let uniform = gpu.uniform("conv grad", &grad);
            let partial =
                View::whole(&gpu.zeros("conv grad partial", chunks * rows * layout.out_pad));
            let bias_partial =
                View::whole(&gpu.zeros("bias grad partial", chunks * layout.out_pad));
            let views = [(1, b.x), (2, dy), (3, &partial)];
            // The subgroup kernel gives each of 8 lanes 4 input channels of one tap,
            // so it pays off from 16 input channels up (the 7x7 layer over the image
            // has 1 or 3, and runs the portable kernel over taps and channels at once).
            let subgroup = k
                .conv_weight_grad_subgroup
                .as_ref()
                .filter(|_| s.in_ch >= 16 && s.in_ch.is_multiple_of(4));
            weight_grad.push(match subgroup {
                // 8 lanes x 4 input channels, 32 output channels, one chunk.
                Some(kernel) => Dispatch::new(
                    gpu,
                    kernel,
                    &uniform,
                    &views,
                    [
                        s.in_ch.div_ceil(32) as u32,
                        (s.taps() * layout.out_pad / 32) as u32,
                        chunks as u32,
                    ],
                ),
                // One invocation per 4 weight rows x 16 output channels.
                None => {
                    let blocks = (rows / 4) * (layout.out_pad / 16);
                    Dispatch::new(
                        gpu,
                        &k.conv_weight_grad,
                        &uniform,
                        &views,
                        [blocks.div_ceil(64) as u32, chunks as u32, 1],
                    )
                }
            });
            weight_grad.push(Dispatch::new(
                gpu,
                &k.conv_bias_grad,
                &uniform,
                &[(1, dy), (2, &bias_partial)],
                [layout.out_pad.div_ceil(64) as u32, chunks as u32, 1],
            ));
            let dweights = View {
                len: layout.weight_len(),
                ..dparams.clone()
            };
            let dbias = View {
                offset: dparams.offset + layout.bias_offset(),
                len: layout.out_pad,
                ..dparams.clone()
            };
            weight_grad.push(Dispatch::new(
                gpu,
                &k.conv_weight_grad_reduce,
                &uniform,
                &[
                    (1, &partial),
                    (2, &bias_partial),
                    (3, &dweights),
                    (4, &dbias),
                ],
                grid_1d(layout.weight_len() + layout.out_pad, 64),
            ));
        }

        // dx: the transposed convolution of dy with w^T [T, C_out, C_in padded].
        if let Some(dx) = b.dx {
            let in_pad_t = round_up(s.in_ch, COL_PAD);
            let transpose = GradUniform {
                rows: in_pad_t as u32,
                ..grad
            };
            let w_t = View::whole(&gpu.zeros("w^T", s.taps() * s.out_ch * in_pad_t));
            input_grad.push(Dispatch::new(
                gpu,
                &k.conv_transpose_weights,
                &gpu.uniform("transpose", &transpose),
                &[(1, &weights), (2, &w_t)],
                grid_1d(w_t.len, 64),
            ));
            let back = ForwardUniform {
                in_ch: s.out_ch as u32,
                out_ch: s.in_ch as u32,
                out_pad: in_pad_t as u32,
                dir: -1,
                has_bias: 0,
                ..fwd
            };
            input_grad.push(Dispatch::new(
                gpu,
                conv_kernel,
                &gpu.uniform("conv backward input", &back),
                &[(1, dy), (2, &w_t), (3, &bias), (4, dx)],
                conv_grid(in_pad_t),
            ));
        }
        Self {
            forward,
            weight_grad,
            input_grad,
        }
    }

    /// The backward launches in order: dW and db, then dx.
    pub fn backward(&self) -> Vec<Dispatch> {
        [self.weight_grad.as_slice(), &self.input_grad].concat()
    }
}
