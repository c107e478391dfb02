//! The recurrent layers of PixelRNN (van den Oord et al., 2016, sections 3.1 to 3.3),
//! on the CPU and recorded on the GPU.
//!
//! A layer maps the residual stream x (2h maps) to x + K^out ⊛ h, where h holds the
//! n = h hidden states of an LSTM run over the image and K^out is a 1x1 mask-B
//! convolution back to 2h maps.
//!
//! - **Row LSTM**: the input-to-state term K^is ⊛ x is a masked 1 x 3 convolution
//!   along each row (mask B), computed for the whole map at once; the LSTM then runs
//!   down the rows, each row's states seeing the previous row's through a width-3
//!   state-to-state convolution ([`ROW_TAPS`]).
//! - **Diagonal BiLSTM**: K^is is a 1x1 mask-B convolution. Each of two directions
//!   skews its pre-activations so that the image's diagonals become columns, runs the
//!   LSTM along them with a 2 x 1 state-to-state convolution ([`DIAGONAL_TAPS`]) and
//!   unskews the states. The second direction reads the image mirrored (right to left),
//!   and its states move down one row as they are unskewed, so that no position sees
//!   the rest of its own row; the two directions' states are summed.
//!
//! Gates and states keep the R, G, B split of the paper: the gates of state channel k
//! come from the input-to-state convolution in runs of 4 that belong to k's colour
//! group, and K^out is masked like any mask-B convolution. The state-to-state terms
//! read only the previous step, which lies wholly in the past, and are not masked.

use crate::conv::{self, ConvBuffers, ConvLayout, ConvOp, ConvShape, Grid, Mask};
use crate::gpu::{Dispatch, Gpu, View};
use crate::lstm::{self, Scan, ScanBuffers, ScanGrads, ScanOp, DIAGONAL_TAPS, ROW_TAPS};
use crate::ops;
use crate::skew::{self, Skew};

/// Which recurrent layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Row LSTM (section 3.1).
    Row,
    /// Diagonal BiLSTM (section 3.2).
    Diagonal,
}

impl Kind {
    /// LSTM directions: one for the Row LSTM, two for the Diagonal BiLSTM.
    pub fn directions(self) -> usize {
        match self {
            Kind::Row => 1,
            Kind::Diagonal => 2,
        }
    }

    /// State-to-state taps, as position offsets within the previous step.
    pub fn taps(self) -> &'static [isize] {
        match self {
            Kind::Row => &ROW_TAPS,
            Kind::Diagonal => &DIAGONAL_TAPS,
        }
    }
}

/// One recurrent layer over a fixed grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Row LSTM or Diagonal BiLSTM.
    pub kind: Kind,
    /// The feature maps.
    pub grid: Grid,
    /// Maps of the residual stream, 2h.
    pub maps: usize,
    /// State channels n.
    pub hidden: usize,
    /// Colour groups: 3 for RGB, 1 for grey.
    pub groups: usize,
    /// Rows the right-to-left states move down before they are added: 1 in the paper
    /// (and in every model this crate builds); other values exist so that tests can
    /// show the causality test catches them.
    pub shift: isize,
}

impl Layer {
    /// The input-to-state convolution 2h -> 4n into gate runs.
    pub fn kis(&self) -> ConvShape {
        let (k, row_only) = match self.kind {
            Kind::Row => (3, true),
            Kind::Diagonal => (1, false),
        };
        ConvShape {
            row_only,
            out_run: 4,
            ..ConvShape::new(k, self.maps, 4 * self.hidden, Mask::B, self.groups)
        }
    }

    /// The output convolution n -> 2h.
    pub fn out(&self) -> ConvShape {
        ConvShape::new(1, self.hidden, self.maps, Mask::B, self.groups)
    }

    /// Values of K^ss, `[T, n, 4n]`.
    pub fn kss_len(&self) -> usize {
        self.kind.taps().len() * self.hidden * 4 * self.hidden
    }

    /// The scan: rows as steps for the Row LSTM, skewed columns for the Diagonal BiLSTM.
    pub fn scan(&self) -> Scan {
        let g = self.grid;
        let (steps, len) = match self.kind {
            Kind::Row => (g.height, g.width),
            Kind::Diagonal => (g.height + g.width - 1, g.height),
        };
        Scan {
            batch: g.batch,
            steps,
            len,
            hidden: self.hidden,
        }
    }

