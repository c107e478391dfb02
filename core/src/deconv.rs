//! Transposed convolution ("deconvolution"), which upsamples the Multi-Scale
//! PixelRNN's small image to the size of the full one: input pixel (i, j) spreads
//! through a k x k kernel over the outputs (i s + ky - p, j s + kx - p), so an input of
//! size n gives (n - 1) s - 2 p + k. Unmasked: the small image is given whole.
//!
//! Weights are `[k, k, C_in, C_out]`, then the bias `[C_out]`, in one tensor; maps are
//! `[B, H, W, C]`. [`cpu`] is the reference twin of the kernels in
//! `shaders/deconv.wgsl`.

use crate::gpu::{grid_1d, Dispatch, Gpu, View};

/// The shape of a transposed convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeconvShape {
    /// Kernel size k.
    pub k: usize,
    /// Stride s: the upsampling factor.
    pub stride: usize,
    /// Padding p cropped from each side of the output.
    pub pad: usize,
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
}

impl DeconvShape {
    /// The 4 x 4, stride 2, padding 1 layer that doubles the size of its input.
    pub fn doubling(in_ch: usize, out_ch: usize) -> Self {
        Self {
            k: 4,
            stride: 2,
            pad: 1,
            in_ch,
            out_ch,
        }
    }

    /// Output size for an input of size `n`, None when the padding eats it all.
    pub fn out_size(&self, n: usize) -> Option<usize> {
        ((n.max(1) - 1) * self.stride + self.k).checked_sub(2 * self.pad)
    }

    /// Number of weights, k k C_in C_out.
    pub fn weight_len(&self) -> usize {
        self.k * self.k * self.in_ch * self.out_ch
    }

    /// Length of the parameter tensor: the weights, then the bias.
    pub fn len(&self) -> usize {
        self.weight_len() + self.out_ch
    }

    /// Whether the layer has no parameters (never, for a real layer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The input index (along one axis) that reaches output `o` through tap `t`.
    fn source(&self, o: usize, t: usize, len: usize) -> Option<usize> {
        let v = (o + self.pad).checked_sub(t)?;
        (v.is_multiple_of(self.stride) && v / self.stride < len).then_some(v / self.stride)
    }
}

/// The reference transposed convolution on the CPU.
pub mod cpu {
    use super::DeconvShape;

    /// y `[B, H_out, W_out, C_out]` from x `[B, n, n, C_in]` and `params` (weights,
    /// then bias), with `n` the input size.
    pub fn forward(s: &DeconvShape, n: usize, x: &[f32], params: &[f32]) -> Vec<f32> {
        let m = s.out_size(n).expect("a positive output size");
        let batch = x.len() / (n * n * s.in_ch);
        let (w, bias) = params.split_at(s.weight_len());
        let mut y = Vec::with_capacity(batch * m * m * s.out_ch);
        for b in 0..batch {
            for oy in 0..m {
                for ox in 0..m {
                    for (co, &b0) in bias.iter().enumerate() {
                        let mut acc = b0;
                        for ky in 0..s.k {
                            let Some(iy) = s.source(oy, ky, n) else {
                                continue;
                            };
                            for kx in 0..s.k {
                                let Some(ix) = s.source(ox, kx, n) else {
                                    continue;
                                };
                                let xi = ((b * n + iy) * n + ix) * s.in_ch;
                                let wi = (ky * s.k + kx) * s.in_ch * s.out_ch + co;
                                for ci in 0..s.in_ch {
                                    acc += x[xi + ci] * w[wi + ci * s.out_ch];
                                }
                            }
                        }
                        y.push(acc);
                    }
                }
            }
        }
        y
    }

