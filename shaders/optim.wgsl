// Optimizer updates: one launch per parameter instead of a dozen element-wise ones.

//!kernel adamw
// AdamW's step in one pass, PyTorch's order of operations (engine/src/optim/adamw.rs):
//   m' = β1·m + (1−β1)·g,  v' = β2·v + (1−β2)·g²,  p' = decay·p − step·m' / (√v'/√(1−β2ᵗ) + eps)
// P: [n, decay, β1, β2, 1−β1, 1−β2, 1/√(1−β2ᵗ), eps, step] (floats as bits).
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read> M: array<f32>;
@group(0) @binding(4) var<storage, read> V: array<f32>;
@group(0) @binding(5) var<storage, read_write> NX: array<f32>;
@group(0) @binding(6) var<storage, read_write> NM: array<f32>;
@group(0) @binding(7) var<storage, read_write> NV: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P[0]) {
        return;
    }
    let g = G[i];
    let m = M[i] * pf(2u) + g * pf(4u);
    let v = V[i] * pf(3u) + g * g * pf(5u);
    NX[i] = X[i] * pf(1u) - m / (sqrt(v) * pf(6u) + pf(7u)) * pf(8u);
    NM[i] = m;
    NV[i] = v;
}
