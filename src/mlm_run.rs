//! A BERT masked-language-modelling run as one resumable unit: sentences of several books, a
//! WordPiece vocabulary learnt from the training ones, the model, AdamW state, step and
//! histories. Batch `k` (its sentences and its masking) is a pure function of (seed, k), so a
//! checkpoint needs no loader state and a resumed run is bit-identical on the CPU backend.

use crate::run::{
    optimize, restore, run_tensors, stored_config, stored_history, stored_step, text_meta, Stopped,
    TEXT_METADATA,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use selfsup_engine::checkpoint::{self, Checkpoint};
use selfsup_engine::data::{read_text, Tokenizer};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{param_groups, AdamW, WarmupCosine};
use selfsup_engine::{no_grad, Device, SeededRng};
use selfsup_models::bert::{mlm_mask, Batch, BertConfig, BertMlm, IGNORE};
use selfsup_models::method::{positive, require, transformer_shape};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The six Austen novels and Moby-Dick, in the project's `data/text/`.
pub const BOOKS: &str = "data/text/austen-emma.txt.gz,data/text/austen-mansfieldpark.txt.gz,\
data/text/austen-northangerabbey.txt.gz,data/text/austen-persuasion.txt.gz,\
data/text/austen-prideprejudice.txt.gz,data/text/austen-sensesensibility.txt.gz,\
data/text/moby-dick.txt.gz";

/// Everything that defines a BERT run; stored as JSON in its checkpoint and in `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertRunConfig {
    /// Text files (plain or gzipped), comma-separated: each is one class of the book probe.
    pub data: String,
    /// Entries of the WordPiece vocabulary learnt from the training sentences.
    pub vocab_size: usize,
    pub model: BertConfig,
    /// Fraction of real tokens chosen for prediction.
    pub mask_rate: f64,
    pub steps: u64,
    pub batch: usize,
    /// Peak learning rate: warm-up over the first tenth, then cosine decay to a hundredth.
    pub lr: f64,
    pub weight_decay: f64,
    pub clip: f64,
    pub seed: u64,
    /// What a training row holds.
    #[serde(default)]
    pub rows: Rows,
    /// Weight of DeCLUTR's contrastive loss beside the MLM loss (0: MLM alone): half of each
    /// batch are anchor rows, the other half a row from nearby in each anchor's book, and the
    /// mean-pooled states of each pair are told apart from the batch's other rows (NT-Xent).
    #[serde(default)]
    pub contrast: f64,
    /// That loss's temperature.
    #[serde(default = "default_contrast_tau")]
    pub contrast_tau: f64,
}

fn default_contrast_tau() -> f64 {
    0.05
}

/// How far (in sentences of its book) a contrastive positive may start from its anchor.
const NEARBY: usize = 10;

/// What one training row holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rows {
    /// `[CLS] s [SEP]`, one sentence (what runs saved before this setting trained on).
    #[default]
    Sentence,
    /// `[CLS] s₁ [SEP] s₂ [SEP] …`: consecutive sentences of one book, as many whole ones as fit
    /// the context (RoBERTa's packing).
    Packed,
}

impl BertRunConfig {
    /// A small BERT (BERT's recipe at 4 layers × 128) sized for about 10 minutes on 2 cores.
    pub fn defaults() -> BertRunConfig {
        BertRunConfig {
            data: BOOKS.into(),
            vocab_size: 4096,
            model: BertConfig {
                vocab: 0,
                max_positions: 64,
                type_vocab: 2,
                dim: 128,
                depth: 4,
                heads: 4,
                intermediate: 512,
                dropout: 0.1,
                ln_eps: 1e-12,
            },
            mask_rate: 0.15,
            steps: 2000,
            batch: 64,
            lr: 1e-3,
            weight_decay: 0.01,
            clip: 1.0,
            seed: 0,
            rows: Rows::Packed,
            contrast: 0.1,
            contrast_tau: default_contrast_tau(),
        }
    }

