// Matrix products in register blocks, for CPU drivers such as lavapipe (the software profile)
// and for the hardware profile's skinny products: C = op(A) · op(B) with K and N multiples of 4,
// 16-byte loads and stores, each invocation holding a block of C in strips of 16 rows × 4
// columns, each strip four 4×4 matrices (named, not arrays: CPU drivers keep indexed private
// arrays in memory). Shared-memory tiling with barriers is slow on CPU drivers; register
// blocking is not. CPU drivers load storage per lane, a loop over the vector's lanes with a
// bounds check that costs far more than the multiply-adds, so the blocks are as large as pays
// and the accumulators spill to the stack, which costs less than the loads they save.
// Transposed operands are read in place, a 4×4 block at a time, and turned in registers
// (TRANS_A needs M a multiple of 4). A and B may be stored as f16 (aliases TA, TB), widened to
// f32 as they are read. A linear layer's bias is added by the first K slice's stores.
//
// Parameters `Product` (engine/src/backend/gpu/params.rs); one launch covers k_start..k_end, the
// later slices adding into C.

@group(0) @binding(0) var<uniform> P: Product;
@group(0) @binding(1) var<storage, read> A: array<vec4<TA>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<TB>>;
@group(0) @binding(3) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> BIAS: array<vec4<f32>>;

// A is stored K×M (the product reads Aᵀ); B is stored N×K; BIAS holds N values (else unread).
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;

// Four consecutive elements of A or B, widened to f32 from f16 storage.
fn a4(i: u32) -> vec4<f32> {
    return vec4<f32>(A[i]);
}

fn b4(i: u32) -> vec4<f32> {
    return vec4<f32>(B[i]);
}

// Rows r..r+3 of A (M×K) over K's k0..k0+3, as matrix columns. The sizes come as arguments,
// read from the parameters once before the loop over K (CPU drivers reload a uniform on every
// use inside a loop).
fn a_rows(a_base: u32, r: u32, k0: u32, m: u32, k: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        let m4 = m / 4u;
        let at = (a_base + min(r, m - 4u)) / 4u + k0 * m4;
        return transpose(mat4x4<f32>(a4(at), a4(at + m4), a4(at + 2u * m4), a4(at + 3u * m4)));
    }
    let k4 = k / 4u;
    let kq = (a_base + k0) / 4u;
    return mat4x4<f32>(
        a4(kq + min(r, m - 1u) * k4),
        a4(kq + min(r + 1u, m - 1u) * k4),
        a4(kq + min(r + 2u, m - 1u) * k4),
        a4(kq + min(r + 3u, m - 1u) * k4),
    );
}

// B's (K×N) rows k0..k0+3 at columns c..c+3, as matrix columns (each over the four columns).
// Columns past N re-read the last four; their results are not stored.
fn b_rows(b_base: u32, k0: u32, c_in: u32, n: u32, k: u32) -> mat4x4<f32> {
    let c = min(c_in, n - 4u);
    if (TRANS_B) {
        let k4 = k / 4u;
        let w = (b_base + k0) / 4u;
        return transpose(mat4x4<f32>(
            b4(w + c * k4),
            b4(w + (c + 1u) * k4),
            b4(w + (c + 2u) * k4),
            b4(w + (c + 3u) * k4),
        ));
    }
    let n4 = n / 4u;
    let q = (b_base + k0 * n + c) / 4u;
    return mat4x4<f32>(b4(q), b4(q + n4), b4(q + 2u * n4), b4(q + 3u * n4));
}

// Sixteen rows as four 4×4 matrices, rows 4i..4i+3 in the columns of `i`: A's rows over four
// steps of K, or a strip of C over four columns.
struct Rows {
    i0: mat4x4<f32>,
    i1: mat4x4<f32>,
    i2: mat4x4<f32>,
    i3: mat4x4<f32>,
}

// A strip of C plus B's 4×4 block (`b`, columns = K's rows) times A's rows over those steps.
fn update(s: Rows, b: mat4x4<f32>, a: Rows) -> Rows {
    return Rows(s.i0 + b * a.i0, s.i1 + b * a.i1, s.i2 + b * a.i2, s.i3 + b * a.i3);
}

