//! Backends: the small set of primitive kernels every op is built from, on contiguous data.
//!
//! An op in `ops/` checks shapes, calls one or more primitives through the dispatch functions
//! here, and records its backward pass as more tensor ops. A backend therefore only implements
//! these primitives: the CPU backend (`cpu`) is the reference, the wgpu backend (`gpu`) mirrors it
//! kernel for kernel, and the tests hold one against the other.

pub mod cpu;
pub mod gpu;

use crate::DType;
use std::sync::Arc;

/// Defines an op enum from one list of variants, with `ALL` (every variant, parameters zero) and
/// `code()` (its place in the list), so that the op codes the WGSL kernels name
/// ([`wgsl_op_constants`]) follow the enum with nothing to keep in step by hand.
macro_rules! ops {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident $(($($field:ty),+))?,)*
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant $(($($field),+))?,)*
        }

        impl $name {
            /// Every op, parameters zero.
            const ALL: &[$name] = &[$($name::$variant $(($(0 as $field),+))?),*];

            /// The op's code, which the WGSL kernels name `<ENUM>_<OP>` ([`wgsl_op_constants`]).
            pub fn code(self) -> u32 {
                let same = |op: &$name| std::mem::discriminant(op) == std::mem::discriminant(&self);
                Self::ALL.iter().position(same).expect("ALL lists every variant") as u32
            }
        }
    };
}

ops! {
    /// Element-wise functions of one argument. Parametric ones carry their constants.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Unary {
        Neg,
        Exp,
        Log,
        Sqrt,
        Rsqrt,
        Abs,
        Relu,
        /// GELU with the tanh approximation (GPT-2, BERT's original code).
        GeluTanh,
        /// Exact GELU, x·Φ(x) (PyTorch's default).
        GeluErf,
        Sigmoid,
        Tanh,
        Silu,
        Sign,
        Recip,
        Square,
        AddScalar(f64),
        MulScalar(f64),
        PowScalar(f64),
        Clamp(f64, f64),
    }
}

impl Unary {
    /// The op's two constants (zero where unused).
    pub fn params(self) -> (f64, f64) {
        match self {
            Unary::AddScalar(c) | Unary::MulScalar(c) | Unary::PowScalar(c) => (c, 0.0),
            Unary::Clamp(lo, hi) => (lo, hi),
            _ => (0.0, 0.0),
        }
    }
}

ops! {
    /// Element-wise functions of two broadcast arguments. Comparisons yield 1.0 or 0.0.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Binary {
        Add,
        Sub,
        Mul,
        Div,
        Pow,
        Max,
        Min,
        Eq,
        Ne,
        Lt,
        Le,
        Gt,
        Ge,
    }
}

ops! {
    /// Reductions along one axis of an (outer, n, inner) layout.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Reduce {
        Sum,
        Max,
        Min,
        /// Index of the first maximum, stored as a float.
        ArgMax,
        /// Index of the first minimum, stored as a float.
        ArgMin,
    }
}

/// WGSL constants naming every op's code (`const UNARY_GELU_TANH: u32 = 7u;`), generated from
/// the enums above and put before every kernel, so that the kernels' `switch` arms name the op
/// they implement instead of repeating its number.
pub fn wgsl_op_constants() -> String {
    fn line(prefix: &str, op: impl std::fmt::Debug, code: u32) -> String {
        let debug = format!("{op:?}");
        let name = debug.split('(').next().unwrap_or_default();
        let mut snake = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_uppercase());
        }
        format!("const {prefix}_{snake}: u32 = {code}u;\n")
    }
    let unary = Unary::ALL.iter().map(|&op| line("UNARY", op, op.code()));
    let binary = Binary::ALL.iter().map(|&op| line("BINARY", op, op.code()));
    let reduce = Reduce::ALL.iter().map(|&op| line("REDUCE", op, op.code()));
    unary.chain(binary).chain(reduce).collect()
}

/// Shape of a batched matrix product: `batch` products of (m×k)·(k×n).
///
/// Operand matrices are read through strides, so transposed operands and broadcast batches
/// (batch stride 0) cost no copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// `a` is stored as (k×m) and read transposed.
    pub trans_a: bool,
    /// `b` is stored as (n×k) and read transposed.
    pub trans_b: bool,
    /// Elements between consecutive batch matrices of `a` (0 = broadcast).
    pub a_batch_stride: usize,
    /// Elements between consecutive batch matrices of `b` (0 = broadcast).
    pub b_batch_stride: usize,
}

