//! The GPU runtime: device, compiled kernels, buffers, dispatches and readback.
//!
//! Nothing here blocks on the GPU: readback is an `async fn` that a native caller
//! drives with `pollster` and a browser with its event loop.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::Error;

/// Source of every WGSL file, compiled into the library so native and browser builds
/// run the same text.
pub mod shaders {
    /// Masked convolution forward (and the transposed pass for input gradients).
    pub const CONV: &str = include_str!("../../shaders/conv.wgsl");
    /// Weight gradients, their reduction and masking, and the weight transpose.
    pub const CONV_GRAD: &str = include_str!("../../shaders/conv_grad.wgsl");
    /// ReLU, its gradient, residual add.
    pub const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
    /// Softmax cross-entropy and the loss sum.
    pub const SOFTMAX: &str = include_str!("../../shaders/softmax.wgsl");
    /// RMSProp and Adam.
    pub const OPTIM: &str = include_str!("../../shaders/optim.wgsl");
    /// Convolution forward and weight gradient sharing operands across a subgroup.
    pub const CONV_SUBGROUP: &str = include_str!("../../shaders/conv_subgroup.wgsl");

    /// The LSTM scan of the Row LSTM and Diagonal BiLSTM, forward and backward.
    pub const LSTM: &str = include_str!("../../shaders/lstm.wgsl");

    /// Skew and unskew of the Diagonal BiLSTM.
    pub const SKEW: &str = include_str!("../../shaders/skew.wgsl");

    /// Categorical draws and the sampling cursor.
    pub const SAMPLE: &str = include_str!("../../shaders/sample.wgsl");

    /// A masked convolution at the sampling cursor's pixel.
    pub const INCREMENTAL: &str = include_str!("../../shaders/incremental.wgsl");

    /// A whole step of the incremental PixelCNN sampler: every convolution at the
    /// cursor's pixel and the draw, in one launch. It follows `sample.wgsl`, whose
    /// bindings and functions it uses.
    pub const PIXELCNN_STEP: &str = concat!(
        include_str!("../../shaders/sample.wgsl"),
        include_str!("../../shaders/pixelcnn_step.wgsl")
    );

    /// Transposed convolution forward and backward (the multi-scale upsampling).
    pub const DECONV: &str = include_str!("../../shaders/deconv.wgsl");

    /// Every shader, named by file, for validation.
    pub const ALL: [(&str, &str); 12] = [
        ("conv.wgsl", CONV),
        ("conv_grad.wgsl", CONV_GRAD),
        ("conv_subgroup.wgsl", CONV_SUBGROUP),
        ("elementwise.wgsl", ELEMENTWISE),
        ("softmax.wgsl", SOFTMAX),
        ("optim.wgsl", OPTIM),
        ("lstm.wgsl", LSTM),
        ("skew.wgsl", SKEW),
        ("sample.wgsl", SAMPLE),
        ("incremental.wgsl", INCREMENTAL),
        ("pixelcnn_step.wgsl", PIXELCNN_STEP),
        ("deconv.wgsl", DECONV),
    ];
}

/// Every compute pipeline the models use, compiled once per device.
#[derive(Debug)]
pub struct Kernels {
    pub(crate) conv_forward: wgpu::ComputePipeline,
    /// Present when the device has subgroups of at least 8 lanes.
    pub(crate) conv_forward_subgroup: Option<wgpu::ComputePipeline>,
    pub(crate) conv_weight_grad_subgroup: Option<wgpu::ComputePipeline>,
    pub(crate) conv_weight_grad: wgpu::ComputePipeline,
    pub(crate) conv_bias_grad: wgpu::ComputePipeline,
    pub(crate) conv_weight_grad_reduce: wgpu::ComputePipeline,
    pub(crate) conv_transpose_weights: wgpu::ComputePipeline,
    pub(crate) relu: wgpu::ComputePipeline,
    pub(crate) relu_backward: wgpu::ComputePipeline,
    pub(crate) add_into: wgpu::ComputePipeline,
    pub(crate) softmax_nll: wgpu::ComputePipeline,
    pub(crate) sum_all: wgpu::ComputePipeline,
    pub(crate) rmsprop: wgpu::ComputePipeline,
    pub(crate) adam: wgpu::ComputePipeline,
    pub(crate) lstm_step: wgpu::ComputePipeline,
    pub(crate) lstm_row_step_at: wgpu::ComputePipeline,
    pub(crate) lstm_diag_step_at: wgpu::ComputePipeline,
    pub(crate) lstm_diag_rl_step_at: wgpu::ComputePipeline,
    pub(crate) lstm_step_backward: wgpu::ComputePipeline,
    pub(crate) lstm_kss_grad: wgpu::ComputePipeline,
    pub(crate) lstm_init_grad: wgpu::ComputePipeline,
    pub(crate) skew: wgpu::ComputePipeline,
    pub(crate) unskew: wgpu::ComputePipeline,
    pub(crate) draw: wgpu::ComputePipeline,
    pub(crate) advance: wgpu::ComputePipeline,
    pub(crate) conv_at: wgpu::ComputePipeline,
    pub(crate) diag_sum_at: wgpu::ComputePipeline,
    pub(crate) pixelcnn_step: wgpu::ComputePipeline,
    pub(crate) deconv_forward: wgpu::ComputePipeline,
    pub(crate) deconv_input_grad: wgpu::ComputePipeline,
    pub(crate) deconv_weight_grad: wgpu::ComputePipeline,
}

