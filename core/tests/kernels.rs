//! Every kernel against its CPU twin on seeded random data, and the CPU backward
//! passes against finite differences.

mod common;

use common::{bytes, gpu, rng, uniform, Tolerance, KERNEL};
use pixelrnn::conv::{self, ConvBuffers, ConvLayout, ConvOp, ConvShape, Grid, Mask};
use pixelrnn::gpu::{self, View};
use pixelrnn::ops::{self, Optimizer, OptimizerOp, LEVELS};

#[test]
fn every_shader_validates() {
    assert!(!gpu::shaders::ALL.is_empty(), "no shaders found");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.ends_with(".wgsl") || gpu::shaders::ALL.iter().any(|(n, _)| *n == name),
            "shaders/{name} is not in gpu::shaders::ALL"
        );
    }
    for (name, source) in gpu::shaders::ALL {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SUBGROUP,
        )
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!module.entry_points.is_empty(), "{name} has no entry point");
    }
}

/// Shapes covering every kernel size, both masks, grey and RGB groups, channel
/// counts that are not multiples of 16, grids with a partial last block, and the Row
/// LSTM's input-to-state convolution along the row into gate runs of 4.
fn shapes() -> Vec<(ConvShape, Grid)> {
    let s = ConvShape::new;
    let row = |k, in_ch, out_ch, groups| ConvShape {
        row_only: true,
        out_run: 4,
        ..ConvShape::new(k, in_ch, out_ch, Mask::B, groups)
    };
    let g = |batch, height, width| Grid {
        batch,
        height,
        width,
    };
    vec![
        (s(7, 1, 8, Mask::A, 1), g(2, 5, 6)),
        (s(7, 3, 12, Mask::A, 3), g(1, 9, 7)),
        (s(3, 12, 20, Mask::B, 3), g(3, 4, 5)),
        (row(3, 12, 48, 3), g(2, 4, 5)),
        (s(1, 24, 36, Mask::B, 3), g(2, 3, 3)),
        (s(1, 8, 768, Mask::B, 3), g(1, 2, 3)),
        (s(3, 16, 16, Mask::B, 1), g(2, 6, 6)),
        (row(3, 16, 64, 3), g(1, 3, 9)),
    ]
}

#[test]
fn conv_matches_cpu_forward_and_backward() {
    for gpu in common::gpu_variants() {
        conv_matches_cpu_on(&gpu);
    }
}

fn conv_matches_cpu_on(gpu: &pixelrnn::gpu::Gpu) {
    let gpu = gpu.clone();
    for (case, (s, grid)) in shapes().into_iter().enumerate() {
        let mut r = rng(case as u64);
        let p = grid.pixels();
        let mut w = uniform(&mut r, s.weight_len());
        conv::cpu::apply_mask(&s, &mut w);
        let b = uniform(&mut r, s.out_ch);
        let x = uniform(&mut r, p * s.in_ch);
        let dy = uniform(&mut r, p * s.out_ch);
        let layout = ConvLayout::new(s);

        let view = |data: &[f32]| View::whole(&gpu.buffer_from("t", data));
        let xv = view(&x);
        let params = view(&layout.pack(&w, &b));
        let y = View::whole(&gpu.zeros("y", p * s.out_ch));
        let dyv = view(&dy);
        let dparams = View::whole(&gpu.zeros("dparams", layout.len()));
        let dx = View::whole(&gpu.zeros("dx", p * s.in_ch));
        let op = ConvOp::new(
            &gpu,
            &layout,
            grid,
            &ConvBuffers {
                x: &xv,
                params: &params,
                y: &y,
                dy: Some(&dyv),
                dparams: Some(&dparams),
                dx: Some(&dx),
            },
        );
        gpu::submit(&gpu, &[&op.forward, &op.backward()]);

        let read = |v: &View| pollster::block_on(gpu.read_all(&v.buffer)).unwrap();
        let sub = gpu.subgroups();
        let what = |t: &str| format!("case {case} {s:?} (subgroups: {sub}): {t}");
        KERNEL.assert(
            &what("y"),
            &read(&y),
            &conv::cpu::forward(&s, grid, &x, &w, &b),
        );
        let (dw, db) = conv::cpu::backward_params(&s, grid, &x, &dy);
        let (got_dw, got_db) = layout.unpack(&read(&dparams));
        KERNEL.assert(&what("dw"), &got_dw, &dw);
        KERNEL.assert(&what("db"), &got_db, &db);
        let dx_cpu = conv::cpu::backward_input(&s, grid, &dy, &w);
        KERNEL.assert(&what("dx"), &read(&dx), &dx_cpu);
    }
}

