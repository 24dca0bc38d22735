//! Multi-head self-attention on the fused attention op, read straight from the packed qkv projection.

use super::{Init, Linear, Module};
use crate::tensor::Tensor;

/// Self-attention with `heads` heads: one `qkv` projection, fused attention, output `proj`
/// (timm's layout and names).
pub struct MultiHeadAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub heads: usize,
    pub causal: bool,
}

impl MultiHeadAttention {
    #[track_caller]
    pub fn new(init: &mut Init, dim: usize, heads: usize, causal: bool) -> MultiHeadAttention {
        assert!(
            heads > 0 && dim.is_multiple_of(heads),
            "MultiHeadAttention: dim {dim} is not divisible by {heads} heads"
        );
        MultiHeadAttention {
            qkv: Linear::new(init, dim, 3 * dim, true),
            proj: Linear::new(init, dim, dim, true),
            heads,
            causal,
        }
    }

    /// `(B, T, C)` → `(B, T, C)`; `key_padding_mask` `(B, T)` hides keys where non-zero.
    #[track_caller]
    pub fn forward(&self, x: &Tensor, key_padding_mask: Option<&Tensor>) -> Tensor {
        assert_eq!(
            x.rank(),
            3,
            "MultiHeadAttention: input must be (B, T, C), got {:?}",
            x.shape()
        );
        let qkv = self.qkv.forward(x);
        self.proj.forward(&Tensor::multi_head_attention(
            &qkv,
            self.heads,
            self.causal,
            key_padding_mask,
        ))
    }
}

impl Module for MultiHeadAttention {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("qkv".into(), &self.qkv), ("proj".into(), &self.proj)]
    }
}
