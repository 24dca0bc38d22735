//! Neural-network building blocks with PyTorch-style named parameters.
//!
//! A [`Module`] lists its parameters and buffers under dotted names (`blocks.0.attn.qkv.weight`),
//! so checkpoints read like PyTorch `state_dict`s and load into either. Each module has its own
//! `forward` with the signature its inputs need; the trait covers only what generic code (an
//! optimizer, a checkpoint, a freeze) must see.

mod attention;
mod conv;
mod init;
mod layers;
mod transformer;

pub use attention::{CrossAttention, MultiHeadAttention};
pub use conv::{conv2d, Conv2d};
pub use init::{trunc_normal, Init};
pub use layers::{BatchNorm1d, Dropout, Embedding, LayerNorm, Linear, Mlp};
pub use transformer::Block;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Something with named parameters and buffers and a train/eval mode.
///
/// A module lists only what it holds itself (`own_parameters`, `own_buffers`) and its sub-modules
/// (`children`); names, train/eval mode, copies and EMA updates walk the tree from there, so a
/// composite cannot forget a child in one of them.
pub trait Module {
    /// Trainable tensors held by this module itself, not by its children.
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Non-trainable state held by this module itself (BatchNorm's running statistics).
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Sub-modules under their names, in a stable order.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// Switches this module's own dropout or batch-norm behaviour (children are reached by
    /// [`Module::set_training`]).
    fn set_own_training(&self, _training: bool) {}

    /// Trainable tensors of the whole tree under their dotted names, in a stable order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = self.own_parameters();
        for (name, child) in self.children() {
            v.extend(prefixed(&name, child.named_parameters()));
        }
        v
    }

    /// Non-trainable state of the whole tree under dotted names.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut v = self.own_buffers();
        for (name, child) in self.children() {
            v.extend(prefixed(&name, child.named_buffers()));
        }
        v
    }

    /// Switches dropout and batch norm of the whole tree between training and evaluation.
    fn set_training(&self, training: bool) {
        self.set_own_training(training);
        for (_, child) in self.children() {
            child.set_training(training);
        }
    }

    /// Parameters followed by buffers: everything a checkpoint holds.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut v = self.named_parameters();
        v.extend(self.named_buffers());
        v
    }

    /// Just the parameter tensors.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.named_parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Stops (or restarts) gradients for every parameter: a frozen encoder under a probe.
    fn set_frozen(&self, frozen: bool) {
        for p in self.parameters() {
            p.set_requires_grad(!frozen);
        }
    }

    /// Copies values from `state` into this module's tensors, by name. Every tensor of the
    /// module must be present with its exact shape and nothing else may be there; nothing is
    /// changed unless all is well.
    fn load_state_dict(&self, state: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        let mine = self.state_dict();
        for (name, t) in &mine {
            match state.get(name) {
                None => return Err(Error::format(source, format!("missing tensor {name}"))),
                Some(s) if s.shape() != t.shape() => {
                    return Err(Error::format(
                        source,
                        format!(
                            "tensor {name} has shape {:?}, the model expects {:?}",
                            s.shape(),
                            t.shape()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if state.len() != mine.len() {
            let known: std::collections::HashSet<&str> =
                mine.iter().map(|(n, _)| n.as_str()).collect();
            let mut extra: Vec<&str> = state
                .keys()
                .map(String::as_str)
                .filter(|k| !known.contains(k))
                .collect();
            extra.sort_unstable();
            return Err(Error::format(
                source,
                format!("unexpected tensors {}", extra.join(", ")),
            ));
        }
        for (name, t) in &mine {
            t.set_data(&state[name].to_device(&t.device()));
        }
        Ok(())
    }

    /// Makes every parameter and buffer of this module equal to `src`'s (same names and shapes):
    /// with a freshly built module of the same shape, a deep copy that shares no storage.
    #[track_caller]
    fn copy_from(&self, src: &dyn Module) {
        self.ema_from(src, 0.0);
    }

    /// teacher ← τ·teacher + (1 − τ)·student for every parameter, outside the graph (the
    /// momentum update of BYOL, MoCo and DINO); buffers are copied. τ = 0 copies.
    #[track_caller]
    fn ema_from(&self, student: &dyn Module, tau: f64) {
        let (mine, theirs) = (self.state_dict(), student.state_dict());
        assert_eq!(
            mine.len(),
            theirs.len(),
            "ema_from: modules differ ({} and {} tensors)",
            mine.len(),
            theirs.len()
        );
        let params = self.named_parameters().len();
        crate::no_grad(|| {
            for (i, ((a, t), (b, s))) in mine.iter().zip(&theirs).enumerate() {
                assert_eq!(a, b, "ema_from: tensor names differ");
                let s = s.to_device(&t.device());
                if tau == 0.0 || i >= params {
                    t.set_data(&s.mul_scalar(1.0));
                } else {
                    t.set_data(&(&t.mul_scalar(tau) + &s.mul_scalar(1.0 - tau)));
                }
            }
        });
    }
}

/// Prefixes child names: `prefixed("blocks.0", v)` turns `attn.qkv.weight` into
/// `blocks.0.attn.qkv.weight`.
pub fn prefixed(prefix: &str, items: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    items
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}
