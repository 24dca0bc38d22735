//! Optimizers (SGD, AdamW, LARS), learning-rate and EMA-momentum schedules, gradient clipping.
//!
//! An optimizer owns [`ParamGroup`]s and per-parameter state. Its updates are tensor ops run under
//! [`no_grad`](crate::no_grad) and written back with [`Tensor::set_data`], so they run on
//! whichever device holds each parameter, and the state lives there too. `step(lr)` takes the
//! already-scheduled learning rate: schedules ([`WarmupCosine`]) stay plain functions of the step,
//! and resuming a run needs only the step count, not a scheduler object.

mod adamw;
mod clip;
mod lars;
mod schedule;
mod sgd;

pub use adamw::AdamW;
pub use clip::{clip_grad_norm, clip_grads, grad_norm, grad_norm_squared};
pub use lars::Lars;
pub use schedule::{cosine_ramp, WarmupCosine};
pub use sgd::Sgd;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Parameters that share hyperparameters.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// Parameters under their dotted names, which also name their optimizer state.
    pub params: Vec<(String, Tensor)>,
    pub weight_decay: f64,
    /// Multiplies the learning rate given to [`Optimizer::step`] (e.g. a smaller rate for a
    /// pretrained backbone than for a fresh head).
    pub lr_scale: f64,
    /// Whether LARS's layer-wise trust ratio applies (other optimizers ignore it).
    pub adapt: bool,
}

/// Splits parameters the way solo-learn and the SimCLR/BYOL papers do: biases and normalisation
/// scales/shifts (every tensor of rank ≤ 1) get neither weight decay nor LARS adaptation, since
/// shrinking them towards zero only fights the normalisation; everything else gets
/// `weight_decay` and adaptation. Empty groups are left out.
pub fn param_groups(named: Vec<(String, Tensor)>, weight_decay: f64) -> Vec<ParamGroup> {
    let (plain, decayed): (Vec<_>, Vec<_>) = named.into_iter().partition(|(_, t)| t.rank() <= 1);
    [(decayed, weight_decay, true), (plain, 0.0, false)]
        .into_iter()
        .filter(|(params, _, _)| !params.is_empty())
        .map(|(params, weight_decay, adapt)| ParamGroup {
            params,
            weight_decay,
            lr_scale: 1.0,
            adapt,
        })
        .collect()
}

/// A first-order optimizer over [`ParamGroup`]s.
pub trait Optimizer {
    /// Updates every trainable parameter that has a gradient, with learning rate
    /// `lr × group.lr_scale`. Frozen parameters (`requires_grad` false) are skipped even if they
    /// hold a stale gradient.
    fn step(&mut self, lr: f64);

    /// Drops the gradients of all parameters, so the next `backward` starts from zero.
    fn zero_grad(&self);

    /// How many times `step` has run (restored by `load_state_dict`).
    fn steps(&self) -> u64;

    /// The state as named tensors: `"step"` (a 1-element tensor) and per parameter
    /// `"{name}.momentum_buffer"` or `"{name}.exp_avg"`/`"{name}.exp_avg_sq"`. It is a snapshot:
    /// later steps replace the buffers rather than writing into them.
    fn state_dict(&self) -> Vec<(String, Tensor)>;

    /// Restores state saved by `state_dict`, moving it to each parameter's device. When the saved
    /// step count is non-zero, every parameter trainable now must have its state, with the
    /// parameter's shape; otherwise this returns a format error for `source` naming the tensor
    /// and changes nothing. Tensors under other names are ignored.
    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>, source: &str) -> Result<()>;
}

/// The [`Optimizer`] methods that every optimizer answers from its [`GroupState`] field `state`.
macro_rules! delegate_state {
    () => {
        fn zero_grad(&self) {
            self.state.zero_grad();
        }

        fn steps(&self) -> u64 {
            self.state.steps
        }

        fn state_dict(&self) -> Vec<(String, Tensor)> {
            self.state.state_dict()
        }

        fn load_state_dict(&mut self, state: &HashMap<String, Tensor>, source: &str) -> Result<()> {
            self.state.load_state_dict(state, source)
        }
    };
}
use delegate_state;