/// Shape of fused scaled dot-product attention over `bh` = batch·heads independent problems.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnSpec {
    pub bh: usize,
    pub heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f64,
    /// Query i may not attend to key j > i (top-left aligned, as PyTorch's `is_causal`).
    pub causal: bool,
}

/// Where a tensor's elements live.
#[derive(Debug)]
pub enum Storage {
    Cpu(cpu::CpuData),
    Gpu(gpu::GpuData),
}

impl Storage {
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(c) => c.len(),
            Storage::Gpu(g) => g.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            Storage::Gpu(g) => g.dtype(),
        }
    }
}

/// f32 values `x` as `dtype` (`x` itself for f32).
#[track_caller]
pub fn cast_from_f32(x: Storage, dtype: DType) -> Storage {
    if dtype == DType::F32 {
        return x;
    }
    cast(&x, dtype)
}

/// The same values as `dtype`: f32 ↔ f64 on the CPU, f32 ↔ f16 on the GPU.
#[track_caller]
pub fn cast(x: &Storage, dtype: DType) -> Storage {
    match x {
        Storage::Cpu(c) => Storage::Cpu(c.cast(dtype)),
        Storage::Gpu(_) if dtype == DType::F64 => {
            panic!("to_dtype: the GPU stores f32 and f16, not f64")
        }
        Storage::Gpu(g) => {
            assert!(
                dtype != DType::F16 || g.ctx().has_f16(),
                "to_dtype: {} has no f16 storage (SHADER_F16)",
                g.ctx().adapter_name()
            );
            Storage::Gpu(gpu::cast(g, dtype))
        }
    }
}

/// Applies `$cpu` or `$gpu` to same-device storages, panicking with `$op` on a device mix.
macro_rules! dispatch {
    ($op:expr; $($s:ident),+ ; cpu => $cpu:expr ; gpu => $gpu:expr) => {
        match ($($s,)+) {
            ($(Storage::Cpu($s),)+) => Storage::Cpu($cpu),
            ($(Storage::Gpu($s),)+) => Storage::Gpu($gpu),
            #[allow(unreachable_patterns)]
            _ => panic!("{}: operands live on different devices", $op),
        }
    };
}

pub fn unary(op: Unary, x: &Storage) -> Storage {
    dispatch!("unary"; x; cpu => cpu::unary(op, x); gpu => gpu::unary(op, x))
}

/// `g · f'(x)` for the unary op `f`.
pub fn unary_backward(op: Unary, x: &Storage, g: &Storage) -> Storage {
    dispatch!("unary backward"; x, g; cpu => cpu::unary_backward(op, x, g); gpu => gpu::unary_backward(op, x, g))
}

/// `op(a, b)` broadcast to `out_shape`; `a_strides`/`b_strides` have rank of `out_shape`,
/// with 0 on broadcast dimensions.
pub fn binary(
    op: Binary,
    a: &Storage,
    a_strides: &[usize],
    b: &Storage,
    b_strides: &[usize],
    out_shape: &[usize],
) -> Storage {
    dispatch!("binary"; a, b;
        cpu => cpu::binary(op, a, a_strides, b, b_strides, out_shape);
        gpu => gpu::binary(op, a, a_strides, b, b_strides, out_shape))
}

/// `cond != 0 ? a : b`, each read through broadcast strides of `out_shape`'s rank.
pub fn select(
    cond: (&Storage, &[usize]),
    a: (&Storage, &[usize]),
    b: (&Storage, &[usize]),
    out_shape: &[usize],
) -> Storage {
    let ((c, cs), (x, xs), (y, ys)) = (cond, a, b);
    dispatch!("where"; c, x, y;
        cpu => cpu::select(c, cs, x, xs, y, ys, out_shape);
        gpu => gpu::select(c, cs, x, xs, y, ys, out_shape))
}

/// Reduces the middle extent of an (outer, n, inner) layout to (outer, inner).
pub fn reduce(op: Reduce, x: &Storage, outer: usize, n: usize, inner: usize) -> Storage {
    dispatch!("reduce"; x; cpu => cpu::reduce(op, x, outer, n, inner); gpu => gpu::reduce(op, x, outer, n, inner))
}

/// Batched matrix product; the result is (batch, m, n) contiguous.
pub fn matmul(a: &Storage, b: &Storage, spec: MatmulSpec) -> Storage {
    dispatch!("matmul"; a, b; cpu => cpu::matmul(a, b, spec); gpu => gpu::matmul(a, b, spec))
}

