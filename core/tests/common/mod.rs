//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use pixelrnn::gpu::{Gpu, GpuOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The one tolerance rule of the test suite: `got` matches `want` when
/// |got - want| <= abs + rel * |want|. GPU and CPU sum in different orders, so
/// kernels are compared with rel = 1e-4, abs = 1e-5 unless a test says otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rel: f32,
    pub abs: f32,
}

pub const KERNEL: Tolerance = Tolerance {
    rel: 1e-4,
    abs: 1e-5,
};

impl Tolerance {
    /// Panics with the first index where `got` and `want` differ, and both values.
    pub fn assert(&self, what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g - w).abs() <= self.abs + self.rel * w.abs();
            assert!(ok, "{what}[{i}]: got {g}, want {w} (tolerance {self:?})");
        }
    }
}

pub fn gpu() -> Gpu {
    pollster::block_on(Gpu::new()).expect("a GPU adapter (lavapipe in CI)")
}

/// The GPU with the portable kernels, and with the subgroup kernels where the device
/// has them, so that tests cover every variant this machine can run.
pub fn gpu_variants() -> Vec<Gpu> {
    let portable = GpuOptions { subgroups: false };
    let mut gpus = vec![pollster::block_on(Gpu::with_options(portable)).expect("a GPU adapter")];
    let best = gpu();
    if best.subgroups() {
        gpus.push(best);
    }
    gpus
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub fn bytes(rng: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}
