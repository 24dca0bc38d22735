// Fused scaled dot-product attention forward: one invocation per query row streams over the keys
// with an online softmax (running max and sum), so the Tq×Tk score matrix is never stored.
// Also writes each row's log-sum-exp, from which the backward pass rebuilds the probabilities.
// P: [bh, heads, tq, tk, d, dv, scale, causal, has_bias, +inf]; head dims up to 128.

//!kernel attention
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> BIAS: array<f32>;
@group(0) @binding(5) var<storage, read_write> O: array<f32>;
@group(0) @binding(6) var<storage, read_write> LSE: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let bh = P[0];
    let tq = P[2];
    let tk = P[3];
    let d = P[4];
    let dv = P[5];
    let scale = pf(6u);
    let causal = P[7] != 0u;
    let has_bias = P[8] != 0u;
    if (t >= bh * tq) {
        return;
    }
    let b = t / tq;
    let i = t % tq;
    var q: array<f32, 128>;
    for (var c = 0u; c < d; c++) {
        q[c] = Q[t * d + c] * scale;
    }
    var acc: array<f32, 128>;
    var m = -3.4028235e38;
    var l = 0.0;
    let kend = select(tk, min(tk, i + 1u), causal);
    let bias_row = (b / P[1]) * tk;
    for (var j = 0u; j < kend; j++) {
        var s = 0.0;
        let kb = (b * tk + j) * d;
        for (var c = 0u; c < d; c++) {
            s += q[c] * K[kb + c];
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
        let vb = (b * tk + j) * dv;
        for (var c = 0u; c < dv; c++) {
            acc[c] = acc[c] * corr + p * V[vb + c];
        }
        m = m_new;
    }
    // A query that sees no key outputs zeros, with log-sum-exp +inf (probabilities rebuild as 0).
    let inv = select(1.0 / l, 0.0, l == 0.0);
    for (var c = 0u; c < dv; c++) {
        O[t * dv + c] = acc[c] * inv;
    }
    LSE[t] = select(m + log(l), pf(9u), l == 0.0);
}
