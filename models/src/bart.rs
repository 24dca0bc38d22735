//! BART (Lewis et al., 2020): a denoising autoencoder for sequences. A bidirectional encoder
//! reads a corrupted text (see [`crate::noising`]); a causal decoder, attending to the encoder's
//! output, reconstructs the original token by token:
//!
//! ```text
//! m = Encoder(noise(x))                                   (post-LN blocks, as BERT's)
//! p(x_t | x_<t, m) = softmax(Decoder(x_<t, m) W_tokᵀ + b)  (causal self-attention, then
//!                                                           cross-attention to m, then MLP)
//! L = −(1/T) Σ_t log p(x_t | x_<t, m)                     (teacher forcing)
//! ```
//!
//! Encoder and decoder share the token embedding, which is also the output layer (tied), with a
//! bias of its own (BART's `final_logits_bias`). Each side adds learned positions and normalises
//! its embeddings (`layernorm_embedding`).

use crate::bert::{Batch, BertConfig, BertLayer};
use selfsup_engine::nn::{
    CrossAttention, Dropout, Embedding, Init, LayerNorm, Linear, Module, MultiHeadAttention,
};
use selfsup_engine::{no_grad, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BartConfig {
    pub vocab: usize,
    /// Most positions of either sequence.
    pub max_positions: usize,
    pub dim: usize,
    pub encoder_depth: usize,
    pub decoder_depth: usize,
    pub heads: usize,
    /// Width of each block's feed-forward layer.
    pub ffn: usize,
    pub dropout: f64,
}

impl BartConfig {
    /// The encoder blocks' shape, which is BERT's post-LN block (LN ε 1e-5 as BART's).
    fn block(&self) -> BertConfig {
        BertConfig {
            vocab: self.vocab,
            max_positions: self.max_positions,
            type_vocab: 1,
            dim: self.dim,
            depth: self.encoder_depth,
            heads: self.heads,
            intermediate: self.ffn,
            dropout: self.dropout,
            ln_eps: 1e-5,
        }
    }
}

/// A post-LN decoder block: causal self-attention, cross-attention to the encoder's output, MLP.
pub struct DecoderLayer {
    pub self_attn: MultiHeadAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub cross_attn: CrossAttention,
    pub cross_attn_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl DecoderLayer {
    fn new(init: &mut Init, c: &BartConfig) -> DecoderLayer {
        DecoderLayer {
            self_attn: MultiHeadAttention::new(init, c.dim, c.heads, true),
            self_attn_layer_norm: LayerNorm::new(init, c.dim),
            cross_attn: CrossAttention::new(init, c.dim, c.heads),
            cross_attn_layer_norm: LayerNorm::new(init, c.dim),
            fc1: Linear::new(init, c.dim, c.ffn, true),
            fc2: Linear::new(init, c.ffn, c.dim, true),
            final_layer_norm: LayerNorm::new(init, c.dim),
            dropout: Dropout::new(init, c.dropout),
        }
    }

    /// `x` `(B, Tt, C)` over `memory` `(B, Ts, C)` whose padding `src_pad` `(B, Ts)` marks.
    /// The causal mask alone keeps real target tokens from the padding after them.
    fn forward(&self, x: &Tensor, memory: &Tensor, src_pad: &Tensor) -> Tensor {
        let d = &self.dropout;
        let x = self
            .self_attn_layer_norm
            .forward(&(x + &d.forward(&self.self_attn.forward(x, None))));
        let x = self
            .cross_attn_layer_norm
            .forward(&(&x + &d.forward(&self.cross_attn.forward(&x, memory, Some(src_pad)))));
        let f = self.fc2.forward(&self.fc1.forward(&x).gelu());
        self.final_layer_norm.forward(&(&x + &d.forward(&f)))
    }
}

impl Module for DecoderLayer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("self_attn".into(), &self.self_attn),
            ("self_attn_layer_norm".into(), &self.self_attn_layer_norm),
            ("cross_attn".into(), &self.cross_attn),
            ("cross_attn_layer_norm".into(), &self.cross_attn_layer_norm),
            ("fc1".into(), &self.fc1),
            ("fc2".into(), &self.fc2),
            ("final_layer_norm".into(), &self.final_layer_norm),
            ("dropout".into(), &self.dropout),
        ]
    }
}

pub struct Bart {
    pub config: BartConfig,
    pub embed_tokens: Embedding,
    pub embed_positions: Embedding,
    pub encoder_layernorm_embedding: LayerNorm,
    pub decoder_layernorm_embedding: LayerNorm,
    pub encoder_layers: Vec<BertLayer>,
    pub decoder_layers: Vec<DecoderLayer>,
    pub final_logits_bias: Tensor,
    pub dropout: Dropout,
}

