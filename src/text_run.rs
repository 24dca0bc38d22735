//! A GPT training run as one resumable unit: model, AdamW state, step and loss histories. Batches
//! are a pure function of (seed, step), so a checkpoint needs no loader state and a resumed run
//! ends bit-identical to an uninterrupted one on the CPU backend. Like the image run, it refuses
//! to step on a non-finite loss or gradient and never saves non-finite weights.

use crate::run::{
    check_finite, optimize, restore, run_tensors, stored_config, stored_history, stored_step,
    text_meta, Stopped, TEXT_METADATA,
};
use selfsup_engine::checkpoint::{self, Checkpoint};
use selfsup_engine::data::{decode_text, read_text, split_ids, TokenBlocks, Tokenizer};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{param_groups, AdamW, WarmupCosine};
use selfsup_engine::{no_grad, Device};
use selfsup_models::gpt::{Gpt, GptConfig};
use selfsup_models::method::{positive, require, transformer_shape};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Tiny Shakespeare (public domain, 1.1 MB), the default corpus.
const SHAKESPEARE: &[u8] = include_bytes!("../data/tinyshakespeare.txt.gz");

/// Everything that defines a GPT run; stored as JSON in its checkpoint and in `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptRunConfig {
    /// Text files (plain or gzipped), comma-separated, or `embedded` for Tiny Shakespeare.
    pub data: String,
    /// `char`, `bpe` (byte-level BPE learnt from the training text) or a WordPiece `vocab.txt`.
    pub tokenizer: String,
    /// The vocabulary a `bpe` tokenizer learns.
    pub vocab_size: usize,
    pub model: GptConfig,
    pub steps: u64,
    pub batch: usize,
    /// Peak learning rate: linear warm-up over `warmup` steps, cosine decay to `min_lr`.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off).
    pub clip: f64,
    pub seed: u64,
}

/// The first 90 % of the text trains, the rest validates (nanoGPT's split).
const TRAIN_FRACTION: f64 = 0.9;

impl GptRunConfig {
    /// nanoGPT's `shakespeare_char` recipe at the size that suits a 2-core CPU.
    pub fn defaults() -> GptRunConfig {
        GptRunConfig {
            data: "embedded".into(),
            tokenizer: "char".into(),
            vocab_size: 2048,
            model: GptConfig {
                vocab: 0,
                ctx: 128,
                dim: 128,
                depth: 4,
                heads: 4,
                dropout: 0.0,
            },
            steps: 2500,
            batch: 32,
            // Chosen on the validation split: 4e-3 reaches 1.81 at step 750 and 1.514 at the end,
            // 2e-3 1.88 and 1.549 (README, GPT tries).
            lr: 4e-3,
            min_lr: 4e-4,
            warmup: 100,
            weight_decay: 0.1,
            clip: 1.0,
            seed: 0,
        }
    }

    /// Checks every setting, naming the flag of the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        require(
            ["char", "bpe"].contains(&self.tokenizer.as_str()) || self.tokenizer.ends_with(".txt"),
            "tokenizer",
            &self.tokenizer,
            "char, bpe or the path of a WordPiece vocab.txt",
        )?;
        require(
            (257..=65536).contains(&self.vocab_size),
            "vocab_size",
            self.vocab_size,
            "between 257 and 65536",
        )?;
        require(
            (1..=4096).contains(&m.ctx),
            "ctx",
            m.ctx,
            "between 1 and 4096",
        )?;
        transformer_shape(m.dim, m.heads, m.depth)?;
        require(
            (0.0..1.0).contains(&m.dropout),
            "dropout",
            m.dropout,
            "in [0, 1)",
        )?;
        require(self.steps >= 1, "steps", self.steps, "at least 1")?;
        require(
            (1..=65536).contains(&self.batch),
            "batch",
            self.batch,
            "between 1 and 65536",
        )?;
        positive("lr", self.lr)?;
        require(
            self.min_lr >= 0.0 && self.min_lr <= self.lr,
            "min_lr",
            self.min_lr,
            &format!("between 0 and --lr {}", self.lr),
        )?;
        require(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "weight_decay",
            self.weight_decay,
            "a number ≥ 0",
        )?;
        require(
            self.clip >= 0.0 && self.clip.is_finite(),
            "clip",
            self.clip,
            "a number ≥ 0",
        )
    }

    pub fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            base_lr: self.lr,
            warmup_steps: self.warmup.clamp(1, self.steps),
            total_steps: self.steps,
            final_lr: self.min_lr,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a run config serialises")
    }

    /// Bytes a step needs, roughly: weights with gradients and Adam moments, and per token the
    /// saved activations of every block and the logits with their softmax.
    pub fn memory_estimate(&self) -> f64 {
        let m = &self.model;
        let (d, tokens) = (m.dim as f64, (self.batch * m.ctx) as f64);
        let params = m.depth as f64 * 12.0 * d * d + (m.vocab + m.ctx) as f64 * d;
        let acts = tokens * (m.depth as f64 * 40.0 * d + 4.0 * m.vocab as f64);
        4.0 * (4.0 * params + 2.0 * acts)
    }
}