// A 4×4 block of C at rows r.., columns c.. (the rows inside C), added to C from a later K
// slice, plus the bias on the first.
fn store_block(c_base: u32, r: u32, c: u32, block: mat4x4<f32>) {
    let m = P.m;
    let n = P.n;
    if (c >= n) {
        return;
    }
    var v = block;
    if (P.accumulate != 0u) {
        let at = c_base + c;
        v += mat4x4<f32>(
            C[(at + min(r, m - 1u) * n) / 4u],
            C[(at + min(r + 1u, m - 1u) * n) / 4u],
            C[(at + min(r + 2u, m - 1u) * n) / 4u],
            C[(at + min(r + 3u, m - 1u) * n) / 4u],
        );
    } else if (HAS_BIAS) {
        let bias = BIAS[c / 4u];
        v += mat4x4<f32>(bias, bias, bias, bias);
    }
    let at = c_base + r * n + c;
    if (r < m) { C[at / 4u] = v[0]; }
    if (r + 1u < m) { C[(at + n) / 4u] = v[1]; }
    if (r + 2u < m) { C[(at + 2u * n) / 4u] = v[2]; }
    if (r + 3u < m) { C[(at + 3u * n) / 4u] = v[3]; }
}

fn store_strip(c_base: u32, r0: u32, c: u32, s: Rows) {
    store_block(c_base, r0, c, s.i0);
    store_block(c_base, r0 + 4u, c, s.i1);
    store_block(c_base, r0 + 8u, c, s.i2);
    store_block(c_base, r0 + 12u, c, s.i3);
}

//!kernel matmul_vec4 TA TB
// Each invocation's rows of A loaded by itself: with 8 strips (16×32) a step of 4 along K does
// 48 vec4 loads for 2,048 multiply-adds. On lavapipe at 1024³, blocks of 8×8 ran 8.5 GFLOP/s,
// 16×16 15.5, 16×32 17–18 and 32×32 no faster.

// Strips of 4 columns per invocation. On CPU drivers 8 (a 16×32 block) where C has at least 192
// columns, 2 (16×8) for narrower C, so that the 8 invocations of a vector (consecutive in x,
// sharing their rows of A, the fastest arrangement there) fall inside C; on hardware, which
// uses this kernel only for skinny products, 1 (64 accumulators, as many registers as before).
override STRIPS: u32 = 8u;

// Sixteen rows of A from r0 over K's k0..k0+3.
fn rows(a_base: u32, r0: u32, k0: u32, m: u32, k: u32) -> Rows {
    return Rows(
        a_rows(a_base, r0, k0, m, k),
        a_rows(a_base, r0 + 4u, k0, m, k),
        a_rows(a_base, r0 + 8u, k0, m, k),
        a_rows(a_base, r0 + 12u, k0, m, k),
    );
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m = P.m;
    let n = P.n;
    let k = P.k;
    let k_end = P.k_end;
    let batch = gid.z + P.batch_base;
    let r0 = gid.y * 16u;
    let c0 = gid.x * 4u * STRIPS;
    if (r0 >= m || c0 >= n) {
        return;
    }
    let a_base = batch * P.a_bs;
    let b_base = batch * P.b_bs;
    var s0 = Rows();
    var s1 = Rows();
    var s2 = Rows();
    var s3 = Rows();
    var s4 = Rows();
    var s5 = Rows();
    var s6 = Rows();
    var s7 = Rows();
    for (var k0 = P.k_start; k0 < k_end; k0 += 4u) {
        let a = rows(a_base, r0, k0, m, k);
        s0 = update(s0, b_rows(b_base, k0, c0, n, k), a);
        if (STRIPS >= 2u) {
            s1 = update(s1, b_rows(b_base, k0, c0 + 4u, n, k), a);
        }
        if (STRIPS == 8u) {
            s2 = update(s2, b_rows(b_base, k0, c0 + 8u, n, k), a);
            s3 = update(s3, b_rows(b_base, k0, c0 + 12u, n, k), a);
            s4 = update(s4, b_rows(b_base, k0, c0 + 16u, n, k), a);
            s5 = update(s5, b_rows(b_base, k0, c0 + 20u, n, k), a);
            s6 = update(s6, b_rows(b_base, k0, c0 + 24u, n, k), a);
            s7 = update(s7, b_rows(b_base, k0, c0 + 28u, n, k), a);
        }
    }
    let c_base = batch * m * n;
    store_strip(c_base, r0, c0, s0);
    if (STRIPS >= 2u) {
        store_strip(c_base, r0, c0 + 4u, s1);
    }
    if (STRIPS == 8u) {
        store_strip(c_base, r0, c0 + 8u, s2);
        store_strip(c_base, r0, c0 + 12u, s3);
        store_strip(c_base, r0, c0 + 16u, s4);
        store_strip(c_base, r0, c0 + 20u, s5);
        store_strip(c_base, r0, c0 + 24u, s6);
        store_strip(c_base, r0, c0 + 28u, s7);
    }
}

