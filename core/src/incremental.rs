//! Incremental sampling: the network is evaluated only where a new sub-pixel changes
//! it. Drawing sub-pixel i of pixel p can change no output before p, and the next
//! draw needs only pixel p (or p + 1), so each step recomputes every layer at that one
//! pixel, with everything before it kept on the GPU from earlier steps, then draws.
//!
//! Each layer writes its own map (the residual stream too), so a pixel can be
//! recomputed once per colour as its sub-pixels are drawn. The draws and the cursor
//! are [`crate::sample`]'s: the same kernel and the same random numbers, so this
//! sampler draws the images the plain one draws, at a fraction of the work.
//!
//! A PixelCNN step is one launch (`shaders/pixelcnn_step.wgsl`): a workgroup of
//! images runs every convolution at the pixel, with a barrier between layers, and
//! draws. The recurrent models take one launch per convolution or LSTM position
//! (`shaders/incremental.wgsl`, `shaders/lstm.wgsl`) and one for the draw.

use crate::conv::ConvLayout;
use crate::gpu::{self, Dispatch, Gpu, View};
use crate::lstm::{self, ScanBuffers, ScanOp, StepAt};
use crate::model::{Arch, Block};
use crate::network::Network;
use crate::ops::LEVELS;
use crate::rnn::Kind;
use crate::sample::{check_batch, DrawOp};
use crate::Error;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AtParams {
    batch: u32,
    height: u32,
    width: u32,
    k: u32,
    taps: u32,
    tap0: u32,
    in_ch: u32,
    out_ch: u32,
    out_pad: u32,
    relu_in: u32,
    residual: u32,
    channels: u32,
    steps: u32,
    _pad: [u32; 3],
}

/// A batch of images filled in by the incremental sampler.
#[derive(Debug)]
pub struct IncrementalSampler {
    /// The launches of one step.
    step: Vec<Dispatch>,
    /// What runs before the first step of each row but the first: the Diagonal
    /// BiLSTM's right-to-left direction along the finished row above.
    row_start: Vec<Dispatch>,
    /// Steps per image row.
    row: usize,
    op: DrawOp,
    images: Vec<u8>,
    steps: usize,
    done: usize,
}