impl Bart {
    pub fn new(init: &mut Init, config: BartConfig) -> Bart {
        let c = &config;
        Bart {
            embed_tokens: Embedding::new(init, c.vocab, c.dim),
            embed_positions: Embedding::new(init, c.max_positions, c.dim),
            encoder_layernorm_embedding: LayerNorm::new(init, c.dim),
            decoder_layernorm_embedding: LayerNorm::new(init, c.dim),
            encoder_layers: (0..c.encoder_depth)
                .map(|_| BertLayer::new(init, &c.block()))
                .collect(),
            decoder_layers: (0..c.decoder_depth)
                .map(|_| DecoderLayer::new(init, c))
                .collect(),
            final_logits_bias: init.zeros(&[c.vocab]).requires_grad_(true),
            dropout: Dropout::new(init, c.dropout),
            config,
        }
    }

    /// Token plus position embeddings of `batch`, normalised: `(B, T, C)`.
    #[track_caller]
    fn embed(&self, batch: &Batch, norm: &LayerNorm) -> Tensor {
        let (b, t, c) = (batch.rows(), batch.t, self.config.dim);
        assert!(
            t <= self.config.max_positions,
            "BART: {t} positions, the model has {}",
            self.config.max_positions
        );
        let pos: Vec<u32> = (0..t as u32).collect();
        let x = &self.embed_tokens.forward(&batch.ids).reshape_to(&[b, t, c])
            + &self.embed_positions.forward(&pos);
        self.dropout.forward(&norm.forward(&x))
    }

    /// The encoder's output `(B, Ts, C)` and its padding mask `(B, Ts)`.
    pub fn encode(&self, src: &Batch) -> (Tensor, Tensor) {
        let mut x = self.embed(src, &self.encoder_layernorm_embedding);
        let pad = x.new_from(&src.padding(), &[src.rows(), src.t]);
        for layer in &self.encoder_layers {
            x = layer.forward(&x, &pad);
        }
        (x, pad)
    }

    /// Next-token logits `(B·Tt, vocab)` of the decoder fed `tgt` (teacher forcing) over
    /// `memory`.
    pub fn decode(&self, tgt: &Batch, memory: &Tensor, src_pad: &Tensor) -> Tensor {
        let mut x = self.embed(tgt, &self.decoder_layernorm_embedding);
        for layer in &self.decoder_layers {
            x = layer.forward(&x, memory, src_pad);
        }
        let rows = tgt.rows() * tgt.t;
        &x.reshape_to(&[rows, self.config.dim])
            .matmul_nt(&self.embed_tokens.weight)
            + &self.final_logits_bias
    }

    /// Mean cross-entropy of `targets` (row-major `(B, Tt)`, −100 where ignored) given the
    /// corrupted `src` and the decoder input `tgt` (the targets shifted right).
    pub fn loss(&self, src: &Batch, tgt: &Batch, targets: &[i64]) -> Tensor {
        let (memory, pad) = self.encode(src);
        self.decode(tgt, &memory, &pad)
            .cross_entropy(targets, -100, 0.0)
    }

    /// Greedy decoding: for each source row, tokens after `bos` until `eos` or `max_len`
    /// (the decoder re-reads its prefix each step).
    pub fn greedy(&self, src: &Batch, bos: u32, eos: u32, max_len: usize) -> Vec<Vec<u32>> {
        no_grad(|| {
            let (memory, pad) = self.encode(src);
            let b = src.rows();
            let mut out: Vec<Vec<u32>> = vec![vec![bos]; b];
            let mut done = vec![false; b];
            for _ in 0..max_len.min(self.config.max_positions - 1) {
                let tgt = Batch::pad(&out, eos);
                let t = tgt.t;
                let logits = self.decode(&tgt, &memory, &pad); // (B·T, V)
                let next = logits.argmax(1, false).to_vec();
                for (i, row) in out.iter_mut().enumerate() {
                    if !done[i] {
                        let tok = next[i * t + row.len() - 1] as u32;
                        row.push(tok);
                        done[i] = tok == eos;
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
            }
            out.into_iter()
                .map(|r| r[1..].iter().copied().take_while(|&t| t != eos).collect())
                .collect()
        })
    }

    pub fn seek_dropout(&self, step: u64) {
        self.dropout.seek(step);
        for l in &self.decoder_layers {
            l.dropout.seek(step);
        }
        for l in &self.encoder_layers {
            l.drop_attn.seek(step);
            l.drop_out.seek(step);
        }
    }
}

impl Module for Bart {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("final_logits_bias".into(), self.final_logits_bias.clone())]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c: Vec<(String, &dyn Module)> = vec![
            ("embed_tokens".into(), &self.embed_tokens),
            ("embed_positions".into(), &self.embed_positions),
            (
                "encoder.layernorm_embedding".into(),
                &self.encoder_layernorm_embedding,
            ),
            (
                "decoder.layernorm_embedding".into(),
                &self.decoder_layernorm_embedding,
            ),
            ("dropout".into(), &self.dropout),
        ];
        for (i, l) in self.encoder_layers.iter().enumerate() {
            c.push((format!("encoder.layers.{i}"), l));
        }
        for (i, l) in self.decoder_layers.iter().enumerate() {
            c.push((format!("decoder.layers.{i}"), l));
        }
        c
    }
}
