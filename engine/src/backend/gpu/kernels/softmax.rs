//! Softmax and log-softmax over rows, forward and backward (`shaders/softmax.wgsl`).

use super::*;

#[track_caller]
pub fn softmax(x: &GpuData, rows: usize, cols: usize, log: bool) -> GpuData {
    check_row_len("softmax", cols);
    let ctx = x.ctx();
    let y = GpuData::alloc(ctx, x.len());
    let p = Softmax {
        rows: rows as u32,
        cols: cols as u32,
        log: log as u32,
    };
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(SOFTMAX, "softmax_rowwise"),
        kernel!(SOFTMAX, "softmax"),
    );
    launch(ctx, k, &p, &[x, &y], grid);
    y
}

pub fn softmax_backward(y: &GpuData, g: &GpuData, rows: usize, cols: usize, log: bool) -> GpuData {
    let ctx = y.ctx();
    let dx = GpuData::alloc(ctx, y.len());
    let p = Softmax {
        rows: rows as u32,
        cols: cols as u32,
        log: log as u32,
    };
    let (k, grid) = row_kernel(
        ctx,
        rows,
        cols,
        kernel!(SOFTMAX, "softmax_backward_rowwise"),
        kernel!(SOFTMAX, "softmax_backward"),
    );
    launch(ctx, k, &p, &[y, g, &dx], grid);
    dx
}
