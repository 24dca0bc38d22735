//! Layer norm over rows, plain and affine, forward and backward (`shaders/layernorm.wgsl`).

use super::*;

#[track_caller]
pub fn layer_norm(x: &GpuData, rows: usize, cols: usize, eps: f64) -> (GpuData, GpuData, GpuData) {
    let (y, mean, rstd, _) = layer_norm_launch(x, None, rows, cols, eps);
    (y, mean, rstd)
}

/// Layer norm with its affine weight and bias in one launch: (y, x̂, rstd).
#[track_caller]
pub fn layer_norm_affine(
    x: &GpuData,
    w: &GpuData,
    b: &GpuData,
    rows: usize,
    cols: usize,
    eps: f64,
) -> (GpuData, GpuData, GpuData) {
    let (y, _, rstd, xhat) = layer_norm_launch(x, Some((w, b)), rows, cols, eps);
    (y, xhat.expect("an affine launch keeps x̂"), rstd)
}

/// One layer-norm launch: (y, mean, rstd, and x̂ apart from y when affine).
#[track_caller]
fn layer_norm_launch(
    x: &GpuData,
    affine: Option<(&GpuData, &GpuData)>,
    rows: usize,
    cols: usize,
    eps: f64,
) -> (GpuData, GpuData, GpuData, Option<GpuData>) {
    check_row_len("layer_norm", cols);
    let ctx = x.ctx();
    let (y, mean, rstd) = (
        GpuData::alloc(ctx, x.len()),
        GpuData::alloc(ctx, rows),
        GpuData::alloc(ctx, rows),
    );
    let xhat = affine.map(|_| GpuData::alloc(ctx, x.len()));
    let p = LayerNorm {
        rows: rows as u32,
        cols: cols as u32,
        eps: eps as f32,
    };
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(LAYERNORM, "layer_norm_rowwise"),
        kernel!(LAYERNORM, "layer_norm"),
    );
    // Without affine parameters the extra bindings are stand-ins the kernel never touches.
    let (w, b) = affine.unwrap_or((x, x));
    let buffers = [x, &y, &mean, &rstd, w, b, xhat.as_ref().unwrap_or(&y)];
    let constants = [("AFFINE", affine.is_some() as u32)];
    launch_with(ctx, k, &constants, &p, &buffers, grid);
    (y, mean, rstd, xhat)
}

pub fn layer_norm_backward(
    xhat: &GpuData,
    rstd: &GpuData,
    g: &GpuData,
    rows: usize,
    cols: usize,
) -> GpuData {
    layer_norm_backward_launch(xhat, rstd, None, g, rows, cols).0
}

/// The affine layer norm's gradients (x, weight, bias): the input's and g·x̂ in one launch, then
/// the two sums over rows.
pub fn layer_norm_affine_backward(
    xhat: &GpuData,
    rstd: &GpuData,
    w: &GpuData,
    g: &GpuData,
    rows: usize,
    cols: usize,
) -> (GpuData, GpuData, GpuData) {
    let (dx, gx) = layer_norm_backward_launch(xhat, rstd, Some(w), g, rows, cols);
    let gx = gx.expect("an affine launch writes g·x̂");
    let dw = reduce(Reduce::Sum, &gx, 1, rows, cols);
    let db = reduce(Reduce::Sum, g, 1, rows, cols);
    (dx, dw, db)
}

/// One layer-norm backward launch: dx, and g·x̂ when affine (its gradient passes through `w`).
fn layer_norm_backward_launch(
    xhat: &GpuData,
    rstd: &GpuData,
    w: Option<&GpuData>,
    g: &GpuData,
    rows: usize,
    cols: usize,
) -> (GpuData, Option<GpuData>) {
    let ctx = xhat.ctx();
    let dx = GpuData::alloc(ctx, xhat.len());
    let gx = w.map(|_| GpuData::alloc(ctx, xhat.len()));
    let p = LayerNorm {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
    };
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(LAYERNORM, "layer_norm_backward_rowwise"),
        kernel!(LAYERNORM, "layer_norm_backward"),
    );
    let buffers = [
        xhat,
        rstd,
        g,
        &dx,
        w.unwrap_or(xhat),
        gx.as_ref().unwrap_or(&dx),
    ];
    launch_with(
        ctx,
        k,
        &[("AFFINE", w.is_some() as u32)],
        &p,
        &buffers,
        grid,
    );
    (dx, gx)
}
