// Fused scaled dot-product attention over bh = batch·heads problems, forward and backward, with
// q, k and v either separate (bh, T, D) tensors or read in place from one packed qkv projection
// (B, T, 3·H·D) — no split, permute or merge copies. Row i of problem b of a tensor starts at
//   off + (b / heads)·n_stride + (b % heads)·h_stride + i·row_stride,
// a `RowLayout` per tensor in the parameters (`Attention`). One or two rows per invocation,
// without barriers (software adapters run those fastest); head dimensions up to 128 in registers,
// multiples of 4 (the host composes other shapes from separate kernels), so that every row is
// read and written as vec4s: all offsets are in elements, divided by 4 to index the vec4 arrays.
// The output gradient has the output's layout; the head sizes and masks are the override
// constants below. q, k and v
// may be stored as f16 (aliases TQ, TK, TV), widened to f32 as they are read; the output, the
// log-sum-exp and the gradients are f32.

// The head dimensions, the causal mask and the additive key mask are override constants: each
// shape is its own pipeline, whose loops over the head dimension the driver unrolls into
// registers (CPU drivers otherwise keep the row arrays in memory and run both arms of every
// branch on them).
override D: u32 = 16u;
override DV: u32 = 16u;
override CAUSAL: bool = false;
override HAS_BIAS: bool = false;

@group(0) @binding(0) var<uniform> P: Attention;

// Where a tensor's rows of problem b start, and the step between them, in vec4s: loops over rows
// add the step instead of recomputing the division by the number of heads for every row.
fn rows_of(l: RowLayout, b: u32) -> vec2<u32> {
    return vec2<u32>(row_at(l, b, 0u), l.row_stride) / 4u;
}

fn row_at(l: RowLayout, b: u32, i: u32) -> u32 {
    return l.offset + (b / P.heads) * l.n_stride + (b % P.heads) * l.h_stride + i * l.row_stride;
}

// The inputs every kernel of the family reads; BIAS holds the key mask where HAS_BIAS (else it
// is a one-element stand-in, never read).
@group(0) @binding(1) var<storage, read> Q: array<vec4<TQ>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<TK>>;
@group(0) @binding(3) var<storage, read> V: array<vec4<TV>>;
@group(0) @binding(4) var<storage, read> BIAS: array<f32>;

// Row `at` (in vec4s) of q, k or v, as the loops that stream rows read them: where a subgroup's
// lanes share loads (lanes.wgsl) and the row has at most 8 vec4s, each lane loads one and the
// subgroup shares them, else each invocation loads the whole row. The shared form is written
// out, not looped over: an array filled in a loop over lanes stayed in memory on llvmpipe, 50×
// slower.
fn q_row(at: u32, lane: u32) -> array<vec4<f32>, 32> {
    var r: array<vec4<f32>, 32>;
    if (LANES == 8u && D <= 32u) {
        return put_shared(r, share(vec4<f32>(Q[at + min(lane, D / 4u - 1u)])));
    }
    for (var c = 0u; c < D / 4u; c++) {
        r[c] = vec4<f32>(Q[at + c]);
    }
    return r;
}

fn k_row(at: u32, lane: u32) -> array<vec4<f32>, 32> {
    var r: array<vec4<f32>, 32>;
    if (LANES == 8u && D <= 32u) {
        return put_shared(r, share(vec4<f32>(K[at + min(lane, D / 4u - 1u)])));
    }
    for (var c = 0u; c < D / 4u; c++) {
        r[c] = vec4<f32>(K[at + c]);
    }
    return r;
}

fn v_row(at: u32, lane: u32) -> array<vec4<f32>, 32> {
    var r: array<vec4<f32>, 32>;
    if (LANES == 8u && DV <= 32u) {
        return put_shared(r, share(vec4<f32>(V[at + min(lane, DV / 4u - 1u)])));
    }
    for (var c = 0u; c < DV / 4u; c++) {
        r[c] = vec4<f32>(V[at + c]);
    }
    return r;
}

// The forward and gradient kernels take two rows per invocation, i0 and i1 = i0 + h of their
// workgroup's block of 128 (h half the block), so that every row their loops stream is loaded
// once for both, and share those loads across a subgroup's lanes (lanes.wgsl): a subgroup runs
// if its first lane has rows, and its lanes past the block's half repeat the last pair without
// writing it. `two` is false for an odd block's middle row (i1 = i0 then, not written).
struct Pair {
    b: u32,
    i0: u32,
    i1: u32,
    two: bool,
    writes: bool,
    runs: bool,
}