/// A linear layer `x (m×k) · wᵀ + b` (w stored n×k) with the bias added in the product's pass,
/// or `None` where the backend has no such kernel and the op composes it.
pub fn linear(
    x: &Storage,
    w: &Storage,
    b: &Storage,
    m: usize,
    k: usize,
    n: usize,
) -> Option<Storage> {
    match (x, w, b) {
        (Storage::Cpu(x), Storage::Cpu(w), Storage::Cpu(b)) => {
            Some(Storage::Cpu(cpu::linear(x, w, b, m, k, n)))
        }
        (Storage::Gpu(x), Storage::Gpu(w), Storage::Gpu(b)) => {
            gpu::linear(x, w, b, m, k, n).map(Storage::Gpu)
        }
        _ => None,
    }
}

/// One parameter's AdamW step, its scalars folded as in `optim::AdamW`.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// `1 − lr·weight_decay`.
    pub decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f64,
    /// `√(1 − β2ᵗ)`.
    pub bias2_sqrt: f64,
    pub eps: f64,
}

/// The new (parameter, first moment, second moment) of an AdamW step for each `[p, g, m, v]`, in
/// one pass each on the CPU and four parameters per launch on the GPU; `None` for operands on
/// different devices (which the optimizer's composed ops then refuse by name), or an adapter
/// with too few storage bindings for the fused kernel (composed ops then run there).
pub fn adamw(items: &[[&Storage; 4]], steps: &[AdamWStep]) -> Option<Vec<[Storage; 3]>> {
    if items.iter().flatten().all(|s| matches!(s, Storage::Cpu(_))) {
        return Some(
            items
                .iter()
                .zip(steps)
                .map(|([p, g, m, v], &s)| {
                    let [p, g, m, v] = [p, g, m, v].map(|x| cpu_data(x));
                    cpu::adamw(p, g, m, v, s).map(Storage::Cpu)
                })
                .collect(),
        );
    }
    let all = on_one_gpu(items.iter().flatten().copied())?;
    let gpu: Vec<[&gpu::GpuData; 4]> = all
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    (all[0].ctx().max_storage_buffers() >= gpu::ADAMW_BINDINGS).then(|| {
        gpu::adamw(&gpu, steps)
            .into_iter()
            .map(|o| o.map(Storage::Gpu))
            .collect()
    })
}

/// The GPU buffers of `storages` when every one lives on the same GPU context (and there is at
/// least one); `None` otherwise, where a fused kernel does not apply.
fn on_one_gpu<'a>(storages: impl Iterator<Item = &'a Storage>) -> Option<Vec<&'a gpu::GpuData>> {
    let gpu: Vec<&gpu::GpuData> = storages
        .map(|s| match s {
            Storage::Gpu(g) => Some(g),
            Storage::Cpu(_) => None,
        })
        .collect::<Option<_>>()?;
    let first = gpu.first()?;
    gpu.iter()
        .all(|g| Arc::ptr_eq(g.ctx(), first.ctx()))
        .then_some(gpu)
}

/// Batch norm in training of an (outer, c, inner) layout with weight, bias and running
/// statistics `[w, b, running mean, running var]`, in one launch on the GPU: (y, x̂, rstd per
/// channel, new running mean, new running var). `None` where that kernel does not apply (the
/// CPU and mixed devices, where the op composes it; channels longer than the kernel's loops).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &Storage,
    params: [&Storage; 4],
    outer: usize,
    c: usize,
    inner: usize,
    eps: f64,
    momentum: f64,
) -> Option<[Storage; 5]> {
    if outer * inner > gpu::BATCH_NORM_MAX_COUNT {
        return None;
    }
    let gpu = on_one_gpu(std::iter::once(x).chain(params))?;
    let out = gpu::batch_norm(
        gpu[0],
        [gpu[1], gpu[2], gpu[3], gpu[4]],
        outer,
        c,
        inner,
        eps,
        momentum,
    );
    Some(out.map(Storage::Gpu))
}

/// Gradients (x, weight, bias) of [`batch_norm`] from `[x̂, rstd, weight, output gradient]`.
pub fn batch_norm_backward(
    saved: [&Storage; 4],
    outer: usize,
    c: usize,
    inner: usize,
) -> [Storage; 3] {
    let gpu = saved.map(gpu_data);
    gpu::batch_norm_backward(gpu, outer, c, inner).map(Storage::Gpu)
}