    /// From dy, the gradients of x and of the parameters (weights, then bias).
    pub fn backward(
        s: &DeconvShape,
        n: usize,
        x: &[f32],
        params: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let m = s.out_size(n).expect("a positive output size");
        let batch = x.len() / (n * n * s.in_ch);
        let w = &params[..s.weight_len()];
        let mut dx = vec![0.0; x.len()];
        let mut dparams = vec![0.0; s.len()];
        for b in 0..batch {
            for oy in 0..m {
                for ox in 0..m {
                    let yi = ((b * m + oy) * m + ox) * s.out_ch;
                    for co in 0..s.out_ch {
                        dparams[s.weight_len() + co] += dy[yi + co];
                    }
                    for ky in 0..s.k {
                        let Some(iy) = s.source(oy, ky, n) else {
                            continue;
                        };
                        for kx in 0..s.k {
                            let Some(ix) = s.source(ox, kx, n) else {
                                continue;
                            };
                            let xi = ((b * n + iy) * n + ix) * s.in_ch;
                            for ci in 0..s.in_ch {
                                let wi = ((ky * s.k + kx) * s.in_ch + ci) * s.out_ch;
                                for co in 0..s.out_ch {
                                    dx[xi + ci] += dy[yi + co] * w[wi + co];
                                    dparams[wi + co] += dy[yi + co] * x[xi + ci];
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dparams)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DeconvParams {
    batch: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    k: u32,
    stride: u32,
    pad: u32,
    in_ch: u32,
    out_ch: u32,
    _pad: [u32; 2],
}

/// The buffers one [`DeconvOp`] binds.
#[derive(Debug, Clone)]
pub struct DeconvBuffers<'a> {
    /// Input x `[B, n, n, C_in]`.
    pub x: &'a View,
    /// Weights then bias.
    pub params: &'a View,
    /// Output y.
    pub y: &'a View,
    /// For a backward pass: the gradient of y.
    pub dy: Option<&'a View>,
    /// Where the parameter gradients go (needs `dy`).
    pub dparams: Option<&'a View>,
    /// Where the input gradient goes (needs `dy`).
    pub dx: Option<&'a View>,
}

/// A transposed convolution recorded on the GPU.
#[derive(Debug, Clone)]
pub struct DeconvOp {
    /// The forward launch.
    pub forward: Dispatch,
    /// The backward launches: the parameter and input gradients asked for.
    pub backward: Vec<Dispatch>,
}

impl DeconvOp {
    /// Records `shape` over `batch` inputs of size `n` and the buffers `b`.
    pub fn new(gpu: &Gpu, shape: &DeconvShape, batch: usize, n: usize, b: &DeconvBuffers) -> Self {
        let m = shape.out_size(n).expect("a positive output size");
        let u = gpu.uniform(
            "deconv",
            &DeconvParams {
                batch: batch as u32,
                in_h: n as u32,
                in_w: n as u32,
                out_h: m as u32,
                out_w: m as u32,
                k: shape.k as u32,
                stride: shape.stride as u32,
                pad: shape.pad as u32,
                in_ch: shape.in_ch as u32,
                out_ch: shape.out_ch as u32,
                _pad: [0; 2],
            },
        );
        let k = &gpu.kernels;
        let forward = Dispatch::new(
            gpu,
            &k.deconv_forward,
            &u,
            &[(1, b.x), (2, b.params), (3, b.y)],
            grid_1d(batch * m * m * shape.out_ch, 64),
        );
        let mut backward = Vec::new();
        if let (Some(dy), Some(dparams)) = (b.dy, b.dparams) {
            backward.push(Dispatch::new(
                gpu,
                &k.deconv_weight_grad,
                &u,
                &[(1, b.x), (4, dy), (6, dparams)],
                grid_1d(shape.len(), 64),
            ));
        }
        if let (Some(dy), Some(dx)) = (b.dy, b.dx) {
            backward.push(Dispatch::new(
                gpu,
                &k.deconv_input_grad,
                &u,
                &[(2, b.params), (4, dy), (5, dx)],
                grid_1d(batch * n * n * shape.in_ch, 64),
            ));
        }
        Self { forward, backward }
    }
}
