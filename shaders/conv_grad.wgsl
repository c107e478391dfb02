// Weight and bias gradients of the masked convolution in conv.wgsl, and the
// weight transpose its input gradient needs.
//
// Legend: P pixels, T causal taps, K input channels, N output channels (a multiple
// of 4), NP = N rounded up to 32, S pixel chunks, R = T x K weight rows (row
// r = t K + c), RP = R rounded up to 4.
//
// The weight gradient dW[t, c, n] = sum over p of x[p + offset(t), c] * dy[p, n] is
// split over S chunks of pixels: `conv_weight_grad` writes one partial sum per chunk
// (and `conv_bias_grad` one of dy per chunk), `conv_weight_grad_reduce` adds them up
// and applies the mask, so that masked weights receive a zero gradient and stay
// zero under any of the optimizers.

struct GradParams {
    pixels: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    // RP for the gradient kernels; K rounded up to 32 for the transpose.
    rows: u32,
    chunk: u32,
    chunks: u32,
    // 0: mask A (no centre connection within a colour), 1: mask B.
    mask_b: u32,
    // Colour groups the channels split into: 3 for RGB, 1 for grey.
    groups: u32,
    // The first causal tap stored (see ConvParams in conv.wgsl).
    tap0: u32,
    // Output channels come in runs of this many sharing a colour group (4 for the
    // gates of an LSTM state channel, else 1).
    out_run: u32,
}

@group(0) @binding(0) var<uniform> gp: GradParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;                   // [P, K]
@group(0) @binding(2) var<storage, read> dy: array<vec4<f32>>;            // [P, N / 4]
@group(0) @binding(3) var<storage, read_write> partial: array<vec4<f32>>; // [S, RP, NP / 4]

fn tap_offset(t: u32, k: u32) -> vec2<i32> {
    let r = k / 2u;
    if t < r * k {
        return vec2<i32>(i32(t % k) - i32(r), i32(t / k) - i32(r));
    }
    return vec2<i32>(i32(t - r * k) - i32(r), 0);
}

// The input a weight row reads: its offset and channel; rows past R read nothing.
struct Row {
    d: vec2<i32>,
    c: u32,
    live: bool,
}

fn weight_row(r: u32) -> Row {
    let t = min(r / gp.in_ch, gp.taps - 1u);
    return Row(tap_offset(t + gp.tap0, gp.k), r % gp.in_ch, r < gp.taps * gp.in_ch);
}

// x[p + row.d, row.c], or 0 outside the image or past the last row.
fn x_at(p: u32, row: Row) -> f32 {
    let hw = gp.height * gp.width;
    let y = i32((p % hw) / gp.width) + row.d.y;
    let x_ = i32(p % gp.width) + row.d.x;
    let inside = y >= 0 && y < i32(gp.height) && x_ >= 0 && x_ < i32(gp.width) && row.live;
    let q = select(0u, u32(i32(p) + row.d.y * i32(gp.width) + row.d.x), inside);
    return select(0.0, x[q * gp.in_ch + row.c], inside);
}

fn dy_at(p: u32, n4: u32) -> vec4<f32> {
    let row4 = gp.out_ch / 4u;
    return select(vec4<f32>(0.0), dy[p * row4 + min(n4, row4 - 1u)], n4 < row4);
}

// One invocation: chunk s, a block of 4 weight rows and 16 output channels. Rows run
// over taps and channels together, so a 7x7 layer over a 1-channel image keeps every
// lane busy.
@compute @workgroup_size(64)
fn conv_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col_blocks = gp.out_pad / 16u;
    let nb = gid.x % col_blocks;
    let r0 = (gid.x / col_blocks) * 4u;
    let s = gid.y;
    if r0 >= gp.rows || s >= gp.chunks {
        return;
    }
    let n4 = nb * 4u;
    let row0 = weight_row(r0);
    let row1 = weight_row(r0 + 1u);
    let row2 = weight_row(r0 + 2u);
    let row3 = weight_row(r0 + 3u);

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
        let g0 = dy_at(p, n4);
        let g1 = dy_at(p, n4 + 1u);
        let g2 = dy_at(p, n4 + 2u);
        let g3 = dy_at(p, n4 + 3u);
        let x0 = vec4<f32>(x_at(p, row0));
        let x1 = vec4<f32>(x_at(p, row1));
        let x2 = vec4<f32>(x_at(p, row2));
        let x3 = vec4<f32>(x_at(p, row3));

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
    let base = (s * gp.rows + r0) * row4 + n4;
    partial[base] = a00; partial[base + 1u] = a01;
    partial[base + 2u] = a02; partial[base + 3u] = a03;
    partial[base + row4] = a10; partial[base + row4 + 1u] = a11;
    partial[base + row4 + 2u] = a12; partial[base + row4 + 3u] = a13;
    partial[base + 2u * row4] = a20; partial[base + 2u * row4 + 1u] = a21;
    partial[base + 2u * row4 + 2u] = a22; partial[base + 2u * row4 + 3u] = a23;
    partial[base + 3u * row4] = a30; partial[base + 3u * row4 + 1u] = a31;
    partial[base + 3u * row4 + 2u] = a32; partial[base + 3u * row4 + 3u] = a33;
}

