//! Fused neural-network kernels: softmax, layer norm, row gather/scatter.

use super::{dot, map1, map_in_place, map_same, max_of, sum_by, CpuData, Elem, PAR_MIN};
use rayon::prelude::*;

/// Runs `f(row_index, row)` over the `cols`-wide rows of `out`, in parallel when large.
fn rows_mut<T: Send>(out: &mut [T], cols: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if cols == 0 {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, c)| f(r, c));
    } else {
        out.chunks_mut(cols).enumerate().for_each(|(r, c)| f(r, c));
    }
}

/// In-place softmax of one row; returns its log-sum-exp. A row of only -inf becomes zeros
/// with log-sum-exp +inf, so that exp(s - lse) rebuilds zeros in the backward pass.
pub(super) fn softmax_row<T: Elem>(row: &mut [T], log: bool) -> T {
    let m = max_of(row);
    if m == T::neg_infinity() {
        row.iter_mut()
            .for_each(|v| *v = if log { T::neg_infinity() } else { T::zero() });
        return T::infinity();
    }
    if log {
        let lse = m + sum_by(row, |v| (v - m).exp_fast()).ln();
        row.iter_mut().for_each(|v| *v = *v - lse);
        lse
    } else {
        map_in_place(row, |v| (v - m).exp_fast());
        let sum = sum_by(row, |v| v);
        let inv = T::one() / sum;
        map_in_place(row, |v| v * inv);
        m + sum.ln()
    }
}

pub fn softmax(x: &CpuData, _rows: usize, cols: usize, log: bool) -> CpuData {
    map1!(x, v => {
        let mut out = v.clone();
        rows_mut(&mut out, cols, |_, r| {
            softmax_row(r, log);
        });
        out
    })
}

pub fn softmax_backward(y: &CpuData, g: &CpuData, _rows: usize, cols: usize, log: bool) -> CpuData {
    fn bwd<T: Elem>(y: &[T], g: &[T], cols: usize, log: bool) -> Vec<T> {
        let mut out = vec![T::zero(); y.len()];
        rows_mut(&mut out, cols, |r, o| {
            let (y, g) = (&y[r * cols..(r + 1) * cols], &g[r * cols..(r + 1) * cols]);
            if log {
                let s = sum_by(g, |v| v);
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = g - y.exp_fast() * s;
                }
            } else {
                let s = dot(y, g);
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = y * (g - s);
                }
            }
        });
        out
    }
    map_same!("softmax backward"; y, g => bwd(y, g, cols, log))
}

pub fn layer_norm(x: &CpuData, rows: usize, cols: usize, eps: f64) -> (CpuData, CpuData, CpuData) {
    fn ln<T: Elem>(x: &[T], rows: usize, cols: usize, eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
        let mut y = x.to_vec();
        let mut stats = vec![(T::zero(), T::zero()); rows];
        let n = T::from_f64(cols as f64);
        let eps = T::from_f64(eps);
        let norm = |r: &mut [T]| {
            let mean = r.iter().fold(T::zero(), |a, &b| a + b) / n;
            let var = r
                .iter()
                .fold(T::zero(), |a, &b| a + (b - mean) * (b - mean))
                / n;
            let rstd = T::one() / (var + eps).sqrt();
            r.iter_mut().for_each(|v| *v = (*v - mean) * rstd);
            (mean, rstd)
        };
        if cols > 0 {
            if x.len() >= PAR_MIN {
                y.par_chunks_mut(cols)
                    .zip(stats.par_iter_mut())
                    .for_each(|(r, s)| *s = norm(r));
            } else {
                y.chunks_mut(cols)
                    .zip(stats.iter_mut())
                    .for_each(|(r, s)| *s = norm(r));
            }
        }
        let (m, r) = stats.into_iter().unzip();
        (y, m, r)
    }
    match x {
        CpuData::F32(v) => {
            let (y, m, r) = ln(v, rows, cols, eps);
            (CpuData::F32(y), CpuData::F32(m), CpuData::F32(r))
        }
        CpuData::F64(v) => {
            let (y, m, r) = ln(v, rows, cols, eps);
            (CpuData::F64(y), CpuData::F64(m), CpuData::F64(r))
        }
    }
}

pub fn layer_norm_backward(
    xhat: &CpuData,
    rstd: &CpuData,
    g: &CpuData,
    _rows: usize,
    cols: usize,
) -> CpuData {
    fn bwd<T: Elem>(xhat: &[T], rstd: &[T], g: &[T], cols: usize) -> Vec<T> {
        let mut out = vec![T::zero(); xhat.len()];
        let n = T::from_f64(cols as f64);
        rows_mut(&mut out, cols, |r, o| {
            let (xh, g) = (
                &xhat[r * cols..(r + 1) * cols],
                &g[r * cols..(r + 1) * cols],
            );
            let (mg, mgx) = (sum_by(g, |v| v) / n, dot(g, xh) / n);
            for ((o, &x), &g) in o.iter_mut().zip(xh).zip(g) {
                *o = rstd[r] * (g - mg - x * mgx);
            }
        });
        out
    }
    map_same!("layer_norm backward"; xhat, rstd, g => bwd(xhat, rstd, g, cols))
}

pub fn index_select(x: &CpuData, outer: usize, n: usize, inner: usize, idx: &[u32]) -> CpuData {
    map1!(x, v => {
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                let at = (o * n + i as usize) * inner;
                out.extend_from_slice(&v[at..at + inner]);
            }
        }
        out
    })
}

pub fn index_add(g: &CpuData, outer: usize, n: usize, inner: usize, idx: &[u32]) -> CpuData {
    map1!(g, v => {
        let mut out = vec![num_traits::zero(); outer * n * inner];
        for o in 0..outer {
            for (j, &i) in idx.iter().enumerate() {
                let src = &v[(o * idx.len() + j) * inner..][..inner];
                let dst = &mut out[(o * n + i as usize) * inner..][..inner];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
        out
    })
}
