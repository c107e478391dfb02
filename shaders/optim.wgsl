// Optimizers over the flat parameter buffer: RMSProp (the paper's) and Adam.
//
// Legend: L parameters, all tensors of the model packed in one buffer. Weights that
// a mask removes have a zero gradient, so both updates leave them at zero.

struct OptParams {
    len: u32,
    lr: f32,
    // RMSProp: decay rho of the mean square. Adam: beta1.
    beta1: f32,
    // Adam: beta2.
    beta2: f32,
    eps: f32,
    // Adam's bias corrections 1 - beta1^t and 1 - beta2^t for step t.
    correction1: f32,
    correction2: f32,
}

@group(0) @binding(0) var<uniform> op: OptParams;
@group(0) @binding(1) var<storage, read_write> theta: array<f32>; // [L]
@group(0) @binding(2) var<storage, read> grad: array<f32>;        // [L]
@group(0) @binding(3) var<storage, read_write> m: array<f32>;     // [L] first moment
@group(0) @binding(4) var<storage, read_write> v: array<f32>;     // [L] second moment

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 256u;
}

// v = rho v + (1 - rho) g^2;  theta -= lr g / (sqrt(v) + eps)
@compute @workgroup_size(256)
fn rmsprop(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= op.len {
        return;
    }
    let g = grad[i];
    let vi = op.beta1 * v[i] + (1.0 - op.beta1) * g * g;
    v[i] = vi;
    theta[i] -= op.lr * g / (sqrt(vi) + op.eps);
}

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// theta -= lr (m / c1) / (sqrt(v / c2) + eps)
@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i >= op.len {
        return;
    }
    let g = grad[i];
    let mi = op.beta1 * m[i] + (1.0 - op.beta1) * g;
    let vi = op.beta2 * v[i] + (1.0 - op.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    theta[i] -= op.lr * (mi / op.correction1) / (sqrt(vi / op.correction2) + op.eps);
}
