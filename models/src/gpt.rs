//! GPT (Radford et al., 2018/2019) as nanoGPT's `model.py` writes it: next-token prediction
//!
//! ```text
//! h₀ = W_te[x] + W_pe[0..T]
//! hₗ = hₗ₋₁ + Attn_causal(LN(hₗ₋₁)),  hₗ += MLP(LN(hₗ))       (pre-LN blocks, MLP ×4, GELU)
//! p(x_{t+1} | x_{≤t}) = softmax(LN(h_L) W_teᵀ)                 (LM head tied to the embedding)
//! L = −(1/BT) Σ log p(x_{t+1} | x_{≤t})
//! ```
//!
//! Initialisation is nanoGPT's: weights N(0, 0.02) (truncated at 2σ here, as every linear in the
//! engine), biases 0, and the projections that write into the residual stream (`attn.proj`,
//! `mlp.fc2`) scaled by 1/√(2·depth) so the stream's variance does not grow with depth. Dropout
//! acts on the embeddings and on each residual branch; attention weights are not dropped (the fused
//! kernel never forms them), which nanoGPT's CPU configuration does not use either (dropout 0).
//!
//! Generation keeps a KV cache: each block's keys and values of the tokens seen so far, so a new
//! token costs one position instead of the whole window.

use rand::{Rng, SeedableRng};
use selfsup_engine::nn::{Dropout, Embedding, Init, LayerNorm, Mlp, Module, MultiHeadAttention};
use selfsup_engine::{no_grad, SeededRng, Tensor};
use serde::{Deserialize, Serialize};

/// Shape of a GPT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab: usize,
    /// Context window (block size): the most positions the model attends over.
    pub ctx: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub dropout: f64,
}

/// A pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x)).
pub struct GptBlock {
    pub ln_1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
    pub drop_attn: Dropout,
    pub drop_mlp: Dropout,
}

impl GptBlock {
    fn new(init: &mut Init, c: &GptConfig) -> GptBlock {
        let mut attn = MultiHeadAttention::new(init, c.dim, c.heads, true);
        let mut mlp = Mlp::new(init, c.dim, 4 * c.dim);
        let std = 0.02 / (2.0 * c.depth as f64).sqrt();
        attn.proj.weight = init.trunc_normal(&[c.dim, c.dim], std).requires_grad_(true);
        mlp.fc2.weight = init
            .trunc_normal(&[c.dim, 4 * c.dim], std)
            .requires_grad_(true);
        GptBlock {
            ln_1: LayerNorm::new(init, c.dim),
            attn,
            ln_2: LayerNorm::new(init, c.dim),
            mlp,
            drop_attn: Dropout::new(init, c.dropout),
            drop_mlp: Dropout::new(init, c.dropout),
        }
    }

    /// `(B, T, C)` → `(B, T, C)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + &self
            .drop_attn
            .forward(&self.attn.forward(&self.ln_1.forward(x), None));
        &x + &self
            .drop_mlp
            .forward(&self.mlp.forward(&self.ln_2.forward(&x)))
    }

    /// The same for `(1, T, C)` new positions after those whose keys and values `cache` holds
    /// (`(1, H, T₀, D)` each), which it then extends.
    fn forward_cached(&self, x: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Tensor {
        let (t, c) = (x.shape()[1], x.shape()[2]);
        let h = self.attn.heads;
        // (1, T, 3C) → q, k, v as (1, H, T, D)
        let qkv = self
            .attn
            .qkv
            .forward(&self.ln_1.forward(x))
            .reshape_to(&[1, t, 3, h, c / h]);
        let part = |i: usize| {
            qkv.narrow(2, i, 1)
                .reshape_to(&[1, t, h, c / h])
                .permute(&[0, 2, 1, 3])
        };
        let (q, mut k, mut v) = (part(0), part(1), part(2));
        // A new token may see every cached one; only a first chunk needs the causal mask (with a
        // non-empty cache it would be aligned wrongly, so chunks after the first are single tokens).
        let causal = cache.is_none();
        assert!(
            causal || t == 1,
            "GPT: after the first chunk, feed the cache one token at a time"
        );
        if let Some((k0, v0)) = cache.as_ref() {
            k = Tensor::cat(&[k0, &k], 2);
            v = Tensor::cat(&[v0, &v], 2);
        }
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, causal, None, None)
            .permute(&[0, 2, 1, 3])
            .reshape_to(&[1, t, c]);
        *cache = Some((k, v));
        let x = x + &self.attn.proj.forward(&y);
        &x + &self.mlp.forward(&self.ln_2.forward(&x))
    }
}

impl Module for GptBlock {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("ln_1".into(), &self.ln_1),
            ("attn".into(), &self.attn),
            ("ln_2".into(), &self.ln_2),
            ("mlp".into(), &self.mlp),
            ("drop_attn".into(), &self.drop_attn),
            ("drop_mlp".into(), &self.drop_mlp),
        ]
    }
}

pub struct Gpt {
    pub config: GptConfig,
    pub wte: Embedding,
    pub wpe: Embedding,
    pub drop: Dropout,
    pub blocks: Vec<GptBlock>,
    pub ln_f: LayerNorm,
}

