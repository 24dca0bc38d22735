//! Reductions (`shaders/reduce.wgsl`): along one axis in bounded blocks, and the sums of squares
//! of a gradient norm.

use super::*;

pub fn reduce(op: Reduce, x: &GpuData, outer: usize, n: usize, inner: usize) -> GpuData {
    let ctx = x.ctx();
    // One invocation per block of at most LOOP_BUDGET entries (no barriers, which CPU drivers
    // run slowly), reduced again until one block is left; extrema carry their indices between
    // passes.
    // Stand-ins for the index buffers a sum does not use (one read, one written: a buffer may
    // not be bound both ways in one launch).
    let (dummy, dummy_out) = (GpuData::alloc(ctx, 1), GpuData::alloc(ctx, 1));
    // Sums carry no indices.
    let sum = matches!(op, Reduce::Sum);
    let (mut values, mut indices): (Option<GpuData>, Option<GpuData>) = (None, None);
    let mut n = n;
    loop {
        // Blocks short enough that the launch has enough invocations to fill the device: ~64k
        // on a GPU (a bias gradient's 25,600 rows become ~340 blocks per column), a few
        // thousand on a CPU driver's threads, and as long as the loop budget allows on one
        // thread (a single pass up to 16,384 rows).
        let (busy, shortest) = match ctx.profile() {
            KernelProfile::Software if ctx.runs_serially() => (1, 256),
            KernelProfile::Software => (2_048, 256),
            KernelProfile::Hardware => (65_536, 64),
        };
        let chunk = (outer * n * inner / busy).clamp(shortest, LOOP_BUDGET);
        let blocks = n.div_ceil(chunk).max(1);
        let last = blocks == 1;
        let len = outer * blocks * inner;
        let y = GpuData::alloc(ctx, len);
        let iy = if sum {
            None
        } else {
            Some(GpuData::alloc(ctx, len))
        };
        let p = Chunks {
            outer: outer as u32,
            n: n as u32,
            inner: inner as u32,
            chunk: chunk as u32,
            blocks: blocks as u32,
        };
        let src = values.as_ref().unwrap_or(x);
        launch_with(
            ctx,
            kernel!(REDUCE, "reduce_chunks"),
            &[
                ("OP", op.code()),
                ("HAS_IDX", indices.is_some() as u32),
                ("FINAL", last as u32),
            ],
            &p,
            &[
                src,
                indices.as_ref().unwrap_or(&dummy),
                &y,
                iy.as_ref().unwrap_or(&dummy_out),
            ],
            grid(len, 256),
        );
        if last {
            return y;
        }
        (values, indices, n) = (Some(y), iy, blocks);
    }
}

/// Largest tensor [`sum_squares`] takes: each of its 256 invocations loops at most
/// [`LOOP_BUDGET`] times.
pub const SUM_SQUARES_MAX: usize = 256 * LOOP_BUDGET;

/// Σx² of each tensor, as one vector: eight tensors per launch (the parts of a global gradient
/// norm, ~2 launches per parameter when composed). Each holds at most [`SUM_SQUARES_MAX`] values.
pub fn sum_squares(xs: &[&GpuData]) -> GpuData {
    let ctx = xs[0].ctx();
    let out = GpuData::alloc(ctx, xs.len());
    for (c, chunk) in xs.chunks(8).enumerate() {
        let p = SumSquares {
            count: chunk.len() as u32,
            first: 8 * c as u32,
            len: words8(chunk.iter().map(|x| x.len())),
            ..Default::default()
        };
        let mut bufs = vec![&out];
        bufs.extend((0..8).map(|k| *chunk.get(k).unwrap_or(&chunk[0])));
        let groups = chunk.len() as u32;
        launch(
            ctx,
            kernel!(REDUCE, "sum_squares"),
            &p,
            &bufs,
            [groups, 1, 1],
        );
    }
    out
}
