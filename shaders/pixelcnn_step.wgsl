// One whole step of the incremental PixelCNN sampler (core/src/incremental.rs) in one
// launch: every convolution of the network at the cursor's pixel, then the draw of the
// cursor's sub-pixel. This text follows sample.wgsl in one module and uses its
// bindings (dp, known, order, cursor, images) and its pick, encode and uniform01.
//
// A workgroup takes a few images. For each convolution its invocations share out the
// (image, 16 output channels) pairs, and a barrier separates one convolution from the
// next, so a layer reads the pixel its predecessor has just written as well as the
// earlier pixels, final since their own steps. Every map, the input x included, lives
// in one arena buffer.
//
// Legend: B images of H x W pixels with C colours; maps [B, H W, channels]; weights
// [T, C_in, NP] (causal taps from tap0 of a k x k kernel, NP = C_out padded) and bias
// [NP] in the parameter buffer, as conv.wgsl reads them.

// One convolution of the step: where its weights, bias and maps are, and its shape.
struct StepConv {
    weights: u32,   // offset of the weights in `params`
    bias: u32,      // offset of the bias in `params`
    k: u32,
    taps: u32,
    tap0: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    input: u32,     // offset of the input map in `arena`
    output: u32,    // offset of the output map in `arena`
    residual: u32,  // offset of the map added to the output, or NO_MAP
    relu_in: u32,   // 1: the input is read through a ReLU
}

// The network: the convolutions in order, the last giving the 256 C logits.
struct StepNet {
    height: u32,
    width: u32,
    channels: u32,
    convs: u32,
    images: u32,    // images per workgroup, at most MAX_IMAGES
    conv: array<StepConv>,
}

const NO_MAP: u32 = 0xffffffffu;
const MAX_IMAGES: u32 = 8u;

@group(0) @binding(7) var<storage, read> net: StepNet;
@group(0) @binding(8) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> arena: array<f32>;  // x first: [B, D]

var<workgroup> step_now: u32;
var<workgroup> step_logits: array<f32, 2048>;  // [MAX_IMAGES, 256]

// The (dy, dx) offset of causal tap t of a k x k kernel (as conv.wgsl).
fn step_offset(t: u32, k: u32) -> vec2<i32> {
    let r = k / 2u;
    if t < r * k {
        return vec2<i32>(i32(t / k) - i32(r), i32(t % k) - i32(r));
    }
    return vec2<i32>(0, i32(t - r * k) - i32(r));
}

// Output channels co = 4 j0 .. 4 j0 + 15 of convolution l of image b at pixel
// (row, col), as four quads: bias[co] + sum over t, ci of
// f(x[b, (row, col) + offset(t), ci]) w[t, ci, co], f = ReLU when relu_in. The weights
// and bias are padded to a multiple of 32 channels, so every quad read exists.
fn step_conv16(l: u32, b: u32, row: i32, col: i32, j0: u32) -> array<vec4<f32>, 4> {
    let c = net.conv[l];
    let bq = c.bias / 4u + j0;
    var acc = array<vec4<f32>, 4>(params[bq], params[bq + 1u], params[bq + 2u], params[bq + 3u]);
    let row_quads = c.out_pad / 4u;
    for (var t = 0u; t < c.taps; t++) {
        let d = step_offset(t + c.tap0, c.k);
        let yy = row + d.x;
        let xx = col + d.y;
        if yy < 0 || xx < 0 || xx >= i32(net.width) {
            continue;
        }
        let q = (b * net.height + u32(yy)) * net.width + u32(xx);
        for (var ci = 0u; ci < c.in_ch; ci++) {
            var v = arena[c.input + q * c.in_ch + ci];
            if c.relu_in != 0u {
                v = max(v, 0.0);
            }
            let wq = c.weights / 4u + (t * c.in_ch + ci) * row_quads + j0;
            acc[0] += v * params[wq];
            acc[1] += v * params[wq + 1u];
            acc[2] += v * params[wq + 2u];
            acc[3] += v * params[wq + 3u];
        }
    }
    return acc;
}

@compute @workgroup_size(64)
fn pixelcnn_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if lid == 0u {
        step_now = cursor[0];
    }
    let step = workgroupUniformLoad(&step_now);
    if step >= dp.steps {
        return;
    }
    let i = order[step];
    let pixel = i / net.channels;
    let colour = i % net.channels;
    let row = i32(pixel / net.width);
    let col = i32(pixel % net.width);
    let first = wid.x * net.images;
    let count = min(net.images, dp.batch - first);

    // Every convolution but the last, into its map at the pixel.
    for (var l = 0u; l + 1u < net.convs; l++) {
        let c = net.conv[l];
        let groups = (c.out_ch + 15u) / 16u;
        for (var e = lid; e < count * groups; e += 64u) {
            let b = first + e / groups;
            let g = e % groups;
            let acc = step_conv16(l, b, row, col, 4u * g);
            let at = (b * net.height * net.width + pixel) * c.out_ch;
            for (var u = 0u; u < 16u; u++) {
                let co = 16u * g + u;
                if co < c.out_ch {
                    var v = acc[u / 4u][u % 4u];
                    if c.residual != NO_MAP {
                        v += arena[c.residual + at + co];
                    }
                    arena[c.output + at + co] = v;
                }
            }
        }
        storageBarrier();
    }

    // The last gives the logits; only the cursor's colour's 256 are needed.
    for (var e = lid; e < count * 16u; e += 64u) {
        let g = e % 16u;
        let j0 = colour * 64u + 4u * g;
        let acc = step_conv16(net.convs - 1u, first + e / 16u, row, col, j0);
        for (var u = 0u; u < 16u; u++) {
            step_logits[(e / 16u) * 256u + 16u * g + u] = acc[u / 4u][u % 4u];
        }
    }
    workgroupBarrier();

    // The draws, an invocation per image.
    if lid < count {
        let b = first + lid;
        let sub = b * dp.dims + i;
        if known[sub] == 0u {
            var l: array<f32, 256>;
            for (var v = 0u; v < 256u; v++) {
                l[v] = step_logits[lid * 256u + v];
            }
            let value = pick(&l, uniform01(dp.seed, b, i), dp.temperature);
            images[sub] = value;
            arena[sub] = encode(value);
        }
    }
}
