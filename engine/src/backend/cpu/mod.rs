//! The CPU backend: the reference every other backend is tested against, and a real backend for
//! machines without a GPU. Kernels are generic over f32 and f64 (f64 is for gradient checks);
//! large loops are split across cores with rayon, matrix products go to the `gemm` crate.

mod attention;
mod elementwise;
mod matmul;
mod nn;
mod optim;
mod reduce;
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod simd;

pub use attention::{attention, attention_backward};
pub use elementwise::{binary, concat, gather_strided, select, unary, unary_backward};
pub use matmul::{linear, matmul};
pub use nn::{
    index_add, index_select, layer_norm, layer_norm_affine, layer_norm_affine_backward,
    layer_norm_backward, softmax, softmax_backward,
};
pub use optim::adamw;
pub use reduce::reduce;

use crate::backend::Unary;
use crate::DType;
use num_traits::Float;
use std::mem::MaybeUninit;

/// Work below this many elements runs on the calling thread: splitting costs more than it saves.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Element types the CPU kernels are written for.
pub trait Elem: Float + Default + Send + Sync + std::fmt::Debug + 'static {
    fn from_f64(v: f64) -> Self;
    fn erf(self) -> Self;
    /// (erf(x), e^(−x²)) together: GELU's derivative needs both, and erf's approximation
    /// already computes the second.
    fn erf_and_gauss(self) -> (Self, Self);
    /// eˣ; for f32 a branch-free polynomial that the compiler vectorises (libm's expf is a call
    /// per element), for f64 the exact function gradient checks rely on.
    fn exp_fast(self) -> Self;

    /// out ← GELU(x) (the erf form) over a slice: the hot loops get a slice-level entry so that
    /// f32 can use explicit 512-bit code where it is built (module `simd`).
    fn gelu(x: &[Self], out: &mut [MaybeUninit<Self>]) {
        out.iter_mut().zip(x).for_each(|(o, &v)| {
            o.write(elementwise::apply_unary(Unary::GeluErf, v));
        });
    }

    /// out ← g·GELU′(x).
    fn gelu_backward(x: &[Self], g: &[Self], out: &mut [MaybeUninit<Self>]) {
        out.iter_mut().zip(x).zip(g).for_each(|((o, &v), &d)| {
            o.write(d * elementwise::unary_derivative(Unary::GeluErf, v));
        });
    }

    /// row ← e^(row − m): softmax's exponentials.
    fn exp_shifted(row: &mut [Self], m: Self) {
        map_in_place(row, |v| (v - m).exp_fast());
    }
}

impl Elem for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn erf(self) -> Self {
        erf_fast(self).0
    }
    #[inline(always)]
    fn erf_and_gauss(self) -> (Self, Self) {
        erf_fast(self)
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    fn gelu(x: &[f32], out: &mut [MaybeUninit<f32>]) {
        // SAFETY (the three calls): this code is built only for targets with AVX-512F.
        unsafe { simd::gelu(x, out) }
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    fn gelu_backward(x: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) {
        unsafe { simd::gelu_backward(x, g, out) }
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    fn exp_shifted(row: &mut [f32], m: f32) {
        unsafe { simd::exp_shifted(row, m) }
    }
}

impl Elem for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn erf_and_gauss(self) -> (Self, Self) {
        (libm::erf(self), (-self * self).exp())
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

/// A host buffer of one dtype.
#[derive(Clone, Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl CpuData {
    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F64(_) => DType::F64,
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            CpuData::F32(v) => v.clone(),
            CpuData::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            CpuData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuData::F64(v) => v.clone(),
        }
    }

    /// Same values in another dtype.
    pub fn cast(&self, dtype: DType) -> CpuData {
        match dtype {
            DType::F32 => CpuData::F32(self.to_f32()),
            DType::F64 => CpuData::F64(self.to_f64()),
            DType::F16 => panic!("to_dtype: f16 storage exists on the GPU only"),
        }
    }
}

/// Runs a generic kernel on one buffer, keeping its dtype.
macro_rules! map1 {
    ($x:expr, $v:ident => $e:expr) => {
        match $x {
            CpuData::F32($v) => CpuData::F32($e),
            CpuData::F64($v) => CpuData::F64($e),
        }
    };
}

