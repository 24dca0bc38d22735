// Optimizer updates: several parameters per launch instead of a dozen element-wise ops each.

//!kernel adamw
// AdamW's step for up to four parameters in one launch, PyTorch's order of operations
// (engine/src/optim/adamw.rs):
//   m' = β1·m + (1−β1)·g,  v' = β2·v + (1−β2)·g²,  p' = decay·p − step·m' / (√v'/√(1−β2ᵗ) + eps)
// Parameter k owns the workgroups from start[k] on (256 values each); decay and step differ per
// parameter group. Unused bindings repeat parameter 0's buffers (the outputs stand-ins of their
// own) and are never reached. 28 storage bindings: the host checks the adapter allows them.
@group(0) @binding(0) var<uniform> P: AdamW;
@group(0) @binding(1) var<storage, read> X0: array<f32>;
@group(0) @binding(2) var<storage, read> G0: array<f32>;
@group(0) @binding(3) var<storage, read> M0: array<f32>;
@group(0) @binding(4) var<storage, read> V0: array<f32>;
@group(0) @binding(5) var<storage, read_write> NX0: array<f32>;
@group(0) @binding(6) var<storage, read_write> NM0: array<f32>;
@group(0) @binding(7) var<storage, read_write> NV0: array<f32>;
@group(0) @binding(8) var<storage, read> X1: array<f32>;
@group(0) @binding(9) var<storage, read> G1: array<f32>;
@group(0) @binding(10) var<storage, read> M1: array<f32>;
@group(0) @binding(11) var<storage, read> V1: array<f32>;
@group(0) @binding(12) var<storage, read_write> NX1: array<f32>;
@group(0) @binding(13) var<storage, read_write> NM1: array<f32>;
@group(0) @binding(14) var<storage, read_write> NV1: array<f32>;
@group(0) @binding(15) var<storage, read> X2: array<f32>;
@group(0) @binding(16) var<storage, read> G2: array<f32>;
@group(0) @binding(17) var<storage, read> M2: array<f32>;
@group(0) @binding(18) var<storage, read> V2: array<f32>;
@group(0) @binding(19) var<storage, read_write> NX2: array<f32>;
@group(0) @binding(20) var<storage, read_write> NM2: array<f32>;
@group(0) @binding(21) var<storage, read_write> NV2: array<f32>;
@group(0) @binding(22) var<storage, read> X3: array<f32>;
@group(0) @binding(23) var<storage, read> G3: array<f32>;
@group(0) @binding(24) var<storage, read> M3: array<f32>;
@group(0) @binding(25) var<storage, read> V3: array<f32>;
@group(0) @binding(26) var<storage, read_write> NX3: array<f32>;
@group(0) @binding(27) var<storage, read_write> NM3: array<f32>;
@group(0) @binding(28) var<storage, read_write> NV3: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = group_id(wid, nwg);
    var k = 0u;
    for (var j = 1u; j < P.count; j++) {
        if (w >= P.start[j]) {
            k = j;
        }
    }
    let i = (w - P.start[k]) * 256u + lid.x;
    if (i >= P.n[k]) {
        return;
    }
    let decay = P.decay[k];
    let step = P.step[k];
    let b1 = P.beta1;
    let b2 = P.beta2;
    let c1 = P.c1;
    let c2 = P.c2;
    let ib2 = P.inv_bias2;
    let eps = P.eps;
    switch k {
        case 0u: {
            let m = M0[i] * b1 + G0[i] * c1;
            let v = V0[i] * b2 + G0[i] * G0[i] * c2;
            NX0[i] = X0[i] * decay - m / (sqrt(v) * ib2 + eps) * step;
            NM0[i] = m;
            NV0[i] = v;
        }
        case 1u: {
            let m = M1[i] * b1 + G1[i] * c1;
            let v = V1[i] * b2 + G1[i] * G1[i] * c2;
            NX1[i] = X1[i] * decay - m / (sqrt(v) * ib2 + eps) * step;
            NM1[i] = m;
            NV1[i] = v;
        }
        case 2u: {
            let m = M2[i] * b1 + G2[i] * c1;
            let v = V2[i] * b2 + G2[i] * G2[i] * c2;
            NX2[i] = X2[i] * decay - m / (sqrt(v) * ib2 + eps) * step;
            NM2[i] = m;
            NV2[i] = v;
        }
        default: {
            let m = M3[i] * b1 + G3[i] * c1;
            let v = V3[i] * b2 + G3[i] * G3[i] * c2;
            NX3[i] = X3[i] * decay - m / (sqrt(v) * ib2 + eps) * step;
            NM3[i] = m;
            NV3[i] = v;
        }
    }
}
