// Attention's backward, first pass, beside the fused kernels of attention.wgsl (whose row layouts
// and parameters it shares): per query row Dᵢ = Σ dOᵢ·Oᵢ, stored beside its log-sum-exp
// (LD[2t] = lse, LD[2t + 1] = D) for the gradient kernels. One row per invocation, workgroups of
// 64 rows on a grid of (row blocks, bh), bh folded into z beyond 65,535.

// The value head dimension, a multiple of 4.
override DV: u32 = 16u;

@group(0) @binding(0) var<uniform> P: Attention;

//!kernel attention_delta
@group(0) @binding(1) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> O: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> LSE: array<f32>;
@group(0) @binding(4) var<storage, read_write> LD: array<f32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wid.y + wid.z * nwg.y;
    let i = wid.x * 64u + lid.x;
    let tq = P.tq;
    if (b >= P.bh || i >= tq) {
        return;
    }
    let t = b * tq + i;
    let l = P.o;
    let head = (b / P.heads) * l.n_stride + (b % P.heads) * l.h_stride;
    let ro = (l.offset + head + i * l.row_stride) / 4u;
    var s = 0.0;
    for (var c = 0u; c < DV / 4u; c++) {
        s += dot(G[ro + c], O[ro + c]);
    }
    LD[2u * t] = LSE[t];
    LD[2u * t + 1u] = s;
}
