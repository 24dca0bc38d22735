//! The wgpu context: adapter choice, the pipeline cache, the buffer pool and op batching.
//!
//! Kernels are not submitted one by one: each op is *recorded* (pipeline, bind group, grid) and
//! the batch is encoded into one compute pass and submitted when it grows large or when data is
//! read back. Buffers freed while a batch is open only return to the pool after it is submitted,
//! so an upload (a queue write, which runs before the batch) can never overwrite data that a
//! recorded op still has to read.
//!
//! Device failures (out of memory, a lost device, a rejected command) do not panic inside wgpu:
//! the first one is kept with the op it hit, later work is dropped, and every read-back returns
//! it as an [`Error::Device`] naming the op and its sizes, so a training run can stop cleanly.

use super::shaders::Variant;
use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Ops recorded before a batch is submitted.
const MAX_BATCH: usize = 512;
/// Bytes of kernel parameters one op may use (a slot of the parameter buffer).
const PARAM_SLOT: u64 = 256;
/// Override constants one kernel may be specialised on.
const MAX_CONSTANTS: usize = 6;

/// One GPU adapter's device, queue, compiled kernels and memory.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    profile: KernelProfile,
    /// llvmpipe on the calling thread (`LP_NUM_THREADS=0`, the engine's default there): a
    /// launch's workgroups run one after another, so splitting work across more of them buys
    /// nothing but launches.
    serial: bool,
    state: Mutex<State>,
    /// The first device failure; set by wgpu's callbacks, which may run on any thread.
    failure: Arc<Mutex<Option<Failure>>>,
    /// Bytes of the buffers tensors hold now, and the most since the last reset (pooled buffers
    /// not counted: PyTorch's `memory_allocated` and `max_memory_allocated`).
    live_bytes: AtomicU64,
    peak_bytes: AtomicU64,
}

/// What went wrong on the device, and in which op (filled in by the launch or upload that
/// needed the failed allocation or command).
struct Failure {
    what: String,
    op: Option<String>,
}

/// Which kernel set runs where both exist. CPU-backed drivers (lavapipe, WARP, SwiftShader) run
/// barrier-free kernels fastest, one invocation per output block; GPUs want workgroups that
/// share tiles through workgroup memory. Chosen from the adapter's device type, overridden by
/// `SELFSUP_GPU_KERNELS=software|hardware` (so that CI's lavapipe runs both), and per thread by
/// [`with_kernel_profile`] (so that one test can check both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelProfile {
    Software,
    Hardware,
}

impl KernelProfile {
    fn from_env() -> std::result::Result<Option<KernelProfile>, String> {
        match std::env::var("SELFSUP_GPU_KERNELS").as_deref() {
            Err(_) | Ok("") => Ok(None),
            Ok("software") => Ok(Some(KernelProfile::Software)),
            Ok("hardware") => Ok(Some(KernelProfile::Hardware)),
            Ok(other) => Err(format!(
                "SELFSUP_GPU_KERNELS={other}: expected software or hardware"
            )),
        }
    }
}

thread_local! {
    static PROFILE: std::cell::Cell<Option<KernelProfile>> = const { std::cell::Cell::new(None) };
    static SUBGROUPS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with `profile`'s kernels on the calling thread, whatever the adapter's default.
pub fn with_kernel_profile<R>(profile: KernelProfile, f: impl FnOnce() -> R) -> R {
    let before = PROFILE.with(|p| p.replace(Some(profile)));
    let out = f();
    PROFILE.with(|p| p.set(before));
    out
}

/// Runs `f` with kernels that use subgroup operations allowed (`on`, the default) or not on the
/// calling thread, so that one test can check both paths on an adapter that has subgroups.
pub fn with_subgroups<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = SUBGROUPS.with(|s| s.replace(on));
    let out = f();
    SUBGROUPS.with(|s| s.set(before));
    out
}

/// Work the calling thread handed to the device. The difference of two snapshots is what the code
/// between them cost in launches, submissions and host↔device traffic (a training step's dispatch
/// count, or the bytes it uploads); counting per thread keeps other threads' work (a loader,
/// concurrent tests) out of it. A submission, with its batch's kernel parameters, counts for the
/// thread that triggers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Kernel launches recorded.
    pub dispatches: u64,
    /// Bind groups created for them (the other launches reused a cached one).
    pub bind_groups: u64,
    /// Command buffers submitted to the queue.
    pub submits: u64,
    /// Queue writes of data from the host (tensors, index tables); kernel parameters apart.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Kernel parameter bytes written with each submission (one slot per launch).
    pub param_bytes: u64,
    /// Reads back to the host, each of which waits for the device.
    pub readbacks: u64,
    pub readback_bytes: u64,
}

