// Batched matrix product C = op(A) · op(B), operands read through strides so that transposes and
// broadcast batches cost no copy. Each invocation computes a block of C in registers:
// shared-memory tiling with barriers is slow on CPU-backed drivers such as lavapipe, while
// register blocking helps everywhere. A and B may be stored as f16 (aliases TA, TB): every
// kernel widens them to f32 as it reads, accumulates in f32 and writes C as f32.
//
// Parameters `Product` (engine/src/backend/gpu/params.rs). One launch covers k_start..k_end: the
// host splits long K across launches (llvmpipe ends an invocation's loops after 65,535
// iterations in all), the later ones adding into C.

@group(0) @binding(0) var<uniform> P: Product;

//!kernel matmul TA TB
@group(0) @binding(1) var<storage, read> A: array<TA>;
@group(0) @binding(2) var<storage, read> B: array<TB>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = gid.z + P.batch_base;
    let r0 = gid.y * 8u;
    let c0 = gid.x * 8u;
    if (r0 >= P.m || c0 >= P.n) {
        return;
    }
    let a_base = batch * P.a_bs;
    let b_base = batch * P.b_bs;
    // Rows and columns past the edge re-read the last valid one; their results are not stored.
    var a_row: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        a_row[i] = a_base + min(r0 + i, P.m - 1u) * P.a_rs;
    }
    var b_col: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) {
        b_col[j] = b_base + min(c0 + j, P.n - 1u) * P.b_cs;
    }
    var acc: array<vec4<f32>, 16>;
    let a_cs = P.a_cs;
    let b_rs = P.b_rs;
    let k_end = P.k_end;
    for (var kk = P.k_start; kk < k_end; kk++) {
        let ao = kk * a_cs;
        let bo = kk * b_rs;
        let b0 = vec4<f32>(vec4<TB>(B[b_col[0] + bo], B[b_col[1] + bo], B[b_col[2] + bo], B[b_col[3] + bo]));
        let b1 = vec4<f32>(vec4<TB>(B[b_col[4] + bo], B[b_col[5] + bo], B[b_col[6] + bo], B[b_col[7] + bo]));
        for (var i = 0u; i < 8u; i++) {
            let a = f32(A[a_row[i] + ao]);
            acc[2u * i] += a * b0;
            acc[2u * i + 1u] += a * b1;
        }
    }
    let c_base = batch * P.m * P.n;
    for (var i = 0u; i < 8u; i++) {
        let r = r0 + i;
        if (r < P.m) {
            for (var j = 0u; j < 8u; j++) {
                if (c0 + j < P.n) {
                    let at = c_base + r * P.n + c0 + j;
                    C[at] = acc[2u * i + j / 4u][j % 4u] + select(0.0, C[at], P.accumulate != 0u);
                }
            }
        }
    }
}

//!kernel matmul_vec4 TA TB
// The same product with K and N multiples of 4, using 16-byte loads and stores. Each invocation
// holds a block of C in strips of 16 rows × 4 columns, each strip four 4×4 matrices (named, not
// arrays: CPU drivers such as lavapipe keep indexed private arrays in memory). CPU drivers load
// storage per lane, a loop over the lanes with a bounds check that costs far more than the
// multiply-adds, so the block is as large as pays: with 8 strips (16×32) a step of 4 along K
// does 48 vec4 loads for 2,048 multiply-adds. On lavapipe at 1024³, blocks of 8×8 ran 8.5
// GFLOP/s, 16×16 15.5, 16×32 17–18 and 32×32 no faster; the accumulators spill to the stack,
// which costs less than the loads they save. Transposed operands are read in place, a 4×4 block
// at a time, and turned in registers (TRANS_A needs M a multiple of 4). A linear layer's bias
// is added by the first K slice's stores.
@group(0) @binding(1) var<storage, read> A: array<vec4<TA>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<TB>>;
@group(0) @binding(3) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> BIAS: array<vec4<f32>>;

// A is stored K×M (the product reads Aᵀ); B is stored N×K; BIAS holds N values (else unread).
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
// Strips of 4 columns per invocation. On CPU drivers 8 (a 16×32 block) where C has at least 192
// columns, 2 (16×8) for narrower C, so that the 8 invocations of a vector (consecutive in x,
// sharing their rows of A, the fastest arrangement there) fall inside C; on hardware, which
// uses this kernel only for skinny products, 1 (64 accumulators, as many registers as before).
override STRIPS: u32 = 8u;

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

