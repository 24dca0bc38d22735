// Batched matrix product C = op(A) · op(B), operands read through strides so that transposes and
// broadcast batches cost no copy. Each invocation computes an 8×8 block of C in registers:
// shared-memory tiling with barriers is slow on CPU-backed drivers such as lavapipe, while
// register blocking helps everywhere.
//
// P: [M, N, K, a_rs, a_cs, b_rs, b_cs, a_bs, b_bs, batch_base]

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
    for (var kk = 0u; kk < k; kk++) {
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
                    C[c_base + r * n + c0 + j] = acc[2u * i + j / 4u][j % 4u];
                }
            }
        }
    }
}
