//! The LSTM recurrence shared by the Row LSTM and the Diagonal BiLSTM (van den Oord et
//! al., 2016, sections 3.1 and 3.2), as a scan over steps.
//!
//! Both layers compute, step by step (a row of the image for the Row LSTM, a column
//! of the skewed map for the Diagonal BiLSTM), for every position of the step:
//!
//! ```text
//! [i, f, o, g] = [σ, σ, σ, tanh](K^is ⊛ x_s + K^ss ⊛ h_{s-1})
//! c_s = f ⊙ c_{s-1} + i ⊙ g
//! h_s = o ⊙ tanh(c_s)
//! ```
//!
//! The input-to-state term K^is ⊛ x is a masked convolution computed for the whole map
//! beforehand; this module adds the state-to-state term, a 1-D convolution over the
//! previous step's h whose taps are position offsets: (-1, 0, 1) for the Row LSTM
//! (the three pixels above), (-1, 0) for the Diagonal BiLSTM (the pixels above and to
//! the left, in the skewed map). Before the first step, h and c are the learnable
//! initial states h_0 and c_0 at every position.
//!
//! # Layout
//!
//! With B images, S steps of L positions and n state channels, a step-major map is
//! `[B, S, L, ...]`. Gate pre-activations are `[B, S, L, n, 4]`: the four gates
//! (i, f, o, g) of state channel k side by side, so that one vec4 holds them on the GPU
//! and gate channel 4k + q belongs to the colour group of state channel k. States are
//! `[B, S, L, n]`; K^ss is `[T, n, 4n]` (tap, input state channel, gate channel).

/// The shape of one LSTM scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Images B.
    pub batch: usize,
    /// Steps S.
    pub steps: usize,
    /// Positions L per step.
    pub len: usize,
    /// State channels n.
    pub hidden: usize,
}

use crate::gpu::{grid_1d, Dispatch, Gpu, View};

/// The state-to-state taps of the Row LSTM: the previous row at columns j - 1, j, j + 1.
pub const ROW_TAPS: [isize; 3] = [-1, 0, 1];

/// The state-to-state taps of the Diagonal BiLSTM in the skewed map: the previous column
/// at rows i - 1 (the pixel above) and i (the pixel to the left).
pub const DIAGONAL_TAPS: [isize; 2] = [-1, 0];

impl Scan {
    /// Positions of the whole map, B x S x L.
    pub fn positions(&self) -> usize {
        self.batch * self.steps * self.len
    }

    /// Index of position `l` of step `s` of image `b`.
    pub fn at(&self, b: usize, s: usize, l: usize) -> usize {
        (b * self.steps + s) * self.len + l
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ScanParams {
    batch: u32,
    steps: u32,
    len: u32,
    hidden: u32,
    step: u32,
    taps: u32,
    tap0: i32,
    channels: u32,
}

/// The buffers of one scan on the GPU, in the layouts of the module docs.
#[derive(Debug, Clone, Copy)]
pub struct ScanBuffers<'a> {
    /// Input-to-state pre-activations `[B, S, L, n, 4]`.
    pub pre: &'a View,
    /// K^ss `[T, n, 4n]`.
    pub kss: &'a View,
    /// h_0 then c_0, `[2, n]`.
    pub init: &'a View,
    /// Gate activations `[B, S, L, n, 4]` (written).
    pub gates: &'a View,
    /// Cell states `[B, S, L, n]` (written).
    pub c: &'a View,
    /// Hidden states `[B, S, L, n]` (written).
    pub h: &'a View,
    /// Gradient buffers, for a backward pass.
    pub grads: Option<ScanGrads<'a>>,
}

/// The gradient buffers of a scan's backward pass.
#[derive(Debug, Clone, Copy)]
pub struct ScanGrads<'a> {
    /// Gradient of the loss with respect to every h, `[B, S, L, n]` (read).
    pub dh: &'a View,
    /// Of the pre-activations, `[B, S, L, n, 4]` (written).
    pub pre: &'a View,
    /// Scratch for the cell-state gradients, `[B, S, L, n]`.
    pub c: &'a View,
    /// Of K^ss, `[T, n, 4n]` (written).
    pub kss: &'a View,
    /// Of h_0 then c_0, `[2, n]` (written).
    pub init: &'a View,
}

