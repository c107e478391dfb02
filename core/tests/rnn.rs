//! The Row LSTM and Diagonal BiLSTM layers: the CPU reference's input and weight
//! gradients against finite differences, what each output may and must see, and the
//! GPU layer against the CPU, forward and backward.

mod common;

use common::{rng, uniform, Tolerance};
use pixelrnn::conv::{self, colour_group, ConvLayout, Grid};
use pixelrnn::gpu::{submit, View};
use pixelrnn::rnn::{
    cpu, Direction, DirectionParams, Kind, Layer, LayerBuffers, LayerOp, Param, Weights,
};

// n not a multiple of 3, so that a gate's colour must come from its state channel.
const MAPS: usize = 8;
const N: usize = 4;
const GROUPS: usize = 3;

fn layer(kind: Kind, grid: Grid) -> Layer {
    Layer {
        kind,
        grid,
        maps: MAPS,
        hidden: N,
        groups: GROUPS,
        shift: 1,
    }
}

const GRID: Grid = Grid {
    batch: 1,
    height: 4,
    width: 5,
};

/// Random weights, masked, with non-zero biases and initial states.
fn weights(l: &Layer, seed: u64) -> Weights {
    let mut r = rng(seed);
    let mut conv = |s: conv::ConvShape| {
        let mut w = uniform(&mut r, s.weight_len());
        conv::cpu::apply_mask(&s, &mut w);
        (w, uniform(&mut r, s.out_ch))
    };
    let kis: Vec<_> = (0..l.kind.directions()).map(|_| conv(l.kis())).collect();
    let out = conv(l.out());
    let dirs = kis
        .into_iter()
        .map(|kis| Direction {
            kis,
            kss: uniform(&mut r, l.kss_len()),
            init: uniform(&mut r, 2 * N),
        })
        .collect();
    Weights { dirs, out }
}

/// One tensor of a layer's weights, for finite differences: its name, where it is,
/// and, for a convolution's weights, its shape (whose mask fixes some values at zero).
struct Tensor {
    name: &'static str,
    pick: fn(&mut Weights, usize) -> &mut Vec<f32>,
    conv: Option<fn(&Layer) -> conv::ConvShape>,
}

