// Row-wise softmax and log-softmax (one workgroup per row) and their backward passes.

@group(0) @binding(0) var<uniform> P: Softmax;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

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

//!kernel softmax
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_id(wid, nwg);
    let live = row < P.rows;
    let cols = P.cols;
    let log_out = P.log != 0u;
    let base = row * cols;
    var m = -3.4028235e38;
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            m = max(m, X[base + j]);
        }
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            s += exp(X[base + j] - m);
        }
    }
    s = reduce_sum(lid, s);
    // A row of only -inf has s = 0: softmax gives zeros, log-softmax -inf (as the CPU backend).
    let lse = m + log(s);
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            let x = X[base + j];
            if (log_out) {
                Y[base + j] = select(x - lse, x, s == 0.0);
            } else {
                Y[base + j] = select(exp(x - m) / s, 0.0, s == 0.0);
            }
        }
    }
}

//!kernel softmax_backward
@group(0) @binding(1) var<storage, read> Yv: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_id(wid, nwg);
    let live = row < P.rows;
    let cols = P.cols;
    let log_out = P.log != 0u;
    let base = row * cols;
    var s = 0.0;
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            s += select(Yv[base + j] * G[base + j], G[base + j], log_out);
        }
    }
    s = reduce_sum(lid, s);
    if (live) {
        for (var j = lid; j < cols; j += WG) {
            let y = Yv[base + j];
            let g = G[base + j];
            DX[base + j] = select(y * (g - s), g - exp(y) * s, log_out);
        }
    }
}

//!kernel softmax_rowwise
// One invocation per row and no workgroup barriers: CPU drivers such as lavapipe run barriers
// as coroutine switches, which made the workgroup version ~10× slower there. Used for rows of
// up to 4,096 (three passes stay inside the per-invocation loop budget).
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let cols = P.cols;
    let base = row * cols;
    var m = -3.4028235e38;
    for (var j = 0u; j < cols; j++) {
        m = max(m, X[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < cols; j++) {
        s += exp(X[base + j] - m);
    }
    let lse = m + log(s);
    for (var j = 0u; j < cols; j++) {
        let x = X[base + j];
        if (P.log != 0u) {
            Y[base + j] = select(x - lse, x, s == 0.0);
        } else {
            Y[base + j] = select(exp(x - m) / s, 0.0, s == 0.0);
        }
    }
}

//!kernel softmax_backward_rowwise
@group(0) @binding(1) var<storage, read> Yv: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let cols = P.cols;
    let log_out = P.log != 0u;
    let base = row * cols;
    var s = 0.0;
    for (var j = 0u; j < cols; j++) {
        s += select(Yv[base + j] * G[base + j], G[base + j], log_out);
    }
    for (var j = 0u; j < cols; j++) {
        let y = Yv[base + j];
        let g = G[base + j];
        DX[base + j] = select(y * (g - s), g - exp(y) * s, log_out);
    }
}