/// Keys and values of every block for the positions generated so far (batch 1).
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpt {
    pub fn new(init: &mut Init, config: GptConfig) -> Gpt {
        let wte = Embedding::new(init, config.vocab, config.dim);
        let wpe = Embedding::new(init, config.ctx, config.dim);
        let drop = Dropout::new(init, config.dropout);
        let blocks = (0..config.depth)
            .map(|_| GptBlock::new(init, &config))
            .collect();
        Gpt {
            ln_f: LayerNorm::new(init, config.dim),
            config,
            wte,
            wpe,
            drop,
            blocks,
        }
    }

    /// Token plus position embeddings of `ids` (row-major `(B, T)`) at positions `start..start+T`:
    /// `(B, T, C)`.
    fn embed(&self, ids: &[u32], b: usize, start: usize) -> Tensor {
        let t = ids.len() / b;
        assert!(
            ids.len() == b * t && start + t <= self.config.ctx,
            "GPT: {} ids are not {b} rows of at most ctx {} positions",
            ids.len(),
            self.config.ctx
        );
        let pos: Vec<u32> = (start as u32..(start + t) as u32).collect();
        let tok = self.wte.forward(ids).reshape_to(&[b, t, self.config.dim]);
        &tok + &self.wpe.forward(&pos)
    }

    /// Next-token logits for `ids`, row-major `(B, T)`: `(B·T, vocab)`.
    pub fn forward(&self, ids: &[u32], b: usize) -> Tensor {
        let mut x = self.drop.forward(&self.embed(ids, b, 0));
        for block in &self.blocks {
            x = block.forward(&x);
        }
        let x = self.ln_f.forward(&x);
        let rows = x.shape()[0] * x.shape()[1];
        // The head is the token embedding itself: logits = h W_teᵀ.
        x.reshape_to(&[rows, self.config.dim])
            .matmul_nt(&self.wte.weight)
    }

    /// Mean cross-entropy of predicting `targets` (row-major `(B, T)`) from `ids`.
    pub fn loss(&self, ids: &[u32], targets: &[i64], b: usize) -> Tensor {
        self.forward(ids, b).cross_entropy(targets, -1, 0.0)
    }

    /// Positions every dropout layer at training call `step`, so the masks of a step depend only
    /// on the seed and the step (a resumed run draws the same ones).
    pub fn seek_dropout(&self, step: u64) {
        self.drop.seek(step);
        for b in &self.blocks {
            b.drop_attn.seek(step);
            b.drop_mlp.seek(step);
        }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.config.depth).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Logits `(T, vocab)` for `ids` following the `cache.len()` positions already cached (batch
    /// 1, no dropout, no gradient); extends the cache.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut KvCache) -> Tensor {
        no_grad(|| {
            let mut x = self.embed(ids, 1, cache.len);
            for (block, kv) in self.blocks.iter().zip(&mut cache.layers) {
                x = block.forward_cached(&x, kv);
            }
            cache.len += ids.len();
            self.ln_f
                .forward(&x)
                .reshape_to(&[ids.len(), self.config.dim])
                .matmul_nt(&self.wte.weight)
        })
    }

    /// `n` tokens sampled after `prompt` (which must not be empty): each from the softmax of the
    /// last logits over `temperature`, restricted to the `top_k` most likely when given.
    ///
    /// With `use_cache`, each token costs one position until the window is full; then the cache
    /// is rebuilt from the last ctx/2 tokens (each token still sees at least half a window).
    /// Without it every token re-reads the last ctx tokens, as nanoGPT's `generate` does; the two
    /// agree exactly while the text fits in the window.
    pub fn generate(
        &self,
        prompt: &[u32],
        n: usize,
        sampler: &mut Sampler,
        use_cache: bool,
    ) -> Vec<u32> {
        assert!(!prompt.is_empty(), "GPT: generation needs a prompt");
        let ctx = self.config.ctx;
        let mut ids = prompt.to_vec();
        let mut cache = self.new_cache();
        for i in 0..n {
            let logits = if !use_cache {
                let window = &ids[ids.len().saturating_sub(ctx)..];
                no_grad(|| self.forward(window, 1))
            } else if i == 0 || cache.len() == ctx {
                // (Re)fill the cache: the prompt's last window first, later the last half window.
                cache = self.new_cache();
                let keep = if i == 0 { ctx } else { (ctx / 2).max(1) };
                self.forward_cached(&ids[ids.len().saturating_sub(keep)..], &mut cache)
            } else {
                self.forward_cached(&ids[ids.len() - 1..], &mut cache)
            };
            ids.push(sampler.sample(&last_row(&logits)));
        }
        ids.split_off(prompt.len())
    }
}

/// The last row of `(T, V)` logits, on the host.
fn last_row(logits: &Tensor) -> Vec<f32> {
    let (t, v) = (logits.shape()[0], logits.shape()[1]);
    logits.narrow(0, t - 1, 1).to_vec()[..v].to_vec()
}

/// Temperature and top-k sampling from logits, seeded.
pub struct Sampler {
    pub temperature: f64,
    pub top_k: Option<usize>,
    rng: SeededRng,
}

impl Sampler {
    pub fn new(temperature: f64, top_k: Option<usize>, seed: u64) -> Sampler {
        Sampler {
            temperature,
            top_k,
            rng: SeededRng::seed_from_u64(seed),
        }
    }

    /// A token id drawn from softmax(logits / temperature) over the top-k logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(self.top_k.unwrap_or(logits.len()).max(1));
        let top = logits[order[0]] as f64;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - top) / self.temperature).exp())
            .collect();
        let mut u = self.rng.random::<f64>() * weights.iter().sum::<f64>();
        for (&i, w) in order.iter().zip(&weights) {
            if u < *w {
                return i as u32;
            }
            u -= w;
        }
        order[order.len() - 1] as u32
    }
}

impl Module for Gpt {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c: Vec<(String, &dyn Module)> = vec![
            ("wte".into(), &self.wte),
            ("wpe".into(), &self.wpe),
            ("drop".into(), &self.drop),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            c.push((format!("blocks.{i}"), b));
        }
        c.push(("ln_f".into(), &self.ln_f));
        c
    }
}