/// Finite differences of L = sum(y * r) for a fixed random r, in f64 to keep the
/// check sharp.
#[test]
fn conv_cpu_backward_matches_finite_differences() {
    for (case, (s, grid)) in shapes().into_iter().take(4).enumerate() {
        let mut r = rng(100 + case as u64);
        let p = grid.pixels();
        let mut w = uniform(&mut r, s.weight_len());
        conv::cpu::apply_mask(&s, &mut w);
        let b = uniform(&mut r, s.out_ch);
        let x = uniform(&mut r, p * s.in_ch);
        let proj = uniform(&mut r, p * s.out_ch);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let y = conv::cpu::forward(&s, grid, x, w, b);
            y.iter()
                .zip(&proj)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum()
        };
        let (dw, db) = conv::cpu::backward_params(&s, grid, &x, &proj);
        let dx = conv::cpu::backward_input(&s, grid, &proj, &w);

        let h = 1e-2f32;
        let fd = Tolerance {
            rel: 1e-2,
            abs: 2e-3,
        };
        let central = |f: &dyn Fn(f32) -> f64| ((f(h) - f(-h)) / (2.0 * h as f64)) as f32;
        for i in (0..w.len()).step_by(w.len() / 17 + 1) {
            let num = central(&|d| {
                let mut w2 = w.clone();
                w2[i] += d;
                loss(&x, &w2, &b)
            });
            // Masked weights have a zero gradient; the others the true one.
            let (t, ci, co) = (
                i / (s.in_ch * s.out_ch),
                i / s.out_ch % s.in_ch,
                i % s.out_ch,
            );
            let want = if s.kept(t, ci, co) { num } else { 0.0 };
            fd.assert(&format!("case {case} dw[{i}]"), &[dw[i]], &[want]);
        }
        for i in (0..b.len()).step_by(b.len() / 5 + 1) {
            let num = central(&|d| {
                let mut b2 = b.clone();
                b2[i] += d;
                loss(&x, &w, &b2)
            });
            fd.assert(&format!("case {case} db[{i}]"), &[db[i]], &[num]);
        }
        for i in (0..x.len()).step_by(x.len() / 17 + 1) {
            let num = central(&|d| {
                let mut x2 = x.clone();
                x2[i] += d;
                loss(&x2, &w, &b)
            });
            fd.assert(&format!("case {case} dx[{i}]"), &[dx[i]], &[num]);
        }
    }
}

#[test]
fn elementwise_match_cpu() {
    let gpu = gpu();
    let mut r = rng(7);
    let n = 1000;
    let a = uniform(&mut r, n);
    let dy = uniform(&mut r, n);
    let view = |data: &[f32]| View::whole(&gpu.buffer_from("t", data));
    let (av, dyv) = (view(&a), view(&dy));
    let y = View::whole(&gpu.zeros("y", n));
    let dx = View::whole(&gpu.zeros("dx", n));
    let acc = view(&dy);
    let d = [
        ops::relu(&gpu, &av, &y),
        ops::relu_backward(&gpu, &dyv, &y, &dx),
        ops::add_into(&gpu, &av, &acc),
    ];
    gpu::submit(&gpu, &[&d]);
    let read = |v: &View| pollster::block_on(gpu.read_all(&v.buffer)).unwrap();
    let relu = ops::cpu::relu(&a);
    KERNEL.assert("relu", &read(&y), &relu);
    KERNEL.assert(
        "relu_backward",
        &read(&dx),
        &ops::cpu::relu_backward(&dy, &relu),
    );
    let sum: Vec<f32> = a.iter().zip(&dy).map(|(a, b)| a + b).collect();
    KERNEL.assert("add_into", &read(&acc), &sum);
}

