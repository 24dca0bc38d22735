//! Fused attention, forward and backward, one (batch, head) problem at a time: each product is
//! one `gemm` call that reads the head's q, k, v rows in place through strides and writes its
//! output (or gradient) rows in place, and the T×T scores live only in per-thread scratch. The
//! backward pass rebuilds the probabilities from the saved log-sum-exp (FlashAttention's recipe
//! without tiling: one problem's scores fit in cache at this library's sequence lengths). Heads
//! are read from separate `(B, H, T, D)` tensors or one packed `(B, T, 3·C)` projection, so
//! multi-head attention needs no split, permute or merge copies.

use super::matmul::gemm_into;
use super::{dot, map_in_place, CpuData, Elem, PAR_MIN};
use crate::backend::{AttnSpec, Packing};
use rayon::prelude::*;

/// Where one head's rows live inside one batch element's chunk of a buffer.
#[derive(Clone, Copy)]
struct Rows {
    offset: usize,
    head: usize,
    row: usize,
}

impl Rows {
    fn at(&self, h: usize, i: usize) -> usize {
        self.offset + h * self.head + i * self.row
    }
}

/// Per-batch chunk sizes and head layouts of q, k, v and the output.
struct Layout {
    q: Rows,
    k: Rows,
    v: Rows,
    o: Rows,
    /// Elements per batch element of the q, k, v buffers (one buffer when packed).
    chunk: [usize; 3],
    o_chunk: usize,
}

impl Layout {
    fn new(s: &AttnSpec, packing: Packing) -> Layout {
        let h = s.heads;
        match packing {
            Packing::Separate => Layout {
                q: Rows {
                    offset: 0,
                    head: s.tq * s.d,
                    row: s.d,
                },
                k: Rows {
                    offset: 0,
                    head: s.tk * s.d,
                    row: s.d,
                },
                v: Rows {
                    offset: 0,
                    head: s.tk * s.dv,
                    row: s.dv,
                },
                o: Rows {
                    offset: 0,
                    head: s.tq * s.dv,
                    row: s.dv,
                },
                chunk: [h * s.tq * s.d, h * s.tk * s.d, h * s.tk * s.dv],
                o_chunk: h * s.tq * s.dv,
            },
            Packing::Qkv => {
                let c = h * s.d;
                let w = 3 * c;
                Layout {
                    q: Rows {
                        offset: 0,
                        head: s.d,
                        row: w,
                    },
                    k: Rows {
                        offset: c,
                        head: s.d,
                        row: w,
                    },
                    v: Rows {
                        offset: 2 * c,
                        head: s.d,
                        row: w,
                    },
                    o: Rows {
                        offset: 0,
                        head: s.d,
                        row: c,
                    },
                    chunk: [s.tq * w; 3],
                    o_chunk: s.tq * c,
                }
            }
        }
    }
}

/// Batch element `b`'s chunk of a buffer.
fn batch_chunk<T>(x: &[T], b: usize, size: usize) -> &[T] {
    &x[b * size..(b + 1) * size]
}

/// Rows per block when a causal mask lets blocks skip the keys they cannot see.
const CAUSAL_BLOCK: usize = 32;

/// Query row blocks `(r0, r1, keys)`: rows `r0..r1` see at most keys `0..keys`. Without a causal
/// mask one block covers everything; with it, each block of rows stops at its last row's key,
/// which skips the masked upper triangle (about 3/8 of the products at T = 128).
fn query_blocks(s: &AttnSpec) -> Vec<(usize, usize, usize)> {
    if !s.causal {
        return vec![(0, s.tq, s.tk)];
    }
    (0..s.tq)
        .step_by(CAUSAL_BLOCK)
        .map(|r0| {
            let r1 = (r0 + CAUSAL_BLOCK).min(s.tq);
            (r0, r1, r1.min(s.tk))
        })
        .collect()
}