impl std::ops::Sub for GpuCounters {
    type Output = GpuCounters;
    fn sub(self, o: GpuCounters) -> GpuCounters {
        GpuCounters {
            dispatches: self.dispatches - o.dispatches,
            bind_groups: self.bind_groups - o.bind_groups,
            submits: self.submits - o.submits,
            uploads: self.uploads - o.uploads,
            upload_bytes: self.upload_bytes - o.upload_bytes,
            param_bytes: self.param_bytes - o.param_bytes,
            readbacks: self.readbacks - o.readbacks,
            readback_bytes: self.readback_bytes - o.readback_bytes,
        }
    }
}

/// What a bind group binds: the pipeline's layout, the parameter slot, the buffers in order.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    offset: u64,
    buffers: Vec<wgpu::Buffer>,
}

/// Bind groups kept at most; the cache starts again when full (a step needs a few hundred).
const MAX_BIND_GROUPS: usize = 8192;

struct Recorded {
    kernel: &'static str,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}

struct State {
    /// Compiled kernels by name, source variant (see `shaders::Variant`) and override constants.
    pipelines: HashMap<(&'static str, Variant, [u32; MAX_CONSTANTS]), Arc<wgpu::ComputePipeline>>,
    /// Idle buffers by size, handed out in a fixed order (wgpu orders buffers by id), so that a
    /// program that allocates the same way twice gets the same buffers twice: the bind-group
    /// cache below relies on it.
    pool: HashMap<u64, BTreeSet<wgpu::Buffer>>,
    /// Bind groups by pipeline, parameter slot and buffers: a training step launches the same
    /// kernels on the same pooled buffers every time, so after the first step most launches
    /// find theirs here instead of creating one.
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    /// Freed during the open batch; pooled again after it is submitted.
    pending_free: Vec<wgpu::Buffer>,
    ops: Vec<Recorded>,
    /// Parameter bytes of the open batch, one aligned slot per op.
    params: Vec<u8>,
    params_buf: wgpu::Buffer,
    slot: u64,
    timing: Option<Timing>,
    /// The last kernel recorded and its grid, named when a read-back finds the device lost.
    last: Option<(&'static str, [u32; 3])>,
}

/// Per-kernel device time from timestamp queries around every launch (`SELFSUP_GPU_PROFILE=1`
/// on an adapter with timestamps inside compute passes). Each submission then waits for its
/// timestamps, so profiled runs are slower end to end; the kernel times themselves are the
/// device's.
struct Timing {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Launches and nanoseconds per kernel since the last [`GpuContext::take_kernel_times`].
    totals: HashMap<&'static str, (u64, f64)>,
}

impl Timing {
    fn new(device: &wgpu::Device) -> Timing {
        let count = 2 * MAX_BATCH as u32;
        let bytes = 8 * count as u64;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Timing {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel times"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: buffer(
                "timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "timestamps readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            totals: HashMap::new(),
        }
    }
}

thread_local! {
    static COUNTERS: std::cell::Cell<GpuCounters> = const {
        std::cell::Cell::new(GpuCounters {
            dispatches: 0,
            bind_groups: 0,
            submits: 0,
            uploads: 0,
            upload_bytes: 0,
            param_bytes: 0,
            readbacks: 0,
            readback_bytes: 0,
        })
    };
}

/// Adds to the calling thread's counters.
fn count(f: impl FnOnce(&mut GpuCounters)) {
    COUNTERS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

static SHARED: OnceLock<std::result::Result<Arc<GpuContext>, String>> = OnceLock::new();

impl GpuContext {
    /// The process-wide context on the best adapter (discrete > integrated > virtual > software).
    /// With `hardware_only`, a software adapter counts as none.
    pub fn shared(hardware_only: bool) -> Result<Arc<GpuContext>> {
        let ctx = SHARED
            .get_or_init(|| GpuContext::create().map(Arc::new))
            .clone()
            .map_err(Error::Device)?;
        if hardware_only && ctx.is_software() {
            return Err(Error::Device(format!(
                "only a software adapter is present ({})",
                ctx.adapter_name()
            )));
        }
        Ok(ctx)
    }

    /// The process-wide context if something has opened it.
    pub fn shared_if_open() -> Option<Arc<GpuContext>> {
        SHARED.get().and_then(|r| r.as_ref().ok().cloned())
    }

    fn create() -> std::result::Result<GpuContext, String> {
        let forced = KernelProfile::from_env()?;
        // llvmpipe (lavapipe) runs compute on its own worker threads by default; on the calling
        // thread each launch costs ~6 µs instead of ~70 µs, while large kernels run slower (the
        // SimCLR step at batch 128: 5.5 s against 3.6 s with two threads; BENCHMARKS.md). An
        // explicit LP_NUM_THREADS from the user wins.
        if std::env::var_os("LP_NUM_THREADS").is_none() {
            std::env::set_var("LP_NUM_THREADS", "0");
        }
        // No validation layers by default (they are slow); WGPU_* variables can still enable them.
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.flags = wgpu::InstanceFlags::empty();
        let instance = wgpu::Instance::new(desc.with_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        let adapter = adapters
            .into_iter()
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .min_by_key(rank)
            .ok_or_else(|| {
                "no GPU adapter with compute shaders found (on Linux without a GPU, install Mesa's \
                 lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)"
                    .to_string()
            })?;
        let info = adapter.get_info();
        let profile = forced.unwrap_or(if info.device_type == wgpu::DeviceType::Cpu {
            KernelProfile::Software
        } else {
            KernelProfile::Hardware
        });
        let limits = adapter.limits();
        let features = adapter.features();
        let timestamps =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let profiling = std::env::var("SELFSUP_GPU_PROFILE").is_ok_and(|v| v == "1");
        if profiling && !features.contains(timestamps) {
            return Err(format!(
                "SELFSUP_GPU_PROFILE=1: {} has no timestamp queries inside compute passes",
                info.name
            ));
        }
        // f16 storage is used only where asked for (`autocast`), but costs nothing to enable.
        let mut required = features & (wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP);
        if profiling {
            required |= timestamps;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("selfsup"),
            required_features: required,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| format!("could not open {}: {e}", info.name))?;
        let failure = Arc::new(Mutex::new(None));
        let f = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let what = match e {
                wgpu::Error::OutOfMemory { .. } => "out of memory".to_string(),
                wgpu::Error::Validation { description, .. }
                | wgpu::Error::Internal { description, .. } => one_line(&description),
            };
            keep_first(&f, what);
        }));
        let f = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            // The loss is the cause of whatever failed before it was reported (work on a lost
            // device meets invalid buffers first), so it replaces that.
            let what = format!("device lost ({reason:?}) {message}")
                .trim()
                .to_string();
            let mut kept = f.lock().unwrap();
            match &mut *kept {
                Some(failure) => failure.what = what,
                None => *kept = Some(Failure { what, op: None }),
            }
        });
        eprintln!(
            "selfsup: GPU adapter {} ({:?}, {:?}; {profile:?} kernels)",
            info.name, info.backend, info.device_type
        );
        let align = (limits.min_uniform_buffer_offset_alignment as u64).max(PARAM_SLOT);
        let params_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: align * MAX_BATCH as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let timing = profiling.then(|| Timing::new(&device));
        let serial = info.name.contains("llvmpipe")
            && std::env::var("LP_NUM_THREADS").is_ok_and(|v| v.trim() == "0");
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            features,
            profile,
            serial,
            state: Mutex::new(State {
                pipelines: HashMap::new(),
                pool: HashMap::new(),
                bind_groups: HashMap::new(),
                pending_free: Vec::new(),
                ops: Vec::new(),
                params: Vec::new(),
                params_buf,
                slot: align,
                timing,
                last: None,
            }),
            failure,
            live_bytes: AtomicU64::new(0),
            peak_bytes: AtomicU64::new(0),
        })
    }

    /// A context of its own on the best adapter, apart from the process-wide one (for work that
    /// must not share its fate, such as a test that loses its device).
    pub fn new() -> Result<Arc<GpuContext>> {
        GpuContext::create().map(Arc::new).map_err(Error::Device)
    }

    /// The first device failure so far, naming the op it hit; `Ok` while the device works.
    pub fn check(&self) -> Result<()> {
        match &*self.failure.lock().unwrap() {
            None => Ok(()),
            Some(f) => Err(Error::Device(match &f.op {
                Some(op) => format!("{}: {} in {op}", self.info.name, f.what),
                None => format!("{}: {}", self.info.name, f.what),
            })),
        }
    }

    /// Whether a failure is recorded, naming the op that met it if none is named yet.
    fn failed(&self, op: impl FnOnce() -> String) -> bool {
        match &mut *self.failure.lock().unwrap() {
            None => false,
            Some(f) => {
                f.op.get_or_insert_with(op);
                true
            }
        }
    }

    /// Destroys the device, as a driver reset would: later work fails with a device-lost error.
    pub fn destroy(&self) {
        self.device.destroy();
    }

    /// The adapter's name and graphics API, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)`.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// The adapter as the driver describes it, one `(what, value)` per line: type, driver,
    /// the compute limits and the optional features the kernels could use.
    pub fn describe(&self) -> Vec<(String, String)> {
        let (i, l) = (&self.info, &self.limits);
        let mut v: Vec<(String, String)> = vec![
            ("adapter".into(), i.name.clone()),
            ("backend".into(), format!("{:?}", i.backend)),
            ("device type".into(), format!("{:?}", i.device_type)),
            ("kernel profile".into(), format!("{:?}", self.profile())),
            ("driver".into(), format!("{} {}", i.driver, i.driver_info)),
            (
                "max workgroup size".into(),
                format!(
                    "{} × {} × {} ({} invocations)",
                    l.max_compute_workgroup_size_x,
                    l.max_compute_workgroup_size_y,
                    l.max_compute_workgroup_size_z,
                    l.max_compute_invocations_per_workgroup
                ),
            ),
            (
                "workgroup shared memory".into(),
                format!("{} bytes", l.max_compute_workgroup_storage_size),
            ),
            (
                "max workgroups per dimension".into(),
                l.max_compute_workgroups_per_dimension.to_string(),
            ),
            (
                "max storage binding".into(),
                format!("{} MiB", self.max_binding() >> 20),
            ),
            (
                "storage buffers per kernel".into(),
                l.max_storage_buffers_per_shader_stage.to_string(),
            ),
            (
                "subgroup size".into(),
                format!(
                    "{}–{} lanes",
                    self.info.subgroup_min_size, self.info.subgroup_max_size
                ),
            ),
        ];
        for (name, f) in [
            ("shader f16", wgpu::Features::SHADER_F16),
            ("subgroups", wgpu::Features::SUBGROUP),
            ("timestamp queries", wgpu::Features::TIMESTAMP_QUERY),
            (
                "timestamps inside passes",
                wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            ),
        ] {
            v.push((
                format!("feature {name}"),
                self.features.contains(f).to_string(),
            ));
        }
        v
    }

    /// Whether tensors may be stored as f16 here (the adapter has `SHADER_F16`).
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// A software rasteriser's compute (lavapipe, WARP, SwiftShader) rather than a GPU.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether a launch's workgroups run one after another (see the `serial` field).
    pub fn runs_serially(&self) -> bool {
        self.serial
    }

    /// The kernel set this thread's launches use (see [`KernelProfile`]).
    pub fn profile(&self) -> KernelProfile {
        PROFILE.with(|p| p.get()).unwrap_or(self.profile)
    }

    /// Whether kernels may count on subgroups of exactly 8 lanes, the 8 consecutive invocations
    /// of a one-dimensional workgroup (lavapipe on 256-bit vectors; see [`with_subgroups`]).
    pub fn subgroups_of_8(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size == 8
            && self.info.subgroup_max_size == 8
            && SUBGROUPS.with(|s| s.get())
    }

    /// A snapshot of the calling thread's work counters (see [`GpuCounters`]).
    pub fn counters(&self) -> GpuCounters {
        COUNTERS.with(|c| c.get())
    }

    /// Storage buffers one kernel may bind (its parameters included).
    pub fn max_storage_buffers(&self) -> u32 {
        self.limits.max_storage_buffers_per_shader_stage
    }

    /// Largest buffer one kernel may bind, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A storage buffer of at least `bytes` bytes, reused from the pool when possible.
    /// A buffer that kernels will write (`for_upload == false`) may also reuse one freed in the
    /// open batch: recorded ops run in order, so its old readers finish first. A buffer to be
    /// filled by a queue write may not, since that write runs before the whole batch. Either
    /// way the first candidate in the buffers' order is taken, so that allocation is a function
    /// of the program.
    /// Panics with a clear message when the device cannot hold it.
    #[track_caller]
    pub(crate) fn alloc(&self, bytes: u64, for_upload: bool) -> wgpu::Buffer {
        let size = bytes.max(16).next_multiple_of(16);
        if size > self.max_binding() {
            panic!(
                "{}",
                Error::Limit(format!(
                    "a tensor of {bytes} bytes exceeds this adapter's storage buffer limit of {} bytes ({})",
                    self.max_binding(),
                    self.info.name
                ))
            );
        }
        {
            let mut st = self.state.lock().unwrap();
            if !for_upload {
                let first = (st.pending_free.iter().enumerate())
                    .filter(|(_, b)| b.size() == size)
                    .min_by(|a, b| a.1.cmp(b.1))
                    .map(|(i, _)| i);
                if let Some(i) = first {
                    return st.pending_free.swap_remove(i);
                }
            }
            if let Some(b) = st.pool.get_mut(&size).and_then(BTreeSet::pop_first) {
                return b;
            }
        }
        let ok_before = self.check().is_ok();
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if ok_before && self.check().is_err() {
            let st = self.state.lock().unwrap();
            let pooled: u64 = st.pool.values().flatten().map(wgpu::Buffer::size).sum();
            drop(st);
            if let Some(f) = &mut *self.failure.lock().unwrap() {
                f.what = format!(
                    "{} allocating {} ({} idle in the buffer pool)",
                    f.what,
                    human_bytes(size),
                    human_bytes(pooled)
                );
            }
        }
        buffer
    }

    /// Counts a buffer a tensor now holds, for [`GpuContext::memory`].
    pub(crate) fn hold(&self, bytes: u64) {
        let live = self.live_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_bytes.fetch_max(live, Ordering::Relaxed);
    }

    /// Bytes held by tensors now, and the most held since [`GpuContext::reset_peak`].
    pub fn memory(&self) -> (u64, u64) {
        let live = self.live_bytes.load(Ordering::Relaxed);
        (live, self.peak_bytes.load(Ordering::Relaxed))
    }

    /// Starts the peak of [`GpuContext::memory`] again from what is held now.
    pub fn reset_peak(&self) {
        let live = self.live_bytes.load(Ordering::Relaxed);
        self.peak_bytes.store(live, Ordering::Relaxed);
    }

    /// Returns a buffer to the pool (after the open batch is submitted).
    pub(crate) fn release(&self, buffer: wgpu::Buffer) {
        self.live_bytes.fetch_sub(buffer.size(), Ordering::Relaxed);
        self.state.lock().unwrap().pending_free.push(buffer);
    }

    /// Copies host bytes into a buffer (ordered before the next submitted batch).
    pub(crate) fn write(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        if self.failed(|| format!("an upload of {}", human_bytes(bytes.len() as u64))) {
            return;
        }
        if !bytes.is_empty() {
            count(|c| {
                c.uploads += 1;
                c.upload_bytes += bytes.len() as u64;
            });
            self.queue.write_buffer(buffer, 0, bytes);
        }
    }

    /// The compiled pipeline of `name` with its override constants set to `constants`: each
    /// specialisation is compiled once. Drivers fold branches on override constants away, which
    /// matters on CPU drivers that run every arm of a branch they cannot prove uniform.
    fn pipeline(
        &self,
        state: &mut State,
        name: &'static str,
        source: &dyn Fn() -> String,
        variant: Variant,
        constants: &[(&'static str, u32)],
    ) -> Arc<wgpu::ComputePipeline> {
        assert!(
            constants.len() <= MAX_CONSTANTS,
            "internal: {name} has too many override constants"
        );
        let mut key = [0; MAX_CONSTANTS];
        for (k, (_, v)) in key.iter_mut().zip(constants) {
            *k = *v;
        }
        state
            .pipelines
            .entry((name, variant, key))
            .or_insert_with(|| {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(name),
                        source: wgpu::ShaderSource::Wgsl(source().into()),
                    });
                let values: Vec<(&str, f64)> =
                    constants.iter().map(|&(n, v)| (n, v as f64)).collect();
                Arc::new(
                    self.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(name),
                            layout: None,
                            module: &module,
                            entry_point: Some("main"),
                            compilation_options: wgpu::PipelineCompilationOptions {
                                constants: &values,
                                ..Default::default()
                            },
                            cache: None,
                        }),
                )
            })
            .clone()
    }

    /// Records one kernel launch: `params` go to binding 0, `buffers` to bindings 1.. in order;
    /// `constants` set the kernel's override constants (at most [`MAX_CONSTANTS`], always the
    /// same names in the same order for one kernel); `source` is the kernel's `variant`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &self,
        kernel: &'static str,
        source: &dyn Fn() -> String,
        variant: Variant,
        constants: &[(&'static str, u32)],
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) {
        let op = || {
            let sizes: Vec<String> = buffers.iter().map(|b| human_bytes(b.size())).collect();
            format!(
                "kernel {kernel} ({}×{}×{} workgroups; buffers {})",
                grid[0],
                grid[1],
                grid[2],
                sizes.join(", ")
            )
        };
        if grid.contains(&0) || self.failed(op) {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if st.ops.len() >= MAX_BATCH {
            self.submit(&mut st);
        }
        let pipeline = self.pipeline(&mut st, kernel, source, variant, constants);
        let offset = st.ops.len() as u64 * st.slot;
        assert!(
            params.len() as u64 <= PARAM_SLOT,
            "internal: {kernel} has too many parameters"
        );
        st.params.resize(offset as usize, 0);
        st.params.extend_from_slice(params);
        let key = BindKey {
            pipeline: (*pipeline).clone(),
            offset,
            buffers: buffers.iter().map(|&b| b.clone()).collect(),
        };
        let bind_group = match st.bind_groups.get(&key) {
            Some(g) => g.clone(),
            None => {
                let g = self.bind_group(&st.params_buf, &key);
                count(|c| c.bind_groups += 1);
                if st.bind_groups.len() >= MAX_BIND_GROUPS {
                    st.bind_groups.clear();
                }
                st.bind_groups.insert(key, g.clone());
                g
            }
        };
        if self.failed(op) {
            return;
        }
        st.ops.push(Recorded {
            kernel,
            pipeline,
            bind_group,
            grid,
        });
        st.last = Some((kernel, grid));
        count(|c| c.dispatches += 1);
    }

    /// A new bind group: the parameter slot at binding 0, the buffers at 1…
    fn bind_group(&self, params: &wgpu::Buffer, key: &BindKey) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: params,
                offset: key.offset,
                size: wgpu::BufferSize::new(PARAM_SLOT),
            }),
        }];
        for (i, b) in key.buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &key.pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Encodes and submits the open batch, then recycles the buffers it freed.
    fn submit(&self, st: &mut State) {
        if self.failed(|| format!("a batch of {} launches", st.ops.len())) {
            st.ops.clear();
            st.params.clear();
        }
        if !st.ops.is_empty() {
            st.params.resize(st.ops.len() * st.slot as usize, 0);
            self.queue.write_buffer(&st.params_buf, 0, &st.params);
            let mut encoder = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for (i, op) in st.ops.iter().enumerate() {
                    pass.set_pipeline(&op.pipeline);
                    pass.set_bind_group(0, &op.bind_group, &[]);
                    if let Some(t) = &st.timing {
                        pass.write_timestamp(&t.queries, 2 * i as u32);
                    }
                    pass.dispatch_workgroups(op.grid[0], op.grid[1], op.grid[2]);
                    if let Some(t) = &st.timing {
                        pass.write_timestamp(&t.queries, 2 * i as u32 + 1);
                    }
                }
            }
            if let Some(t) = &st.timing {
                let n = 2 * st.ops.len() as u32;
                encoder.resolve_query_set(&t.queries, 0..n, &t.resolved, 0);
                encoder.copy_buffer_to_buffer(&t.resolved, 0, &t.readback, 0, 8 * n as u64);
            }
            self.queue.submit([encoder.finish()]);
            if st.timing.is_some() {
                self.collect_kernel_times(st);
            }
            let bytes = st.params.len() as u64;
            count(|c| {
                c.submits += 1;
                c.param_bytes += bytes;
            });
            st.ops.clear();
            st.params.clear();
        }
        for b in std::mem::take(&mut st.pending_free) {
            st.pool.entry(b.size()).or_default().insert(b);
        }
    }

    /// Waits for the submitted batch's timestamps and adds each launch's time to its kernel's.
    fn collect_kernel_times(&self, st: &mut State) {
        let period = self.queue.get_timestamp_period() as f64;
        let Some(t) = &mut st.timing else { return };
        let n = 2 * st.ops.len() as u64;
        let slice = t.readback.slice(..8 * n);
        if !self.map_for_reading(slice, " reading kernel times") {
            return;
        }
        {
            let view = slice.get_mapped_range().expect("mapped kernel times");
            let ticks: Vec<u64> = bytemuck::cast_slice(&view).to_vec();
            for (op, pair) in st.ops.iter().zip(ticks.chunks_exact(2)) {
                let e = t.totals.entry(op.kernel).or_default();
                e.0 += 1;
                e.1 += pair[1].saturating_sub(pair[0]) as f64 * period;
            }
        }
        t.readback.unmap();
    }

    /// Keeps `what` as the device's failure unless one is already kept.
    fn record(&self, what: String) {
        keep_first(&self.failure, what);
    }

    /// Maps `slice` for reading and waits for the device; `false` after recording why that
    /// failed (`context` says what was being read).
    fn map_for_reading(&self, slice: wgpu::BufferSlice<'_>, context: &str) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let waited = self.device.poll(wgpu::PollType::wait_indefinitely());
        let mapped = waited.map_err(|e| e.to_string()).and_then(|_| {
            rx.recv()
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        });
        if let Err(e) = &mapped {
            self.record(format!("{e}{context}"));
        }
        mapped.is_ok()
    }

    /// Launches and device time in nanoseconds per kernel since the last call, longest first;
    /// empty unless `SELFSUP_GPU_PROFILE=1` (see [`Timing`]).
    pub fn take_kernel_times(&self) -> Vec<(&'static str, u64, f64)> {
        let mut st = self.state.lock().unwrap();
        self.submit(&mut st);
        let Some(t) = &mut st.timing else {
            return Vec::new();
        };
        let mut v: Vec<_> = t.totals.drain().map(|(k, (n, ns))| (k, n, ns)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// Submits recorded work without waiting for it.
    pub(crate) fn flush(&self) {
        let mut st = self.state.lock().unwrap();
        self.submit(&mut st);
    }

    /// Submits recorded work and waits until the device has finished it; `Err` names the
    /// device's failure, if it has one.
    pub fn synchronize(&self) -> Result<()> {
        self.flush();
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            self.record(format!("{e} while waiting for work"));
        }
        self.check()
    }

    /// Reads `bytes` bytes of `buffer` back to the host, after all recorded work; `Err` names
    /// the device's failure instead of returning values that were never computed.
    pub(crate) fn read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.check()?;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let size = bytes.next_multiple_of(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let last = {
            let mut st = self.state.lock().unwrap();
            self.submit(&mut st);
            count(|c| {
                c.submits += 1;
                c.readbacks += 1;
                c.readback_bytes += bytes;
            });
            st.last
        };
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        self.map_for_reading(staging.slice(..), "");
        self.failed(|| {
            let after = last.map_or(String::new(), |(k, g)| {
                format!(" after kernel {k} ({}×{}×{} workgroups)", g[0], g[1], g[2])
            });
            format!("a read-back of {}{after}", human_bytes(bytes))
        });
        self.check()?;
        let data = staging.get_mapped_range(..).expect("mapped range").to_vec();
        staging.unmap();
        Ok(data[..bytes as usize].to_vec())
    }
}

/// Keeps `what` as the failure in `kept` unless one is already there (wgpu's error callback and
/// the context's own checks share it).
fn keep_first(kept: &Mutex<Option<Failure>>, what: String) {
    kept.lock()
        .unwrap()
        .get_or_insert(Failure { what, op: None });
}

/// wgpu's multi-line error report ("Validation Error", "Caused by:", the call, the reason) as
/// one line: the reason, then where it arose.
fn one_line(report: &str) -> String {
    let lines: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Caused by:" && !l.ends_with(" Error"))
        .collect();
    lines
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(", in ")
}

/// `bytes` for a message: `512 B`, `4.0 MiB`, `1.50 GiB`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
