//! LARS: SGD with layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017), the optimizer
//! of SimCLR and BYOL.

use super::{GroupState, Optimizer, ParamGroup};
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// LARS as in the paper and the BYOL/solo-learn implementations. For each parameter `p` of a
/// group with `adapt`:
///
/// ```text
/// g     = ∇p + wd·p
/// trust = η·‖p‖ / (‖g‖ + eps)   if ‖p‖ > 0 and ‖g‖ > 0, else 1
/// buf   = momentum·buf + trust·g
/// p    -= lr·buf
/// ```
///
/// The trust ratio gives every layer a step proportional to its own weight norm, which keeps
/// very large batches (thousands of images) stable where one global rate is too large for some
/// layers and too small for others. `‖·‖` is the L2 norm over the whole tensor; `eps` only
/// guards the division (BYOL uses none, solo-learn 1e-8). Groups without `adapt` (biases and
/// norms, see [`param_groups`](super::param_groups)) skip the trust ratio: plain momentum SGD with
/// the group's weight decay, which `param_groups` sets to zero for them.
///
/// The norms and the ratio stay on the parameter's device, so a step does not wait on a
/// read-back per layer.
#[derive(Debug)]
pub struct Lars {
    state: GroupState,
    momentum: f64,
    eta: f64,
    eps: f64,
}

impl Lars {
    /// `eta` is the trust coefficient (0.001 in the paper, solo-learn and BYOL).
    #[track_caller]
    pub fn new(groups: Vec<ParamGroup>, momentum: f64, eta: f64, eps: f64) -> Lars {
        assert!(
            (0.0..1.0).contains(&momentum),
            "Lars: momentum {momentum} is not in [0, 1)"
        );
        assert!(eta > 0.0, "Lars: trust coefficient {eta} is not positive");
        assert!(eps >= 0.0, "Lars: eps {eps} is negative");
        Lars {
            state: GroupState::new(groups, &["momentum_buffer"]),
            momentum,
            eta,
            eps,
        }
    }
}

/// `η·‖p‖ / (‖g‖ + eps)` as a 0-d tensor, or 1 where either norm is zero.
fn trust_ratio(p: &Tensor, g: &Tensor, eta: f64, eps: f64) -> Tensor {
    let p_norm = p.square().sum_all().sqrt();
    let g_norm = g.square().sum_all().sqrt();
    let zero = p_norm.zeros_like();
    let both_positive = &p_norm.gt(&zero) * &g_norm.gt(&zero);
    let ratio = (&p_norm / &g_norm.add_scalar(eps)).mul_scalar(eta);
    ratio.where_(&both_positive, &p_norm.ones_like())
}

impl Optimizer for Lars {
    fn step(&mut self, lr: f64) {
        let (momentum, eta, eps) = (self.momentum, self.eta, self.eps);
        self.state.step(|group, p, g, bufs| {
            let [buf] = bufs else {
                unreachable!("LARS keeps one buffer")
            };
            let mut d = g.clone();
            if group.weight_decay != 0.0 {
                d = &d + &p.mul_scalar(group.weight_decay);
            }
            if group.adapt {
                d = &d * &trust_ratio(p, &d, eta, eps);
            }
            *buf = &buf.mul_scalar(momentum) + &d;
            p.set_data(&(p - &buf.mul_scalar(lr * group.lr_scale)));
        });
    }

    super::delegate_state!();
}

#[cfg(test)]
mod tests {
    use super::super::param_groups;
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn trust_ratio_on_weights_plain_momentum_on_biases() {
        let w = param(&[3.0, 4.0], &[1, 2]);
        let b = param(&[1.0, -1.0], &[2]);
        let groups = param_groups(vec![("w".into(), w.clone()), ("b".into(), b.clone())], 0.5);
        let mut opt = Lars::new(groups, 0.9, 0.1, 0.25);

        // Decayed gradient [-0.9, -1.2] + 0.5·[3, 4] = [0.6, 0.8] has norm 1; ‖w‖ = 5, so
        // trust = 0.1·5/(1 + 0.25) = 0.4 and buf = [0.24, 0.32].
        set_grad(&w, &[-0.9, -1.2]);
        set_grad(&b, &[0.5, 0.5]);
        opt.step(0.5);
        assert_close(&w, &[3.0 - 0.12, 4.0 - 0.16]);
        assert_close(&b, &[0.75, -1.25]);

        // w = [2.88, 3.84] with norm 4.8; decayed gradient [-1.44, 0.08] + [1.44, 1.92] = [0, 2].
        set_grad(&w, &[-1.44, 0.08]);
        set_grad(&b, &[1.0, -1.0]);
        opt.step(0.25);
        let trust = 0.1 * 4.8 / (2.0 + 0.25);
        let buf = [0.9 * 0.24, 0.9 * 0.32 + 2.0 * trust];
        assert_close(&w, &[2.88 - 0.25 * buf[0], 3.84 - 0.25 * buf[1]]);
        // The bias: no decay, no trust ratio; buf2 = 0.9·[0.5, 0.5] + [1, -1] = [1.45, -0.55].
        assert_close(&b, &[0.75 - 0.25 * 1.45, -1.25 + 0.25 * 0.55]);
    }

    #[test]
    fn trust_ratio_is_one_when_a_norm_is_zero() {
        let w = param(&[0.0, 0.0], &[1, 2]);
        let mut opt = Lars::new(
            param_groups(vec![("w".into(), w.clone())], 0.5),
            0.9,
            0.001,
            0.0,
        );
        set_grad(&w, &[1.0, 2.0]);
        opt.step(0.1);
        assert_close(&w, &[-0.1, -0.2]);
    }

    #[test]
    fn state_round_trip() {
        check_round_trip(|g| Box::new(Lars::new(g, 0.9, 0.001, 1e-8)));
    }

    #[test]
    fn corrupt_state_refused() {
        check_corrupt_state(
            |g| Box::new(Lars::new(g, 0.9, 0.001, 1e-8)),
            "momentum_buffer",
        );
    }
}
