// Data movement: strided gathers (permute, narrow, expand), concatenation, row gather/scatter.

//!kernel gather TX TY
// P: strided, one operand; P[0] counts quads, P[1] is the source offset. X and Y share a type
// (f32 or f16).
@group(0) @binding(1) var<storage, read> X: array<TX>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<TY>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = P[1];
    for (var q = flat_id(gid, nwg); q < P[0]; q += launched(nwg)) {
        let o = quad_offsets(q);
        Y[q] = vec4<TY>(X[base + o[0].x], X[base + o[1].x], X[base + o[2].x], X[base + o[3].x]);
    }
}

//!kernel copy_rows
// Writes one part of a concatenation. P: [n, row, dst_row, dst_off]: element r of source row o
// goes to Y[o * dst_row + dst_off + r].
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P[0]) {
        return;
    }
    let row = P[1];
    Y[(i / row) * P[2] + P[3] + i % row] = X[i];
}

//!kernel index_select
// P: [total, n, inner, nidx]; Y is (outer, nidx, inner), X is (outer, n, inner).
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= P[0]) {
        return;
    }
    let inner = P[2];
    let nidx = P[3];
    let i = t % inner;
    let j = (t / inner) % nidx;
    let o = t / (inner * nidx);
    Y[t] = X[(o * P[1] + IDX[j]) * inner + i];
}

//!kernel index_add
// Scatter-add without atomics: each output row r sums the gradient rows that selected it, listed
// (host-sorted) in LIST[OFFS[r]..OFFS[r+1]]. Deterministic, and linear in the work. One launch
// takes occurrences q_start..q_start+q_len of each row (bounded loops for llvmpipe); later
// launches add to Y. P: [total, n, inner, nidx, q_start, q_len, accumulate];
// Y is (outer, n, inner), G is (outer, nidx, inner).
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> OFFS: array<u32>;
@group(0) @binding(3) var<storage, read> LIST: array<u32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= P[0]) {
        return;
    }
    let n = P[1];
    let inner = P[2];
    let nidx = P[3];
    let i = t % inner;
    let r = (t / inner) % n;
    let o = t / (inner * n);
    var acc = select(0.0, Y[t], P[6] != 0u);
    let first = OFFS[r] + P[4];
    for (var q = first; q < min(OFFS[r + 1u], first + P[5]); q++) {
        acc += G[(o * nidx + LIST[q]) * inner + i];
    }
    Y[t] = acc;
}

//!kernel scatter_rows
// index_add for distinct indices: row j of G goes to row IDX[j] of Y (zeros elsewhere, written
// before). P: [total, n, inner, nidx]; Y is (outer, n, inner), G is (outer, nidx, inner).
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= P[0]) {
        return;
    }
    let inner = P[2];
    let nidx = P[3];
    let i = t % inner;
    let j = (t / inner) % nidx;
    let o = t / (inner * nidx);
    Y[(o * P[1] + IDX[j]) * inner + i] = G[t];
}

//!kernel fill
// Every element set to one value, made on the device rather than uploaded. P: [n, value]
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P[0]) {
        return;
    }
    Y[i] = pf(1u);
}

//!kernel cast TX TY
// The same values in another storage type (f32 ↔ f16; rounded to nearest, beyond f16's range
// ±inf). P: [n]
@group(0) @binding(1) var<storage, read> X: array<TX>;
@group(0) @binding(2) var<storage, read_write> Y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P[0]) {
        return;
    }
    Y[i] = TY(X[i]);
}
