// Elementwise ops on flat f32 buffers: ReLU, its gradient, and the residual add.
//
// Legend: L elements. Dispatched as a 2-D grid of 256-wide workgroups so that
// buffers longer than 65,535 workgroups still fit.

struct Len {
    len: u32,
}

@group(0) @binding(0) var<uniform> e: Len;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // [L]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [L]

fn flat(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 256u;
}

// out = max(a, 0)
@compute @workgroup_size(256)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i < e.len {
        out[i] = max(a[i], 0.0);
    }
}

// out += a: the residual connection, and gradient accumulation.
@compute @workgroup_size(256)
fn add_into(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i < e.len {
        out[i] += a[i];
    }
}

@group(0) @binding(0) var<uniform> g: Len;
@group(0) @binding(1) var<storage, read> dy: array<f32>;         // [L]
@group(0) @binding(2) var<storage, read> y: array<f32>;          // [L] ReLU output
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;   // [L]

// dx = dy where the ReLU passed its input (y > 0), else 0.
@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = flat(gid);
    if i < g.len {
        dx[i] = select(0.0, dy[i], y[i] > 0.0);
    }
}
