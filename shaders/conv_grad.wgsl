// Weight and bias gradients of the masked convolution in conv.wgsl, and the
// weight transpose its input gradient needs.
//
// Legend: P pixels, T causal taps, K input channels, KP = K rounded up to 4,
// N output channels (a multiple of 4), NP = N rounded up to 32, S pixel chunks.
//
// The weight gradient dW[t, c, n] = sum over p of x[p + offset(t), c] * dy[p, n] is
// split over S chunks of pixels: `conv_weight_grad` writes one partial sum per chunk
// and `conv_weight_grad_reduce` adds them up and applies the mask, so that masked
// weights receive a zero gradient and stay zero under any of the optimizers.

struct GradParams {
    pixels: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    in_pad: u32,
    chunk: u32,
    chunks: u32,
    // 0: mask A (no centre connection within a colour), 1: mask B.
    mask_b: u32,
    // Colour groups the channels split into: 3 for RGB, 1 for grey.
    groups: u32,
}

@group(0) @binding(0) var<uniform> gp: GradParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;                // [P, K]
@group(0) @binding(2) var<storage, read> dy: array<vec4<f32>>;         // [P, N / 4]
@group(0) @binding(3) var<storage, read_write> partial: array<vec4<f32>>; // [S, T, KP, NP / 4]

fn tap_offset(t: u32, k: u32) -> vec2<i32> {
    let r = k / 2u;
    if t < r * k {
        return vec2<i32>(i32(t % k) - i32(r), i32(t / k) - i32(r));
    }
    return vec2<i32>(i32(t - r * k) - i32(r), 0);
}

fn x_at(q: i32, c: u32) -> f32 {
    let inside = q >= 0 && c < gp.in_ch;
    let i = u32(max(q, 0)) * gp.in_ch + min(c, gp.in_ch - 1u);
    return select(0.0, x[i], inside);
}

fn dy_at(p: u32, n4: u32) -> vec4<f32> {
    let row4 = gp.out_ch / 4u;
    return select(vec4<f32>(0.0), dy[p * row4 + min(n4, row4 - 1u)], n4 < row4);
}

// One invocation: chunk s, tap t, a block of 4 input channels and 16 output channels.
@compute @workgroup_size(64)
fn conv_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col_blocks = gp.out_pad / 16u;
    let row_blocks = gp.in_pad / 4u;
    let nb = gid.x % col_blocks;
    let kb = (gid.x / col_blocks) % row_blocks;
    let t = gid.x / (col_blocks * row_blocks);
    let s = gid.y;
    if t >= gp.taps || s >= gp.chunks {
        return;
    }
    let d = tap_offset(t, gp.k);
    let c0 = kb * 4u;
    let n4 = nb * 4u;
    let hw = gp.height * gp.width;

    var a00 = vec4<f32>(0.0); var a01 = vec4<f32>(0.0);
    var a02 = vec4<f32>(0.0); var a03 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0); var a13 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0);
    var a22 = vec4<f32>(0.0); var a23 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0);
    var a32 = vec4<f32>(0.0); var a33 = vec4<f32>(0.0);

    let start = s * gp.chunk;
    let end = min(start + gp.chunk, gp.pixels);
    for (var p = start; p < end; p++) {
        let row = i32((p % hw) / gp.width) + d.y;
        let col = i32(p % gp.width) + d.x;
        let inside = row >= 0 && row < i32(gp.height) && col >= 0 && col < i32(gp.width);
        let q = select(-1, i32(p) + d.y * i32(gp.width) + d.x, inside);

        let g0 = dy_at(p, n4);
        let g1 = dy_at(p, n4 + 1u);
        let g2 = dy_at(p, n4 + 2u);
        let g3 = dy_at(p, n4 + 3u);
        let x0 = vec4<f32>(x_at(q, c0));
        let x1 = vec4<f32>(x_at(q, c0 + 1u));
        let x2 = vec4<f32>(x_at(q, c0 + 2u));
        let x3 = vec4<f32>(x_at(q, c0 + 3u));

        a00 = fma(x0, g0, a00); a01 = fma(x0, g1, a01);
        a02 = fma(x0, g2, a02); a03 = fma(x0, g3, a03);
        a10 = fma(x1, g0, a10); a11 = fma(x1, g1, a11);
        a12 = fma(x1, g2, a12); a13 = fma(x1, g3, a13);
        a20 = fma(x2, g0, a20); a21 = fma(x2, g1, a21);
        a22 = fma(x2, g2, a22); a23 = fma(x2, g3, a23);
        a30 = fma(x3, g0, a30); a31 = fma(x3, g1, a31);
        a32 = fma(x3, g2, a32); a33 = fma(x3, g3, a33);
    }

    let row4 = gp.out_pad / 4u;
    let base = ((s * gp.taps + t) * gp.in_pad + c0) * row4 + n4;
    partial[base] = a00; partial[base + 1u] = a01;
    partial[base + 2u] = a02; partial[base + 3u] = a03;
    partial[base + row4] = a10; partial[base + row4 + 1u] = a11;
    partial[base + row4 + 2u] = a12; partial[base + row4 + 3u] = a13;
    partial[base + 2u * row4] = a20; partial[base + 2u * row4 + 1u] = a21;
    partial[base + 2u * row4 + 2u] = a22; partial[base + 2u * row4 + 3u] = a23;
    partial[base + 3u * row4] = a30; partial[base + 3u * row4 + 1u] = a31;
    partial[base + 3u * row4 + 2u] = a32; partial[base + 3u * row4 + 3u] = a33;
}

