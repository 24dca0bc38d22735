//! Stochastic gradient descent with momentum, as PyTorch's `torch.optim.SGD`.

use super::{GroupState, Optimizer, ParamGroup};
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// SGD with optional (Nesterov) momentum and L2 weight decay, matching PyTorch (no dampening):
///
/// ```text
/// g   = ∇p + wd·p
/// buf = momentum·buf + g           (buf = g on the first step)
/// d   = g + momentum·buf  if nesterov, else buf
/// p  -= lr·d
/// ```
///
/// The buffer starts at zero, which makes the first step's `buf = g` exactly as PyTorch's clone.
/// With `momentum == 0` there is no buffer and the update is plain `p -= lr·g`.
#[derive(Debug)]
pub struct Sgd {
    state: GroupState,
    momentum: f64,
    nesterov: bool,
}

impl Sgd {
    #[track_caller]
    pub fn new(groups: Vec<ParamGroup>, momentum: f64, nesterov: bool) -> Sgd {
        assert!(
            (0.0..1.0).contains(&momentum),
            "Sgd: momentum {momentum} is not in [0, 1)"
        );
        assert!(
            !nesterov || momentum > 0.0,
            "Sgd: Nesterov momentum needs momentum > 0"
        );
        let kinds: &[&str] = if momentum > 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        };
        Sgd {
            state: GroupState::new(groups, kinds),
            momentum,
            nesterov,
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, lr: f64) {
        let (momentum, nesterov) = (self.momentum, self.nesterov);
        self.state.step(|group, p, g, bufs| {
            let mut d = g.clone();
            if group.weight_decay != 0.0 {
                d = &d + &p.mul_scalar(group.weight_decay);
            }
            if let [buf] = bufs {
                *buf = &buf.mul_scalar(momentum) + &d;
                d = if nesterov {
                    &d + &buf.mul_scalar(momentum)
                } else {
                    buf.clone()
                };
            }
            p.set_data(&(p - &d.mul_scalar(lr * group.lr_scale)));
        });
    }

    super::delegate_state!();
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    /// Runs two steps (lr 0.1 then 0.05) with gradients [0.5, 0.25] then [-1, 0.5] on
    /// p = [1, -2], returning p.
    fn two_steps(momentum: f64, nesterov: bool, weight_decay: f64) -> Tensor {
        let p = param(&[1.0, -2.0], &[2]);
        let group = ParamGroup {
            params: vec![("w".into(), p.clone())],
            weight_decay,
            lr_scale: 1.0,
            adapt: true,
        };
        let mut opt = Sgd::new(vec![group], momentum, nesterov);
        for (lr, g) in [(0.1, [0.5, 0.25]), (0.05, [-1.0, 0.5])] {
            set_grad(&p, &g);
            opt.step(lr);
        }
        p
    }

    #[test]
    fn plain() {
        // p1 = [1 - 0.05, -2 - 0.025]; p2 = p1 - 0.05·[-1, 0.5]
        assert_close(&two_steps(0.0, false, 0.0), &[1.0, -2.05]);
    }

    #[test]
    fn momentum() {
        // buf1 = g1, p1 = [0.95, -2.025]; buf2 = 0.9·[0.5, 0.25] + [-1, 0.5] = [-0.55, 0.725];
        // p2 = p1 - 0.05·buf2
        assert_close(
            &two_steps(0.9, false, 0.0),
            &[0.95 + 0.0275, -2.025 - 0.03625],
        );
    }

    #[test]
    fn nesterov() {
        // d1 = g1 + 0.9·g1 = [0.95, 0.475], p1 = [0.905, -2.0475];
        // buf2 = [-0.55, 0.725], d2 = g2 + 0.9·buf2 = [-1.495, 1.1525], p2 = p1 - 0.05·d2
        assert_close(
            &two_steps(0.9, true, 0.0),
            &[0.905 + 0.07475, -2.0475 - 0.057625],
        );
    }

    #[test]
    fn weight_decay_enters_the_buffer() {
        // g1 = [0.5 + 0.1, 0.25 - 0.2] = buf1, p1 = [0.94, -2.005];
        // g2 = [-1 + 0.094, 0.5 - 0.2005] = [-0.906, 0.2995], buf2 = [0.54 - 0.906, 0.045 + 0.2995]
        assert_close(
            &two_steps(0.9, false, 0.1),
            &[0.94 + 0.05 * 0.366, -2.005 - 0.05 * 0.3445],
        );
    }

    #[test]
    fn lr_scale_multiplies_the_rate() {
        let p = param(&[3.0], &[1]);
        let group = ParamGroup {
            params: vec![("b".into(), p.clone())],
            weight_decay: 0.0,
            lr_scale: 2.0,
            adapt: false,
        };
        let mut opt = Sgd::new(vec![group], 0.0, false);
        for lr in [0.1, 0.05] {
            set_grad(&p, &[1.0]);
            opt.step(lr);
        }
        assert_close(&p, &[3.0 - 0.2 - 0.1]);
    }

    #[test]
    fn state_round_trip() {
        check_round_trip(|g| Box::new(Sgd::new(g, 0.9, true)));
        check_round_trip(|g| Box::new(Sgd::new(g, 0.0, false)));
    }

    #[test]
    fn corrupt_state_refused() {
        check_corrupt_state(|g| Box::new(Sgd::new(g, 0.9, false)), "momentum_buffer");
    }
}