const TENSORS: [Tensor; 5] = [
    Tensor {
        name: "kis",
        pick: |w, d| &mut w.dirs[d].kis.0,
        conv: Some(Layer::kis),
    },
    Tensor {
        name: "kis bias",
        pick: |w, d| &mut w.dirs[d].kis.1,
        conv: None,
    },
    Tensor {
        name: "kss",
        pick: |w, d| &mut w.dirs[d].kss,
        conv: None,
    },
    Tensor {
        name: "init",
        pick: |w, d| &mut w.dirs[d].init,
        conv: None,
    },
    Tensor {
        name: "out",
        pick: |w, _| &mut w.out.0,
        conv: Some(Layer::out),
    },
];

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Every weight and input value the gradient claims a non-zero derivative for (and a
/// sample of the rest) against central differences of L = sum(y * r).
#[test]
fn layer_backward_matches_finite_differences() {
    for kind in [Kind::Row, Kind::Diagonal] {
        let l = layer(kind, GRID);
        let w = weights(&l, 1);
        let mut r = rng(2);
        let x = uniform(&mut r, GRID.pixels() * MAPS);
        let proj = uniform(&mut r, GRID.pixels() * MAPS);
        let f = cpu::forward(&l, &w, &x);
        let (dx, dw) = cpu::backward(&l, &w, &x, &f, &proj);
        let eps = 1e-2f32;
        let fd = Tolerance {
            rel: 1e-2,
            abs: 1e-3,
        };
        let loss = |w: &Weights, x: &[f32]| dot(&cpu::forward(&l, w, x).y, &proj);
        let central = |at: &dyn Fn(f32) -> f64| ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;

        for i in 0..x.len() {
            let at = |d: f32| {
                let mut x2 = x.clone();
                x2[i] += d;
                loss(&w, &x2)
            };
            fd.assert(&format!("{kind:?} dx[{i}]"), &[dx[i]], &[central(&at)]);
        }

        // Every 7th value of each tensor of each direction; of the convolutions'
        // weights, those the mask keeps (the forward pass takes the weights as masked).
        for d in 0..kind.directions() {
            for t in &TENSORS {
                let mut grads = dw.clone();
                let g = (t.pick)(&mut grads, d).clone();
                let free = |j: usize| {
                    t.conv.is_none_or(|shape| {
                        let s = shape(&l);
                        s.kept(
                            j / (s.in_ch * s.out_ch),
                            j / s.out_ch % s.in_ch,
                            j % s.out_ch,
                        )
                    })
                };
                for i in (0..g.len()).step_by(7).filter(|&i| free(i)) {
                    let at = |e: f32| {
                        let mut w2 = w.clone();
                        (t.pick)(&mut w2, d)[i] += e;
                        loss(&w2, &x)
                    };
                    fd.assert(
                        &format!("{kind:?} dir {d} {}[{i}]", t.name),
                        &[g[i]],
                        &[central(&at)],
                    );
                }
            }
        }
        let out_bias: Vec<f32> = (0..MAPS)
            .map(|c| (0..GRID.pixels()).map(|p| proj[p * MAPS + c]).sum())
            .collect();
        fd.assert(&format!("{kind:?} out bias"), &dw.out.1, &out_bias);
    }
}

/// The output at pixel (r, c) in colour group g depends on no later pixel and, at
/// (r, c) itself, on no input of a later colour; it does depend on its pixel's earlier
/// colours and on the pixel to its left. The Row LSTM's output also depends on the
/// triangle above (the previous row from one column left to one right, two rows up
/// from two left to two right); the Diagonal BiLSTM's on every earlier pixel.
#[test]
fn layer_is_causal_and_sees_its_context() {
    for kind in [Kind::Row, Kind::Diagonal] {
        let l = layer(kind, GRID);
        let w = weights(&l, 3);
        let x = uniform(&mut rng(4), GRID.pixels() * MAPS);
        let f = cpu::forward(&l, &w, &x);
        let (row, col) = (2, 2);
        let p = row * GRID.width + col;
        for co in 0..MAPS {
            let mut dy = vec![0.0; GRID.pixels() * MAPS];
            dy[p * MAPS + co] = 1.0;
            let (dx, _) = cpu::backward(&l, &w, &x, &f, &dy);
            let go = colour_group(co, MAPS, GROUPS);
            let at = |q: usize| format!("{kind:?} output ({row}, {col}) map {co}, input pixel {q}");
            for q in 0..GRID.pixels() {
                for ci in 0..MAPS {
                    let later = q > p || (q == p && colour_group(ci, MAPS, GROUPS) > go);
                    if later {
                        assert_eq!(
                            dx[q * MAPS + ci],
                            0.0,
                            "{} map {ci} is in the future",
                            at(q)
                        );
                    }
                }
            }
            if go > 0 {
                let earlier = (0..MAPS)
                    .any(|ci| colour_group(ci, MAPS, GROUPS) < go && dx[p * MAPS + ci] != 0.0);
                assert!(
                    earlier,
                    "{kind:?} output map {co} does not see its earlier colours"
                );
            }
            let context: Vec<usize> = match kind {
                Kind::Row => {
                    let w = GRID.width;
                    vec![
                        p - 1,
                        p - w - 1,
                        p - w,
                        p - w + 1,
                        p - 2 * w - 2,
                        p - 2 * w + 2,
                    ]
                }
                Kind::Diagonal => (0..p).collect(),
            };
            for q in context {
                let seen = (0..MAPS).any(|ci| dx[q * MAPS + ci] != 0.0);
                assert!(seen, "{} is not seen", at(q));
            }
        }
    }
}

/// The GPU layer's output, input gradient and every weight gradient match the CPU.
#[test]
fn gpu_layer_matches_cpu() {
    let g = common::gpu();
    let grid = Grid {
        batch: 2,
        height: 5,
        width: 6,
    };
    for kind in [Kind::Row, Kind::Diagonal] {
        let l = layer(kind, grid);
        let w = weights(&l, 11);
        let mut r = rng(12);
        let x = uniform(&mut r, grid.pixels() * MAPS);
        let dy = uniform(&mut r, grid.pixels() * MAPS);
        let f = cpu::forward(&l, &w, &x);
        let (dx, dw) = cpu::backward(&l, &w, &x, &f, &dy);

        let view = |label: &str, data: &[f32]| View::whole(&g.buffer_from(label, data));
        let zeros = |label: &str, len: usize| View::whole(&g.zeros(label, len));
        let param = |label: &str, data: Vec<f32>| Param {
            grad: Some(zeros(label, data.len())),
            value: view(label, &data),
        };
        let conv_param = |label: &str, shape, (w, b): &(Vec<f32>, Vec<f32>)| {
            param(label, ConvLayout::new(shape).pack(w, b))
        };
        let dirs: Vec<_> = w
            .dirs
            .iter()
            .map(|d| DirectionParams {
                kis: conv_param("kis", l.kis(), &d.kis),
                kss: param("kss", d.kss.clone()),
                init: param("init", d.init.clone()),
            })
            .collect();
        let out = conv_param("out", l.out(), &w.out);
        let (x_v, y_v) = (view("x", &x), zeros("y", x.len()));
        let dstream = view("dstream", &dy);
        let scratch = zeros("scratch", x.len());
        let op = LayerOp::new(
            &g,
            &l,
            &LayerBuffers {
                x: &x_v,
                y: &y_v,
                dirs: &dirs,
                out: &out,
                dstream: Some(&dstream),
                scratch: Some(&scratch),
                cond: &[],
            },
        );
        submit(&g, &[&op.forward, &op.backward]);

        let read = |v: &View| pollster::block_on(g.read(&v.buffer, 0, v.len)).unwrap();
        let unpack = |shape, v: &View| ConvLayout::new(shape).unpack(&read(v));
        let tol = Tolerance {
            rel: 1e-3,
            abs: 1e-5,
        };
        let what = |name: &str| format!("{kind:?}: {name}");
        tol.assert(&what("y"), &read(&y_v), &f.y);
        tol.assert(&what("dx"), &read(&dstream), &dx);
        let (dout_w, dout_b) = unpack(l.out(), out.grad.as_ref().unwrap());
        tol.assert(&what("dout"), &dout_w, &dw.out.0);
        tol.assert(&what("dout bias"), &dout_b, &dw.out.1);
        for (d, (gp, want)) in dirs.iter().zip(&dw.dirs).enumerate() {
            let (kw, kb) = unpack(l.kis(), gp.kis.grad.as_ref().unwrap());
            tol.assert(&what(&format!("dir {d} dkis")), &kw, &want.kis.0);
            tol.assert(&what(&format!("dir {d} dkis bias")), &kb, &want.kis.1);
            tol.assert(
                &what(&format!("dir {d} dkss")),
                &read(gp.kss.grad.as_ref().unwrap()),
                &want.kss,
            );
            tol.assert(
                &what(&format!("dir {d} dinit")),
                &read(gp.init.grad.as_ref().unwrap()),
                &want.init,
            );
        }
    }
}
