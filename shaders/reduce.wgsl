// Reductions of the middle extent of an (outer, n, inner) layout: REDUCE_SUM, _MAX, _MIN,
// _ARG_MAX and _ARG_MIN (indices stored as floats), constants generated from backend/mod.rs.


// The op, whether the input carries indices from an earlier pass, and whether this pass writes
// the final result: override constants, so that a sum compiles to a plain loop (CPU drivers run
// every arm of a branch they cannot prove uniform).
override OP: u32 = 0u;
override HAS_IDX: bool = false;
override FINAL: bool = false;

// Whether value v at index j should replace the current best (b at index bj).
fn better(op: u32, v: f32, j: u32, b: f32, bj: u32) -> bool {
    if (op == REDUCE_MAX || op == REDUCE_ARG_MAX) {
        return v > b || (v == b && j < bj);
    }
    return v < b || (v == b && j < bj);
}

//!kernel reduce_chunks
// One invocation per (outer, block, inner) output: reduces one block of at most `chunk` entries
// of the middle extent, so that no invocation loops too long (llvmpipe ends an invocation's loops
// after 65,535 iterations in all). The host repeats this until one block remains. Extrema carry
// their index along in IY; later passes read the indices of the previous one from IX.
// The op, HAS_IDX and FINAL are override constants.
@group(0) @binding(0) var<uniform> P: Chunks;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> IY: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    let n = P.n;
    let inner = P.inner;
    let op = OP;
    let chunk = P.chunk;
    let blocks = P.blocks;
    if (t >= P.outer * blocks * inner) {
        return;
    }
    let i = t % inner;
    let blk = (t / inner) % blocks;
    let o = t / (inner * blocks);
    let start = blk * chunk;
    let end = min(n, start + chunk);
    var best = 0.0;
    var at = 0xffffffffu;
    for (var j = start; j < end; j++) {
        let src = (o * n + j) * inner + i;
        let v = X[src];
        var idx = j;
        if (HAS_IDX) {
            idx = IX[src];
        }
        if (op == REDUCE_SUM) {
            best += v;
        } else if (at == 0xffffffffu || better(op, v, idx, best, at)) {
            best = v;
            at = idx;
        }
    }
    Y[t] = select(best, f32(at), (op == REDUCE_ARG_MAX || op == REDUCE_ARG_MIN) && FINAL);
    if (op != REDUCE_SUM) {
        IY[t] = at; // sums bind a stand-in here
    }
}

//!kernel sum_squares
// Σx² of each of up to eight tensors (a global gradient norm's parts) in one launch: workgroup k
// reduces tensor k into OUT[first + k], a strided loop per invocation then a fixed tree, so the
// result does not depend on scheduling. The host keeps each tensor under 256 × 16,384 elements
// (llvmpipe's loop limit). Unused bindings repeat X0 and are not read.
@group(0) @binding(0) var<uniform> P: SumSquares;
@group(0) @binding(1) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(2) var<storage, read> X0: array<f32>;
@group(0) @binding(3) var<storage, read> X1: array<f32>;
@group(0) @binding(4) var<storage, read> X2: array<f32>;
@group(0) @binding(5) var<storage, read> X3: array<f32>;
@group(0) @binding(6) var<storage, read> X4: array<f32>;
@group(0) @binding(7) var<storage, read> X5: array<f32>;
@group(0) @binding(8) var<storage, read> X6: array<f32>;
@group(0) @binding(9) var<storage, read> X7: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = wid.x;
    let n = P.len[k / 4u][k % 4u];
    var acc = 0.0;
    switch k {
        case 0u: { for (var i = lid.x; i < n; i += 256u) { acc += X0[i] * X0[i]; } }
        case 1u: { for (var i = lid.x; i < n; i += 256u) { acc += X1[i] * X1[i]; } }
        case 2u: { for (var i = lid.x; i < n; i += 256u) { acc += X2[i] * X2[i]; } }
        case 3u: { for (var i = lid.x; i < n; i += 256u) { acc += X3[i] * X3[i]; } }
        case 4u: { for (var i = lid.x; i < n; i += 256u) { acc += X4[i] * X4[i]; } }
        case 5u: { for (var i = lid.x; i < n; i += 256u) { acc += X5[i] * X5[i]; } }
        case 6u: { for (var i = lid.x; i < n; i += 256u) { acc += X6[i] * X6[i]; } }
        default: { for (var i = lid.x; i < n; i += 256u) { acc += X7[i] * X7[i]; } }
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            partial[lid.x] += partial[lid.x + s];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        OUT[P.first + k] = partial[0];
    }
}
