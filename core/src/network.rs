//! A model recorded on the GPU for a fixed batch size: every buffer and launch is made
//! once, and a training step is one command buffer with no readback.

use crate::conv::{ConvBuffers, ConvOp};
use crate::deconv::{DeconvBuffers, DeconvOp};
use crate::gpu::{self, Dispatch, Gpu, View};
use crate::model::{encode_input, Block, ModelConfig, ParamLayout};
use crate::ops::{self, Optimizer, OptimizerOp, LEVELS};
use crate::rnn::{DirectionParams, LayerBuffers, LayerOp, Param};
use crate::Error;

/// What a [`Network`] is built to do besides the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mode {
    /// Record the backward pass and this optimizer's update.
    pub optimizer: Option<Optimizer>,
    /// Record the parameter gradients (implied by an optimizer).
    pub param_grads: bool,
    /// Record the backward pass down to the input (for tests of causality).
    pub input_grad: bool,
    /// A deliberate fault, for the tests that show the causality test catches it.
    pub defect: Option<Defect>,
}

/// A deliberate fault a [`Network`] can be built with: no model should have one, and
/// the tests of causality show that each is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// The Diagonal BiLSTM's right-to-left states move down this many rows instead of
    /// one (0: not at all; -1: up).
    RightToLeftShift(isize),
}

/// A model on the GPU for batches of `batch` images.
#[derive(Debug)]
pub struct Network {
    gpu: Gpu,
    /// The architecture.
    pub config: ModelConfig,
    /// Images per batch.
    pub batch: usize,
    /// Where each convolution's parameters are in [`Network::params`].
    pub layout: ParamLayout,
    /// All parameters, packed.
    pub params: wgpu::Buffer,
    /// Their gradients (when built with a backward pass).
    pub grads: wgpu::Buffer,
    /// Optimizer moments m and v.
    pub moments: [wgpu::Buffer; 2],
    input: wgpu::Buffer,
    target: wgpu::Buffer,
    /// A conditional model's encoded small images `[batch, s, s, C]`.
    small: Option<wgpu::Buffer>,
    /// Gradient w.r.t. the encoded small images (when built with `input_grad`).
    pub dsmall: Option<wgpu::Buffer>,
    /// A conditional model's terms, per block and LSTM direction, from the small
    /// images: the launches that compute them (part of the forward pass too) and the
    /// maps they fill.
    cond_forward: Vec<Dispatch>,
    /// The terms `[P, ch]` that [`Network::cond_dispatches`] computes.
    pub cond_terms: Vec<Vec<View>>,
    /// Logits `[P, C * 256]` of the last forward pass.
    pub logits: wgpu::Buffer,
    /// NLL per sub-pixel `[P, C]` in nats, from the last loss pass.
    pub nll: wgpu::Buffer,
    /// Gradient of the loss w.r.t. the logits.
    pub dlogits: wgpu::Buffer,
    /// Gradient w.r.t. the encoded input `[P, C]` (when built with `input_grad`).
    pub dinput: wgpu::Buffer,
    /// Running sum of the NLL (nats) over training steps since the last reset.
    pub loss_sum: wgpu::Buffer,
    forward: Vec<Dispatch>,
    loss: Vec<Dispatch>,
    backward: Vec<Dispatch>,
    optimizer: Option<OptimizerOp>,
    step: u64,
    /// The convolution launches alone, for benchmarks.
    pub conv_kernels: ConvKernels,
}

/// The convolution launches of a [`Network`], grouped by pass, with the multiply-adds
/// each group does (causal taps only), for measuring kernel throughput.
#[derive(Debug, Clone, Default)]
pub struct ConvKernels {
    /// Forward convolutions.
    pub forward: Vec<Dispatch>,
    /// Weight and bias gradients.
    pub weight_grad: Vec<Dispatch>,
    /// Input gradients (every convolution but the first).
    pub input_grad: Vec<Dispatch>,
    /// Multiply-adds of the forward group; the weight-gradient group does as many.
    pub forward_macs: usize,
    /// Multiply-adds of the input-gradient group.
    pub input_grad_macs: usize,
}

