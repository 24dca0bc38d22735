//! Element-wise kernels, broadcasting, strided copies and concatenation.

use super::{map1, map_same, CpuData, Elem, PAR_MIN};
use crate::backend::{Binary, Unary};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task: big enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

/// Maps `f` over `x`; each task runs a plain slice loop, which the compiler vectorises. The
/// output is written once, without a zero-filling pass first.
fn map<T: Elem>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    map_slices(x, |x, o| {
        o.iter_mut().zip(x).for_each(|(o, &v)| {
            o.write(f(v));
        })
    })
}

/// Runs `kernel(x_chunk, out_chunk)` over matching chunks of `x` and a new output, in parallel
/// when large; the kernel must write every element of its output chunk.
fn map_slices<T: Elem>(x: &[T], kernel: impl Fn(&[T], &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    let spare = &mut out.spare_capacity_mut()[..x.len()];
    if x.len() >= PAR_MIN {
        spare
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| kernel(x, o));
    } else {
        kernel(x, spare);
    }
    // SAFETY: the kernel wrote every one of the first x.len() elements.
    unsafe { out.set_len(x.len()) };
    out
}

fn zip<T: Elem>(x: &[T], y: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    zip_slices(x, y, |x, y, o| {
        o.iter_mut().zip(x).zip(y).for_each(|((o, &a), &b)| {
            o.write(f(a, b));
        })
    })
}

