//! BERT (Devlin et al., 2019): a bidirectional Transformer encoder pre-trained by masked language
//! modelling (MLM), written as Hugging Face's `BertModel` / `BertForMaskedLM`:
//!
//! ```text
//! h₀ = LN(W_word[x] + W_pos[0..T] + W_type[s])                      (LN ε = 1e-12)
//! a  = LN(hₗ₋₁ + Attn(hₗ₋₁)),  hₗ = LN(a + W₂ GELU(W₁ a))          (post-LN blocks, erf GELU)
//! p(x_t | x_masked) = softmax(LN(GELU(W h_L)) W_wordᵀ + b)          (MLM head, tied decoder)
//! ```
//!
//! Padding is hidden from attention by a key mask built from each row's length. The parameter
//! names are Hugging Face's except that one packed `qkv` projection stands for its `query`,
//! `key` and `value` (stacked in that order when its weights are loaded).

use crate::simclr::nt_xent;
use rand::Rng;
use selfsup_engine::nn::{Dropout, Embedding, Init, LayerNorm, Linear, Module, MultiHeadAttention};
use selfsup_engine::{SeededRng, Tensor};
use serde::{Deserialize, Serialize};

/// Shape of a BERT encoder (Hugging Face's `config.json` fields under our names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    pub vocab: usize,
    /// Positions the position embedding covers (`max_position_embeddings`).
    pub max_positions: usize,
    /// Segment ids (`type_vocab_size`).
    pub type_vocab: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Width of each block's feed-forward layer (`intermediate_size`).
    pub intermediate: usize,
    pub dropout: f64,
    /// Layer-norm ε (`layer_norm_eps`, 1e-12 in BERT).
    pub ln_eps: f64,
}

/// Token, position and segment embeddings, summed and normalised.
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub norm: LayerNorm,
    pub dropout: Dropout,
}

/// One post-LN block.
pub struct BertLayer {
    pub attention: MultiHeadAttention,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
    pub drop_attn: Dropout,
    pub drop_out: Dropout,
}

fn layer_norm(init: &Init, c: &BertConfig) -> LayerNorm {
    let mut ln = LayerNorm::new(init, c.dim);
    ln.eps = c.ln_eps;
    ln
}

impl BertLayer {
    pub(crate) fn new(init: &mut Init, c: &BertConfig) -> BertLayer {
        BertLayer {
            attention: MultiHeadAttention::new(init, c.dim, c.heads, false),
            attention_norm: layer_norm(init, c),
            intermediate: Linear::new(init, c.dim, c.intermediate, true),
            output: Linear::new(init, c.intermediate, c.dim, true),
            output_norm: layer_norm(init, c),
            drop_attn: Dropout::new(init, c.dropout),
            drop_out: Dropout::new(init, c.dropout),
        }
    }

    /// `(B, T, C)` → `(B, T, C)`; `pad` `(B, T)` is 1 at padding keys.
    pub(crate) fn forward(&self, x: &Tensor, pad: &Tensor) -> Tensor {
        let a = self
            .drop_attn
            .forward(&self.attention.forward(x, Some(pad)));
        let x = self.attention_norm.forward(&(x + &a));
        let f = self.output.forward(&self.intermediate.forward(&x).gelu());
        self.output_norm.forward(&(&x + &self.drop_out.forward(&f)))
    }
}

impl Module for BertLayer {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("attention".into(), &self.attention),
            ("attention.output.LayerNorm".into(), &self.attention_norm),
            ("intermediate.dense".into(), &self.intermediate),
            ("output.dense".into(), &self.output),
            ("output.LayerNorm".into(), &self.output_norm),
            ("drop_attn".into(), &self.drop_attn),
            ("drop_out".into(), &self.drop_out),
        ]
    }
}

/// The encoder: embeddings and `depth` post-LN blocks.
pub struct Bert {
    pub config: BertConfig,
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
}

/// A batch of token rows, `(B, T)` row-major, padded after each row's `lens[b]` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub ids: Vec<u32>,
    /// Segment of each token (0 for single sentences).
    pub types: Vec<u32>,
    pub lens: Vec<usize>,
    pub t: usize,
}

