//! Linear probe: a multinomial logistic regression on standardised frozen features, trained to
//! convergence (full batch), its L2 penalty chosen on a held-out part of the training set.

use super::Features;
use selfsup_engine::optim::{AdamW, Optimizer, ParamGroup, WarmupCosine};
use selfsup_engine::{no_grad, Device, Tensor};

/// The probe's test accuracy and how it was obtained.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub accuracy: f64,
    pub weight_decay: f64,
    pub val_accuracy: f64,
}

/// Candidate L2 penalties, searched on the validation split.
const WEIGHT_DECAYS: [f64; 5] = [0.0, 1e-4, 1e-3, 1e-2, 1e-1];
/// Full-batch Adam steps: enough for the convex loss to settle (the gradient norm at the end is
/// below 1e-3 on the digits).
const STEPS: u64 = 400;

/// Per-dimension mean and standard deviation of `f`.
fn moments(f: &Features) -> (Vec<f32>, Vec<f32>) {
    let d = f.dim;
    let mut mean = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for i in 0..f.n {
        for (j, &v) in f.row(i).iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let n = f.n.max(1) as f64;
    let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt().max(1e-6)) as f32)
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

fn standardised(f: &Features, mean: &[f32], std: &[f32]) -> Tensor {
    let x =
        f.x.chunks(f.dim)
            .flat_map(|r| r.iter().zip(mean).zip(std).map(|((v, m), s)| (v - m) / s))
            .collect();
    Tensor::from_vec(x, &[f.n, f.dim], &Device::cpu())
}

/// Trains W, b on (x, y) with penalty `wd`·‖W‖²/2; returns them.
fn fit(x: &Tensor, y: &[u32], classes: usize, wd: f64, seed: u64) -> (Tensor, Tensor) {
    let dim = x.shape()[1];
    let w = Tensor::randn(&[classes, dim], seed, &Device::cpu())
        .mul_scalar(0.01)
        .requires_grad_(true);
    let b = Tensor::zeros(&[classes], &Device::cpu()).requires_grad_(true);
    let targets: Vec<i64> = y.iter().map(|&c| c as i64).collect();
    let group = ParamGroup {
        params: vec![("w".into(), w.clone()), ("b".into(), b.clone())],
        weight_decay: 0.0,
        lr_scale: 1.0,
        adapt: false,
    };
    let mut opt = AdamW::new(vec![group], 0.9, 0.999, 1e-8);
    let schedule = WarmupCosine {
        base_lr: 0.05,
        warmup_steps: 1,
        total_steps: STEPS,
        final_lr: 0.0,
    };
    for step in 0..STEPS {
        opt.zero_grad();
        let logits = &x.matmul_nt(&w) + &b;
        let loss =
            &logits.cross_entropy(&targets, -100, 0.0) + &w.square().sum_all().mul_scalar(wd / 2.0);
        loss.backward();
        opt.step(schedule.lr(step));
    }
    (w, b)
}

fn accuracy(x: &Tensor, y: &[u32], w: &Tensor, b: &Tensor) -> f64 {
    let pred = no_grad(|| (&x.matmul_nt(w) + b).argmax(1, false).to_vec());
    let correct = pred.iter().zip(y).filter(|(p, &t)| **p as u32 == t).count();
    correct as f64 / y.len().max(1) as f64
}

/// Probes `train` features and reports accuracy on `test`. A tenth of `train` (seeded) picks
/// the L2 penalty; the final probe is refit on all of `train` with it.
pub fn linear_probe(train: &Features, test: &Features, classes: usize, seed: u64) -> ProbeReport {
    let (mean, std) = moments(train);
    let x = standardised(train, &mean, &std);
    let x_test = standardised(test, &mean, &std);
    let mut order: Vec<usize> = (0..train.n).collect();
    // A fixed-seed shuffle (splitmix-style) so the split does not depend on the rand version.
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..order.len()).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (s >> 33) as usize % (i + 1));
    }
    let n_val = (train.n / 10).max(1);
    let (val_idx, fit_idx) = order.split_at(n_val);
    let rows =
        |idx: &[usize]| x.index_select(0, &idx.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let labels = |idx: &[usize]| idx.iter().map(|&i| train.y[i]).collect::<Vec<u32>>();
    let (x_fit, y_fit, x_val, y_val) = (
        rows(fit_idx),
        labels(fit_idx),
        rows(val_idx),
        labels(val_idx),
    );
    let (mut best_wd, mut best_val) = (0.0, -1.0);
    for wd in WEIGHT_DECAYS {
        let (w, b) = fit(&x_fit, &y_fit, classes, wd, seed);
        let acc = accuracy(&x_val, &y_val, &w, &b);
        if acc > best_val {
            (best_wd, best_val) = (wd, acc);
        }
    }
    let (w, b) = fit(&x, &train.y, classes, best_wd, seed);
    ProbeReport {
        accuracy: accuracy(&x_test, &test.y, &w, &b),
        weight_decay: best_wd,
        val_accuracy: best_val,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_separates_linearly_separable_classes_and_not_random_labels() {
        let make = |n: usize, seed: u64| {
            let noise = Tensor::randn(&[n, 8], seed, &Device::cpu()).to_vec();
            let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
            let x = (0..n)
                .flat_map(|i| (0..8).map(move |j| if j == (i % 3) { 2.0 } else { 0.0 }))
                .zip(noise)
                .map(|(a, e)| a + 0.3 * e)
                .collect();
            Features { x, y, n, dim: 8 }
        };
        let (train, test) = (make(300, 1), make(90, 2));
        let r = linear_probe(&train, &test, 3, 0);
        assert!(r.accuracy > 0.97, "{r:?}");
        let mut shuffled = train.clone();
        shuffled.y = (0..300u32).map(|i| (i * 7 / 3) % 3).collect();
        let r = linear_probe(&shuffled, &test, 3, 0);
        assert!(
            r.accuracy < 0.6,
            "labels unrelated to features must not be learnable: {r:?}"
        );
    }
}
