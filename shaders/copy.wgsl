// Data movement: strided gathers (permute, narrow, expand), concatenation, row gather/scatter.

//!kernel gather TX TY
// One strided operand read from offset `base`. X and Y share a type (f32 or f16).
@group(0) @binding(0) var<uniform> P: Strided;
@group(0) @binding(1) var<storage, read> X: array<TX>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<TY>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = P.base;
    for (var q = flat_id(gid, nwg); q < P.quads; q += launched(nwg)) {
        let o = quad_offsets(q);
        Y[q] = vec4<TY>(X[base + o[0].x], X[base + o[1].x], X[base + o[2].x], X[base + o[3].x]);
    }
}

//!kernel copy_rows
// Writes one part of a concatenation: element r of source row o goes to
// Y[o * dst_row + dst_off + r].
@group(0) @binding(0) var<uniform> P: CopyRows;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P.n) {
        return;
    }
    Y[(i / P.row) * P.dst_row + P.dst_off + i % P.row] = X[i];
}

//!kernel index_select
// Y is (outer, nidx, inner), X is (outer, n, inner).
@group(0) @binding(0) var<uniform> P: Indexed;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= P.total) {
        return;
    }
    let inner = P.inner;
    let nidx = P.nidx;
    let i = t % inner;
    let j = (t / inner) % nidx;
    let o = t / (inner * nidx);
    Y[t] = X[(o * P.n + IDX[j]) * inner + i];
}

//!kernel index_add
// Scatter-add without atomics: each output row r sums the gradient rows that selected it, listed
// (host-sorted) in LIST[OFFS[r]..OFFS[r+1]]. Deterministic, and linear in the work. One launch
// takes occurrences q_start..q_start+q_len of each row (bounded loops for llvmpipe); later
// launches add to Y. Y is (outer, n, inner), G is (outer, nidx, inner).
@group(0) @binding(0) var<uniform> P: Indexed;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> OFFS: array<u32>;
@group(0) @binding(3) var<storage, read> LIST: array<u32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= P.total) {
        return;
    }
    let n = P.n;
    let inner = P.inner;
    let nidx = P.nidx;
    let i = t % inner;
    let r = (t / inner) % n;
    let o = t / (inner * n);
    var acc = select(0.0, Y[t], P.accumulate != 0u);
    let first = OFFS[r] + P.q_start;
    for (var q = first; q < min(OFFS[r + 1u], first + P.q_len); q++) {
        acc += G[(o * nidx + LIST[q]) * inner + i];
    }
    Y[t] = acc;
}

//!kernel scatter_rows
// index_add for distinct indices: row j of G goes to row IDX[j] of Y (zeros elsewhere, written
// before). Y is (outer, n, inner), G is (outer, nidx, inner).
@group(0) @binding(0) var<uniform> P: Indexed;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    if (t >= P.total) {
        return;
    }
    let inner = P.inner;
    let nidx = P.nidx;
    let i = t % inner;
    let j = (t / inner) % nidx;
    let o = t / (inner * nidx);
    Y[(o * P.n + IDX[j]) * inner + i] = G[t];
}

//!kernel fill
// Every element set to one value, made on the device rather than uploaded.
@group(0) @binding(0) var<uniform> P: Fill;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P.n) {
        return;
    }
    Y[i] = P.value;
}

//!kernel cast TX TY
// The same values in another storage type (f32 ↔ f16; rounded to nearest, beyond f16's range
// ±inf). `P.value` is unread.
@group(0) @binding(0) var<uniform> P: Fill;
@group(0) @binding(1) var<storage, read> X: array<TX>;
@group(0) @binding(2) var<storage, read_write> Y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= P.n) {
        return;
    }
    Y[i] = TY(X[i]);
}