impl Batch {
    /// `rows` padded with `pad` to the longest, all in segment 0.
    pub fn pad(rows: &[Vec<u32>], pad: u32) -> Batch {
        let t = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = vec![pad; rows.len() * t];
        for (i, r) in rows.iter().enumerate() {
            ids[i * t..i * t + r.len()].copy_from_slice(r);
        }
        Batch {
            types: vec![0; ids.len()],
            ids,
            lens: rows.iter().map(Vec::len).collect(),
            t,
        }
    }

    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// 1 where a position is padding, `(B, T)` on the host.
    pub fn padding(&self) -> Vec<f64> {
        (0..self.ids.len())
            .map(|i| {
                if i % self.t >= self.lens[i / self.t] {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// 1 on tokens and 0 on padding (HF's `attention_mask`), `(B, T)` on the host.
    pub fn attention_mask(&self) -> Vec<f64> {
        self.padding().iter().map(|p| 1.0 - p).collect()
    }
}

/// The mean of `hidden` `(B, T, D)` over each row's tokens, padding excluded: `(B, D)` (the
/// sentence embedding of sentence-transformers).
pub fn mean_pool(hidden: &Tensor, batch: &Batch) -> Tensor {
    let m = hidden.new_from(&batch.attention_mask(), &[batch.rows(), batch.t, 1]);
    let count = m.sum(1, false).clamp(1e-9, f64::INFINITY); // (B, 1)
    (hidden * &m).sum(1, false).div(&count)
}

impl Bert {
    pub fn new(init: &mut Init, config: BertConfig) -> Bert {
        let c = &config;
        let embeddings = BertEmbeddings {
            word_embeddings: Embedding::new(init, c.vocab, c.dim),
            position_embeddings: Embedding::new(init, c.max_positions, c.dim),
            token_type_embeddings: Embedding::new(init, c.type_vocab, c.dim),
            norm: layer_norm(init, c),
            dropout: Dropout::new(init, c.dropout),
        };
        let layers = (0..c.depth).map(|_| BertLayer::new(init, c)).collect();
        Bert {
            embeddings,
            layers,
            config,
        }
    }

    /// The last hidden states `(B, T, dim)` of `batch` (`last_hidden_state`).
    #[track_caller]
    pub fn forward(&self, batch: &Batch) -> Tensor {
        let (b, t, d) = (batch.rows(), batch.t, self.config.dim);
        assert!(
            t <= self.config.max_positions,
            "BERT: {t} positions, the model has {}",
            self.config.max_positions
        );
        let e = &self.embeddings;
        let pos: Vec<u32> = (0..t as u32).collect();
        let x = &(&e.word_embeddings.forward(&batch.ids).reshape_to(&[b, t, d])
            + &e.token_type_embeddings
                .forward(&batch.types)
                .reshape_to(&[b, t, d]))
            + &e.position_embeddings.forward(&pos);
        let mut x = e.dropout.forward(&e.norm.forward(&x));
        let pad = x.new_from(&batch.padding(), &[b, t]);
        for layer in &self.layers {
            x = layer.forward(&x, &pad);
        }
        x
    }

    /// Positions every dropout layer at training call `step` (a resumed run draws the same
    /// masks).
    pub fn seek_dropout(&self, step: u64) {
        self.embeddings.dropout.seek(step);
        for l in &self.layers {
            l.drop_attn.seek(step);
            l.drop_out.seek(step);
        }
    }
}

impl Module for BertEmbeddings {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("word_embeddings".into(), &self.word_embeddings),
            ("position_embeddings".into(), &self.position_embeddings),
            ("token_type_embeddings".into(), &self.token_type_embeddings),
            ("LayerNorm".into(), &self.norm),
            ("dropout".into(), &self.dropout),
        ]
    }
}

impl Module for Bert {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c: Vec<(String, &dyn Module)> = vec![("embeddings".into(), &self.embeddings)];
        for (i, l) in self.layers.iter().enumerate() {
            c.push((format!("encoder.layer.{i}"), l));
        }
        c
    }
}

/// BERT's MLM head (`cls.predictions`): dense → GELU → LN, then the word embeddings as the
/// decoder, with a bias of its own.
pub struct MlmHead {
    pub dense: Linear,
    pub norm: LayerNorm,
    pub bias: Tensor,
}

impl MlmHead {
    pub fn new(init: &mut Init, c: &BertConfig) -> MlmHead {
        MlmHead {
            dense: Linear::new(init, c.dim, c.dim, true),
            norm: layer_norm(init, c),
            bias: init.zeros(&[c.vocab]).requires_grad_(true),
        }
    }

