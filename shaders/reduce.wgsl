// Reductions of the middle extent of an (outer, n, inner) layout. Op codes: 0 sum, 1 max, 2 min,
// 3 argmax, 4 argmin (indices stored as floats), as in backend/mod.rs.


// The op, whether the input carries indices from an earlier pass, and whether this pass writes
// the final result: override constants, so that a sum compiles to a plain loop (CPU drivers run
// every arm of a branch they cannot prove uniform).
override OP: u32 = 0u;
override HAS_IDX: bool = false;
override FINAL: bool = false;

// Whether value v at index j should replace the current best (b at index bj).
fn better(op: u32, v: f32, j: u32, b: f32, bj: u32) -> bool {
    if (op == 1u || op == 3u) {
        return v > b || (v == b && j < bj);
    }
    return v < b || (v == b && j < bj);
}

//!kernel reduce_chunks
// One invocation per (outer, block, inner) output: reduces one block of at most `chunk` entries
// of the middle extent, so that no invocation loops too long (llvmpipe ends an invocation's loops
// after 65,535 iterations in all). The host repeats this until one block remains. Extrema carry
// their index along in IY; later passes read the indices of the previous one from IX.
// P: [outer, n, inner, chunk, blocks]; the op, HAS_IDX and FINAL are override constants.
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> IX: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> IY: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_id(gid, nwg);
    let n = P[1];
    let inner = P[2];
    let op = OP;
    let chunk = P[3];
    let blocks = P[4];
    if (t >= P[0] * blocks * inner) {
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
        if (op == 0u) {
            best += v;
        } else if (at == 0xffffffffu || better(op, v, idx, best, at)) {
            best = v;
            at = idx;
        }
    }
    Y[t] = select(best, f32(at), op >= 3u && FINAL);
    if (op != 0u) {
        IY[t] = at; // sums bind a stand-in here
    }
}
