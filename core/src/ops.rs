//! Elementwise ops, the softmax loss and the optimizers: GPU launches and CPU twins.

use crate::gpu::{grid_1d, Dispatch, Gpu, View};

/// Intensities per sub-pixel: each colour channel is a 256-way softmax.
pub const LEVELS: usize = 256;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Len {
    len: u32,
    _pad: [u32; 3],
}

fn len_uniform(gpu: &Gpu, len: usize) -> wgpu::Buffer {
    gpu.uniform(
        "len",
        &Len {
            len: len as u32,
            _pad: [0; 3],
        },
    )
}

/// out = max(a, 0).
pub fn relu(gpu: &Gpu, a: &View, out: &View) -> Dispatch {
    let u = len_uniform(gpu, a.len);
    Dispatch::new(
        gpu,
        &gpu.kernels.relu,
        &u,
        &[(1, a), (2, out)],
        grid_1d(a.len, 256),
    )
}

/// out += a.
pub fn add_into(gpu: &Gpu, a: &View, out: &View) -> Dispatch {
    let u = len_uniform(gpu, a.len);
    let k = &gpu.kernels.add_into;
    Dispatch::new(gpu, k, &u, &[(1, a), (2, out)], grid_1d(a.len, 256))
}

/// dx = dy where y > 0, else 0 (y is the ReLU's output).
pub fn relu_backward(gpu: &Gpu, dy: &View, y: &View, dx: &View) -> Dispatch {
    let u = len_uniform(gpu, dy.len);
    let k = &gpu.kernels.relu_backward;
    Dispatch::new(
        gpu,
        k,
        &u,
        &[(1, dy), (2, y), (3, dx)],
        grid_1d(dy.len, 256),
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossUniform {
    rows: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Per sub-pixel NLL in nats, and the gradient of `scale` x (their sum) w.r.t. the logits.
///
/// # Shapes
/// - logits, dlogits: `[P, C * 256]`
/// - target (u32), nll: `[P, C]`
pub fn softmax_nll(
    gpu: &Gpu,
    logits: &View,
    target: &View,
    nll: &View,
    dlogits: &View,
    scale: f32,
) -> Dispatch {
    let u = gpu.uniform(
        "loss",
        &LossUniform {
            rows: nll.len as u32,
            scale,
            _pad: [0; 2],
        },
    );
    let views = [(1, logits), (2, target), (3, nll), (4, dlogits)];
    let k = &gpu.kernels.softmax_nll;
    Dispatch::new(gpu, k, &u, &views, grid_1d(nll.len, 64))
}

/// total[0] = sum of values, or total[0] += that sum when `accumulate`.
pub fn sum_all(gpu: &Gpu, values: &View, total: &View, accumulate: bool) -> Dispatch {
    let u = gpu.uniform(
        "sum",
        &Len {
            len: values.len as u32,
            _pad: [accumulate as u32, 0, 0],
        },
    );
    let k = &gpu.kernels.sum_all;
    Dispatch::new(gpu, k, &u, &[(1, values), (2, total)], [1, 1, 1])
}

/// The optimizer and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// RMSProp: v = rho v + (1 - rho) g^2, theta -= lr g / (sqrt(v) + eps).
    RmsProp {
        /// Step size.
        lr: f32,
        /// Decay of the running mean square.
        rho: f32,
        /// Added to the root mean square.
        eps: f32,
    },
    /// Adam (Kingma and Ba, 2015) with bias correction.
    Adam {
        /// Step size.
        lr: f32,
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Added to the root of the second moment.
        eps: f32,
    },
}

impl Optimizer {
    /// RMSProp with step size `lr` and the usual rho = 0.95, eps = 1e-6.
    pub fn rmsprop(lr: f32) -> Self {
        Self::RmsProp {
            lr,
            rho: 0.95,
            eps: 1e-6,
        }
    }

    /// Adam with step size `lr` and beta1 = 0.9, beta2 = 0.999, eps = 1e-8.
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The name used on the command line and in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RmsProp { .. } => "rmsprop",
            Self::Adam { .. } => "adam",
        }
    }

    /// The step size.
    pub fn lr(&self) -> f32 {
        match *self {
            Self::RmsProp { lr, .. } | Self::Adam { lr, .. } => lr,
        }
    }

    /// One update of `theta` with gradient `grad`, moments `m` and `v`, at step `t`
    /// (counting from 1): the CPU twin of the optimizer kernels.
    pub fn step_cpu(&self, t: u64, theta: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let u = self.uniform(theta.len(), t);
        for i in 0..theta.len() {
            let g = grad[i];
            match self {
                Self::RmsProp { .. } => {
                    v[i] = u.beta1 * v[i] + (1.0 - u.beta1) * g * g;
                    theta[i] -= u.lr * g / (v[i].sqrt() + u.eps);
                }
                Self::Adam { .. } => {
                    m[i] = u.beta1 * m[i] + (1.0 - u.beta1) * g;
                    v[i] = u.beta2 * v[i] + (1.0 - u.beta2) * g * g;
                    let m_hat = m[i] / u.correction1;
                    let v_hat = v[i] / u.correction2;
                    theta[i] -= u.lr * m_hat / (v_hat.sqrt() + u.eps);
                }
            }
        }
    }

    fn uniform(&self, len: usize, t: u64) -> OptUniform {
        let (lr, beta1, beta2, eps) = match *self {
            Self::RmsProp { lr, rho, eps } => (lr, rho, 0.0, eps),
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => (lr, beta1, beta2, eps),
        };
        OptUniform {
            len: len as u32,
            lr,
            beta1,
            beta2,
            eps,
            correction1: 1.0 - beta1.powf(t as f32),
            correction2: 1.0 - beta2.powf(t as f32),
            _pad: 0,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct OptUniform {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    correction1: f32,
    correction2: f32,
    _pad: u32,
}

/// The optimizer's launch over a flat parameter buffer, with its per-step uniform.
#[derive(Debug, Clone)]
pub struct OptimizerOp {
    optimizer: Optimizer,
    len: usize,
    uniform: wgpu::Buffer,
    /// The update launch; call [`OptimizerOp::prepare`] before each submission.
    pub dispatch: Dispatch,
}

impl OptimizerOp {
    /// Records the update of `theta` from `grad` with moment buffers `m`, `v`.
    pub fn new(
        gpu: &Gpu,
        optimizer: Optimizer,
        theta: &View,
        grad: &View,
        m: &View,
        v: &View,
    ) -> Self {
        let uniform = gpu.uniform("optimizer", &optimizer.uniform(theta.len, 1));
        let grid = grid_1d(theta.len, 256);
        let dispatch = match optimizer {
            Optimizer::RmsProp { .. } => Dispatch::new(
                gpu,
                &gpu.kernels.rmsprop,
                &uniform,
                &[(1, theta), (2, grad), (4, v)],
                grid,
            ),
            Optimizer::Adam { .. } => Dispatch::new(
                gpu,
                &gpu.kernels.adam,
                &uniform,
                &[(1, theta), (2, grad), (3, m), (4, v)],
                grid,
            ),
        };
        Self {
            optimizer,
            len: theta.len,
            uniform,
            dispatch,
        }
    }

    /// Writes the step-dependent constants for step `t` (from 1).
    pub fn prepare(&self, gpu: &Gpu, t: u64) {
        let u = self.optimizer.uniform(self.len, t);
        gpu.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&u));
    }
}

/// Plain CPU twins of the elementwise and loss kernels.
pub mod cpu {
    use super::LEVELS;

    /// max(a, 0).
    pub fn relu(a: &[f32]) -> Vec<f32> {
        a.iter().map(|v| v.max(0.0)).collect()
    }

    /// dy where y > 0, else 0.
    pub fn relu_backward(dy: &[f32], y: &[f32]) -> Vec<f32> {
        dy.iter()
            .zip(y)
            .map(|(d, v)| if *v > 0.0 { *d } else { 0.0 })
            .collect()
    }

    /// (nll per row in nats, scale x gradient of their sum w.r.t. the logits).
    pub fn softmax_nll(logits: &[f32], target: &[u32], scale: f32) -> (Vec<f32>, Vec<f32>) {
        let mut nll = Vec::with_capacity(target.len());
        let mut grad = vec![0.0; logits.len()];
        for (r, &t) in target.iter().enumerate() {
            let row = &logits[r * LEVELS..][..LEVELS];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let log_z = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
            nll.push(log_z - row[t as usize]);
            for (v, g) in grad[r * LEVELS..][..LEVELS].iter_mut().enumerate() {
                let prob = (row[v] - log_z).exp();
                *g = scale * (prob - if v == t as usize { 1.0 } else { 0.0 });
            }
        }
        (nll, grad)
    }
}