/// Σx² of each tensor as one f32 vector, in a launch per eight tensors on the GPU; `None` where
/// that kernel does not apply (CPU or mixed devices, f64, a tensor too long for it), and callers
/// compose squares and sums instead.
pub fn sum_squares(xs: &[&Storage]) -> Option<Storage> {
    let gpu = on_one_gpu(xs.iter().copied())?;
    gpu.iter()
        .all(|g| g.len() <= gpu::SUM_SQUARES_MAX)
        .then(|| Storage::Gpu(gpu::sum_squares(&gpu)))
}

/// Reads `shape` elements of `src` starting at `offset` through `strides` into a new
/// contiguous buffer: permute, narrow and expand are all this one kernel.
pub fn gather_strided(src: &Storage, offset: usize, strides: &[usize], shape: &[usize]) -> Storage {
    dispatch!("copy"; src; cpu => cpu::gather_strided(src, offset, strides, shape); gpu => gpu::gather_strided(src, offset, strides, shape))
}

/// Concatenates contiguous tensors along an axis given as (outer, parts' sizes, inner).
pub fn concat(parts: &[&Storage], outer: usize, sizes: &[usize], inner: usize) -> Storage {
    match parts[0] {
        Storage::Cpu(_) => {
            let ps: Vec<&cpu::CpuData> = parts
                .iter()
                .map(|p| match p {
                    Storage::Cpu(c) => c,
                    Storage::Gpu(_) => panic!("cat: operands live on different devices"),
                })
                .collect();
            Storage::Cpu(cpu::concat(&ps, outer, sizes, inner))
        }
        Storage::Gpu(_) => {
            let ps: Vec<&gpu::GpuData> = parts
                .iter()
                .map(|p| match p {
                    Storage::Gpu(g) => g,
                    Storage::Cpu(_) => panic!("cat: operands live on different devices"),
                })
                .collect();
            Storage::Gpu(gpu::concat(&ps, outer, sizes, inner))
        }
    }
}

/// Row-wise softmax (or log-softmax) over the last extent `cols`.
pub fn softmax(x: &Storage, rows: usize, cols: usize, log: bool) -> Storage {
    dispatch!("softmax"; x; cpu => cpu::softmax(x, rows, cols, log); gpu => gpu::softmax(x, rows, cols, log))
}

/// Gradient of softmax (or log-softmax) from its output `y` and the output gradient `g`.
pub fn softmax_backward(y: &Storage, g: &Storage, rows: usize, cols: usize, log: bool) -> Storage {
    dispatch!("softmax backward"; y, g; cpu => cpu::softmax_backward(y, g, rows, cols, log); gpu => gpu::softmax_backward(y, g, rows, cols, log))
}

/// Row-wise layer norm without affine parameters: returns (x̂, mean, rstd), the latter two
/// with one value per row.
pub fn layer_norm(x: &Storage, rows: usize, cols: usize, eps: f64) -> (Storage, Storage, Storage) {
    match x {
        Storage::Cpu(x) => {
            let (y, m, r) = cpu::layer_norm(x, rows, cols, eps);
            (Storage::Cpu(y), Storage::Cpu(m), Storage::Cpu(r))
        }
        Storage::Gpu(x) => {
            let (y, m, r) = gpu::layer_norm(x, rows, cols, eps);
            (Storage::Gpu(y), Storage::Gpu(m), Storage::Gpu(r))
        }
    }
}

/// Input gradient of the (non-affine) layer norm from x̂, rstd and the gradient of x̂.
pub fn layer_norm_backward(
    xhat: &Storage,
    rstd: &Storage,
    g: &Storage,
    rows: usize,
    cols: usize,
) -> Storage {
    dispatch!("layer_norm backward"; xhat, rstd, g;
        cpu => cpu::layer_norm_backward(xhat, rstd, g, rows, cols);
        gpu => gpu::layer_norm_backward(xhat, rstd, g, rows, cols))
}