    /// Vocabulary logits `(N, vocab)` of hidden states `(N, dim)`, decoded by `word` `(vocab, dim)`.
    pub fn forward(&self, h: &Tensor, word: &Tensor) -> Tensor {
        &self
            .norm
            .forward(&self.dense.forward(h).gelu())
            .matmul_nt(word)
            + &self.bias
    }
}

impl Module for MlmHead {
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("bias".into(), self.bias.clone())]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("transform.dense".into(), &self.dense),
            ("transform.LayerNorm".into(), &self.norm),
        ]
    }
}

/// BERT with its MLM head, named as Hugging Face's `BertForMaskedLM` (`bert.*`,
/// `cls.predictions.*`).
pub struct BertMlm {
    pub bert: Bert,
    pub head: MlmHead,
}

impl BertMlm {
    pub fn new(init: &mut Init, config: BertConfig) -> BertMlm {
        let head = MlmHead::new(init, &config);
        BertMlm {
            bert: Bert::new(init, config),
            head,
        }
    }

    /// Vocabulary logits `(K, vocab)` at the `K` positions whose target is not [`IGNORE`]
    /// (only those are decoded: the vocabulary product is most of the cost), in row-major order.
    pub fn chosen_logits(&self, batch: &Batch, targets: &[i64]) -> Tensor {
        self.decode_chosen(&self.bert.forward(batch), targets)
    }

    /// [`Self::chosen_logits`] from the encoder's states `h` `(B, T, D)`.
    fn decode_chosen(&self, h: &Tensor, targets: &[i64]) -> Tensor {
        let rows: Vec<u32> = (0..targets.len() as u32)
            .filter(|&i| targets[i as usize] != IGNORE)
            .collect();
        let d = self.bert.config.dim;
        let chosen = h.reshape_to(&[targets.len(), d]).index_select(0, &rows);
        self.head
            .forward(&chosen, &self.bert.embeddings.word_embeddings.weight)
    }

    /// Mean cross-entropy over the chosen positions (BERT's MLM loss).
    pub fn loss(&self, batch: &Batch, targets: &[i64]) -> Tensor {
        self.loss_of(&self.bert.forward(batch), targets)
    }

    /// [`Self::loss`] from the encoder's states `h` `(B, T, D)`.
    fn loss_of(&self, h: &Tensor, targets: &[i64]) -> Tensor {
        let chosen: Vec<i64> = targets.iter().copied().filter(|&t| t != IGNORE).collect();
        self.decode_chosen(h, targets)
            .cross_entropy(&chosen, IGNORE, 0.0)
    }

    /// The MLM loss plus `weight` × NT-Xent at temperature `tau` between the mean-pooled states
    /// of rows `i` and `B/2 + i` (DeCLUTR's objective: passages from nearby in one document are
    /// positives, the batch's other rows negatives); `weight` 0 is [`Self::loss`].
    pub fn loss_with_contrast(
        &self,
        batch: &Batch,
        targets: &[i64],
        weight: f64,
        tau: f64,
    ) -> Tensor {
        let h = self.bert.forward(batch); // (B, T, D)
        let mlm = self.loss_of(&h, targets);
        if weight == 0.0 {
            return mlm;
        }
        let (z, p) = (mean_pool(&h, batch), batch.rows() / 2); // (2P, D)
        &mlm + &nt_xent(&z.narrow(0, 0, p), &z.narrow(0, p, p), tau).mul_scalar(weight)
    }
}

impl Module for BertMlm {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("bert".into(), &self.bert),
            ("cls.predictions".into(), &self.head),
        ]
    }
}

/// The ignore index of MLM targets: positions that were not chosen.
pub const IGNORE: i64 = -100;

/// BERT's masking of one batch: each real token that is not special is chosen with probability
/// `rate`; a chosen token becomes `mask` 80 % of the time, a random word 10 % and stays 10 %.
/// Returns the corrupted ids and the targets (the original id where chosen, else [`IGNORE`]).
/// Random words are drawn from `words` (the vocabulary without special tokens).
pub fn mlm_mask(
    batch: &Batch,
    rate: f64,
    mask: u32,
    words: std::ops::Range<u32>,
    special: &[u32],
    rng: &mut SeededRng,
) -> (Vec<u32>, Vec<i64>) {
    let mut ids = batch.ids.clone();
    let mut targets = vec![IGNORE; ids.len()];
    for (i, id) in ids.iter_mut().enumerate() {
        let real = i % batch.t < batch.lens[i / batch.t];
        if !real || special.contains(id) || rng.random::<f64>() >= rate {
            continue;
        }
        targets[i] = *id as i64;
        let r: f64 = rng.random();
        if r < 0.8 {
            *id = mask;
        } else if r < 0.9 {
            *id = rng.random_range(words.clone());
        }
    }
    (ids, targets)
}

