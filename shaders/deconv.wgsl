// Transposed convolution (core/src/deconv.rs): the Multi-Scale PixelRNN's upsampling of
// the small image. Input pixel (iy, ix) spreads over the k x k output pixels
// (iy s + ky - p, ix s + kx - p): an output of size (in - 1) s - 2 p + k.
//
// Legend: x [B, H_in, W_in, C_in]; y [B, H_out, W_out, C_out]; parameters: weights
// [k, k, C_in, C_out] then bias [C_out]. Every kernel writes its outputs (no sums
// into them).

struct DeconvParams {
    batch: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    k: u32,
    stride: u32,
    pad: u32,
    in_ch: u32,
    out_ch: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dp: DeconvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;               // forward, weight grad
@group(0) @binding(2) var<storage, read> w: array<f32>;               // weights, bias
@group(0) @binding(3) var<storage, read_write> y: array<f32>;         // forward
@group(0) @binding(4) var<storage, read> dy: array<f32>;              // backward
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;        // input grad
@group(0) @binding(6) var<storage, read_write> dw: array<f32>;        // weight grad

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 64u;
}

// The input index (along one axis) that reaches output o through tap t, or -1.
fn source(o: u32, t: u32, len: u32) -> i32 {
    let v = i32(o + dp.pad) - i32(t);
    if v < 0 || v % i32(dp.stride) != 0 {
        return -1;
    }
    let i = v / i32(dp.stride);
    if i >= i32(len) {
        return -1;
    }
    return i;
}

// Invocation (b, oy, ox, co):
// y = bias[co] + sum over taps (ky, kx) reaching (oy, ox) from (iy, ix), and ci, of
// x[b, iy, ix, ci] w[ky, kx, ci, co].
@compute @workgroup_size(64)
fn deconv_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = flat(gid);
    if e >= dp.batch * dp.out_h * dp.out_w * dp.out_ch {
        return;
    }
    let co = e % dp.out_ch;
    let pix = e / dp.out_ch;
    let ox = pix % dp.out_w;
    let oy = (pix / dp.out_w) % dp.out_h;
    let b = pix / (dp.out_w * dp.out_h);
    var acc = w[dp.k * dp.k * dp.in_ch * dp.out_ch + co];
    for (var ky = 0u; ky < dp.k; ky++) {
        let iy = source(oy, ky, dp.in_h);
        if iy < 0 {
            continue;
        }
        for (var kx = 0u; kx < dp.k; kx++) {
            let ix = source(ox, kx, dp.in_w);
            if ix < 0 {
                continue;
            }
            let xi = ((b * dp.in_h + u32(iy)) * dp.in_w + u32(ix)) * dp.in_ch;
            let wi = (ky * dp.k + kx) * dp.in_ch * dp.out_ch + co;
            for (var ci = 0u; ci < dp.in_ch; ci++) {
                acc += x[xi + ci] * w[wi + ci * dp.out_ch];
            }
        }
    }
    y[e] = acc;
}

// Invocation (b, iy, ix, ci):
// dx = sum over taps (ky, kx) with (oy, ox) = (iy s + ky - p, ix s + kx - p) on the
// output, and co, of dy[b, oy, ox, co] w[ky, kx, ci, co].
@compute @workgroup_size(64)
fn deconv_input_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = flat(gid);
    if e >= dp.batch * dp.in_h * dp.in_w * dp.in_ch {
        return;
    }
    let ci = e % dp.in_ch;
    let pix = e / dp.in_ch;
    let ix = pix % dp.in_w;
    let iy = (pix / dp.in_w) % dp.in_h;
    let b = pix / (dp.in_w * dp.in_h);
    var acc = 0.0;
    for (var ky = 0u; ky < dp.k; ky++) {
        let oy = i32(iy * dp.stride + ky) - i32(dp.pad);
        if oy < 0 || oy >= i32(dp.out_h) {
            continue;
        }
        for (var kx = 0u; kx < dp.k; kx++) {
            let ox = i32(ix * dp.stride + kx) - i32(dp.pad);
            if ox < 0 || ox >= i32(dp.out_w) {
                continue;
            }
            let yi = ((b * dp.out_h + u32(oy)) * dp.out_w + u32(ox)) * dp.out_ch;
            let wi = ((ky * dp.k + kx) * dp.in_ch + ci) * dp.out_ch;
            for (var co = 0u; co < dp.out_ch; co++) {
                acc += dy[yi + co] * w[wi + co];
            }
        }
    }
    dx[e] = acc;
}

// Invocation (ky, kx, ci, co): dw = sum over b and input pixels (iy, ix) whose tap
// (ky, kx) lands on the output of x[b, iy, ix, ci] dy[b, oy, ox, co]; past the
// weights, invocation co: dbias = sum over every output pixel of dy[.., co].
@compute @workgroup_size(64)
fn deconv_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = flat(gid);
    let weights = dp.k * dp.k * dp.in_ch * dp.out_ch;
    if e >= weights + dp.out_ch {
        return;
    }
    if e >= weights {
        let co = e - weights;
        var acc = 0.0;
        for (var pix = 0u; pix < dp.batch * dp.out_h * dp.out_w; pix++) {
            acc += dy[pix * dp.out_ch + co];
        }
        dw[e] = acc;
        return;
    }
    let co = e % dp.out_ch;
    let ci = (e / dp.out_ch) % dp.in_ch;
    let tap = e / (dp.out_ch * dp.in_ch);
    let kx = tap % dp.k;
    let ky = tap / dp.k;
    var acc = 0.0;
    for (var b = 0u; b < dp.batch; b++) {
        for (var iy = 0u; iy < dp.in_h; iy++) {
            let oy = i32(iy * dp.stride + ky) - i32(dp.pad);
            if oy < 0 || oy >= i32(dp.out_h) {
                continue;
            }
            for (var ix = 0u; ix < dp.in_w; ix++) {
                let ox = i32(ix * dp.stride + kx) - i32(dp.pad);
                if ox < 0 || ox >= i32(dp.out_w) {
                    continue;
                }
                let xv = x[((b * dp.in_h + iy) * dp.in_w + ix) * dp.in_ch + ci];
                let yi = ((b * dp.out_h + u32(oy)) * dp.out_w + u32(ox)) * dp.out_ch + co;
                acc += xv * dy[yi];
            }
        }
    }
    dw[e] = acc;
}
