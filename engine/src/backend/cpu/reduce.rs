//! Reductions along the middle extent of an (outer, n, inner) layout.

use super::{map1, sum_by, CpuData, Elem, PAR_MIN};
use crate::backend::Reduce;
use rayon::prelude::*;

pub fn reduce(op: Reduce, x: &CpuData, outer: usize, n: usize, inner: usize) -> CpuData {
    map1!(x, v => reduce_t(op, v, outer, n, inner))
}

fn reduce_t<T: Elem>(op: Reduce, x: &[T], outer: usize, n: usize, inner: usize) -> Vec<T> {
    let mut out = vec![T::zero(); outer * inner];
    // Columns c0..c0 + row.len() of outer index o.
    let run = |o: usize, c0: usize, row: &mut [T]| {
        let base = &x[o * n * inner + c0..(o + 1) * n * inner];
        match op {
            Reduce::Sum => {
                for j in 0..n {
                    for (r, &v) in row.iter_mut().zip(&base[j * inner..]) {
                        *r = *r + v;
                    }
                }
            }
            Reduce::Max | Reduce::Min | Reduce::ArgMax | Reduce::ArgMin => {
                let want_max = matches!(op, Reduce::Max | Reduce::ArgMax);
                let arg = matches!(op, Reduce::ArgMax | Reduce::ArgMin);
                for (i, r) in row.iter_mut().enumerate() {
                    let mut best = base[i];
                    let mut at = 0;
                    for j in 1..n {
                        let v = base[j * inner + i];
                        // NaN propagates, as in PyTorch's max.
                        let better = if want_max { v > best } else { v < best };
                        if (better || v.is_nan()) && !best.is_nan() {
                            best = v;
                            at = j;
                        }
                    }
                    *r = if arg { T::from_f64(at as f64) } else { best };
                }
            }
        }
    };
    if n == 0 || out.is_empty() {
        return out;
    }
    if inner == 1 && op == Reduce::Sum {
        let sum_row = |(o, r): (usize, &mut T)| *r = sum_by(&x[o * n..(o + 1) * n], |v| v);
        if x.len() >= PAR_MIN {
            out.par_iter_mut().enumerate().for_each(sum_row);
        } else {
            out.iter_mut().enumerate().for_each(sum_row);
        }
        return out;
    }
    let threads = rayon::current_num_threads();
    if x.len() >= PAR_MIN && outer >= threads {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(o, row)| run(o, 0, row));
    } else if x.len() >= PAR_MIN && inner >= 32 {
        // Few outer rows (a bias gradient is one): each thread takes a block of columns, and
        // every column is still summed in row order, so the result does not depend on threads.
        let cols = inner.div_ceil(threads).next_multiple_of(16);
        out.par_chunks_mut(inner)
            .enumerate()
            .flat_map(|(o, row)| {
                row.par_chunks_mut(cols)
                    .enumerate()
                    .map(move |(c, r)| (o, c, r))
            })
            .for_each(|(o, c, r)| run(o, c * cols, r));
    } else {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(o, row)| run(o, 0, row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_blocks_of_one_row_reduce_as_the_plain_loop_does() {
        // 300 × 130: above PAR_MIN, one outer row, a ragged last column block.
        let (n, inner) = (300, 130);
        let x: Vec<f32> = (0..n * inner)
            .map(|i| ((i * 37 % 101) as f32).sin())
            .collect();
        let sums = reduce_t(Reduce::Sum, &x, 1, n, inner);
        let maxes = reduce_t(Reduce::ArgMax, &x, 1, n, inner);
        for c in 0..inner {
            let column = (0..n).map(|j| x[j * inner + c]);
            let sum = column.clone().fold(0.0f32, |a, v| a + v);
            assert_eq!(sums[c].to_bits(), sum.to_bits(), "column {c}");
            let best =
                column.enumerate().fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, v)| if v > b.1 { (j, v) } else { b },
                );
            assert_eq!(maxes[c], best.0 as f32, "column {c}");
        }
    }
}
