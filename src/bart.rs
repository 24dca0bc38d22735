//! The BART job as a library: denoising pre-training of a small BART on the books in
//! `data/text/` (documents of two sentences, corrupted by `--noise`), then held-out
//! reconstruction: teacher-forced token accuracy and loss, and a few corrupted → reconstructed
//! examples decoded greedily. Batches are a pure function of (seed, step), so `--resume` is
//! bit-identical on the CPU backend.

use crate::bert::plot_loss;
use crate::flags;
use crate::mlm_run::{read_corpus, Corpus, Specials};
use crate::run::{
    optimize, restore, run_tensors, stored_step, stored_tokenizer, text_meta, Stopped,
    TEXT_METADATA,
};
use crate::setup::{self, cadence, parse_args, prepare_out};
use crate::training::{resumed_at, text_loop, Cadence, TextRun};
use clap::Parser;
use rand::{Rng, SeedableRng};
use selfsup_engine::checkpoint::{self, Checkpoint};
use selfsup_engine::data::Tokenizer;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{param_groups, AdamW, WarmupCosine};
use selfsup_engine::{no_grad, Device, SeededRng};
use selfsup_models::bart::{Bart, BartConfig};
use selfsup_models::bert::Batch;
use selfsup_models::method::{positive, require, transformer_shape};
use selfsup_models::noising::Noise;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Sentences per document: two, so that sentence permutation has something to permute.
const SENTENCES: usize = 2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BartRunConfig {
    pub data: String,
    pub vocab_size: usize,
    pub model: BartConfig,
    pub noise: Noise,
    /// Share of tokens masking, deletion and infilling act on.
    pub noise_ratio: f64,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub clip: f64,
    pub seed: u64,
}

impl BartRunConfig {
    /// A small BART (3 + 3 layers × 128) with the paper's text infilling at 30 %, sized for
    /// about 10 minutes on 2 cores (0.5 s per step).
    pub fn defaults() -> BartRunConfig {
        BartRunConfig {
            data: crate::mlm_run::BOOKS.into(),
            vocab_size: 4096,
            model: BartConfig {
                vocab: 0,
                max_positions: 96,
                dim: 128,
                encoder_depth: 3,
                decoder_depth: 3,
                heads: 4,
                ffn: 512,
                dropout: 0.1,
            },
            noise: Noise::TextInfilling,
            noise_ratio: 0.3,
            steps: 1000,
            batch: 32,
            lr: 1e-3,
            weight_decay: 0.01,
            clip: 1.0,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        transformer_shape(m.dim, m.heads, m.encoder_depth.max(m.decoder_depth))?;
        require(
            (16..=512).contains(&m.max_positions),
            "ctx",
            m.max_positions,
            "between 16 and 512",
        )?;
        require(
            (64..=65_536).contains(&self.vocab_size),
            "vocab_size",
            self.vocab_size,
            "between 64 and 65536",
        )?;
        require(
            (0.0..1.0).contains(&self.noise_ratio),
            "noise_ratio",
            self.noise_ratio,
            "in [0, 1)",
        )?;
        require(self.steps >= 1, "steps", self.steps, "at least 1")?;
        require(
            (1..=4096).contains(&self.batch),
            "batch",
            self.batch,
            "between 1 and 4096",
        )?;
        positive("lr", self.lr)
    }

    fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            base_lr: self.lr,
            warmup_steps: (self.steps / 10).max(1),
            total_steps: self.steps,
            final_lr: self.lr * 0.01,
        }
    }

    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a run config serialises")
    }
}

/// One batch: corrupted sources, decoder inputs (`[CLS]` + the document) and targets (the
/// document + `[SEP]`), and the documents themselves.
pub struct Example {
    pub src: Batch,
    pub tgt: Batch,
    pub targets: Vec<i64>,
}

pub struct BartRun {
    pub config: BartRunConfig,
    pub model: Bart,
    pub optimizer: AdamW,
    pub step: u64,
    pub history: Vec<f32>,
    specials: Specials,
}

/// A sentence row without its `[CLS]` and `[SEP]`.
fn body(row: &[u32]) -> Vec<u32> {
    row[1..row.len() - 1].to_vec()
}