//!kernel matmul_lanes TA TB
// The product where subgroups have 8 lanes (lavapipe on 256-bit vectors), each invocation
// holding 64 rows × 8 columns of C. The 8 lanes of a subgroup share their 64 rows of A: each
// lane loads 8 of them (4 rows over 4 steps of K, twice) and the subgroup broadcasts them, so a
// step of 4 along K does 16 vec4 loads per lane (8 of A, 8 of B) for 2,048 multiply-adds where
// matmul_vec4 does 48. On lavapipe: 1024³ 18 → 29 GFLOP/s, the ViT's products 12–18 → 21–32
// GFLOP/s.
// A workgroup is 64 invocations in one dimension, lanes 8i..8i+7 a subgroup (see lanes.wgsl);
// the host runs this kernel only where LANES is 8.

// The subgroup's 32 rows of A in `t` (each lane's 4 rows over four steps of K, as matrix
// columns), as two sets of sixteen: rows 4l..4l+3 from lane l, lanes 0..3 and 4..7.
struct Shared {
    low: Rows,
    high: Rows,
}

fn shared_rows(t: mat4x4<f32>) -> Shared {
    let e0 = share(t[0]);
    let e1 = share(t[1]);
    let e2 = share(t[2]);
    let e3 = share(t[3]);
    return Shared(
        Rows(
            mat4x4<f32>(e0.c0, e1.c0, e2.c0, e3.c0),
            mat4x4<f32>(e0.c1, e1.c1, e2.c1, e3.c1),
            mat4x4<f32>(e0.c2, e1.c2, e2.c2, e3.c2),
            mat4x4<f32>(e0.c3, e1.c3, e2.c3, e3.c3),
        ),
        Rows(
            mat4x4<f32>(e0.c4, e1.c4, e2.c4, e3.c4),
            mat4x4<f32>(e0.c5, e1.c5, e2.c5, e3.c5),
            mat4x4<f32>(e0.c6, e1.c6, e2.c6, e3.c6),
            mat4x4<f32>(e0.c7, e1.c7, e2.c7, e3.c7),
        ),
    );
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let m = P.m;
    let n = P.n;
    let k = P.k;
    let k_end = P.k_end;
    let lane = li % LANES;
    let batch = wid.z + P.batch_base;
    let r0 = (wid.y * 8u + li / LANES) * 64u;
    let c0 = (wid.x * 8u + lane) * 8u;
    // A subgroup's lanes share r0, so they leave together; those past N compute on clamped
    // columns, for their rows of A, and store nothing.
    if (r0 >= m) {
        return;
    }
    let a_base = batch * P.a_bs;
    let b_base = batch * P.b_bs;
    var s0 = Rows();
    var s1 = Rows();
    var s2 = Rows();
    var s3 = Rows();
    var s4 = Rows();
    var s5 = Rows();
    var s6 = Rows();
    var s7 = Rows();
    for (var k0 = P.k_start; k0 < k_end; k0 += 4u) {
        let top = shared_rows(a_rows(a_base, r0 + 4u * lane, k0, m, k));
        let bottom = shared_rows(a_rows(a_base, r0 + 32u + 4u * lane, k0, m, k));
        let b0 = b_rows(b_base, k0, c0, n, k);
        let b1 = b_rows(b_base, k0, c0 + 4u, n, k);
        s0 = update(s0, b0, top.low);
        s1 = update(s1, b1, top.low);
        s2 = update(s2, b0, top.high);
        s3 = update(s3, b1, top.high);
        s4 = update(s4, b0, bottom.low);
        s5 = update(s5, b1, bottom.low);
        s6 = update(s6, b0, bottom.high);
        s7 = update(s7, b1, bottom.high);
    }
    let c_base = batch * m * n;
    store_strip(c_base, r0, c0, s0);
    store_strip(c_base, r0, c0 + 4u, s1);
    store_strip(c_base, r0 + 16u, c0, s2);
    store_strip(c_base, r0 + 16u, c0 + 4u, s3);
    store_strip(c_base, r0 + 32u, c0, s4);
    store_strip(c_base, r0 + 32u, c0 + 4u, s5);
    store_strip(c_base, r0 + 48u, c0, s6);
    store_strip(c_base, r0 + 48u, c0 + 4u, s7);
}