fn pair_of(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, n: u32) -> Pair {
    let b = wid.y + wid.z * nwg.y;
    let base = wid.x * 128u;
    let rows = min(128u, max(n, base) - base);
    let h = (rows + 1u) / 2u;
    let i0 = base + min(lid.x, h - 1u);
    let two = i0 + h < base + rows;
    let runs = b < P.bh && lid.x - lid.x % LANES < h;
    return Pair(b, i0, select(i0, i0 + h, two), two, lid.x < h, runs);
}

//!kernel attention TQ TK TV
// Forward: each invocation takes two query rows of one problem (`pair_of`) and streams over the
// keys with an online softmax (running max and sum) per row, so the Tq×Tk score matrix is never
// stored; every key's k and v rows are loaded once for both queries (CPU drivers pay each
// storage load lane by lane). Also writes each row's log-sum-exp (bh, tq), from which the
// backward pass rebuilds the probabilities.
@group(0) @binding(5) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> LSE: array<f32>;

// A query row scaled, from q's layout.
fn query(b: u32, i: u32) -> array<vec4<f32>, 32> {
    var q: array<vec4<f32>, 32>;
    let rq = row_at(P.q, b, i) / 4u;
    for (var c = 0u; c < D / 4u; c++) {
        q[c] = vec4<f32>(Q[rq + c]) * P.scale;
    }
    return q;
}

// One query's running softmax: max `m`, sum `l`; `corr` rescales its accumulated output and `p`
// weighs the new key's value (0 for a key it does not see).
struct Running {
    m: f32,
    l: f32,
    corr: f32,
    p: f32,
}

fn step(r: Running, s: f32, sees: bool) -> Running {
    let m = select(r.m, max(r.m, s), sees);
    let corr = exp(r.m - m);
    let p = select(0.0, exp(s - m), sees);
    return Running(m, r.l * corr + p, corr, p);
}

// A query that sees no key outputs zeros, with log-sum-exp +inf (probabilities rebuild as 0).
fn write_row(b: u32, i: u32, acc: ptr<function, array<vec4<f32>, 32>>, r: Running) {
    let inv = select(1.0 / r.l, 0.0, r.l == 0.0);
    let ro = row_at(P.o, b, i) / 4u;
    for (var c = 0u; c < DV / 4u; c++) {
        O[ro + c] = (*acc)[c] * inv;
    }
    LSE[b * P.tq + i] = select(r.m + log(r.l), P.inf, r.l == 0.0);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tq = P.tq;
    let tk = P.tk;
    let pair = pair_of(wid, nwg, lid, tq);
    if (!pair.runs) {
        return;
    }
    let lane = lid.x % LANES;
    let b = pair.b;
    let i0 = pair.i0;
    let i1 = pair.i1;
    var q0 = query(b, i0);
    var q1 = query(b, i1);
    var acc0: array<vec4<f32>, 32>;
    var acc1: array<vec4<f32>, 32>;
    var r0 = Running(-3.4028235e38, 0.0, 1.0, 0.0);
    var r1 = r0;
    // Under a causal mask row i1 ≥ i0 sees every key row i0 sees; the subgroup walks the keys
    // any of its rows sees.
    let kend0 = select(tk, min(tk, i0 + 1u), CAUSAL);
    let kend1 = select(tk, min(tk, i1 + 1u), CAUSAL);
    let kend = lanes_max(kend1);
    let bias_row = (b / P.heads) * tk;
    let ks = rows_of(P.k, b);
    let vs = rows_of(P.v, b);
    for (var j = 0u; j < kend; j++) {
        let kj = k_row(ks.x + j * ks.y, lane);
        let vj = v_row(vs.x + j * vs.y, lane);
        var s0 = 0.0;
        var s1 = 0.0;
        for (var c = 0u; c < D / 4u; c++) {
            s0 += dot(q0[c], kj[c]);
            s1 += dot(q1[c], kj[c]);
        }
        if (HAS_BIAS) {
            let bias = BIAS[bias_row + j];
            s0 += bias;
            s1 += bias;
        }
        // A masked key (bias -inf) is seen by neither.
        let sees0 = j < kend0 && !(s0 < -3.0e38);
        let sees1 = j < kend1 && !(s1 < -3.0e38);
        if (!sees0 && !sees1) {
            continue;
        }
        r0 = step(r0, s0, sees0);
        r1 = step(r1, s1, sees1);
        for (var c = 0u; c < DV / 4u; c++) {
            acc0[c] = acc0[c] * r0.corr + r0.p * vj[c];
            acc1[c] = acc1[c] * r1.corr + r1.p * vj[c];
        }
    }
    if (pair.writes) {
        write_row(b, i0, &acc0, r0);
        if (pair.two) {
            write_row(b, i1, &acc1, r1);
        }
    }
}

