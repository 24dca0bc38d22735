//! The pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

use super::{prefixed, Init, LayerNorm, Mlp, Module, MultiHeadAttention};
use crate::tensor::Tensor;

pub struct Block {
    pub norm1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn new(init: &mut Init, dim: usize, heads: usize, mlp_ratio: usize, causal: bool) -> Block {
        Block {
            norm1: LayerNorm::new(init, dim),
            attn: MultiHeadAttention::new(init, dim, heads, causal),
            norm2: LayerNorm::new(init, dim),
            mlp: Mlp::new(init, dim, dim * mlp_ratio),
        }
    }

    pub fn forward(&self, x: &Tensor, key_padding_mask: Option<&Tensor>) -> Tensor {
        let x = x + &self.attn.forward(&self.norm1.forward(x), key_padding_mask);
        &x + &self.mlp.forward(&self.norm2.forward(&x))
    }
}

impl Module for Block {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("norm1", self.norm1.named_parameters());
        v.extend(prefixed("attn", self.attn.named_parameters()));
        v.extend(prefixed("norm2", self.norm2.named_parameters()));
        v.extend(prefixed("mlp", self.mlp.named_parameters()));
        v
    }
}
