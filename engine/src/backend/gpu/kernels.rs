//! The primitive kernels of `backend/mod.rs`, launched on the GPU.

use super::context::{GpuContext, KernelProfile};
use super::data::GpuData;
use super::shaders::{
    self, ATTENTION, BATCHNORM, COPY, ELEMENTWISE, LAYERNORM, MATMUL, OPTIM, REDUCE, SOFTMAX,
};
use crate::backend::{AdamWStep, AttnSpec, Binary, MatmulSpec, Packing, Reduce, Unary};
use crate::DType;
use std::sync::Arc;

/// Most axes a strided kernel indexes after merging contiguous ones.
const MAX_RANK: usize = 8;
/// Most workgroups along one grid dimension.
const MAX_GROUPS: usize = 65_535;

/// A 2-D grid of `items.div_ceil(per_group)` workgroups (kernels fold y back into a flat index).
fn grid(items: usize, per_group: usize) -> [u32; 3] {
    let groups = items.div_ceil(per_group);
    let x = groups.min(MAX_GROUPS);
    [x as u32, groups.div_ceil(x.max(1)) as u32, 1]
}

/// The grid of an element-wise launch over the quads (groups of four outputs) of `n` elements.
/// On a software adapter each invocation loops over several quads: llvmpipe pays a fixed cost
/// per invocation that is larger than the work of one quad.
fn quad_grid(ctx: &GpuContext, n: usize) -> [u32; 3] {
    let quads = n.div_ceil(4);
    match ctx.profile() {
        KernelProfile::Software => grid(quads.div_ceil(SOFTWARE_QUADS_PER_INVOCATION), 256),
        KernelProfile::Hardware => grid(quads, 256),
    }
}

/// Quads one invocation handles on a software adapter (16 elements).
const SOFTWARE_QUADS_PER_INVOCATION: usize = 4;

fn bits(v: f64) -> u32 {
    (v as f32).to_bits()
}

/// A kernel: section `name` of a shader family's source. `launch` compiles each variant once.
#[derive(Clone, Copy)]
struct Kernel {
    family: &'static str,
    name: &'static str,
}

/// The [`Kernel`] for section `$name` of a shader family.
macro_rules! kernel {
    ($family:expr, $name:literal) => {
        Kernel {
            family: $family,
            name: $name,
        }
    };
}

fn launch(ctx: &GpuContext, k: Kernel, params: &[u32], buffers: &[&GpuData], grid: [u32; 3]) {
    launch_with(ctx, k, &[], params, buffers, grid);
}

/// [`launch`] of a pipeline specialised on override constants (see [`GpuContext::launch`]).
fn launch_with(
    ctx: &GpuContext,
    k: Kernel,
    constants: &[(&'static str, u32)],
    params: &[u32],
    buffers: &[&GpuData],
    grid: [u32; 3],
) {
    let bufs: Vec<&wgpu::Buffer> = buffers.iter().map(|b| b.buffer()).collect();
    let mask = f16_mask(k, buffers);
    let source = || shaders::module(k.family, k.name, mask);
    ctx.launch(k.name, &source, mask, constants, params, &bufs, grid);
}

/// Bit `i` set where buffer `i` holds f16: the kernel variant to run. Panics, naming the kernel,
/// where an f16 buffer meets a binding that takes f32 only (see `shaders::module`).
#[track_caller]
fn f16_mask(k: Kernel, buffers: &[&GpuData]) -> u32 {
    let mask = buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.dtype() == DType::F16)
        .fold(0, |m, (i, _)| m | 1 << i);
    if mask != 0 {
        let typed = shaders::aliases(k.family, k.name).len();
        assert!(
            mask >> typed == 0,
            "GPU kernel {}: an operand is f16, which only matmul, linear, attention and to_dtype \
             take (cast it with to_dtype(DType::F32) first)",
            k.name
        );
    }
    mask
}

/// Drops size-1 axes and merges axes that are contiguous in every operand, so that typical
/// broadcasts index with one or two axes.
#[track_caller]
fn collapse(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] == 1 {
            continue;
        }
        let merge = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| s[d] == o[0] * out_shape[0]);
        if merge {
            out_shape[0] *= shape[d];
        } else {
            out_shape.insert(0, shape[d]);
            for (o, s) in out_strides.iter_mut().zip(strides) {
                o.insert(0, s[d]);
            }
        }
    }
    assert!(
        out_shape.len() <= MAX_RANK,
        "GPU backend: a strided op needs {} independent axes, more than the {MAX_RANK} supported",
        out_shape.len()
    );
    (out_shape, out_strides)
}

/// Launches a strided element-wise kernel over the quads of `shape` (see `quad_offsets` in
/// common.wgsl): parameters [quads, p1, rank, 0, shape[8], strides of each operand [8]],
/// specialised on the merged rank, on whether the innermost axis holds whole quads, and on `op`.
/// The output has the first input's dtype.
fn launch_strided(
    k: Kernel,
    op: Option<u32>,
    p1: u32,
    shape: &[usize],
    strides: &[&[usize]],
    inputs: &[&GpuData],
) -> GpuData {
    let ctx = inputs[0].ctx();
    let n: usize = shape.iter().product();
    let y = GpuData::alloc_as(ctx, n, inputs[0].dtype());
    let (shape, strides) = collapse(shape, strides);
    let rank = shape.len().max(1) as u32;
    let aligned = shape.last().is_some_and(|d| d % 4 == 0);
    let mut p = vec![n.div_ceil(4) as u32, p1, rank, 0];
    let pad = |v: &[usize], p: &mut Vec<u32>| {
        p.extend(v.iter().map(|&x| x as u32));
        p.extend(std::iter::repeat_n(0, MAX_RANK - v.len()));
    };
    pad(&shape, &mut p);
    for s in &strides {
        pad(s, &mut p);
    }
    let mut constants = vec![("RANK", rank), ("ALIGNED", aligned as u32)];
    constants.extend(op.map(|op| ("OP", op)));
    let mut buffers = inputs.to_vec();
    buffers.push(&y);
    launch_with(ctx, k, &constants, &p, &buffers, quad_grid(ctx, n));
    y
}

