//! Compute devices and how programs choose one.

use crate::backend::gpu::{GpuContext, GpuCounters};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Where tensors live and their kernels run.
#[derive(Clone)]
pub enum Device {
    /// The reference backend: plain Rust on the host's cores.
    Cpu,
    /// A wgpu adapter (Vulkan, Metal, DX12); one shared context per process.
    Gpu(Arc<GpuContext>),
}

impl Device {
    /// The CPU backend.
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// A GPU adapter, hardware or software (lavapipe, WARP), or an error if there is none.
    pub fn gpu() -> Result<Device> {
        GpuContext::shared(false).map(Device::Gpu)
    }

    /// A hardware GPU when there is one, otherwise the CPU: software adapters are slower than
    /// the CPU backend, so they are used only when asked for with [`Device::gpu`].
    pub fn auto() -> Device {
        GpuContext::shared(true)
            .map(Device::Gpu)
            .unwrap_or(Device::Cpu)
    }

    /// Parses `cpu`, `gpu` or `auto`.
    pub fn parse(name: &str) -> Result<Device> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::cpu()),
            "gpu" => Device::gpu(),
            "auto" | "" => Ok(Device::auto()),
            other => Err(Error::Setting {
                name: "device".into(),
                value: other.into(),
                reason: "expected cpu, gpu or auto".into(),
            }),
        }
    }

    /// The device named by `SELFSUP_DEVICE` (`cpu`, `gpu` or `auto`; `auto` when unset).
    pub fn from_env() -> Result<Device> {
        match std::env::var("SELFSUP_DEVICE") {
            Ok(v) => Device::parse(&v).map_err(|e| match e {
                Error::Setting { value, reason, .. } => Error::Setting {
                    name: "SELFSUP_DEVICE".into(),
                    value,
                    reason,
                },
                other => other,
            }),
            Err(std::env::VarError::NotPresent) => Ok(Device::auto()),
            Err(e) => Err(Error::Setting {
                name: "SELFSUP_DEVICE".into(),
                value: String::new(),
                reason: e.to_string(),
            }),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// A human-readable name: `cpu`, or the adapter's name and backend.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            Device::Gpu(g) => g.adapter_name(),
        }
    }

    /// The GPU's work counters (launches, submissions, uploads, read-backs) so far; `None` on
    /// the CPU.
    pub fn gpu_counters(&self) -> Option<GpuCounters> {
        match self {
            Device::Cpu => None,
            Device::Gpu(g) => Some(g.counters()),
        }
    }

    /// Bytes of GPU memory tensors hold now and at most since [`Device::reset_peak_memory`]
    /// (buffers kept in the pool for reuse not counted); `None` on the CPU.
    pub fn gpu_memory(&self) -> Option<(u64, u64)> {
        match self {
            Device::Cpu => None,
            Device::Gpu(g) => Some(g.memory()),
        }
    }

    /// Starts [`Device::gpu_memory`]'s peak again from what is held now.
    pub fn reset_peak_memory(&self) {
        if let Device::Gpu(g) = self {
            g.reset_peak();
        }
    }

    /// Makes every queued kernel finish (a no-op on the CPU); benchmarks call it before timing.
    /// Panics with the device's failure, if it has one.
    pub fn synchronize(&self) {
        if let Device::Gpu(g) = self {
            g.synchronize().unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The GPU's first failure so far (out of memory, device lost), naming the op it hit; the
    /// CPU never fails this way. After a failure the GPU drops further work, and every
    /// read-back returns this error.
    pub fn check(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => g.check(),
        }
    }

    /// The failure of the process-wide GPU context, if it was opened and has failed: what a
    /// program reports when a panic follows from it.
    pub fn shared_gpu_failure() -> Option<Error> {
        GpuContext::shared_if_open().and_then(|g| g.check().err())
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(_) => write!(f, "gpu"),
        }
    }
}