impl ConvKernels {
    fn add(&mut self, op: &ConvOp, macs: usize) {
        self.forward.extend(op.forward.iter().cloned());
        self.weight_grad.extend(op.weight_grad.iter().cloned());
        self.input_grad.extend(op.input_grad.iter().cloned());
        self.forward_macs += macs;
        if !op.input_grad.is_empty() {
            self.input_grad_macs += macs;
        }
    }
}

impl Network {
    /// Builds the network with parameters `params` (packed, see [`ParamLayout`]).
    pub fn new(
        gpu: &Gpu,
        config: ModelConfig,
        batch: usize,
        params: &[f32],
        mode: Mode,
    ) -> Result<Self, Error> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        if params.len() != layout.len {
            return Err(Error::Config(format!(
                "{} parameter values given, the configuration needs {}",
                params.len(),
                layout.len
            )));
        }
        let grid = config.grid(batch);
        let p = grid.pixels();
        let c = config.channels;
        let h = config.hidden;
        let param_grads = mode.optimizer.is_some() || mode.param_grads;
        let train = param_grads || mode.input_grad;
        let maps = |label: &str, ch: usize| View::whole(&gpu.zeros(label, p * ch));
        let grad_maps =
            |label: &str, ch: usize| View::whole(&gpu.zeros(label, if train { p * ch } else { 1 }));

        let params_buf = gpu.buffer_from("params", params);
        let grads = gpu.zeros("grads", if param_grads { layout.len } else { 1 });
        let opt_len = if mode.optimizer.is_some() {
            layout.len
        } else {
            1
        };
        let moments = [gpu.zeros("m", opt_len), gpu.zeros("v", opt_len)];
        let input = maps("input", c);
        let target = maps("target", c);
        let logits = maps("logits", c * LEVELS);
        let nll = maps("nll", c);
        let dlogits = maps("dlogits", c * LEVELS);
        let dinput = grad_maps("dinput", c);
        let loss_sum = gpu.zeros("loss sum", 1);

        let param_view = |i: usize| View {
            buffer: params_buf.clone(),
            offset: layout.offsets[i],
            len: layout.convs[i].len(),
        };
        let grad_view = |i: usize| View {
            buffer: grads.clone(),
            offset: layout.offsets[i],
            len: layout.convs[i].len(),
        };
        let conv = |i: usize, x: &View, y: &View, dy: Option<&View>, dx: Option<&View>| {
            let g = grad_view(i);
            ConvOp::new(
                gpu,
                &layout.convs[i],
                grid,
                &ConvBuffers {
                    x,
                    params: &param_view(i),
                    y,
                    dy: dy.filter(|_| train),
                    dparams: Some(&g).filter(|_| param_grads),
                    dx: dx.filter(|_| train),
                },
            )
        };

        // Scratch gradients, shared by every block.
        let dh = grad_maps("dh", 2 * h);
        let g2h = [grad_maps("g2h a", 2 * h), grad_maps("g2h b", 2 * h)];
        let gh = [grad_maps("gh a", h), grad_maps("gh b", h)];
        let go = [
            grad_maps("go a", config.out_hidden),
            grad_maps("go b", config.out_hidden),
        ];

        let mut forward = Vec::new();
        let mut backward = Vec::new();
        let mut conv_kernels = ConvKernels::default();
        let macs = |i: usize| layout.convs[i].shape.macs(p);

