// Masked convolution over the causal taps of a k x k kernel, as implicit GEMM.
//
// Legend: P pixels (batch x height x width, raster order), T causal taps,
// K reduction channels, N output channels, NP = N rounded up to 32.
//
// Only the taps a raster-order mask can keep are stored and visited: every tap in
// the rows above the centre, then the centre row up to and including the centre.
// Tap t of a k x k kernel with radius r = k / 2 sits at
//   (dy, dx) = (t / k - r, t % k - r)      for t < r * k,
//   (dy, dx) = (0, t - r * k - r)          otherwise,
// so the centre tap is the last one, t = T - 1. The colour part of masks A and B
// lives only in the centre tap and is kept in the weights themselves (see
// `conv_weight_grad_reduce`), so the forward kernels read plain weights.

struct ConvParams {
    pixels: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    // +1: y[p] gathers x[p + offset(t)] (forward). -1: y[p] gathers x[p - offset(t)]
    // (the transposed convolution that carries gradients back to the input).
    dir: i32,
    has_bias: u32,
    // The first of the k x k kernel's causal taps stored: r k for a convolution along
    // the centre row alone, else 0.
    tap0: u32,
}

@group(0) @binding(0) var<uniform> cp: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // [P, K]
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;   // [T, K, NP / 4]
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>; // [NP / 4]
@group(0) @binding(4) var<storage, read_write> y: array<f32>;    // [P, N]

// The offset of causal tap t as (dx, dy): columns in x, rows in y.
fn tap_offset(t: u32, k: u32) -> vec2<i32> {
    let r = k / 2u;
    if t < r * k {
        return vec2<i32>(i32(t % k) - i32(r), i32(t / k) - i32(r));
    }
    return vec2<i32>(i32(t - r * k) - i32(r), 0);
}

// Index of the pixel at offset d from pixel p in the same image, or -1 outside it.
fn neighbour(p: u32, d: vec2<i32>) -> i32 {
    let hw = cp.height * cp.width;
    let row = i32((p % hw) / cp.width) + d.y;
    let col = i32(p % cp.width) + d.x;
    let inside = row >= 0 && row < i32(cp.height) && col >= 0 && col < i32(cp.width);
    return select(-1, i32(p) + d.y * i32(cp.width) + d.x, inside && p < cp.pixels);
}

// Reads x[q, c], or 0 when q is outside the image.
fn x_at(q: i32, c: u32) -> f32 {
    let i = u32(max(q, 0)) * cp.in_ch + c;
    return select(0.0, x[i], q >= 0);
}

fn store4(p: u32, n: u32, v: vec4<f32>) {
    if p >= cp.pixels {
        return;
    }
    let base = p * cp.out_ch;
    for (var e = 0u; e < 4u; e++) {
        if n + e < cp.out_ch {
            y[base + n + e] = v[e];
        }
    }
}

// y[p, n] = bias[n] + sum over t, c of x[p + dir * offset(t), c] * w[t, c, n].
// Each invocation computes a 4-pixel x 16-channel block in 16 vec4 accumulators.
//
// The column block comes from the workgroup id, so every weight address is the same
// across the invocations of a workgroup: compilers that vectorise across invocations
// (lavapipe's llvmpipe) load each weight once instead of gathering it per lane.
@compute @workgroup_size(64)
fn conv_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let p0 = gid.x * 4u;
    let n4 = wid.y * 4u;
    if p0 >= cp.pixels {
        return;
    }
    let row4 = cp.out_pad / 4u;

    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    if cp.has_bias != 0u {
        b0 = bias[n4];
        b1 = bias[n4 + 1u];
        b2 = bias[n4 + 2u];
        b3 = bias[n4 + 3u];
    }
    var a00 = b0; var a01 = b1; var a02 = b2; var a03 = b3;
    var a10 = b0; var a11 = b1; var a12 = b2; var a13 = b3;
    var a20 = b0; var a21 = b1; var a22 = b2; var a23 = b3;
    var a30 = b0; var a31 = b1; var a32 = b2; var a33 = b3;

    for (var t = 0u; t < cp.taps; t++) {
        let d = tap_offset(t + cp.tap0, cp.k) * cp.dir;
        let q0 = neighbour(p0, d);
        let q1 = neighbour(p0 + 1u, d);
        let q2 = neighbour(p0 + 2u, d);
        let q3 = neighbour(p0 + 3u, d);
        var wi = t * cp.in_ch * row4 + n4;
        for (var c = 0u; c < cp.in_ch; c++) {
            let w0 = w[wi];
            let w1 = w[wi + 1u];
            let w2 = w[wi + 2u];
            let w3 = w[wi + 3u];
            wi += row4;

            let x0 = vec4<f32>(x_at(q0, c));
            let x1 = vec4<f32>(x_at(q1, c));
            let x2 = vec4<f32>(x_at(q2, c));
            let x3 = vec4<f32>(x_at(q3, c));

            a00 = fma(x0, w0, a00); a01 = fma(x0, w1, a01);
            a02 = fma(x0, w2, a02); a03 = fma(x0, w3, a03);
            a10 = fma(x1, w0, a10); a11 = fma(x1, w1, a11);
            a12 = fma(x1, w2, a12); a13 = fma(x1, w3, a13);
            a20 = fma(x2, w0, a20); a21 = fma(x2, w1, a21);
            a22 = fma(x2, w2, a22); a23 = fma(x2, w3, a23);
            a30 = fma(x3, w0, a30); a31 = fma(x3, w1, a31);
            a32 = fma(x3, w2, a32); a33 = fma(x3, w3, a33);
        }
    }

    let n = n4 * 4u;
    store4(p0, n, a00); store4(p0, n + 4u, a01);
    store4(p0, n + 8u, a02); store4(p0, n + 12u, a03);
    store4(p0 + 1u, n, a10); store4(p0 + 1u, n + 4u, a11);
    store4(p0 + 1u, n + 8u, a12); store4(p0 + 1u, n + 12u, a13);
    store4(p0 + 2u, n, a20); store4(p0 + 2u, n + 4u, a21);
    store4(p0 + 2u, n + 8u, a22); store4(p0 + 2u, n + 12u, a23);
    store4(p0 + 3u, n, a30); store4(p0 + 3u, n + 4u, a31);
    store4(p0 + 3u, n + 8u, a32); store4(p0 + 3u, n + 12u, a33);
}