/// What every optimizer keeps the same way: its groups, the step count, and per-parameter
/// buffers under fixed suffixes.
///
/// Buffers are created (as zeros) at the first step for every trainable parameter, including one
/// that gets no gradient (an unused class token), so that a checkpoint always holds state for all
/// trainable parameters and a missing tensor can be told apart from one never created.
#[derive(Debug)]
struct GroupState {
    groups: Vec<ParamGroup>,
    /// Buffer suffixes, e.g. `["exp_avg", "exp_avg_sq"]`; empty for momentum-free SGD.
    kinds: &'static [&'static str],
    buffers: HashMap<String, Vec<Tensor>>,
    steps: u64,
}

impl GroupState {
    fn new(groups: Vec<ParamGroup>, kinds: &'static [&'static str]) -> GroupState {
        GroupState {
            groups,
            kinds,
            buffers: HashMap::new(),
            steps: 0,
        }
    }

    /// Counts a step and calls `update(group, param, grad, buffers)` for every trainable
    /// parameter with a gradient, without recording a graph. `update` writes the parameter with
    /// `set_data` and replaces its buffers.
    fn step(&mut self, mut update: impl FnMut(&ParamGroup, &Tensor, &Tensor, &mut [Tensor])) {
        self.steps += 1;
        let _guard = crate::NoGradGuard::new();
        for group in &self.groups {
            for (name, p) in &group.params {
                if !p.requires_grad() {
                    continue;
                }
                let bufs = self
                    .buffers
                    .entry(name.clone())
                    .or_insert_with(|| self.kinds.iter().map(|_| p.zeros_like()).collect());
                if let Some(g) = p.grad() {
                    update(group, p, &g, bufs);
                }
            }
        }
    }

    /// [`GroupState::step`] for optimizers that update many parameters at once (AdamW's fused
    /// kernel takes several per launch): `update` gets every trainable parameter that has a
    /// gradient, as (group, parameter, gradient, buffers), and returns their new values and
    /// buffers in the same order.
    fn step_all(
        &mut self,
        update: impl FnOnce(&[(&ParamGroup, &Tensor, Tensor, &[Tensor])]) -> Vec<(Tensor, Vec<Tensor>)>,
    ) {
        self.steps += 1;
        let _guard = crate::NoGradGuard::new();
        let mut due = Vec::new();
        for group in &self.groups {
            for (name, p) in group.params.iter().filter(|(_, p)| p.requires_grad()) {
                self.buffers
                    .entry(name.clone())
                    .or_insert_with(|| self.kinds.iter().map(|_| p.zeros_like()).collect());
                if let Some(g) = p.grad() {
                    due.push((group, name, p, g));
                }
            }
        }
        let args: Vec<_> = due
            .iter()
            .map(|(group, name, p, g)| (*group, *p, g.clone(), self.buffers[*name].as_slice()))
            .collect();
        let updated = update(&args);
        for ((_, name, p, _), (value, bufs)) in due.iter().zip(updated) {
            p.set_data(&value);
            self.buffers.insert((*name).clone(), bufs);
        }
    }

    fn zero_grad(&self) {
        for group in &self.groups {
            for (_, p) in &group.params {
                p.zero_grad();
            }
        }
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "step".to_string(),
            Tensor::from_vec_f64(vec![self.steps as f64], &[1]),
        )];
        for group in &self.groups {
            for (name, _) in &group.params {
                if let Some(bufs) = self.buffers.get(name) {
                    for (kind, b) in self.kinds.iter().zip(bufs) {
                        out.push((format!("{name}.{kind}"), b.clone()));
                    }
                }
            }
        }
        out
    }

    fn load_state_dict(&mut self, state: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        let missing = |key: &str| Error::format(source, format!("missing tensor {key}"));
        let step = state.get("step").ok_or_else(|| missing("step"))?;
        if step.numel() != 1 {
            return Err(Error::format(
                source,
                format!(
                    "tensor step has shape {:?}, expected one element",
                    step.shape()
                ),
            ));
        }
        let count = step.to_vec_f64()[0];
        // Above 2^53 an f64 no longer holds every integer.
        if !(count >= 0.0 && count.fract() == 0.0 && count <= (1u64 << 53) as f64) {
            return Err(Error::format(
                source,
                format!("tensor step holds {count}, not a step count"),
            ));
        }
        let steps = count as u64;

        let _guard = crate::NoGradGuard::new();
        let mut buffers = HashMap::new();
        for group in &self.groups {
            for (name, p) in &group.params {
                let found: Vec<(String, Option<&Tensor>)> = self
                    .kinds
                    .iter()
                    .map(|kind| {
                        let key = format!("{name}.{kind}");
                        let t = state.get(&key);
                        (key, t)
                    })
                    .collect();
                let required = steps > 0 && p.requires_grad();
                if !required && found.iter().all(|(_, t)| t.is_none()) {
                    continue;
                }
                let mut bufs = Vec::with_capacity(found.len());
                for (key, t) in found {
                    let t = t.ok_or_else(|| missing(&key))?;
                    if t.shape() != p.shape() {
                        return Err(Error::format(
                            source,
                            format!(
                                "tensor {key} has shape {:?}, the parameter has {:?}",
                                t.shape(),
                                p.shape()
                            ),
                        ));
                    }
                    // `detach` gives the state its own handle, so later `set_data` on the
                    // caller's tensor cannot reach it.
                    bufs.push(t.to_device(&p.device()).to_dtype(p.dtype()).detach());
                }
                buffers.insert(name.clone(), bufs);
            }
        }
        self.buffers = buffers;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod test_util {
    use super::*;
    use crate::Device;

    /// An f64 CPU parameter, so hand-computed expectations can be checked to 1e-12.
    pub fn param(values: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec_f64(values.to_vec(), shape).requires_grad_(true)
    }

    /// Gives `p` exactly the gradient `g` (the gradient of `Σ p·g`).
    pub fn set_grad(p: &Tensor, g: &[f64]) {
        p.zero_grad();
        (p * &p.new_from(g, p.shape())).sum_all().backward();
    }

    #[track_caller]
    pub fn assert_close(t: &Tensor, expected: &[f64]) {
        let got = t.to_vec_f64();
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (g - e).abs() <= 1e-12 * e.abs().max(1.0),
                "element {i}: got {g}, expected {e}"
            );
        }
    }

    /// A small f32 model: a weight and a bias that the loss uses, a trainable tensor it does not
    /// (like a class token under mean pooling), and a frozen weight.
    pub fn model() -> Vec<(String, Tensor)> {
        let cpu = Device::cpu();
        let names = ["fc.weight", "fc.bias", "cls_token", "frozen.weight"];
        let shapes: [&[usize]; 4] = [&[3, 4], &[3], &[1, 1, 4], &[4, 4]];
        names
            .iter()
            .zip(shapes)
            .enumerate()
            .map(|(i, (&n, s))| {
                let t = Tensor::randn(s, i as u64, &cpu).requires_grad_(n != "frozen.weight");
                (n.to_string(), t)
            })
            .collect()
    }

    /// The same tensors' values in fresh parameters with the same flags.
    pub fn copy(named: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
        named
            .iter()
            .map(|(n, t)| {
                let c = Tensor::from_vec(t.to_vec(), t.shape(), &t.device());
                (n.clone(), c.requires_grad_(t.requires_grad()))
            })
            .collect()
    }

    /// Fills gradients from a non-linear loss of the model's first two tensors.
    pub fn backward(named: &[(String, Tensor)]) {
        let (w, b) = (&named[0].1, &named[1].1);
        let x = Tensor::randn(&[5, 4], 99, &Device::cpu());
        let y = &x.matmul_nt(w) + b;
        (&y.square() * &y).mean_all().backward();
    }

    /// Three steps, save, then two more steps both on the original and on a fresh optimizer
    /// that loaded the state into copied parameters: the parameters must agree bit for bit.
    pub fn check_round_trip(make: impl Fn(Vec<ParamGroup>) -> Box<dyn Optimizer>) {
        let a_params = model();
        let mut a = make(param_groups(a_params.clone(), 0.1));
        let lrs = [0.1, 0.08, 0.06, 0.04, 0.02];
        for &lr in &lrs[..3] {
            a.zero_grad();
            backward(&a_params);
            a.step(lr);
        }
        let state: HashMap<String, Tensor> = a.state_dict().into_iter().collect();
        assert!(
            !state.keys().any(|k| k.starts_with("frozen.")),
            "frozen parameters have no state"
        );
        let b_params = copy(&a_params);
        let mut b = make(param_groups(b_params.clone(), 0.1));
        b.load_state_dict(&state, "opt.safetensors").unwrap();
        assert_eq!(b.steps(), 3);
        for &lr in &lrs[3..] {
            for (params, opt) in [(&a_params, &mut a), (&b_params, &mut b)] {
                opt.zero_grad();
                backward(params);
                opt.step(lr);
            }
        }
        assert_eq!(b.steps(), 5);
        for ((name, p), (_, q)) in a_params.iter().zip(&b_params) {
            let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(p), bits(q), "{name} differs after resuming");
        }
    }

    /// A corrupt state is refused with an error naming the tensor, and changes nothing.
    pub fn check_corrupt_state(make: impl Fn(Vec<ParamGroup>) -> Box<dyn Optimizer>, buffer: &str) {
        let params = model();
        let mut a = make(param_groups(params.clone(), 0.1));
        backward(&params);
        a.step(0.1);
        let good: HashMap<String, Tensor> = a.state_dict().into_iter().collect();
        let key = format!("fc.bias.{buffer}");

        let mut b = make(param_groups(copy(&params), 0.1));
        let mut missing = good.clone();
        missing.remove(&key);
        let err = b
            .load_state_dict(&missing, "opt.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&key) && err.contains("missing"), "{err}");

        let mut reshaped = good.clone();
        reshaped.insert(key.clone(), Tensor::zeros(&[4], &Device::cpu()));
        let err = b
            .load_state_dict(&reshaped, "opt.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&key) && err.contains("shape"), "{err}");

        let mut no_step = good.clone();
        no_step.remove("step");
        let err = b
            .load_state_dict(&no_step, "opt.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains("step"), "{err}");

        assert_eq!(b.steps(), 0);
        assert_eq!(b.state_dict().len(), 1, "only the step counter");
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::nn::{prefixed, Init, LayerNorm, Linear, Module};
    use crate::Device;

    #[test]
    fn param_groups_exempt_biases_and_norms() {
        let mut init = Init::new(0, &Device::cpu());
        let fc = Linear::new(&mut init, 4, 3, true);
        let norm = LayerNorm::new(&init, 3);
        let mut named = prefixed("fc", fc.named_parameters());
        named.extend(prefixed("norm", norm.named_parameters()));
        named.push(("logit_scale".into(), Tensor::scalar(1.0, &Device::cpu())));
        let groups = param_groups(named, 0.05);
        assert_eq!(groups.len(), 2);
        let names = |g: &ParamGroup| g.params.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&groups[0]), ["fc.weight"]);
        assert_eq!((groups[0].weight_decay, groups[0].adapt), (0.05, true));
        assert_eq!(
            names(&groups[1]),
            ["fc.bias", "norm.weight", "norm.bias", "logit_scale"]
        );
        assert_eq!((groups[1].weight_decay, groups[1].adapt), (0.0, false));
        assert!(groups.iter().all(|g| g.lr_scale == 1.0));

        let only_norm = param_groups(prefixed("norm", norm.named_parameters()), 0.05);
        assert_eq!(only_norm.len(), 1);
        assert!(!only_norm[0].adapt);
    }

    type MakeOptimizer = fn(Vec<ParamGroup>) -> Box<dyn Optimizer>;

    #[test]
    fn frozen_and_gradless_parameters_are_untouched() {
        let makers: [MakeOptimizer; 3] = [
            |g| Box::new(Sgd::new(g, 0.9, false)),
            |g| Box::new(AdamW::new(g, 0.9, 0.999, 1e-8)),
            |g| Box::new(Lars::new(g, 0.9, 0.001, 1e-8)),
        ];
        for make in makers {
            let params = model();
            let before: Vec<Vec<f32>> = params.iter().map(|(_, t)| t.to_vec()).collect();
            let frozen = &params[3].1;
            // A stale gradient from before freezing must not move it.
            frozen.set_requires_grad(true);
            (frozen * 2.0).sum_all().backward();
            frozen.set_requires_grad(false);
            let mut opt = make(param_groups(params.clone(), 0.1));
            backward(&params);
            opt.step(0.1);
            assert_ne!(params[0].1.to_vec(), before[0], "the used weight moves");
            assert_eq!(
                params[2].1.to_vec(),
                before[2],
                "no gradient: no update, no decay"
            );
            assert_eq!(params[3].1.to_vec(), before[3], "frozen");
            opt.zero_grad();
            assert!(params.iter().all(|(_, t)| t.grad().is_none()));
        }
    }
}