/// Keys query row `i` sees: `0..seen_keys(s, i)` (all of them without a causal mask).
fn seen_keys(s: &AttnSpec, i: usize) -> usize {
    if s.causal {
        (i + 1).min(s.tk)
    } else {
        s.tk
    }
}

/// Key row blocks `(c0, c1, first)`: keys `c0..c1` are seen only by queries `first..tq`.
fn key_blocks(s: &AttnSpec) -> Vec<(usize, usize, usize)> {
    if !s.causal {
        return vec![(0, s.tk, 0)];
    }
    (0..s.tk)
        .step_by(CAUSAL_BLOCK)
        .map(|c0| (c0, (c0 + CAUSAL_BLOCK).min(s.tk), c0.min(s.tq)))
        .collect()
}

/// `c` (m×n at row stride `ldc`) = a·b, each operand read from the start of its slice through
/// (row, column) strides. An empty product (k = 0) is zero.
#[allow(clippy::too_many_arguments)]
fn gemm<T: Elem>(
    (m, n, k): (usize, usize, usize),
    c: &mut [T],
    ldc: usize,
    a: &[T],
    a_st: (usize, usize),
    b: &[T],
    b_st: (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * ldc + n <= c.len(),
        "internal: attention output out of bounds"
    );
    if k == 0 {
        (0..m).for_each(|i| c[i * ldc..i * ldc + n].fill(T::zero()));
        return;
    }
    assert!(
        (m - 1) * a_st.0 + (k - 1) * a_st.1 < a.len()
            && (k - 1) * b_st.0 + (n - 1) * b_st.1 < b.len(),
        "internal: attention operand out of bounds"
    );
    // SAFETY: the asserts above keep every strided access inside the slices.
    unsafe {
        gemm_into(
            m,
            n,
            k,
            c.as_mut_ptr(),
            ldc,
            a.as_ptr(),
            a_st,
            b.as_ptr(),
            b_st,
            false,
        )
    }
}

/// The scores of one problem in `p` (tq × tk): `q_i·k_j·scale + bias_j`, -inf where masked.
fn scores<T: Elem>(
    s: &AttnSpec,
    lay: &Layout,
    h: usize,
    q: &[T],
    k: &[T],
    bias: Option<&[T]>,
    p: &mut Vec<T>,
) {
    p.resize(s.tq * s.tk, T::zero());
    for (r0, r1, keys) in query_blocks(s) {
        gemm(
            (r1 - r0, keys, s.d),
            &mut p[r0 * s.tk..],
            s.tk,
            &q[lay.q.at(h, r0)..],
            (lay.q.row, 1),
            &k[lay.k.at(h, 0)..],
            (1, lay.k.row),
        );
    }
    let scale = T::from_f64(s.scale);
    for (i, row) in p.chunks_exact_mut(s.tk.max(1)).enumerate() {
        // Under the causal mask only keys 0..=i were computed; the rest become -inf.
        let seen = seen_keys(s, i);
        let (row, hidden) = row.split_at_mut(seen);
        map_in_place(row, |x| x * scale);
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(x, &b)| *x = *x + b);
        }
        hidden.fill(T::neg_infinity());
    }
}