        // A conditional model's upsampling of the small images and its terms, at the
        // start of every forward pass (the plain sampler's too, which recomputes
        // them each step; the incremental sampler computes them once).
        let cond = config
            .small
            .map(|_| Conditioning::new(gpu, &config, &layout, batch, (&params_buf, &grads), mode));
        let cond_forward = cond.as_ref().map_or(Vec::new(), |c| c.forward.clone());
        forward.extend(cond_forward.iter().cloned());
        let term = |l: usize, d: usize| cond.as_ref().map(|c| &c.terms[l][d]);
        // The backward pass of term (l, d) from its gradient dy; the last block's
        // first runs first and starts the upsampled maps' gradient.
        let term_backward = |l: usize, d: usize, dy: &View| -> Vec<Dispatch> {
            let first = l + 1 == layout.blocks.len() && d == 0;
            cond.as_ref().map_or(Vec::new(), |c| {
                c.term_backward(gpu, &layout, (l, d), dy, first)
            })
        };

        // h = conv7x7_A(x); its backward runs last.
        let hs = maps("h", 2 * h);
        let dx = mode.input_grad.then_some(&dinput);
        let first = conv(0, &input, &hs, Some(&dh), dx);
        conv_kernels.add(&first, macs(0));
        forward.extend(first.forward.iter().cloned());
        let mut first_backward = first.backward();

        // The residual layers.
        let mut block_backward = Vec::new();
        let mut hs = hs;
        for (l, block) in layout.blocks.iter().enumerate() {
            let mut back = Vec::new();
            match block {
                // h += W3 ReLU(W2 ReLU(W1 ReLU(h))), in place.
                &Block::Conv([i1, i2, i3]) => {
                    let r1 = maps("r1", 2 * h);
                    let b1 = maps("b1", h);
                    let r2 = maps("r2", h);
                    let b2 = maps("b2", h);
                    let r3 = maps("r3", h);
                    let b3 = maps("b3", 2 * h);
                    let c1 = conv(i1, &r1, &b1, Some(&gh[1]), Some(&g2h[0]));
                    let c2 = conv(i2, &r2, &b2, Some(&gh[1]), Some(&gh[0]));
                    let c3 = conv(i3, &r3, &b3, Some(&dh), Some(&gh[0]));
                    for (i, c) in [(i1, &c1), (i2, &c2), (i3, &c3)] {
                        conv_kernels.add(c, macs(i));
                    }

                    forward.push(ops::relu(gpu, &hs, &r1));
                    forward.extend(c1.forward.iter().cloned());
                    if let Some(t) = term(l, 0) {
                        forward.push(ops::add_into(gpu, t, &b1));
                    }
                    forward.push(ops::relu(gpu, &b1, &r2));
                    forward.extend(c2.forward.iter().cloned());
                    forward.push(ops::relu(gpu, &b2, &r3));
                    forward.extend(c3.forward.iter().cloned());
                    forward.push(ops::add_into(gpu, &b3, &hs));

                    back.extend(c3.backward());
                    if train {
                        back.push(ops::relu_backward(gpu, &gh[0], &r3, &gh[1]));
                        back.extend(c2.backward());
                        back.push(ops::relu_backward(gpu, &gh[0], &r2, &gh[1]));
                        back.extend(c1.backward());
                        back.extend(term_backward(l, 0, &gh[1]));
                        back.push(ops::relu_backward(gpu, &g2h[0], &r1, &g2h[1]));
                        back.push(ops::add_into(gpu, &g2h[1], &dh));
                    }
                }
                // h <- h + K^out ⊛ LSTM(h), into the next layer's buffer.
                Block::Recurrent { dirs, out } => {
                    let mut layer = config.rnn_layer(batch).expect("a recurrent model");
                    if let Some(Defect::RightToLeftShift(shift)) = mode.defect {
                        layer.shift = shift;
                    }
                    let param = |offset: usize, len: usize| Param {
                        value: View {
                            buffer: params_buf.clone(),
                            offset,
                            len,
                        },
                        grad: param_grads.then(|| View {
                            buffer: grads.clone(),
                            offset,
                            len,
                        }),
                    };
                    let conv_param = |i: usize| param(layout.offsets[i], layout.convs[i].len());
                    let vector = |i: usize| param(layout.vectors[i].offset, layout.vectors[i].len);
                    let dir_params: Vec<_> = dirs
                        .iter()
                        .map(|d| DirectionParams {
                            kis: conv_param(d.kis),
                            kss: vector(d.kss),
                            init: vector(d.init),
                        })
                        .collect();
                    let next = maps(&format!("x{}", l + 1), 2 * h);
                    let op = LayerOp::new(
                        gpu,
                        &layer,
                        &LayerBuffers {
                            x: &hs,
                            y: &next,
                            dirs: &dir_params,
                            out: &conv_param(*out),
                            dstream: Some(&dh).filter(|_| train),
                            scratch: Some(&g2h[0]).filter(|_| train),
                            cond: cond.as_ref().map_or(&[], |c| &c.terms[l]),
                        },
                    );
                    for (shape, c) in &op.convs {
                        conv_kernels.add(c, shape.macs(p));
                    }
                    forward.extend(op.forward);
                    back.extend(op.backward);
                    for (d, dpre) in op.dpre.iter().enumerate() {
                        if train {
                            back.extend(term_backward(l, d, dpre));
                        }
                    }
                    hs = next;
                }
            }
            block_backward.push(back);
        }

