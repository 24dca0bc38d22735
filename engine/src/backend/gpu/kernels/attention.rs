//! Fused scaled dot-product attention, forward and backward, separate or packed q, k, v
//! (`shaders/attention.wgsl`); the op composes the shapes these kernels do not take.

use super::*;

/// Head dimensions the fused kernels keep in registers.
const MAX_HEAD_DIM: usize = 128;

/// Whether the fused kernels can run `s`: head dimensions in registers and multiples of 4 (rows
/// are read as vec4s), and each invocation's loop over the other sequence (about 2d + dv
/// multiply-adds per key or query) within llvmpipe's loop limit. Elsewhere the op composes
/// attention from matmuls and a softmax.
pub fn attention_fits(s: &AttnSpec) -> bool {
    s.d <= MAX_HEAD_DIM
        && s.dv <= MAX_HEAD_DIM
        && s.d.is_multiple_of(4)
        && s.dv.is_multiple_of(4)
        && s.d + s.dv + s.tq.max(s.tk) * (2 * s.d + s.dv + 2) <= 4 * LOOP_BUDGET - 4096
}

/// The kernels' parameters: the shape and scale, then where each row of q, k, v and the output
/// starts (see shaders/attention.wgsl). Head sizes and masks are override constants
/// ([`attention_constants`]).
fn attention_params(s: &AttnSpec, packing: Packing) -> Attention {
    let (h, d, dv) = (s.heads, s.d, s.dv);
    let rows = |n_stride: usize, h_stride: usize, row_stride: usize, offset: usize| RowLayout {
        n_stride: n_stride as u32,
        h_stride: h_stride as u32,
        row_stride: row_stride as u32,
        offset: offset as u32,
    };
    let [q, k, v, o] = match packing {
        // (bh, T, D) each.
        Packing::Separate => [
            rows(h * s.tq * d, s.tq * d, d, 0),
            rows(h * s.tk * d, s.tk * d, d, 0),
            rows(h * s.tk * dv, s.tk * dv, dv, 0),
            rows(h * s.tq * dv, s.tq * dv, dv, 0),
        ],
        // q, k, v in place in (B, T, 3·C); the output (B, T, C) with heads side by side.
        Packing::Qkv => {
            let c = h * d;
            [
                rows(s.tq * 3 * c, d, 3 * c, 0),
                rows(s.tk * 3 * c, d, 3 * c, c),
                rows(s.tk * 3 * c, d, 3 * c, 2 * c),
                rows(s.tq * c, d, c, 0),
            ]
        }
    };
    Attention {
        bh: s.bh as u32,
        heads: h as u32,
        tq: s.tq as u32,
        tk: s.tk as u32,
        scale: s.scale as f32,
        inf: f32::INFINITY,
        _pad: [0; 2],
        q,
        k,
        v,
        o,
    }
}

/// The attention kernels' grid: blocks of 64 rows by problem (see `row_of` in attention.wgsl).
fn attention_grid(bh: usize, rows: usize) -> [u32; 3] {
    let y = bh.clamp(1, MAX_GROUPS);
    [rows.div_ceil(64) as u32, y as u32, bh.div_ceil(y) as u32]
}

