//! The paper's Multi-Scale PixelRNN: an unconditional model of a
//! small s x s image, subsampled from the full one ([`crate::model::subsample`]), and
//! a conditional model of the full n x n image given it ([`ModelConfig::small`]).
//! Sampling runs the two stages in turn, each with the chosen sampler; completion
//! first completes the small image from the small pixels left visible, then the full
//! one given it.

use crate::model::{subsample, ModelConfig};
use crate::network::Network;
use crate::sample::{self, SamplerKind};
use crate::Error;

/// The seed of the second stage's draws for `seed`, the first stage's: another
/// seed, so that small-image sub-pixel i and full-image sub-pixel i, unrelated
/// positions, do not draw with the same random number.
pub fn second_stage_seed(seed: u64) -> u64 {
    seed ^ 0x9e37_79b9_7f4a_7c15
}

/// Checks that `small` models the small images `full` is conditioned on.
pub fn check_stages(small: &ModelConfig, full: &ModelConfig) -> Result<(), Error> {
    if full.small != Some(small.size) || small.channels != full.channels || small.small.is_some() {
        return Err(Error::Config(format!(
            "a {}x{}x{} unconditional first stage cannot feed a second stage conditioned \
             on {}",
            small.size,
            small.size,
            small.channels,
            full.small
                .map_or("nothing".into(), |s| format!("{s}x{s} images")),
        )));
    }
    Ok(())
}

/// Fills the sub-pixels of `images` (`[batch, n, n, C]`) whose `known` entry is
/// false with both stages: the small images first (their known sub-pixels are those
/// of the full images at the subsampled positions), then the full images given them.
/// Both networks take the same batch. Returns the small images;
/// `progress(done, total)` counts the sub-pixel steps of both stages.
pub async fn complete(
    small_net: &Network,
    full_net: &Network,
    images: &mut [u8],
    known: &[bool],
    draw: (f32, u64),
    kind: SamplerKind,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<u8>, Error> {
    let (s, f) = (small_net.config, full_net.config);
    check_stages(&s, &f)?;
    if small_net.batch != full_net.batch {
        return Err(Error::Config(format!(
            "the stages take batches of {} and {} images",
            small_net.batch, full_net.batch
        )));
    }
    let mut small = subsample(images, f.size, f.channels, s.size);
    let small_known = subsample(known, f.size, f.channels, s.size);
    let first = kind.steps(&small_known, small_net.batch, s.dims());
    let total = first + kind.steps(known, full_net.batch, f.dims());
    sample::complete(small_net, &mut small, &small_known, draw, kind, |d, _| {
        progress(d, total)
    })
    .await?;
    full_net.set_small(&small)?;
    let second = (draw.0, second_stage_seed(draw.1));
    sample::complete(full_net, images, known, second, kind, |d, _| {
        progress(first + d, total)
    })
    .await?;
    Ok(small)
}

/// Samples `full_net.batch` new images with both stages; returns (full, small).
pub async fn sample(
    small_net: &Network,
    full_net: &Network,
    draw: (f32, u64),
    kind: SamplerKind,
    progress: impl FnMut(usize, usize),
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let len = full_net.batch * full_net.config.dims();
    let mut images = vec![0u8; len];
    let small = complete(
        small_net,
        full_net,
        &mut images,
        &vec![false; len],
        draw,
        kind,
        progress,
    )
    .await?;
    Ok((images, small))
}