/// A tokenized corpus and what identifies its text.
pub struct Corpus {
    pub tokenizer: Tokenizer,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    /// CRC-32 of the text, so a resumed run can refuse a changed corpus.
    pub crc32: String,
}

/// The text of `data`: the files in order, joined by blank lines.
pub fn read_corpus(data: &str) -> Result<String, String> {
    if data == "embedded" {
        return decode_text(
            SHAKESPEARE.to_vec(),
            Path::new("embedded tinyshakespeare.txt.gz"),
        )
        .map_err(|e| e.to_string());
    }
    let mut parts = Vec::new();
    for file in data.split(',').filter(|f| !f.is_empty()) {
        let text = read_text(Path::new(file)).map_err(|e| format!("--data {e}"))?;
        parts.push(text);
    }
    let text = parts.join("\n\n");
    if text.chars().count() < 2 {
        return Err(format!("--data {data}: holds no text to learn from"));
    }
    Ok(text)
}

/// Tokenizes `text` for `config`: with `tokenizer` (a resumed run's own) or a new one, learnt
/// from the training part of the text (characters: from all of it, as nanoGPT does).
pub fn tokenize(
    text: &str,
    config: &GptRunConfig,
    tokenizer: Option<Tokenizer>,
) -> Result<Corpus, String> {
    let cut = text
        .char_indices()
        .nth((text.chars().count() as f64 * TRAIN_FRACTION) as usize)
        .map_or(text.len(), |(i, _)| i);
    let (train_text, val_text) = text.split_at(cut);
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => match config.tokenizer.as_str() {
            "char" => Tokenizer::chars(text),
            "bpe" => Tokenizer::train_bpe(train_text, config.vocab_size)?,
            vocab => {
                Tokenizer::wordpiece(Path::new(vocab)).map_err(|e| format!("--tokenizer {e}"))?
            }
        },
    };
    let encode = |t: &str| tokenizer.encode(t).map_err(|e| format!("--data: {e}"));
    let (train, val) = if let Tokenizer::Chars(_) = tokenizer {
        split_ids(&encode(text)?, TRAIN_FRACTION)
    } else {
        (encode(train_text)?, encode(val_text)?)
    };
    Ok(Corpus {
        train,
        val,
        tokenizer,
        crc32: format!("{:08x}", crc32fast::hash(text.as_bytes())),
    })
}

pub struct GptRun {
    pub config: GptRunConfig,
    pub model: Gpt,
    pub optimizer: AdamW,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// The training loss of every step.
    pub history: Vec<f32>,
    /// (step, train loss, validation loss) of every evaluation.
    pub evals: Vec<(u64, f32, f32)>,
    blocks: TokenBlocks,
}

/// Seed offset of the fixed batches that estimate train and validation loss.
const EVAL_SEED: u64 = 0x5EED_E7A1;