    /// Checks every setting, naming the flag of the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        transformer_shape(m.dim, m.heads, m.depth)?;
        require(
            (8..=512).contains(&m.max_positions),
            "ctx",
            m.max_positions,
            "between 8 and 512",
        )?;
        require(
            (64..=65_536).contains(&self.vocab_size),
            "vocab_size",
            self.vocab_size,
            "between 64 and 65536",
        )?;
        require(
            self.mask_rate > 0.0 && self.mask_rate < 1.0,
            "mask_rate",
            self.mask_rate,
            "between 0 and 1 (exclusive)",
        )?;
        require(
            (0.0..1.0).contains(&m.dropout),
            "dropout",
            m.dropout,
            "in [0, 1)",
        )?;
        require(self.steps >= 1, "steps", self.steps, "at least 1")?;
        require(
            (1..=4096).contains(&self.batch),
            "batch",
            self.batch,
            "between 1 and 4096",
        )?;
        positive("lr", self.lr)?;
        require(
            self.contrast >= 0.0,
            "contrast",
            self.contrast,
            "≥ 0 (0: MLM alone)",
        )?;
        positive("contrast_tau", self.contrast_tau)?;
        require(
            self.contrast == 0.0 || (self.batch >= 4 && self.batch.is_multiple_of(2)),
            "batch",
            self.batch,
            "even and at least 4 with --contrast (anchor and positive rows)",
        )?;
        require(
            self.weight_decay >= 0.0 && self.clip >= 0.0,
            "weight_decay",
            self.weight_decay,
            "≥ 0 (and --clip ≥ 0)",
        )
    }

    pub fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            base_lr: self.lr,
            warmup_steps: (self.steps / 10).max(1),
            total_steps: self.steps,
            final_lr: self.lr * 0.01,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a run config serialises")
    }
}

/// The sentences of a text: paragraphs (blank-line separated) joined into lines, cut after `.`,
/// `!` or `?` followed by a space; headings (no lower-case letter) and sentences of fewer than
/// four words are dropped.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut start = 0;
        let bytes = para.as_bytes();
        for (i, &c) in bytes.iter().enumerate() {
            let end = matches!(c, b'.' | b'!' | b'?') && bytes.get(i + 1) == Some(&b' ');
            if end || i + 1 == bytes.len() {
                let s = para[start..=i].trim();
                if s.split_whitespace().count() >= 4 && s.chars().any(|c| c.is_lowercase()) {
                    out.push(s.to_string());
                }
                start = i + 1;
            }
        }
    }
    out
}

/// Sentences of every book, each tokenised as `[CLS] … [SEP]` (cut to `ctx`), with its book.
pub struct Corpus {
    pub tokenizer: Tokenizer,
    pub train: Vec<(Vec<u32>, u32)>,
    pub held_out: Vec<(Vec<u32>, u32)>,
    /// The training sentences again, in reading order book after book (what packing reads).
    pub reading: Vec<(Vec<u32>, u32)>,
    /// Short names of the books, in label order.
    pub books: Vec<String>,
    /// CRC-32 of the texts, so a resumed run can refuse changed data.
    pub crc32: String,
}

/// A sentence of `s`'s book at most [`NEARBY`] sentences before or after it, not `s` itself
/// (unless the book has one sentence): where a contrastive positive begins.
fn nearby(reading: &[(Vec<u32>, u32)], s: usize, rng: &mut SeededRng) -> usize {
    let book = reading[s].1;
    // A book's sentences are contiguous in `reading`, so lo..=hi is all of one book.
    let lo = (s.saturating_sub(NEARBY)..s)
        .find(|&j| reading[j].1 == book)
        .unwrap_or(s);
    let hi = (s + 1..=(s + NEARBY).min(reading.len() - 1))
        .rev()
        .find(|&j| reading[j].1 == book)
        .unwrap_or(s);
    if lo == hi {
        return s;
    }
    let j = rng.random_range(lo..hi); // one of the hi − lo others
    if j >= s {
        j + 1
    } else {
        j
    }
}

