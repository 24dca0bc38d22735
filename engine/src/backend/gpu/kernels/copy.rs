//! Data movement (`shaders/copy.wgsl`): strided gathers (permute, narrow, expand), concatenation,
//! dtype casts, row gathers and scatter-adds, fills.

use super::*;

pub fn gather_strided(x: &GpuData, offset: usize, strides: &[usize], shape: &[usize]) -> GpuData {
    let k = kernel!(COPY, "gather");
    launch_strided(k, None, offset, shape, &[strides], &[x])
}

pub fn concat(parts: &[&GpuData], outer: usize, sizes: &[usize], inner: usize) -> GpuData {
    let ctx = parts[0].ctx();
    let total: usize = sizes.iter().sum();
    let y = GpuData::alloc(ctx, outer * total * inner);
    let mut start = 0;
    for (part, &s) in parts.iter().zip(sizes) {
        let n = outer * s * inner;
        let p = CopyRows {
            n: n as u32,
            row: (s * inner) as u32,
            dst_row: (total * inner) as u32,
            dst_off: (start * inner) as u32,
        };
        launch(
            ctx,
            kernel!(COPY, "copy_rows"),
            &p,
            &[part, &y],
            grid(n, 256),
        );
        start += s;
    }
    y
}

/// `x`'s values as `dtype` (f32 ↔ f16: rounded to nearest, ±inf beyond f16's range).
pub fn cast(x: &GpuData, dtype: DType) -> GpuData {
    let ctx = x.ctx();
    let y = GpuData::alloc_as(ctx, x.len(), dtype);
    let p = Fill {
        n: x.len() as u32,
        value: 0.0,
    };
    launch(ctx, kernel!(COPY, "cast"), &p, &[x, &y], grid(x.len(), 256));
    y
}

fn upload_u32(ctx: &Arc<GpuContext>, v: &[u32]) -> GpuData {
    GpuData::upload(ctx, bytemuck::cast_slice(v))
}

pub fn index_select(x: &GpuData, outer: usize, n: usize, inner: usize, idx: &[u32]) -> GpuData {
    let ctx = x.ctx();
    let total = outer * idx.len() * inner;
    let y = GpuData::alloc(ctx, total);
    let ids = upload_u32(ctx, idx);
    let p = indexed(total, n, inner, idx.len());
    launch(
        ctx,
        kernel!(COPY, "index_select"),
        &p,
        &[x, &ids, &y],
        grid(total, 256),
    );
    y
}

pub fn index_add(g: &GpuData, outer: usize, n: usize, inner: usize, idx: &[u32]) -> GpuData {
    let ctx = g.ctx();
    let total = outer * n * inner;
    // Distinct indices (a cross-entropy's targets, MAE's kept patches) write each row at most
    // once: zeros made on the device and one scatter, uploading only the indices.
    let mut seen = vec![false; n];
    if idx
        .iter()
        .all(|&i| !std::mem::replace(&mut seen[i as usize], true))
    {
        let y = fill(ctx, total, 0.0);
        let ids = upload_u32(ctx, idx);
        let moved = outer * idx.len() * inner;
        let p = indexed(moved, n, inner, idx.len());
        launch(
            ctx,
            kernel!(COPY, "scatter_rows"),
            &p,
            &[g, &ids, &y],
            grid(moved, 256),
        );
        return y;
    }
    let y = GpuData::alloc(ctx, total);
    // Group the selecting positions by destination row (a counting sort on the host).
    let mut offs = vec![0u32; n + 1];
    for &i in idx {
        offs[i as usize + 1] += 1;
    }
    for r in 0..n {
        offs[r + 1] += offs[r];
    }
    let mut fill = offs.clone();
    let mut list = vec![0u32; idx.len()];
    for (j, &i) in idx.iter().enumerate() {
        list[fill[i as usize] as usize] = j as u32;
        fill[i as usize] += 1;
    }
    let most = offs.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as usize;
    let (offs, list) = (upload_u32(ctx, &offs), upload_u32(ctx, &list));
    // Rows selected more often than the loop budget are summed over several launches.
    for start in (0..most.max(1)).step_by(LOOP_BUDGET) {
        let p = Indexed {
            q_start: start as u32,
            q_len: LOOP_BUDGET as u32,
            accumulate: (start > 0) as u32,
            ..indexed(total, n, inner, idx.len())
        };
        launch(
            ctx,
            kernel!(COPY, "index_add"),
            &p,
            &[g, &offs, &list, &y],
            grid(total, 256),
        );
    }
    y
}

/// The parameters of a row gather or scatter of `total` values (index_add's first launch).
fn indexed(total: usize, n: usize, inner: usize, nidx: usize) -> Indexed {
    Indexed {
        total: total as u32,
        n: n as u32,
        inner: inner as u32,
        nidx: nidx as u32,
        q_start: 0,
        q_len: 0,
        accumulate: 0,
    }
}

/// `n` copies of `value`, written by a kernel (no host upload).
pub fn fill(ctx: &Arc<GpuContext>, n: usize, value: f64) -> GpuData {
    let y = GpuData::alloc(ctx, n);
    launch(
        ctx,
        kernel!(COPY, "fill"),
        &Fill {
            n: n as u32,
            value: value as f32,
        },
        &[&y],
        grid(n, 256),
    );
    y
}