impl GptRun {
    /// A fresh run on the training ids (`config.model.vocab` set to the tokenizer's).
    pub fn new(config: GptRunConfig, train: Vec<u32>, device: &Device) -> Result<GptRun, String> {
        let blocks = TokenBlocks::new(train, config.model.ctx, config.batch, config.seed)
            .map_err(|e| format!("--ctx {}: the training text's {e}", config.model.ctx))?;
        let mut init = Init::new(config.seed, device);
        let model = Gpt::new(&mut init, config.model.clone());
        // nanoGPT's groups: matrices and embeddings decay, biases and LayerNorms do not.
        let groups = param_groups(model.named_parameters(), config.weight_decay);
        let optimizer = AdamW::new(groups, 0.9, 0.99, 1e-8);
        Ok(GptRun {
            config,
            model,
            optimizer,
            step: 0,
            history: Vec::new(),
            evals: Vec::new(),
            blocks,
        })
    }

    /// The configuration stored in a checkpoint.
    pub fn config_of(ck: &Checkpoint, path: &Path) -> Result<GptRunConfig, String> {
        stored_config(ck, path)
    }

    /// The model alone, from a checkpoint (for sampling).
    pub fn model_of(ck: &Checkpoint, path: &Path, device: &Device) -> Result<Gpt, String> {
        let config = GptRun::config_of(ck, path)?;
        let model = Gpt::new(&mut Init::new(config.seed, device), config.model);
        model
            .load_state_dict(&ck.with_prefix("model"), &path.display().to_string())
            .map_err(|e| e.to_string())?;
        check_finite(&model.state_dict()).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(model)
    }

    /// Continues the run saved in `ck` under `config` (which may differ only in steps and rate).
    pub fn resume(
        ck: &Checkpoint,
        path: &Path,
        config: GptRunConfig,
        train: Vec<u32>,
        device: &Device,
    ) -> Result<GptRun, String> {
        let mut run = GptRun::new(config, train, device)?;
        run.step = stored_step(ck, path)?;
        run.history = restore(
            ck,
            path,
            &run.model,
            &mut run.optimizer,
            run.step,
            &TEXT_METADATA,
        )?;
        run.evals = stored_history(ck, "evals")
            .chunks_exact(3)
            .map(|e| (e[0] as u64, e[1], e[2]))
            .collect();
        Ok(run)
    }

    /// One AdamW step on batch number `step`. Nothing is updated when the loss or the gradient
    /// is not finite.
    pub fn train_step(&mut self) -> Result<f32, Stopped> {
        let b = self.blocks.batch(self.step);
        let lr = self.config.schedule().lr(self.step);
        self.model.seek_dropout(self.step);
        let loss = self.model.loss(&b.inputs, &b.targets, self.config.batch);
        optimize(
            &loss,
            &self.model,
            &mut self.optimizer,
            &mut self.step,
            &mut self.history,
            lr,
            self.config.clip,
        )
    }

    /// Mean loss over `batches` fixed batches of `ids` (the same ones at every evaluation, so
    /// successive estimates differ only by what the model learnt), with dropout off.
    pub fn evaluate(&self, ids: &[u32], batches: usize) -> Result<f32, String> {
        let blocks = TokenBlocks::new(
            ids.to_vec(),
            self.config.model.ctx,
            self.config.batch,
            self.config.seed ^ EVAL_SEED,
        )
        .map_err(|e| format!("--ctx {}: the validation text's {e}", self.config.model.ctx))?;
        self.model.set_training(false);
        let total: f64 = no_grad(|| {
            (0..batches as u64)
                .map(|k| {
                    let b = blocks.batch(k);
                    self.model
                        .loss(&b.inputs, &b.targets, self.config.batch)
                        .item() as f64
                })
                .sum()
        });
        self.model.set_training(true);
        Ok((total / batches as f64) as f32)
    }

    /// Writes weights, optimizer state, step, histories, config, tokenizer and the corpus's
    /// checksum to `path`. Refused if any weight is not finite.
    pub fn save(&self, path: &Path, corpus: &Corpus) -> Result<(), String> {
        let evals: Vec<f32> = self
            .evals
            .iter()
            .flat_map(|&(s, t, v)| [s as f32, t, v])
            .collect();
        let tensors = run_tensors(
            path,
            &self.model,
            &self.optimizer,
            vec![("loss", self.history.clone()), ("evals", evals)],
        )?;
        let meta = text_meta(
            self.config.to_json(),
            self.step,
            &corpus.tokenizer,
            &corpus.crc32,
        );
        checkpoint::save(path, &tensors, &meta).map_err(|e| e.to_string())
    }
}