//!kernel attention_dq TQ TK TV
// dqᵢ = scale · Σⱼ pᵢⱼ (dOᵢ·vⱼ − Dᵢ) kⱼ, with pᵢⱼ = exp(scale·qᵢ·kⱼ + biasⱼ − lseᵢ); two query
// rows per invocation (`pair_of`), written in q's layout.
@group(0) @binding(5) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> LD: array<f32>;
@group(0) @binding(7) var<storage, read_write> DQ: array<vec4<f32>>;

// Query row i of problem b, scaled, and its output gradient.
struct QueryRow {
    q: array<vec4<f32>, 32>,
    go: array<vec4<f32>, 32>,
}

fn query_row(b: u32, i: u32) -> QueryRow {
    var r: QueryRow;
    let rq = row_at(P.q, b, i) / 4u;
    for (var c = 0u; c < D / 4u; c++) {
        r.q[c] = vec4<f32>(Q[rq + c]) * P.scale;
    }
    let ro = row_at(P.o, b, i) / 4u;
    for (var c = 0u; c < DV / 4u; c++) {
        r.go[c] = G[ro + c];
    }
    return r;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tq = P.tq;
    let tk = P.tk;
    let pair = pair_of(wid, nwg, lid, tq);
    if (!pair.runs) {
        return;
    }
    let lane = lid.x % LANES;
    let b = pair.b;
    let i0 = pair.i0;
    let i1 = pair.i1;
    var r0 = query_row(b, i0);
    var r1 = query_row(b, i1);
    let lse0 = LD[2u * (b * tq + i0)];
    let delta0 = LD[2u * (b * tq + i0) + 1u];
    let lse1 = LD[2u * (b * tq + i1)];
    let delta1 = LD[2u * (b * tq + i1) + 1u];
    var acc0: array<vec4<f32>, 32>;
    var acc1: array<vec4<f32>, 32>;
    let kend0 = select(tk, min(tk, i0 + 1u), CAUSAL);
    let kend1 = select(tk, min(tk, i1 + 1u), CAUSAL);
    let kend = lanes_max(kend1);
    let bias_row = (b / P.heads) * tk;
    let ks = rows_of(P.k, b);
    let vs = rows_of(P.v, b);
    for (var j = 0u; j < kend; j++) {
        let kj = k_row(ks.x + j * ks.y, lane);
        let vj = v_row(vs.x + j * vs.y, lane);
        var s0 = 0.0;
        var s1 = 0.0;
        for (var c = 0u; c < D / 4u; c++) {
            s0 += dot(r0.q[c], kj[c]);
            s1 += dot(r1.q[c], kj[c]);
        }
        if (HAS_BIAS) {
            let bias = BIAS[bias_row + j];
            s0 += bias;
            s1 += bias;
        }
        let sees0 = j < kend0 && !(s0 < -3.0e38);
        let sees1 = j < kend1 && !(s1 < -3.0e38);
        if (!sees0 && !sees1) {
            continue;
        }
        let p0 = select(0.0, exp(s0 - lse0), sees0);
        let p1 = select(0.0, exp(s1 - lse1), sees1);
        var dp0 = 0.0;
        var dp1 = 0.0;
        for (var c = 0u; c < DV / 4u; c++) {
            dp0 += dot(r0.go[c], vj[c]);
            dp1 += dot(r1.go[c], vj[c]);
        }
        let ds0 = p0 * (dp0 - delta0);
        let ds1 = p1 * (dp1 - delta1);
        for (var c = 0u; c < D / 4u; c++) {
            acc0[c] += ds0 * kj[c];
            acc1[c] += ds1 * kj[c];
        }
    }
    if (!pair.writes) {
        return;
    }
    let rq0 = row_at(P.q, b, i0) / 4u;
    for (var c = 0u; c < D / 4u; c++) {
        DQ[rq0 + c] = acc0[c] * P.scale;
    }
    if (pair.two) {
        let rq1 = row_at(P.q, b, i1) / 4u;
        for (var c = 0u; c < D / 4u; c++) {
            DQ[rq1 + c] = acc1[c] * P.scale;
        }
    }
}

//!kernel attention_dkv TQ TK TV
// Per key row j, over the queries that see it, with pᵢⱼ = exp(scale·qᵢ·kⱼ +
// biasⱼ − lseᵢ), writing OUT in k's and/or v's layout (zeros for a masked key):
//   WANT_DK:  dkⱼ = scale · Σᵢ pᵢⱼ (dOᵢ·vⱼ − Dᵢ) qᵢ
//   WANT_DV:  dvⱼ = Σᵢ pᵢⱼ dOᵢ
// Both at once when k and v share one gradient buffer (packed qkv), one per launch otherwise.
override WANT_DK: bool = true;
override WANT_DV: bool = true;

@group(0) @binding(5) var<storage, read> G: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> LD: array<f32>;
@group(0) @binding(7) var<storage, read_write> OUT: array<vec4<f32>>;