    /// For direction `d` of a Diagonal BiLSTM: the skew of its pre-activations
    /// `[P, 4n]` and the unskew of its states into `[P, n]`. None for the Row LSTM,
    /// whose maps are already step-major.
    pub fn skews(&self, d: usize) -> Option<(Skew, Skew)> {
        (self.kind == Kind::Diagonal).then(|| {
            let skew = Skew {
                batch: self.grid.batch,
                height: self.grid.height,
                width: self.grid.width,
                channels: 4 * self.hidden,
                mirror: d == 1,
                shift: 0,
            };
            let unskew = Skew {
                channels: self.hidden,
                shift: if d == 1 { self.shift } else { 0 },
                ..skew
            };
            (skew, unskew)
        })
    }
}

/// The weights of one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// K^is `[T, 2h, 4n]` and its bias `[4n]`.
    pub kis: (Vec<f32>, Vec<f32>),
    /// K^ss `[T, n, 4n]`.
    pub kss: Vec<f32>,
    /// h_0 then c_0, `[2, n]`.
    pub init: Vec<f32>,
}

/// The weights of a layer (convolutions in [`conv`]'s `[T, C_in, C_out]` layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// Each direction's LSTM.
    pub dirs: Vec<Direction>,
    /// K^out `[n, 2h]` and its bias `[2h]`.
    pub out: (Vec<f32>, Vec<f32>),
}

/// Plain CPU version of a layer, forward and backward.
pub mod cpu {
    use super::*;

    /// What the forward pass computes and the backward pass needs.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Forward {
        /// Each direction's scan.
        pub states: Vec<lstm::cpu::Forward>,
        /// The summed hidden states in image layout, `[P, n]`.
        pub h: Vec<f32>,
        /// The layer output x + K^out ⊛ h, `[P, 2h]`.
        pub y: Vec<f32>,
    }

    /// The layer over its input `x` `[P, 2h]`.
    pub fn forward(layer: &Layer, w: &Weights, x: &[f32]) -> Forward {
        forward_given(layer, w, x, &[])
    }

    /// The layer over `x` with, when `terms` is not empty, `terms[d]` (`[P, 4n]`,
    /// a conditional model's conditioning) added to direction d's input-to-state
    /// term.
    pub fn forward_given(layer: &Layer, w: &Weights, x: &[f32], terms: &[&[f32]]) -> Forward {
        let g = layer.grid;
        let sc = layer.scan();
        let n = layer.hidden;
        let mut h = vec![0.0; g.pixels() * n];
        let mut states = Vec::new();
        for (d, dir) in w.dirs.iter().enumerate() {
            let mut pre = conv::cpu::forward(&layer.kis(), g, x, &dir.kis.0, &dir.kis.1);
            if let Some(t) = terms.get(d) {
                pre.iter_mut().zip(*t).for_each(|(a, b)| *a += b);
            }
            let skews = layer.skews(d);
            if let Some((s, _)) = &skews {
                pre = skew::cpu::skew(s, &pre);
            }
            let (h0, c0) = dir.init.split_at(n);
            let st = lstm::cpu::forward(&sc, layer.kind.taps(), &pre, &dir.kss, h0, c0);
            let image = match &skews {
                Some((_, u)) => skew::cpu::unskew(u, &st.h),
                None => st.h.clone(),
            };
            h.iter_mut().zip(&image).for_each(|(a, b)| *a += b);
            states.push(st);
        }
        let mut y = conv::cpu::forward(&layer.out(), g, &h, &w.out.0, &w.out.1);
        y.iter_mut().zip(x).for_each(|(a, b)| *a += b);
        Forward { states, h, y }
    }

    /// (gradient of the input, gradients of the weights) from `dy`, the gradient of
    /// the output, for the forward pass `f` over `x`.
    pub fn backward(
        layer: &Layer,
        w: &Weights,
        x: &[f32],
        f: &Forward,
        dy: &[f32],
    ) -> (Vec<f32>, Weights) {
        let (dx, grads, _) = backward_full(layer, w, x, f, dy);
        (dx, grads)
    }

    /// [`backward`], also returning each direction's gradient w.r.t. its
    /// input-to-state term `[P, 4n]` (that of a conditioning term added to it).
    pub fn backward_full(
        layer: &Layer,
        w: &Weights,
        x: &[f32],
        f: &Forward,
        dy: &[f32],
    ) -> (Vec<f32>, Weights, Vec<Vec<f32>>) {
        let g = layer.grid;
        let sc = layer.scan();
        let n = layer.hidden;
        let out = layer.out();
        let dh = conv::cpu::backward_input(&out, g, dy, &w.out.0);
        let mut grads = Weights {
            dirs: Vec::new(),
            out: conv::cpu::backward_params(&out, g, &f.h, dy),
        };
        let mut dx = dy.to_vec();
        let mut dpres = Vec::new();
        for (d, dir) in w.dirs.iter().enumerate() {
            let skews = layer.skews(d);
            let dh_d = match &skews {
                Some((_, u)) => skew::cpu::skew(u, &dh),
                None => dh.clone(),
            };
            let (h0, c0) = dir.init.split_at(n);
            let taps = layer.kind.taps();
            let back = lstm::cpu::backward(&sc, taps, &f.states[d], &dh_d, &dir.kss, h0, c0);
            let dpre = match &skews {
                Some((s, _)) => skew::cpu::unskew(s, &back.pre),
                None => back.pre,
            };
            let kis = layer.kis();
            let through = conv::cpu::backward_input(&kis, g, &dpre, &dir.kis.0);
            dx.iter_mut().zip(&through).for_each(|(a, b)| *a += b);
            grads.dirs.push(Direction {
                kis: conv::cpu::backward_params(&kis, g, x, &dpre),
                kss: back.kss,
                init: [back.h0, back.c0].concat(),
            });
            dpres.push(dpre);
        }
        (dx, grads, dpres)
    }
}