        // Output stack: logits = W_out2 ReLU(W_out1 ReLU(h)).
        let n = layout.convs.len();
        let ro = maps("ro", 2 * h);
        let o1 = maps("o1", config.out_hidden);
        let ro2 = maps("ro2", config.out_hidden);
        let out1 = conv(n - 2, &ro, &o1, Some(&go[1]), Some(&g2h[0]));
        let out2 = conv(n - 1, &ro2, &logits, Some(&dlogits), Some(&go[0]));
        conv_kernels.add(&out1, macs(n - 2));
        conv_kernels.add(&out2, macs(n - 1));
        forward.push(ops::relu(gpu, &hs, &ro));
        forward.extend(out1.forward.iter().cloned());
        forward.push(ops::relu(gpu, &o1, &ro2));
        forward.extend(out2.forward.iter().cloned());

        let rows = p * c;
        let loss = vec![
            ops::softmax_nll(gpu, &logits, &target, &nll, &dlogits, 1.0 / rows as f32),
            ops::sum_all(gpu, &nll, &View::whole(&loss_sum), true),
        ];

        if train {
            backward.extend(out2.backward());
            backward.push(ops::relu_backward(gpu, &go[0], &ro2, &go[1]));
            backward.extend(out1.backward());
            backward.push(ops::relu_backward(gpu, &g2h[0], &ro, &dh));
            for back in block_backward.into_iter().rev() {
                backward.extend(back);
            }
            backward.append(&mut first_backward);
            if let Some(c) = &cond {
                backward.extend(c.backward.iter().cloned());
            }
        }

        let optimizer = mode.optimizer.map(|o| {
            let whole = |b: &wgpu::Buffer| View::whole(b);
            OptimizerOp::new(
                gpu,
                o,
                &whole(&params_buf),
                &whole(&grads),
                &whole(&moments[0]),
                &whole(&moments[1]),
            )
        });