/// An element-wise op over contiguous inputs of `n` elements, as quads (see `unary` in the WGSL).
fn launch_contiguous(k: Kernel, op: Unary, inputs: &[&GpuData]) -> GpuData {
    let ctx = inputs[0].ctx();
    let n = inputs[0].len();
    let y = GpuData::alloc(ctx, n);
    let (a, b) = op.params();
    let p = [n.div_ceil(4) as u32, bits(a), bits(b)];
    let mut buffers = inputs.to_vec();
    buffers.push(&y);
    launch_with(
        ctx,
        k,
        &[("OP", op.code())],
        &p,
        &buffers,
        quad_grid(ctx, n),
    );
    y
}

pub fn unary(op: Unary, x: &GpuData) -> GpuData {
    launch_contiguous(kernel!(ELEMENTWISE, "unary"), op, &[x])
}

pub fn unary_backward(op: Unary, x: &GpuData, g: &GpuData) -> GpuData {
    launch_contiguous(kernel!(ELEMENTWISE, "unary_backward"), op, &[x, g])
}

pub fn binary(
    op: Binary,
    a: &GpuData,
    sa: &[usize],
    b: &GpuData,
    sb: &[usize],
    shape: &[usize],
) -> GpuData {
    let k = kernel!(ELEMENTWISE, "binary");
    launch_strided(k, Some(op.code()), 0, shape, &[sa, sb], &[a, b])
}

pub fn select(
    c: &GpuData,
    sc: &[usize],
    a: &GpuData,
    sa: &[usize],
    b: &GpuData,
    sb: &[usize],
    shape: &[usize],
) -> GpuData {
    let k = kernel!(ELEMENTWISE, "select");
    launch_strided(k, None, 0, shape, &[sc, sa, sb], &[c, a, b])
}

pub fn gather_strided(x: &GpuData, offset: usize, strides: &[usize], shape: &[usize]) -> GpuData {
    let k = kernel!(COPY, "gather");
    launch_strided(k, None, offset as u32, shape, &[strides], &[x])
}

pub fn concat(parts: &[&GpuData], outer: usize, sizes: &[usize], inner: usize) -> GpuData {
    let ctx = parts[0].ctx();
    let total: usize = sizes.iter().sum();
    let y = GpuData::alloc(ctx, outer * total * inner);
    let mut start = 0;
    for (part, &s) in parts.iter().zip(sizes) {
        let n = outer * s * inner;
        let p = [
            n as u32,
            (s * inner) as u32,
            (total * inner) as u32,
            (start * inner) as u32,
        ];
        launch(
            ctx,
            kernel!(COPY, "copy_rows"),
            &p,
            &[part, &y],
            grid(n, 256),
        );
        start += s;
    }
    y
}

/// Most loop iterations one invocation spends on a reduction: llvmpipe (lavapipe) ends an
/// invocation's loops after 65,535 iterations in all, silently truncating longer sums.
const LOOP_BUDGET: usize = 16_384;
/// Threads of the row kernels (reduce_rows, softmax, layer_norm); mirrors `WG` in the WGSL.
const ROW_THREADS: usize = 64;

pub fn reduce(op: Reduce, x: &GpuData, outer: usize, n: usize, inner: usize) -> GpuData {
    let ctx = x.ctx();
    // One invocation per block of at most LOOP_BUDGET entries (no barriers, which CPU drivers
    // run slowly), reduced again until one block is left; extrema carry their indices between
    // passes.
    // Stand-ins for the index buffers a sum does not use (one read, one written: a buffer may
    // not be bound both ways in one launch).
    let (dummy, dummy_out) = (GpuData::alloc(ctx, 1), GpuData::alloc(ctx, 1));
    // Sums carry no indices.
    let sum = matches!(op, Reduce::Sum);
    let (mut values, mut indices): (Option<GpuData>, Option<GpuData>) = (None, None);
    let mut n = n;
    loop {
        // Blocks short enough that the launch has enough invocations to fill the device: ~64k
        // on a GPU (a bias gradient's 25,600 rows become ~340 blocks per column), a few
        // thousand on a CPU driver's threads, and as long as the loop budget allows on one
        // thread (a single pass up to 16,384 rows).
        let (busy, shortest) = match ctx.profile() {
            KernelProfile::Software if ctx.runs_serially() => (1, 256),
            KernelProfile::Software => (2_048, 256),
            KernelProfile::Hardware => (65_536, 64),
        };
        let chunk = (outer * n * inner / busy).clamp(shortest, LOOP_BUDGET);
        let blocks = n.div_ceil(chunk).max(1);
        let last = blocks == 1;
        let len = outer * blocks * inner;
        let y = GpuData::alloc(ctx, len);
        let iy = if sum {
            None
        } else {
            Some(GpuData::alloc(ctx, len))
        };
        let p = [outer, n, inner, chunk, blocks].map(|v| v as u32);
        let src = values.as_ref().unwrap_or(x);
        launch_with(
            ctx,
            kernel!(REDUCE, "reduce_chunks"),
            &[
                ("OP", op.code()),
                ("HAS_IDX", indices.is_some() as u32),
                ("FINAL", last as u32),
            ],
            &p,
            &[
                src,
                indices.as_ref().unwrap_or(&dummy),
                &y,
                iy.as_ref().unwrap_or(&dummy_out),
            ],
            grid(len, 256),
        );
        if last {
            return y;
        }
        (values, indices, n) = (Some(y), iy, blocks);
    }
}