/// A parameter tensor's values and, when gradients are recorded, its gradient.
#[derive(Debug, Clone)]
pub struct Param {
    /// The values.
    pub value: View,
    /// Where its gradient goes.
    pub grad: Option<View>,
}

/// One direction's parameters on the GPU.
#[derive(Debug, Clone)]
pub struct DirectionParams {
    /// K^is, packed (see [`ConvLayout`]).
    pub kis: Param,
    /// K^ss.
    pub kss: Param,
    /// h_0 then c_0.
    pub init: Param,
}

/// The buffers one [`LayerOp`] binds.
#[derive(Debug, Clone)]
pub struct LayerBuffers<'a> {
    /// Input x `[P, 2h]`.
    pub x: &'a View,
    /// Output y = x + K^out ⊛ h `[P, 2h]`.
    pub y: &'a View,
    /// Each direction's parameters.
    pub dirs: &'a [DirectionParams],
    /// K^out, packed.
    pub out: &'a Param,
    /// For a backward pass: the gradient of the residual stream, `[P, 2h]`. It holds
    /// the gradient of y when the backward pass starts and that of x when it ends.
    pub dstream: Option<&'a View>,
    /// Scratch `[P, 2h]` for a backward pass.
    pub scratch: Option<&'a View>,
    /// A conditional model's terms `[P, 4n]`, one per direction, added to the
    /// input-to-state terms (empty for an unconditional model).
    pub cond: &'a [View],
}

/// A recurrent layer recorded on the GPU.
#[derive(Debug, Clone)]
pub struct LayerOp {
    /// The forward launches.
    pub forward: Vec<Dispatch>,
    /// The backward launches (empty without gradient buffers).
    pub backward: Vec<Dispatch>,
    /// The layer's convolutions with their shapes, for benchmarks.
    pub convs: Vec<(ConvShape, ConvOp)>,
    /// Each direction's gradient w.r.t. its input-to-state term `[P, 4n]`, set by
    /// the backward pass (that of a conditioning term added to it).
    pub dpre: Vec<View>,
}