#[test]
fn softmax_nll_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut r = rng(11);
    let rows = 37;
    let logits: Vec<f32> = uniform(&mut r, rows * LEVELS)
        .iter()
        .map(|v| 4.0 * v)
        .collect();
    let target: Vec<u32> = bytes(&mut r, rows).into_iter().map(u32::from).collect();
    let scale = 1.0 / rows as f32;

    let lv = View::whole(&gpu.buffer_from("logits", &logits));
    let tv = View::whole(&gpu.buffer_from("target", bytemuck::cast_slice(&target)));
    let nll = View::whole(&gpu.zeros("nll", rows));
    let dl = View::whole(&gpu.zeros("dlogits", rows * LEVELS));
    let total = View::whole(&gpu.zeros("total", 1));
    let d = [
        ops::softmax_nll(&gpu, &lv, &tv, &nll, &dl, scale),
        ops::sum_all(&gpu, &nll, &total, true),
        ops::sum_all(&gpu, &nll, &total, true),
    ];
    gpu::submit(&gpu, &[&d]);
    let read = |v: &View| pollster::block_on(gpu.read_all(&v.buffer)).unwrap();

    let (want_nll, want_grad) = ops::cpu::softmax_nll(&logits, &target, scale);
    KERNEL.assert("nll", &read(&nll), &want_nll);
    KERNEL.assert("dlogits", &read(&dl), &want_grad);
    let twice: f32 = 2.0 * want_nll.iter().sum::<f32>();
    KERNEL.assert("accumulated sum", &read(&total)[..1], &[twice]);

    // d(scale * sum nll) / d logit, numerically, on a few entries.
    let loss = |l: &[f32]| -> f64 {
        let (nll, _) = ops::cpu::softmax_nll(l, &target, scale);
        nll.iter().map(|&v| v as f64 * scale as f64).sum()
    };
    let h = 1e-2;
    for i in (0..logits.len()).step_by(331) {
        let mut up = logits.clone();
        up[i] += h;
        let mut down = logits.clone();
        down[i] -= h;
        let num = ((loss(&up) - loss(&down)) / (2.0 * h as f64)) as f32;
        let fd = Tolerance {
            rel: 1e-2,
            abs: 1e-5,
        };
        fd.assert(&format!("dlogits[{i}]"), &[want_grad[i]], &[num]);
    }
}

#[test]
fn optimizers_match_cpu() {
    let gpu = gpu();
    for opt in [Optimizer::rmsprop(1e-2), Optimizer::adam(1e-2)] {
        let mut r = rng(3);
        let n = 777;
        let mut theta = uniform(&mut r, n);
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let view = |data: &[f32]| View::whole(&gpu.buffer_from("t", data));
        let tv = view(&theta);
        let mv = view(&m);
        let vv = view(&v);
        for t in 1..=3 {
            let grad = uniform(&mut r, n);
            let gv = view(&grad);
            let op = OptimizerOp::new(&gpu, opt, &tv, &gv, &mv, &vv);
            op.prepare(&gpu, t);
            gpu::submit(&gpu, &[std::slice::from_ref(&op.dispatch)]);
            opt.step_cpu(t, &mut theta, &grad, &mut m, &mut v);
        }
        let got = pollster::block_on(gpu.read_all(&tv.buffer)).unwrap();
        KERNEL.assert(opt.name(), &got, &theta);
    }
}

/// The Row LSTM's input-to-state convolution: along the centre row only (the pixel
/// to the left, then the pixel itself), and under mask B the gates of a state channel
/// of colour g see inputs of colours up to g at the pixel itself.
#[test]
fn row_convolution_taps_and_gate_masks() {
    let s = ConvShape {
        row_only: true,
        out_run: 4,
        ..ConvShape::new(3, 3, 12, Mask::B, 3)
    };
    assert_eq!(s.taps(), 2);
    assert_eq!([s.offset(0), s.offset(1)], [(0, -1), (0, 0)]);
    // 12 gate channels: the 4 gates of state channels 0 (R), 1 (G) and 2 (B).
    for co in 0..12 {
        for ci in 0..3 {
            assert!(s.kept(0, ci, co), "left neighbour, input {ci}, gate {co}");
            assert_eq!(
                s.kept(1, ci, co),
                ci <= co / 4,
                "centre, input {ci}, gate {co}"
            );
        }
    }
}
