//! The pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

use super::{Init, LayerNorm, Mlp, Module, MultiHeadAttention};
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
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("norm1".into(), &self.norm1),
            ("attn".into(), &self.attn),
            ("norm2".into(), &self.norm2),
            ("mlp".into(), &self.mlp),
        ]
    }
}