/// Length of K one matmul launch covers: the scalar kernel spends 9 loop iterations per step of
/// K, so 2,048 keeps an invocation far below llvmpipe's 65,535 (a multiple of 4 for vec4 loads).
const MATMUL_K_SLICE: usize = 2048;

pub fn matmul(a: &GpuData, b: &GpuData, s: MatmulSpec) -> GpuData {
    product(a, b, s, None)
}

/// A linear layer `x (m×k) · wᵀ + bias` (w stored n×k) with the bias added in the product's
/// stores, or `None` where the vec4 kernel does not take the shapes (the op then composes it).
pub fn linear(
    x: &GpuData,
    w: &GpuData,
    bias: &GpuData,
    m: usize,
    k: usize,
    n: usize,
) -> Option<GpuData> {
    let s = MatmulSpec {
        batch: 1,
        m,
        k,
        n,
        trans_a: false,
        trans_b: true,
        a_batch_stride: 0,
        b_batch_stride: 0,
    };
    let hardware = x.ctx().profile() == KernelProfile::Hardware;
    (!hardware && vec4_fits(&s)).then(|| product(x, w, s, Some(bias)))
}

/// Whether the vec4 kernel takes these shapes: K and N multiples of 4, aligned batch strides.
fn vec4_fits(s: &MatmulSpec) -> bool {
    s.k.is_multiple_of(4)
        && s.n.is_multiple_of(4)
        && s.n >= 4
        && s.a_batch_stride.is_multiple_of(4)
        && s.b_batch_stride.is_multiple_of(4)
}

/// [`matmul`], and [`linear`] when `bias` is given (that caller has checked [`vec4_fits`] and
/// the profile, so that the bias reaches the vec4 kernel).
fn product(a: &GpuData, b: &GpuData, s: MatmulSpec, bias: Option<&GpuData>) -> GpuData {
    let ctx = a.ctx();
    if s.k == 0 {
        // An empty sum: the product is all zeros.
        return fill(ctx, s.batch * s.m * s.n, 0.0);
    }
    let (a_rs, a_cs) = if s.trans_a { (1, s.m) } else { (s.k, 1) };
    let (b_rs, b_cs) = if s.trans_b { (1, s.k) } else { (s.n, 1) };
    // Skinny products (a few rows or columns) would leave most of a 128×128 tile idle, unless K
    // is long enough to split across workgroups (the weight gradient of a 16-pixel patch
    // projection: 16 × 25,600 · 25,600 × 64).
    let tiled = (s.m >= 32 && s.n >= 32) || s.k >= 1024;
    if ctx.profile() == KernelProfile::Hardware && tiled {
        debug_assert!(bias.is_none(), "internal: the tiled product adds no bias");
        let strides = [a_rs, a_cs, b_rs, b_cs, s.a_batch_stride, s.b_batch_stride];
        return matmul_tiled(a, b, s, strides);
    }
    let c = GpuData::alloc(ctx, s.batch * s.m * s.n);
    let tiles = [s.n.div_ceil(64) as u32, s.m.div_ceil(64) as u32];
    // The vec4 kernel reads row-major and transposed operands in place (override constants
    // TRANS_A, TRANS_B); a transposed A is read four rows at a time, so one whose M is not a
    // multiple of 4 is copied to row-major.
    let (a_rm, dummy);
    // f16 operands are never copied (the copy kernels take f32): the scalar kernel reads them.
    let copy_a = s.trans_a && !s.m.is_multiple_of(4);
    let vec4 = vec4_fits(&s) && !(copy_a && a.dtype() == DType::F16);
    let (a, k, constants, a_bs, bias_slot) = if vec4 {
        a_rm = copy_a.then(|| {
            let batches = if s.a_batch_stride == 0 { 1 } else { s.batch };
            gather_strided(a, 0, &[s.a_batch_stride, 1, s.m], &[batches, s.m, s.k])
        });
        let a_bs = if copy_a && s.a_batch_stride != 0 {
            s.m * s.k
        } else {
            s.a_batch_stride
        };
        let constants = vec![
            ("TRANS_A", (s.trans_a && !copy_a) as u32),
            ("TRANS_B", s.trans_b as u32),
            ("HAS_BIAS", bias.is_some() as u32),
        ];
        // Without a bias, a one-element stand-in the kernel never reads.
        dummy = bias.is_none().then(|| GpuData::alloc(ctx, 1));
        (
            a_rm.as_ref().unwrap_or(a),
            kernel!(MATMUL, "matmul_vec4"),
            constants,
            a_bs,
            bias.or(dummy.as_ref()),
        )
    } else {
        (a, kernel!(MATMUL, "matmul"), vec![], s.a_batch_stride, None)
    };
    let buffers: Vec<&GpuData> = [a, b, &c].into_iter().chain(bias_slot).collect();
    let mut base = 0;
    // K is covered in slices, the later ones adding into C, to bound each invocation's loop.
    while base < s.batch {
        let chunk = (s.batch - base).min(MAX_GROUPS);
        for k0 in (0..s.k).step_by(MATMUL_K_SLICE) {
            let k1 = (k0 + MATMUL_K_SLICE).min(s.k);
            let strides = [a_rs, a_cs, b_rs, b_cs, a_bs, s.b_batch_stride];
            let p = product_params(&s, strides, base, k0..k1, &[(k0 > 0) as usize]);
            let grid = [tiles[0], tiles[1], chunk as u32];
            launch_with(ctx, k, &constants, &p, &buffers, grid);
        }
        base += chunk;
    }
    c
}