/// The launches of one scan: every step forward, in order, and with gradient buffers
/// every step backward, in reverse, then the K^ss and initial-state gradients.
#[derive(Debug, Clone)]
pub struct ScanOp {
    /// The forward steps.
    pub forward: Vec<Dispatch>,
    /// The backward pass (empty without gradient buffers).
    pub backward: Vec<Dispatch>,
}

impl ScanOp {
    /// Records the scan `sc` with state-to-state `taps` (consecutive offsets, such
    /// as [`ROW_TAPS`] or [`DIAGONAL_TAPS`]) over the buffers `b`.
    pub fn new(gpu: &Gpu, sc: &Scan, taps: &[isize], b: &ScanBuffers<'_>) -> Self {
        assert!(
            !taps.is_empty() && taps.windows(2).all(|w| w[1] == w[0] + 1),
            "state-to-state taps must be consecutive offsets, got {taps:?}"
        );
        let params = |step: usize| {
            gpu.uniform(
                "scan",
                &ScanParams {
                    batch: sc.batch as u32,
                    steps: sc.steps as u32,
                    len: sc.len as u32,
                    hidden: sc.hidden as u32,
                    step: step as u32,
                    taps: taps.len() as u32,
                    tap0: taps[0] as i32,
                    channels: 0,
                },
            )
        };
        let k = &gpu.kernels;
        let states = grid_1d(sc.batch * sc.len * sc.hidden, 64);

        let forward = (0..sc.steps)
            .map(|s| {
                let views = [
                    (1, b.pre),
                    (2, b.kss),
                    (3, b.init),
                    (4, b.gates),
                    (5, b.c),
                    (6, b.h),
                ];
                Dispatch::new(gpu, &k.lstm_step, &params(s), &views, states)
            })
            .collect();

        let mut backward = Vec::new();
        if let Some(g) = &b.grads {
            for s in (0..sc.steps).rev() {
                let views = [
                    (2, b.kss),
                    (3, b.init),
                    (4, b.gates),
                    (5, b.c),
                    (7, g.dh),
                    (8, g.pre),
                    (9, g.c),
                ];
                let d = Dispatch::new(gpu, &k.lstm_step_backward, &params(s), &views, states);
                backward.push(d);
            }
            let once = params(0);
            let n = sc.hidden;
            backward.push(Dispatch::new(
                gpu,
                &k.lstm_kss_grad,
                &once,
                &[(3, b.init), (6, b.h), (8, g.pre), (10, g.kss)],
                grid_1d(taps.len() * n * n, 64),
            ));
            backward.push(Dispatch::new(
                gpu,
                &k.lstm_init_grad,
                &once,
                &[(2, b.kss), (4, b.gates), (8, g.pre), (9, g.c), (11, g.init)],
                grid_1d(2 * n, 64),
            ));
        }
        Self { forward, backward }
    }
}

/// Where a sampler's one-position LSTM step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAt {
    /// The Row LSTM at the cursor's pixel.
    Row,
    /// The Diagonal BiLSTM's left-to-right direction at the cursor's pixel.
    Diagonal,
    /// The Diagonal BiLSTM's right-to-left direction at this mirrored column of the
    /// row above the cursor's pixel.
    RightToLeft(usize),
}