// Row `at` of the output gradient, as `v_row` reads v.
fn g_row(at: u32, lane: u32) -> array<vec4<f32>, 32> {
    var r: array<vec4<f32>, 32>;
    if (LANES == 8u && DV <= 32u) {
        return put_shared(r, share(G[at + min(lane, DV / 4u - 1u)]));
    }
    for (var c = 0u; c < DV / 4u; c++) {
        r[c] = G[at + c];
    }
    return r;
}

// Key row j of problem b: k (scaled) and v, where they are stored, and the first query that
// sees it (tq for a masked key, which gets no gradient; under a causal mask queries i ≥ j).
struct KeyRow {
    k: array<vec4<f32>, 32>,
    v: array<vec4<f32>, 32>,
    rk: u32,
    rv: u32,
    bias: f32,
    istart: u32,
}

fn key_row(b: u32, j: u32) -> KeyRow {
    var r: KeyRow;
    r.rk = row_at(P.k, b, j) / 4u;
    r.rv = row_at(P.v, b, j) / 4u;
    if (HAS_BIAS) {
        r.bias = BIAS[(b / P.heads) * P.tk + j];
    }
    for (var c = 0u; c < D / 4u; c++) {
        r.k[c] = vec4<f32>(K[r.rk + c]) * P.scale;
    }
    for (var c = 0u; c < DV / 4u; c++) {
        r.v[c] = vec4<f32>(V[r.rv + c]);
    }
    r.istart = select(select(0u, j, CAUSAL), P.tq, r.bias < -3.0e38);
    return r;
}

// Two key rows per invocation (`pair_of`), so that every query row and output gradient is
// loaded once for both.
@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tq = P.tq;
    let pair = pair_of(wid, nwg, lid, P.tk);
    if (!pair.runs) {
        return;
    }
    let lane = lid.x % LANES;
    let b = pair.b;
    var r0 = key_row(b, pair.i0);
    var r1 = key_row(b, pair.i1);
    var acc_k0: array<vec4<f32>, 32>;
    var acc_k1: array<vec4<f32>, 32>;
    var acc_v0: array<vec4<f32>, 32>;
    var acc_v1: array<vec4<f32>, 32>;
    let qs = rows_of(P.q, b);
    let os = rows_of(P.o, b);
    // The subgroup walks the queries that see any of its keys.
    for (var i = lanes_min(min(r0.istart, r1.istart)); i < tq; i++) {
        // Query row i and its output gradient, each loaded once for all four uses.
        let qi = q_row(qs.x + i * qs.y, lane);
        let gi = g_row(os.x + i * os.y, lane);
        var s0 = r0.bias;
        var s1 = r1.bias;
        for (var c = 0u; c < D / 4u; c++) {
            s0 += dot(qi[c], r0.k[c]);
            s1 += dot(qi[c], r1.k[c]);
        }
        let lse = LD[2u * (b * tq + i)];
        let p0 = select(0.0, exp(s0 - lse), i >= r0.istart);
        let p1 = select(0.0, exp(s1 - lse), i >= r1.istart);
        if (WANT_DV) {
            for (var c = 0u; c < DV / 4u; c++) {
                acc_v0[c] += p0 * gi[c];
                acc_v1[c] += p1 * gi[c];
            }
        }
        if (WANT_DK) {
            var dp0 = 0.0;
            var dp1 = 0.0;
            for (var c = 0u; c < DV / 4u; c++) {
                dp0 += dot(gi[c], r0.v[c]);
                dp1 += dot(gi[c], r1.v[c]);
            }
            let delta = LD[2u * (b * tq + i) + 1u];
            let ds0 = p0 * (dp0 - delta);
            let ds1 = p1 * (dp1 - delta);
            for (var c = 0u; c < D / 4u; c++) {
                acc_k0[c] += ds0 * qi[c];
                acc_k1[c] += ds1 * qi[c];
            }
        }
    }
    if (!pair.writes) {
        return;
    }
    if (WANT_DV) {
        for (var c = 0u; c < DV / 4u; c++) {
            OUT[r0.rv + c] = acc_v0[c];
        }
    }
    if (WANT_DK) {
        for (var c = 0u; c < D / 4u; c++) {
            OUT[r0.rk + c] = acc_k0[c] * P.scale;
        }
    }
    if (pair.two) {
        if (WANT_DV) {
            for (var c = 0u; c < DV / 4u; c++) {
                OUT[r1.rv + c] = acc_v1[c];
            }
        }
        if (WANT_DK) {
            for (var c = 0u; c < D / 4u; c++) {
                OUT[r1.rk + c] = acc_k1[c] * P.scale;
            }
        }
    }
}
