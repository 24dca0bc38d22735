//! The wgpu backend: the same primitives as the CPU backend, as WGSL compute kernels.
//!
//! Tensors stay on the device between ops; launches are batched into one compute pass per
//! submission (see `context`), buffers are pooled, pipelines compiled once per kernel.

mod context;
mod data;
mod kernels;
mod params;
mod shaders;

pub use context::{with_kernel_profile, with_subgroups, GpuContext, GpuCounters, KernelProfile};
pub use data::GpuData;
pub use kernels::*;
