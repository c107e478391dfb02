//! The LSTM scan's CPU reference: backward through several steps against finite
//! differences, for the Row LSTM's and the Diagonal BiLSTM's state-to-state taps, and
//! the reach of each step's state.

mod common;

use common::{rng, uniform, Tolerance};
use pixelrnn::lstm::{cpu, Scan, DIAGONAL_TAPS, ROW_TAPS};

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
