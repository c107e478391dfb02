// The 256-way softmax over each sub-pixel's intensities, its cross-entropy with the
// true intensity (`truth`), and the gradient of the mean loss.
//
// Legend: P pixels, C colour channels (1 or 3), V = 256 intensities. Logits of
// sub-pixel (p, c) are logits[p, c * V .. (c + 1) * V].

const V: u32 = 256u;

struct LossParams {
    // P * C
    rows: u32,
    // Multiplies the gradient: 1 / (rows in the batch) for the mean loss.
    scale: f32,
}

@group(0) @binding(0) var<uniform> lp: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // [P, C * V]
@group(0) @binding(2) var<storage, read> truth: array<u32>;         // [P, C]
@group(0) @binding(3) var<storage, read_write> nll: array<f32>;     // [P, C] in nats
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>; // [P, C * V]

// nll = -log softmax(logits)[target]; dlogits = scale * (softmax(logits) - onehot).
@compute @workgroup_size(64)
fn softmax_nll(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * 65535u * 64u;
    if r >= lp.rows {
        return;
    }
    let base = r * V;

    var m = logits[base];
    for (var v = 1u; v < V; v++) {
        m = max(m, logits[base + v]);
    }

    var z = 0.0;
    for (var v = 0u; v < V; v++) {
        z += exp(logits[base + v] - m);
    }
    let log_z = m + log(z);

    let t = truth[r];
    nll[r] = log_z - logits[base + t];

    for (var v = 0u; v < V; v++) {
        let prob = exp(logits[base + v] - log_z);
        dlogits[base + v] = lp.scale * (prob - select(0.0, 1.0, v == t));
    }
}

struct SumParams {
    len: u32,
    // 1: add the sum to what `total` holds (a running sum over steps), 0: overwrite.
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> sp: SumParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;      // [L]
@group(0) @binding(2) var<storage, read_write> total: array<f32>; // [1]

var<workgroup> partial_sums: array<f32, 256>;

// total[0] (+)= sum of values, by one workgroup.
@compute @workgroup_size(256)
fn sum_all(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    for (var i = li; i < sp.len; i += 256u) {
        s += values[i];
    }
    partial_sums[li] = s;
    workgroupBarrier();

    for (var half = 128u; half > 0u; half /= 2u) {
        if li < half {
            partial_sums[li] += partial_sums[li + half];
        }
        workgroupBarrier();
    }

    if li == 0u {
        total[0] = select(0.0, total[0], sp.accumulate != 0u) + partial_sums[0];
    }
}