@group(0) @binding(0) var<uniform> rp: GradParams;
@group(0) @binding(1) var<storage, read> parts: array<f32>;          // [S, T, KP, NP]
@group(0) @binding(2) var<storage, read> dy_flat: array<f32>;        // [P, N]
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;     // [T, K, NP]
@group(0) @binding(4) var<storage, read_write> grad_bias: array<f32>; // [NP]

// The colour group of channel c out of `count`: the first third of the maps is R,
// the next G, the last B (one group for grey images).
fn colour(c: u32, count: u32) -> u32 {
    return c * rp.groups / count;
}

// Whether weight (t, c, n) survives the mask.
fn kept(t: u32, c: u32, n: u32) -> bool {
    if n >= rp.out_ch {
        return false;
    }
    if t + 1u < rp.taps {
        return true;
    }
    let gi = colour(c, rp.in_ch);
    let go = colour(n, rp.out_ch);
    return gi < go || (rp.mask_b != 0u && gi == go);
}

// grad[t, c, n] = mask(t, c, n) * sum over s of partial[s, t, c, n], and for the
// NP invocations after those, grad_bias[n] = sum over p of dy[p, n].
@compute @workgroup_size(64)
fn conv_weight_grad_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    let weights = rp.taps * rp.in_ch * rp.out_pad;
    if i < weights {
        let n = i % rp.out_pad;
        let c = (i / rp.out_pad) % rp.in_ch;
        let t = i / (rp.out_pad * rp.in_ch);
        var sum = 0.0;
        if kept(t, c, n) {
            let stride = rp.taps * rp.in_pad * rp.out_pad;
            let j = (t * rp.in_pad + c) * rp.out_pad + n;
            for (var s = 0u; s < rp.chunks; s++) {
                sum += parts[s * stride + j];
            }
        }
        grad[i] = sum;
    } else if i < weights + rp.out_pad {
        let n = i - weights;
        var sum = 0.0;
        if n < rp.out_ch {
            for (var p = 0u; p < rp.pixels; p++) {
                sum += dy_flat[p * rp.out_ch + n];
            }
        }
        grad_bias[n] = sum;
    }
}

@group(0) @binding(0) var<uniform> tp: GradParams;
@group(0) @binding(1) var<storage, read> w_in: array<f32>;           // [T, K, NP]
@group(0) @binding(2) var<storage, read_write> w_t: array<f32>;      // [T, N, KP32]

// w_t[t, n, c] = w[t, c, n], with the K columns padded like any weight's columns
// (in_pad here is K rounded up to 32) so that the transpose feeds `conv_forward`.
@compute @workgroup_size(64)
fn conv_transpose_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if i >= tp.taps * tp.out_ch * tp.in_pad {
        return;
    }
    let c = i % tp.in_pad;
    let n = (i / tp.in_pad) % tp.out_ch;
    let t = i / (tp.in_pad * tp.out_ch);
    let src = (t * tp.in_ch + min(c, tp.in_ch - 1u)) * tp.out_pad + n;
    w_t[i] = select(0.0, w_in[src], c < tp.in_ch);
}
