//! Mixed precision on the GPU, PyTorch's `torch.autocast(dtype=torch.float16)` for the ops that
//! move the most bytes: inside an [`Autocast`] scope, matrix products (matmul, linear layers) and
//! fused attention read their operands as f16 — cast on the way in, and saved as f16 for the
//! backward pass — while they compute and accumulate in f32 and return f32. Master weights,
//! optimizer state, every other op and every gradient stay f32, so no loss scaling is needed:
//! f16 is a storage format here, not an arithmetic one. Backward passes run outside autocast.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::cell::Cell;

thread_local! {
    static F16: Cell<bool> = const { Cell::new(false) };
}

/// f16 operands for products and attention on this thread until dropped (then the previous
/// setting again).
#[must_use = "autocast lasts as long as the guard"]
pub struct Autocast {
    previous: bool,
}

impl Autocast {
    /// f16 operands on `device`, or an error where it has no f16 storage (the CPU backend, or an
    /// adapter without `SHADER_F16`).
    pub fn f16(device: &Device) -> Result<Autocast> {
        match device {
            Device::Gpu(ctx) if ctx.has_f16() => Ok(Autocast::set(true)),
            Device::Gpu(ctx) => Err(Error::Device(format!(
                "{} has no f16 storage (SHADER_F16), so f16 autocast cannot run there",
                ctx.adapter_name()
            ))),
            Device::Cpu => Err(Error::Device(
                "f16 autocast needs a GPU with SHADER_F16; the CPU backend computes in f32".into(),
            )),
        }
    }

    /// Autocast off until dropped (the backward pass).
    pub(crate) fn suspend() -> Autocast {
        Autocast::set(false)
    }

    fn set(on: bool) -> Autocast {
        Autocast {
            previous: F16.with(|f| f.replace(on)),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        F16.with(|f| f.set(self.previous));
    }
}

/// Whether products on this thread take f16 operands.
pub fn is_f16() -> bool {
    F16.with(Cell::get)
}

/// `t` as a product's operand: its f16 cast inside an autocast scope when it is an f32 tensor on
/// a GPU (the scope checked that the GPU has f16 storage), else `t` itself.
pub(crate) fn operand(t: &Tensor) -> Tensor {
    if is_f16() && t.dtype() == DType::F32 && matches!(t.device(), Device::Gpu(_)) {
        t.to_dtype(DType::F16)
    } else {
        t.clone()
    }
}