/// Sentences held out of each book for evaluation, a tenth, chosen by a fixed seed.
const HELD_OUT: f64 = 0.1;

/// Reads the books of `data` (comma-separated files), splits their sentences (a seeded tenth
/// held out) and tokenises them, cut to `ctx` tokens with `[CLS]` and `[SEP]`, with `tokenizer`
/// (a resumed run's) or a WordPiece of `vocab_size` learnt from the training sentences.
pub fn read_corpus(
    data: &str,
    vocab_size: usize,
    ctx: usize,
    tokenizer: Option<Tokenizer>,
) -> Result<Corpus, String> {
    let files: Vec<&str> = data.split(',').filter(|f| !f.is_empty()).collect();
    require(
        files.len() >= 2,
        "data",
        files.len(),
        "at least two files (the probe's classes)",
    )?;
    let (mut train, mut held_out, mut reading, mut books) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hasher = crc32fast::Hasher::new();
    for (label, file) in files.iter().enumerate() {
        let text = read_text(Path::new(file)).map_err(|e| format!("--data {e}"))?;
        hasher.update(text.as_bytes());
        let s = sentences(&text);
        if s.len() < 20 {
            return Err(format!("--data {file}: only {} sentences", s.len()));
        }
        // The same draw as shuffling the sentences themselves, kept as indices so that the
        // training ones can also be read in order: `train` holds positions in `reading`.
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.shuffle(&mut SeededRng::seed_from_u64(12345 + label as u64));
        let cut = (s.len() as f64 * HELD_OUT) as usize;
        held_out.extend(order[..cut].iter().map(|&i| (s[i].clone(), label as u32)));
        let mut kept = order[cut..].to_vec();
        kept.sort_unstable();
        let mut at = vec![0; s.len()]; // sentence index → position in `reading`
        for (k, &i) in kept.iter().enumerate() {
            at[i] = reading.len() + k;
        }
        train.extend(order[cut..].iter().map(|&i| at[i]));
        reading.extend(kept.iter().map(|&i| (s[i].clone(), label as u32)));
        let name = Path::new(file).file_name().map_or(file.to_string(), |n| {
            n.to_string_lossy()
                .trim_end_matches(".gz")
                .trim_end_matches(".txt")
                .to_string()
        });
        books.push(name);
    }
    // Books in turn would make any prefix one book's: mix them (seeded) so that a prefix of
    // either set is a sample of all.
    train.shuffle(&mut SeededRng::seed_from_u64(1));
    held_out.shuffle(&mut SeededRng::seed_from_u64(2));
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => {
            let lines: Vec<&str> = train.iter().map(|&i| reading[i].0.as_str()).collect();
            Tokenizer::train_wordpiece(&lines.join("\n"), vocab_size)?
        }
    };
    let Specials { cls, sep, .. } = Specials::of(&tokenizer)?;
    let encode = |set: Vec<(String, u32)>| -> Result<Vec<(Vec<u32>, u32)>, String> {
        set.into_iter()
            .map(|(t, y)| {
                let ids = tokenizer.encode(&t).map_err(|e| format!("--data: {e}"))?;
                let mut row = vec![cls];
                row.extend(ids.iter().take(ctx - 2));
                row.push(sep);
                Ok((row, y))
            })
            .collect()
    };
    let reading = encode(reading)?;
    Ok(Corpus {
        train: train.iter().map(|&i| reading[i].clone()).collect(),
        held_out: encode(held_out)?,
        reading,
        tokenizer,
        books,
        crc32: format!("{:08x}", hasher.finalize()),
    })
}

/// The special ids: `[PAD]`, `[CLS]`, `[SEP]`, `[MASK]`, the specials masking never chooses, and
/// the words a random replacement draws from (everything after the five specials).
pub struct Specials {
    pub pad: u32,
    /// Where a sequence begins (BART's decoder starts from it) and ends.
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
    pub skip: Vec<u32>,
    pub words: std::ops::Range<u32>,
}

