//! Mixed precision on the GPU, PyTorch's `torch.autocast(dtype=torch.float16)` for the ops that
//! move the most bytes: inside an [`Autocast`] scope, matrix products (matmul, linear layers) and
//! fused attention read their operands as f16 — cast on the way in, and saved as f16 for the
//! backward pass — while they compute and accumulate in f32 and return f32. Master weights,
//! optimizer state, every other op and every gradient stay f32, so no loss scaling is needed:
//! f16 is a storage format here, not an arithmetic one. Backward passes run outside autocast.
//! A trainable weight is cast once and reused until its data changes (an optimizer step), not
//! cast again at every use.

use crate::backend::Storage;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// A weight's f16 cast and the f32 data it was cast from, held weakly: the replaced data is freed
/// as usual, and its address cannot be handed to other data while the entry names it.
struct Cast {
    source: Weak<Storage>,
    half: Arc<Storage>,
}

thread_local! {
    static F16: Cell<bool> = const { Cell::new(false) };
    /// f16 casts of trainable weights by tensor identity. Cleared when autocast ends.
    static CASTS: RefCell<HashMap<usize, Cast>> = RefCell::default();
}

/// Most weights whose casts are kept (a bound in case leaves come and go, e.g. new models).
const MAX_CASTS: usize = 4096;

/// f16 operands for products and attention on this thread until dropped (then the previous
/// setting again).
#[must_use = "autocast lasts as long as the guard"]
pub struct Autocast {
    on: bool,
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
            on,
            previous: F16.with(|f| f.replace(on)),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        F16.with(|f| f.set(self.previous));
        if self.on && !self.previous {
            CASTS.with(|c| c.borrow_mut().clear());
        }
    }
}

/// Whether products on this thread take f16 operands.
pub fn is_f16() -> bool {
    F16.with(Cell::get)
}

/// `t` as a product's operand: its f16 cast inside an autocast scope when it is an f32 tensor on
/// a GPU (the scope checked that the GPU has f16 storage), else `t` itself. A trainable weight's
/// cast is made once per value of its data (see [`CASTS`]); each use is still its own graph
/// node, so its gradient reaches the weight every time.
pub(crate) fn operand(t: &Tensor) -> Tensor {
    if !(is_f16() && t.dtype() == DType::F32 && matches!(t.device(), Device::Gpu(_))) {
        return t.clone();
    }
    if !t.is_trainable_leaf() {
        return t.to_dtype(DType::F16);
    }
    let data = t.storage();
    let key = t.identity();
    let kept = CASTS.with(|c| {
        let casts = c.borrow();
        let cast = casts.get(&key)?;
        (cast.source.as_ptr() == Arc::as_ptr(&data)).then(|| cast.half.clone())
    });
    let half = kept.unwrap_or_else(|| {
        let half = Arc::new(crate::backend::cast(&data, DType::F16));
        CASTS.with(|c| {
            let mut casts = c.borrow_mut();
            if casts.len() >= MAX_CASTS {
                casts.clear();
            }
            let source = Arc::downgrade(&data);
            casts.insert(
                key,
                Cast {
                    source,
                    half: half.clone(),
                },
            );
        });
        half
    });
    t.cast_into(half)
}