impl IncrementalSampler {
    /// Starts filling every sub-pixel of `images` (`[batch, H, W, C]`) whose `known`
    /// entry is false, with `net`'s parameters; known sub-pixels stay and condition
    /// what follows them. A conditional model is conditioned on the small images set
    /// with [`Network::set_small`] before this call.
    pub fn new(
        net: &Network,
        images: Vec<u8>,
        known: Vec<bool>,
        temperature: f32,
        seed: u64,
    ) -> Result<Self, Error> {
        check_batch(net, &images, &known)?;
        let config = net.config;
        let gpu = net.gpu();
        let dims = config.dims();
        let batch = net.batch;
        let pixels = batch * config.size * config.size;
        let maps = |label: &str, ch: usize| View::whole(&gpu.zeros(label, pixels * ch));

        // Every sub-pixel is a step: the known ones too, whose pixels later ones read.
        let order: Vec<usize> = (0..dims).collect();
        let op = DrawOp::new(
            gpu,
            batch,
            dims,
            (&images, &known),
            &order,
            (temperature, seed),
        );
        let sampler = |step, row_start, op| Self {
            step,
            row_start,
            row: config.size * config.channels,
            images: images.clone(),
            steps: order.len(),
            done: 0,
            op,
        };
        // A conditional model's terms, from the small images the caller has set. The
        // recurrent models' steps read them in place in `net`, so nothing else may
        // run `net` while this sampler does.
        gpu::submit(gpu, &[net.cond_dispatches()]);
        if config.arch == Arch::PixelCnn {
            let step = vec![pixelcnn_step(net, &images, &op), op.advance.clone()];
            return Ok(sampler(step, Vec::new(), op));
        }

        // The recurrent models: one launch per convolution or LSTM position.
        let x = maps("x", config.channels);
        gpu.queue.write_buffer(
            &x.buffer,
            0,
            bytemuck::cast_slice(&crate::model::encode_input(&images)),
        );
        let logits = maps("logits", config.channels * LEVELS);
        let at = |i: usize, input: &View, output: &View, relu_in: bool, res: Option<&View>| {
            conv_at(net, i, input, output, relu_in, res, &op)
        };

        let layout = &net.layout;
        let h = config.hidden;
        let mut step = Vec::new();
        let mut row_start = Vec::new();
        let mut prepare = Vec::new();
        let mut stream = maps("h0", 2 * h);
        step.push(at(0, &x, &stream, false, None));
        let param = |offset: usize, len: usize| View {
            buffer: net.params.clone(),
            offset,
            len,
        };
        let cursor = (&View::whole(&op.order), &View::whole(&op.cursor));
        // The Diagonal BiLSTM's scans over zero pre-activations share one zero map.
        let zero_pre = config
            .rnn_layer(batch)
            .filter(|l| l.kind == Kind::Diagonal)
            .map(|l| View::whole(&gpu.zeros("zero pre", l.scan().positions() * 4 * h)));
        for (l, block) in layout.blocks.iter().enumerate() {
            let next = maps("h", 2 * h);
            match block {
                Block::Conv(_) => unreachable!("a PixelCNN step is one launch"),
                // A recurrent layer: each direction's input-to-state convolution at
                // the pixel, the LSTM there (for the Diagonal BiLSTM's right-to-left
                // direction: along the row above, once it is finished), and K^out.
                Block::Recurrent { dirs, out } => {
                    let layer = config.rnn_layer(batch).expect("a recurrent model");
                    let scan = layer.scan();
                    let skewed = |label: &str, ch: usize| {
                        View::whole(&gpu.zeros(label, scan.positions() * ch))
                    };
                    let states = maps("states", h);
                    let mut skewed_states = Vec::new();
                    for (d, dir) in dirs.iter().enumerate() {
                        let (kss, init) = (&layout.vectors[dir.kss], &layout.vectors[dir.init]);
                        let (kss, init) =
                            (param(kss.offset, kss.len), param(init.offset, init.len));
                        let pre = maps("pre", 4 * h);
                        let term = net.cond_terms.get(l).map(|t| &t[d]);
                        step.push(at(dir.kis, &stream, &pre, false, term));
                        let (gates, c, hs) = match layer.kind {
                            Kind::Row => (maps("gates", 4 * h), maps("c", h), states.clone()),
                            Kind::Diagonal => {
                                (skewed("gates", 4 * h), skewed("c", h), skewed("h", h))
                            }
                        };
                        let buffers = |pre| ScanBuffers {
                            pre,
                            kss: &kss,
                            init: &init,
                            gates: &gates,
                            c: &c,
                            h: &hs,
                            grads: None,
                        };
                        let on = |at| {
                            lstm::step_at_cursor(
                                gpu,
                                &scan,
                                at,
                                &buffers(&pre),
                                cursor,
                                config.channels,
                            )
                        };
                        match (layer.kind, d) {
                            (Kind::Row, _) => step.push(on(StepAt::Row)),
                            (Kind::Diagonal, 0) => step.push(on(StepAt::Diagonal)),
                            (Kind::Diagonal, _) => {
                                row_start
                                    .extend((0..config.size).map(|m| on(StepAt::RightToLeft(m))));
                            }
                        }
                        if let Some(zero) = &zero_pre {
                            // The states off the image depend on no pixel: the whole scan
                            // over zero pre-activations gives them once.
                            let taps = layer.kind.taps();
                            prepare.extend(ScanOp::new(gpu, &scan, taps, &buffers(zero)).forward);
                            skewed_states.push(hs);
                        }
                    }
                    if let [lr, rl] = &skewed_states[..] {
                        step.push(diag_sum_at(net, lr, rl, &states, &op));
                    }
                    step.push(at(*out, &states, &next, false, Some(&stream)));
                }
            }
            stream = next;
        }
        let n = layout.convs.len();
        let o1 = maps("o1", config.out_hidden);
        step.push(at(n - 2, &stream, &o1, true, None));
        step.push(at(n - 1, &o1, &logits, true, None));
        step.push(op.draw(gpu, &logits, &x));
        step.push(op.advance.clone());
        gpu::submit(gpu, &[&prepare]);
        Ok(sampler(step, row_start, op))
    }

