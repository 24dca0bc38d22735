//! Neural-network functions: softmax, normalisation layers, dropout, losses, similarities.

use crate::autograd::no_grad;
use crate::backend;
use crate::shape::axis;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

impl Tensor {
    /// Fused, numerically stable softmax (or log-softmax) along the last axis.
    fn softmax_last(&self, log: bool) -> Tensor {
        let cols = self.shape().last().copied().unwrap_or(1);
        let rows = self.numel() / cols.max(1);
        let y = Tensor::from_storage(
            backend::softmax(&self.storage(), rows, cols, log),
            self.shape().to_vec(),
            self.device(),
        );
        let saved = y.detach();
        Tensor::from_op(
            y.storage(),
            self.shape().to_vec(),
            &self.device(),
            &[self],
            move |g| {
                let dx = backend::softmax_backward(&saved.storage(), &g.storage(), rows, cols, log);
                vec![Some(Tensor::from_storage(
                    dx,
                    saved.shape().to_vec(),
                    saved.device(),
                ))]
            },
        )
    }

    /// Moves `axis` last, applies `f`, and moves it back.
    fn along_last(&self, op: &str, ax: isize, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        if self.rank() == 0 {
            return f(self);
        }
        let a = axis(op, ax, self.rank());
        let last = self.rank() - 1;
        if a == last {
            f(self)
        } else {
            f(&self.transpose(a as isize, -1)).transpose(a as isize, -1)
        }
    }

    /// Softmax along `axis`.
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor {
        self.along_last("softmax", axis, |t| t.softmax_last(false))
    }