impl BartRun {
    pub fn new(config: BartRunConfig, tk: &Tokenizer, device: &Device) -> Result<BartRun, String> {
        let model = Bart::new(&mut Init::new(config.seed, device), config.model.clone());
        let optimizer = AdamW::new(
            param_groups(model.named_parameters(), config.weight_decay),
            0.9,
            0.999,
            1e-6,
        );
        Ok(BartRun {
            specials: Specials::of(tk)?,
            config,
            model,
            optimizer,
            step: 0,
            history: Vec::new(),
        })
    }

    pub fn resume(
        ck: &Checkpoint,
        path: &Path,
        config: BartRunConfig,
        tk: &Tokenizer,
        device: &Device,
    ) -> Result<BartRun, String> {
        let mut run = BartRun::new(config, tk, device)?;
        run.step = stored_step(ck, path)?;
        run.history = restore(
            ck,
            path,
            &run.model,
            &mut run.optimizer,
            run.step,
            &TEXT_METADATA,
        )?;
        Ok(run)
    }

    /// `docs` (each a list of sentence rows) corrupted with `rng` into one batch.
    pub fn example(&self, docs: &[Vec<&[u32]>], rng: &mut SeededRng) -> Example {
        let room = self.config.model.max_positions - 2;
        let Specials {
            pad,
            cls,
            sep,
            mask,
            ..
        } = self.specials;
        let (mut src, mut tgt, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for doc in docs {
            let sentences: Vec<Vec<u32>> = doc.iter().map(|s| body(s)).collect();
            let mut clean = sentences.concat();
            clean.truncate(room);
            let mut noisy = self
                .config
                .noise
                .apply(&sentences, self.config.noise_ratio, mask, rng);
            noisy.truncate(room);
            src.push([&[cls][..], &noisy, &[sep]].concat());
            tgt.push([&[cls][..], &clean].concat());
            out.push([&clean[..], &[sep]].concat());
        }
        let tgt = Batch::pad(&tgt, pad);
        let mut targets = vec![-100i64; tgt.ids.len()];
        for (i, o) in out.iter().enumerate() {
            for (j, &t) in o.iter().enumerate() {
                targets[i * tgt.t + j] = t as i64;
            }
        }
        Example {
            src: Batch::pad(&src, pad),
            tgt,
            targets,
        }
    }

    /// One AdamW step on batch `step`: documents of random training sentences, corrupted.
    pub fn train_step(&mut self, train: &[(Vec<u32>, u32)]) -> Result<f32, Stopped> {
        let mut rng = SeededRng::seed_from_u64(
            self.config.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let docs: Vec<Vec<&[u32]>> = (0..self.config.batch)
            .map(|_| {
                (0..SENTENCES)
                    .map(|_| train[rng.random_range(0..train.len())].0.as_slice())
                    .collect()
            })
            .collect();
        let ex = self.example(&docs, &mut rng);
        let lr = self.config.schedule().lr(self.step);
        self.model.seek_dropout(self.step);
        let loss = self.model.loss(&ex.src, &ex.tgt, &ex.targets);
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

    /// Held-out documents (consecutive pairs of `rows`) under a fixed corruption.
    fn held_out_examples(&self, rows: &[(Vec<u32>, u32)]) -> Vec<Example> {
        let mut rng = SeededRng::seed_from_u64(self.config.seed ^ 0x5EED_BA27);
        let docs: Vec<Vec<&[u32]>> = rows
            .chunks_exact(SENTENCES)
            .map(|c| c.iter().map(|(r, _)| r.as_slice()).collect())
            .collect();
        docs.chunks(32).map(|d| self.example(d, &mut rng)).collect()
    }

    /// Teacher-forced token accuracy (%) and mean loss on held-out documents.
    pub fn evaluate(&self, rows: &[(Vec<u32>, u32)]) -> (f32, f32) {
        self.model.set_training(false);
        let (mut right, mut total, mut loss) = (0usize, 0usize, 0.0f64);
        no_grad(|| {
            for ex in self.held_out_examples(rows) {
                let (memory, pad) = self.model.encode(&ex.src);
                let logits = self.model.decode(&ex.tgt, &memory, &pad);
                let n = ex.targets.iter().filter(|&&t| t != -100).count();
                loss += logits.cross_entropy(&ex.targets, -100, 0.0).item() as f64 * n as f64;
                let pred = logits.argmax(1, false).to_vec();
                right += pred
                    .iter()
                    .zip(&ex.targets)
                    .filter(|&(&p, &t)| t != -100 && p as i64 == t)
                    .count();
                total += n;
            }
        });
        self.model.set_training(true);
        (
            (100.0 * right as f64 / total.max(1) as f64) as f32,
            (loss / total.max(1) as f64) as f32,
        )
    }

    pub fn save(&self, path: &Path, corpus: &Corpus) -> Result<(), String> {
        let tensors = run_tensors(
            path,
            &self.model,
            &self.optimizer,
            vec![("loss", self.history.clone())],
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

const CONFIG_FLAGS: [&str; 16] = [
    "data",
    "vocab-size",
    "steps",
    "batch",
    "ctx",
    "dim",
    "heads",
    "dropout",
    "noise",
    "noise-ratio",
    "lr",
    "weight-decay",
    "clip",
    "seed",
    "encoder-depth",
    "decoder-depth",
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bart",
    args_override_self = true,
    about = "Pre-train a small BART by denoising documents of the books (default: the Austen \
             novels and Moby-Dick), then report held-out reconstruction accuracy and examples",
    after_help = "On --resume only --steps and --lr may differ from the checkpoint's settings."
)]
pub struct Args {
    /// Text files, comma-separated
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub vocab_size: Option<String>,
    #[arg(long)]
    pub steps: Option<String>,
    /// Documents (two sentences each) per batch
    #[arg(long)]
    pub batch: Option<String>,
    /// Most tokens of a source or target
    #[arg(long)]
    pub ctx: Option<String>,
    #[arg(long)]
    pub dim: Option<String>,
    /// Encoder blocks (the decoder has --decoder-depth)
    #[arg(long)]
    pub encoder_depth: Option<String>,
    #[arg(long)]
    pub decoder_depth: Option<String>,
    #[arg(long)]
    pub heads: Option<String>,
    #[arg(long)]
    pub dropout: Option<String>,
    /// token-masking, token-deletion, text-infilling, sentence-permutation or
    /// document-rotation
    #[arg(long)]
    pub noise: Option<String>,
    /// Share of tokens masking, deletion and infilling act on
    #[arg(long)]
    pub noise_ratio: Option<String>,
    #[arg(long)]
    pub lr: Option<String>,
    #[arg(long)]
    pub weight_decay: Option<String>,
    #[arg(long)]
    pub clip: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    /// On a GPU with f16 storage: products and attention read f16 operands (f32 arithmetic,
    /// weights and gradients)
    #[arg(long)]
    pub f16: bool,
    /// Where checkpoint, config and curves go (default: runs/bart)
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 30.0)]
    pub log_every: f64,
    /// Held-out sentences evaluated (paired into documents)
    #[arg(long, default_value_t = 1000)]
    pub eval_sentences: usize,
}

/// What a finished job measured.
#[derive(Debug, Default)]
pub struct BartOutcome {
    pub steps: u64,
    pub accuracy: f32,
    pub loss: f32,
    /// (corrupted, reconstructed, original) of a few held-out documents.
    pub examples: Vec<(String, String, String)>,
}

pub fn main_with(argv: Vec<String>) -> Result<BartOutcome, String> {
    let Some((args, matches)) = parse_args::<Args>(&argv)? else {
        return Ok(BartOutcome::default());
    };
    let given: Vec<(String, String)> =
        setup::ctx_as_max_positions(flags::given(&matches, &CONFIG_FLAGS));
    cadence(args.checkpoint_every, args.log_every)?;
    let device = setup::device(args.device.as_deref())?;
    let _f16 = setup::autocast(args.f16, &device)?;
    let f16 = if args.f16 { ", f16 operands" } else { "" };
    println!("device: {}{f16}", device.name());
    let (mut config, resumed) = setup::text_config(
        &BartRunConfig::defaults(),
        &given,
        args.resume.as_ref(),
        "bart",
    )?;
    config.validate()?;
    let ctx = config.model.max_positions;
    let corpus = match &resumed {
        None => read_corpus(&config.data, config.vocab_size, ctx, None)?,
        Some((path, ck)) => {
            let tk = stored_tokenizer(ck, path)?;
            let corpus = read_corpus(&config.data, config.vocab_size, ctx, Some(tk))?;
            if ck.meta("data_crc32", path).map_err(|e| e.to_string())? != corpus.crc32 {
                return Err(format!(
                    "--data: the texts differ from those {} was trained on",
                    path.display()
                ));
            }
            corpus
        }
    };
    config.model.vocab = corpus.tokenizer.vocab_size();
    let out = prepare_out(
        args.out.as_deref(),
        PathBuf::from("runs/bart"),
        args.overwrite,
        resumed.as_ref().map(|(p, _)| p.as_path()),
    )?;
    let mut run = match &resumed {
        None => BartRun::new(config.clone(), &corpus.tokenizer, &device)?,
        Some((path, ck)) => {
            let run = BartRun::resume(ck, path, config.clone(), &corpus.tokenizer, &device)?;
            resumed_at(path, run.step, config.steps)?;
            run
        }
    };
    std::fs::write(out.join("config.json"), config.to_json())
        .map_err(|e| format!("{}: {e}", out.join("config.json").display()))?;
    let m = &config.model;
    println!(
        "BART: {} parameters, dim {}, {} + {} blocks, ctx {}; {:?} at {}; {} steps of batch {}",
        run.model
            .parameters()
            .iter()
            .map(|p| p.numel())
            .sum::<usize>(),
        m.dim,
        m.encoder_depth,
        m.decoder_depth,
        m.max_positions,
        config.noise,
        config.noise_ratio,
        config.steps,
        config.batch
    );
    let n = args.eval_sentences.min(corpus.held_out.len()) / SENTENCES * SENTENCES;
    let held_out = &corpus.held_out[..n];
    let ckpt = out.join("checkpoint.safetensors");
    train(&args, &mut run, &corpus, &ckpt, held_out)?;
    let title = format!(
        "BART d{} {}+{} ({} steps of batch {})",
        m.dim, m.encoder_depth, m.decoder_depth, config.steps, config.batch
    );
    plot_loss(&out, &title, "token cross-entropy (nats)", &run.history)?;
    let (accuracy, loss) = run.evaluate(held_out);
    println!(
        "held-out reconstruction ({} documents of {SENTENCES} sentences): token accuracy \
         {accuracy:.1} %, loss {loss:.3}",
        n / SENTENCES
    );
    let examples = examples(&run, &corpus, held_out);
    for (noisy, rebuilt, original) in &examples {
        println!("\ncorrupted:     {noisy}\nreconstructed: {rebuilt}\noriginal:      {original}");
    }
    Ok(BartOutcome {
        steps: run.step,
        accuracy,
        loss,
        examples,
    })
}

/// Three held-out documents: corrupted, greedily reconstructed, and as they were.
fn examples(
    run: &BartRun,
    corpus: &Corpus,
    held_out: &[(Vec<u32>, u32)],
) -> Vec<(String, String, String)> {
    let Some(ex) = run.held_out_examples(held_out).into_iter().next() else {
        return Vec::new();
    };
    run.model.set_training(false);
    let ids = &run.specials;
    let rebuilt = run.model.greedy(&ex.src, ids.cls, ids.sep, ex.tgt.t + 8);
    run.model.set_training(true);
    let tk = &corpus.tokenizer;
    let row = |b: &Batch, i: usize| -> Vec<u32> { b.ids[i * b.t..i * b.t + b.lens[i]].to_vec() };
    (0..3.min(ex.src.rows()))
        .map(|i| {
            // Sources keep their masks visible; targets drop the leading [CLS].
            let src = row(&ex.src, i);
            let noisy: Vec<String> = src[1..src.len() - 1]
                .split(|&t| t == ids.mask)
                .map(|piece| tk.decode(piece))
                .collect();
            (
                noisy.join(" [MASK] ").trim().to_string(),
                tk.decode(&rebuilt[i]),
                tk.decode(&row(&ex.tgt, i)[1..]),
            )
        })
        .collect()
}

impl TextRun for BartRun {
    type Data = Corpus;
    fn step(&self) -> u64 {
        self.step
    }
    fn peak_lr(&self) -> f64 {
        self.config.lr
    }
    fn train_step(&mut self, corpus: &Corpus) -> Result<f32, Stopped> {
        BartRun::train_step(self, &corpus.train)
    }
    fn save(&self, path: &Path, corpus: &Corpus) -> Result<(), String> {
        BartRun::save(self, path, corpus)
    }
}

fn train(
    args: &Args,
    run: &mut BartRun,
    corpus: &Corpus,
    ckpt: &Path,
    held_out: &[(Vec<u32>, u32)],
) -> Result<(), String> {
    let every = Cadence {
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
    };
    let total = run.config.steps;
    text_loop(run, corpus, total, ckpt, &every, |run, hb| {
        let (acc, loss) = run.evaluate(held_out);
        hb.say(format!(
            "step {}: held-out token accuracy {acc:.1} %, loss {loss:.3}",
            run.step
        ));
        Ok(false)
    })
}