impl Specials {
    pub fn of(tk: &Tokenizer) -> Result<Specials, String> {
        let id = |t: &str| {
            tk.token_id(t)
                .ok_or_else(|| format!("the tokenizer has no {t}"))
        };
        let (pad, cls, sep) = (id("[PAD]")?, id("[CLS]")?, id("[SEP]")?);
        Ok(Specials {
            pad,
            cls,
            sep,
            mask: id("[MASK]")?,
            skip: vec![cls, sep, pad, id("[UNK]")?],
            words: 5..tk.vocab_size() as u32,
        })
    }
}

pub struct MlmRun {
    pub config: BertRunConfig,
    pub model: BertMlm,
    pub optimizer: AdamW,
    pub step: u64,
    pub history: Vec<f32>,
    /// (step, held-out masked-token accuracy %) of every evaluation.
    pub evals: Vec<(u64, f32)>,
    pub specials: Specials,
}

/// Seed offset of the fixed masking that evaluation uses.
const EVAL_SEED: u64 = 0x5EED_B3A7;

impl MlmRun {
    /// A fresh run (`config.model.vocab` set to the tokenizer's).
    pub fn new(config: BertRunConfig, specials: Specials, device: &Device) -> MlmRun {
        let model = BertMlm::new(&mut Init::new(config.seed, device), config.model.clone());
        let groups = param_groups(model.named_parameters(), config.weight_decay);
        let optimizer = AdamW::new(groups, 0.9, 0.999, 1e-6);
        MlmRun {
            config,
            model,
            optimizer,
            step: 0,
            history: Vec::new(),
            evals: Vec::new(),
            specials,
        }
    }

    pub fn config_of(ck: &Checkpoint, path: &Path) -> Result<BertRunConfig, String> {
        stored_config(ck, path)
    }

    /// Continues the run saved in `ck` under `config` (which may differ only in steps and rate).
    pub fn resume(
        ck: &Checkpoint,
        path: &Path,
        config: BertRunConfig,
        specials: Specials,
        device: &Device,
    ) -> Result<MlmRun, String> {
        let mut run = MlmRun::new(config, specials, device);
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
            .chunks_exact(2)
            .map(|e| (e[0] as u64, e[1]))
            .collect();
        Ok(run)
    }

