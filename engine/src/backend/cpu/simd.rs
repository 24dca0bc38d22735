//! 512-bit versions of the f32 kernels that are pure arithmetic: GELU forward and backward and
//! the shifted exponential of softmax. LLVM's tuning for recent Intel cores keeps
//! auto-vectorised loops at 256 bits, which halves the throughput of math-bound loops there;
//! these compute the same formulas as the scalar code (`erf_fast`, `exp_f32`) sixteen lanes at a
//! time, with masked loads and stores for the tail. Built only when the compile target has
//! AVX-512F (`.cargo/config.toml` builds for the host); elsewhere the scalar loops run.
//!
//! One difference from the scalar code: 1/(1 + p·|x|) in erf is a 14-bit reciprocal estimate
//! refined by one Newton step (relative error ~1e-8) instead of a division, whose 512-bit form
//! is slow enough to bound the whole loop.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

const LANES: usize = 16;

#[inline]
#[target_feature(enable = "avx512f")]
fn splat(v: f32) -> __m512 {
    _mm512_set1_ps(v)
}

/// e^x as `exp_f32`: x = n·ln2 + r, a degree-6 polynomial in r, 2ⁿ from the exponent bits;
/// 0 below -87.3, +inf above 88.7, NaN kept.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    let xc = _mm512_min_ps(_mm512_max_ps(x, splat(-87.3)), splat(88.7));
    let shifted = _mm512_add_ps(
        _mm512_mul_ps(xc, splat(std::f32::consts::LOG2_E)),
        splat(12_582_912.0),
    );
    let n = _mm512_sub_ps(shifted, splat(12_582_912.0));
    let ni = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B40_0000));
    let r = _mm512_sub_ps(
        _mm512_sub_ps(xc, _mm512_mul_ps(n, splat(0.693_145_75))),
        _mm512_mul_ps(n, splat(1.428_606_8e-6)),
    );
    let mut p = splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, splat(c));
    }
    let n1 = _mm512_srai_epi32::<1>(ni);
    let n2 = _mm512_sub_epi32(ni, n1);
    let pow2 = |k: __m512i| {
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            k,
            _mm512_set1_epi32(127),
        )))
    };
    let y = _mm512_mul_ps(_mm512_mul_ps(p, pow2(n1)), pow2(n2));
    let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, splat(-87.3));
    let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, splat(88.7));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let y = _mm512_mask_blend_ps(under, y, _mm512_setzero_ps());
    let y = _mm512_mask_blend_ps(over, y, splat(f32::INFINITY));
    _mm512_mask_blend_ps(nan, y, x)
}

/// (erf(z), e^(−z²)) as `erf_fast` (Abramowitz & Stegun 7.1.26).
#[inline]
#[target_feature(enable = "avx512f")]
fn erf_and_gauss(z: __m512) -> (__m512, __m512) {
    let a = _mm512_abs_ps(z);
    // Capped so that |z| = ∞ gives a finite d (the Newton step would turn 1/∞ into 0·∞); past
    // |z| ≈ 9.3 the e^(−z²) factor is 0 and erf is ±1 either way.
    let d = _mm512_fmadd_ps(_mm512_min_ps(a, splat(1e4)), splat(0.327_591_1), splat(1.0));
    let t0 = _mm512_rcp14_ps(d);
    // One Newton step: t = t0·(2 − d·t0).
    let t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(d, t0, splat(2.0)));
    let mut poly = splat(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        poly = _mm512_fmadd_ps(poly, t, splat(c));
    }
    poly = _mm512_mul_ps(poly, t);
    let gauss = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
    let y = _mm512_fnmadd_ps(poly, gauss, splat(1.0));
    let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
    let erf = _mm512_mask_sub_ps(y, negative, _mm512_setzero_ps(), y);
    (erf, gauss)
}

/// Runs `f` over 16-lane blocks of `n` elements: full blocks unmasked, the tail masked.
#[inline(always)]
fn blocks(n: usize, mut f: impl FnMut(usize, __mmask16)) {
    let full = n / LANES * LANES;
    for i in (0..full).step_by(LANES) {
        f(i, 0xFFFF);
    }
    if full < n {
        f(full, (1u16 << (n - full)) - 1);
    }
}

