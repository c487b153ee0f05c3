//! The GPU context: adapter choice (`--adapter` / `P2P_WGPU_ADAPTER`, backend by `WGPU_BACKEND`), device creation
//! with the useful optional features and the adapter's own limits, and the conversion of wgpu's error reporting
//! (error scopes, uncaptured errors, device loss) into `Result`s.
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

use super::pipeline::PipelineCache;
use super::pool::BufferPool;

pub use super::options::GpuOptions;

/// Features we use when the adapter has them.
pub const WANTED_FEATURES: [(wgpu::Features, &str); 5] = [
    (wgpu::Features::SHADER_F16, "SHADER_F16"),
    (wgpu::Features::SUBGROUP, "SUBGROUP"),
    (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
    (wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS, "TIMESTAMP_QUERY_INSIDE_ENCODERS"),
    (wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, "EXPERIMENTAL_COOPERATIVE_MATRIX"),
];

/// One cooperative-matrix configuration the adapter reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoopConfig {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ab: String,
    pub cr: String,
}

/// The device and everything the ops need to launch kernels on it.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub coop: Vec<CoopConfig>,
    pub pipelines: PipelineCache,
    pub pool: Arc<BufferPool>,
    /// First uncaptured error or device-loss message, set by wgpu's callbacks.
    fault: Arc<Mutex<Option<Error>>>,
    /// `GpuOptions::profile`: [`Gpu::run_seq`] runs and times every dispatch alone (`gpu::profile`).
    pub profile: Option<super::profile::Profile>,
    /// The options the context was opened with (the engine switches the ops read).
    pub options: GpuOptions,
    /// Messages for the user that the engine met on the way (a GEMM autotune's result); see [`Gpu::take_notes`].
    notes: Mutex<Vec<String>>,
}

impl Gpu {
    /// Leaves a message for the user (the library never prints; callers show [`Gpu::take_notes`]).
    pub fn note(&self, text: String) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(text);
        }
    }

    /// The messages left since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        self.notes.lock().map(|mut n| std::mem::take(&mut *n)).unwrap_or_default()
    }
}

fn scalar(t: wgpu::CooperativeScalarType) -> String {
    format!("{t:?}").to_lowercase()
}

impl Gpu {
    /// Opens the adapter chosen by `opts` (or `P2P_WGPU_ADAPTER`) on the backends in `WGPU_BACKEND` (default:
    /// Vulkan/Metal/DX12, then GL if none of those has an adapter).
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        if let Some(m) = &opts.invalid {
            return Err(Error::input(m.clone()));
        }
        let wanted = opts.adapter.as_deref().filter(|s| !s.is_empty());
        match opts.backends {
            Some(backends) => Self::open(backends, wanted, opts),
            // Vulkan, Metal and DX12 first; the GL backend only where none of them has an adapter.
            None => Self::open(wgpu::Backends::PRIMARY, wanted, opts)
                .or_else(|e| Self::open(wgpu::Backends::GL, wanted, opts).map_err(|_| e)),
        }
    }

    fn open(backends: wgpu::Backends, wanted: Option<&str>, opts: &GpuOptions) -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        if let Some(f) = opts.instance_flags {
            desc.flags = f;
        }
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let adapter = match wanted {
            Some(sub) => {
                let sub_l = sub.to_lowercase();
                let names: Vec<String> =
                    adapters.iter().map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend)).collect();
                adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&sub_l)).ok_or_else(|| {
                    Error::NoAdapter(format!(
                        "no adapter name contains {sub:?}; available: {}",
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ))
                })?
            }
            None => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            }))
            .map_err(|e| {
                Error::NoAdapter(format!(
                    "{e} (backends {backends:?}); install a Vulkan, Metal or DX12 driver (on Linux without a GPU: \
                     Mesa lavapipe, Debian package mesa-vulkan-drivers)"
                ))
            })?,
        };
        Self::from_adapter(adapter, opts)
    }

    fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let have = adapter.features();
        let mut features = wgpu::Features::empty();
        for (f, _) in WANTED_FEATURES {
            if have.contains(f) {
                features |= f;
            }
        }
        let coop_props = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let coop = coop_props
            .iter()
            .map(|p| CoopConfig { m: p.m_size, n: p.n_size, k: p.k_size, ab: scalar(p.ab_type), cr: scalar(p.cr_type) })
            .collect();
        let mut limits = adapter.limits();
        if let Some(cap) = opts.max_binding {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
        }
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: the experimental opt-in is required for cooperative matrices; we only use them in kernels
            // validated by naga in our tests, and fall back to portable kernels when absent.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("p2p-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::NoAdapter(format!("request_device on {}: {e}", info.name)))?;
        let fault: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let f1 = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut g = f1.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() {
                *g = Some(convert(e, "uncaptured"));
            }
        }));
        let f2 = fault.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut g = f2.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() && reason != wgpu::DeviceLostReason::Destroyed {
                *g = Some(Error::DeviceLost(format!("{reason:?}: {msg}")));
            }
        });
        Ok(Gpu {
            adapter,
            device,
            queue,
            info,
            features,
            limits,
            coop,
            pipelines: PipelineCache::default(),
            pool: Arc::new(BufferPool::default()),
            fault,
            profile: opts.profile.then(super::profile::Profile::default),
            options: opts.clone(),
            notes: Mutex::new(Vec::new()),
        })
    }

    pub fn has(&self, f: wgpu::Features) -> bool {
        self.features.contains(f)
    }

    /// True when the adapter can run f16 storage kernels.
    pub fn has_f16(&self) -> bool {
        self.has(wgpu::Features::SHADER_F16)
    }

    /// True when the adapter reports a 16×16×16 cooperative matrix with f16 inputs and f32 accumulators.
    pub fn has_coop_f16_f32(&self) -> bool {
        self.has_f16()
            && self.coop.iter().any(|c| c.m == 16 && c.n == 16 && c.k == 16 && c.ab == "f16" && c.cr == "f32")
    }

    /// Whether the cooperative-matrix kernel cores can run: 16×16×16 f16→f32 and a subgroup size fixed at 32 (the
    /// cores map 4 subgroups of 32 lanes onto their tile).
    pub fn coop_usable(&self) -> bool {
        self.has_coop_f16_f32() && self.info.subgroup_min_size == 32 && self.info.subgroup_max_size == 32
    }

    /// Returns (and clears) a fault reported through wgpu's callbacks.
    pub fn take_fault(&self) -> Result<()> {
        let mut g = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match g.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes; any error becomes `Err` naming `context`.
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o.or(v) {
            return Err(convert(e, context));
        }
        self.take_fault()?;
        Ok(out)
    }

    /// Waits until the queue is idle.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu { context: "poll".into(), message: e.to_string() })?;
        self.take_fault()
    }
}

fn convert(e: wgpu::Error, context: &str) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(context.to_string()),
        other => Error::Gpu { context: context.to_string(), message: other.to_string() },
    }
}
