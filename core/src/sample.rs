//! Sampling and completion: one sub-pixel at a time in raster order, R then G then
//! B, each drawn from its 256-way softmax given everything before it.
//!
//! Each step runs the whole network on the batch and reads back only the 256 logits
//! of the current sub-pixel of each image.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::network::Network;
use crate::ops::LEVELS;
use crate::Error;

/// Draws an intensity from `logits / temperature` with the uniform number `u` in [0, 1).
pub fn draw(logits: &[f32], temperature: f32, u: f32) -> u8 {
    let t = temperature.max(1e-6);
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - m) / t) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let goal = u as f64 * total;
    for (v, w) in weights.iter().enumerate() {
        acc += w;
        if acc > goal {
            return v as u8;
        }
    }
    (LEVELS - 1) as u8
}

/// A batch of images being filled in, in raster order, by sampling from a network.
///
/// Each [`Completion::advance`] draws the next few open sub-pixel positions, so a caller
/// can show the images between calls (a progressive display) without blocking.
#[derive(Debug, Clone)]
pub struct Completion {
    images: Vec<u8>,
    known: Vec<bool>,
    /// Sub-pixel positions (within one image) that some image of the batch must draw.
    open: Vec<usize>,
    done: usize,
    temperature: f32,
    rng: ChaCha8Rng,
}

impl Completion {
    /// Starts filling every sub-pixel of `images` (`[batch, H, W, C]`) whose `known`
    /// entry is false. Known sub-pixels stay as they are and condition what follows
    /// them.
    pub fn new(
        net: &Network,
        images: Vec<u8>,
        known: Vec<bool>,
        temperature: f32,
        seed: u64,
    ) -> Result<Self, Error> {
        let dims = net.config.dims();
        let batch = net.batch;
        if images.len() != batch * dims || known.len() != images.len() {
            return Err(Error::Data(format!(
                "{} image bytes and {} known flags given, the sampler takes {}",
                images.len(),
                known.len(),
                batch * dims
            )));
        }
        let open = (0..dims)
            .filter(|&i| (0..batch).any(|b| !known[b * dims + i]))
            .collect();
        Ok(Self {
            images,
            known,
            open,
            done: 0,
            temperature,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Draws up to `positions` more open sub-pixel positions (each for the whole
    /// batch); returns whether every position is now drawn.
    pub async fn advance(&mut self, net: &Network, positions: usize) -> Result<bool, Error> {
        let dims = net.config.dims();
        let end = (self.done + positions).min(self.open.len());
        while self.done < end {
            let i = self.open[self.done];
            net.set_images(&self.images)?;
            net.forward_logits();

            // Sub-pixel i of image b: pixel i / C, colour i % C.
            let ranges: Vec<(usize, usize)> = (0..net.batch)
                .map(|b| ((b * dims + i) * LEVELS, LEVELS))
                .collect();
            let logits = net.gpu().read_ranges(&net.logits, &ranges).await?;
            for (b, l) in logits.iter().enumerate() {
                let u: f32 = self.rng.random();
                if !self.known[b * dims + i] {
                    self.images[b * dims + i] = draw(l, self.temperature, u);
                }
            }
            self.done += 1;
        }
        Ok(self.is_finished())
    }

    /// Whether every open position has been drawn.
    pub fn is_finished(&self) -> bool {
        self.done == self.open.len()
    }

    /// Positions drawn so far and positions to draw in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.open.len())
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

/// Fills every sub-pixel of `images` (`[batch, H, W, C]`) whose `known` entry is
/// false, in raster order, by sampling from `net` (see [`Completion`]).
/// `progress(done, total)` is called after each sampled sub-pixel position.
pub async fn complete(
    net: &Network,
    images: &mut [u8],
    known: &[bool],
    temperature: f32,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<(), Error> {
    let mut completion = Completion::new(net, images.to_vec(), known.to_vec(), temperature, seed)?;
    loop {
        let finished = completion.advance(net, 1).await?;
        let (done, total) = completion.progress();
        progress(done, total);
        if finished {
            break;
        }
    }
    images.copy_from_slice(completion.images());
    Ok(())
}

/// Samples `net.batch` new images.
pub async fn sample(
    net: &Network,
    temperature: f32,
    seed: u64,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<u8>, Error> {
    let len = net.batch * net.config.dims();
    let mut images = vec![0u8; len];
    complete(
        net,
        &mut images,
        &vec![false; len],
        temperature,
        seed,
        progress,
    )
    .await?;
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