/// out ← x·Φ(x) = ½x(1 + erf(x/√2)).
#[target_feature(enable = "avx512f")]
pub fn gelu(x: &[f32], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), out.len(), "internal: GELU lengths differ");
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f32>());
    blocks(x.len(), |i, m| {
        // SAFETY: the mask keeps every lane of block i inside both slices.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, xp.add(i));
            let (erf, _) = erf_and_gauss(_mm512_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2)));
            let y = _mm512_mul_ps(_mm512_mul_ps(splat(0.5), v), _mm512_add_ps(splat(1.0), erf));
            _mm512_mask_storeu_ps(op.add(i), m, y);
        }
    });
}

/// out ← g·GELU′(x) = g·(½(1 + erf(x/√2)) + x·φ(x)).
#[target_feature(enable = "avx512f")]
pub fn gelu_backward(x: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) {
    assert!(
        x.len() == out.len() && g.len() == out.len(),
        "internal: GELU backward lengths differ"
    );
    let (xp, gp, op) = (x.as_ptr(), g.as_ptr(), out.as_mut_ptr().cast::<f32>());
    blocks(x.len(), |i, m| {
        // SAFETY: as in `gelu`.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, xp.add(i));
            let d = _mm512_maskz_loadu_ps(m, gp.add(i));
            let (erf, gauss) =
                erf_and_gauss(_mm512_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2)));
            let cdf = _mm512_mul_ps(splat(0.5), _mm512_add_ps(splat(1.0), erf));
            let pdf = _mm512_mul_ps(_mm512_mul_ps(v, gauss), splat(0.398_942_3));
            _mm512_mask_storeu_ps(op.add(i), m, _mm512_mul_ps(d, _mm512_add_ps(cdf, pdf)));
        }
    });
}

/// row ← e^(row − m).
#[target_feature(enable = "avx512f")]
pub fn exp_shifted(row: &mut [f32], m: f32) {
    let p = row.as_mut_ptr();
    blocks(row.len(), |i, mask| {
        // SAFETY: the mask keeps every lane of block i inside the row.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, p.add(i));
            _mm512_mask_storeu_ps(p.add(i), mask, exp(_mm512_sub_ps(v, splat(m))));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::{apply_unary, unary_derivative};
    use super::super::{exp_f32, map_in_place};
    use crate::backend::Unary;
    use std::mem::MaybeUninit;

    /// Values across GELU's and exp's ranges, special values, and a length that leaves a tail.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        v.extend([
            0.0, -0.0, 1e-30, -1e-30, 9.5, -9.5, 50.0, -50.0, 100.0, -100.0,
        ]);
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        v
    }

    fn written(out: Vec<MaybeUninit<f32>>) -> Vec<f32> {
        // SAFETY: every caller's kernel wrote every element.
        out.into_iter()
            .map(|v| unsafe { v.assume_init() })
            .collect()
    }

    fn assert_close(what: &str, x: &[f32], got: &[f32], want: &[f32], tol: f32) {
        for ((&x, &g), &w) in x.iter().zip(got).zip(want) {
            let ok =
                (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * w.abs().max(1.0);
            assert!(ok, "{what}({x}): 512-bit {g}, scalar {w}");
        }
    }

    #[test]
    fn gelu_and_its_backward_match_the_scalar_kernels() {
        let x = inputs();
        let g: Vec<f32> = (0..x.len()).map(|i| 1.0 - 0.003 * i as f32).collect();
        let mut out = vec![MaybeUninit::uninit(); x.len()];
        // SAFETY: the tests run on the machine the crate was built for (AVX-512F).
        unsafe { super::gelu(&x, &mut out) };
        let want: Vec<f32> = x.iter().map(|&v| apply_unary(Unary::GeluErf, v)).collect();
        assert_close("gelu", &x, &written(out), &want, 2e-6);
        let mut out = vec![MaybeUninit::uninit(); x.len()];
        unsafe { super::gelu_backward(&x, &g, &mut out) };
        let want: Vec<f32> = x
            .iter()
            .zip(&g)
            .map(|(&v, &d)| d * unary_derivative(Unary::GeluErf, v))
            .collect();
        assert_close("gelu'", &x, &written(out), &want, 2e-6);
    }

    #[test]
    fn shifted_exp_matches_the_scalar_kernel() {
        let x = inputs();
        for m in [0.0, 3.5, -20.0] {
            let mut got = x.clone();
            unsafe { super::exp_shifted(&mut got, m) };
            let mut want = x.clone();
            map_in_place(&mut want, |v| exp_f32(v - m));
            assert_close("exp", &x, &got, &want, 1e-6);
        }
    }
}