/// The parameters both product kernels start with: [M, N, K, a_rs, a_cs, b_rs, b_cs, a_bs, b_bs,
/// batch_base, k_start, k_end], then the kernel's own.
fn product_params(
    s: &MatmulSpec,
    strides: [usize; 6],
    batch_base: usize,
    k: std::ops::Range<usize>,
    own: &[usize],
) -> Vec<u32> {
    [s.m, s.n, s.k]
        .into_iter()
        .chain(strides)
        .chain([batch_base, k.start, k.end])
        .chain(own.iter().copied())
        .map(|v| v as u32)
        .collect()
}

/// Workgroups that keep a GPU busy; fewer tiles than this split K to make more.
const BUSY_GROUPS: usize = 512;

/// The hardware profile's product (`matmul_tiled`): transposes read in place, and K split across
/// workgroups when there are too few output tiles (a weight gradient's 64×192 from 25,600 rows
/// is two tiles) or K is longer than one invocation may loop on CPU drivers.
fn matmul_tiled(a: &GpuData, b: &GpuData, s: MatmulSpec, strides: [usize; 6]) -> GpuData {
    let ctx = a.ctx();
    let tiles = s.m.div_ceil(128) * s.n.div_ceil(128) * s.batch;
    // Only CPU drivers limit an invocation's loops. Each split at least 256 long (a multiple of
    // the kernel's step of 8).
    let slice = if ctx.is_software() {
        MATMUL_K_SLICE
    } else {
        usize::MAX
    };
    let splits =
        s.k.div_ceil(slice)
            .max(BUSY_GROUPS.div_ceil(tiles).min(s.k / 256))
            .max(1);
    let split_len = s.k.div_ceil(splits).next_multiple_of(8);
    let splits = s.k.div_ceil(split_len);
    let out = s.batch * s.m * s.n;
    let c = GpuData::alloc(ctx, splits * out);
    let mut base = 0;
    while base < s.batch {
        let chunk = (s.batch - base).min(MAX_GROUPS / splits);
        let p = product_params(&s, strides, base, 0..s.k, &[splits, split_len, out]);
        let grid = [
            s.n.div_ceil(128) as u32,
            s.m.div_ceil(128) as u32,
            (chunk * splits) as u32,
        ];
        launch(ctx, kernel!(MATMUL, "matmul_tiled"), &p, &[a, b, &c], grid);
        base += chunk;
    }
    if splits == 1 {
        return c;
    }
    // The slabs summed in split order: the same bits on every run.
    reduce(Reduce::Sum, &c, 1, splits, out)
}

/// `x`'s values as `dtype` (f32 ↔ f16: rounded to nearest, ±inf beyond f16's range).
pub fn cast(x: &GpuData, dtype: DType) -> GpuData {
    let ctx = x.ctx();
    let y = GpuData::alloc_as(ctx, x.len(), dtype);
    let p = [x.len() as u32];
    launch(ctx, kernel!(COPY, "cast"), &p, &[x, &y], grid(x.len(), 256));
    y
}

/// Rows up to this long use one invocation per row (no barriers); longer ones a workgroup.
const ROWWISE_MAX: usize = 4096;

/// Whether rows of `cols` get one invocation each: short rows in the software profile. A GPU
/// reads memory fastest when neighbouring invocations read neighbouring elements, so the
/// hardware profile always spreads a row over a workgroup.
fn rowwise(ctx: &GpuContext, cols: usize) -> bool {
    ctx.profile() == KernelProfile::Software && cols <= ROWWISE_MAX
}

/// The per-row-invocation kernel or the workgroup kernel, as [`rowwise`] says, with its grid:
/// 64 rows per workgroup, or one.
fn row_kernel(
    ctx: &GpuContext,
    rows: usize,
    cols: usize,
    per_row: Kernel,
    workgroup: Kernel,
) -> (Kernel, [u32; 3]) {
    if rowwise(ctx, cols) {
        (per_row, grid(rows, 64))
    } else {
        (workgroup, grid(rows, 1))
    }
}

/// Panics unless a row kernel's three passes over `cols` stay within the loop budget.
#[track_caller]
fn check_row_len(op: &str, cols: usize) {
    assert!(
        cols <= ROW_THREADS * LOOP_BUDGET,
        "{op}: rows of {cols} elements exceed the GPU row kernels' {} (a CPU-driver loop limit)",
        ROW_THREADS * LOOP_BUDGET
    );
}

#[track_caller]
pub fn softmax(x: &GpuData, rows: usize, cols: usize, log: bool) -> GpuData {
    check_row_len("softmax", cols);
    let ctx = x.ctx();
    let y = GpuData::alloc(ctx, x.len());
    let p = [rows as u32, cols as u32, log as u32];
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(SOFTMAX, "softmax_rowwise"),
        kernel!(SOFTMAX, "softmax"),
    );
    launch(ctx, k, &p, &[x, &y], grid);
    y
}

pub fn softmax_backward(y: &GpuData, g: &GpuData, rows: usize, cols: usize, log: bool) -> GpuData {
    let ctx = y.ctx();
    let dx = GpuData::alloc(ctx, y.len());
    let p = [rows as u32, cols as u32, log as u32];
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(SOFTMAX, "softmax_backward_rowwise"),
        kernel!(SOFTMAX, "softmax_backward"),
    );
    launch(ctx, k, &p, &[y, g, &dx], grid);
    dx
}

#[track_caller]
pub fn layer_norm(x: &GpuData, rows: usize, cols: usize, eps: f64) -> (GpuData, GpuData, GpuData) {
    let (y, mean, rstd, _) = layer_norm_launch(x, None, rows, cols, eps);
    (y, mean, rstd)
}