    /// Log-softmax along `axis`.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor {
        self.along_last("log_softmax", axis, |t| t.softmax_last(true))
    }

    /// Layer norm over the last axis, with optional affine weight and bias of that size.
    #[track_caller]
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Tensor {
        assert!(
            self.rank() >= 1,
            "layer_norm: needs at least one axis, got a scalar"
        );
        let cols = self.shape()[self.rank() - 1];
        for (name, p) in [("weight", weight), ("bias", bias)] {
            if let Some(p) = p {
                assert_eq!(
                    p.shape(),
                    [cols],
                    "layer_norm: {name} of shape {:?} does not match the last axis of {:?}",
                    p.shape(),
                    self.shape()
                );
            }
        }
        let rows = self.numel() / cols.max(1);
        if let (Some(w), Some(b)) = (weight, bias) {
            if let Some(y) = self.layer_norm_fused(w, b, cols, eps) {
                return y;
            }
        }
        let (xhat, _mean, rstd) = backend::layer_norm(&self.storage(), rows, cols, eps);
        let xhat = Tensor::from_storage(xhat, self.shape().to_vec(), self.device());
        let rstd = Tensor::from_storage(rstd, vec![rows], self.device());
        let saved = xhat.detach();
        let normed = Tensor::from_op(
            xhat.storage(),
            self.shape().to_vec(),
            &self.device(),
            &[self],
            move |g| {
                let dx = backend::layer_norm_backward(
                    &saved.storage(),
                    &rstd.storage(),
                    &g.storage(),
                    rows,
                    cols,
                );
                vec![Some(Tensor::from_storage(
                    dx,
                    saved.shape().to_vec(),
                    saved.device(),
                ))]
            },
        );
        let scaled = match weight {
            Some(w) => &normed * w,
            None => normed,
        };
        match bias {
            Some(b) => &scaled + b,
            None => scaled,
        }
    }

    /// The affine layer norm as one fused op where the backend has the kernel.
    fn layer_norm_fused(&self, w: &Tensor, b: &Tensor, cols: usize, eps: f64) -> Option<Tensor> {
        crate::ops::elementwise::check_same("layer_norm", self, w);
        crate::ops::elementwise::check_same("layer_norm", self, b);
        let (y, xhat, rstd) =
            backend::layer_norm_affine(&self.storage(), &w.storage(), &b.storage(), cols, eps)?;
        let dev = self.device();
        let (xhat, rstd) = (Arc::new(xhat), Arc::new(rstd));
        let (shape, ws) = (self.shape().to_vec(), w.detach());
        Some(Tensor::from_op(
            y,
            shape.clone(),
            &dev.clone(),
            &[self, w, b],
            move |g| {
                let (dx, dw, db) = backend::layer_norm_affine_backward(
                    &xhat,
                    &rstd,
                    &ws.storage(),
                    &g.storage(),
                    cols,
                );
                vec![
                    Some(Tensor::from_storage(dx, shape, dev.clone())),
                    Some(Tensor::from_storage(dw, vec![cols], dev.clone())),
                    Some(Tensor::from_storage(db, vec![cols], dev)),
                ]
            },
        ))
    }

    /// Batch norm over axis 1 of (N, C) or (N, C, L…) inputs.
    ///
    /// In training it normalises with the batch's statistics and updates the running ones (biased
    /// variance for normalising, unbiased for the running estimate, as PyTorch); in evaluation it
    /// uses the running statistics.
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Tensor {
        assert!(
            self.rank() >= 2,
            "batch_norm: needs (N, C, …), got shape {:?}",
            self.shape()
        );
        let c = self.shape()[1];
        let mut bshape = vec![1usize; self.rank()];
        bshape[1] = c;
        for (name, p) in [
            ("running_mean", running_mean),
            ("running_var", running_var),
            ("weight", weight),
            ("bias", bias),
        ] {
            if let Some(p) = p {
                assert_eq!(
                    p.shape(),
                    [c],
                    "batch_norm: {name} of shape {:?} does not match {c} channels",
                    p.shape()
                );
            }
        }
        let axes: Vec<isize> = (0..self.rank() as isize).filter(|&a| a != 1).collect();
        let xhat = if training {
            let count = self.numel() / c.max(1);
            assert!(
                count > 1,
                "batch_norm: training needs more than one value per channel, got shape {:?}",
                self.shape()
            );
            if let (Some(rm), Some(rv), Some(w), Some(b)) =
                (running_mean, running_var, weight, bias)
            {
                if let Some(y) = self.batch_norm_fused([w, b, rm, rv], momentum, eps) {
                    return y;
                }
            }
            let mean = self.mean_axes(&axes, true);
            let var = self.var_axes(&axes, true, 0);
            no_grad(|| {
                if let (Some(rm), Some(rv)) = (running_mean, running_var) {
                    let unbiased = var
                        .reshape_to(&[c])
                        .mul_scalar(count as f64 / (count - 1) as f64);
                    rm.set_data(&(rm * (1.0 - momentum) + mean.reshape_to(&[c]) * momentum));
                    rv.set_data(&(rv * (1.0 - momentum) + unbiased * momentum));
                }
            });
            &(self - &mean) * &var.add_scalar(eps).rsqrt()
        } else {
            let (rm, rv) = match (running_mean, running_var) {
                (Some(m), Some(v)) => (m.reshape_to(&bshape), v.reshape_to(&bshape)),
                _ => panic!("batch_norm: evaluation mode needs running statistics"),
            };
            &(self - &rm) * &rv.add_scalar(eps).rsqrt()
        };
        let scaled = match weight {
            Some(w) => &xhat * &w.reshape_to(&bshape),
            None => xhat,
        };
        match bias {
            Some(b) => &scaled + &b.reshape_to(&bshape),
            None => scaled,
        }
    }

    /// Training batch norm with weight, bias and running statistics as one fused op (one launch
    /// each way on the GPU), where the backend has the kernel; the running statistics move too.
    fn batch_norm_fused(&self, params: [&Tensor; 4], momentum: f64, eps: f64) -> Option<Tensor> {
        let [w, b, rm, rv] = params;
        let shape = self.shape().to_vec();
        // (outer, c, inner): the channel axis between the batch and any trailing axes.
        let (outer, c) = (shape[0], shape[1]);
        let inner = shape[2..].iter().product::<usize>();
        let storages = params.map(Tensor::storage);
        let [y, xhat, rstd, mean, var] = backend::batch_norm(
            &self.storage(),
            storages.each_ref().map(|s| &**s),
            outer,
            c,
            inner,
            eps,
            momentum,
        )?;
        let dev = self.device();
        rm.set_data(&Tensor::from_storage(mean, vec![c], dev.clone()));
        rv.set_data(&Tensor::from_storage(var, vec![c], dev.clone()));
        let (xhat, rstd, ws) = (Arc::new(xhat), Arc::new(rstd), w.detach());
        Some(Tensor::from_op(
            y,
            shape.clone(),
            &dev.clone(),
            &[self, w, b],
            move |g| {
                let ws = ws.storage();
                let gs = g.storage();
                let [dx, dw, db] =
                    backend::batch_norm_backward([&xhat, &rstd, &ws, &gs], outer, c, inner);
                vec![
                    Some(Tensor::from_storage(dx, shape, dev.clone())),
                    Some(Tensor::from_storage(dw, vec![c], dev.clone())),
                    Some(Tensor::from_storage(db, vec![c], dev)),
                ]
            },
        ))
    }

    /// Zeroes each element with probability `p` and scales the rest by 1/(1-p); the mask comes
    /// from `seed`, so a run is reproducible and identical on every device. Identity when not
    /// training.
    #[track_caller]
    pub fn dropout(&self, p: f64, seed: u64, training: bool) -> Tensor {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout: probability {p} is not in [0, 1)"
        );
        if !training || p == 0.0 {
            return self.clone();
        }
        let mut rng = crate::SeededRng::seed_from_u64(seed);
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f64> = (0..self.numel())
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
            .collect();
        self * &self.new_from(&mask, self.shape())
    }

    /// Divides by the L2 norm along `axis` (clamped below by `eps`, as PyTorch's F.normalize).
    /// The clamp comes before the square root: a zero row then gets a zero gradient, where
    /// √0's infinite slope times the clamp's zero would give NaN.
    #[track_caller]
    pub fn normalize(&self, axis: isize, eps: f64) -> Tensor {
        let norm = self
            .square()
            .sum(axis, true)
            .clamp(eps * eps, f64::INFINITY)
            .sqrt();
        self / &norm
    }

    /// Cosine similarity along `axis` (each norm clamped below by `eps`).
    #[track_caller]
    pub fn cosine_similarity(&self, other: &Tensor, axis: isize, eps: f64) -> Tensor {
        (&self.normalize(axis, eps) * &other.normalize(axis, eps)).sum(axis, false)
    }

    /// Mean cross-entropy of `(N, C)` logits against class indices. Rows whose target equals
    /// `ignore_index` are left out; `label_smoothing` mixes the one-hot target with uniform.
    #[track_caller]
    pub fn cross_entropy(
        &self,
        targets: &[i64],
        ignore_index: i64,
        label_smoothing: f64,
    ) -> Tensor {
        assert!(
            self.rank() == 2,
            "cross_entropy: logits must be (N, C), got shape {:?}",
            self.shape()
        );
        let (n, c) = (self.shape()[0], self.shape()[1]);
        assert_eq!(
            targets.len(),
            n,
            "cross_entropy: {} targets for {n} rows of logits {:?}",
            targets.len(),
            self.shape()
        );
        assert!(
            (0.0..=1.0).contains(&label_smoothing),
            "cross_entropy: label_smoothing {label_smoothing} is not in [0, 1]"
        );
        for (i, &t) in targets.iter().enumerate() {
            assert!(
                t == ignore_index || (t >= 0 && (t as usize) < c),
                "cross_entropy: target {t} at row {i} is not a class in 0..{c}"
            );
        }
        if label_smoothing == 0.0 {
            // −log p(target): pick each row's target entry of the log-softmax. The backward pass
            // scatters into one (N, C) buffer instead of weighting every class.
            let picked: Vec<u32> = targets
                .iter()
                .enumerate()
                .filter(|&(_, &t)| t != ignore_index)
                .map(|(i, &t)| (i * c) as u32 + t as u32)
                .collect();
            let valid = picked.len();
            return self
                .log_softmax(1)
                .reshape_to(&[n * c])
                .index_select(0, &picked)
                .sum_all()
                .mul_scalar(-1.0 / valid as f64);
        }
        let mut w = vec![0.0; n * c];
        let mut valid = 0usize;
        for (i, &t) in targets.iter().enumerate() {
            if t == ignore_index {
                continue;
            }
            valid += 1;
            let row = &mut w[i * c..(i + 1) * c];
            row.iter_mut().for_each(|v| *v = label_smoothing / c as f64);
            row[t as usize] += 1.0 - label_smoothing;
        }
        let weights = self.new_from(&w, &[n, c]);
        // Terms with zero weight are dropped rather than multiplied, so that a logit of -inf
        // (a masked class, as in NT-Xent's excluded self-similarity) adds 0, not 0·(-inf).
        let zero = self.new_from(&[0.0], &[]);
        let terms = (&self.log_softmax(1) * &weights).where_(&weights.ne_(&zero), &zero);
        terms.sum_all().mul_scalar(-1.0 / valid as f64)
    }
}

/// Embedding lookup: rows `ids` of a `(vocab, dim)` table, shaped `(ids.len(), dim)`.
#[track_caller]
pub fn embedding(weight: &Tensor, ids: &[u32]) -> Tensor {
    assert_eq!(
        weight.rank(),
        2,
        "embedding: weight must be (vocab, dim), got shape {:?}",
        weight.shape()
    );
    weight.index_select(0, ids)
}
