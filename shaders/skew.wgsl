// Skew and unskew of the Diagonal BiLSTM (core/src/skew.rs): the skew shifts row i of
// an H x W map right by i, so that the diagonals of the image become the S = H + W - 1
// columns of an H x S map, stored step-major (column by column) for the LSTM scan.
// Unskew is its transpose, so each is the other's backward pass.
//
// Legend: B images, H x W maps of K channels; skewed maps are [B, S, H, K] (step s,
// position i). `mirror` reads the columns right to left (the second direction),
// `shift` moves the unskewed rows down by that many rows (the rows it leaves empty
// get zeros): by one for the right-to-left output before it is added.

struct SkewParams {
    batch: u32,
    height: u32,
    width: u32,
    channels: u32,
    mirror: u32,
    shift: i32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> kp: SkewParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 64u;
}

// The stored column of image column c.
fn column(c: u32) -> u32 {
    return select(c, kp.width - 1u - c, kp.mirror != 0u);
}

// dst [B, S, H, K] from src [B, H, W, K]: position i of step s is image row
// i + shift, column s - i, or zero where that is outside the image.
@compute @workgroup_size(64)
fn skew(@builtin(global_invocation_id) gid: vec3<u32>) {
    let steps = kp.height + kp.width - 1u;
    let e = flat(gid);
    if e >= kp.batch * steps * kp.height * kp.channels {
        return;
    }
    let ch = e % kp.channels;
    let i = (e / kp.channels) % kp.height;
    let s = (e / (kp.channels * kp.height)) % steps;
    let b = e / (kp.channels * kp.height * steps);
    let row = i32(i) + kp.shift;
    var v = 0.0;
    if s >= i && s - i < kp.width && row >= 0 && row < i32(kp.height) {
        v = src[((b * kp.height + u32(row)) * kp.width + column(s - i)) * kp.channels + ch];
    }
    dst[e] = v;
}

// dst [B, H, W, K] from src [B, S, H, K]: image row r, column c is position
// r - shift of step (r - shift) + column(c), or zero for the rows the shift leaves
// empty.
@compute @workgroup_size(64)
fn unskew(@builtin(global_invocation_id) gid: vec3<u32>) {
    let steps = kp.height + kp.width - 1u;
    let e = flat(gid);
    if e >= kp.batch * kp.height * kp.width * kp.channels {
        return;
    }
    let ch = e % kp.channels;
    let c = (e / kp.channels) % kp.width;
    let r = (e / (kp.channels * kp.width)) % kp.height;
    let b = e / (kp.channels * kp.width * kp.height);
    let i = i32(r) - kp.shift;
    var v = 0.0;
    if i >= 0 && i < i32(kp.height) {
        let s = u32(i) + column(c);
        v = src[((b * steps + s) * kp.height + u32(i)) * kp.channels + ch];
    }
    dst[e] = v;
}
