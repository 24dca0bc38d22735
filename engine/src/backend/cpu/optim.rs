//! Fused optimizer updates: one pass over a parameter instead of a dozen tensor ops, each of
//! which would read and write the whole parameter and allocate its result.

use super::{CpuData, Elem, PAR_MIN};
use crate::backend::AdamWStep;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// New (parameter, first moment, second moment) after one AdamW step, in the order of
/// operations (and rounding) of the composed path in `optim::adamw`, so the two agree bitwise.
pub fn adamw(p: &CpuData, g: &CpuData, m: &CpuData, v: &CpuData, s: AdamWStep) -> [CpuData; 3] {
    fn go<T: Elem>(p: &[T], g: &[T], m: &[T], v: &[T], s: AdamWStep) -> [Vec<T>; 3] {
        let c = T::from_f64;
        let (decay, b1, b2) = (c(s.decay), c(s.beta1), c(s.beta2));
        let (one_b1, one_b2) = (c(1.0 - s.beta1), c(1.0 - s.beta2));
        let (inv_bias2, eps, step) = (c(1.0 / s.bias2_sqrt), c(s.eps), c(s.step_size));
        let n = p.len();
        // Every element of the three outputs is written below: no zeroing pass.
        let mut out = [
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        ];
        let [np, nm, nv] = out.each_mut().map(|o| &mut o.spare_capacity_mut()[..n]);
        // The elements from offset `o` on, into the three outputs' slices.
        let chunk = |o: usize,
                     np: &mut [MaybeUninit<T>],
                     nm: &mut [MaybeUninit<T>],
                     nv: &mut [MaybeUninit<T>]| {
            for i in 0..np.len() {
                let gi = g[o + i];
                let mi = m[o + i] * b1 + gi * one_b1;
                let vi = v[o + i] * b2 + gi * gi * one_b2;
                np[i].write(p[o + i] * decay - mi / (vi.sqrt() * inv_bias2 + eps) * step);
                nm[i].write(mi);
                nv[i].write(vi);
            }
        };
        if n > PAR_MIN {
            np.par_chunks_mut(PAR_MIN)
                .zip(nm.par_chunks_mut(PAR_MIN))
                .zip(nv.par_chunks_mut(PAR_MIN))
                .enumerate()
                .for_each(|(c, ((np, nm), nv))| chunk(c * PAR_MIN, np, nm, nv));
        } else {
            chunk(0, np, nm, nv);
        }
        for o in &mut out {
            // SAFETY: the chunks cover all n elements and `chunk` writes each of them.
            unsafe { o.set_len(n) };
        }
        out
    }
    match (p, g, m, v) {
        (CpuData::F32(p), CpuData::F32(g), CpuData::F32(m), CpuData::F32(v)) => {
            go(p, g, m, v, s).map(CpuData::F32)
        }
        (CpuData::F64(p), CpuData::F64(g), CpuData::F64(m), CpuData::F64(v)) => {
            go(p, g, m, v, s).map(CpuData::F64)
        }
        _ => panic!("adamw: operands have different dtypes"),
    }
}