/// Layer norm and its affine map `y = x̂·w + b` in one pass (one launch on the GPU): `(y, x̂,
/// rstd)`, or `None` for operands on different devices, which the composed op then refuses.
pub fn layer_norm_affine(
    x: &Storage,
    w: &Storage,
    b: &Storage,
    cols: usize,
    eps: f64,
) -> Option<(Storage, Storage, Storage)> {
    match (x, w, b) {
        (Storage::Cpu(x), Storage::Cpu(w), Storage::Cpu(b)) => {
            let (y, xh, r) = cpu::layer_norm_affine(x, w, b, cols, eps);
            Some((Storage::Cpu(y), Storage::Cpu(xh), Storage::Cpu(r)))
        }
        (Storage::Gpu(x), Storage::Gpu(w), Storage::Gpu(b)) => {
            let rows = x.len() / cols.max(1);
            let (y, xh, r) = gpu::layer_norm_affine(x, w, b, rows, cols, eps);
            Some((Storage::Gpu(y), Storage::Gpu(xh), Storage::Gpu(r)))
        }
        _ => None,
    }
}

/// Gradients `(dx, dw, db)` of [`layer_norm_affine`] from x̂, rstd, the weight and the output
/// gradient (only called where the forward pass was fused).
pub fn layer_norm_affine_backward(
    xhat: &Storage,
    rstd: &Storage,
    w: &Storage,
    g: &Storage,
    cols: usize,
) -> (Storage, Storage, Storage) {
    match (xhat, rstd, w, g) {
        (Storage::Cpu(x), Storage::Cpu(r), Storage::Cpu(w), Storage::Cpu(g)) => {
            let (dx, dw, db) = cpu::layer_norm_affine_backward(x, r, w, g, cols);
            (Storage::Cpu(dx), Storage::Cpu(dw), Storage::Cpu(db))
        }
        (Storage::Gpu(x), Storage::Gpu(r), Storage::Gpu(w), Storage::Gpu(g)) => {
            let rows = x.len() / cols.max(1);
            let (dx, dw, db) = gpu::layer_norm_affine_backward(x, r, w, g, rows, cols);
            (Storage::Gpu(dx), Storage::Gpu(dw), Storage::Gpu(db))
        }
        _ => panic!("layer_norm backward: operands live on different devices"),
    }
}

/// How attention's q, k and v are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Three `(B, H, T, D)` tensors (output `(B, H, Tq, Dv)`).
    Separate,
    /// One self-attention projection `(B, T, 3·H·D)` holding `[q | k | v]`, each `(T, H, D)` per
    /// batch element, as a fused qkv linear writes it (output `(B, T, H·D)`).
    Qkv,
}

/// Fused attention forward: returns the output and each query row's log-sum-exp of scores
/// (bh, tq), which the backward pass uses to rebuild the probabilities. `bias`, if given, is an
/// additive (batch, tk) key mask (0 or -inf) shared by all heads. Only for shapes
/// [`attention_fits`] takes; the op composes the others from primitives.
pub fn attention(
    q: &Storage,
    k: &Storage,
    v: &Storage,
    bias: Option<&Storage>,
    spec: AttnSpec,
) -> (Storage, Storage) {
    match (q, k, v, bias) {
        (Storage::Cpu(q), Storage::Cpu(k), Storage::Cpu(v), b) => {
            let (o, l) = cpu::attention(q, k, v, b.map(cpu_data), spec, Packing::Separate);
            (Storage::Cpu(o), Storage::Cpu(l))
        }
        (Storage::Gpu(q), Storage::Gpu(k), Storage::Gpu(v), b) => {
            let b = b.map(|b| match b {
                Storage::Gpu(b) => b,
                Storage::Cpu(_) => panic!("attention: mask lives on a different device"),
            });
            let (o, l) = gpu::attention(q, k, v, b, spec, Packing::Separate);
            (Storage::Gpu(o), Storage::Gpu(l))
        }
        _ => panic!("attention: operands live on different devices"),
    }
}

fn cpu_data(s: &Storage) -> &cpu::CpuData {
    match s {
        Storage::Cpu(c) => c,
        Storage::Gpu(_) => panic!("operands live on different devices"),
    }
}

fn gpu_data(s: &Storage) -> &gpu::GpuData {
    match s {
        Storage::Gpu(g) => g,
        Storage::Cpu(_) => panic!("operands live on different devices"),
    }
}

/// Whether the backend's fused attention kernels run `spec` (always on the CPU), rather than
/// composing it from primitives.
pub fn attention_fits(x: &Storage, spec: &AttnSpec) -> bool {
    matches!(x, Storage::Cpu(_)) || gpu::attention_fits(spec)
}