/// The attention kernels' override constants (see attention.wgsl).
fn attention_constants(s: &AttnSpec, bias: bool) -> [(&'static str, u32); 4] {
    [
        ("D", s.d as u32),
        ("DV", s.dv as u32),
        ("CAUSAL", s.causal as u32),
        ("HAS_BIAS", bias as u32),
    ]
}

/// Fused attention forward: the output (in `packing`'s layout) and each query row's log-sum-exp.
/// For [`Packing::Qkv`], `q`, `k` and `v` are the same packed buffer and the caller has checked
/// [`attention_fits`].
#[track_caller]
pub fn attention(
    q: &GpuData,
    k: &GpuData,
    v: &GpuData,
    bias: Option<&GpuData>,
    s: AttnSpec,
    packing: Packing,
) -> (GpuData, GpuData) {
    assert!(
        attention_fits(&s),
        "internal: attention {s:?} is past the fused kernels (the op composes it)"
    );
    let ctx = q.ctx();
    let o = GpuData::alloc(ctx, s.bh * s.tq * s.dv);
    let lse = GpuData::alloc(ctx, s.bh * s.tq);
    // Without a mask, a one-element stand-in the kernel never reads.
    let dummy = GpuData::alloc(ctx, 1);
    launch_with(
        ctx,
        kernel!(ATTENTION, "attention"),
        &attention_constants(&s, bias.is_some()),
        &attention_params(&s, packing),
        &[q, k, v, bias.unwrap_or(&dummy), &o, &lse],
        // Two query rows per invocation: blocks of 128 rows.
        attention_grid(s.bh, s.tq.div_ceil(2)),
    );
    (o, lse)
}

/// Fused attention backward from the forward's inputs, output and log-sum-exp and the output
/// gradient `g`: `[dq, dk, dv]`, or `[dqkv]` for [`Packing::Qkv`], whose q part one launch writes
/// and whose k and v parts another. Row deltas, dq, then dk and dv (one launch packed, two
/// separate), no atomics; the caller has checked [`attention_fits`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &GpuData,
    k: &GpuData,
    v: &GpuData,
    o: &GpuData,
    lse: &GpuData,
    g: &GpuData,
    bias: Option<&GpuData>,
    s: AttnSpec,
    packing: Packing,
) -> Vec<GpuData> {
    let ctx = q.ctx();
    let p = attention_params(&s, packing);
    let constants = attention_constants(&s, bias.is_some());
    let dummy = GpuData::alloc(ctx, 1);
    let bias = bias.unwrap_or(&dummy);
    let ld = GpuData::alloc(ctx, 2 * s.bh * s.tq);
    launch_with(
        ctx,
        kernel!(ATTENTION_DELTA, "attention_delta"),
        &[("DV", s.dv as u32)],
        &p,
        &[g, o, lse, &ld],
        attention_grid(s.bh, s.tq),
    );
    // Packed, the three kernels write disjoint parts (q's, k's, v's places) of one gradient.
    let out: Vec<GpuData> = match packing {
        Packing::Separate => vec![
            GpuData::alloc(ctx, s.bh * s.tq * s.d),
            GpuData::alloc(ctx, s.bh * s.tk * s.d),
            GpuData::alloc(ctx, s.bh * s.tk * s.dv),
        ],
        Packing::Qkv => vec![GpuData::alloc(ctx, q.len())],
    };
    let (dq, dk, dv) = match &out[..] {
        [dq, dk, dv] => (dq, dk, dv),
        [dqkv] => (dqkv, dqkv, dqkv),
        _ => unreachable!("one or three gradients"),
    };
    launch_with(
        ctx,
        kernel!(ATTENTION, "attention_dq"),
        &constants,
        &p,
        &[q, k, v, bias, g, &ld, dq],
        // Two query rows per invocation, as in the forward.
        attention_grid(s.bh, s.tq.div_ceil(2)),
    );
    // Packed, one launch writes dk and dv (their places in one buffer); separate, one each.
    let launches = match packing {
        Packing::Qkv => vec![(dk, true, true)],
        Packing::Separate => vec![(dk, true, false), (dv, false, true)],
    };
    for (grad, want_dk, want_dv) in launches {
        let mut constants = constants.to_vec();
        constants.extend([("WANT_DK", want_dk as u32), ("WANT_DV", want_dv as u32)]);
        launch_with(
            ctx,
            kernel!(ATTENTION, "attention_dkv"),
            &constants,
            &p,
            &[q, k, v, bias, g, &ld, grad],
            // Two key rows per invocation.
            attention_grid(s.bh, s.tk.div_ceil(2)),
        );
    }
    out
}
