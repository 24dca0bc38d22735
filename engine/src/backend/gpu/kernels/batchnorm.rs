//! Training batch norm, one invocation per channel, forward and backward (`shaders/batchnorm.wgsl`).

use super::*;

/// Most values per channel the batch-norm kernels take: three passes over them stay within
/// llvmpipe's loop limit.
pub const BATCH_NORM_MAX_COUNT: usize = LOOP_BUDGET;

/// Training batch norm of an (outer, c, inner) tensor with weight, bias and running statistics,
/// one invocation per channel: (y, x̂, rstd per channel, new running mean, new running var).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &GpuData,
    [w, b, rm, rv]: [&GpuData; 4],
    outer: usize,
    c: usize,
    inner: usize,
    eps: f64,
    momentum: f64,
) -> [GpuData; 5] {
    let ctx = x.ctx();
    let [y, xhat] = [(); 2].map(|_| GpuData::alloc(ctx, x.len()));
    let [rstd, mean, var] = [(); 3].map(|_| GpuData::alloc(ctx, c));
    let p = BatchNorm {
        count: (outer * inner) as u32,
        channels: c as u32,
        inner: inner as u32,
        eps: eps as f32,
        momentum: momentum as f32,
    };
    let buffers = [x, w, b, rm, rv, &y, &xhat, &rstd, &mean, &var];
    let groups = c.div_ceil(64) as u32;
    launch(
        ctx,
        kernel!(BATCHNORM, "batch_norm"),
        &p,
        &buffers,
        [groups, 1, 1],
    );
    [y, xhat, rstd, mean, var]
}

/// The gradients (x, weight, bias) of [`batch_norm`] from x̂, rstd, the weight and the output
/// gradient, one invocation per channel.
pub fn batch_norm_backward(
    [xhat, rstd, w, g]: [&GpuData; 4],
    outer: usize,
    c: usize,
    inner: usize,
) -> [GpuData; 3] {
    let ctx = xhat.ctx();
    let dx = GpuData::alloc(ctx, xhat.len());
    let [dw, db] = [(); 2].map(|_| GpuData::alloc(ctx, c));
    let p = BatchNorm {
        count: (outer * inner) as u32,
        channels: c as u32,
        inner: inner as u32,
        ..Default::default()
    };
    let groups = c.div_ceil(64) as u32;
    launch(
        ctx,
        kernel!(BATCHNORM, "batch_norm_backward"),
        &p,
        &[xhat, rstd, w, g, &dx, &dw, &db],
        [groups, 1, 1],
    );
    [dx, dw, db]
}
