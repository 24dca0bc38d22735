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

/// Attention from one sequence to another — a decoder reading its encoder's output (the
/// Transformer's encoder–decoder attention, BART's cross-attention): queries from `x`, keys and
/// values from `memory`.
pub struct CrossAttention {
    pub q: Linear,
    /// Keys and values in one projection (`2·dim` outputs: keys first).
    pub kv: Linear,
    pub proj: Linear,
    pub heads: usize,
}

impl CrossAttention {
    #[track_caller]
    pub fn new(init: &mut Init, dim: usize, heads: usize) -> CrossAttention {
        assert!(
            heads > 0 && dim.is_multiple_of(heads),
            "CrossAttention: dim {dim} is not divisible by {heads} heads"
        );
        CrossAttention {
            q: Linear::new(init, dim, dim, true),
            kv: Linear::new(init, dim, 2 * dim, true),
            proj: Linear::new(init, dim, dim, true),
            heads,
        }
    }

    /// `x` `(B, Tq, C)` attends over `memory` `(B, Tk, C)` → `(B, Tq, C)`; `key_padding_mask`
    /// `(B, Tk)` hides the memory positions where it is non-zero.
    #[track_caller]
    pub fn forward(
        &self,
        x: &Tensor,
        memory: &Tensor,
        key_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let (xs, ms) = (x.shape(), memory.shape());
        assert!(
            x.rank() == 3 && memory.rank() == 3 && xs[0] == ms[0] && xs[2] == ms[2],
            "CrossAttention: x (B, Tq, C) and memory (B, Tk, C), got {xs:?} and {ms:?}"
        );
        let (b, tq, tk, c) = (xs[0], xs[1], ms[1], xs[2]);
        let (h, d) = (self.heads, c / self.heads);
        // (B, Tq, C) → (B, H, Tq, D)
        let q = self
            .q
            .forward(x)
            .reshape_to(&[b, tq, h, d])
            .permute(&[0, 2, 1, 3]);
        // (B, Tk, 2C) → k, v as (B, H, Tk, D)
        let kv = self.kv.forward(memory).reshape_to(&[b, tk, 2, h, d]);
        let part = |i: usize| {
            kv.narrow(2, i, 1)
                .reshape_to(&[b, tk, h, d])
                .permute(&[0, 2, 1, 3])
        };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &part(0),
            &part(1),
            false,
            key_padding_mask,
            None,
        ); // (B, H, Tq, D)
        self.proj
            .forward(&y.permute(&[0, 2, 1, 3]).reshape_to(&[b, tq, c]))
    }
}

impl Module for CrossAttention {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("q".into(), &self.q),
            ("kv".into(), &self.kv),
            ("proj".into(), &self.proj),
        ]
    }
}
