//! Element-wise kernels (`shaders/elementwise.wgsl`): unary ops and their derivatives, broadcasting
//! binary ops and `where`.

use super::*;

pub fn unary(op: Unary, x: &GpuData) -> GpuData {
    launch_contiguous(kernel!(ELEMENTWISE, "unary"), op, &[x])
}

pub fn unary_backward(op: Unary, x: &GpuData, g: &GpuData) -> GpuData {
    launch_contiguous(kernel!(ELEMENTWISE, "unary_backward"), op, &[x, g])
}

pub fn binary(
    op: Binary,
    a: &GpuData,
    sa: &[usize],
    b: &GpuData,
    sb: &[usize],
    shape: &[usize],
) -> GpuData {
    let k = kernel!(ELEMENTWISE, "binary");
    launch_strided(k, Some(op.code()), 0, shape, &[sa, sb], &[a, b])
}

pub fn select(
    c: &GpuData,
    sc: &[usize],
    a: &GpuData,
    sa: &[usize],
    b: &GpuData,
    sb: &[usize],
    shape: &[usize],
) -> GpuData {
    let k = kernel!(ELEMENTWISE, "select");
    launch_strided(k, None, 0, shape, &[sc, sa, sb], &[c, a, b])
}
