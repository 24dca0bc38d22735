//! The tensor: a shape, a dtype and a buffer on a device, plus autograd bookkeeping.

use crate::autograd::{self, BackwardFn, Node};
use crate::backend::cpu::{self, CpuData};
use crate::backend::gpu::GpuData;
use crate::backend::Storage;
use crate::device::Device;
use crate::shape::numel;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Element type of a tensor. f32 everywhere; f64 on the CPU for gradient checks; f16 on a GPU
/// with `SHADER_F16`, as a storage format (see [`crate::autocast`]): kernels widen it to f32 to
/// compute, and the gradient of an f16 tensor is f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
}

/// An n-dimensional array with reverse-mode autodiff. Cloning is cheap and shares the data.
///
/// Data is always contiguous and row-major; `reshape` shares it, every other view op copies.
///
/// A `Tensor` is a handle: the graph refers to an op's inputs by [`GraphRef`]s instead, so that
/// when the last handle goes the data goes too, even while the tensor is still a node of the
/// graph (a backward pass needs the node, not the data; what it needs of the data, its closure
/// holds). Otherwise the graph would pin every intermediate result until `backward`.
pub struct Tensor(Arc<Inner>);

/// The graph's reference to an op's input: its identity and node, not its data.
pub(crate) struct GraphRef(Arc<Inner>);