    /// Runs up to `steps` more sub-pixel steps in one submission, then reads the images
    /// back; returns whether every sub-pixel is now drawn.
    pub async fn advance(&mut self, gpu: &Gpu, steps: usize) -> Result<bool, Error> {
        let steps = steps.min(self.steps - self.done);
        let mut all: Vec<&[Dispatch]> = Vec::new();
        for i in self.done..self.done + steps {
            if i > 0 && i.is_multiple_of(self.row) {
                all.push(&self.row_start);
            }
            all.push(&self.step);
        }
        gpu::submit(gpu, &all);
        self.done += steps;
        self.images = self.op.read_images(gpu).await?;
        Ok(self.is_finished())
    }

    /// Whether every sub-pixel has been visited.
    pub fn is_finished(&self) -> bool {
        self.done == self.steps
    }

    /// Steps taken and steps in all (one per sub-pixel of an image).
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.steps)
    }

    /// The images as far as they are drawn (`[batch, H, W, C]`).
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// The images, once drawn.
    pub fn into_images(self) -> Vec<u8> {
        self.images
    }
}

/// Conv `i` of `net` at the cursor's pixel: `output` = conv(ReLU?(`input`)) (+ `res`).
fn conv_at(
    net: &Network,
    i: usize,
    input: &View,
    output: &View,
    relu_in: bool,
    res: Option<&View>,
    op: &DrawOp,
) -> Dispatch {
    let gpu = net.gpu();
    let config = net.config;
    let layout: &ConvLayout = &net.layout.convs[i];
    let s = layout.shape;
    let offset = net.layout.offsets[i];
    let weights = View {
        buffer: net.params.clone(),
        offset,
        len: layout.weight_len(),
    };
    let bias = View {
        buffer: net.params.clone(),
        offset: offset + layout.bias_offset(),
        len: layout.out_pad,
    };
    let params = AtParams {
        batch: net.batch as u32,
        height: config.size as u32,
        width: config.size as u32,
        k: s.k as u32,
        taps: s.taps() as u32,
        tap0: s.first_tap() as u32,
        in_ch: s.in_ch as u32,
        out_ch: s.out_ch as u32,
        out_pad: layout.out_pad as u32,
        relu_in: relu_in as u32,
        residual: res.is_some() as u32,
        channels: config.channels as u32,
        steps: config.dims() as u32,
        _pad: [0; 3],
    };
    let views = [
        (1, input),
        (2, &weights),
        (3, &bias),
        (4, res.unwrap_or(input)),
        (5, output),
        (6, &View::whole(&op.order)),
        (7, &View::whole(&op.cursor)),
    ];
    Dispatch::new(
        gpu,
        &gpu.kernels.conv_at,
        &gpu.uniform("conv at", &params),
        &views,
        gpu::grid_1d(net.batch * (s.out_ch / 4).div_ceil(4), 64),
    )
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumParams {
    batch: u32,
    height: u32,
    width: u32,
    hidden: u32,
    channels: u32,
    steps: u32,
    _pad: [u32; 2],
}

/// The Diagonal BiLSTM's states at the cursor's pixel: the left-to-right state there
/// plus the right-to-left state of the pixel above, from the skewed maps `lr`, `rl`.
fn diag_sum_at(net: &Network, lr: &View, rl: &View, states: &View, op: &DrawOp) -> Dispatch {
    let gpu = net.gpu();
    let config = net.config;
    let params = SumParams {
        batch: net.batch as u32,
        height: config.size as u32,
        width: config.size as u32,
        hidden: config.hidden as u32,
        channels: config.channels as u32,
        steps: config.dims() as u32,
        _pad: [0; 2],
    };
    let views = [
        (1, lr),
        (2, rl),
        (3, states),
        (8, &View::whole(&op.order)),
        (9, &View::whole(&op.cursor)),
    ];
    Dispatch::new(
        gpu,
        &gpu.kernels.diag_sum_at,
        &gpu.uniform("diag sum at", &params),
        &views,
        gpu::grid_1d(net.batch * config.hidden, 64),
    )
}

/// Marks a map offset in the step table as absent.
const NO_MAP: u32 = u32::MAX;

/// Images per workgroup of the PixelCNN step (at most 8, the shader's MAX_IMAGES).
const STEP_IMAGES: usize = 8;

/// The whole step of a PixelCNN at the cursor's pixel as one launch, a workgroup per
/// [`STEP_IMAGES`] images: every convolution, each into its own map of one arena buffer (the input
/// first, holding `images`), then the draw.
fn pixelcnn_step(net: &Network, images: &[u8], op: &DrawOp) -> Dispatch {
    let gpu = net.gpu();
    let config = net.config;
    let convs = &net.layout.convs;
    let pixels = net.batch * config.size * config.size;

    // The arena: the input x, then each convolution's output map but the logits'.
    let mut arena_len = pixels * config.channels;
    let mut map = |ch: usize| {
        let at = arena_len;
        arena_len += pixels * ch;
        at as u32
    };
    // The header, then each convolution's entry; the count is set at the end.
    let mut table = vec![
        config.size as u32,
        config.size as u32,
        config.channels as u32,
        0,
        STEP_IMAGES as u32,
    ];
    let mut conv = |i: usize, input: u32, relu_in: bool, residual: Option<u32>, output: u32| {
        let layout: &ConvLayout = &convs[i];
        let s = layout.shape;
        let offset = net.layout.offsets[i];
        table.extend([
            offset as u32,
            (offset + layout.bias_offset()) as u32,
            s.k as u32,
            s.taps() as u32,
            s.first_tap() as u32,
            s.in_ch as u32,
            s.out_ch as u32,
            layout.out_pad as u32,
            input,
            output,
            residual.unwrap_or(NO_MAP),
            relu_in as u32,
        ]);
        output
    };

    // A conditional model's terms, copied into the arena after the input.
    let terms: Vec<(u32, &View)> = net
        .cond_terms
        .iter()
        .map(|t| (map(t[0].len / pixels), &t[0]))
        .collect();

    // The same convolutions, in the same order, as the network's forward pass.
    let h = config.hidden;
    let mut stream = conv(0, 0, false, None, map(2 * h));
    for (l, block) in net.layout.blocks.iter().enumerate() {
        let &Block::Conv([c1, c2, c3]) = block else {
            unreachable!("a PixelCNN has only convolution blocks")
        };
        let term = terms.get(l).map(|t| t.0);
        let b1 = conv(c1, stream, true, term, map(h));
        let b2 = conv(c2, b1, true, None, map(h));
        stream = conv(c3, b2, true, Some(stream), map(2 * h));
    }
    let n = convs.len();
    let o1 = conv(n - 2, stream, true, None, map(config.out_hidden));
    conv(n - 1, o1, true, None, NO_MAP);
    table[3] = ((table.len() - 5) / 12) as u32;

    let arena = gpu.zeros("arena", arena_len);
    gpu.queue.write_buffer(
        &arena,
        0,
        bytemuck::cast_slice(&crate::model::encode_input(images)),
    );
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    for (at, t) in &terms {
        let bytes = (t.len * 4) as u64;
        encoder.copy_buffer_to_buffer(
            &t.buffer,
            (t.offset * 4) as u64,
            &arena,
            *at as u64 * 4,
            bytes,
        );
    }
    gpu.queue.submit([encoder.finish()]);
    let table = gpu.buffer_from("step table", bytemuck::cast_slice(&table));
    let whole = View::whole;
    Dispatch::new(
        gpu,
        &gpu.kernels.pixelcnn_step,
        &op.params,
        &[
            (2, &whole(&op.known)),
            (3, &whole(&op.order)),
            (4, &whole(&op.cursor)),
            (5, &whole(&op.images)),
            (7, &whole(&table)),
            (8, &whole(&net.params)),
            (9, &whole(&arena)),
        ],
        [net.batch.div_ceil(STEP_IMAGES) as u32, 1, 1],
    )
}
