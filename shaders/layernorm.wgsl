// Row-wise layer norm x̂ = (x - mean) · rstd and its input gradient, one workgroup (or, the
// `_rowwise` kernels, one invocation) per row. With the override constant AFFINE the forward
// writes y = x̂·w + b and keeps x̂ in XH, and the backward takes the gradient through w and
// writes g·x̂ to GX (summed over rows into w's gradient by the host); without it those bindings
// are stand-ins (X for W and B, Y for XH; XH for W, DX for GX) and never touched.

override AFFINE: bool = false;

@group(0) @binding(0) var<uniform> P: LayerNorm;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

//!kernel layer_norm
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<storage, read_write> MEAN: array<f32>;
@group(0) @binding(4) var<storage, read_write> RSTD: array<f32>;
@group(0) @binding(5) var<storage, read> W: array<f32>;
@group(0) @binding(6) var<storage, read> B: array<f32>;
@group(0) @binding(7) var<storage, read_write> XH: array<f32>;

fn store(base: u32, j: u32, xh: f32) {
    if (AFFINE) {
        XH[base + j] = xh;
        Y[base + j] = xh * W[j] + B[j];
    } else {
        Y[base + j] = xh;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_id(wid, nwg);
    let live = row < P.rows;
    let cols = P.cols;
    let n = f32(cols);
    let base = row * cols;
    var s = 0.0;
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            s += X[base + j];
        }
    }
    let mean = reduce_sum(lid, s) / n;
    var v = 0.0;
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            let d = X[base + j] - mean;
            v += d * d;
        }
    }
    let rstd = inverseSqrt(reduce_sum(lid, v) / n + P.eps);
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            store(base, j, (X[base + j] - mean) * rstd);
        }
        if (lid == 0u) {
            MEAN[row] = mean;
            RSTD[row] = rstd;
        }
    }
}

//!kernel layer_norm_backward
// dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)).
@group(0) @binding(1) var<storage, read> XH: array<f32>;
@group(0) @binding(2) var<storage, read> RSTD: array<f32>;
@group(0) @binding(3) var<storage, read> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> DX: array<f32>;
@group(0) @binding(5) var<storage, read> W: array<f32>;
@group(0) @binding(6) var<storage, read_write> GX: array<f32>;

// The gradient reaching x̂: through w when affine.
fn grad(base: u32, j: u32) -> f32 {
    if (AFFINE) {
        return G[base + j] * W[j];
    }
    return G[base + j];
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_id(wid, nwg);
    let live = row < P.rows;
    let cols = P.cols;
    let n = f32(cols);
    let base = row * cols;
    var sg = 0.0;
    var sgx = 0.0;
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            let g = grad(base, j);
            sg += g;
            sgx += g * XH[base + j];
        }
    }
    let mg = reduce_sum(lid, sg) / n;
    let mgx = reduce_sum(lid, sgx) / n;
    if (live) {
        let r = RSTD[row];
        for (var j = lid; j < cols; j += WG) {
            DX[base + j] = r * (grad(base, j) - mg - XH[base + j] * mgx);
            if (AFFINE) {
                GX[base + j] = G[base + j] * XH[base + j];
            }
        }
    }
}

//!kernel layer_norm_rowwise
// One invocation per row and no barriers (see softmax_rowwise); rows of up to 4,096.
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<storage, read_write> MEAN: array<f32>;
@group(0) @binding(4) var<storage, read_write> RSTD: array<f32>;
@group(0) @binding(5) var<storage, read> W: array<f32>;
@group(0) @binding(6) var<storage, read> B: array<f32>;
@group(0) @binding(7) var<storage, read_write> XH: array<f32>;

fn store(base: u32, j: u32, xh: f32) {
    if (AFFINE) {
        XH[base + j] = xh;
        Y[base + j] = xh * W[j] + B[j];
    } else {
        Y[base + j] = xh;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let cols = P.cols;
    let n = f32(cols);
    let base = row * cols;
    var s = 0.0;
    for (var j = 0u; j < cols; j++) {
        s += X[base + j];
    }
    let mean = s / n;
    var v = 0.0;
    for (var j = 0u; j < cols; j++) {
        let d = X[base + j] - mean;
        v += d * d;
    }
    let rstd = inverseSqrt(v / n + P.eps);
    for (var j = 0u; j < cols; j++) {
        store(base, j, (X[base + j] - mean) * rstd);
    }
    MEAN[row] = mean;
    RSTD[row] = rstd;
}

//!kernel layer_norm_backward_rowwise
@group(0) @binding(1) var<storage, read> XH: array<f32>;
@group(0) @binding(2) var<storage, read> RSTD: array<f32>;
@group(0) @binding(3) var<storage, read> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> DX: array<f32>;
@group(0) @binding(5) var<storage, read> W: array<f32>;
@group(0) @binding(6) var<storage, read_write> GX: array<f32>;

// The gradient reaching x̂: through w when affine.
fn grad(base: u32, j: u32) -> f32 {
    if (AFFINE) {
        return G[base + j] * W[j];
    }
    return G[base + j];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let cols = P.cols;
    let n = f32(cols);
    let base = row * cols;
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = 0u; j < cols; j++) {
        let g = grad(base, j);
        sg += g;
        sgx += g * XH[base + j];
    }
    let mg = sg / n;
    let mgx = sgx / n;
    let r = RSTD[row];
    for (var j = 0u; j < cols; j++) {
        DX[base + j] = r * (grad(base, j) - mg - XH[base + j] * mgx);
        if (AFFINE) {
            GX[base + j] = G[base + j] * XH[base + j];
        }
    }
}