fn forward<T: Elem>(
    q: &[T],
    k: &[T],
    v: &[T],
    bias: Option<&[T]>,
    s: AttnSpec,
    packing: Packing,
) -> (Vec<T>, Vec<T>) {
    let lay = Layout::new(&s, packing);
    let batches = s.bh / s.heads.max(1);
    let mut o = super::full(batches * lay.o_chunk, T::zero());
    let mut lse = vec![T::zero(); s.bh * s.tq];
    let lse_chunk = s.heads * s.tq;
    let run = |b: usize, o: &mut [T], lse: &mut [T]| {
        let (qb, kb, vb) = (
            batch_chunk(q, b, lay.chunk[0]),
            batch_chunk(k, b, lay.chunk[1]),
            batch_chunk(v, b, lay.chunk[2]),
        );
        let bias = bias.map(|m| batch_chunk(m, b, s.tk));
        let mut p = vec![];
        let blocks = query_blocks(&s);
        for h in 0..s.heads {
            scores(&s, &lay, h, qb, kb, bias, &mut p);
            for (i, row) in p.chunks_exact_mut(s.tk.max(1)).enumerate() {
                // Under the causal mask keys past i are -inf: weight 0 without an exp.
                let seen = seen_keys(&s, i);
                let (row, hidden) = row.split_at_mut(seen);
                lse[h * s.tq + i] = super::nn::softmax_row(row, false);
                hidden.fill(T::zero());
            }
            for &(r0, r1, keys) in &blocks {
                gemm(
                    (r1 - r0, s.dv, keys),
                    &mut o[lay.o.at(h, r0)..],
                    lay.o.row,
                    &p[r0 * s.tk..],
                    (s.tk, 1),
                    &vb[lay.v.at(h, 0)..],
                    (lay.v.row, 1),
                );
            }
        }
    };
    if lay.o_chunk > 0 && lse_chunk > 0 {
        if o.len() >= PAR_MIN {
            o.par_chunks_mut(lay.o_chunk)
                .zip(lse.par_chunks_mut(lse_chunk))
                .enumerate()
                .for_each(|(b, (o, l))| run(b, o, l));
        } else {
            o.chunks_mut(lay.o_chunk)
                .zip(lse.chunks_mut(lse_chunk))
                .enumerate()
                .for_each(|(b, (o, l))| run(b, o, l));
        }
    }
    (o, lse)
}

/// Inputs of the backward pass, shared by every problem.
struct Saved<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    o: &'a [T],
    lse: &'a [T],
    g: &'a [T],
    bias: Option<&'a [T]>,
}

