//! Batched matrix products through the `gemm` crate, which reads operands through arbitrary
//! strides (so transposes are free) and runs AVX-512/AVX2 micro-kernels.

use super::{map_same, CpuData, Elem};
use crate::backend::MatmulSpec;
use gemm::Parallelism;
use rayon::prelude::*;

/// Products of at least this many multiply-adds split one matrix across cores; smaller ones are
/// run one per core across the batch instead.
const PAR_GEMM_MIN: usize = 1 << 18;

pub fn matmul(a: &CpuData, b: &CpuData, spec: MatmulSpec) -> CpuData {
    map_same!("matmul"; a, b => matmul_t(a, b, spec))
}

pub(super) fn matmul_t<T: Elem>(a: &[T], b: &[T], s: MatmulSpec) -> Vec<T> {
    let MatmulSpec { batch, m, k, n, .. } = s;
    let mut out = vec![T::zero(); batch * m * n];
    if out.is_empty() {
        return out;
    }
    // (row stride, column stride) of each operand as stored.
    let (a_rs, a_cs) = if s.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if s.trans_b { (1, k) } else { (n, 1) };
    let work = m * n * k;
    let threads = rayon::current_num_threads();
    let one = |i: usize, c: &mut [T], par: Parallelism| {
        if k == 0 {
            return;
        }
        let a = &a[i * s.a_batch_stride..];
        let b = &b[i * s.b_batch_stride..];
        // SAFETY: the strides above address only elements inside the (batch-offset) operand
        // slices, whose lengths the op layer checked against the shapes; `c` is m×n.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                T::zero(),
                T::one(),
                false,
                false,
                false,
                par,
            );
        }
    };
    if work >= PAR_GEMM_MIN || batch == 1 {
        let par = if work >= PAR_GEMM_MIN && threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        out.chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, par));
    } else {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, Parallelism::None));
    }
    out
}