impl LayerOp {
    /// Records `layer` over the buffers `b`.
    pub fn new(gpu: &Gpu, layer: &Layer, b: &LayerBuffers<'_>) -> Self {
        let g = layer.grid;
        let sc = layer.scan();
        let p = g.pixels();
        let n = layer.hidden;
        let train = b.dstream.is_some();
        let maps = |label: &str, len: usize| View::whole(&gpu.zeros(label, len));
        let grad_maps = |label: &str, len: usize| maps(label, if train { len } else { 1 });
        let conv = |shape: ConvShape,
                    param: &Param,
                    x: &View,
                    y: &View,
                    dy: Option<&View>,
                    dx: Option<&View>| {
            ConvOp::new(
                gpu,
                &ConvLayout::new(shape),
                g,
                &ConvBuffers {
                    x,
                    params: &param.value,
                    y,
                    dy,
                    dparams: param.grad.as_ref(),
                    dx,
                },
            )
        };

        let mut forward = Vec::new();
        let mut backward = Vec::new();
        let mut convs = Vec::new();
        let h = maps("h", p * n);
        let dh = grad_maps("dh", p * n);
        let positions = sc.positions();

        // K^out ⊛ h, added to x. Its backward runs first.
        let out = conv(
            layer.out(),
            b.out,
            &h,
            b.y,
            b.dstream,
            Some(&dh).filter(|_| train),
        );
        let mut dir_backward = Vec::new();
        let mut dpres = Vec::new();

        for (d, params) in b.dirs.iter().enumerate() {
            let skews = layer.skews(d);
            let pre_image = maps("pre", p * 4 * n);
            let dpre_image = grad_maps("dpre", p * 4 * n);
            let kis = conv(
                layer.kis(),
                &params.kis,
                b.x,
                &pre_image,
                Some(&dpre_image).filter(|_| train),
                b.scratch,
            );
            forward.extend(kis.forward.iter().cloned());
            if let Some(term) = b.cond.get(d) {
                forward.push(ops::add_into(gpu, term, &pre_image));
            }

            // Step-major pre-activations: the conv output itself for rows, skewed for
            // diagonals (with their own gradient buffers).
            let (pre, dpre, h_steps, dh_steps) = match &skews {
                Some(_) => (
                    maps("pre skewed", positions * 4 * n),
                    grad_maps("dpre skewed", positions * 4 * n),
                    maps("h skewed", positions * n),
                    grad_maps("dh skewed", positions * n),
                ),
                None => (pre_image.clone(), dpre_image.clone(), h.clone(), dh.clone()),
            };
            if let Some((s, _)) = &skews {
                forward.push(skew::skew(gpu, s, &pre_image, &pre));
            }
            let gates = maps("gates", positions * 4 * n);
            let c = maps("c", positions * n);
            let dc = grad_maps("dc", positions * n);
            // Without parameter gradients, the backward pass still needs somewhere to
            // put those of K^ss and the initial state.
            let or_scratch = |param: &Param, label: &str| {
                param
                    .grad
                    .clone()
                    .unwrap_or_else(|| grad_maps(label, param.value.len))
            };
            let (dkss, dinit) = (
                or_scratch(&params.kss, "dkss"),
                or_scratch(&params.init, "dinit"),
            );
            let scan = ScanOp::new(
                gpu,
                &sc,
                layer.kind.taps(),
                &ScanBuffers {
                    pre: &pre,
                    kss: &params.kss.value,
                    init: &params.init.value,
                    gates: &gates,
                    c: &c,
                    h: &h_steps,
                    grads: train.then_some(ScanGrads {
                        dh: &dh_steps,
                        pre: &dpre,
                        c: &dc,
                        kss: &dkss,
                        init: &dinit,
                    }),
                },
            );
            forward.extend(scan.forward);

            // Sum the directions' states in image layout (the Row LSTM's scan wrote h).
            let mut back = Vec::new();
            if let Some((s, u)) = &skews {
                let image = if d == 0 {
                    h.clone()
                } else {
                    maps("h rl", p * n)
                };
                forward.push(skew::unskew(gpu, u, &h_steps, &image));
                if d > 0 {
                    forward.push(ops::add_into(gpu, &image, &h));
                }
                back.push(skew::skew(gpu, u, &dh, &dh_steps));
                back.extend(scan.backward);
                back.push(skew::unskew(gpu, s, &dpre, &dpre_image));
            } else {
                back.extend(scan.backward);
            }
            if let (Some(scratch), Some(dstream)) = (b.scratch, b.dstream) {
                back.extend(kis.backward());
                back.push(ops::add_into(gpu, scratch, dstream));
            }
            dir_backward.push(back);
            convs.push((layer.kis(), kis));
            dpres.push(dpre_image);
        }

        forward.extend(out.forward.iter().cloned());
        forward.push(ops::add_into(gpu, b.x, b.y));
        if train {
            backward.extend(out.backward());
            for back in dir_backward {
                backward.extend(back);
            }
        }
        convs.push((layer.out(), out));
        Self {
            forward,
            backward,
            convs,
            dpre: dpres,
        }
    }
}
