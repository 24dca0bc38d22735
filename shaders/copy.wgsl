// Data movement: strided gathers (permute, narrow, expand), concatenation, row gather/scatter.

//!kernel gather TX TY
// P: strided, one operand; p(0) counts quads, p(1) is the source offset. X and Y share a type
// (f32 or f16).
@group(0) @binding(1) var<storage, read> X: array<TX>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<TY>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = p(1);
    for (var q = flat_id(gid, nwg); q < p(0); q += launched(nwg)) {
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
    if (i >= p(0)) {
        return;
    }
    let row = p(1);
    Y[(i / row) * p(2) + p(3) + i % row] = X[i];
}

//!kernel index_select
// P: [total, n, inner, nidx]; Y is (outer, nidx, inner), X is (outer, n, inner).
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= p(0)) {
        return;
    }
    let inner = p(2);
    let nidx = p(3);
    let i = t % inner;
    let j = (t / inner) % nidx;
    let o = t / (inner * nidx);
    Y[t] = X[(o * p(1) + IDX[j]) * inner + i];
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
    if (t >= p(0)) {
        return;
    }
    let n = p(1);
    let inner = p(2);
    let nidx = p(3);
    let i = t % inner;
    let r = (t / inner) % n;
    let o = t / (inner * n);
    var acc = select(0.0, Y[t], p(6) != 0u);
    let first = OFFS[r] + p(4);
    for (var q = first; q < min(OFFS[r + 1u], first + p(5)); q++) {
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
    if (t >= p(0)) {
        return;
    }
    let inner = p(2);
    let nidx = p(3);
    let i = t % inner;
    let j = (t / inner) % nidx;
    let o = t / (inner * nidx);
    Y[(o * p(1) + IDX[j]) * inner + i] = G[t];
}

//!kernel fill
// Every element set to one value, made on the device rather than uploaded. P: [n, value]
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p(0)) {
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
    if (i >= p(0)) {
        return;
    }
    Y[i] = TY(X[i]);
}
