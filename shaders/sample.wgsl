// Sampling on the GPU (core/src/sample.rs): the categorical draw of one sub-pixel of
// every image from its 256 logits, written straight into the network's input, and
// the cursor that says which sub-pixel is next. Nothing is read back between draws.
//
// Legend: B images of D sub-pixels (D = H W C, raster order then R, G, B); logits are
// [B, H W, C 256]. The cursor holds the step: the index into `order`, the list of the
// sub-pixels to visit.

struct DrawParams {
    batch: u32,
    dims: u32,
    seed: u32,
    temperature: f32,
    steps: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> dp: DrawParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // [B, H W, C 256]
@group(0) @binding(2) var<storage, read> known: array<u32>;         // [B, D]: 1 = keep
@group(0) @binding(3) var<storage, read> order: array<u32>;         // [steps]
@group(0) @binding(4) var<storage, read_write> cursor: array<u32>;  // [1]: the step
@group(0) @binding(5) var<storage, read_write> images: array<u32>;  // [B, D] intensities
@group(0) @binding(6) var<storage, read_write> input: array<f32>;   // [B, D] encoded

// A 32-bit integer hash with good avalanche (two multiply-xorshift rounds).
fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// The uniform number in [0, 1) of sub-pixel i of image b under `seed`: a function of
// the three alone, so that every sampler draws sub-pixel i with the same number.
fn uniform01(seed: u32, b: u32, i: u32) -> f32 {
    let h = mix32(mix32(mix32(seed) ^ b) ^ i);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// The intensity drawn from softmax(l / T) with the uniform number u in [0, 1): the
// first whose cumulative weight exceeds u times the total (the most likely, the first
// on ties, when T = 0). The same f32 arithmetic as sample::draw on the CPU.
fn pick(l: ptr<function, array<f32, 256>>, u: f32, temperature: f32) -> u32 {
    var top = (*l)[0];
    var best = 0u;
    for (var v = 1u; v < 256u; v++) {
        if (*l)[v] > top {
            top = (*l)[v];
            best = v;
        }
    }
    if temperature <= 0.0 {
        return best;
    }
    var total = 0.0;
    for (var v = 0u; v < 256u; v++) {
        total += exp(((*l)[v] - top) / temperature);
    }
    let goal = u * total;
    var acc = 0.0;
    for (var v = 0u; v < 256u; v++) {
        acc += exp(((*l)[v] - top) / temperature);
        if acc > goal {
            return v;
        }
    }
    return 255u;
}

// An intensity as the network reads it: scaled to [-1, 1].
fn encode(value: u32) -> f32 {
    return f32(value) / 127.5 - 1.0;
}

// Invocation b: draws sub-pixel order[cursor] of image b from its logits unless it is
// known, and writes it into the images and the input.
@compute @workgroup_size(64)
fn draw(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    let step = cursor[0];
    if b >= dp.batch || step >= dp.steps {
        return;
    }
    let i = order[step];
    let at = b * dp.dims + i;
    if known[at] != 0u {
        return;
    }
    // The logits of sub-pixel i of image b: [B, H W, C 256] is [B D, 256].
    var l: array<f32, 256>;
    for (var v = 0u; v < 256u; v++) {
        l[v] = logits[at * 256u + v];
    }
    let value = pick(&l, uniform01(dp.seed, b, i), dp.temperature);
    images[at] = value;
    input[at] = encode(value);
}

// One invocation: moves the cursor to the next step, stopping after the last.
@compute @workgroup_size(1)
fn advance() {
    cursor[0] = min(cursor[0] + 1u, dp.steps);
}