/// One LSTM position for a sampler, over the forward buffers of `b` (gradients
/// unused): the pixel of sub-pixel `order[cursor]` of images with `channels` colours,
/// or the row above it (see [`StepAt`]). `sc` is the layer's whole scan; `b.pre` is in
/// image layout `[B, H, W, n, 4]`.
pub fn step_at_cursor(
    gpu: &Gpu,
    sc: &Scan,
    at: StepAt,
    b: &ScanBuffers<'_>,
    (order, cursor): (&View, &View),
    channels: usize,
) -> Dispatch {
    let (kernel, taps, column): (_, &[isize], usize) = match at {
        StepAt::Row => (&gpu.kernels.lstm_row_step_at, &ROW_TAPS, 0),
        StepAt::Diagonal => (&gpu.kernels.lstm_diag_step_at, &DIAGONAL_TAPS, 0),
        StepAt::RightToLeft(m) => (&gpu.kernels.lstm_diag_rl_step_at, &DIAGONAL_TAPS, m),
    };
    let params = gpu.uniform(
        "scan at",
        &ScanParams {
            batch: sc.batch as u32,
            steps: sc.steps as u32,
            len: sc.len as u32,
            hidden: sc.hidden as u32,
            step: column as u32,
            taps: taps.len() as u32,
            tap0: taps[0] as i32,
            channels: channels as u32,
        },
    );
    let views = [
        (1, b.pre),
        (2, b.kss),
        (3, b.init),
        (4, b.gates),
        (5, b.c),
        (6, b.h),
        (12, order),
        (13, cursor),
    ];
    Dispatch::new(
        gpu,
        kernel,
        &params,
        &views,
        grid_1d(sc.batch * sc.hidden, 64),
    )
}

/// The logistic function σ.
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Plain CPU versions of the scan, forward and backward.
pub mod cpu {
    use super::*;

