//! The fused AdamW step, four parameters per launch (`shaders/optim.wgsl`).

use super::*;

/// Parameters one AdamW launch updates: 4 × 7 buffers fit the 31 storage bindings of Metal, the
/// tightest of the usual adapters (the kernel parameters are a uniform buffer).
pub const ADAMW_PER_LAUNCH: usize = 4;

/// Storage bindings the AdamW kernel needs (see [`adamw`]).
pub const ADAMW_BINDINGS: u32 = 7 * ADAMW_PER_LAUNCH as u32;

/// One AdamW step of each parameter (value, gradient, moments), four per launch: their new
/// (value, first moment, second moment). Decay and step size are each parameter's own; β, ε and
/// the bias correction are one optimizer's, shared by all. The adapter must allow
/// [`ADAMW_BINDINGS`] storage buffers per kernel.
pub fn adamw(items: &[[&GpuData; 4]], steps: &[AdamWStep]) -> Vec<[GpuData; 3]> {
    let Some(first) = items.first() else {
        return Vec::new();
    };
    let ctx = first[0].ctx();
    let s0 = steps[0];
    debug_assert!(steps
        .iter()
        .all(|s| (s.beta1, s.beta2, s.bias2_sqrt, s.eps)
            == (s0.beta1, s0.beta2, s0.bias2_sqrt, s0.eps)));
    let out: Vec<[GpuData; 3]> = items
        .iter()
        .map(|[p, ..]| [(); 3].map(|_| GpuData::alloc(ctx, p.len())))
        .collect();
    for (chunk, (outs, steps)) in items.chunks(ADAMW_PER_LAUNCH).zip(
        out.chunks(ADAMW_PER_LAUNCH)
            .zip(steps.chunks(ADAMW_PER_LAUNCH)),
    ) {
        let mut starts = [0u32; ADAMW_PER_LAUNCH];
        let mut groups = 0usize;
        for (k, [p, ..]) in chunk.iter().enumerate() {
            starts[k] = groups as u32;
            groups += p.len().div_ceil(256);
        }
        let pick = |k: usize| if k < chunk.len() { k } else { 0 };
        let each = |f: &dyn Fn(usize) -> f32| F32x4(std::array::from_fn(|k| f(pick(k))));
        let params = AdamW {
            start: U32x4(starts),
            n: U32x4(std::array::from_fn(|k| chunk[pick(k)][0].len() as u32)),
            decay: each(&|k| steps[k].decay as f32),
            step: each(&|k| steps[k].step_size as f32),
            count: chunk.len() as u32,
            beta1: s0.beta1 as f32,
            beta2: s0.beta2 as f32,
            c1: (1.0 - s0.beta1) as f32,
            c2: (1.0 - s0.beta2) as f32,
            inv_bias2: (1.0 / s0.bias2_sqrt) as f32,
            eps: s0.eps as f32,
            _pad: 0,
        };
        let buffers: Vec<&GpuData> = (0..ADAMW_PER_LAUNCH)
            .flat_map(|k| {
                let ([p, g, m, v], [np, nm, nv]) = (&chunk[pick(k)], &outs[pick(k)]);
                [*p, *g, *m, *v, np, nm, nv]
            })
            .collect();
        launch(
            ctx,
            kernel!(OPTIM, "adamw"),
            &params,
            &buffers,
            grid(groups * 256, 256),
        );
    }
    out
}
