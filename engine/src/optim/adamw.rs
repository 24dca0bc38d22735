//! Adam with decoupled weight decay, as PyTorch's `torch.optim.AdamW`.

use super::{GroupState, Optimizer, ParamGroup};
use crate::backend::{self, AdamWStep};
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// AdamW (Loshchilov & Hutter), in PyTorch's order of operations; `t` counts steps from 1:
///
/// ```text
/// p *= 1 - lr·wd                       (decay decoupled from the gradient statistics)
/// m  = β1·m + (1-β1)·g
/// v  = β2·v + (1-β2)·g²
/// p -= lr/(1-β1^t) · m / (√v/√(1-β2^t) + eps)
/// ```
///
/// `t` is the optimizer's step count, shared by all parameters (PyTorch keeps one per parameter;
/// they differ only for a parameter that starts getting gradients late).
#[derive(Debug)]
pub struct AdamW {
    state: GroupState,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl AdamW {
    #[track_caller]
    pub fn new(groups: Vec<ParamGroup>, beta1: f64, beta2: f64, eps: f64) -> AdamW {
        for (name, beta) in [("beta1", beta1), ("beta2", beta2)] {
            assert!(
                (0.0..1.0).contains(&beta),
                "AdamW: {name} {beta} is not in [0, 1)"
            );
        }
        assert!(eps >= 0.0, "AdamW: eps {eps} is negative");
        AdamW {
            state: GroupState::new(groups, &["exp_avg", "exp_avg_sq"]),
            beta1,
            beta2,
            eps,
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, lr: f64) {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        let t = (self.state.steps + 1) as f64;
        let bias1 = 1.0 - beta1.powf(t);
        let bias2_sqrt = (1.0 - beta2.powf(t)).sqrt();
        self.state.step_all(|due| {
            let steps: Vec<AdamWStep> = due
                .iter()
                .map(|(group, ..)| {
                    let lr = lr * group.lr_scale;
                    AdamWStep {
                        decay: 1.0 - lr * group.weight_decay,
                        beta1,
                        beta2,
                        step_size: lr / bias1,
                        bias2_sqrt,
                        eps,
                    }
                })
                .collect();
            adamw_updates(due, &steps)
        });
    }

    super::delegate_state!();
}

/// Every parameter's new value and (first moment, second moment): the backend's fused kernel
/// where it has one (several parameters per launch on the GPU), else the same arithmetic as
/// tensor ops.
fn adamw_updates(
    due: &[(&ParamGroup, &Tensor, Tensor, &[Tensor])],
    steps: &[AdamWStep],
) -> Vec<(Tensor, Vec<Tensor>)> {
    let storages: Vec<[_; 4]> = due
        .iter()
        .map(|(_, p, g, bufs)| {
            [
                p.storage(),
                g.storage(),
                bufs[0].storage(),
                bufs[1].storage(),
            ]
        })
        .collect();
    let refs: Vec<[&backend::Storage; 4]> = storages
        .iter()
        .map(|s| s.each_ref().map(|a| &**a))
        .collect();
    match backend::adamw(&refs, steps) {
        Some(out) => due
            .iter()
            .zip(out)
            .map(|((_, p, ..), [np, nm, nv])| {
                let t = |d| Tensor::from_storage(d, p.shape().to_vec(), p.device());
                (t(np), vec![t(nm), t(nv)])
            })
            .collect(),
        None => due
            .iter()
            .zip(steps)
            .map(|((_, p, g, bufs), &s)| {
                let [np, nm, nv] = adamw_composed(p, g, &bufs[0], &bufs[1], s);
                (np, vec![nm, nv])
            })
            .collect(),
    }
}

fn adamw_composed(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: AdamWStep) -> [Tensor; 3] {
    let m = &m.mul_scalar(s.beta1) + &g.mul_scalar(1.0 - s.beta1);
    let v = &v.mul_scalar(s.beta2) + &g.square().mul_scalar(1.0 - s.beta2);
    let denom = v.sqrt().mul_scalar(1.0 / s.bias2_sqrt).add_scalar(s.eps);
    let p = &p.mul_scalar(s.decay) - &(&m / &denom).mul_scalar(s.step_size);
    [p, m, v]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn two_steps_with_decay_and_bias_correction() {
        let p = param(&[1.0, -2.0], &[2]);
        let group = ParamGroup {
            params: vec![("w".into(), p.clone())],
            weight_decay: 0.1,
            lr_scale: 1.0,
            adapt: true,
        };
        // A large eps so that where it enters is visible.
        let mut opt = AdamW::new(vec![group], 0.9, 0.999, 1e-3);
        set_grad(&p, &[0.5, 0.25]);
        opt.step(0.1);
        // Decay by 1 - 0.1·0.1; m = 0.1·g, v = 0.001·g², so m̂ = g and √v̂ = |g|.
        let p1 = [
            0.99 - 0.1 * 0.5 / (0.5 + 1e-3),
            -1.98 - 0.1 * 0.25 / (0.25 + 1e-3),
        ];
        assert_close(&p, &p1);

        set_grad(&p, &[-1.0, 0.5]);
        opt.step(0.05);
        let m2 = [0.9 * 0.05 - 0.1, 0.9 * 0.025 + 0.1 * 0.5];
        let v2 = [
            0.999 * 0.00025 + 0.001 * 1.0,
            0.999 * 0.0000625 + 0.001 * 0.25,
        ];
        let (bc1, bc2) = (1.0 - 0.9f64 * 0.9, 1.0 - 0.999f64 * 0.999);
        let p2: Vec<f64> = (0..2)
            .map(|i| {
                p1[i] * (1.0 - 0.05 * 0.1) - 0.05 * (m2[i] / bc1) / ((v2[i] / bc2).sqrt() + 1e-3)
            })
            .collect();
        assert_close(&p, &p2);
        assert_eq!(opt.steps(), 2);
    }

    /// The fused CPU kernel computes what the composed tensor ops compute, to the bit, over a
    /// parameter long enough to be split across threads (`tests/gpu_vs_cpu.rs` checks the
    /// GPU's kernel against it).
    #[test]
    fn fused_matches_composed() {
        let cpu = crate::Device::cpu();
        let n = 3 * crate::backend::cpu::PAR_MIN + 17;
        let [p, g, m] = [1, 2, 3].map(|seed| Tensor::randn(&[n], seed, &cpu));
        let v = Tensor::rand(&[n], 4, &cpu);
        let s = AdamWStep {
            decay: 1.0 - 0.01 * 0.1,
            beta1: 0.9,
            beta2: 0.99,
            step_size: 0.01 / (1.0 - 0.9f64.powi(3)),
            bias2_sqrt: (1.0 - 0.99f64.powi(3)).sqrt(),
            eps: 1e-8,
        };
        let storages = [&p, &g, &m, &v].map(Tensor::storage);
        let [out] = <[_; 1]>::try_from(
            backend::adamw(&[storages.each_ref().map(|s| &**s)], &[s]).expect("CPU operands"),
        )
        .expect("one parameter");
        let fused = out.map(|d| Tensor::from_storage(d, vec![n], cpu.clone()));
        let composed = adamw_composed(&p, &g, &m, &v, s);
        for (f, c) in fused.iter().zip(&composed) {
            assert_eq!(f.to_vec(), c.to_vec());
        }
        assert_ne!(fused[0].to_vec(), p.to_vec(), "the step moved nothing");
    }

    #[test]
    fn state_round_trip() {
        check_round_trip(|g| Box::new(AdamW::new(g, 0.9, 0.999, 1e-8)));
    }

    #[test]
    fn corrupt_state_refused() {
        check_corrupt_state(|g| Box::new(AdamW::new(g, 0.9, 0.999, 1e-8)), "exp_avg_sq");
    }
}
