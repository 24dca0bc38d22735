// Batched matrix product C = op(A) · op(B), operands read through strides so that transposes and
// broadcast batches cost no copy. Each invocation computes an 8×8 block of C in registers:
// shared-memory tiling with barriers is slow on CPU-backed drivers such as lavapipe, while
// register blocking helps everywhere.
//
// P: [M, N, K, a_rs, a_cs, b_rs, b_cs, a_bs, b_bs, batch_base, k_start, k_end, accumulate]
// One launch covers k_start..k_end: the host splits long K across launches (llvmpipe ends an
// invocation's loops after 65,535 iterations in all), the later ones adding into C.

//!kernel matmul
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m = P[0];
    let n = P[1];
    let k = P[2];
    let a_rs = P[3];
    let a_cs = P[4];
    let b_rs = P[5];
    let b_cs = P[6];
    let batch = gid.z + P[9];
    let r0 = gid.y * 8u;
    let c0 = gid.x * 8u;
    if (r0 >= m || c0 >= n) {
        return;
    }
    let a_base = batch * P[7];
    let b_base = batch * P[8];
    // Rows and columns past the edge re-read the last valid one; their results are not stored.
    var a_row: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        a_row[i] = a_base + min(r0 + i, m - 1u) * a_rs;
    }
    var b_col: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) {
        b_col[j] = b_base + min(c0 + j, n - 1u) * b_cs;
    }
    var acc: array<vec4<f32>, 16>;
    for (var kk = P[10]; kk < P[11]; kk++) {
        let ao = kk * a_cs;
        let bo = kk * b_rs;
        let b0 = vec4<f32>(B[b_col[0] + bo], B[b_col[1] + bo], B[b_col[2] + bo], B[b_col[3] + bo]);
        let b1 = vec4<f32>(B[b_col[4] + bo], B[b_col[5] + bo], B[b_col[6] + bo], B[b_col[7] + bo]);
        for (var i = 0u; i < 8u; i++) {
            let a = A[a_row[i] + ao];
            acc[2u * i] += a * b0;
            acc[2u * i + 1u] += a * b1;
        }
    }
    let c_base = batch * m * n;
    for (var i = 0u; i < 8u; i++) {
        let r = r0 + i;
        if (r < m) {
            for (var j = 0u; j < 8u; j++) {
                if (c0 + j < n) {
                    let at = c_base + r * n + c0 + j;
                    C[at] = acc[2u * i + j / 4u][j % 4u] + select(0.0, C[at], P[12] != 0u);
                }
            }
        }
    }
}

//!kernel matmul_vec4
// The same product for row-major A (M×K) and B (K×N) with K and N multiples of 4, using 16-byte
// loads and stores and the 8×8 block held in sixteen named vec4 registers (no private arrays:
// CPU drivers such as lavapipe spill those to memory). Each step of 4 along K does 16 loads for
// 256 multiply-adds. Transposed operands are copied to this layout first.
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> C: array<vec4<f32>>;