struct Inner {
    id: u64,
    shape: Vec<usize>,
    device: Device,
    /// `None` once no handle is left (only the graph refers to the tensor).
    storage: RwLock<Option<Arc<Storage>>>,
    /// The live [`Tensor`] handles.
    handles: AtomicUsize,
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
    node: Mutex<Option<Node>>,
    /// Set when `backward` consumed the node, so a second pass can be refused, not ignored.
    consumed: AtomicBool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Tensor {
    pub(crate) fn from_storage(
        storage: impl Into<Arc<Storage>>,
        shape: Vec<usize>,
        device: Device,
    ) -> Tensor {
        let storage = storage.into();
        debug_assert_eq!(storage.len(), numel(&shape));
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            device,
            storage: RwLock::new(Some(storage)),
            handles: AtomicUsize::new(1),
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
            node: Mutex::new(None),
            consumed: AtomicBool::new(false),
        }))
    }

    /// The output of an op: records `backward` when grad mode is on and an input needs it.
    pub(crate) fn from_op(
        storage: impl Into<Arc<Storage>>,
        shape: Vec<usize>,
        device: &Device,
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Vec<Option<Tensor>> + Send + 'static,
    ) -> Tensor {
        let t = Tensor::from_storage(storage, shape, device.clone());
        if autograd::is_grad_enabled() && inputs.iter().any(|i| i.requires_grad()) {
            t.0.requires_grad.store(true, Ordering::Relaxed);
            let backward: BackwardFn = Box::new(backward);
            *t.0.node.lock().unwrap() = Some(Node {
                inputs: inputs.iter().map(|i| GraphRef(i.0.clone())).collect(),
                backward,
            });
        }
        t
    }

    /// A tensor from host data, on `device`. Panics if `data` does not fill `shape`.
    #[track_caller]
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Tensor {
        assert_eq!(
            data.len(),
            numel(shape),
            "from_vec: {} values cannot fill shape {shape:?}",
            data.len()
        );
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuData::F32(data)),
            Device::Gpu(ctx) => Storage::Gpu(GpuData::upload(ctx, &data)),
        };
        Tensor::from_storage(storage, shape.to_vec(), device.clone())
    }

    /// An f64 tensor on the CPU (for gradient checks and exact references).
    #[track_caller]
    pub fn from_vec_f64(data: Vec<f64>, shape: &[usize]) -> Tensor {
        assert_eq!(
            data.len(),
            numel(shape),
            "from_vec_f64: {} values cannot fill shape {shape:?}",
            data.len()
        );
        Tensor::from_storage(
            Storage::Cpu(CpuData::F64(data)),
            shape.to_vec(),
            Device::Cpu,
        )
    }

    /// A 0-d tensor holding `v`.
    pub fn scalar(v: f32, device: &Device) -> Tensor {
        Tensor::from_vec(vec![v], &[], device)
    }

    /// `value` everywhere (f32); on the GPU written by a kernel rather than uploaded.
    pub fn full(shape: &[usize], value: f32, device: &Device) -> Tensor {
        Tensor::filled(shape, value as f64, DType::F32, device)
    }

    /// `value` in `shape` with `dtype` on `device`, no gradient: on the GPU a `fill` kernel.
    fn filled(shape: &[usize], value: f64, dtype: DType, device: &Device) -> Tensor {
        let n = numel(shape);
        let storage = match (device, dtype) {
            (Device::Cpu, DType::F64) => Storage::Cpu(CpuData::F64(cpu::full(n, value))),
            (Device::Cpu, DType::F32) => Storage::Cpu(CpuData::F32(cpu::full(n, value as f32))),
            (Device::Cpu, DType::F16) => panic!("f16 storage exists on the GPU only"),
            (Device::Gpu(ctx), dtype) => {
                let f32s = Storage::Gpu(crate::backend::gpu::fill(ctx, n, value));
                crate::backend::cast_from_f32(f32s, dtype)
            }
        };
        Tensor::from_storage(storage, shape.to_vec(), device.clone())
    }

    pub fn zeros(shape: &[usize], device: &Device) -> Tensor {
        Tensor::full(shape, 0.0, device)
    }

    pub fn ones(shape: &[usize], device: &Device) -> Tensor {
        Tensor::full(shape, 1.0, device)
    }

    /// `[0, 1, …, n-1]` as floats.
    pub fn arange(n: usize, device: &Device) -> Tensor {
        Tensor::from_vec((0..n).map(|i| i as f32).collect(), &[n], device)
    }

    /// Uniform samples in [0, 1) from a seeded generator: the same seed gives the same values on
    /// every device.
    pub fn rand(shape: &[usize], seed: u64, device: &Device) -> Tensor {
        let mut rng = crate::SeededRng::seed_from_u64(seed);
        let data = (0..numel(shape)).map(|_| rng.random::<f32>()).collect();
        Tensor::from_vec(data, shape, device)
    }

    /// Standard normal samples (Box–Muller) from a seeded generator.
    pub fn randn(shape: &[usize], seed: u64, device: &Device) -> Tensor {
        let mut rng = crate::SeededRng::seed_from_u64(seed);
        let data = (0..numel(shape))
            .map(|_| {
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        Tensor::from_vec(data, shape, device)
    }

    /// A tensor of `value` with this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Tensor {
        self.full_shaped(self.shape(), value)
    }

    /// A tensor of `value` in `shape`, with this tensor's dtype and device (no gradient); on
    /// the GPU written by a kernel rather than uploaded.
    pub fn full_shaped(&self, shape: &[usize], value: f64) -> Tensor {
        Tensor::filled(shape, value, self.dtype(), &self.device())
    }

    pub fn zeros_like(&self) -> Tensor {
        self.full_like(0.0)
    }

    pub fn ones_like(&self) -> Tensor {
        self.full_like(1.0)
    }

    /// A constant of this tensor's dtype and device from host values (no gradient).
    #[track_caller]
    pub fn new_from(&self, data: &[f64], shape: &[usize]) -> Tensor {
        assert_eq!(
            data.len(),
            numel(shape),
            "new_from: {} values cannot fill shape {shape:?}",
            data.len()
        );
        let storage = match (&self.device(), self.dtype()) {
            (Device::Cpu, DType::F64) => Storage::Cpu(CpuData::F64(data.to_vec())),
            (Device::Cpu, DType::F32) => {
                Storage::Cpu(CpuData::F32(data.iter().map(|&v| v as f32).collect()))
            }
            (Device::Cpu, DType::F16) => panic!("f16 storage exists on the GPU only"),
            (Device::Gpu(ctx), dtype) => {
                let f32s = data.iter().map(|&v| v as f32).collect::<Vec<_>>();
                crate::backend::cast_from_f32(Storage::Gpu(GpuData::upload(ctx, &f32s)), dtype)
            }
        };
        Tensor::from_storage(storage, shape.to_vec(), self.device())
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Size of dimension `axis` (negative counts from the end).
    #[track_caller]
    pub fn dim(&self, axis: isize) -> usize {
        self.0.shape[crate::shape::axis("dim", axis, self.rank())]
    }

    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    pub fn device(&self) -> Device {
        self.0.device.clone()
    }

    pub fn dtype(&self) -> DType {
        self.storage().dtype()
    }

    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    pub(crate) fn storage(&self) -> Arc<Storage> {
        (self.0.storage.read().unwrap().clone())
            .expect("internal: the data of a tensor only the graph refers to was read")
    }

    /// A new tensor sharing this one's data under another shape (no gradient link).
    pub(crate) fn with_shape(&self, shape: Vec<usize>) -> Tensor {
        let inner = Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            device: self.device(),
            storage: RwLock::new(Some(self.storage())),
            handles: AtomicUsize::new(1),
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
            node: Mutex::new(None),
            consumed: AtomicBool::new(false),
        };
        Tensor(Arc::new(inner))
    }

    /// Copies the values to the host as f32 (waits for queued GPU work). Panics with the device's
    /// failure (out of memory, device lost), naming the op it hit; [`Tensor::try_to_vec`]
    /// returns it instead.
    #[track_caller]
    pub fn to_vec(&self) -> Vec<f32> {
        self.try_to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Copies the values to the host as f32, or the GPU's failure as an error.
    pub fn try_to_vec(&self) -> crate::Result<Vec<f32>> {
        match &*self.storage() {
            Storage::Cpu(c) => Ok(c.to_f32()),
            Storage::Gpu(g) => g.download(),
        }
    }

    /// Copies the values to the host as f64 (panics on a device failure, as [`Tensor::to_vec`]).
    #[track_caller]
    pub fn to_vec_f64(&self) -> Vec<f64> {
        self.try_to_vec_f64().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Copies the values to the host as f64, or the GPU's failure as an error.
    pub fn try_to_vec_f64(&self) -> crate::Result<Vec<f64>> {
        match &*self.storage() {
            Storage::Cpu(c) => Ok(c.to_f64()),
            Storage::Gpu(g) => Ok(g.download()?.into_iter().map(f64::from).collect()),
        }
    }

    /// The single value of a one-element tensor.
    #[track_caller]
    pub fn item(&self) -> f32 {
        self.try_item().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The single value of a one-element tensor, or the GPU's failure as an error.
    #[track_caller]
    pub fn try_item(&self) -> crate::Result<f32> {
        assert_eq!(
            self.numel(),
            1,
            "item: tensor of shape {:?} has {} elements, not 1",
            self.shape(),
            self.numel()
        );
        Ok(self.try_to_vec()?[0])
    }

    /// The same values on `device` (a differentiable copy).
    pub fn to_device(&self, device: &Device) -> Tensor {
        if &self.device() == device {
            return self.clone();
        }
        let storage = match (&*self.storage(), device) {
            (Storage::Cpu(c), Device::Gpu(ctx)) => Storage::Gpu(GpuData::upload(ctx, &c.to_f32())),
            (Storage::Gpu(_), Device::Cpu) => Storage::Cpu(CpuData::F32(self.to_vec())),
            (Storage::Gpu(_), Device::Gpu(ctx)) => {
                Storage::Gpu(GpuData::upload(ctx, &self.to_vec()))
            }
            (Storage::Cpu(_), Device::Cpu) => unreachable!("same device handled above"),
        };
        let src = self.device();
        Tensor::from_op(storage, self.shape().to_vec(), device, &[self], move |g| {
            vec![Some(g.to_device(&src))]
        })
    }

    /// The same values as `dtype` (a differentiable cast). f64 exists only on the CPU, f16 only
    /// on a GPU with `SHADER_F16`. The gradient comes back in the source's dtype, f32 for f16
    /// (the gradients of f16 tensors are f32 throughout, as the products return them).
    #[track_caller]
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        self.cast_into(crate::backend::cast(&self.storage(), dtype))
    }

    /// This tensor's values already cast to another dtype (`storage`), as [`Tensor::to_dtype`]'s
    /// result: the gradient flows back cast to this tensor's dtype (f32 for an f16 tensor).
    pub(crate) fn cast_into(&self, storage: impl Into<Arc<Storage>>) -> Tensor {
        let src = match self.dtype() {
            DType::F16 => DType::F32,
            d => d,
        };
        Tensor::from_op(
            storage,
            self.shape().to_vec(),
            &self.device(),
            &[self],
            move |g| vec![Some(g.to_dtype(src))],
        )
    }

    // ---- autograd ----

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// A trainable leaf (a parameter): it requires a gradient and no op made it.
    pub(crate) fn is_trainable_leaf(&self) -> bool {
        self.requires_grad() && self.0.node.lock().unwrap().is_none()
    }

    /// A number naming this tensor (not its data) while it lives.
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Marks this tensor as a leaf whose gradient `backward` should compute.
    pub fn set_requires_grad(&self, on: bool) {
        self.0.requires_grad.store(on, Ordering::Relaxed);
    }

    /// Builder form of [`Tensor::set_requires_grad`].
    pub fn requires_grad_(self, on: bool) -> Tensor {
        self.set_requires_grad(on);
        self
    }

    /// The accumulated gradient, if `backward` reached this tensor.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap().clone()
    }

    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap() = None;
    }

    /// The same data cut off from the graph: gradients stop here (stop-gradient).
    pub fn detach(&self) -> Tensor {
        self.with_shape(self.shape().to_vec())
    }

    /// Replaces this tensor's data in place, keeping identity, gradient and graph flags
    /// (optimizer steps, EMA updates, loading checkpoints).
    #[track_caller]
    pub fn set_data(&self, src: &Tensor) {
        assert_eq!(
            src.shape(),
            self.shape(),
            "set_data: shape {:?} does not match {:?}",
            src.shape(),
            self.shape()
        );
        assert!(
            src.device() == self.device(),
            "set_data: source is on {:?}, target on {:?}",
            src.device(),
            self.device()
        );
        *self.0.storage.write().unwrap() = Some(src.storage());
    }

    /// Back-propagates from this scalar (e.g. a loss) into every leaf that requires a gradient.
    #[track_caller]
    pub fn backward(&self) {
        assert_eq!(
            self.numel(),
            1,
            "backward: needs a scalar, got shape {:?}; use backward_with",
            self.shape()
        );
        self.backward_with(self.ones_like());
    }

    /// Back-propagates a given output gradient.
    #[track_caller]
    pub fn backward_with(&self, grad: Tensor) {
        assert!(self.requires_grad(), "backward: the tensor does not require grad (no input needed one, or it was made under no_grad)");
        assert_eq!(
            grad.shape(),
            self.shape(),
            "backward_with: gradient shape {:?} does not match {:?}",
            grad.shape(),
            self.shape()
        );
        autograd::backward(self, grad);
    }

    pub(crate) fn take_node(&self) -> Option<Node> {
        let node = self.0.node.lock().unwrap().take();
        if node.is_some() {
            self.0.consumed.store(true, Ordering::Relaxed);
        }
        node
    }

    /// Whether an earlier `backward` already went through (and freed) this tensor's node.
    pub(crate) fn node_consumed(&self) -> bool {
        self.0.consumed.load(Ordering::Relaxed)
    }

    pub(crate) fn node_inputs(&self) -> Vec<Tensor> {
        self.0
            .node
            .lock()
            .unwrap()
            .as_ref()
            .map(|n| n.inputs.iter().map(GraphRef::tensor).collect())
            .unwrap_or_default()
    }

    pub(crate) fn accumulate_grad(&self, g: &Tensor) {
        let mut slot = self.0.grad.lock().unwrap();
        *slot = Some(match slot.take() {
            Some(acc) => &acc + g,
            None => g.detach(),
        });
    }
}

impl Clone for Tensor {
    fn clone(&self) -> Tensor {
        self.0.handles.fetch_add(1, Ordering::Relaxed);
        Tensor(self.0.clone())
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // The last handle: if the graph still refers to the tensor, its data can go now.
        if self.0.handles.fetch_sub(1, Ordering::AcqRel) == 1 && Arc::strong_count(&self.0) > 1 {
            *self.0.storage.write().unwrap() = None;
        }
    }
}

impl GraphRef {
    /// A handle to the tensor, for the backward pass's bookkeeping (its data may be gone).
    pub(crate) fn tensor(&self) -> Tensor {
        self.0.handles.fetch_add(1, Ordering::Relaxed);
        Tensor(self.0.clone())
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(shape={:?}, dtype={:?}, device={:?}",
            self.shape(),
            self.dtype(),
            self.device()
        )?;
        if self.numel() <= 16 {
            write!(f, ", data={:?}", self.to_vec())?;
        }
        write!(f, ")")
    }
}