/// As [`map_slices`] over two operands of the same length.
fn zip_slices<T: Elem>(
    x: &[T],
    y: &[T],
    kernel: impl Fn(&[T], &[T], &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    assert_eq!(
        x.len(),
        y.len(),
        "internal: element-wise operands of different lengths"
    );
    let mut out = Vec::with_capacity(x.len());
    let spare = &mut out.spare_capacity_mut()[..x.len()];
    if x.len() >= PAR_MIN {
        spare
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(y.par_chunks(CHUNK))
            .for_each(|((o, x), y)| kernel(x, y, o));
    } else {
        kernel(x, y, spare);
    }
    // SAFETY: x and y have equal lengths (asserted above) and the kernel wrote every element.
    unsafe { out.set_len(x.len()) };
    out
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// f(x) for a unary op: the single definition the WGSL kernels mirror.
#[inline(always)]
pub fn apply_unary<T: Elem>(op: Unary, x: T) -> T {
    let c = T::from_f64;
    let half = c(0.5);
    let one = T::one();
    match op {
        Unary::Neg => -x,
        Unary::Exp => x.exp_fast(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => one / x.sqrt(),
        Unary::Abs => x.abs(),
        // NaN in, NaN out (as PyTorch): `max` would turn a diverged activation into 0.
        Unary::Relu => {
            if x < T::zero() {
                T::zero()
            } else {
                x
            }
        }
        Unary::GeluTanh => {
            half * x * (one + (c(SQRT_2_OVER_PI) * (x + c(GELU_C) * x * x * x)).tanh())
        }
        Unary::GeluErf => half * x * (one + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        Unary::Sigmoid => one / (one + (-x).exp_fast()),
        Unary::Tanh => x.tanh(),
        Unary::Silu => x / (one + (-x).exp_fast()),
        Unary::Sign => {
            if x > T::zero() {
                one
            } else if x < T::zero() {
                -one
            } else {
                T::zero()
            }
        }
        Unary::Recip => one / x,
        Unary::Square => x * x,
        Unary::AddScalar(a) => x + c(a),
        Unary::MulScalar(a) => x * c(a),
        Unary::PowScalar(p) => x.powf(c(p)),
        Unary::Clamp(lo, hi) => x.max(c(lo)).min(c(hi)),
    }
}

/// f'(x): the derivative of [`apply_unary`].
#[inline(always)]
pub fn unary_derivative<T: Elem>(op: Unary, x: T) -> T {
    let c = T::from_f64;
    let half = c(0.5);
    let one = T::one();
    let zero = T::zero();
    let sigmoid = |x: T| one / (one + (-x).exp_fast());
    match op {
        Unary::Neg => -one,
        Unary::Exp => x.exp_fast(),
        Unary::Log => one / x,
        Unary::Sqrt => half / x.sqrt(),
        Unary::Rsqrt => c(-0.5) / (x * x.sqrt()),
        Unary::Abs | Unary::Sign => {
            if op == Unary::Sign || x == zero {
                zero
            } else {
                x.signum()
            }
        }
        Unary::Relu => {
            if x > zero {
                one
            } else {
                zero
            }
        }
        Unary::GeluTanh => {
            let t = (c(SQRT_2_OVER_PI) * (x + c(GELU_C) * x * x * x)).tanh();
            half * (one + t)
                + half * x * (one - t * t) * c(SQRT_2_OVER_PI) * (one + c(3.0 * GELU_C) * x * x)
        }
        Unary::GeluErf => {
            // e^(−(x/√2)²) = e^(−x²/2): the Gaussian density's exponent, shared with erf.
            let (erf, gauss) = (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf_and_gauss();
            half * (one + erf) + x * gauss * c(0.398_942_280_401_432_7)
        }
        Unary::Sigmoid => {
            let s = sigmoid(x);
            s * (one - s)
        }
        Unary::Tanh => {
            let t = x.tanh();
            one - t * t
        }
        Unary::Silu => {
            let s = sigmoid(x);
            s * (one + x * (one - s))
        }
        Unary::Recip => -one / (x * x),
        Unary::Square => c(2.0) * x,
        Unary::AddScalar(_) => one,
        Unary::MulScalar(a) => c(a),
        Unary::PowScalar(p) => {
            if p == 0.0 {
                zero
            } else {
                c(p) * x.powf(c(p - 1.0))
            }
        }
        Unary::Clamp(lo, hi) => {
            if x >= c(lo) && x <= c(hi) {
                one
            } else {
                zero
            }
        }
    }
}

/// Evaluates `$body` with `$f` bound to `$func` specialised to the constant op, so that the op's
/// `match` is resolved at compile time and the element loop vectorises (a run-time `match` per
/// element is a jump per element). Parametric ops keep only their constants at run time.
macro_rules! specialise_unary {
    ($op:expr, $func:ident, |$f:ident| $body:expr) => {{
        match $op {
            Unary::Neg => {
                let $f = |x| $func(Unary::Neg, x);
                $body
            }
            Unary::Exp => {
                let $f = |x| $func(Unary::Exp, x);
                $body
            }
            Unary::Log => {
                let $f = |x| $func(Unary::Log, x);
                $body
            }
            Unary::Sqrt => {
                let $f = |x| $func(Unary::Sqrt, x);
                $body
            }
            Unary::Rsqrt => {
                let $f = |x| $func(Unary::Rsqrt, x);
                $body
            }
            Unary::Abs => {
                let $f = |x| $func(Unary::Abs, x);
                $body
            }
            Unary::Relu => {
                let $f = |x| $func(Unary::Relu, x);
                $body
            }
            Unary::GeluTanh => {
                let $f = |x| $func(Unary::GeluTanh, x);
                $body
            }
            Unary::GeluErf => {
                let $f = |x| $func(Unary::GeluErf, x);
                $body
            }
            Unary::Sigmoid => {
                let $f = |x| $func(Unary::Sigmoid, x);
                $body
            }
            Unary::Tanh => {
                let $f = |x| $func(Unary::Tanh, x);
                $body
            }
            Unary::Silu => {
                let $f = |x| $func(Unary::Silu, x);
                $body
            }
            Unary::Sign => {
                let $f = |x| $func(Unary::Sign, x);
                $body
            }
            Unary::Recip => {
                let $f = |x| $func(Unary::Recip, x);
                $body
            }
            Unary::Square => {
                let $f = |x| $func(Unary::Square, x);
                $body
            }
            // Parametric ops: the variant is fixed here and only its constants are captured.
            Unary::AddScalar(a) => {
                let $f = move |x| $func(Unary::AddScalar(a), x);
                $body
            }
            Unary::MulScalar(a) => {
                let $f = move |x| $func(Unary::MulScalar(a), x);
                $body
            }
            Unary::PowScalar(a) => {
                let $f = move |x| $func(Unary::PowScalar(a), x);
                $body
            }
            Unary::Clamp(lo, hi) => {
                let $f = move |x| $func(Unary::Clamp(lo, hi), x);
                $body
            }
        }
    }};
}

pub fn unary(op: Unary, x: &CpuData) -> CpuData {
    fn go<T: Elem>(op: Unary, x: &[T]) -> Vec<T> {
        if op == Unary::GeluErf {
            return map_slices(x, T::gelu);
        }
        specialise_unary!(op, apply_unary, |f| map(x, f))
    }
    map1!(x, v => go(op, v))
}

pub fn unary_backward(op: Unary, x: &CpuData, g: &CpuData) -> CpuData {
    fn go<T: Elem>(op: Unary, x: &[T], g: &[T]) -> Vec<T> {
        if op == Unary::GeluErf {
            return zip_slices(x, g, T::gelu_backward);
        }
        specialise_unary!(op, unary_derivative, |f| zip(x, g, |a, d| d * f(a)))
    }
    map_same!("unary backward"; x, g => go(op, x, g))
}

/// f(a, b) for a binary op: the single definition the WGSL kernels mirror.
#[inline(always)]
pub fn apply_binary<T: Elem>(op: Binary, a: T, b: T) -> T {
    let flag = |c: bool| if c { T::one() } else { T::zero() };
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Pow => a.powf(b),
        Binary::Max => a.max(b),
        Binary::Min => a.min(b),
        Binary::Eq => flag(a == b),
        Binary::Ne => flag(a != b),
        Binary::Lt => flag(a < b),
        Binary::Le => flag(a <= b),
        Binary::Gt => flag(a > b),
        Binary::Ge => flag(a >= b),
    }
}

/// Calls `f(out_index, offsets)` for every element of `shape`, where `offsets[i]` is the element's
/// offset in operand i read through `strides[i]`. Rows along the last axis are walked with adds,
/// and rows are split across cores when the tensor is large.
fn for_each_strided<T: Send>(
    out: &mut [T],
    shape: &[usize],
    strides: &[&[usize]],
    f: impl Fn(&mut T, &[usize]) + Sync,
) {
    let rank = shape.len();
    let last = if rank == 0 { 1 } else { shape[rank - 1] };
    if out.is_empty() || last == 0 {
        return;
    }
    let row = |r: usize, chunk: &mut [T]| {
        let mut offs = [0usize; 4];
        let mut offs_vec;
        let offs: &mut [usize] = if strides.len() <= 4 {
            &mut offs[..strides.len()]
        } else {
            offs_vec = vec![0; strides.len()];
            &mut offs_vec
        };
        let mut rem = r;
        for d in (0..rank.saturating_sub(1)).rev() {
            let i = rem % shape[d];
            rem /= shape[d];
            for (o, s) in offs.iter_mut().zip(strides) {
                *o += i * s[d];
            }
        }
        let steps: Vec<usize> = strides
            .iter()
            .map(|s| if rank == 0 { 0 } else { s[rank - 1] })
            .collect();
        for v in chunk.iter_mut() {
            f(v, offs);
            for (o, s) in offs.iter_mut().zip(&steps) {
                *o += s;
            }
        }
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(last)
            .enumerate()
            .for_each(|(r, c)| row(r, c));
    } else {
        out.chunks_mut(last)
            .enumerate()
            .for_each(|(r, c)| row(r, c));
    }
}

/// Element offset of the first element of output row `r` (rows run along the last axis).
fn row_offset(r: usize, shape: &[usize], strides: &[usize]) -> usize {
    let mut rem = r;
    let mut off = 0;
    for d in (0..shape.len().saturating_sub(1)).rev() {
        off += (rem % shape[d]) * strides[d];
        rem /= shape[d];
    }
    off
}

/// Runs `f(row_index, row)` over the rows of `out` along the last axis, in parallel when large.
fn for_rows<T: Send>(out: &mut [T], last: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if last == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(last)
            .enumerate()
            .for_each(|(r, c)| f(r, c));
    } else {
        out.chunks_mut(last).enumerate().for_each(|(r, c)| f(r, c));
    }
}

/// A new `n`-element buffer built row by row by `f`, which must write every slot of its row:
/// no zeroing pass before the real one.
fn build_rows<T: Send>(
    n: usize,
    last: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    for_rows(&mut out.spare_capacity_mut()[..n], last, f);
    // SAFETY: the rows cover all n slots (n is a multiple of `last`, or 0) and `f` writes
    // every slot of its row.
    unsafe { out.set_len(n) };
    out
}

/// A broadcasting binary op row by row: each row reads its operands contiguously (stride 1) or
/// as one repeated value (stride 0), which covers bias adds and row/column scalings with tight,
/// vectorisable loops.
fn binary_with<T: Elem>(
    f: impl Fn(T, T) -> T + Sync,
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    shape: &[usize],
) -> Vec<T> {
    let n: usize = shape.iter().product();
    let contiguous = crate::shape::strides(shape);
    if a.len() == n && b.len() == n && sa == contiguous.as_slice() && sb == contiguous.as_slice() {
        return zip(a, b, f);
    }
    let rank = shape.len();
    let last = if rank == 0 { 1 } else { shape[rank - 1] };
    let (ta, tb) = if rank == 0 {
        (0, 0)
    } else {
        (sa[rank - 1], sb[rank - 1])
    };
    build_rows(n, last, |r, row| {
        let (oa, ob) = (row_offset(r, shape, sa), row_offset(r, shape, sb));
        match (ta, tb) {
            (1, 1) => {
                for ((o, &x), &y) in row.iter_mut().zip(&a[oa..oa + last]).zip(&b[ob..ob + last]) {
                    o.write(f(x, y));
                }
            }
            (1, 0) => {
                let y = b[ob];
                for (o, &x) in row.iter_mut().zip(&a[oa..oa + last]) {
                    o.write(f(x, y));
                }
            }
            (0, 1) => {
                let x = a[oa];
                for (o, &y) in row.iter_mut().zip(&b[ob..ob + last]) {
                    o.write(f(x, y));
                }
            }
            _ => {
                for (j, o) in row.iter_mut().enumerate() {
                    o.write(f(a[oa + j * ta], b[ob + j * tb]));
                }
            }
        }
    })
}

fn binary_t<T: Elem>(
    op: Binary,
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    shape: &[usize],
) -> Vec<T> {
    macro_rules! specialise {
        ($($op:ident),+) => {
            match op {
                $(Binary::$op => binary_with(|x, y| apply_binary(Binary::$op, x, y), a, sa, b, sb, shape),)+
            }
        };
    }
    specialise!(Add, Sub, Mul, Div, Pow, Max, Min, Eq, Ne, Lt, Le, Gt, Ge)
}

pub fn binary(
    op: Binary,
    a: &CpuData,
    sa: &[usize],
    b: &CpuData,
    sb: &[usize],
    shape: &[usize],
) -> CpuData {
    map_same!("binary"; a, b => binary_t(op, a, sa, b, sb, shape))
}

pub fn select(
    c: &CpuData,
    sc: &[usize],
    a: &CpuData,
    sa: &[usize],
    b: &CpuData,
    sb: &[usize],
    shape: &[usize],
) -> CpuData {
    fn go<T: Elem>(
        c: &[T],
        sc: &[usize],
        a: &[T],
        sa: &[usize],
        b: &[T],
        sb: &[usize],
        shape: &[usize],
    ) -> Vec<T> {
        let mut out = vec![T::zero(); shape.iter().product()];
        for_each_strided(&mut out, shape, &[sc, sa, sb], |o, off| {
            *o = if c[off[0]] != T::zero() {
                a[off[1]]
            } else {
                b[off[2]]
            }
        });
        out
    }
    map_same!("where"; c, a, b => go(c, sc, a, sa, b, sb, shape))
}

pub fn gather_strided(src: &CpuData, offset: usize, strides: &[usize], shape: &[usize]) -> CpuData {
    fn go<T: Elem>(s: &[T], strides: &[usize], shape: &[usize]) -> Vec<T> {
        let rank = shape.len();
        let last = if rank == 0 { 1 } else { shape[rank - 1] };
        let step = if rank == 0 { 0 } else { strides[rank - 1] };
        build_rows(shape.iter().product(), last, |r, row| {
            let o = row_offset(r, shape, strides);
            for (j, v) in row.iter_mut().enumerate() {
                v.write(s[o + j * step]);
            }
        })
    }
    map1!(src, s => go(&s[offset..], strides, shape))
}

pub fn concat(parts: &[&CpuData], outer: usize, sizes: &[usize], inner: usize) -> CpuData {
    fn cat_t<T: Elem>(parts: &[&[T]], outer: usize, sizes: &[usize], inner: usize) -> Vec<T> {
        let total: usize = sizes.iter().sum();
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for (p, &s) in parts.iter().zip(sizes) {
                out.extend_from_slice(&p[o * s * inner..(o + 1) * s * inner]);
            }
        }
        out
    }
    match parts[0] {
        CpuData::F32(_) => CpuData::F32(cat_t(
            &parts
                .iter()
                .map(|p| match p {
                    CpuData::F32(v) => v.as_slice(),
                    _ => panic!("cat: operands have different dtypes"),
                })
                .collect::<Vec<_>>(),
            outer,
            sizes,
            inner,
        )),
        CpuData::F64(_) => CpuData::F64(cat_t(
            &parts
                .iter()
                .map(|p| match p {
                    CpuData::F64(v) => v.as_slice(),
                    _ => panic!("cat: operands have different dtypes"),
                })
                .collect::<Vec<_>>(),
            outer,
            sizes,
            inner,
        )),
    }
}
