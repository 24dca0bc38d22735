//! Batched matrix products through the `gemm` crate's AVX-512/AVX2 micro-kernels, which read
//! operands through arbitrary strides (so transposes are free).
//!
//! Threads are assigned here rather than by gemm's own rayon mode: splitting the output into one
//! column (or row) panel per core measured 288 GFLOP/s at N=1024 on 2 cores, against 127 GFLOP/s
//! for gemm's internal split.

use super::{map_same, CpuData, Elem};
use crate::backend::MatmulSpec;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Products of at least this many multiply-adds are split across cores; smaller ones run one
/// per core across the batch instead.
const PAR_GEMM_MIN: usize = 1 << 18;

pub fn matmul(a: &CpuData, b: &CpuData, spec: MatmulSpec) -> CpuData {
    map_same!("matmul"; a, b => matmul_t(a, b, spec))
}

/// A raw pointer that may cross to a worker thread: each task writes a disjoint panel of C.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// The pointer; a method, so closures capture the whole (Send) wrapper, not its field.
    fn get(self) -> *mut T {
        self.0
    }
}
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// C (m×n, row stride `ldc`) = A·B, or C += A·B when `accumulate`, for operands given by pointer
/// and (row, column) strides.
///
/// # Safety
/// The pointers must address valid m×k, k×n and m×n matrices under those strides.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_into<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    ldc: usize,
    a: *const T,
    (a_rs, a_cs): (usize, usize),
    b: *const T,
    (b_rs, b_cs): (usize, usize),
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        // C ← α·C + β·A·B, α counting only when C is read.
        if accumulate { T::one() } else { T::zero() },
        T::one(),
        false,
        false,
        false,
        Parallelism::None,
    )
}

pub(super) fn matmul_t<T: Elem>(a: &[T], b: &[T], s: MatmulSpec) -> Vec<T> {
    let MatmulSpec { batch, m, k, n, .. } = s;
    if batch * m * n == 0 || k == 0 {
        return vec![T::zero(); batch * m * n];
    }
    // gemm overwrites every element of C (it never reads it), so C starts uninitialised.
    let mut out: Vec<T> = Vec::with_capacity(batch * m * n);
    let a_st = if s.trans_a { (1, m) } else { (k, 1) };
    let b_st = if s.trans_b { (1, k) } else { (n, 1) };
    let threads = rayon::current_num_threads();
    let work = m * n * k;
    if work >= PAR_GEMM_MIN && threads > 1 {
        // One large product at a time, its output split into panels along the longer side.
        for i in 0..batch {
            let (ab, bb) = (&a[i * s.a_batch_stride..], &b[i * s.b_batch_stride..]);
            // SAFETY: batch i's block lies inside the allocated capacity.
            let c = SendPtr(unsafe { out.as_mut_ptr().add(i * m * n) });
            let split_cols = n >= m;
            let len = if split_cols { n } else { m };
            let chunk = len.div_ceil(threads).next_multiple_of(16);
            (0..len.div_ceil(chunk)).into_par_iter().for_each(|t| {
                let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(len));
                // SAFETY: panels [lo, hi) are disjoint; offsets stay inside the operands, whose
                // sizes the op layer checked against (m, k, n).
                unsafe {
                    if split_cols {
                        gemm_into(
                            m,
                            hi - lo,
                            k,
                            c.get().add(lo),
                            n,
                            ab.as_ptr(),
                            a_st,
                            bb.as_ptr().add(lo * b_st.1),
                            b_st,
                            false,
                        );
                    } else {
                        gemm_into(
                            hi - lo,
                            n,
                            k,
                            c.get().add(lo * n),
                            n,
                            ab.as_ptr().add(lo * a_st.0),
                            a_st,
                            bb.as_ptr(),
                            b_st,
                            false,
                        );
                    }
                }
            });
        }
    } else {
        let one = |(i, c): (usize, &mut [MaybeUninit<T>])| {
            let (ab, bb) = (&a[i * s.a_batch_stride..], &b[i * s.b_batch_stride..]);
            // SAFETY: as above; `c` is this batch's m×n block.
            unsafe {
                gemm_into(
                    m,
                    n,
                    k,
                    c.as_mut_ptr().cast(),
                    n,
                    ab.as_ptr(),
                    a_st,
                    bb.as_ptr(),
                    b_st,
                    false,
                )
            }
        };
        let c = &mut out.spare_capacity_mut()[..batch * m * n];
        if batch > 1 && work * batch >= PAR_GEMM_MIN {
            c.par_chunks_mut(m * n).enumerate().for_each(one);
        } else {
            c.chunks_mut(m * n).enumerate().for_each(one);
        }
    }
    // SAFETY: every batch's m×n block was written by gemm above.
    unsafe { out.set_len(batch * m * n) };
    out
}

/// A linear layer, x (m×k) · wᵀ (w stored n×k) + b: each core's rows of the output start as the
/// bias and gemm accumulates the product onto them, so there is no separate broadcast pass.
///
/// One gemm call per core rather than per small row block: gemm packs w (row-major, not the
/// column panels its kernel reads) once per call, and at GPT's shapes packing it for every
/// 128-row block cost ~8 % of a training step.
pub fn linear(x: &CpuData, w: &CpuData, b: &CpuData, m: usize, k: usize, n: usize) -> CpuData {
    fn go<T: Elem>(x: &[T], w: &[T], b: &[T], m: usize, k: usize, n: usize) -> Vec<T> {
        let mut out: Vec<T> = Vec::with_capacity(m * n);
        if n == 0 {
            return out;
        }
        let block = |(i, c): (usize, &mut [MaybeUninit<T>]), rows_per: usize| {
            for row in c.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, &b)| {
                    o.write(b);
                });
            }
            // SAFETY: every element was written just above.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<T>] as *mut [T]) };
            if k > 0 && !c.is_empty() {
                // SAFETY: rows [i·rows_per, +c.len()/n) of x and all of w are in bounds (the op
                // layer checked x is m×k and w is n×k); c is this block's rows×n output.
                unsafe {
                    gemm_into(
                        c.len() / n,
                        n,
                        k,
                        c.as_mut_ptr(),
                        n,
                        x.as_ptr().add(i * rows_per * k),
                        (k, 1),
                        w.as_ptr(),
                        (1, k),
                        true,
                    )
                }
            }
        };
        let c = &mut out.spare_capacity_mut()[..m * n];
        let threads = rayon::current_num_threads();
        if threads > 1 && m * n * k.max(1) >= PAR_GEMM_MIN {
            let rows = m.div_ceil(threads).next_multiple_of(16);
            c.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|c| block(c, rows));
        } else {
            block((0, c), m);
        }
        // SAFETY: the blocks cover all m×n elements and each was fully written.
        unsafe { out.set_len(m * n) };
        out
    }
    map_same!("linear"; x, w, b => go(x, w, b, m, k, n))
}