    /// What the forward scan computes and its backward pass needs.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Forward {
        /// Gate activations (i, f, o, g after σ and tanh), `[B, S, L, n, 4]`.
        pub gates: Vec<f32>,
        /// Cell states c, `[B, S, L, n]`.
        pub c: Vec<f32>,
        /// Hidden states h, `[B, S, L, n]`.
        pub h: Vec<f32>,
    }

    /// Gradients of the scan's inputs.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Backward {
        /// Of the input-to-state pre-activations, `[B, S, L, n, 4]`.
        pub pre: Vec<f32>,
        /// Of K^ss, `[T, n, 4n]`.
        pub kss: Vec<f32>,
        /// Of h_0, `[n]`.
        pub h0: Vec<f32>,
        /// Of c_0, `[n]`.
        pub c0: Vec<f32>,
    }

    /// The previous step's h at position `l + dl`, h_0 before the first step, or
    /// None outside the step.
    fn previous<'a>(
        sc: &Scan,
        h: &'a [f32],
        h0: &'a [f32],
        (b, s, l): (usize, usize, usize),
        dl: isize,
    ) -> Option<&'a [f32]> {
        let q = l.checked_add_signed(dl).filter(|&q| q < sc.len)?;
        let n = sc.hidden;
        Some(if s == 0 {
            h0
        } else {
            &h[sc.at(b, s - 1, q) * n..][..n]
        })
    }

    /// The scan forward from input-to-state pre-activations `pre`.
    pub fn forward(
        sc: &Scan,
        taps: &[isize],
        pre: &[f32],
        kss: &[f32],
        h0: &[f32],
        c0: &[f32],
    ) -> Forward {
        let n = sc.hidden;
        let mut out = Forward {
            gates: vec![0.0; sc.positions() * 4 * n],
            c: vec![0.0; sc.positions() * n],
            h: vec![0.0; sc.positions() * n],
        };
        for b in 0..sc.batch {
            for s in 0..sc.steps {
                for l in 0..sc.len {
                    let p = sc.at(b, s, l);

                    // z = K^is ⊛ x + K^ss ⊛ h_{s-1}
                    let mut z = pre[p * 4 * n..][..4 * n].to_vec();
                    for (t, &dl) in taps.iter().enumerate() {
                        let Some(hp) = previous(sc, &out.h, h0, (b, s, l), dl) else {
                            continue;
                        };
                        for (m, &hm) in hp.iter().enumerate() {
                            let row = &kss[(t * n + m) * 4 * n..][..4 * n];
                            for (zj, &w) in z.iter_mut().zip(row) {
                                *zj += w * hm;
                            }
                        }
                    }

                    // c_s = f c_{s-1} + i g, h_s = o tanh(c_s)
                    for k in 0..n {
                        let c_prev = if s == 0 {
                            c0[k]
                        } else {
                            out.c[sc.at(b, s - 1, l) * n + k]
                        };
                        let [i, f, o] = [0, 1, 2].map(|q| sigmoid(z[4 * k + q]));
                        let g = z[4 * k + 3].tanh();
                        let c = f * c_prev + i * g;
                        out.gates[(p * n + k) * 4..][..4].copy_from_slice(&[i, f, o, g]);
                        out.c[p * n + k] = c;
                        out.h[p * n + k] = o * c.tanh();
                    }
                }
            }
        }
        out
    }

    /// The scan backward from `dh`, the gradient of the loss with respect to every h
    /// the forward scan produced, back through every step.
    pub fn backward(
        sc: &Scan,
        taps: &[isize],
        fwd: &Forward,
        dh: &[f32],
        kss: &[f32],
        h0: &[f32],
        c0: &[f32],
    ) -> Backward {
        let n = sc.hidden;
        let mut grad = Backward {
            pre: vec![0.0; sc.positions() * 4 * n],
            kss: vec![0.0; kss.len()],
            h0: vec![0.0; n],
            c0: vec![0.0; n],
        };

        // dh and dc of the step being processed, with what later steps sent back.
        let mut dh_all = dh.to_vec();
        let mut dc_all = vec![0.0; sc.positions() * n];
        for b in 0..sc.batch {
            for s in (0..sc.steps).rev() {
                for l in 0..sc.len {
                    let p = sc.at(b, s, l);
                    let mut dz = vec![0.0; 4 * n];
                    for k in 0..n {
                        let [i, f, o, g] = <[f32; 4]>::try_from(&fwd.gates[(p * n + k) * 4..][..4])
                            .expect("four gates");
                        let c = fwd.c[p * n + k];
                        let c_prev = if s == 0 {
                            c0[k]
                        } else {
                            fwd.c[sc.at(b, s - 1, l) * n + k]
                        };
                        let tc = c.tanh();
                        let dh_k = dh_all[p * n + k];
                        let dc = dc_all[p * n + k] + dh_k * o * (1.0 - tc * tc);
                        dz[4 * k] = dc * g * i * (1.0 - i);
                        dz[4 * k + 1] = dc * c_prev * f * (1.0 - f);
                        dz[4 * k + 2] = dh_k * tc * o * (1.0 - o);
                        dz[4 * k + 3] = dc * i * (1.0 - g * g);
                        if s == 0 {
                            grad.c0[k] += dc * f;
                        } else {
                            dc_all[sc.at(b, s - 1, l) * n + k] += dc * f;
                        }
                    }
                    grad.pre[p * 4 * n..][..4 * n].copy_from_slice(&dz);

                    // Through K^ss to the previous step's h (or h_0) and to K^ss itself.
                    for (t, &dl) in taps.iter().enumerate() {
                        let Some(hp) = previous(sc, &fwd.h, h0, (b, s, l), dl) else {
                            continue;
                        };
                        let q = l.checked_add_signed(dl).expect("inside the step");
                        for (m, &hm) in hp.iter().enumerate() {
                            let row = (t * n + m) * 4 * n;
                            let mut back = 0.0;
                            for (j, &d) in dz.iter().enumerate() {
                                grad.kss[row + j] += hm * d;
                                back += kss[row + j] * d;
                            }
                            if s == 0 {
                                grad.h0[m] += back;
                            } else {
                                dh_all[sc.at(b, s - 1, q) * n + m] += back;
                            }
                        }
                    }
                }
            }
        }
        grad
    }
}