/// A device, its queue and the compiled kernels. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gpu {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Adapter name and backend, for logs and benchmarks.
    pub adapter_info: wgpu::AdapterInfo,
    pub(crate) kernels: Arc<Kernels>,
}

/// Choices made when opening the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    /// Use the subgroup variants of the convolution kernels where the device has
    /// subgroups of at least 8 lanes (else the portable kernels run).
    pub subgroups: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self { subgroups: true }
    }
}

impl Gpu {
    /// Opens the default adapter (honouring `WGPU_BACKEND` and friends) and compiles
    /// every kernel, using subgroups where the device has them.
    pub async fn new() -> Result<Self, Error> {
        Self::with_options(GpuOptions::default()).await
    }

    /// Opens the default adapter with `options`.
    pub async fn with_options(options: GpuOptions) -> Result<Self, Error> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter: {e}")))?;
        let adapter_info = adapter.get_info();
        log::info!(
            "adapter: {} ({:?})",
            adapter_info.name,
            adapter_info.backend
        );

        let supported = adapter.limits();
        // WebGPU's default of 8 storage buffers per stage: the LSTM steps bind 7.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: supported.max_storage_buffer_binding_size,
            max_buffer_size: supported.max_buffer_size,
            max_storage_buffers_per_shader_stage: 8,
            ..wgpu::Limits::downlevel_defaults()
        };
        let subgroups = options.subgroups
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && adapter_info.subgroup_min_size >= 8;
        let required_features = if subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("pixelrnn"),
                required_features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open device: {e}")))?;
        log::info!("subgroup kernels: {subgroups}");
        let kernels = Arc::new(Kernels::new(&device, subgroups));
        Ok(Self {
            device,
            queue,
            adapter_info,
            kernels,
        })
    }

    /// Whether the subgroup variants of the convolution kernels are in use.
    pub fn subgroups(&self) -> bool {
        self.kernels.conv_forward_subgroup.is_some()
    }

    /// A storage buffer holding `data`.
    pub fn buffer_from(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: STORAGE,
            })
    }

    /// A zeroed storage buffer of `len` f32 (or u32) values.
    pub fn zeros(&self, label: &str, len: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len.max(4) * 4) as u64,
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `value`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// Copies `len` f32 values starting at `offset` (in values) out of `buffer`.
    pub async fn read(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<f32>, Error> {
        let bytes = self.read_ranges(buffer, &[(offset, len)]).await?;
        Ok(bytes.into_iter().next().unwrap_or_default())
    }

    /// Reads the whole of `buffer` as f32 values.
    pub async fn read_all(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>, Error> {
        self.read(buffer, 0, (buffer.size() / 4) as usize).await
    }

    /// Copies several `(offset, len)` ranges (in f32 values) of `buffer` back in one
    /// submission.
    pub async fn read_ranges(
        &self,
        buffer: &wgpu::Buffer,
        ranges: &[(usize, usize)],
    ) -> Result<Vec<Vec<f32>>, Error> {
        let total: usize = ranges.iter().map(|r| r.1).sum();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (total.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let mut at = 0u64;
        for &(offset, len) in ranges {
            let size = (len * 4) as u64;
            encoder.copy_buffer_to_buffer(buffer, (offset * 4) as u64, &staging, at, size);
            at += size;
        }
        self.queue.submit([encoder.finish()]);

        let (sender, receiver) = futures_channel::oneshot::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                let _ = sender.send(result);
            });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device lost while reading back: {e}")))?;
        receiver
            .await
            .map_err(|_| Error::Gpu("readback was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;

        let mapped = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        let values: &[f32] = bytemuck::cast_slice(&mapped);
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for &(_, len) in ranges {
            out.push(values[at..at + len].to_vec());
            at += len;
        }
        drop(mapped);
        staging.unmap();
        Ok(out)
    }
}

/// Usage of every storage buffer: kernels read and write it, the host fills and reads it.
pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Kernels {
    fn new(device: &wgpu::Device, subgroups: bool) -> Self {
        let module = |label: &str, source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        // The convolution kernels clamp or guard every index themselves, so wgpu's
        // per-access bounds checks are left out of their inner loops.
        let unchecked = |label: &str, source: &str| {
            // SAFETY: every storage index in conv.wgsl and conv_subgroup.wgsl is
            // clamped to its array or guarded by a bounds test before use.
            unsafe {
                device.create_shader_module_trusted(
                    wgpu::ShaderModuleDescriptor {
                        label: Some(label),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    },
                    wgpu::ShaderRuntimeChecks::unchecked(),
                )
            }
        };
        let conv = unchecked("conv", shaders::CONV);
        let conv_subgroup = subgroups.then(|| unchecked("conv_subgroup", shaders::CONV_SUBGROUP));
        let conv_grad = module("conv_grad", shaders::CONV_GRAD);
        let elementwise = module("elementwise", shaders::ELEMENTWISE);
        let softmax = module("softmax", shaders::SOFTMAX);
        let optim = module("optim", shaders::OPTIM);
        let lstm = module("lstm", shaders::LSTM);
        let skew = module("skew", shaders::SKEW);
        let sample = module("sample", shaders::SAMPLE);
        let incremental = module("incremental", shaders::INCREMENTAL);
        let pixelcnn_step = module("pixelcnn_step", shaders::PIXELCNN_STEP);
        let deconv = module("deconv", shaders::DECONV);
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Self {
            conv_forward: pipeline(&conv, "conv_forward"),
            conv_forward_subgroup: conv_subgroup
                .as_ref()
                .map(|m| pipeline(m, "conv_forward_subgroup")),
            conv_weight_grad_subgroup: conv_subgroup
                .as_ref()
                .map(|m| pipeline(m, "conv_weight_grad_subgroup")),
            conv_weight_grad: pipeline(&conv_grad, "conv_weight_grad"),
            conv_bias_grad: pipeline(&conv_grad, "conv_bias_grad"),
            conv_weight_grad_reduce: pipeline(&conv_grad, "conv_weight_grad_reduce"),
            conv_transpose_weights: pipeline(&conv_grad, "conv_transpose_weights"),
            relu: pipeline(&elementwise, "relu"),
            relu_backward: pipeline(&elementwise, "relu_backward"),
            add_into: pipeline(&elementwise, "add_into"),
            softmax_nll: pipeline(&softmax, "softmax_nll"),
            sum_all: pipeline(&softmax, "sum_all"),
            rmsprop: pipeline(&optim, "rmsprop"),
            adam: pipeline(&optim, "adam"),
            lstm_step: pipeline(&lstm, "lstm_step"),
            lstm_row_step_at: pipeline(&lstm, "lstm_row_step_at"),
            lstm_diag_step_at: pipeline(&lstm, "lstm_diag_step_at"),
            lstm_diag_rl_step_at: pipeline(&lstm, "lstm_diag_rl_step_at"),
            lstm_step_backward: pipeline(&lstm, "lstm_step_backward"),
            lstm_kss_grad: pipeline(&lstm, "lstm_kss_grad"),
            lstm_init_grad: pipeline(&lstm, "lstm_init_grad"),
            skew: pipeline(&skew, "skew"),
            unskew: pipeline(&skew, "unskew"),
            draw: pipeline(&sample, "draw"),
            advance: pipeline(&sample, "advance"),
            conv_at: pipeline(&incremental, "conv_at"),
            diag_sum_at: pipeline(&incremental, "diag_sum_at"),
            pixelcnn_step: pipeline(&pixelcnn_step, "pixelcnn_step"),
            deconv_forward: pipeline(&deconv, "deconv_forward"),
            deconv_input_grad: pipeline(&deconv, "deconv_input_grad"),
            deconv_weight_grad: pipeline(&deconv, "deconv_weight_grad"),
        }
    }
}

/// A buffer, or a window of one, bound to a kernel.
#[derive(Debug, Clone)]
pub struct View {
    /// The buffer.
    pub buffer: wgpu::Buffer,
    /// Offset in f32 values; a multiple of 64 (256 bytes) when not zero.
    pub offset: usize,
    /// Length in f32 values.
    pub len: usize,
}

impl View {
    /// The whole of `buffer`.
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Self {
            buffer: buffer.clone(),
            offset: 0,
            len: (buffer.size() / 4) as usize,
        }
    }

    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: (self.offset * 4) as u64,
            size: wgpu::BufferSize::new((self.len.max(1) * 4) as u64),
        })
    }
}