/// Layer norm with its affine weight and bias in one launch: (y, x̂, rstd).
#[track_caller]
pub fn layer_norm_affine(
    x: &GpuData,
    w: &GpuData,
    b: &GpuData,
    rows: usize,
    cols: usize,
    eps: f64,
) -> (GpuData, GpuData, GpuData) {
    let (y, _, rstd, xhat) = layer_norm_launch(x, Some((w, b)), rows, cols, eps);
    (y, xhat.expect("an affine launch keeps x̂"), rstd)
}

/// One layer-norm launch: (y, mean, rstd, and x̂ apart from y when affine).
#[track_caller]
fn layer_norm_launch(
    x: &GpuData,
    affine: Option<(&GpuData, &GpuData)>,
    rows: usize,
    cols: usize,
    eps: f64,
) -> (GpuData, GpuData, GpuData, Option<GpuData>) {
    check_row_len("layer_norm", cols);
    let ctx = x.ctx();
    let (y, mean, rstd) = (
        GpuData::alloc(ctx, x.len()),
        GpuData::alloc(ctx, rows),
        GpuData::alloc(ctx, rows),
    );
    let xhat = affine.map(|_| GpuData::alloc(ctx, x.len()));
    let p = [rows as u32, cols as u32, bits(eps)];
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(LAYERNORM, "layer_norm_rowwise"),
        kernel!(LAYERNORM, "layer_norm"),
    );
    // Without affine parameters the extra bindings are stand-ins the kernel never touches.
    let (w, b) = affine.unwrap_or((x, x));
    let buffers = [x, &y, &mean, &rstd, w, b, xhat.as_ref().unwrap_or(&y)];
    let constants = [("AFFINE", affine.is_some() as u32)];
    launch_with(ctx, k, &constants, &p, &buffers, grid);
    (y, mean, rstd, xhat)
}

pub fn layer_norm_backward(
    xhat: &GpuData,
    rstd: &GpuData,
    g: &GpuData,
    rows: usize,
    cols: usize,
) -> GpuData {
    layer_norm_backward_launch(xhat, rstd, None, g, rows, cols).0
}

/// The affine layer norm's gradients (x, weight, bias): the input's and g·x̂ in one launch, then
/// the two sums over rows.
pub fn layer_norm_affine_backward(
    xhat: &GpuData,
    rstd: &GpuData,
    w: &GpuData,
    g: &GpuData,
    rows: usize,
    cols: usize,
) -> (GpuData, GpuData, GpuData) {
    let (dx, gx) = layer_norm_backward_launch(xhat, rstd, Some(w), g, rows, cols);
    let gx = gx.expect("an affine launch writes g·x̂");
    let dw = reduce(Reduce::Sum, &gx, 1, rows, cols);
    let db = reduce(Reduce::Sum, g, 1, rows, cols);
    (dx, dw, db)
}

/// One layer-norm backward launch: dx, and g·x̂ when affine (its gradient passes through `w`).
fn layer_norm_backward_launch(
    xhat: &GpuData,
    rstd: &GpuData,
    w: Option<&GpuData>,
    g: &GpuData,
    rows: usize,
    cols: usize,
) -> (GpuData, Option<GpuData>) {
    let ctx = xhat.ctx();
    let dx = GpuData::alloc(ctx, xhat.len());
    let gx = w.map(|_| GpuData::alloc(ctx, xhat.len()));
    let p = [rows as u32, cols as u32];
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(LAYERNORM, "layer_norm_backward_rowwise"),
        kernel!(LAYERNORM, "layer_norm_backward"),
    );
    let buffers = [
        xhat,
        rstd,
        g,
        &dx,
        w.unwrap_or(xhat),
        gx.as_ref().unwrap_or(&dx),
    ];
    launch_with(
        ctx,
        k,
        &[("AFFINE", w.is_some() as u32)],
        &p,
        &buffers,
        grid,
    );
    (dx, gx)
}

/// Most values per channel the batch-norm kernels take: three passes over them stay within
/// llvmpipe's loop limit.
pub const BATCH_NORM_MAX_COUNT: usize = LOOP_BUDGET;

/// Training batch norm of an (outer, c, inner) tensor with weight, bias and running statistics,
/// one invocation per channel: (y, x̂, rstd per channel, new running mean, new running var).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &GpuData,
    [w, b, rm, rv]: [&GpuData; 4],
    outer: usize,
    c: usize,
    inner: usize,
    eps: f64,
    momentum: f64,
) -> [GpuData; 5] {
    let ctx = x.ctx();
    let [y, xhat] = [(); 2].map(|_| GpuData::alloc(ctx, x.len()));
    let [rstd, mean, var] = [(); 3].map(|_| GpuData::alloc(ctx, c));
    let p = [
        (outer * inner) as u32,
        c as u32,
        inner as u32,
        bits(eps),
        bits(momentum),
    ];
    let buffers = [x, w, b, rm, rv, &y, &xhat, &rstd, &mean, &var];
    let groups = c.div_ceil(64) as u32;
    launch(
        ctx,
        kernel!(BATCHNORM, "batch_norm"),
        &p,
        &buffers,
        [groups, 1, 1],
    );
    [y, xhat, rstd, mean, var]
}

/// The gradients (x, weight, bias) of [`batch_norm`] from x̂, rstd, the weight and the output
/// gradient, one invocation per channel.
pub fn batch_norm_backward(
    [xhat, rstd, w, g]: [&GpuData; 4],
    outer: usize,
    c: usize,
    inner: usize,
) -> [GpuData; 3] {
    let ctx = xhat.ctx();
    let dx = GpuData::alloc(ctx, xhat.len());
    let [dw, db] = [(); 2].map(|_| GpuData::alloc(ctx, c));
    let p = [(outer * inner) as u32, c as u32, inner as u32];
    let groups = c.div_ceil(64) as u32;
    launch(
        ctx,
        kernel!(BATCHNORM, "batch_norm_backward"),
        &p,
        &[xhat, rstd, w, g, &dx, &dw, &db],
        [groups, 1, 1],
    );
    [dx, dw, db]
}