    /// Batch `k`: `batch` rows as `config.rows` says, drawn with a stream fixed by (seed, k),
    /// masked. With `contrast`, rows `i` and `batch/2 + i` begin at nearby sentences of one book.
    pub fn batch(&self, corpus: &Corpus, k: u64) -> (Batch, Vec<u32>, Vec<i64>) {
        let mut rng =
            SeededRng::seed_from_u64(self.config.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let reading = &corpus.reading;
        let rows: Vec<Vec<u32>> = if self.config.contrast > 0.0 {
            let anchors: Vec<usize> = (0..self.config.batch / 2)
                .map(|_| rng.random_range(0..reading.len()))
                .collect();
            let positives: Vec<usize> = anchors
                .iter()
                .map(|&s| nearby(reading, s, &mut rng))
                .collect();
            anchors
                .iter()
                .chain(&positives)
                .map(|&s| self.row_at(reading, s))
                .collect()
        } else {
            (0..self.config.batch)
                .map(|_| match self.config.rows {
                    Rows::Sentence => corpus.train[rng.random_range(0..corpus.train.len())]
                        .0
                        .clone(),
                    Rows::Packed => self.packed(reading, rng.random_range(0..reading.len())),
                })
                .collect()
        };
        self.masked(&rows, &mut rng)
    }

    /// The row that begins at sentence `start` of `reading`, as `config.rows` says.
    fn row_at(&self, reading: &[(Vec<u32>, u32)], start: usize) -> Vec<u32> {
        match self.config.rows {
            Rows::Sentence => reading[start].0.clone(),
            Rows::Packed => self.packed(reading, start),
        }
    }

    /// `[CLS] sₛ [SEP] sₛ₊₁ [SEP] …`: sentence `start` of `reading` and the ones after it in
    /// the same book, as many whole ones as fit the context, each closed by its `[SEP]` as
    /// BERT's segments are.
    fn packed(&self, reading: &[(Vec<u32>, u32)], start: usize) -> Vec<u32> {
        let ctx = self.config.model.max_positions;
        let (first, book) = &reading[start];
        let mut row = first.clone();
        for (ids, y) in &reading[start + 1..] {
            let words = &ids[1..]; // without its [CLS]
            if y != book || row.len() + words.len() > ctx {
                break;
            }
            row.extend(words);
        }
        row
    }

    /// `rows` padded into a batch, with BERT's masking drawn from `rng`: the batch, its
    /// corrupted ids and the targets.
    fn masked(&self, rows: &[Vec<u32>], rng: &mut SeededRng) -> (Batch, Vec<u32>, Vec<i64>) {
        let s = &self.specials;
        let batch = Batch::pad(rows, s.pad);
        let (ids, targets) = mlm_mask(
            &batch,
            self.config.mask_rate,
            s.mask,
            s.words.clone(),
            &s.skip,
            rng,
        );
        (batch, ids, targets)
    }

    /// One AdamW step on batch number `step`; nothing is updated when the loss or the gradient
    /// is not finite.
    pub fn train_step(&mut self, corpus: &Corpus) -> Result<f32, Stopped> {
        let (batch, ids, targets) = self.batch(corpus, self.step);
        let lr = self.config.schedule().lr(self.step);
        self.model.bert.seek_dropout(self.step);
        let c = &self.config;
        let loss = self.model.loss_with_contrast(
            &Batch { ids, ..batch },
            &targets,
            c.contrast,
            c.contrast_tau,
        );
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

    /// Masked-token accuracy (%) of `model` on `rows` under a fixed masking, and that of always
    /// predicting `unigram` (the most frequent training word) at the same positions.
    pub fn masked_accuracy(
        &self,
        model: &BertMlm,
        rows: &[(Vec<u32>, u32)],
        unigram: u32,
    ) -> (f64, f64) {
        let mut rng = SeededRng::seed_from_u64(self.config.seed ^ EVAL_SEED);
        let (mut right, mut base, mut total) = (0usize, 0usize, 0usize);
        model.set_training(false);
        for chunk in rows.chunks(64) {
            let r: Vec<Vec<u32>> = chunk.iter().map(|(ids, _)| ids.clone()).collect();
            let (batch, ids, targets) = self.masked(&r, &mut rng);
            let chosen: Vec<i64> = targets.iter().copied().filter(|&t| t != IGNORE).collect();
            if chosen.is_empty() {
                continue;
            }
            let pred = no_grad(|| {
                model
                    .chosen_logits(&Batch { ids, ..batch }, &targets)
                    .argmax(1, false)
                    .to_vec()
            });
            right += pred
                .iter()
                .zip(&chosen)
                .filter(|&(&p, &t)| p as i64 == t)
                .count();
            base += chosen.iter().filter(|&&t| t == unigram as i64).count();
            total += chosen.len();
        }
        model.set_training(true);
        let pct = |n: usize| 100.0 * n as f64 / total.max(1) as f64;
        (pct(right), pct(base))
    }

    /// Writes weights, optimizer state, step, histories, config, tokenizer and the texts'
    /// checksum to `path`. Refused if any weight is not finite.
    pub fn save(&self, path: &Path, corpus: &Corpus) -> Result<(), String> {
        let evals: Vec<f32> = self
            .evals
            .iter()
            .flat_map(|&(s, a)| [s as f32, a])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_cut_at_their_ends_and_headings_dropped() {
        let text =
            "CHAPTER I\n\nEmma Woodhouse, handsome, clever,\nand rich. She was the youngest \
                    of two! Was she happy? Yes.\n\nCall me Ishmael, said the sailor.";
        assert_eq!(
            sentences(text),
            [
                "Emma Woodhouse, handsome, clever, and rich.",
                "She was the youngest of two!",
                "Call me Ishmael, said the sailor."
            ]
        );
    }
}