/// One recorded kernel launch: pipeline, bound buffers and grid.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}

impl Dispatch {
    /// Binds `uniform` at binding 0 and `views` at the bindings given with them.
    pub(crate) fn new(
        gpu: &Gpu,
        pipeline: &wgpu::ComputePipeline,
        uniform: &wgpu::Buffer,
        views: &[(u32, &View)],
        grid: [u32; 3],
    ) -> Self {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (binding, view) in views {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: view.binding(),
            });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Self {
            pipeline: pipeline.clone(),
            bind_group,
            grid,
        }
    }

    /// Records this launch into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid[0], self.grid[1], self.grid[2]);
    }
}

/// Records `dispatches` in one compute pass of one command buffer and submits it.
pub fn submit(gpu: &Gpu, dispatches: &[&[Dispatch]]) {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for list in dispatches {
            for d in *list {
                d.record(&mut pass);
            }
        }
    }
    gpu.queue.submit([encoder.finish()]);
}

/// A 2-D grid of workgroups of `size` invocations covering `n` invocations, wrapping
/// rows at 65,535 workgroups (kernels compute `x + y * 65535 * size`).
pub(crate) fn grid_1d(n: usize, size: usize) -> [u32; 3] {
    let groups = n.div_ceil(size).max(1);
    let x = groups.min(65_535);
    [x as u32, groups.div_ceil(65_535) as u32, 1]
}

/// Rounds `n` up to a multiple of `m`.
pub(crate) fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}
