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