        Ok(Self {
            gpu: gpu.clone(),
            config,
            batch,
            layout,
            params: params_buf,
            grads,
            moments,
            input: input.buffer,
            target: target.buffer,
            small: cond.as_ref().map(|c| c.small.buffer.clone()),
            dsmall: cond
                .as_ref()
                .and_then(|c| c.dsmall.as_ref().map(|v| v.buffer.clone())),
            cond_forward,
            cond_terms: cond.map_or(Vec::new(), |c| c.terms),
            logits: logits.buffer,
            nll: nll.buffer,
            dlogits: dlogits.buffer,
            dinput: dinput.buffer,
            loss_sum,
            forward,
            loss,
            backward,
            optimizer,
            step: 0,
            conv_kernels,
        })
    }

    /// The GPU this network runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The forward pass's launches (logits only), to record with others.
    pub fn forward_dispatches(&self) -> &[Dispatch] {
        &self.forward
    }

    /// The encoded input `[batch, H, W, C]`, which samplers write into.
    pub fn input_view(&self) -> View {
        View::whole(&self.input)
    }

    /// Uploads `images` `[batch, H, W, C]` as the input and the targets.
    pub fn set_images(&self, images: &[u8]) -> Result<(), Error> {
        let expected = self.batch * self.config.dims();
        if images.len() != expected {
            return Err(Error::Data(format!(
                "batch of {} bytes given, the network takes {expected}",
                images.len()
            )));
        }
        let q = &self.gpu.queue;
        q.write_buffer(&self.input, 0, bytemuck::cast_slice(&encode_input(images)));
        let target: Vec<u32> = images.iter().map(|&v| v as u32).collect();
        q.write_buffer(&self.target, 0, bytemuck::cast_slice(&target));
        Ok(())
    }

    /// Uploads a conditional model's small images `[batch, s, s, C]`.
    pub fn set_small(&self, small: &[u8]) -> Result<(), Error> {
        let (Some(buffer), Some(s)) = (&self.small, self.config.small) else {
            return Err(Error::Config(
                "small images given to a model that is not conditioned on any".into(),
            ));
        };
        let expected = self.batch * s * s * self.config.channels;
        if small.len() != expected {
            return Err(Error::Data(format!(
                "batch of {} small-image bytes given, the network takes {expected}",
                small.len()
            )));
        }
        let q = &self.gpu.queue;
        q.write_buffer(buffer, 0, bytemuck::cast_slice(&encode_input(small)));
        Ok(())
    }

    /// Uploads `images` as [`Network::set_images`] does and, for a conditional model,
    /// their subsampled small images: the images' own conditioning, as in training.
    pub fn set_batch(&self, images: &[u8]) -> Result<(), Error> {
        self.set_images(images)?;
        if let Some(s) = self.config.small {
            let c = self.config;
            self.set_small(&crate::model::subsample(images, c.size, c.channels, s))?;
        }
        Ok(())
    }

    /// A conditional model's launches that compute [`Network::cond_terms`] from the
    /// small images (empty for an unconditional model).
    pub fn cond_dispatches(&self) -> &[Dispatch] {
        &self.cond_forward
    }

    /// Submits the forward pass and the loss (NLL per sub-pixel into [`Network::nll`]).
    pub fn forward(&self) {
        gpu::submit(&self.gpu, &[&self.forward, &self.loss]);
    }

    /// Submits the forward pass alone (logits only).
    pub fn forward_logits(&self) {
        gpu::submit(&self.gpu, &[&self.forward]);
    }

    /// Submits one training step on the current images: forward, loss, backward and
    /// the optimizer update, in one command buffer. The loss is added to
    /// [`Network::loss_sum`] on the GPU; nothing is read back.
    pub fn train_step(&mut self) {
        let opt = self
            .optimizer
            .as_ref()
            .expect("network built without an optimizer");
        self.step += 1;
        opt.prepare(&self.gpu, self.step);
        gpu::submit(
            &self.gpu,
            &[
                &self.forward,
                &self.loss,
                &self.backward,
                std::slice::from_ref(&opt.dispatch),
            ],
        );
    }

    /// The forward and backward passes from the gradient now in [`Network::dlogits`]
    /// (no loss, no update).
    pub fn backward_from_dlogits(&self) {
        gpu::submit(&self.gpu, &[&self.forward, &self.backward]);
    }

    /// The forward pass, the loss and the backward pass, without an update.
    pub fn loss_and_grad(&self) {
        gpu::submit(&self.gpu, &[&self.forward, &self.loss, &self.backward]);
    }

    /// Optimizer steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Sets the optimizer step count (when resuming).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// Reads the mean NLL (nats per sub-pixel) over the steps since the last call and
    /// resets the running sum: the one readback of training.
    pub async fn take_mean_loss(&self, steps: u64) -> Result<f64, Error> {
        let sum = self.gpu.read(&self.loss_sum, 0, 1).await?[0] as f64;
        self.gpu
            .queue
            .write_buffer(&self.loss_sum, 0, bytemuck::bytes_of(&0.0f32));
        let rows = (self.batch * self.config.dims()) as f64;
        Ok(sum / (rows * steps.max(1) as f64))
    }

    /// Copies the parameters of `other` (same configuration) on the GPU.
    pub fn copy_params_from(&self, other: &Network) {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&other.params, 0, &self.params, 0, self.params.size());
        self.gpu.queue.submit([encoder.finish()]);
    }

    /// NLL in nats of every sub-pixel of `images` (`[N, H, W, C]`, any N; for a
    /// conditional model, given their own subsampled small images), batch by batch; the last batch is padded with copies of its first image, whose losses
    /// are dropped. `progress(done, total)` is called after each batch.
    pub async fn nll_of(
        &self,
        images: &[u8],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>, Error> {
        let dims = self.config.dims();
        let n = crate::model::check_images(&self.config, images.len())?;
        let mut out = Vec::with_capacity(n * dims);
        for (done, chunk) in images.chunks(self.batch * dims).enumerate() {
            let mut batch = chunk.to_vec();
            while batch.len() < self.batch * dims {
                batch.extend_from_slice(&chunk[..dims]);
            }
            self.set_batch(&batch)?;
            self.forward();
            out.extend(self.gpu.read(&self.nll, 0, chunk.len()).await?);
            progress(((done + 1) * self.batch).min(n), n);
        }
        Ok(out)
    }

    /// Reads the packed parameters.
    pub async fn read_params(&self) -> Result<Vec<f32>, Error> {
        self.gpu.read(&self.params, 0, self.layout.len).await
    }

    /// Reads the optimizer moments (m, v).
    pub async fn read_moments(&self) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let m = self.gpu.read_all(&self.moments[0]).await?;
        let v = self.gpu.read_all(&self.moments[1]).await?;
        Ok((m, v))
    }

    /// Overwrites the optimizer moments (when resuming).
    pub fn write_moments(&self, m: &[f32], v: &[f32]) -> Result<(), Error> {
        for (buf, data) in self.moments.iter().zip([m, v]) {
            if (buf.size() / 4) as usize != data.len() {
                return Err(Error::Config(format!(
                    "optimizer state has {} values, the network needs {}",
                    data.len(),
                    buf.size() / 4
                )));
            }
            self.gpu
                .queue
                .write_buffer(buf, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }
}

/// A conditional model's conditioning on the GPU: the upsampling of the small images
/// (transposed convolutions, each followed by a ReLU) and each block's 1x1
/// convolutions of the result, the terms.
#[derive(Debug)]
struct Conditioning {
    /// Encoded small images `[B, s, s, C]`.
    small: View,
    /// Their gradient (for tests of causality).
    dsmall: Option<View>,
    /// The upsampled maps `[B, n, n, h]` the terms read, and their gradient.
    up: View,
    dup: View,
    /// Scratch for the gradient of one term's input.
    scratch: View,
    /// Per block and LSTM direction, the term `[P, ch]`.
    terms: Vec<Vec<View>>,
    /// The upsampling and the terms.
    forward: Vec<Dispatch>,
    /// The backward pass through the upsampling, once every term's has run.
    backward: Vec<Dispatch>,
    grid: crate::conv::Grid,
    params: wgpu::Buffer,
    grads: Option<wgpu::Buffer>,
}

impl Conditioning {
    fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        layout: &ParamLayout,
        batch: usize,
        (params, grads): (&wgpu::Buffer, &wgpu::Buffer),
        mode: Mode,
    ) -> Self {
        let s = config.small.expect("a conditional model");
        let grid = config.grid(batch);
        let param_grads = mode.optimizer.is_some() || mode.param_grads;
        let train = param_grads || mode.input_grad;
        let maps = |label: &str, len: usize| View::whole(&gpu.zeros(label, len));
        let grad_maps = |label: &str, len: usize| maps(label, if train { len } else { 1 });
        let window = |buffer: &wgpu::Buffer, offset: usize, len: usize| View {
            buffer: buffer.clone(),
            offset,
            len,
        };
        let c = config.channels;
        let small = maps("small", batch * s * s * c);
        let dsmall = mode.input_grad.then(|| maps("dsmall", batch * s * s * c));

        // u_j = ReLU(deconv_j(u_{j-1})), u_0 the small images.
        let mut forward = Vec::new();
        let mut backward = Vec::new();
        let (mut x, mut dx) = (small.clone(), dsmall.clone());
        let mut n = s;
        for (j, d) in config.upsampling().iter().enumerate() {
            let m = 2 * n;
            let len = batch * m * m * d.out_ch;
            let (pre, u) = (maps("up pre", len), maps("up", len));
            let (dpre, du) = (grad_maps("dup pre", len), grad_maps("dup", len));
            let offset = layout.vectors[layout.upsampling[j]].offset;
            let dparams = window(grads, offset, d.len());
            let op = DeconvOp::new(
                gpu,
                d,
                batch,
                n,
                &DeconvBuffers {
                    x: &x,
                    params: &window(params, offset, d.len()),
                    y: &pre,
                    dy: Some(&dpre).filter(|_| train),
                    dparams: Some(&dparams).filter(|_| param_grads),
                    dx: dx.as_ref().filter(|_| train),
                },
            );
            forward.push(op.forward);
            forward.push(ops::relu(gpu, &pre, &u));
            if train {
                let mut back = vec![ops::relu_backward(gpu, &du, &u, &dpre)];
                back.extend(op.backward);
                backward.splice(0..0, back);
            }
            (x, dx, n) = (u, Some(du), m);
        }
        let (up, dup) = (x, dx.expect("at least one upsampling layer"));

        let mut terms = Vec::new();
        for convs in &layout.cond {
            let mut block = Vec::new();
            for &i in convs {
                let t = maps("term", grid.pixels() * layout.convs[i].shape.out_ch);
                let op = ConvOp::new(
                    gpu,
                    &layout.convs[i],
                    grid,
                    &ConvBuffers {
                        x: &up,
                        params: &window(params, layout.offsets[i], layout.convs[i].len()),
                        y: &t,
                        dy: None,
                        dparams: None,
                        dx: None,
                    },
                );
                forward.extend(op.forward.iter().cloned());
                block.push(t);
            }
            terms.push(block);
        }
        Self {
            small,
            dsmall,
            scratch: grad_maps("dup scratch", up.len),
            up,
            dup,
            terms,
            forward,
            backward,
            grid,
            params: params.clone(),
            grads: param_grads.then(|| grads.clone()),
        }
    }

    /// The backward pass of term `(l, d)` (block, direction) from its gradient `dy`:
    /// its weight gradients, and its input's gradient into that of the upsampled
    /// maps, which the `first` term to run starts and the others add to.
    fn term_backward(
        &self,
        gpu: &Gpu,
        layout: &ParamLayout,
        (l, d): (usize, usize),
        dy: &View,
        first: bool,
    ) -> Vec<Dispatch> {
        let i = layout.cond[l][d];
        let window = |buffer: &wgpu::Buffer| View {
            buffer: buffer.clone(),
            offset: layout.offsets[i],
            len: layout.convs[i].len(),
        };
        let dparams = self.grads.as_ref().map(window);
        let dx = if first { &self.dup } else { &self.scratch };
        let op = ConvOp::new(
            gpu,
            &layout.convs[i],
            self.grid,
            &ConvBuffers {
                x: &self.up,
                params: &window(&self.params),
                y: &self.terms[l][d],
                dy: Some(dy),
                dparams: dparams.as_ref(),
                dx: Some(dx),
            },
        );
        let mut back = op.backward();
        if !first {
            back.push(ops::add_into(gpu, &self.scratch, &self.dup));
        }
        back
    }
}