/// One batch element's gradient chunks: one shared chunk when packed, else dq, dk, dv.
enum GradChunks<'a, T> {
    Packed(&'a mut [T]),
    Separate([&'a mut [T]; 3]),
}

impl<T> GradChunks<'_, T> {
    /// The chunk holding the gradient of input `i` (0 = q, 1 = k, 2 = v).
    fn of(&mut self, i: usize) -> &mut [T] {
        match self {
            GradChunks::Packed(c) => c,
            GradChunks::Separate(cs) => cs[i],
        }
    }
}

/// The gradients of problem (b, h), written in place into `out`:
/// dv = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)) · scale, dq = dS K, dk = dSᵀ Q.
#[allow(clippy::too_many_arguments)]
fn problem_backward<T: Elem>(
    x: &Saved<T>,
    s: &AttnSpec,
    lay: &Layout,
    b: usize,
    h: usize,
    out: &mut GradChunks<T>,
    (p, dp): (&mut Vec<T>, &mut Vec<T>),
) {
    let (qb, kb, vb) = (
        batch_chunk(x.q, b, lay.chunk[0]),
        batch_chunk(x.k, b, lay.chunk[1]),
        batch_chunk(x.v, b, lay.chunk[2]),
    );
    let (ob, gb) = (
        batch_chunk(x.o, b, lay.o_chunk),
        batch_chunk(x.g, b, lay.o_chunk),
    );
    let bias = x.bias.map(|m| batch_chunk(m, b, s.tk));
    scores(s, lay, h, qb, kb, bias, p);
    let lse = &x.lse[(b * s.heads + h) * s.tq..][..s.tq];
    dp.resize(s.tq * s.tk, T::zero());
    let (g, o) = (&gb[lay.o.at(h, 0)..], &ob[lay.o.at(h, 0)..]);
    let (qr, kr, vr) = (lay.q.at(h, 0), lay.k.at(h, 0), lay.v.at(h, 0));
    let (ldq, ldk, ldv, ldo) = (lay.q.row, lay.k.row, lay.v.row, lay.o.row);
    let tk = s.tk.max(1);
    let queries = query_blocks(s);
    for &(r0, r1, keys) in &queries {
        gemm(
            (r1 - r0, keys, s.dv),
            &mut dp[r0 * tk..],
            tk,
            &g[r0 * ldo..],
            (ldo, 1),
            &vb[lay.v.at(h, 0)..],
            (1, ldv),
        );
    }
    let scale = T::from_f64(s.scale);
    for (i, (pi, dpi)) in p
        .chunks_exact_mut(tk)
        .zip(dp.chunks_exact_mut(tk))
        .enumerate()
    {
        let at = i * ldo;
        let delta = dot(&g[at..at + s.dv], &o[at..at + s.dv]);
        // dp's row becomes dS's row; keys the mask hides (never computed) get 0.
        let seen = seen_keys(s, i);
        let (pi, p_hidden) = pi.split_at_mut(seen);
        T::exp_shifted(pi, lse[i]);
        p_hidden.fill(T::zero());
        let (dpi, hidden) = dpi.split_at_mut(seen);
        for (d, &p) in dpi.iter_mut().zip(pi.iter()) {
            *d = p * (*d - delta) * scale;
        }
        hidden.fill(T::zero());
    }
    for (c0, c1, first) in key_blocks(s) {
        // dv = Pᵀ dO and dk = dSᵀ Q over the queries that see these keys (none: an empty
        // product, which writes zeros).
        let seen_by = s.tq - first;
        let (pa, da, ga, qa) = if seen_by > 0 {
            (
                &p[first * tk + c0..],
                &dp[first * tk + c0..],
                &g[first * ldo..],
                &qb[qr + first * ldq..],
            )
        } else {
            (&p[..0], &dp[..0], &g[..0], &qb[..0])
        };
        gemm(
            (c1 - c0, s.dv, seen_by),
            &mut out.of(2)[vr + c0 * ldv..],
            ldv,
            pa,
            (1, tk),
            ga,
            (ldo, 1),
        );
        gemm(
            (c1 - c0, s.d, seen_by),
            &mut out.of(1)[kr + c0 * ldk..],
            ldk,
            da,
            (1, tk),
            qa,
            (ldq, 1),
        );
    }
    for (r0, r1, keys) in queries {
        gemm(
            (r1 - r0, s.d, keys),
            &mut out.of(0)[qr + r0 * ldq..],
            ldq,
            &dp[r0 * tk..],
            (tk, 1),
            &kb[kr..],
            (ldk, 1),
        );
    }
}

fn backward<T: Elem>(x: Saved<T>, s: AttnSpec, packing: Packing) -> Vec<Vec<T>> {
    let lay = Layout::new(&s, packing);
    let batches = s.bh / s.heads.max(1);
    let run = |b: usize, mut out: GradChunks<T>| {
        let (mut p, mut dp) = (vec![], vec![]);
        for h in 0..s.heads {
            problem_backward(&x, &s, &lay, b, h, &mut out, (&mut p, &mut dp));
        }
    };
    let parallel = batches * lay.o_chunk >= PAR_MIN;
    if lay.chunk.contains(&0) {
        return match packing {
            Packing::Qkv => vec![vec![T::zero(); batches * lay.chunk[0]]],
            Packing::Separate => lay
                .chunk
                .iter()
                .map(|&c| vec![T::zero(); batches * c])
                .collect(),
        };
    }
    match packing {
        Packing::Qkv => {
            let mut d = super::full(batches * lay.chunk[0], T::zero());
            if parallel {
                d.par_chunks_mut(lay.chunk[0])
                    .enumerate()
                    .for_each(|(b, c)| run(b, GradChunks::Packed(c)));
            } else {
                d.chunks_mut(lay.chunk[0])
                    .enumerate()
                    .for_each(|(b, c)| run(b, GradChunks::Packed(c)));
            }
            vec![d]
        }
        Packing::Separate => {
            let mut d: Vec<Vec<T>> = lay
                .chunk
                .iter()
                .map(|&c| super::full(batches * c, T::zero()))
                .collect();
            let [dq, dk, dv] = &mut d[..] else {
                unreachable!()
            };
            let sep = |b: usize, (q, (k, v)): (&mut [T], (&mut [T], &mut [T]))| {
                run(b, GradChunks::Separate([q, k, v]))
            };
            if parallel {
                dq.par_chunks_mut(lay.chunk[0])
                    .zip(
                        dk.par_chunks_mut(lay.chunk[1])
                            .zip(dv.par_chunks_mut(lay.chunk[2])),
                    )
                    .enumerate()
                    .for_each(|(b, c)| sep(b, c));
            } else {
                dq.chunks_mut(lay.chunk[0])
                    .zip(dk.chunks_mut(lay.chunk[1]).zip(dv.chunks_mut(lay.chunk[2])))
                    .enumerate()
                    .for_each(|(b, c)| sep(b, c));
            }
            d
        }
    }
}

/// The element types a [`CpuData`] holds, so one generic body serves f32 and f64 buffers.
trait Typed: Elem {
    fn of(d: &CpuData) -> &[Self];
    fn wrap(v: Vec<Self>) -> CpuData;
}

impl Typed for f32 {
    fn of(d: &CpuData) -> &[f32] {
        match d {
            CpuData::F32(v) => v,
            CpuData::F64(_) => panic!("attention: operands have different dtypes"),
        }
    }
    fn wrap(v: Vec<f32>) -> CpuData {
        CpuData::F32(v)
    }
}

impl Typed for f64 {
    fn of(d: &CpuData) -> &[f64] {
        match d {
            CpuData::F64(v) => v,
            CpuData::F32(_) => panic!("attention: operands have different dtypes"),
        }
    }
    fn wrap(v: Vec<f64>) -> CpuData {
        CpuData::F64(v)
    }
}

/// Attention output `o` and per-row log-sum-exp; `q`, `k`, `v` are the same buffer when packed.
pub fn attention(
    q: &CpuData,
    k: &CpuData,
    v: &CpuData,
    bias: Option<&CpuData>,
    s: AttnSpec,
    packing: Packing,
) -> (CpuData, CpuData) {
    fn go<T: Typed>(
        [q, k, v]: [&CpuData; 3],
        bias: Option<&CpuData>,
        s: AttnSpec,
        packing: Packing,
    ) -> (CpuData, CpuData) {
        let (o, l) = forward(T::of(q), T::of(k), T::of(v), bias.map(T::of), s, packing);
        (T::wrap(o), T::wrap(l))
    }
    match q {
        CpuData::F32(_) => go::<f32>([q, k, v], bias, s, packing),
        CpuData::F64(_) => go::<f64>([q, k, v], bias, s, packing),
    }
}

/// Gradients of [`attention`] given its output `o`, log-sum-exp `lse` and the output gradient
/// `g`: `[dq, dk, dv]`, or `[dqkv]` when packed.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &CpuData,
    k: &CpuData,
    v: &CpuData,
    o: &CpuData,
    lse: &CpuData,
    g: &CpuData,
    bias: Option<&CpuData>,
    s: AttnSpec,
    packing: Packing,
) -> Vec<CpuData> {
    fn go<T: Typed>(
        [q, k, v, o, lse, g]: [&CpuData; 6],
        bias: Option<&CpuData>,
        s: AttnSpec,
        packing: Packing,
    ) -> Vec<CpuData> {
        let x = Saved {
            q: T::of(q),
            k: T::of(k),
            v: T::of(v),
            o: T::of(o),
            lse: T::of(lse),
            g: T::of(g),
            bias: bias.map(T::of),
        };
        backward(x, s, packing).into_iter().map(T::wrap).collect()
    }
    let bufs = [q, k, v, o, lse, g];
    match q {
        CpuData::F32(_) => go::<f32>(bufs, bias, s, packing),
        CpuData::F64(_) => go::<f64>(bufs, bias, s, packing),
    }
}
