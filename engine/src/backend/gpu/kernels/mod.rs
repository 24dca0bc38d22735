//! The primitive kernels of `backend/mod.rs`, launched on the GPU: one file per kernel family,
//! beside its `shaders/*.wgsl`. This file holds what they share: launching a kernel (its f16
//! variant from the buffers' dtypes), grids, strided element-wise launches, and the choice
//! between per-row and per-workgroup row kernels.

use super::context::{GpuContext, KernelProfile};
use super::data::GpuData;
use super::params::*;
use super::shaders::{
    self, ATTENTION, ATTENTION_DELTA, BATCHNORM, COPY, ELEMENTWISE, LAYERNORM, MATMUL,
    MATMUL_BLOCKS, OPTIM, REDUCE, SOFTMAX,
};
use crate::backend::{AdamWStep, AttnSpec, Binary, MatmulSpec, Packing, Reduce, Unary};
use crate::DType;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

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

fn launch<P: Params>(
    ctx: &GpuContext,
    k: Kernel,
    params: &P,
    buffers: &[&GpuData],
    grid: [u32; 3],
) {
    launch_with(ctx, k, &[], params, buffers, grid);
}

/// [`launch`] of a pipeline specialised on override constants (see [`GpuContext::launch`]).
#[track_caller]
fn launch_with<P: Params>(
    ctx: &GpuContext,
    k: Kernel,
    constants: &[(&'static str, u32)],
    params: &P,
    buffers: &[&GpuData],
    grid: [u32; 3],
) {
    let d = declared(k);
    assert_eq!(
        d.params,
        P::NAME,
        "internal: GPU kernel {} takes {} parameters, given {}",
        k.name,
        d.params,
        P::NAME
    );
    let bufs: Vec<&wgpu::Buffer> = buffers.iter().map(|b| b.buffer()).collect();
    let variant = shaders::Variant {
        f16_mask: f16_mask(k, d.aliases, buffers),
        // Kernels that share no loads compile once for both.
        lanes: if d.shares { shared_lanes(ctx) } else { 1 },
    };
    let source = || shaders::module(k.family, k.name, variant);
    let bytes = bytemuck::bytes_of(params);
    ctx.launch(k.name, &source, variant, constants, bytes, &bufs, grid);
}

/// Lanes across which the software profile's kernels share their loads: 8 where the adapter's
/// subgroups have exactly 8 (lavapipe), else 1 (see `shaders/lanes.wgsl`).
fn shared_lanes(ctx: &GpuContext) -> u32 {
    if ctx.profile() == KernelProfile::Software && ctx.subgroups_of_8() {
        8
    } else {
        1
    }
}

/// What kernel `k`'s WGSL declares (see [`shaders::declared`]). Read from the source once per
/// kernel.
fn declared(k: Kernel) -> shaders::Declared<'static> {
    static DECLARED: LazyLock<Mutex<HashMap<&str, shaders::Declared<'static>>>> =
        LazyLock::new(Default::default);
    *(DECLARED.lock().unwrap().entry(k.name)).or_insert_with(|| shaders::declared(k.family, k.name))
}

/// Bit `i` set where buffer `i` holds f16: the kernel variant to run. Panics, naming the kernel,
/// where an f16 buffer meets a binding that takes f32 only (past its `typed` aliases; see
/// `shaders::module`).
#[track_caller]
fn f16_mask(k: Kernel, typed: usize, buffers: &[&GpuData]) -> u32 {
    let mask = buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.dtype() == DType::F16)
        .fold(0, |m, (i, _)| m | 1 << i);
    assert!(
        mask >> typed == 0,
        "GPU kernel {}: an operand is f16, which only matmul, linear, attention and to_dtype \
         take (cast it with to_dtype(DType::F32) first)",
        k.name
    );
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

/// Launches a strided element-wise kernel over the quads of `shape` (see strided.wgsl),
/// specialised on the merged rank, on whether the innermost axis holds whole quads, and on `op`;
/// `base` is where a gather's source starts. The output has the first input's dtype.
fn launch_strided(
    k: Kernel,
    op: Option<u32>,
    base: usize,
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
    let operand = |i: usize| words8(strides.get(i).into_iter().flatten().copied());
    let p = Strided {
        quads: n.div_ceil(4) as u32,
        base: base as u32,
        shape: words8(shape.iter().copied()),
        s0: operand(0),
        s1: operand(1),
        s2: operand(2),
        ..Default::default()
    };
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
    let p = Quads {
        quads: n.div_ceil(4) as u32,
        a: a as f32,
        b: b as f32,
    };
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

/// Most loop iterations one invocation spends on a reduction: llvmpipe (lavapipe) ends an
/// invocation's loops after 65,535 iterations in all, silently truncating longer sums.
const LOOP_BUDGET: usize = 16_384;
/// Threads of the row kernels (reduce_rows, softmax, layer_norm); mirrors `WG` in the WGSL.
const ROW_THREADS: usize = 64;

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

// The families, after the `kernel!` macro they use.
mod attention;
mod batchnorm;
mod copy;
mod elementwise;
mod layernorm;
mod matmul;
mod optim;
mod reduce;
mod softmax;

pub use attention::*;
pub use batchnorm::*;
pub use copy::*;
pub use elementwise::*;
pub use layernorm::*;
pub use matmul::*;
pub use optim::*;
pub use reduce::*;
pub use softmax::*;
