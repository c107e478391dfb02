//! The LSTM scan: the CPU reference's backward through several steps against finite
//! differences, for the Row LSTM's and the Diagonal BiLSTM's state-to-state taps, the
//! reach of each step's state, and the GPU scan against the CPU.

mod common;

use common::{rng, uniform, Tolerance, KERNEL};
use pixelrnn::gpu::{submit, View};
use pixelrnn::lstm::{cpu, Scan, ScanBuffers, ScanGrads, ScanOp, DIAGONAL_TAPS, ROW_TAPS};

/// Finite differences of L = sum(h * r) for a fixed random r, in f64.
#[test]
fn scan_backward_matches_finite_differences() {
    let sc = Scan {
        batch: 2,
        steps: 4,
        len: 3,
        hidden: 2,
    };
    for (case, taps) in [&ROW_TAPS[..], &DIAGONAL_TAPS[..]].into_iter().enumerate() {
        let mut r = rng(40 + case as u64);
        let n = sc.hidden;
        let pre = uniform(&mut r, sc.positions() * 4 * n);
        let kss = uniform(&mut r, taps.len() * n * 4 * n);
        let h0 = uniform(&mut r, n);
        let c0 = uniform(&mut r, n);
        let proj = uniform(&mut r, sc.positions() * n);
        let loss = |pre: &[f32], kss: &[f32], h0: &[f32], c0: &[f32]| -> f64 {
            let f = cpu::forward(&sc, taps, pre, kss, h0, c0);
            f.h.iter()
                .zip(&proj)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        let fwd = cpu::forward(&sc, taps, &pre, &kss, &h0, &c0);
        let grad = cpu::backward(&sc, taps, &fwd, &proj, &kss, &h0, &c0);

        let eps = 1e-2f32;
        let fd = Tolerance {
            rel: 1e-2,
            abs: 1e-3,
        };
        let central = |f: &dyn Fn(f32) -> f64| ((f(eps) - f(-eps)) / (2.0 * eps as f64)) as f32;
        let check = |name: &str, value: &[f32], got: &[f32], set: &dyn Fn(&[f32]) -> f64| {
            for i in 0..value.len() {
                let num = central(&|d| {
                    let mut v = value.to_vec();
                    v[i] += d;
                    set(&v)
                });
                fd.assert(&format!("taps {taps:?}: d{name}[{i}]"), &[got[i]], &[num]);
            }
        };
        check("pre", &pre, &grad.pre, &|v| loss(v, &kss, &h0, &c0));
        check("kss", &kss, &grad.kss, &|v| loss(&pre, v, &h0, &c0));
        check("h0", &h0, &grad.h0, &|v| loss(&pre, &kss, v, &c0));
        check("c0", &c0, &grad.c0, &|v| loss(&pre, &kss, &h0, v));
    }
}

/// h at step s and position l depends on the pre-activations of exactly the positions
/// the taps reach back to: for the Row LSTM a cone widening by one position per step,
/// for the Diagonal BiLSTM positions l - (s - s') .. l of step s'. Nothing of later
/// steps, nothing of other images.
#[test]
fn each_state_sees_exactly_its_cone() {
    let sc = Scan {
        batch: 2,
        steps: 4,
        len: 5,
        hidden: 1,
    };
    for (taps, left, right) in [(&ROW_TAPS[..], 1, 1), (&DIAGONAL_TAPS[..], 1, 0)] {
        let mut r = rng(7);
        let n = sc.hidden;
        let pre = uniform(&mut r, sc.positions() * 4 * n);
        let kss = uniform(&mut r, taps.len() * n * 4 * n);
        let h0 = uniform(&mut r, n);
        let c0 = uniform(&mut r, n);
        let fwd = cpu::forward(&sc, taps, &pre, &kss, &h0, &c0);
        let (b, s, l) = (1, 3, 2);
        let mut dh = vec![0.0; sc.positions() * n];
        dh[sc.at(b, s, l)] = 1.0;
        let grad = cpu::backward(&sc, taps, &fwd, &dh, &kss, &h0, &c0);
        for b2 in 0..sc.batch {
            for s2 in 0..sc.steps {
                for l2 in 0..sc.len {
                    let back = s as isize - s2 as isize;
                    let d = l2 as isize - l as isize;
                    let reach = b2 == b && back >= 0 && -left * back <= d && d <= right * back;
                    let p = sc.at(b2, s2, l2);
                    let sees = grad.pre[p * 4..][..4].iter().any(|&g| g != 0.0);
                    assert_eq!(
                        sees, reach,
                        "taps {taps:?}: image {b2} step {s2} position {l2}"
                    );
                }
            }
        }
    }
}

/// The GPU scan, forward through every step and backward through them all, against
/// the CPU reference, for both tap sets and a partial last workgroup.
#[test]
fn gpu_scan_matches_cpu() {
    let g = common::gpu();
    let sc = Scan {
        batch: 2,
        steps: 5,
        len: 7,
        hidden: 6,
    };
    for (case, taps) in [&ROW_TAPS[..], &DIAGONAL_TAPS[..]].into_iter().enumerate() {
        let mut r = rng(60 + case as u64);
        let n = sc.hidden;
        let pre = uniform(&mut r, sc.positions() * 4 * n);
        let kss = uniform(&mut r, taps.len() * n * 4 * n);
        let (h0, c0) = (uniform(&mut r, n), uniform(&mut r, n));
        let dh = uniform(&mut r, sc.positions() * n);
        let want = cpu::forward(&sc, taps, &pre, &kss, &h0, &c0);
        let want_grad = cpu::backward(&sc, taps, &want, &dh, &kss, &h0, &c0);

        let view = |label: &str, data: &[f32]| View::whole(&g.buffer_from(label, data));
        let zeros = |label: &str, len: usize| View::whole(&g.zeros(label, len));
        let init = [h0.clone(), c0.clone()].concat();
        let (pre_v, kss_v, init_v) = (view("pre", &pre), view("kss", &kss), view("init", &init));
        let gates = zeros("gates", sc.positions() * 4 * n);
        let (c, h) = (
            zeros("c", sc.positions() * n),
            zeros("h", sc.positions() * n),
        );
        let dh_v = view("dh", &dh);
        let dpre = zeros("dpre", sc.positions() * 4 * n);
        let dc = zeros("dc", sc.positions() * n);
        let dkss = zeros("dkss", kss.len());
        let dinit = zeros("dinit", 2 * n);
        let op = ScanOp::new(
            &g,
            &sc,
            taps,
            &ScanBuffers {
                pre: &pre_v,
                kss: &kss_v,
                init: &init_v,
                gates: &gates,
                c: &c,
                h: &h,
                grads: Some(ScanGrads {
                    dh: &dh_v,
                    pre: &dpre,
                    c: &dc,
                    kss: &dkss,
                    init: &dinit,
                }),
            },
        );
        submit(&g, &[&op.forward, &op.backward]);
        let read = |v: &View| pollster::block_on(g.read(&v.buffer, 0, v.len)).unwrap();
        let tol = KERNEL;
        let what = |name: &str| format!("taps {taps:?}: {name}");
        tol.assert(&what("gates"), &read(&gates), &want.gates);
        tol.assert(&what("c"), &read(&c), &want.c);
        tol.assert(&what("h"), &read(&h), &want.h);
        tol.assert(&what("dpre"), &read(&dpre), &want_grad.pre);
        tol.assert(&what("dkss"), &read(&dkss), &want_grad.kss);
        let dinit_got = read(&dinit);
        tol.assert(&what("dh0"), &dinit_got[..n], &want_grad.h0);
        tol.assert(&what("dc0"), &dinit_got[n..], &want_grad.c0);
    }
}
