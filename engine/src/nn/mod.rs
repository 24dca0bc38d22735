//! Neural-network building blocks with PyTorch-style named parameters.
//!
//! A [`Module`] lists its parameters and buffers under dotted names (`blocks.0.attn.qkv.weight`),
//! so checkpoints read like PyTorch `state_dict`s and load into either. Each module has its own
//! `forward` with the signature its inputs need; the trait covers only what generic code (an
//! optimizer, a checkpoint, a freeze) must see.

mod attention;
mod init;
mod layers;
mod transformer;

pub use attention::MultiHeadAttention;
pub use init::{trunc_normal, Init};
pub use layers::{BatchNorm1d, Dropout, Embedding, LayerNorm, Linear, Mlp};
pub use transformer::Block;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Something with named parameters and buffers and a train/eval mode.
pub trait Module {
    /// Trainable tensors under their dotted names, in a stable order.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Non-trainable state under dotted names (BatchNorm's running statistics).
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Switches dropout and batch norm between training and evaluation behaviour.
    fn set_training(&mut self, _training: bool) {}

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
    /// module must be present with its exact shape; nothing is changed unless all are.
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
        for (name, t) in &mine {
            t.set_data(&state[name].to_device(&t.device()));
        }
        Ok(())
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
