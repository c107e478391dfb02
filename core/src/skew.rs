//! Skew and unskew of the Diagonal BiLSTM (van den Oord et al., 2016, section 3.2 and
//! Figure 3): the skew shifts row i of an H x W map right by i positions, so that each
//! diagonal of the image becomes a column of an H x (H + W - 1) map and the LSTM can
//! run over the columns. Unskew is the skew's transpose, so each is the other's
//! backward pass.
//!
//! # Layout
//!
//! Image maps are `[B, H, W, K]`; skewed maps are step-major for the LSTM scan,
//! `[B, S, H, K]` with S = H + W - 1: position i of step s is image row i, column s - i,
//! zero where that column is outside the image.

use crate::gpu::{grid_1d, Dispatch, Gpu, View};

/// Shape and variant of a skew or unskew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// Images B.
    pub batch: usize,
    /// Image rows H.
    pub height: usize,
    /// Image columns W.
    pub width: usize,
    /// Channels K.
    pub channels: usize,
    /// Read the image's columns right to left: the second direction of the BiLSTM.
    pub mirror: bool,
    /// Unskewed rows move down by this many rows (the rows left empty get zeros):
    /// 1 for the right-to-left output, so that no position sees the rest of its own
    /// row; 0 otherwise.
    pub shift: isize,
}

impl Skew {
    /// Steps (columns) of the skewed map, H + W - 1.
    pub fn steps(&self) -> usize {
        self.height + self.width - 1
    }

    /// Values of the image map.
    pub fn image_len(&self) -> usize {
        self.batch * self.height * self.width * self.channels
    }

    /// Values of the skewed map.
    pub fn skewed_len(&self) -> usize {
        self.batch * self.steps() * self.height * self.channels
    }

    /// The stored column of image column `c`.
    fn column(&self, c: usize) -> usize {
        if self.mirror {
            self.width - 1 - c
        } else {
            c
        }
    }

    /// For image row r and column c: the (step, position) of the skewed map that
    /// holds it, or None for the rows the shift moves off the map.
    fn place(&self, r: usize, c: usize) -> Option<(usize, usize)> {
        let i = r
            .checked_add_signed(-self.shift)
            .filter(|&i| i < self.height)?;
        Some((i + self.column(c), i))
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SkewParams {
    batch: u32,
    height: u32,
    width: u32,
    channels: u32,
    mirror: u32,
    shift: i32,
    _pad: [u32; 2],
}

fn params(gpu: &Gpu, k: &Skew) -> wgpu::Buffer {
    gpu.uniform(
        "skew",
        &SkewParams {
            batch: k.batch as u32,
            height: k.height as u32,
            width: k.width as u32,
            channels: k.channels as u32,
            mirror: k.mirror as u32,
            shift: k.shift as i32,
            _pad: [0; 2],
        },
    )
}

/// Launches the skew of `image` (`[B, H, W, K]`) into `skewed` (`[B, S, H, K]`).
pub fn skew(gpu: &Gpu, k: &Skew, image: &View, skewed: &View) -> Dispatch {
    let u = params(gpu, k);
    let views = [(1, image), (2, skewed)];
    Dispatch::new(
        gpu,
        &gpu.kernels.skew,
        &u,
        &views,
        grid_1d(k.skewed_len(), 64),
    )
}

/// Launches the unskew of `skewed` (`[B, S, H, K]`) into `image` (`[B, H, W, K]`).
pub fn unskew(gpu: &Gpu, k: &Skew, skewed: &View, image: &View) -> Dispatch {
    let u = params(gpu, k);
    let views = [(1, skewed), (2, image)];
    Dispatch::new(
        gpu,
        &gpu.kernels.unskew,
        &u,
        &views,
        grid_1d(k.image_len(), 64),
    )
}

/// Plain CPU versions.
pub mod cpu {
    use super::Skew;

    /// Skews `image` `[B, H, W, K]` into `[B, S, H, K]`, zeros off the image.
    pub fn skew(k: &Skew, image: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; k.skewed_len()];
        for b in 0..k.batch {
            for r in 0..k.height {
                for c in 0..k.width {
                    let Some((s, i)) = k.place(r, c) else {
                        continue;
                    };
                    let from = ((b * k.height + r) * k.width + c) * k.channels;
                    let to = ((b * k.steps() + s) * k.height + i) * k.channels;
                    out[to..][..k.channels].copy_from_slice(&image[from..][..k.channels]);
                }
            }
        }
        out
    }

    /// Unskews `skewed` `[B, S, H, K]` into `[B, H, W, K]`.
    pub fn unskew(k: &Skew, skewed: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; k.image_len()];
        for b in 0..k.batch {
            for r in 0..k.height {
                for c in 0..k.width {
                    let Some((s, i)) = k.place(r, c) else {
                        continue;
                    };
                    let from = ((b * k.steps() + s) * k.height + i) * k.channels;
                    let to = ((b * k.height + r) * k.width + c) * k.channels;
                    out[to..][..k.channels].copy_from_slice(&skewed[from..][..k.channels]);
                }
            }
        }
        out
    }
}