/// Runs a generic kernel on buffers that must share a dtype.
macro_rules! map_same {
    ($op:expr; $($x:ident),+ => $e:expr) => {
        match ($($x,)+) {
            ($(CpuData::F32($x),)+) => CpuData::F32($e),
            ($(CpuData::F64($x),)+) => CpuData::F64($e),
            #[allow(unreachable_patterns)]
            _ => panic!("{}: operands have different dtypes", $op),
        }
    };
}

pub(crate) use {map1, map_same};

/// (erf(x), e^(−x²)), erf by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, about 5e-7 after f32 rounding of the
/// result's scale): the formula the WGSL kernels use, and several times faster than libm's.
#[inline(always)]
fn erf_fast(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let gauss = exp_f32(-a * a);
    let y = 1.0 - poly * gauss;
    (if x < 0.0 { -y } else { y }, gauss)
}

/// eˣ in f32 by range reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for eʳ and
/// 2ⁿ from the exponent bits: within 2 ulp of libm, exact 0 below -87.3 (so -inf gives 0) and
/// +inf above 88.7, NaN preserved.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5·2²³ trick: plain adds, so it vectorises without SSE4.1. The
    // integer n is then read from the low mantissa bits, as a float-to-int cast does not vectorise.
    let shifted = xc * LOG2E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let ni = shifted.to_bits() as i32 - 0x4B40_0000;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ as two factors, so that n = 128 and n = -126 stay in the normal range.
    let (n1, n2) = (ni >> 1, ni - (ni >> 1));
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(n1) * pow2(n2);
    if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `n` copies of `value`, written in parallel when large: a `vec![v; n]` of megabytes is a serial
/// memset on the calling thread while the workers wait.
pub(crate) fn full<T: Copy + Send + Sync>(n: usize, value: T) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_MIN {
        spare
            .par_chunks_mut(PAR_MIN)
            .for_each(|c| c.fill(MaybeUninit::new(value)));
    } else {
        spare.fill(MaybeUninit::new(value));
    }
    // SAFETY: every one of the n elements was just written.
    unsafe { out.set_len(n) };
    out
}

/// Independent partial sums per reduction: one running total is a serial chain the compiler may
/// not reorder for floats, eight of them vectorise.
const LANES: usize = 8;

/// Σ f(xᵢ), vectorisable.
#[inline(always)]
pub(crate) fn sum_by<T: Elem>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |a, &v| a + f(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = *a + f(v);
        }
    }
    acc.iter().fold(tail, |a, &b| a + b)
}

/// xᵢ ← f(xᵢ) in fixed-width chunks: a plain loop over a short row (tens of elements) leaves
/// most of it to the scalar remainder of a loop vectorised several registers wide, while a
/// chunk of known width becomes one vector operation.
#[inline(always)]
pub(crate) fn map_in_place<T: Elem>(x: &mut [T], f: impl Fn(T) -> T) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let c: &mut [T; LANES] = c.try_into().expect("chunks are LANES wide");
        // Loaded whole and stored whole, so no aliasing question keeps the chunk scalar.
        let mut v = *c;
        v.iter_mut().for_each(|v| *v = f(*v));
        *c = v;
    }
    chunks.into_remainder().iter_mut().for_each(|v| *v = f(*v));
}

/// Σ xᵢ·yᵢ, vectorisable.
#[inline(always)]
pub(crate) fn dot<T: Elem>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (cx, cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .fold(T::zero(), |a, (&u, &v)| a + u * v);
    for (a, b) in cx.zip(cy) {
        for ((s, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *s = *s + u * v;
        }
    }
    acc.iter().fold(tail, |a, &b| a + b)
}

/// max xᵢ (−∞ for an empty slice), vectorisable.
#[inline(always)]
pub(crate) fn max_of<T: Elem>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::neg_infinity(), |a, &v| a.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(tail, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_erf_match_libm() {
        let mut x = -90.0f32;
        while x < 90.0 {
            let (fast, exact) = (exp_f32(x), (x as f64).exp());
            if (-87.3..=88.7).contains(&x) {
                assert!(
                    ((fast as f64 - exact) / exact).abs() < 3e-7,
                    "exp({x}) = {fast}, want {exact}"
                );
            }
            let (fast, exact) = (erf_fast(x / 10.0).0, libm::erf(x as f64 / 10.0));
            assert!(
                (fast as f64 - exact).abs() < 5e-7,
                "erf({}) = {fast}, want {exact}",
                x / 10.0
            );
            x += 0.0173;
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