/// Head dimensions the fused kernels keep in registers.
const MAX_HEAD_DIM: usize = 128;

/// Whether the fused kernels can run `s`: head dimensions in registers and multiples of 4 (rows
/// are read as vec4s), and each invocation's loop over the other sequence (about 2d + dv
/// multiply-adds per key or query) within llvmpipe's loop limit. Elsewhere attention is composed
/// from matmuls and a softmax.
pub fn attention_fits(s: &AttnSpec) -> bool {
    s.d <= MAX_HEAD_DIM
        && s.dv <= MAX_HEAD_DIM
        && s.d.is_multiple_of(4)
        && s.dv.is_multiple_of(4)
        && s.d + s.dv + s.tq.max(s.tk) * (2 * s.d + s.dv + 2) <= 4 * LOOP_BUDGET - 4096
}

/// The kernels' parameters: the shape and scale, then where each row of q, k, v and the output
/// starts (`[n_stride, h_stride, row_stride, offset]` each; see shaders/attention.wgsl). Head
/// sizes and masks are override constants ([`attention_constants`]).
fn attention_params(s: &AttnSpec, packing: Packing) -> Vec<u32> {
    let (h, d, dv) = (s.heads, s.d, s.dv);
    let layout = match packing {
        // (bh, T, D) each.
        Packing::Separate => [
            [h * s.tq * d, s.tq * d, d, 0],
            [h * s.tk * d, s.tk * d, d, 0],
            [h * s.tk * dv, s.tk * dv, dv, 0],
            [h * s.tq * dv, s.tq * dv, dv, 0],
        ],
        // q, k, v in place in (B, T, 3·C); the output (B, T, C) with heads side by side.
        Packing::Qkv => {
            let c = h * d;
            [
                [s.tq * 3 * c, d, 3 * c, 0],
                [s.tk * 3 * c, d, 3 * c, c],
                [s.tk * 3 * c, d, 3 * c, 2 * c],
                [s.tq * c, d, c, 0],
            ]
        }
    };
    let mut p = vec![
        s.bh as u32,
        h as u32,
        s.tq as u32,
        s.tk as u32,
        bits(s.scale),
        f32::INFINITY.to_bits(),
    ];
    p.extend(layout.iter().flatten().map(|&v| v as u32));
    p
}

/// The attention kernels' grid: blocks of 64 rows by problem (see `row_of` in attention.wgsl).
fn attention_grid(bh: usize, rows: usize) -> [u32; 3] {
    let y = bh.clamp(1, MAX_GROUPS);
    [rows.div_ceil(64) as u32, y as u32, bh.div_ceil(y) as u32]
}

/// The attention kernels' override constants (see attention.wgsl).
fn attention_constants(s: &AttnSpec, bias: bool) -> [(&'static str, u32); 4] {
    [
        ("D", s.d as u32),
        ("DV", s.dv as u32),
        ("CAUSAL", s.causal as u32),
        ("HAS_BIAS", bias as u32),
    ]
}

/// Fused attention forward: the output (in `packing`'s layout) and each query row's log-sum-exp.
/// For [`Packing::Qkv`], `q`, `k` and `v` are the same packed buffer and the caller has checked
/// [`attention_fits`].
#[track_caller]
pub fn attention(
    q: &GpuData,
    k: &GpuData,
    v: &GpuData,
    bias: Option<&GpuData>,
    s: AttnSpec,
    packing: Packing,
) -> (GpuData, GpuData) {
    assert!(
        s.d <= MAX_HEAD_DIM && s.dv <= MAX_HEAD_DIM,
        "attention: head dimensions {} and {} exceed the GPU kernel's {MAX_HEAD_DIM}",
        s.d,
        s.dv
    );
    if !attention_fits(&s) {
        assert_eq!(
            packing,
            Packing::Separate,
            "internal: packed attention too long"
        );
        return attention_composed(q, k, v, bias, s);
    }
    let ctx = q.ctx();
    let o = GpuData::alloc(ctx, s.bh * s.tq * s.dv);
    let lse = GpuData::alloc(ctx, s.bh * s.tq);
    // Without a mask, a one-element stand-in the kernel never reads.
    let dummy = GpuData::alloc(ctx, 1);
    launch_with(
        ctx,
        kernel!(ATTENTION, "attention"),
        &attention_constants(&s, bias.is_some()),
        &attention_params(&s, packing),
        &[q, k, v, bias.unwrap_or(&dummy), &o, &lse],
        attention_grid(s.bh, s.tq),
    );
    (o, lse)
}

/// Fused attention backward from the forward's inputs, output and log-sum-exp and the output
/// gradient `g`: `[dq, dk, dv]`, or `[dqkv]` for [`Packing::Qkv`], whose q part one launch writes
/// and whose k and v parts another. Row deltas, dq, then dk and dv (one launch packed, two
/// separate), no atomics; the caller has checked [`attention_fits`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &GpuData,
    k: &GpuData,
    v: &GpuData,
    o: &GpuData,
    lse: &GpuData,
    g: &GpuData,
    bias: Option<&GpuData>,
    s: AttnSpec,
    packing: Packing,
) -> Vec<GpuData> {
    let ctx = q.ctx();
    let p = attention_params(&s, packing);
    let constants = attention_constants(&s, bias.is_some());
    let dummy = GpuData::alloc(ctx, 1);
    let bias = bias.unwrap_or(&dummy);
    let ld = GpuData::alloc(ctx, 2 * s.bh * s.tq);
    launch_with(
        ctx,
        kernel!(ATTENTION, "attention_delta"),
        &constants,
        &p,
        &[g, o, lse, &ld],
        attention_grid(s.bh, s.tq),
    );
    // Packed, the three kernels write disjoint parts (q's, k's, v's places) of one gradient.
    let out: Vec<GpuData> = match packing {
        Packing::Separate => vec![
            GpuData::alloc(ctx, s.bh * s.tq * s.d),
            GpuData::alloc(ctx, s.bh * s.tk * s.d),
            GpuData::alloc(ctx, s.bh * s.tk * s.dv),
        ],
        Packing::Qkv => vec![GpuData::alloc(ctx, q.len())],
    };
    let (dq, dk, dv) = match &out[..] {
        [dq, dk, dv] => (dq, dk, dv),
        [dqkv] => (dqkv, dqkv, dqkv),
        _ => unreachable!("one or three gradients"),
    };
    launch_with(
        ctx,
        kernel!(ATTENTION, "attention_dq"),
        &constants,
        &p,
        &[q, k, v, bias, g, &ld, dq],
        attention_grid(s.bh, s.tq),
    );
    // Packed, one launch writes dk and dv (their places in one buffer); separate, one each.
    let launches = match packing {
        Packing::Qkv => vec![(dk, true, true)],
        Packing::Separate => vec![(dk, true, false), (dv, false, true)],
    };
    for (grad, want_dk, want_dv) in launches {
        let mut constants = constants.to_vec();
        constants.extend([("WANT_DK", want_dk as u32), ("WANT_DV", want_dv as u32)]);
        launch_with(
            ctx,
            kernel!(ATTENTION, "attention_dkv"),
            &constants,
            &p,
            &[q, k, v, bias, g, &ld, grad],
            attention_grid(s.bh, s.tk),
        );
    }
    out
}