/// Attention on a packed qkv projection ([`Packing::Qkv`]): `None` where the backend's fused
/// kernels cannot run it (a GPU's loop limit on long sequences), and the op splits the heads and
/// composes attention from primitives instead.
pub fn attention_packed(
    qkv: &Storage,
    bias: Option<&Storage>,
    spec: AttnSpec,
) -> Option<(Storage, Storage)> {
    match qkv {
        Storage::Cpu(x) => {
            let (o, l) = cpu::attention(x, x, x, bias.map(cpu_data), spec, Packing::Qkv);
            Some((Storage::Cpu(o), Storage::Cpu(l)))
        }
        Storage::Gpu(x) if gpu::attention_fits(&spec) => {
            let (o, l) = gpu::attention(x, x, x, bias.map(gpu_data), spec, Packing::Qkv);
            Some((Storage::Gpu(o), Storage::Gpu(l)))
        }
        Storage::Gpu(_) => None,
    }
}

/// Saved tensors of an attention forward pass, for its backward pass.
pub struct AttnSaved<'a> {
    /// `[q, k, v]`, or `[qkv]` when packed.
    pub inputs: &'a [&'a Storage],
    pub out: &'a Storage,
    pub lse: &'a Storage,
    pub bias: Option<&'a Storage>,
}

/// Fused attention backward from the saved forward pass and the output gradient `g`: the input
/// gradients in the layout of `saved.inputs`. Only for shapes [`attention_fits`] takes (the
/// forward pass ran the fused kernels).
pub fn attention_backward(
    saved: &AttnSaved,
    g: &Storage,
    spec: AttnSpec,
    packing: Packing,
) -> Vec<Storage> {
    // q, k, v as one backend's data: three saved tensors, or the packed one three times.
    fn qkv<'a, T>(
        saved: &[&'a Storage],
        packing: Packing,
        data: fn(&'a Storage) -> &'a T,
    ) -> (&'a T, &'a T, &'a T) {
        match (packing, saved) {
            (Packing::Separate, [q, k, v]) => (data(q), data(k), data(v)),
            (Packing::Qkv, [x]) => (data(x), data(x), data(x)),
            _ => panic!(
                "attention backward: {packing:?} attention saved {} inputs",
                saved.len()
            ),
        }
    }
    match g {
        Storage::Cpu(g) => {
            let (q, k, v) = qkv(saved.inputs, packing, cpu_data);
            let (o, lse, bias) = (cpu_data(saved.out), cpu_data(saved.lse), saved.bias);
            let grads =
                cpu::attention_backward(q, k, v, o, lse, g, bias.map(cpu_data), spec, packing);
            grads.into_iter().map(Storage::Cpu).collect()
        }
        Storage::Gpu(g) => {
            let (q, k, v) = qkv(saved.inputs, packing, gpu_data);
            let (o, lse, bias) = (gpu_data(saved.out), gpu_data(saved.lse), saved.bias);
            let grads =
                gpu::attention_backward(q, k, v, o, lse, g, bias.map(gpu_data), spec, packing);
            grads.into_iter().map(Storage::Gpu).collect()
        }
    }
}

/// Selects `idx` entries along the middle extent of (outer, n, inner): out is (outer, idx.len(), inner).
pub fn index_select(x: &Storage, outer: usize, n: usize, inner: usize, idx: &[u32]) -> Storage {
    dispatch!("index_select"; x; cpu => cpu::index_select(x, outer, n, inner, idx); gpu => gpu::index_select(x, outer, n, inner, idx))
}

/// Adjoint of [`index_select`]: scatter-adds g (outer, idx.len(), inner) into zeros (outer, n, inner).
pub fn index_add(g: &Storage, outer: usize, n: usize, inner: usize, idx: &[u32]) -> Storage {
    dispatch!("index_add"; g; cpu => cpu::index_add(g, outer, n, inner, idx); gpu => gpu::index_add(g, outer, n, inner, idx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each op's WGSL constant is named from its variant and numbered by its place in the enum.
    #[test]
    fn op_constants_name_each_variant() {
        assert_eq!(Unary::Clamp(1.0, 2.0).code(), 18);
        assert_eq!(Binary::Ge.code(), 12);
        let wgsl = wgsl_op_constants();
        for line in [
            "const UNARY_NEG: u32 = 0u;\n",
            "const UNARY_GELU_TANH: u32 = 7u;\n",
            "const UNARY_CLAMP: u32 = 18u;\n",
            "const BINARY_GE: u32 = 12u;\n",
            "const REDUCE_ARG_MIN: u32 = 4u;\n",
        ] {
            assert!(wgsl.contains(line), "{line} in {wgsl}");
        }
        assert_eq!(wgsl.lines().count(), 19 + 13 + 5);
    }
}
