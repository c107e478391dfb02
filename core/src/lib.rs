//! Pixel Recurrent Neural Networks (van den Oord, Kalchbrenner and Kavukcuoglu, 2016)
//! on WebGPU.
//!
//! Every kernel is a WGSL file under `shaders/` with a plain CPU twin in this crate;
//! the GPU side never blocks (readback is `async`), so the same library runs natively
//! through wgpu and in the browser through WebGPU.
//!
//! - [`conv`]: masked convolutions (masks A and B, R/G/B groups), forward and backward.
//! - [`deconv`]: transposed convolution, the multi-scale model's upsampling.
//! - [`ops`]: ReLU, the 256-way softmax loss, RMSProp and Adam.
//! - [`lstm`]: the LSTM scan of the Row LSTM and Diagonal BiLSTM, forward and backward
//!   through time.
//! - [`rnn`]: the Row LSTM and Diagonal BiLSTM layers around the scan.
//! - [`model`]: the three architectures, their parameters and a CPU reference model.
//! - [`multiscale`]: the Multi-Scale PixelRNN's two stages, sampled in turn.
//! - [`network`]: a model recorded on the GPU, training step in one submission.
//! - [`sample`]: sampling and completion of occluded images, with draws on the GPU.
//! - [`incremental`]: the incremental sampler, which recomputes only the new pixel.
//! - [`skew`]: skew and unskew of the Diagonal BiLSTM.
//! - [`checkpoint`]: safetensors checkpoints.
//! - [`data`]: Fashion-MNIST, CIFAR-10 and image-folder datasets.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod conv;
pub mod data;
pub mod deconv;
pub mod gpu;
pub mod incremental;
pub mod lstm;
pub mod model;
pub mod multiscale;
pub mod network;
pub mod ops;
pub mod rnn;
pub mod sample;
pub mod skew;

/// Everything that can go wrong on bad input or a failing device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GPU could not be opened or failed.
    #[error("GPU: {0}")]
    Gpu(String),
    /// A model configuration is invalid or does not match the weights.
    #[error("configuration: {0}")]
    Config(String),
    /// A dataset file or image is missing, corrupt or of the wrong shape.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint is missing, truncated or foreign.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Training diverged.
    #[error("loss became {value} at step {step}; lower --lr")]
    Diverged {
        /// The step whose loss was not finite.
        step: u64,
        /// The loss value.
        value: f64,
    },
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}
