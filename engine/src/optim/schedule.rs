//! Step-indexed schedules: learning rate with warm-up and cosine decay, and the cosine ramp of an
//! EMA teacher's momentum.

use std::f64::consts::PI;

/// Linear warm-up to `base_lr`, then cosine decay to `final_lr` at `total_steps` (held there
/// after), as SimCLR, BYOL and solo-learn schedule per step.
///
/// Warm-up gives `base_lr·(step+1)/warmup_steps`, so step 0 already trains (at
/// `base_lr/warmup_steps`) and the last warm-up step reaches `base_lr`; the cosine then starts
/// from `base_lr` at `step = warmup_steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub final_lr: f64,
}

impl WarmupCosine {
    /// The learning rate for 0-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return self.final_lr;
        }
        let progress =
            (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        self.final_lr + (self.base_lr - self.final_lr) * 0.5 * (1.0 + (PI * progress).cos())
    }
}

/// Half a cosine from `start` at step 0 to `end` at `total` (held after): BYOL's target momentum
/// τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 is `cosine_ramp(τ_base, 1.0, k, K)`.
pub fn cosine_ramp(start: f64, end: f64, step: u64, total: u64) -> f64 {
    if step >= total {
        return end;
    }
    let progress = step as f64 / total as f64;
    end - (end - start) * 0.5 * (1.0 + (PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_cosine() {
        let s = WarmupCosine {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            final_lr: 0.1,
        };
        assert!(close(s.lr(0), 0.1));
        assert!(close(s.lr(4), 0.5));
        assert!(close(s.lr(9), 1.0), "end of warm-up");
        assert!(close(s.lr(10), 1.0), "start of the cosine");
        assert!(close(s.lr(35), 0.1 + 0.9 * 0.5 * (1.0 + (PI / 4.0).cos())));
        assert!(close(s.lr(60), 0.55), "middle");
        assert!(close(s.lr(110), 0.1), "end");
        assert!(close(s.lr(1000), 0.1), "beyond");
        assert!((1..110).all(|k| s.lr(k) <= s.lr(k - 1) || k < 10));
    }

    #[test]
    fn no_warmup_and_degenerate_totals() {
        let s = WarmupCosine {
            base_lr: 2.0,
            warmup_steps: 0,
            total_steps: 4,
            final_lr: 0.0,
        };
        assert!(close(s.lr(0), 2.0));
        assert!(close(s.lr(2), 1.0));
        let all_warmup = WarmupCosine {
            base_lr: 2.0,
            warmup_steps: 4,
            total_steps: 4,
            final_lr: 0.5,
        };
        assert!(close(all_warmup.lr(3), 2.0));
        assert!(close(all_warmup.lr(4), 0.5));
    }

    #[test]
    fn byol_momentum_ramp() {
        assert!(close(cosine_ramp(0.99, 1.0, 0, 100), 0.99));
        assert!(close(cosine_ramp(0.99, 1.0, 50, 100), 0.995));
        assert!(close(cosine_ramp(0.99, 1.0, 100, 100), 1.0));
        assert!(close(cosine_ramp(0.99, 1.0, 500, 100), 1.0));
        assert!(close(cosine_ramp(0.99, 1.0, 0, 0), 1.0));
    }
}
