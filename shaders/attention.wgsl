// Fused scaled dot-product attention over bh = batch·heads problems, forward and backward, with
// q, k and v either separate (bh, T, D) tensors or read in place from one packed qkv projection
// (B, T, 3·H·D) — no split, permute or merge copies. Row i of problem b of a tensor starts at
//   off + (b / heads)·n_stride + (b % heads)·h_stride + i·row_stride,
// four layout words per tensor in P (`attention_params` in kernels.rs). One invocation per row,
// without barriers (software adapters run those fastest); head dimensions up to 128 in registers.
// P: [bh, heads, tq, tk, d, dv, scale, causal, has_bias, +inf, q layout @10, k @14, v @18, o @22,
// then one kernel-specific word @26] (the output gradient has the output's layout).

const LQ: u32 = 10u;
const LK: u32 = 14u;
const LV: u32 = 18u;
const LO: u32 = 22u;

fn row_at(l: u32, b: u32, i: u32) -> u32 {
    return P[l + 3u] + (b / P[1]) * P[l] + (b % P[1]) * P[l + 1u] + i * P[l + 2u];
}

// Invocation index of a 1-D launch of 64-wide workgroups on a 2-D grid.
fn row_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

//!kernel attention
// Forward: one invocation per query row streams over the keys with an online softmax (running
// max and sum), so the Tq×Tk score matrix is never stored. Also writes each row's log-sum-exp
// (bh, tq), from which the backward pass rebuilds the probabilities.
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> BIAS: array<f32>;
@group(0) @binding(5) var<storage, read_write> O: array<f32>;
@group(0) @binding(6) var<storage, read_write> LSE: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = row_id(gid, nwg);
    let tq = P[2];
    let tk = P[3];
    let d = P[4];
    let dv = P[5];
    let scale = pf(6u);
    let causal = P[7] != 0u;
    let has_bias = P[8] != 0u;
    if (t >= P[0] * tq) {
        return;
    }
    let b = t / tq;
    let i = t % tq;
    var q: array<f32, 128>;
    let rq = row_at(LQ, b, i);
    for (var c = 0u; c < d; c++) {
        q[c] = Q[rq + c] * scale;
    }
    var acc: array<f32, 128>;
    var m = -3.4028235e38;
    var l = 0.0;
    let kend = select(tk, min(tk, i + 1u), causal);
    let bias_row = (b / P[1]) * tk;
    for (var j = 0u; j < kend; j++) {
        var s = 0.0;
        let rk = row_at(LK, b, j);
        for (var c = 0u; c < d; c++) {
            s += q[c] * K[rk + c];
        }
        if (has_bias) {
            s += BIAS[bias_row + j];
        }
        if (s < -3.0e38) {
            continue; // a masked key (bias -inf)
        }
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * corr + p;
        let rv = row_at(LV, b, j);
        for (var c = 0u; c < dv; c++) {
            acc[c] = acc[c] * corr + p * V[rv + c];
        }
        m = m_new;
    }
    // A query that sees no key outputs zeros, with log-sum-exp +inf (probabilities rebuild as 0).
    let inv = select(1.0 / l, 0.0, l == 0.0);
    let ro = row_at(LO, b, i);
    for (var c = 0u; c < dv; c++) {
        O[ro + c] = acc[c] * inv;
    }
    LSE[t] = select(m + log(l), pf(9u), l == 0.0);
}

//!kernel attention_delta
// Backward, first pass: per query row Dᵢ = Σ dOᵢ·Oᵢ, stored beside its log-sum-exp
// (LD[2t] = lse, LD[2t + 1] = D) for the three gradient kernels.
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> O: array<f32>;
@group(0) @binding(3) var<storage, read> LSE: array<f32>;
@group(0) @binding(4) var<storage, read_write> LD: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = row_id(gid, nwg);
    let tq = P[2];
    if (t >= P[0] * tq) {
        return;
    }
    let ro = row_at(LO, t / tq, t % tq);
    var s = 0.0;
    for (var c = 0u; c < P[5]; c++) {
        s += G[ro + c] * O[ro + c];
    }
    LD[2u * t] = LSE[t];
    LD[2u * t + 1u] = s;
}