fn store(c_base: u32, r: u32, c0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let m = P[0];
    let n = P[1];
    if (r < m) {
        let at = (c_base + r * n + c0) / 4u;
        let add = P[12] != 0u;
        C[at] = lo + select(vec4<f32>(), C[at], add);
        if (c0 + 4u < n) {
            C[at + 1u] = hi + select(vec4<f32>(), C[at + 1u], add);
        }
    }
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m = P[0];
    let n = P[1];
    let k = P[2];
    let batch = gid.z + P[9];
    let r0 = gid.y * 8u;
    let c0 = gid.x * 8u;
    if (r0 >= m || c0 >= n) {
        return;
    }
    let a_base = batch * P[7];
    let b_base = batch * P[8];
    // Rows past the edge re-read the last row; a column block past the edge re-reads the last one.
    let ra0 = (a_base + min(r0 + 0u, m - 1u) * k) / 4u;
    let ra1 = (a_base + min(r0 + 1u, m - 1u) * k) / 4u;
    let ra2 = (a_base + min(r0 + 2u, m - 1u) * k) / 4u;
    let ra3 = (a_base + min(r0 + 3u, m - 1u) * k) / 4u;
    let ra4 = (a_base + min(r0 + 4u, m - 1u) * k) / 4u;
    let ra5 = (a_base + min(r0 + 5u, m - 1u) * k) / 4u;
    let ra6 = (a_base + min(r0 + 6u, m - 1u) * k) / 4u;
    let ra7 = (a_base + min(r0 + 7u, m - 1u) * k) / 4u;
    let c1 = (min(c0 + 4u, n - 4u) - c0) / 4u;
    let n4 = n / 4u;
    var c00 = vec4<f32>();
    var c01 = vec4<f32>();
    var c10 = vec4<f32>();
    var c11 = vec4<f32>();
    var c20 = vec4<f32>();
    var c21 = vec4<f32>();
    var c30 = vec4<f32>();
    var c31 = vec4<f32>();
    var c40 = vec4<f32>();
    var c41 = vec4<f32>();
    var c50 = vec4<f32>();
    var c51 = vec4<f32>();
    var c60 = vec4<f32>();
    var c61 = vec4<f32>();
    var c70 = vec4<f32>();
    var c71 = vec4<f32>();
    for (var k0 = P[10]; k0 < P[11]; k0 += 4u) {
        let kq = k0 / 4u;
        let a0 = A[ra0 + kq];
        let a1 = A[ra1 + kq];
        let a2 = A[ra2 + kq];
        let a3 = A[ra3 + kq];
        let a4 = A[ra4 + kq];
        let a5 = A[ra5 + kq];
        let a6 = A[ra6 + kq];
        let a7 = A[ra7 + kq];
        let bq = (b_base + k0 * n + c0) / 4u;
        let b00 = B[bq];
        let b01 = B[bq + c1];
        let b10 = B[bq + n4];
        let b11 = B[bq + n4 + c1];
        let b20 = B[bq + 2u * n4];
        let b21 = B[bq + 2u * n4 + c1];
        let b30 = B[bq + 3u * n4];
        let b31 = B[bq + 3u * n4 + c1];
        c00 += a0.x * b00 + a0.y * b10 + a0.z * b20 + a0.w * b30;
        c01 += a0.x * b01 + a0.y * b11 + a0.z * b21 + a0.w * b31;
        c10 += a1.x * b00 + a1.y * b10 + a1.z * b20 + a1.w * b30;
        c11 += a1.x * b01 + a1.y * b11 + a1.z * b21 + a1.w * b31;
        c20 += a2.x * b00 + a2.y * b10 + a2.z * b20 + a2.w * b30;
        c21 += a2.x * b01 + a2.y * b11 + a2.z * b21 + a2.w * b31;
        c30 += a3.x * b00 + a3.y * b10 + a3.z * b20 + a3.w * b30;
        c31 += a3.x * b01 + a3.y * b11 + a3.z * b21 + a3.w * b31;
        c40 += a4.x * b00 + a4.y * b10 + a4.z * b20 + a4.w * b30;
        c41 += a4.x * b01 + a4.y * b11 + a4.z * b21 + a4.w * b31;
        c50 += a5.x * b00 + a5.y * b10 + a5.z * b20 + a5.w * b30;
        c51 += a5.x * b01 + a5.y * b11 + a5.z * b21 + a5.w * b31;
        c60 += a6.x * b00 + a6.y * b10 + a6.z * b20 + a6.w * b30;
        c61 += a6.x * b01 + a6.y * b11 + a6.z * b21 + a6.w * b31;
        c70 += a7.x * b00 + a7.y * b10 + a7.z * b20 + a7.w * b30;
        c71 += a7.x * b01 + a7.y * b11 + a7.z * b21 + a7.w * b31;
    }
    let c_base = batch * m * n;
    store(c_base, r0 + 0u, c0, c00, c01);
    store(c_base, r0 + 1u, c0, c10, c11);
    store(c_base, r0 + 2u, c0, c20, c21);
    store(c_base, r0 + 3u, c0, c30, c31);
    store(c_base, r0 + 4u, c0, c40, c41);
    store(c_base, r0 + 5u, c0, c50, c51);
    store(c_base, r0 + 6u, c0, c60, c61);
    store(c_base, r0 + 7u, c0, c70, c71);
}
