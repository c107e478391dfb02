// The LSTM scan of the Row LSTM and the Diagonal BiLSTM (equations and layouts in
// core/src/lstm.rs): the gate update of one step for every position of every image,
// the same step backward, and the gradients of K^ss and of the initial states.
//
// Legend: B images, S steps of L positions, n state channels, T state-to-state taps at
// position offsets tap0 .. tap0 + T - 1 of the previous step. Maps are step-major,
// [B, S, L, ...]; the four gates (i, f, o, g) of a state channel are one vec4. The
// step kernels are dispatched once per step, in order (backward: in reverse).

struct ScanParams {
    batch: u32,
    steps: u32,
    len: u32,
    hidden: u32,
    step: u32,
    taps: u32,
    tap0: i32,
    channels: u32,
}

@group(0) @binding(0) var<uniform> sp: ScanParams;
@group(0) @binding(1) var<storage, read> pre: array<vec4<f32>>;          // [B, S, L, n]
@group(0) @binding(2) var<storage, read> kss: array<vec4<f32>>;          // [T, n, n]
@group(0) @binding(3) var<storage, read> init: array<f32>;               // [2, n]: h_0, c_0
@group(0) @binding(4) var<storage, read_write> gates: array<vec4<f32>>;  // [B, S, L, n]
@group(0) @binding(5) var<storage, read_write> c: array<f32>;            // [B, S, L, n]
@group(0) @binding(6) var<storage, read_write> h: array<f32>;            // [B, S, L, n]
@group(0) @binding(7) var<storage, read> dh: array<f32>;                 // [B, S, L, n]
@group(0) @binding(8) var<storage, read_write> dpre: array<vec4<f32>>;   // [B, S, L, n]
@group(0) @binding(9) var<storage, read_write> dc: array<f32>;           // [B, S, L, n]
@group(0) @binding(10) var<storage, read_write> dkss: array<vec4<f32>>;  // [T, n, n]
@group(0) @binding(11) var<storage, read_write> dinit: array<f32>;       // [2, n]
@group(0) @binding(12) var<storage, read> order: array<u32>;             // sampler steps
@group(0) @binding(13) var<storage, read> cursor: array<u32>;            // [1]

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 64u;
}

// The map index of position l of step s of image b.
fn at(b: u32, s: u32, l: u32) -> u32 {
    return (b * sp.steps + s) * sp.len + l;
}

// The position of the previous step that tap t of position l reads, or -1 outside.
fn tapped(l: u32, t: u32) -> i32 {
    let q = i32(l) + sp.tap0 + i32(t);
    return select(-1, q, q >= 0 && q < i32(sp.len));
}

fn sigmoid(z: vec3<f32>) -> vec3<f32> {
    return 1.0 / (1.0 + exp(-z));
}

// Image b, position l and state channel k of step invocation i (B L n of them).
fn step_invocation(i: u32) -> vec3<u32> {
    let n = sp.hidden;
    return vec3<u32>(i / (n * sp.len), (i / n) % sp.len, i % n);
}

// h_{s-1}[b, q, m]: h_0 before the first step.
fn h_before(b: u32, s: u32, q: u32, m: u32) -> f32 {
    if s == 0u {
        return init[m];
    }
    return h[at(b, s - 1u, q) * sp.hidden + m];
}

// c_{s-1}[b, l, k]: c_0 before the first step.
fn c_before(b: u32, s: u32, l: u32, k: u32) -> f32 {
    if s == 0u {
        return init[sp.hidden + k];
    }
    return c[at(b, s - 1u, l) * sp.hidden + k];
}

// State channel k of position l of step s of image b: z = pre[e] + K^ss ⊛ h_{s-1};
// c_s = f c_{s-1} + i g; h_s = o tanh(c_s).
fn step_at(b: u32, s: u32, l: u32, k: u32, e: u32) {
    let n = sp.hidden;
    let p = at(b, s, l) * n + k;

    var z = pre[e];
    for (var t = 0u; t < sp.taps; t++) {
        let q = tapped(l, t);
        if q < 0 {
            continue;
        }
        for (var m = 0u; m < n; m++) {
            z += kss[(t * n + m) * n + k] * h_before(b, s, u32(q), m);
        }
    }

    let c_prev = c_before(b, s, l, k);
    let ifo = sigmoid(z.xyz);
    let g = tanh(z.w);
    let cs = ifo.y * c_prev + ifo.x * g;
    gates[p] = vec4<f32>(ifo, g);
    c[p] = cs;
    h[p] = ifo.z * tanh(cs);
}

// Invocation (b, l, k) of step `sp.step`. Grid: B L n invocations.
@compute @workgroup_size(64)
fn lstm_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= sp.batch * sp.len * sp.hidden {
        return;
    }
    let v = step_invocation(i);
    step_at(v.x, sp.step, v.y, v.z, at(v.x, sp.step, v.y) * sp.hidden + v.z);
}

// Invocation (b, k) of the Row LSTM's one position under the sampling cursor: row
// s, column l of the pixel of sub-pixel order[cursor] (`channels` per pixel).
// Grid: B n invocations.
@compute @workgroup_size(64)
fn lstm_row_step_at(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= sp.batch * sp.hidden {
        return;
    }
    let pixel = order[cursor[0]] / sp.channels;
    let b = i / sp.hidden;
    let k = i % sp.hidden;
    let s = pixel / sp.len;
    let l = pixel % sp.len;
    step_at(b, s, l, k, at(b, s, l) * sp.hidden + k);
}