/// The name a parameter of ours has in a Hugging Face BERT checkpoint (without its `bert.`
/// prefix), or the three names whose rows stack into it (`qkv` = query; key; value).
pub fn hf_names(ours: &str) -> Vec<String> {
    if let Some(at) = ours.find("attention.qkv.") {
        let (layer, kind) = (&ours[..at], &ours[at + "attention.qkv.".len()..]);
        return ["query", "key", "value"]
            .map(|p| format!("{layer}attention.self.{p}.{kind}"))
            .to_vec();
    }
    vec![ours.replace("attention.proj.", "attention.output.dense.")]
}

/// `model`'s parameters from Hugging Face BERT tensors (`BertModel` names, with or without the
/// `bert.` prefix of `BertForMaskedLM`). The result is keyed by our names, ready for
/// `load_state_dict`; a missing tensor is named.
pub fn from_hf(
    model: &dyn Module,
    hf: &std::collections::HashMap<String, Tensor>,
    source: &str,
) -> Result<std::collections::HashMap<String, Tensor>, String> {
    let get = |name: &str| {
        hf.get(name)
            .or_else(|| hf.get(&format!("bert.{name}")))
            .ok_or_else(|| format!("{source}: no tensor {name}"))
    };
    model
        .state_dict()
        .into_iter()
        .map(|(ours, _)| {
            let parts = hf_names(&ours)
                .iter()
                .map(|n| get(n))
                .collect::<Result<Vec<&Tensor>, String>>()?;
            let t = if parts.len() == 1 {
                parts[0].clone()
            } else {
                Tensor::cat(&parts, 0)
            };
            Ok((ours, t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hf_names_follow_transformers() {
        assert_eq!(
            hf_names("encoder.layer.3.attention.qkv.weight"),
            [
                "encoder.layer.3.attention.self.query.weight",
                "encoder.layer.3.attention.self.key.weight",
                "encoder.layer.3.attention.self.value.weight"
            ]
        );
        assert_eq!(
            hf_names("encoder.layer.0.attention.proj.bias"),
            ["encoder.layer.0.attention.output.dense.bias"]
        );
        assert_eq!(
            hf_names("encoder.layer.0.output.LayerNorm.weight"),
            ["encoder.layer.0.output.LayerNorm.weight"]
        );
    }

    #[test]
    fn masking_follows_bert_80_10_10_and_skips_padding_and_specials() {
        // 200 rows of 50 tokens, the last 10 of each row padding; id 1 is special.
        let rows: Vec<Vec<u32>> = (0..200)
            .map(|r| {
                (0..40)
                    .map(|i| if i == 0 { 1 } else { 10 + (r + i) % 90 })
                    .collect()
            })
            .collect();
        let padded = Batch::pad(
            &rows
                .iter()
                .map(|r| [r.as_slice(), &[0; 10]].concat())
                .collect::<Vec<_>>(),
            0,
        );
        let batch = Batch {
            lens: vec![40; 200],
            ..padded
        };
        let mut rng = SeededRng::seed_from_u64(9);
        let (ids, targets) = mlm_mask(&batch, 0.15, 3, 10..100, &[1], &mut rng);
        let (mut chosen, mut masked, mut kept) = (0, 0, 0);
        for i in 0..ids.len() {
            let pos = i % batch.t;
            if pos >= 40 || pos == 0 {
                assert_eq!(targets[i], IGNORE, "padding or special chosen at {i}");
                assert_eq!(ids[i], batch.ids[i]);
                continue;
            }
            if targets[i] == IGNORE {
                assert_eq!(ids[i], batch.ids[i]);
                continue;
            }
            chosen += 1;
            assert_eq!(targets[i], batch.ids[i] as i64);
            if ids[i] == 3 {
                masked += 1;
            } else if ids[i] == batch.ids[i] {
                kept += 1;
            }
        }
        let real = 200.0 * 39.0;
        let rate = chosen as f64 / real;
        assert!((rate - 0.15).abs() < 0.015, "chosen {rate}");
        let m = masked as f64 / chosen as f64;
        let k = kept as f64 / chosen as f64;
        assert!((m - 0.8).abs() < 0.03, "masked {m}");
        // A random word equals the original about 1 % of the time.
        assert!((k - 0.1).abs() < 0.03, "kept {k}");
    }
}
