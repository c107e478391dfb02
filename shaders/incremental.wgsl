// Incremental sampling (core/src/incremental.rs): a masked convolution evaluated at
// one pixel of every image, the pixel of the sub-pixel the sampling cursor is on, and
// the Diagonal BiLSTM's two directions' states summed there. Everything before that
// pixel is final, so each step of the sampler recomputes only this pixel, layer by
// layer.
//
// Legend: B images of H x W pixels; maps [B, H W, C]; weights [T, C_in, NP] (causal
// taps from tap0 of a k x k kernel, NP = C_out padded); `order` lists the sub-pixels
// (within an image) of the steps, `cursor` holds the step.

struct AtParams {
    batch: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    tap0: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    relu_in: u32,
    residual: u32,
    channels: u32,
    steps: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> ap: AtParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;              // [B, H W, C_in]
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;        // [T, C_in, NP / 4]
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;     // [NP / 4]
@group(0) @binding(4) var<storage, read> res: array<vec4<f32>>;      // [B, H W, C_out / 4]
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>;  // [B, H W, C_out / 4]
@group(0) @binding(6) var<storage, read> order: array<u32>;          // [steps]
@group(0) @binding(7) var<storage, read> cursor: array<u32>;         // [1]

// The (dy, dx) offset of causal tap t of a k x k kernel (as conv.wgsl).
fn offset(t: u32) -> vec2<i32> {
    let r = ap.k / 2u;
    if t < r * ap.k {
        return vec2<i32>(i32(t / ap.k) - i32(r), i32(t % ap.k) - i32(r));
    }
    return vec2<i32>(0, i32(t - r * ap.k) - i32(r));
}

// Invocation (b, g) computes the 16 output channels co = 16g .. 16g + 15 (as four
// vec4 quads; the weights and bias are padded to 32 channels, so every quad read
// exists, and only the quads below C_out / 4 are written):
// y[b, p, co] = bias[co] + sum over t, ci of f(x[b, p + offset(t), ci]) w[t, ci, co]
// (+ res[b, p, co]), f = ReLU when relu_in.
@compute @workgroup_size(64)
fn conv_at(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x + gid.y * 65535u * 64u;
    let step = cursor[0];
    let quads = ap.out_ch / 4u;
    let groups = (quads + 3u) / 4u;
    if e >= ap.batch * groups || step >= ap.steps {
        return;
    }
    let b = e / groups;
    let j0 = (e % groups) * 4u;
    let pixel = order[step] / ap.channels;
    let row = i32(pixel / ap.width);
    let col = i32(pixel % ap.width);
    let row_quads = ap.out_pad / 4u;

    var acc = array<vec4<f32>, 4>(bias[j0], bias[j0 + 1u], bias[j0 + 2u], bias[j0 + 3u]);
    for (var t = 0u; t < ap.taps; t++) {
        let d = offset(t + ap.tap0);
        let yy = row + d.x;
        let xx = col + d.y;
        if yy < 0 || xx < 0 || xx >= i32(ap.width) {
            continue;
        }
        let q = (b * ap.height + u32(yy)) * ap.width + u32(xx);
        for (var ci = 0u; ci < ap.in_ch; ci++) {
            var v = x[q * ap.in_ch + ci];
            if ap.relu_in != 0u {
                v = max(v, 0.0);
            }
            let base = (t * ap.in_ch + ci) * row_quads + j0;
            acc[0] += v * w[base];
            acc[1] += v * w[base + 1u];
            acc[2] += v * w[base + 2u];
            acc[3] += v * w[base + 3u];
        }
    }
    let at = (b * ap.height * ap.width + pixel) * quads;
    for (var u = 0u; u < 4u; u++) {
        let j = j0 + u;
        if j < quads {
            var out = acc[u];
            if ap.residual != 0u {
                out += res[at + j];
            }
            y[at + j] = out;
        }
    }
}

struct SumParams {
    batch: u32,
    height: u32,
    width: u32,
    hidden: u32,
    channels: u32,
    steps: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> sm: SumParams;
@group(0) @binding(1) var<storage, read> lr: array<f32>;             // [B, S, H, n] skewed
@group(0) @binding(2) var<storage, read> rl: array<f32>;             // [B, S, H, n] skewed
@group(0) @binding(3) var<storage, read_write> states: array<f32>;   // [B, H W, n]
@group(0) @binding(8) var<storage, read> sum_order: array<u32>;      // [steps]
@group(0) @binding(9) var<storage, read> sum_cursor: array<u32>;     // [1]

// Invocation (b, k): the Diagonal BiLSTM's states at the cursor's pixel (r, q), the
// left-to-right state at skewed (r + q, r) plus the right-to-left state of the pixel
// above, (r - 1, q), at skewed (r - 1 + W - 1 - q, r - 1) (zero on the first row).
@compute @workgroup_size(64)
fn diag_sum_at(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x + gid.y * 65535u * 64u;
    if e >= sm.batch * sm.hidden || sum_cursor[0] >= sm.steps {
        return;
    }
    let b = e / sm.hidden;
    let k = e % sm.hidden;
    let pixel = sum_order[sum_cursor[0]] / sm.channels;
    let r = pixel / sm.width;
    let q = pixel % sm.width;
    let steps = sm.height + sm.width - 1u;
    var v = lr[((b * steps + r + q) * sm.height + r) * sm.hidden + k];
    if r > 0u {
        let s = r - 1u + sm.width - 1u - q;
        v += rl[((b * steps + s) * sm.height + r - 1u) * sm.hidden + k];
    }
    states[(b * sm.height * sm.width + pixel) * sm.hidden + k] = v;
}