// Invocation (b, k) of the Diagonal BiLSTM's left-to-right direction at the sampling
// cursor's pixel (r, q): position r of skewed step r + q. Its pre-activations are read
// from the image-layout map [B, H W, n]. Grid: B n invocations.
@compute @workgroup_size(64)
fn lstm_diag_step_at(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= sp.batch * sp.hidden {
        return;
    }
    let width = sp.steps - sp.len + 1u;
    let pixel = order[cursor[0]] / sp.channels;
    let r = pixel / width;
    let b = i / sp.hidden;
    let k = i % sp.hidden;
    let e = (b * sp.len * width + pixel) * sp.hidden + k;
    step_at(b, r + pixel % width, r, k, e);
}

// Invocation (b, k) of the right-to-left direction at mirrored column m = `sp.step`
// of the row above the cursor's pixel (run once that row is finished, for m = 0, 1,
// ..., W - 1): image column W - 1 - m, position r of skewed step r + m.
@compute @workgroup_size(64)
fn lstm_diag_rl_step_at(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    let width = sp.steps - sp.len + 1u;
    let pixel = order[cursor[0]] / sp.channels;
    if i >= sp.batch * sp.hidden || pixel < width {
        return;
    }
    let r = pixel / width - 1u;
    let m = sp.step;
    let b = i / sp.hidden;
    let k = i % sp.hidden;
    let e = (b * sp.len * width + r * width + width - 1u - m) * sp.hidden + k;
    step_at(b, r + m, r, k, e);
}

// Invocation (b, l, k) of step s backward: dh_s is dh plus what step s + 1 sent back
// through K^ss, dc_s is dc_{s+1} f_{s+1} plus what came through h_s; writes the gate
// pre-activation gradients dpre and dc_s. Grid: B L n invocations.
@compute @workgroup_size(64)
fn lstm_step_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = sp.hidden;
    let i = flat(gid);
    if i >= sp.batch * sp.len * n {
        return;
    }
    let v = step_invocation(i);
    let b = v.x;
    let l = v.y;
    let k = v.z;
    let s = sp.step;
    let p = at(b, s, l) * n + k;

    var dh_k = dh[p];
    var dc_s = 0.0;
    if s + 1u < sp.steps {
        // Position r of step s + 1 reads this one through tap t when r + tap0 + t = l.
        for (var t = 0u; t < sp.taps; t++) {
            let r = i32(l) - sp.tap0 - i32(t);
            if r < 0 || r >= i32(sp.len) {
                continue;
            }
            let next = at(b, s + 1u, u32(r)) * n;
            for (var j = 0u; j < n; j++) {
                dh_k += dot(kss[(t * n + k) * n + j], dpre[next + j]);
            }
        }
        let after = at(b, s + 1u, l) * n + k;
        dc_s = dc[after] * gates[after].y;
    }

    let c_prev = c_before(b, s, l, k);
    let gt = gates[p];
    let tc = tanh(c[p]);
    dc_s += dh_k * gt.z * (1.0 - tc * tc);
    dc[p] = dc_s;
    dpre[p] = vec4<f32>(
        dc_s * gt.w * gt.x * (1.0 - gt.x),
        dc_s * c_prev * gt.y * (1.0 - gt.y),
        dh_k * tc * gt.z * (1.0 - gt.z),
        dc_s * gt.x * (1.0 - gt.w * gt.w),
    );
}

// dK^ss[t, m, k] = sum over positions of h_{s-1}[tapped, m] dpre[k] (h_0 before the
// first step), after the backward steps. Grid: T n n invocations.
@compute @workgroup_size(64)
fn lstm_kss_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = sp.hidden;
    let i = flat(gid);
    if i >= sp.taps * n * n {
        return;
    }
    let k = i % n;
    let m = (i / n) % n;
    let t = i / (n * n);

    var acc = vec4<f32>(0.0);
    for (var b = 0u; b < sp.batch; b++) {
        for (var s = 0u; s < sp.steps; s++) {
            for (var l = 0u; l < sp.len; l++) {
                let q = tapped(l, t);
                if q < 0 {
                    continue;
                }
                acc += h_before(b, s, u32(q), m) * dpre[at(b, s, l) * n + k];
            }
        }
    }
    dkss[i] = acc;
}

// dh_0[m] and dc_0[k]: what the first step sent back to the initial states, summed
// over every position and image, after the backward steps. Grid: 2 n invocations.
@compute @workgroup_size(64)
fn lstm_init_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = sp.hidden;
    let i = flat(gid);
    if i >= 2u * n {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < sp.batch; b++) {
        for (var l = 0u; l < sp.len; l++) {
            let p = at(b, 0u, l) * n;
            if i >= n {
                let k = i - n;
                acc += dc[p + k] * gates[p + k].y;
                continue;
            }
            for (var t = 0u; t < sp.taps; t++) {
                if tapped(l, t) < 0 {
                    continue;
                }
                for (var k = 0u; k < n; k++) {
                    acc += dot(kss[(t * n + i) * n + k], dpre[p + k]);
                }
            }
        }
    }
    dinit[i] = acc;
}