@group(0) @binding(0) var<uniform> bp: GradParams;
@group(0) @binding(1) var<storage, read> dy_cols: array<f32>;              // [P, N]
@group(0) @binding(2) var<storage, read_write> bias_partial: array<f32>;   // [S, NP]

// bias_partial[s, n] = sum over the pixels p of chunk s of dy[p, n].
@compute @workgroup_size(64)
fn conv_bias_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let s = gid.y;
    if n >= bp.out_pad || s >= bp.chunks {
        return;
    }
    var sum = 0.0;
    if n < bp.out_ch {
        let end = min((s + 1u) * bp.chunk, bp.pixels);
        for (var p = s * bp.chunk; p < end; p++) {
            sum += dy_cols[p * bp.out_ch + n];
        }
    }
    bias_partial[s * bp.out_pad + n] = sum;
}

@group(0) @binding(0) var<uniform> rp: GradParams;
@group(0) @binding(1) var<storage, read> parts: array<f32>;            // [S, RP, NP]
@group(0) @binding(2) var<storage, read> bias_parts: array<f32>;       // [S, NP]
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;       // [T, K, NP]
@group(0) @binding(4) var<storage, read_write> grad_bias: array<f32>;  // [NP]

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
    let go = colour(n / rp.out_run, rp.out_ch / rp.out_run);
    return gi < go || (rp.mask_b != 0u && gi == go);
}

// grad[t, c, n] = mask(t, c, n) * sum over s of partial[s, t K + c, n], and for the
// NP invocations after those, grad_bias[n] = sum over s of bias_partial[s, n].
@compute @workgroup_size(64)
fn conv_weight_grad_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    let weights = rp.taps * rp.in_ch * rp.out_pad;
    if i < weights {
        let n = i % rp.out_pad;
        let r = i / rp.out_pad;
        var sum = 0.0;
        if kept(r / rp.in_ch, r % rp.in_ch, n) {
            for (var s = 0u; s < rp.chunks; s++) {
                sum += parts[(s * rp.rows + r) * rp.out_pad + n];
            }
        }
        grad[i] = sum;
    } else if i < weights + rp.out_pad {
        let n = i - weights;
        var sum = 0.0;
        for (var s = 0u; s < rp.chunks; s++) {
            sum += bias_parts[s * rp.out_pad + n];
        }
        grad_bias[n] = sum;
    }
}

@group(0) @binding(0) var<uniform> tp: GradParams;
@group(0) @binding(1) var<storage, read> w_in: array<f32>;           // [T, K, NP]
@group(0) @binding(2) var<storage, read_write> w_t: array<f32>;      // [T, N, KP32]

// w_t[t, n, c] = w[t, c, n], with the K columns padded like any weight's columns
// (rows here is K rounded up to 32) so that the transpose feeds `conv_forward`.
@compute @workgroup_size(64)
fn conv_transpose_weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if i >= tp.taps * tp.out_ch * tp.rows {
        return;
    }
    let c = i % tp.rows;
    let n = (i / tp.rows) % tp.out_ch;
    let t = i / (tp.rows * tp.out_ch);
    let src = (t * tp.in_ch + min(c, tp.in_ch - 1u)) * tp.out_pad + n;
    w_t[i] = select(0.0, w_in[src], c < tp.in_ch);
}