/// Attention as softmax(q kᵀ · scale + masks) v from separate kernels, with the same outputs
/// (including the log-sum-exp, +inf for a query that sees no key) as the fused kernel.
fn attention_composed(
    q: &GpuData,
    k: &GpuData,
    v: &GpuData,
    bias: Option<&GpuData>,
    s: AttnSpec,
) -> (GpuData, GpuData) {
    let ctx = q.ctx();
    let rows = s.bh * s.tq;
    let mut sc = unary(Unary::MulScalar(s.scale), &matmul(q, k, s.scores()));
    let shape = [s.bh / s.heads, s.heads, s.tq, s.tk];
    let full = crate::shape::strides(&shape);
    if let Some(b) = bias {
        sc = binary(Binary::Add, &sc, &full, b, &[s.tk, 0, 0, 1], &shape);
    }
    if s.causal {
        let mask: Vec<f32> = (0..s.tq * s.tk)
            .map(|i| {
                if i % s.tk > i / s.tk {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        sc = binary(
            Binary::Add,
            &sc,
            &full,
            &GpuData::upload(ctx, &mask),
            &[0, 0, s.tk, 1],
            &shape,
        );
    }
    let p = softmax(&sc, rows, s.tk, false);
    let scalar = |v: f32| GpuData::upload(ctx, &[v]);
    let m = binary(
        Binary::Max,
        &reduce(Reduce::Max, &sc, rows, s.tk, 1),
        &[1],
        &scalar(-3.0e38),
        &[0],
        &[rows],
    );
    let e = unary(
        Unary::Exp,
        &binary(Binary::Sub, &sc, &[s.tk, 1], &m, &[1, 0], &[rows, s.tk]),
    );
    let l = reduce(Reduce::Sum, &e, rows, s.tk, 1);
    let lse = binary(Binary::Add, &m, &[1], &unary(Unary::Log, &l), &[1], &[rows]);
    let none_visible = binary(Binary::Eq, &l, &[1], &scalar(0.0), &[0], &[rows]);
    let lse = select(
        &none_visible,
        &[1],
        &scalar(f32::INFINITY),
        &[0],
        &lse,
        &[1],
        &[rows],
    );
    (matmul(&p, v, s.output()), lse)
}

fn upload_u32(ctx: &Arc<GpuContext>, v: &[u32]) -> GpuData {
    GpuData::upload(ctx, bytemuck::cast_slice(v))
}

pub fn index_select(x: &GpuData, outer: usize, n: usize, inner: usize, idx: &[u32]) -> GpuData {
    let ctx = x.ctx();
    let total = outer * idx.len() * inner;
    let y = GpuData::alloc(ctx, total);
    let ids = upload_u32(ctx, idx);
    let p = [total as u32, n as u32, inner as u32, idx.len() as u32];
    launch(
        ctx,
        kernel!(COPY, "index_select"),
        &p,
        &[x, &ids, &y],
        grid(total, 256),
    );
    y
}

pub fn index_add(g: &GpuData, outer: usize, n: usize, inner: usize, idx: &[u32]) -> GpuData {
    let ctx = g.ctx();
    let total = outer * n * inner;
    // Distinct indices (a cross-entropy's targets, MAE's kept patches) write each row at most
    // once: zeros made on the device and one scatter, uploading only the indices.
    let mut seen = vec![false; n];
    if idx
        .iter()
        .all(|&i| !std::mem::replace(&mut seen[i as usize], true))
    {
        let y = fill(ctx, total, 0.0);
        let ids = upload_u32(ctx, idx);
        let moved = outer * idx.len() * inner;
        let p = [moved, n, inner, idx.len()].map(|v| v as u32);
        launch(
            ctx,
            kernel!(COPY, "scatter_rows"),
            &p,
            &[g, &ids, &y],
            grid(moved, 256),
        );
        return y;
    }
    let y = GpuData::alloc(ctx, total);
    // Group the selecting positions by destination row (a counting sort on the host).
    let mut offs = vec![0u32; n + 1];
    for &i in idx {
        offs[i as usize + 1] += 1;
    }
    for r in 0..n {
        offs[r + 1] += offs[r];
    }
    let mut fill = offs.clone();
    let mut list = vec![0u32; idx.len()];
    for (j, &i) in idx.iter().enumerate() {
        list[fill[i as usize] as usize] = j as u32;
        fill[i as usize] += 1;
    }
    let most = offs.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as usize;
    let (offs, list) = (upload_u32(ctx, &offs), upload_u32(ctx, &list));
    // Rows selected more often than the loop budget are summed over several launches.
    for start in (0..most.max(1)).step_by(LOOP_BUDGET) {
        let p = [
            total,
            n,
            inner,
            idx.len(),
            start,
            LOOP_BUDGET,
            (start > 0) as usize,
        ]
        .map(|v| v as u32);
        launch(
            ctx,
            kernel!(COPY, "index_add"),
            &p,
            &[g, &offs, &list, &y],
            grid(total, 256),
        );
    }
    y
}

/// Parameters one AdamW launch updates: 4 × 7 buffers and the parameters fit the 31 storage
/// bindings of Metal, the tightest of the usual adapters.
pub const ADAMW_PER_LAUNCH: usize = 4;

/// Storage bindings the AdamW kernel needs (see [`adamw`]).
pub const ADAMW_BINDINGS: u32 = 7 * ADAMW_PER_LAUNCH as u32 + 1;

/// One AdamW step of each parameter (value, gradient, moments), four per launch: their new
/// (value, first moment, second moment). Decay and step size are each parameter's own; β, ε and
/// the bias correction are one optimizer's, shared by all. The adapter must allow
/// [`ADAMW_BINDINGS`] storage buffers per kernel.
pub fn adamw(items: &[[&GpuData; 4]], steps: &[AdamWStep]) -> Vec<[GpuData; 3]> {
    let Some(first) = items.first() else {
        return Vec::new();
    };
    let ctx = first[0].ctx();
    let s0 = steps[0];
    debug_assert!(steps
        .iter()
        .all(|s| (s.beta1, s.beta2, s.bias2_sqrt, s.eps)
            == (s0.beta1, s0.beta2, s0.bias2_sqrt, s0.eps)));
    let out: Vec<[GpuData; 3]> = items
        .iter()
        .map(|[p, ..]| [(); 3].map(|_| GpuData::alloc(ctx, p.len())))
        .collect();
    for (chunk, (outs, steps)) in items.chunks(ADAMW_PER_LAUNCH).zip(
        out.chunks(ADAMW_PER_LAUNCH)
            .zip(steps.chunks(ADAMW_PER_LAUNCH)),
    ) {
        let mut starts = [0u32; ADAMW_PER_LAUNCH];
        let mut groups = 0usize;
        for (k, [p, ..]) in chunk.iter().enumerate() {
            starts[k] = groups as u32;
            groups += p.len().div_ceil(256);
        }
        let pick = |k: usize| if k < chunk.len() { k } else { 0 };
        let mut params = vec![chunk.len() as u32];
        params.extend(starts);
        params.extend((0..ADAMW_PER_LAUNCH).map(|k| chunk[pick(k)][0].len() as u32));
        params.extend((0..ADAMW_PER_LAUNCH).map(|k| bits(steps[pick(k)].decay)));
        params.extend((0..ADAMW_PER_LAUNCH).map(|k| bits(steps[pick(k)].step_size)));
        params.extend([
            bits(s0.beta1),
            bits(s0.beta2),
            bits(1.0 - s0.beta1),
            bits(1.0 - s0.beta2),
            bits(1.0 / s0.bias2_sqrt),
            bits(s0.eps),
        ]);
        let buffers: Vec<&GpuData> = (0..ADAMW_PER_LAUNCH)
            .flat_map(|k| {
                let ([p, g, m, v], [np, nm, nv]) = (&chunk[pick(k)], &outs[pick(k)]);
                [*p, *g, *m, *v, np, nm, nv]
            })
            .collect();
        launch(
            ctx,
            kernel!(OPTIM, "adamw"),
            &params,
            &buffers,
            grid(groups * 256, 256),
        );
    }
    out
}

/// Largest tensor [`sum_squares`] takes: each of its 256 invocations loops at most
/// [`LOOP_BUDGET`] times.
pub const SUM_SQUARES_MAX: usize = 256 * LOOP_BUDGET;

/// Σx² of each tensor, as one vector: eight tensors per launch (the parts of a global gradient
/// norm, ~2 launches per parameter when composed). Each holds at most [`SUM_SQUARES_MAX`] values.
pub fn sum_squares(xs: &[&GpuData]) -> GpuData {
    let ctx = xs[0].ctx();
    let out = GpuData::alloc(ctx, xs.len());
    for (c, chunk) in xs.chunks(8).enumerate() {
        let mut p = vec![chunk.len() as u32, 8 * c as u32];
        p.extend((0..8).map(|k| chunk.get(k).map_or(0, |x| x.len() as u32)));
        let mut bufs = vec![&out];
        bufs.extend((0..8).map(|k| *chunk.get(k).unwrap_or(&chunk[0])));
        let groups = chunk.len() as u32;
        launch(
            ctx,
            kernel!(REDUCE, "sum_squares"),
            &p,
            &bufs,
            [groups, 1, 1],
        );
    }
    out
}

/// `n` copies of `value`, written by a kernel (no host upload).
pub fn fill(ctx: &Arc<GpuContext>, n: usize, value: f64) -> GpuData {
    let y = GpuData::alloc(ctx, n);
    launch(
        ctx,
        kernel!(COPY, "fill"),
        &[n as u32, bits(value)],
        &[&y],
        grid(n, 256),
    );
    y
}
