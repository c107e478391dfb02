//! The transposed convolution: GPU kernels against the CPU twin on seeded random
//! data, and the CPU backward pass against finite differences.

mod common;

use common::{gpu, rng, uniform, KERNEL};
use pixelrnn::deconv::{self, DeconvBuffers, DeconvOp, DeconvShape};
use pixelrnn::gpu::{submit, View};

/// Doubling (the model's layer), non-overlapping 2 x 2, a stride-3 kernel that leaves
/// gaps, and a stride-1 one, over input sizes that are not all square numbers of taps.
fn shapes() -> Vec<(DeconvShape, usize)> {
    let shape = |k, stride, pad, in_ch, out_ch| DeconvShape {
        k,
        stride,
        pad,
        in_ch,
        out_ch,
    };
    vec![
        (DeconvShape::doubling(1, 8), 7),
        (DeconvShape::doubling(5, 3), 4),
        (shape(2, 2, 0, 3, 4), 3),
        (shape(2, 3, 0, 2, 5), 3),
        (shape(3, 1, 1, 4, 2), 5),
    ]
}

#[test]
fn output_sizes() {
    assert_eq!(DeconvShape::doubling(1, 1).out_size(7), Some(14));
    assert_eq!(DeconvShape::doubling(1, 1).out_size(14), Some(28));
    let gaps = DeconvShape {
        k: 2,
        stride: 3,
        pad: 0,
        in_ch: 1,
        out_ch: 1,
    };
    assert_eq!(gaps.out_size(3), Some(8));
}

#[test]
fn gpu_deconv_matches_cpu() {
    let g = gpu();
    for (i, (s, n)) in shapes().into_iter().enumerate() {
        let batch = 2;
        let m = s.out_size(n).unwrap();
        let mut r = rng(40 + i as u64);
        let x = uniform(&mut r, batch * n * n * s.in_ch);
        let params = uniform(&mut r, s.len());
        let dy = uniform(&mut r, batch * m * m * s.out_ch);

        let view = |data: &[f32]| View::whole(&g.buffer_from("data", data));
        let (xv, pv, dyv) = (view(&x), view(&params), view(&dy));
        let y = View::whole(&g.zeros("y", dy.len()));
        let dx = View::whole(&g.zeros("dx", x.len()));
        let dp = View::whole(&g.zeros("dparams", s.len()));
        let op = DeconvOp::new(
            &g,
            &s,
            batch,
            n,
            &DeconvBuffers {
                x: &xv,
                params: &pv,
                y: &y,
                dy: Some(&dyv),
                dparams: Some(&dp),
                dx: Some(&dx),
            },
        );
        assert_eq!(op.backward.len(), 2);
        submit(&g, &[std::slice::from_ref(&op.forward), &op.backward]);

        let read = |v: &View| pollster::block_on(g.read_all(&v.buffer)).unwrap();
        let want_y = deconv::cpu::forward(&s, n, &x, &params);
        let (want_dx, want_dp) = deconv::cpu::backward(&s, n, &x, &params, &dy);
        KERNEL.assert(&format!("{s:?} y"), &read(&y), &want_y);
        KERNEL.assert(&format!("{s:?} dx"), &read(&dx), &want_dx);
        KERNEL.assert(&format!("{s:?} dparams"), &read(&dp), &want_dp);
    }
}

/// L = sum of y r for a fixed random r: the CPU gradients of x and of every
/// parameter equal central differences of L (in f64).
#[test]
fn cpu_deconv_backward_matches_finite_differences() {
    for (i, (s, n)) in shapes().into_iter().enumerate() {
        let m = s.out_size(n).unwrap();
        let mut r = rng(70 + i as u64);
        let x = uniform(&mut r, n * n * s.in_ch);
        let params = uniform(&mut r, s.len());
        let weights = uniform(&mut r, m * m * s.out_ch);
        let loss = |x: &[f32], p: &[f32]| -> f64 {
            let y = deconv::cpu::forward(&s, n, x, p);
            y.iter()
                .zip(&weights)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum()
        };
        let (dx, dp) = deconv::cpu::backward(&s, n, &x, &params, &weights);
        let eps = 1e-2f32;
        let check = |what: &str, analytic: f32, plus: f64, minus: f64| {
            let numeric = (plus - minus) / (2.0 * eps as f64);
            assert!(
                (analytic as f64 - numeric).abs() <= 1e-3 + 1e-3 * numeric.abs(),
                "{s:?} {what}: analytic {analytic}, numeric {numeric}"
            );
        };
        for j in 0..x.len() {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[j] += eps;
            b[j] -= eps;
            check(
                &format!("dx[{j}]"),
                dx[j],
                loss(&a, &params),
                loss(&b, &params),
            );
        }
        for j in 0..params.len() {
            let (mut a, mut b) = (params.clone(), params.clone());
            a[j] += eps;
            b[j] -= eps;
            check(&format!("dparams[{j}]"), dp[j], loss(&x, &a), loss(&x, &b));
        }
    }
}
