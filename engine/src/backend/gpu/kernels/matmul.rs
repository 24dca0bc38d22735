//! Matrix products: the register-blocked kernels of the software profile
//! (`shaders/matmul_blocks.wgsl`), the tiled one of the hardware profile and the scalar one for
//! unaligned shapes (`shaders/matmul.wgsl`), and the fused linear layer.

use super::*;

/// Length of K one matmul launch covers: the scalar kernel spends 9 loop iterations per step of
/// K, so 2,048 keeps an invocation far below llvmpipe's 65,535 (a multiple of 4 for vec4 loads).
const MATMUL_K_SLICE: usize = 2048;

/// The same for the vec4 kernel, one loop iteration per 4 steps of K.
const VEC4_K_SLICE: usize = 131_072;

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

/// The register-blocked product for this thread's profile and C's width `n`: its kernel, its
/// `STRIPS` constant, and the rows × columns of C one workgroup covers. Where subgroups have 8
/// lanes (lavapipe), `matmul_lanes`: 8 subgroups of 8 invocations of 64 × 8. Else
/// `matmul_vec4`, 8×8 invocations of 16 rows × 4 columns per strip: on a software adapter 8
/// strips where C is at least 192 wide (its 8 invocations across then fill 256 columns, or 6 of
/// 8 do), else 2; on hardware 1.
fn blocks(ctx: &GpuContext, n: usize) -> (Kernel, Option<usize>, [usize; 2]) {
    if shared_lanes(ctx) == 8 {
        return (kernel!(MATMUL_BLOCKS, "matmul_lanes"), None, [512, 64]);
    }
    let strips = match (ctx.profile() == KernelProfile::Software, n >= 192) {
        (false, _) => 1,
        (true, true) => 8,
        (true, false) => 2,
    };
    (
        kernel!(MATMUL_BLOCKS, "matmul_vec4"),
        Some(strips),
        [128, 32 * strips],
    )
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
    // The vec4 kernel reads row-major and transposed operands in place (override constants
    // TRANS_A, TRANS_B); a transposed A is read four rows at a time, so one whose M is not a
    // multiple of 4 is copied to row-major.
    let (a_rm, dummy);
    // f16 operands are never copied (the copy kernels take f32): the scalar kernel reads them.
    let copy_a = s.trans_a && !s.m.is_multiple_of(4);
    let vec4 = vec4_fits(&s) && !(copy_a && a.dtype() == DType::F16);
    let (a, k, constants, a_bs, bias_slot, grid, slice) = if vec4 {
        a_rm = copy_a.then(|| {
            let batches = if s.a_batch_stride == 0 { 1 } else { s.batch };
            gather_strided(a, 0, &[s.a_batch_stride, 1, s.m], &[batches, s.m, s.k])
        });
        let a_bs = if copy_a && s.a_batch_stride != 0 {
            s.m * s.k
        } else {
            s.a_batch_stride
        };
        let (kernel, strips, [rows, cols]) = blocks(ctx, s.n);
        let mut constants = vec![
            ("TRANS_A", (s.trans_a && !copy_a) as u32),
            ("TRANS_B", s.trans_b as u32),
            ("HAS_BIAS", bias.is_some() as u32),
        ];
        constants.extend(strips.map(|n| ("STRIPS", n as u32)));
        // Without a bias, a one-element stand-in the kernel never reads.
        dummy = bias.is_none().then(|| GpuData::alloc(ctx, 1));
        (
            a_rm.as_ref().unwrap_or(a),
            kernel,
            constants,
            a_bs,
            bias.or(dummy.as_ref()),
            [s.n.div_ceil(cols), s.m.div_ceil(rows)],
            VEC4_K_SLICE,
        )
    } else {
        let grid = [s.n.div_ceil(64), s.m.div_ceil(64)];
        let k = kernel!(MATMUL, "matmul");
        (a, k, vec![], s.a_batch_stride, None, grid, MATMUL_K_SLICE)
    };
    let buffers: Vec<&GpuData> = [a, b, &c].into_iter().chain(bias_slot).collect();
    let mut base = 0;
    // K is covered in slices, the later ones adding into C, to bound each invocation's loop.
    while base < s.batch {
        let chunk = (s.batch - base).min(MAX_GROUPS);
        for k0 in (0..s.k).step_by(slice) {
            let k1 = (k0 + slice).min(s.k);
            let strides = [a_rs, a_cs, b_rs, b_cs, a_bs, s.b_batch_stride];
            let p = Product {
                accumulate: (k0 > 0) as u32,
                ..product_params(&s, strides, base, k0..k1)
            };
            let grid = [grid[0] as u32, grid[1] as u32, chunk as u32];
            launch_with(ctx, k, &constants, &p, &buffers, grid);
        }
        base += chunk;
    }
    c
}

/// The parameters every product kernel reads (the shape, strides `[a_rs, a_cs, b_rs, b_cs, a_bs,
/// b_bs]`, the batches from `batch_base`, K's range); the kernels' own are zero.
fn product_params(
    s: &MatmulSpec,
    [a_rs, a_cs, b_rs, b_cs, a_bs, b_bs]: [usize; 6],
    batch_base: usize,
    k: std::ops::Range<usize>,
) -> Product {
    let w = |v: usize| v as u32;
    Product {
        m: w(s.m),
        n: w(s.n),
        k: w(s.k),
        a_rs: w(a_rs),
        a_cs: w(a_cs),
        b_rs: w(b_rs),
        b_cs: w(b_cs),
        a_bs: w(a_bs),
        b_bs: w(b_bs),
        batch_base: w(batch_base),
        k_start: w(k.start),
        k_end: w(k.end),
        ..Default::default()
    }
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
        let p = Product {
            splits: splits as u32,
            split_len: split_len as u32,
            slab: out as u32,
            ..product_params(&s, strides, base, 0..s.k)
        };
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