fn rows(a_base: u32, r0: u32, k0: u32, m: u32, k: u32) -> Rows {
    return Rows(
        a_rows(a_base, r0, k0, m, k),
        a_rows(a_base, r0 + 4u, k0, m, k),
        a_rows(a_base, r0 + 8u, k0, m, k),
        a_rows(a_base, r0 + 12u, k0, m, k),
    );
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

//!kernel matmul_tiled TA TB
// The hardware profile's product: a 128×128 tile of C per workgroup of 16×16 invocations, K
// walked 8 at a time through workgroup memory. Each invocation holds an 8×8 block of C in 16
// vec4 registers, at rows 4·ty and 64 + 4·ty (columns likewise), so that the 32 invocations of
// a subgroup read 16 distinct vec4s of a tile and never collide. The loaders read A and B
// through their strides, walking the unit-stride axis with neighbouring invocations, so
// transposed operands are read in place rather than copied.
//
// Split-K: grid z is (batch, split) and split s covers K from k_start + s·split_len; with more
// than one split each writes its own slab of C (a workspace of splits × batch × M × N) that the
// host sums in a fixed order, so results do not depend on scheduling.
@group(0) @binding(1) var<storage, read> A: array<TA>;
@group(0) @binding(2) var<storage, read> B: array<TB>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

// Tiles as [k][128 rows or columns / 4], each k's row padded by one vec4 so that a loader's
// stores along k (A stored row-major, B transposed) fall in distinct memory banks.
var<workgroup> At: array<vec4<f32>, 264>;
var<workgroup> Bt: array<vec4<f32>, 264>;

fn store4(at: u32, row_ok: bool, col: u32, n: u32, v: vec4<f32>) {
    if (row_ok) {
        if (col < n) { C[at] = v.x; }
        if (col + 1u < n) { C[at + 1u] = v.y; }
        if (col + 2u < n) { C[at + 2u] = v.z; }
        if (col + 3u < n) { C[at + 3u] = v.w; }
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m = P.m;
    let n = P.n;
    let split = wid.z % P.splits;
    let batch = wid.z / P.splits + P.batch_base;
    let k_lo = P.k_start + split * P.split_len;
    let k_hi = min(P.k_end, k_lo + P.split_len);
    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let a_base = batch * P.a_bs;
    let b_base = batch * P.b_bs;
    let tx = lid.x;
    let ty = lid.y;
    var c00 = vec4<f32>(); var c01 = vec4<f32>();
    var c10 = vec4<f32>(); var c11 = vec4<f32>();
    var c20 = vec4<f32>(); var c21 = vec4<f32>();
    var c30 = vec4<f32>(); var c31 = vec4<f32>();
    var c40 = vec4<f32>(); var c41 = vec4<f32>();
    var c50 = vec4<f32>(); var c51 = vec4<f32>();
    var c60 = vec4<f32>(); var c61 = vec4<f32>();
    var c70 = vec4<f32>(); var c71 = vec4<f32>();
    for (var k0 = k_lo; k0 < k_hi; k0 += 8u) {
        // 1,024 elements of each tile, four per invocation.
        for (var e = 0u; e < 4u; e++) {
            let idx = li + 256u * e;
            // A's tile: rows along the unit stride when A is stored transposed, else k.
            var r = idx / 8u;
            var kk = idx % 8u;
            if (P.a_cs != 1u) {
                r = idx % 128u;
                kk = idx / 128u;
            }
            var av = 0.0;
            if (row0 + r < m && k0 + kk < k_hi) {
                av = f32(A[a_base + (row0 + r) * P.a_rs + (k0 + kk) * P.a_cs]);
            }
            At[kk * 33u + r / 4u][r % 4u] = av;
            // B's tile: columns along the unit stride unless B is stored transposed.
            var c = idx % 128u;
            var kb = idx / 128u;
            if (P.b_cs != 1u) {
                c = idx / 8u;
                kb = idx % 8u;
            }
            var bv = 0.0;
            if (col0 + c < n && k0 + kb < k_hi) {
                bv = f32(B[b_base + (k0 + kb) * P.b_rs + (col0 + c) * P.b_cs]);
            }
            Bt[kb * 33u + c / 4u][c % 4u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 8u; kk++) {
            let a0 = At[kk * 33u + ty];
            let a1 = At[kk * 33u + 16u + ty];
            let b0 = Bt[kk * 33u + tx];
            let b1 = Bt[kk * 33u + 16u + tx];
            c00 += a0.x * b0; c01 += a0.x * b1;
            c10 += a0.y * b0; c11 += a0.y * b1;
            c20 += a0.z * b0; c21 += a0.z * b1;
            c30 += a0.w * b0; c31 += a0.w * b1;
            c40 += a1.x * b0; c41 += a1.x * b1;
            c50 += a1.y * b0; c51 += a1.y * b1;
            c60 += a1.z * b0; c61 += a1.z * b1;
            c70 += a1.w * b0; c71 += a1.w * b1;
        }
        workgroupBarrier();
    }
    let base = split * P.slab + batch * m * n;
    let ra = row0 + 4u * ty;
    let rb = row0 + 64u + 4u * ty;
    let ca = col0 + 4u * tx;
    let cb = col0 + 64u + 4u * tx;
    store4(base + (ra + 0u) * n + ca, ra + 0u < m, ca, n, c00);
    store4(base + (ra + 0u) * n + cb, ra + 0u < m, cb, n, c01);
    store4(base + (ra + 1u) * n + ca, ra + 1u < m, ca, n, c10);
    store4(base + (ra + 1u) * n + cb, ra + 1u < m, cb, n, c11);
    store4(base + (ra + 2u) * n + ca, ra + 2u < m, ca, n, c20);
    store4(base + (ra + 2u) * n + cb, ra + 2u < m, cb, n, c21);
    store4(base + (ra + 3u) * n + ca, ra + 3u < m, ca, n, c30);
    store4(base + (ra + 3u) * n + cb, ra + 3u < m, cb, n, c31);
    store4(base + (rb + 0u) * n + ca, rb + 0u < m, ca, n, c40);
    store4(base + (rb + 0u) * n + cb, rb + 0u < m, cb, n, c41);
    store4(base + (rb + 1u) * n + ca, rb + 1u < m, ca, n, c50);
    store4(base + (rb + 1u) * n + cb, rb + 1u < m, cb, n, c51);
    store4(base + (rb + 2u) * n + ca, rb + 2u < m, ca, n, c60);
    store4(base + (rb + 2u) * n + cb, rb + 2u < m, cb, n, c61);
    store4(base + (rb + 3u) * n + ca, rb + 3u < m, ca, n, c70);
    store4(base + (rb + 3u) * n + cb, rb + 3u < m, cb, n, c71);
}
