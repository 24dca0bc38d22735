// Batch norm in training over an (outer, C, inner) layout, one invocation per channel: its
// count = outer · inner values are read in place, so a channel's statistics, the normalised
// values, the running statistics and, backward, all three gradients take one launch each way.
// The host keeps 3 · count under llvmpipe's loop limit; the channel loops are short (a
// projection head's batch).

@group(0) @binding(0) var<uniform> P: BatchNorm;

// Index of value i (of count) of channel c in the (outer, C, inner) layout.
fn at(c: u32, i: u32) -> u32 {
    let inner = P.inner;
    return ((i / inner) * P.channels + c) * inner + i % inner;
}

//!kernel batch_norm
// y = x̂·w + b with x̂ = (x − mean) · rstd over the channel's values (biased variance), and the
// running statistics moved by `momentum` towards the batch's (unbiased variance), as PyTorch.
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read> RM: array<f32>;
@group(0) @binding(5) var<storage, read> RV: array<f32>;
@group(0) @binding(6) var<storage, read_write> Y: array<f32>;
@group(0) @binding(7) var<storage, read_write> XH: array<f32>;
@group(0) @binding(8) var<storage, read_write> RSTD: array<f32>;
@group(0) @binding(9) var<storage, read_write> NRM: array<f32>;
@group(0) @binding(10) var<storage, read_write> NRV: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= P.channels) {
        return;
    }
    let count = P.count;
    let n = f32(count);
    var s = 0.0;
    for (var i = 0u; i < count; i++) {
        s += X[at(c, i)];
    }
    let mean = s / n;
    var v = 0.0;
    for (var i = 0u; i < count; i++) {
        let d = X[at(c, i)] - mean;
        v += d * d;
    }
    let var_ = v / n;
    let rstd = inverseSqrt(var_ + P.eps);
    let w = W[c];
    let b = B[c];
    for (var i = 0u; i < count; i++) {
        let j = at(c, i);
        let xh = (X[j] - mean) * rstd;
        XH[j] = xh;
        Y[j] = xh * w + b;
    }
    let m = P.momentum;
    RSTD[c] = rstd;
    NRM[c] = RM[c] * (1.0 - m) + mean * m;
    NRV[c] = RV[c] * (1.0 - m) + var_ * (n / (n - 1.0)) * m;
}

//!kernel batch_norm_backward
// dβ = Σ g, dγ = Σ g·x̂, dx = w · rstd · (g − dβ/count − x̂ · dγ/count).
@group(0) @binding(1) var<storage, read> XH: array<f32>;
@group(0) @binding(2) var<storage, read> RSTD: array<f32>;
@group(0) @binding(3) var<storage, read> W: array<f32>;
@group(0) @binding(4) var<storage, read> G: array<f32>;
@group(0) @binding(5) var<storage, read_write> DX: array<f32>;
@group(0) @binding(6) var<storage, read_write> DW: array<f32>;
@group(0) @binding(7) var<storage, read_write> DB: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= P.channels) {
        return;
    }
    let count = P.count;
    let n = f32(count);
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = 0u; i < count; i++) {
        let j = at(c, i);
        sg += G[j];
        sgx += G[j] * XH[j];
    }
    let k = W[c] * RSTD[c];
    for (var i = 0u; i < count; i++) {
        let j = at(c, i);
        DX[j] = k * (G[j] - sg / n - XH[j] * sgx / n);
    }
    DW[c] = sgx;
    DB[c] = sg;
}
