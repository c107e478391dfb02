//! Skew and unskew: where each pixel lands, unskew undoing the skew, each being the
//! other's transpose (so each is the other's backward pass), and the GPU kernels
//! copying exactly what the CPU twins do.

mod common;

use common::{rng, uniform};
use pixelrnn::gpu::{submit, View};
use pixelrnn::skew::{self, cpu, Skew};

fn variants() -> Vec<Skew> {
    let mut all = Vec::new();
    for mirror in [false, true] {
        for shift in [-1, 0, 1] {
            all.push(Skew {
                batch: 2,
                height: 3,
                width: 5,
                channels: 2,
                mirror,
                shift,
            });
        }
    }
    all
}

#[test]
fn skew_puts_each_diagonal_in_a_column() {
    let k = Skew {
        batch: 1,
        height: 3,
        width: 4,
        channels: 1,
        mirror: false,
        shift: 0,
    };
    // Pixel (r, c) holds 10 r + c + 1; zero means "no pixel".
    let image: Vec<f32> = (0..12).map(|p| (10 * (p / 4) + p % 4 + 1) as f32).collect();
    let skewed = cpu::skew(&k, &image);
    assert_eq!(k.steps(), 6);
    for s in 0..k.steps() {
        for i in 0..k.height {
            let want = if s >= i && s - i < k.width {
                (10 * i + (s - i) + 1) as f32
            } else {
                0.0
            };
            assert_eq!(skewed[s * k.height + i], want, "step {s}, position {i}");
        }
    }

    // Mirrored, column c is read as column W - 1 - c: step 0 holds pixel (0, W - 1).
    let mirrored = cpu::skew(&Skew { mirror: true, ..k }, &image);
    assert_eq!(mirrored[0], 4.0);
}

#[test]
fn unskew_undoes_skew_and_shift_moves_rows() {
    for k in variants() {
        let x = uniform(&mut rng(3), k.image_len());
        let row = k.width * k.channels;
        let image_row =
            |v: &[f32], b: usize, r: usize| v[(b * k.height + r) * row..][..row].to_vec();

        // Both shifted, the rows shifted off the skewed map come back empty.
        let back = cpu::unskew(&k, &cpu::skew(&k, &x));
        // Skewed unshifted and unskewed shifted: the image moves by the shift.
        let moved = cpu::unskew(&k, &cpu::skew(&Skew { shift: 0, ..k }, &x));
        for b in 0..k.batch {
            for r in 0..k.height {
                let empty = vec![0.0; row];
                let from = r.checked_add_signed(-k.shift).filter(|&f| f < k.height);
                let want = from.map_or(empty.clone(), |_| image_row(&x, b, r));
                assert_eq!(image_row(&back, b, r), want, "{k:?}: row {r} back");
                let want = from.map_or(empty, |f| image_row(&x, b, f));
                assert_eq!(image_row(&moved, b, r), want, "{k:?}: row {r} moved");
            }
        }
    }
}

/// <skew(x), y> = <x, unskew(y)> for random x and y: unskew is the skew's transpose.
#[test]
fn unskew_is_the_transpose_of_skew() {
    for k in variants() {
        let mut r = rng(5);
        let x = uniform(&mut r, k.image_len());
        let y = uniform(&mut r, k.skewed_len());
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum()
        };
        let left = dot(&cpu::skew(&k, &x), &y);
        let right = dot(&x, &cpu::unskew(&k, &y));
        assert!((left - right).abs() < 1e-9, "{k:?}: {left} vs {right}");
    }
}

#[test]
fn gpu_skew_and_unskew_match_cpu() {
    let g = common::gpu();
    for k in variants() {
        let mut r = rng(9);
        let x = uniform(&mut r, k.image_len());
        let y = uniform(&mut r, k.skewed_len());
        let (xv, yv) = (
            View::whole(&g.buffer_from("x", &x)),
            View::whole(&g.buffer_from("y", &y)),
        );
        let skewed = View::whole(&g.zeros("skewed", k.skewed_len()));
        let image = View::whole(&g.zeros("image", k.image_len()));
        submit(
            &g,
            &[&[
                skew::skew(&g, &k, &xv, &skewed),
                skew::unskew(&g, &k, &yv, &image),
            ]],
        );
        let read = |v: &View| pollster::block_on(g.read(&v.buffer, 0, v.len)).unwrap();
        assert_eq!(read(&skewed), cpu::skew(&k, &x), "{k:?}: skew");
        assert_eq!(read(&image), cpu::unskew(&k, &y), "{k:?}: unskew");
    }
}
