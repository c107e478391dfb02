//! `pixelrnn`: train, evaluate, sample, complete and benchmark PixelRNN models on
//! Vulkan, Metal or DX12 through wgpu.

mod bench;
mod commands;
mod picture;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "pixelrnn",
    version,
    about = "Pixel Recurrent Neural Networks on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model; the newest checkpoint is always OUT/last.safetensors.
    Train(TrainArgs),
    /// Negative log-likelihood of a dataset split under a checkpoint.
    Eval(EvalArgs),
    /// Draw new images.
    Sample(SampleArgs),
    /// Complete occluded test images: occluded / completions / original per row.
    Complete(CompleteArgs),
    /// Time a training step of each model on the GPU against the CPU reference, or
    /// (`bench sample`) the plain and the incremental sampler.
    Bench(BenchArgs),
    /// Write a checkpoint's weights alone, without the optimizer state (for the page).
    Export(ExportArgs),
}

/// Model architectures.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    /// 7x7 mask-A convolution, residual blocks of 3x3 mask-B convolutions.
    Pixelcnn,
    /// 7x7 mask-A convolution, Row LSTM layers (1 x 3 input-to-state, rows top down).
    RowLstm,
    /// 7x7 mask-A convolution, Diagonal BiLSTM layers (skewed, both directions).
    DiagBilstm,
    /// Multi-Scale PixelRNN: a model of a subsampled image, then one of the full image
    /// given it (the two stages' architectures: --stages).
    Multiscale,
}

impl Model {
    /// The architecture of a single-scale model, None for the multi-scale one.
    fn arch(self) -> Option<pixelrnn::model::Arch> {
        use pixelrnn::model::Arch;
        match self {
            Model::Pixelcnn => Some(Arch::PixelCnn),
            Model::RowLstm => Some(Arch::RowLstm),
            Model::DiagBilstm => Some(Arch::DiagBiLstm),
            Model::Multiscale => None,
        }
    }
}

/// Optimizers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OptimizerName {
    /// RMSProp, as in the paper.
    Rmsprop,
    /// Adam.
    Adam,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Architecture.
    #[arg(long, value_enum, default_value = "pixelcnn")]
    model: Model,
    /// With --model multiscale: the architectures of the small image's model and of
    /// the full image's conditional model.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "row-lstm,row-lstm"
    )]
    stages: Vec<Model>,
    /// With --model multiscale: the small image's size, the image size divided by a
    /// power of two (default: half the image size).
    #[arg(long)]
    small_size: Option<usize>,
    /// fashion-mnist[:DIR], cifar10:DIR or images:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Run directory for checkpoints, metrics and pictures.
    #[arg(long)]
    out: PathBuf,
    /// Residual blocks or recurrent layers after the 7x7 layer.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// h: maps inside each block or LSTM state channels (the residual stream has 2h);
    /// a multiple of 4.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Maps of the hidden 1x1 layer of the output stack; a multiple of 4.
    #[arg(long, default_value_t = 64)]
    out_hidden: usize,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Training steps (default: one epoch when --epochs is not given either).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the training set.
    #[arg(long)]
    epochs: Option<u64>,
    /// Step size.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "rmsprop")]
    optimizer: OptimizerName,
    /// Seed of the initial weights and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image size (default: the dataset's).
    #[arg(long)]
    size: Option<usize>,
    /// Colour channels, 1 or 3 (default: the dataset's).
    #[arg(long)]
    channels: Option<usize>,
    /// Continue from OUT/last.safetensors.
    #[arg(long)]
    resume: bool,
    /// Evaluate on the test split every N steps (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    /// Test images per evaluation during training.
    #[arg(long, default_value_t = 1000)]
    eval_limit: usize,
    /// Read the loss back every N steps.
    #[arg(long, default_value_t = 25)]
    log_every: u64,
    /// Write OUT/last.safetensors every N steps.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// fashion-mnist[:DIR], cifar10:DIR or images:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// train or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Write float32 [N, C, H, W] of -log2 p for every sub-pixel to this .npy file.
    #[arg(long)]
    per_pixel: Option<PathBuf>,
    /// Images per GPU pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// Checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images to draw.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Softmax temperature (1: the model's distribution; 0: the most likely value).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// PNG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Run the plain sampler, the whole network once per sub-pixel (the same images
    /// as the incremental sampler, slower).
    #[arg(long)]
    naive: bool,
}

#[derive(Args, Debug)]
struct CompleteArgs {
    /// Checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// fashion-mnist[:DIR], cifar10:DIR or images:DIR.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// bottom-half or rect:X,Y,W,H.
    #[arg(long, default_value = "bottom-half")]
    occlude: String,
    /// Test images to complete (rows of the picture).
    #[arg(long, default_value_t = 4)]
    count: usize,
    /// Completions per image.
    #[arg(long, default_value_t = 3)]
    completions: usize,
    /// Seed of the image choice and the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Softmax temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// PNG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Run the plain sampler, the whole network once per sub-pixel (the same images
    /// as the incremental sampler, slower).
    #[arg(long)]
    naive: bool,
    /// Order each image's completions by the model's likelihood of the whole
    /// completed image, most likely first, and print their bits/dim.
    #[arg(long)]
    rank: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The weights-only checkpoint to write.
    #[arg(long)]
    out: PathBuf,
}

/// What `bench` times.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BenchTarget {
    /// A training step of each model.
    Train,
    /// Sampling a batch with the plain and the incremental sampler.
    Sample,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// What to time.
    #[arg(value_enum, default_value = "train")]
    target: BenchTarget,
    /// Models to time, in one run (default: all four; the multi-scale model is two
    /// Row LSTMs, 14x14 then 28x28 given it, both stages timed and added).
    #[arg(long, value_enum, value_delimiter = ',')]
    model: Vec<Model>,
    /// Residual blocks or recurrent layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// h.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Maps of the hidden output layer.
    #[arg(long, default_value_t = 64)]
    out_hidden: usize,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Timed repetitions of each measurement.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Also time the same step in PyTorch on this CPU (scripts/torch_bench.py).
    #[arg(long)]
    vs_torch: bool,
    /// Use the portable convolution kernels even where the device has subgroups.
    #[arg(long)]
    portable: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => commands::train(a),
        Command::Eval(a) => commands::eval(a),
        Command::Sample(a) => commands::sample(a),
        Command::Complete(a) => commands::complete(a),
        Command::Bench(a) => bench::run(a),
        Command::Export(a) => commands::export(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