//!kernel attention_dq
// dqᵢ = scale · Σⱼ pᵢⱼ (dOᵢ·vⱼ − Dᵢ) kⱼ, with pᵢⱼ = exp(scale·qᵢ·kⱼ + biasⱼ − lseᵢ); one
// invocation per query row, written in q's layout.
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> BIAS: array<f32>;
@group(0) @binding(5) var<storage, read> G: array<f32>;
@group(0) @binding(6) var<storage, read> LD: array<f32>;
@group(0) @binding(7) var<storage, read_write> DQ: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = row_id(gid, nwg);
    let tq = P[2];
    let tk = P[3];
    let d = P[4];
    let dv = P[5];
    let scale = pf(6u);
    let has_bias = P[8] != 0u;
    if (t >= P[0] * tq) {
        return;
    }
    let b = t / tq;
    let i = t % tq;
    var q: array<f32, 128>;
    var go: array<f32, 128>;
    var acc: array<f32, 128>;
    let rq = row_at(LQ, b, i);
    for (var c = 0u; c < d; c++) {
        q[c] = Q[rq + c] * scale;
    }
    let ro = row_at(LO, b, i);
    for (var c = 0u; c < dv; c++) {
        go[c] = G[ro + c];
    }
    let lse = LD[2u * t];
    let delta = LD[2u * t + 1u];
    let kend = select(tk, min(tk, i + 1u), P[7] != 0u);
    let bias_row = (b / P[1]) * tk;
    for (var j = 0u; j < kend; j++) {
        let rk = row_at(LK, b, j);
        var s = 0.0;
        for (var c = 0u; c < d; c++) {
            s += q[c] * K[rk + c];
        }
        if (has_bias) {
            s += BIAS[bias_row + j];
        }
        if (s < -3.0e38) {
            continue;
        }
        let p = exp(s - lse);
        let rv = row_at(LV, b, j);
        var dp = 0.0;
        for (var c = 0u; c < dv; c++) {
            dp += go[c] * V[rv + c];
        }
        let ds = p * (dp - delta);
        for (var c = 0u; c < d; c++) {
            acc[c] += ds * K[rk + c];
        }
    }
    for (var c = 0u; c < d; c++) {
        DQ[rq + c] = acc[c] * scale;
    }
}

//!kernel attention_dkv
// One invocation per key row j, over the queries that see it, with pᵢⱼ = exp(scale·qᵢ·kⱼ +
// biasⱼ − lseᵢ); launched twice, writing OUT in k's or v's layout (zeros for a masked key):
//   P[26] = 0:  dkⱼ = scale · Σᵢ pᵢⱼ (dOᵢ·vⱼ − Dᵢ) qᵢ
//   P[26] = 1:  dvⱼ = Σᵢ pᵢⱼ dOᵢ
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> BIAS: array<f32>;
@group(0) @binding(5) var<storage, read> G: array<f32>;
@group(0) @binding(6) var<storage, read> LD: array<f32>;
@group(0) @binding(7) var<storage, read_write> OUT: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = row_id(gid, nwg);
    let tq = P[2];
    let tk = P[3];
    let d = P[4];
    let dv = P[5];
    let scale = pf(6u);
    let want_dv = P[26] != 0u;
    if (t >= P[0] * tk) {
        return;
    }
    let b = t / tk;
    let j = t % tk;
    let rk = row_at(LK, b, j);
    let rv = row_at(LV, b, j);
    var bias = 0.0;
    if (P[8] != 0u) {
        bias = BIAS[(b / P[1]) * tk + j];
    }
    var k: array<f32, 128>;
    var v: array<f32, 128>;
    var acc: array<f32, 128>;
    for (var c = 0u; c < d; c++) {
        k[c] = K[rk + c] * scale;
    }
    for (var c = 0u; c < dv; c++) {
        v[c] = V[rv + c];
    }
    // Under a causal mask only queries i ≥ j see key j; a masked key gets no gradient.
    var istart = select(0u, j, P[7] != 0u);
    if (bias < -3.0e38) {
        istart = tq;
    }
    for (var i = istart; i < tq; i++) {
        let rq = row_at(LQ, b, i);
        var s = bias;
        for (var c = 0u; c < d; c++) {
            s += Q[rq + c] * k[c];
        }
        let p = exp(s - LD[2u * (b * tq + i)]);
        let ro = row_at(LO, b, i);
        if (want_dv) {
            for (var c = 0u; c < dv; c++) {
                acc[c] += p * G[ro + c];
            }
        } else {
            var dp = 0.0;
            for (var c = 0u; c < dv; c++) {
                dp += G[ro + c] * v[c];
            }
            let ds = p * (dp - LD[2u * (b * tq + i) + 1u]);
            for (var c = 0u; c < d; c++) {
                acc[c] += ds * Q[rq + c];
            }
        }
    }
    if (want_dv) {
        for (var c = 0u; c < dv; c++) {
            OUT[rv + c] = acc[c];
        }
    } else {
        for (var c = 0u; c < d; c++) {
            OUT[rk + c] = acc[c] * scale;
        }
    }
}
