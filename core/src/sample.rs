//! Sampling and completion: one sub-pixel at a time in raster order, R then G then
//! B, each drawn from its 256-way softmax given everything before it.
//!
//! The draws happen on the GPU: each step runs the whole network on the batch, and a
//! kernel draws the current sub-pixel of every image from its logits with a
//! counter-based random number and writes it into the network's input. Many steps go
//! into one submission; the images are read back only when the caller asks for them.

use crate::gpu::{self, Dispatch, Gpu, View};
use crate::incremental::IncrementalSampler;
use crate::network::Network;
use crate::ops::LEVELS;
use crate::Error;

/// A 32-bit integer hash with good avalanche (two multiply-xorshift rounds).
fn mix32(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The uniform number in [0, 1) with which every sampler draws sub-pixel `index` of
/// image `image` of a batch under `seed`: a function of the three alone.
pub fn uniform01(seed: u32, image: u32, index: u32) -> f32 {
    let h = mix32(mix32(mix32(seed) ^ image) ^ index);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The 32-bit seed the draw kernel takes for a 64-bit `seed`.
pub fn seed32(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// Draws an intensity from softmax(`logits` / `temperature`) with the uniform number
/// `u` in [0, 1): the first intensity whose cumulative weight exceeds u times the
/// total. Temperature 0 takes the most likely intensity (the first, on ties). The CPU
/// twin of the draw kernel, in the same f32 arithmetic.
pub fn draw(logits: &[f32], temperature: f32, u: f32) -> u8 {
    let (best, top) =
        logits.iter().enumerate().fold(
            (0, logits[0]),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        );
    if temperature <= 0.0 {
        return best as u8;
    }
    let weight = |l: f32| ((l - top) / temperature).exp();
    let total: f32 = logits.iter().map(|&l| weight(l)).sum();
    let goal = u * total;
    let mut acc = 0.0;
    for (v, &l) in logits.iter().enumerate() {
        acc += weight(l);
        if acc > goal {
            return v as u8;
        }
    }
    (LEVELS - 1) as u8
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DrawParams {
    batch: u32,
    dims: u32,
    seed: u32,
    temperature: f32,
    steps: u32,
    _pad: [u32; 3],
}

/// The draws over a batch and their cursor: which sub-pixels to visit, in order,
/// which are known, and the images as drawn so far.
#[derive(Debug)]
pub struct DrawOp {
    /// Moves the cursor on by one step.
    pub advance: Dispatch,
    /// Intensities `[B, D]` as u32.
    pub images: wgpu::Buffer,
    /// The cursor, `[1]`.
    pub cursor: wgpu::Buffer,
    /// The sub-pixel of each step, `[steps]` as u32.
    pub order: wgpu::Buffer,
    /// Which sub-pixels are known, `[B, D]` as u32 (1 = keep).
    pub known: wgpu::Buffer,
    /// The draws' parameters (uniform).
    pub params: wgpu::Buffer,
    batch: usize,
}

impl DrawOp {
    /// Sets up draws of the sub-pixels `order` (indices within an image) of `images`
    /// (`[batch, D]`, the known ones flagged in `known`), in that order.
    pub fn new(
        gpu: &Gpu,
        batch: usize,
        dims: usize,
        (images, known): (&[u8], &[bool]),
        order: &[usize],
        (temperature, seed): (f32, u64),
    ) -> Self {
        let words = |v: &[u32]| gpu.buffer_from("sampler", bytemuck::cast_slice(v));
        let known = words(&known.iter().map(|&k| k as u32).collect::<Vec<_>>());
        let order_buf = words(&order.iter().map(|&i| i as u32).collect::<Vec<_>>());
        let cursor = words(&[0]);
        let images = words(&images.iter().map(|&v| v as u32).collect::<Vec<_>>());
        let params = gpu.uniform(
            "draw",
            &DrawParams {
                batch: batch as u32,
                dims: dims as u32,
                seed: seed32(seed),
                temperature,
                steps: order.len() as u32,
                _pad: [0; 3],
            },
        );
        let advance = Dispatch::new(
            gpu,
            &gpu.kernels.advance,
            &params,
            &[(4, &View::whole(&cursor))],
            [1, 1, 1],
        );
        Self {
            advance,
            images,
            cursor,
            order: order_buf,
            known,
            params,
            batch,
        }
    }

    /// The launch that draws sub-pixel `order[cursor]` of every image from `logits`
    /// (`[batch D, 256]`) into the images and, encoded, into `input` (`[batch, D]`).
    pub fn draw(&self, gpu: &Gpu, logits: &View, input: &View) -> Dispatch {
        let whole = View::whole;
        Dispatch::new(
            gpu,
            &gpu.kernels.draw,
            &self.params,
            &[
                (1, logits),
                (2, &whole(&self.known)),
                (3, &whole(&self.order)),
                (4, &whole(&self.cursor)),
                (5, &whole(&self.images)),
                (6, input),
            ],
            [self.batch.div_ceil(64) as u32, 1, 1],
        )
    }

    /// Reads the images back as bytes.
    pub async fn read_images(&self, gpu: &Gpu) -> Result<Vec<u8>, Error> {
        let words = gpu.read_all(&self.images).await?;
        Ok(words.iter().map(|w| w.to_bits() as u8).collect())
    }
}

/// The sub-pixel positions (within an image of `dims`) that some image of the batch
/// must draw: those not known in every image.
fn open_positions(known: &[bool], batch: usize, dims: usize) -> Vec<usize> {
    (0..dims)
        .filter(|&i| (0..batch).any(|b| !known[b * dims + i]))
        .collect()
}

/// Checks that `images` and `known` each hold one value per sub-pixel of `net`'s batch.
pub(crate) fn check_batch(net: &Network, images: &[u8], known: &[bool]) -> Result<(), Error> {
    let want = net.batch * net.config.dims();
    if images.len() != want || known.len() != want {
        return Err(Error::Data(format!(
            "{} image bytes and {} known flags given, the sampler takes {want}",
            images.len(),
            known.len(),
        )));
    }
    Ok(())
}

/// A batch of images being filled in, in raster order, by sampling from a network.
///
/// Each [`Completion::advance`] draws the next few open sub-pixel positions in one
/// submission, so a caller can show the images between calls (a progressive display)
/// without blocking.
#[derive(Debug)]
pub struct Completion {
    images: Vec<u8>,
    /// Sub-pixel positions (within one image) that some image of the batch must draw.
    open: usize,
    done: usize,
    op: DrawOp,
    draw: Dispatch,
}

impl Completion {
    /// Starts filling every sub-pixel of `images` (`[batch, H, W, C]`) whose `known`
    /// entry is false. Known sub-pixels stay as they are and condition what follows
    /// them. A conditional model is conditioned on the small images set with
    /// [`Network::set_small`].
    pub fn new(
        net: &Network,
        images: Vec<u8>,
        known: Vec<bool>,
        temperature: f32,
        seed: u64,
    ) -> Result<Self, Error> {
        check_batch(net, &images, &known)?;
        let dims = net.config.dims();
        let batch = net.batch;
        let open = open_positions(&known, batch, dims);
        net.set_images(&images)?;
        let op = DrawOp::new(
            net.gpu(),
            batch,
            dims,
            (&images, &known),
            &open,
            (temperature, seed),
        );
        let draw = op.draw(net.gpu(), &View::whole(&net.logits), &net.input_view());
        Ok(Self {
            images,
            open: open.len(),
            done: 0,
            op,
            draw,
        })
    }

    /// Draws up to `positions` more open sub-pixel positions (each for the whole
    /// batch), then reads the images back; returns whether every position is now drawn.
    pub async fn advance(&mut self, net: &Network, positions: usize) -> Result<bool, Error> {
        let steps = positions.min(self.open - self.done);
        let step = [
            net.forward_dispatches(),
            std::slice::from_ref(&self.draw),
            std::slice::from_ref(&self.op.advance),
        ];
        let all: Vec<&[Dispatch]> = (0..steps).flat_map(|_| step).collect();
        gpu::submit(net.gpu(), &all);
        self.done += steps;
        self.images = self.op.read_images(net.gpu()).await?;
        Ok(self.is_finished())
    }

    /// Whether every open position has been drawn.
    pub fn is_finished(&self) -> bool {
        self.done == self.open
    }

    /// Positions drawn so far and positions to draw in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.open)
    }

    /// The images as far as they are drawn (`[batch, H, W, C]`).
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// The images, once drawn.
    pub fn into_images(self) -> Vec<u8> {
        self.images
    }
}

/// Which sampler to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerKind {
    /// The whole network once per sub-pixel ([`Completion`]).
    Plain,
    /// Only the new pixel per sub-pixel ([`IncrementalSampler`]): the same images,
    /// far less work.
    #[default]
    Incremental,
}

/// A running sampler of either kind.
#[derive(Debug)]
pub enum Sampler {
    /// The plain sampler.
    Plain(Completion),
    /// The incremental sampler.
    Incremental(IncrementalSampler),
}

impl SamplerKind {
    /// The steps this sampler takes to fill the sub-pixels of a batch of `batch`
    /// images of `dims` that `known` leaves open: one per sub-pixel for the
    /// incremental sampler, one per open position for the plain one.
    pub fn steps(self, known: &[bool], batch: usize, dims: usize) -> usize {
        match self {
            Self::Plain => open_positions(known, batch, dims).len(),
            Self::Incremental => dims,
        }
    }
}

impl Sampler {
    /// Starts filling the sub-pixels of `images` whose `known` entry is false (see
    /// [`Completion::new`]) with the sampler `kind` asks for.
    pub fn new(
        net: &Network,
        images: Vec<u8>,
        known: Vec<bool>,
        (temperature, seed): (f32, u64),
        kind: SamplerKind,
    ) -> Result<Self, Error> {
        if kind == SamplerKind::Incremental {
            let s = IncrementalSampler::new(net, images, known, temperature, seed)?;
            return Ok(Self::Incremental(s));
        }
        Completion::new(net, images, known, temperature, seed).map(Self::Plain)
    }

    /// Runs up to `steps` more steps, then reads the images back; returns whether the
    /// images are finished.
    pub async fn advance(&mut self, net: &Network, steps: usize) -> Result<bool, Error> {
        match self {
            Self::Plain(s) => s.advance(net, steps).await,
            Self::Incremental(s) => s.advance(net.gpu(), steps).await,
        }
    }

    /// Steps taken and steps in all.
    pub fn progress(&self) -> (usize, usize) {
        match self {
            Self::Plain(s) => s.progress(),
            Self::Incremental(s) => s.progress(),
        }
    }

    /// The images as far as they are drawn.
    pub fn images(&self) -> &[u8] {
        match self {
            Self::Plain(s) => s.images(),
            Self::Incremental(s) => s.images(),
        }
    }
}

/// Fills every sub-pixel of `images` (`[batch, H, W, C]`) whose `known` entry is
/// false, in raster order, by sampling from `net` with the sampler `kind`, reading the
/// images back once per image row. `progress(done, total)` is called after each row.
pub async fn complete(
    net: &Network,
    images: &mut [u8],
    known: &[bool],
    draw: (f32, u64),
    kind: SamplerKind,
    mut progress: impl FnMut(usize, usize),
) -> Result<(), Error> {
    let mut sampler = Sampler::new(net, images.to_vec(), known.to_vec(), draw, kind)?;
    let row = net.config.size * net.config.channels;
    loop {
        let finished = sampler.advance(net, row).await?;
        let (done, total) = sampler.progress();
        progress(done, total);
        if finished {
            break;
        }
    }
    images.copy_from_slice(sampler.images());
    Ok(())
}

/// Samples `net.batch` new images at `temperature` from `seed`.
pub async fn sample(
    net: &Network,
    draw: (f32, u64),
    kind: SamplerKind,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<u8>, Error> {
    let len = net.batch * net.config.dims();
    let mut images = vec![0u8; len];
    complete(net, &mut images, &vec![false; len], draw, kind, progress).await?;
    Ok(images)
}

/// Which part of an image is hidden for completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occlusion {
    /// Every row from the middle down.
    BottomHalf,
    /// A rectangle at column x, row y, of width w and height h.
    Rect {
        /// Left column.
        x: usize,
        /// Top row.
        y: usize,
        /// Width.
        w: usize,
        /// Height.
        h: usize,
    },
}

impl std::str::FromStr for Occlusion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "bottom-half" {
            return Ok(Self::BottomHalf);
        }
        let bad = || {
            Error::Data(format!(
                "occlusion '{s}': expected bottom-half or rect:X,Y,W,H"
            ))
        };
        let nums: Vec<usize> = s
            .strip_prefix("rect:")
            .ok_or_else(bad)?
            .split(',')
            .map(|v| v.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match nums[..] {
            [x, y, w, h] if w > 0 && h > 0 => Ok(Self::Rect { x, y, w, h }),
            _ => Err(bad()),
        }
    }
}

impl Occlusion {
    /// Whether the pixel at (row, col) of a `size` x `size` image is hidden.
    pub fn hides(&self, row: usize, col: usize, size: usize) -> bool {
        match *self {
            Self::BottomHalf => row >= size / 2,
            Self::Rect { x, y, w, h } => (y..y + h).contains(&row) && (x..x + w).contains(&col),
        }
    }

    /// Known flags `[H, W, C]` for one image: true where the pixel is visible.
    pub fn known(&self, size: usize, channels: usize) -> Vec<bool> {
        let mut known = Vec::with_capacity(size * size * channels);
        for row in 0..size {
            for col in 0..size {
                known.extend(std::iter::repeat_n(!self.hides(row, col, size), channels));
            }
        }
        known
    }
}
