//! Fused neural-network kernels: softmax, layer norm, row gather/scatter.

use super::{dot, map1, map_in_place, map_same, max_of, sum_by, CpuData, Elem, PAR_MIN};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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
        T::exp_shifted(row, m);
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

/// Layer norm with its affine map fused in one row pass: returns `(y, x̂, rstd)` with
/// y = x̂·w + b.
pub fn layer_norm_affine(
    x: &CpuData,
    w: &CpuData,
    b: &CpuData,
    cols: usize,
    eps: f64,
) -> (CpuData, CpuData, CpuData) {
    fn go<T: Elem>(x: &[T], w: &[T], b: &[T], cols: usize, eps: f64) -> [Vec<T>; 3] {
        let rows = x.len() / cols.max(1);
        let (mut y, mut xhat) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        let mut rstd = vec![T::zero(); rows];
        let (n, eps) = (T::from_f64(cols as f64), T::from_f64(eps));
        type Row<'a, T> = (
            (
                (&'a mut [MaybeUninit<T>], &'a mut [MaybeUninit<T>]),
                &'a mut T,
            ),
            &'a [T],
        );
        let row = |(((y, xh), r), x): Row<T>| {
            let mean = sum_by(x, |v| v) / n;
            let var = sum_by(x, |v| (v - mean) * (v - mean)) / n;
            *r = T::one() / (var + eps).sqrt();
            for ((((y, xh), &x), &w), &b) in y.iter_mut().zip(xh.iter_mut()).zip(x).zip(w).zip(b) {
                let h = (x - mean) * *r;
                xh.write(h);
                y.write(h * w + b);
            }
        };
        if cols > 0 {
            let (ys, xs) = (
                &mut y.spare_capacity_mut()[..x.len()],
                &mut xhat.spare_capacity_mut()[..x.len()],
            );
            if x.len() >= PAR_MIN {
                ys.par_chunks_mut(cols)
                    .zip(xs.par_chunks_mut(cols))
                    .zip(rstd.par_iter_mut())
                    .zip(x.par_chunks(cols))
                    .for_each(row);
            } else {
                ys.chunks_mut(cols)
                    .zip(xs.chunks_mut(cols))
                    .zip(rstd.iter_mut())
                    .zip(x.chunks(cols))
                    .for_each(row);
            }
        }
        // SAFETY: the rows cover all x.len() elements (none when cols is 0) and each row wrote
        // every slot of y and x̂.
        unsafe {
            y.set_len(x.len());
            xhat.set_len(x.len());
        }
        [y, xhat, rstd]
    }
    let [y, xh, r] = match (x, w, b) {
        (CpuData::F32(x), CpuData::F32(w), CpuData::F32(b)) => {
            go(x, w, b, cols, eps).map(CpuData::F32)
        }
        (CpuData::F64(x), CpuData::F64(w), CpuData::F64(b)) => {
            go(x, w, b, cols, eps).map(CpuData::F64)
        }
        _ => panic!("layer_norm: input, weight and bias have different dtypes"),
    };
    (y, xh, r)
}

/// Gradients `(dx, dw, db)` of [`layer_norm_affine`] from x̂, rstd, the weight and the output
/// gradient g, in one pass over the rows (each core sums dw and db over its own rows).
pub fn layer_norm_affine_backward(
    xhat: &CpuData,
    rstd: &CpuData,
    w: &CpuData,
    g: &CpuData,
    cols: usize,
) -> (CpuData, CpuData, CpuData) {
    fn go<T: Elem>(xhat: &[T], rstd: &[T], w: &[T], g: &[T], cols: usize) -> [Vec<T>; 3] {
        // Every element of dx is written below: no zeroing pass.
        let mut dx = Vec::with_capacity(xhat.len());
        let n = T::from_f64(cols as f64);
        // Rows per task: enough to amortise a task's own dw and db, few enough to split evenly.
        let block = (PAR_MIN / cols.max(1)).max(1);
        let task = |(t, dx): (usize, &mut [MaybeUninit<T>])| -> (Vec<T>, Vec<T>) {
            let (mut dw, mut db) = (vec![T::zero(); cols], vec![T::zero(); cols]);
            let mut gw = vec![T::zero(); cols];
            for (i, dx) in dx.chunks_mut(cols).enumerate() {
                let r = t * block + i;
                let (xh, g) = (
                    &xhat[r * cols..(r + 1) * cols],
                    &g[r * cols..(r + 1) * cols],
                );
                for ((((gw, dw), db), (&g, &x)), &w) in gw
                    .iter_mut()
                    .zip(dw.iter_mut())
                    .zip(db.iter_mut())
                    .zip(g.iter().zip(xh))
                    .zip(w)
                {
                    *gw = g * w;
                    *dw = *dw + g * x;
                    *db = *db + g;
                }
                let (mg, mgx) = (sum_by(&gw, |v| v) / n, dot(&gw, xh) / n);
                for ((dx, &gw), &x) in dx.iter_mut().zip(&gw).zip(xh) {
                    dx.write(rstd[r] * (gw - mg - x * mgx));
                }
            }
            (dw, db)
        };
        let add = |(mut a, mut b): (Vec<T>, Vec<T>), (c, d): (Vec<T>, Vec<T>)| {
            a.iter_mut().zip(c).for_each(|(a, c)| *a = *a + c);
            b.iter_mut().zip(d).for_each(|(b, d)| *b = *b + d);
            (a, b)
        };
        let zeros = || (vec![T::zero(); cols], vec![T::zero(); cols]);
        let spare = &mut dx.spare_capacity_mut()[..xhat.len()];
        let (dw, db) = if cols == 0 {
            zeros()
        } else if xhat.len() >= PAR_MIN {
            spare
                .par_chunks_mut(block * cols)
                .enumerate()
                .map(task)
                .reduce(zeros, add)
        } else {
            spare
                .chunks_mut(block * cols)
                .enumerate()
                .map(task)
                .fold(zeros(), add)
        };
        // SAFETY: the tasks' chunks cover every row, and each writes all of its elements.
        unsafe { dx.set_len(xhat.len()) };
        [dx, dw, db]
    }
    let [dx, dw, db] = match (xhat, rstd, w, g) {
        (CpuData::F32(x), CpuData::F32(r), CpuData::F32(w), CpuData::F32(g)) => {
            go(x, r, w, g, cols).map(CpuData::F32)
        }
        (CpuData::F64(x), CpuData::F64(r), CpuData::F64(w), CpuData::F64(g)) => {
            go(x, r, w, g, cols).map(CpuData::F64)
        }
        _ => panic!("layer_norm backward: operands have different dtypes"),
    };
    (dx, dw, db)
}
