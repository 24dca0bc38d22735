//! The GPT job as a library: train a character (or subword) GPT on a text, with train and
//! validation loss every few steps, checkpoints and a loss curve, then a sample; or sample from a
//! checkpoint. `examples/gpt.rs` is a thin `main` over [`main_with`]; every failure is one line
//! naming a flag or file.

use crate::flags;
use crate::plot::{Chart, Kind, Series};
use crate::run::{stored_tokenizer, Stopped};
use crate::setup::{self, cadence, fits_in_memory, load_checkpoint, parse_args, prepare_out};
use crate::text_run::{read_corpus, tokenize, Corpus, GptRun, GptRunConfig};
use crate::training::{resumed_at, text_loop, Cadence, TextRun};
use clap::Parser;
use selfsup_engine::nn::Module;
use selfsup_engine::Device;
use selfsup_models::gpt::{Gpt, Sampler};
use selfsup_models::method::require;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags that set a field of [`GptRunConfig`].
const CONFIG_FLAGS: [&str; 16] = [
    "data",
    "tokenizer",
    "vocab-size",
    "steps",
    "batch",
    "ctx",
    "dim",
    "depth",
    "heads",
    "dropout",
    "lr",
    "min-lr",
    "warmup",
    "weight-decay",
    "clip",
    "seed",
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "gpt",
    args_override_self = true,
    allow_negative_numbers = true,
    about = "Train a GPT on a text (default: the embedded Tiny Shakespeare, by character), report \
             train and validation loss, save a checkpoint and print a sample; or sample from a \
             checkpoint with --sample",
    after_help = "On --resume only --steps and --lr may differ from the checkpoint's settings \
                  (besides --device, --out and the evaluation, checkpoint, logging and sampling \
                  flags)."
)]
pub struct Args {
    /// Text files, plain or gzipped, comma-separated (default: embedded Tiny Shakespeare)
    #[arg(long)]
    pub data: Option<String>,
    /// char, bpe (byte-level BPE learnt from the training text) or a WordPiece vocab.txt
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Vocabulary size a bpe tokenizer learns (default 2048)
    #[arg(long)]
    pub vocab_size: Option<String>,
    /// Optimizer steps (default 2500)
    #[arg(long)]
    pub steps: Option<String>,
    /// Sequences per batch (default 32)
    #[arg(long)]
    pub batch: Option<String>,
    /// Context length in tokens (default 128)
    #[arg(long)]
    pub ctx: Option<String>,
    /// Width (default 128)
    #[arg(long)]
    pub dim: Option<String>,
    /// Blocks (default 4)
    #[arg(long)]
    pub depth: Option<String>,
    /// Attention heads (default 4)
    #[arg(long)]
    pub heads: Option<String>,
    /// Dropout on embeddings and residual branches (default 0)
    #[arg(long)]
    pub dropout: Option<String>,
    /// Peak learning rate (default 4e-3): warm-up, then cosine decay to --min-lr (default 4e-4)
    #[arg(long)]
    pub lr: Option<String>,
    #[arg(long)]
    pub min_lr: Option<String>,
    /// Warm-up steps (default 100)
    #[arg(long)]
    pub warmup: Option<String>,
    /// AdamW weight decay of matrices and embeddings (default 0.1)
    #[arg(long)]
    pub weight_decay: Option<String>,
    /// Clip the global gradient norm (default 1; 0: off)
    #[arg(long)]
    pub clip: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    pub device: Option<String>,
    /// On a GPU with f16 storage: products and attention read f16 operands (f32 arithmetic,
    /// weights and gradients)
    #[arg(long)]
    pub f16: bool,
    /// Output folder (default runs/gpt)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run already in --out
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run in this checkpoint
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Estimate train and validation loss every this many steps
    #[arg(long, default_value_t = 250)]
    pub eval_every: u64,
    /// Batches per loss estimate
    #[arg(long, default_value_t = 20)]
    pub eval_batches: usize,
    /// Stop at the first estimate whose validation loss is at most this (time-to-target runs)
    #[arg(long)]
    pub target_loss: Option<f64>,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Seconds between progress lines when not on a terminal
    #[arg(long, default_value_t = 30.0)]
    pub log_every: f64,
    /// Sample from this checkpoint instead of training
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// Text the sample continues (default: a newline)
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to sample
    #[arg(long, default_value_t = 500)]
    pub tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0: all)
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Recompute the whole window for every sampled token (to measure what the KV cache saves)
    #[arg(long)]
    pub no_cache: bool,
}

/// What a finished job measured.
#[derive(Debug, Default)]
pub struct GptOutcome {
    pub steps: u64,
    pub val_loss: Option<f32>,
    pub sample: String,
    pub seconds: f64,
}

/// The job, for `argv` (program name first).
pub fn main_with(argv: Vec<String>) -> Result<GptOutcome, String> {
    let Some((args, matches)) = parse_args::<Args>(&argv)? else {
        return Ok(GptOutcome::default());
    };
    let given = flags::given(&matches, &CONFIG_FLAGS);
    validate_options(&args)?;
    let device = setup::device(args.device.as_deref())?;
    let _f16 = setup::autocast(args.f16, &device)?;
    let f16 = if args.f16 { ", f16 operands" } else { "" };
    println!("device: {}{f16}", device.name());
    if let Some(path) = &args.sample {
        if let Some((flag, _)) = given.first() {
            return Err(format!(
                "--{flag} does not apply to --sample, which uses the checkpoint's settings"
            ));
        }
        return sample_only(&args, path, &device);
    }
    let started = Instant::now();
    let (mut config, resumed) = setup::text_config(
        &GptRunConfig::defaults(),
        &given,
        args.resume.as_ref(),
        "gpt",
    )?;
    config.validate()?;
    let text = read_corpus(&config.data)?;
    let corpus = match &resumed {
        None => tokenize(&text, &config, None)?,
        Some((path, ck)) => {
            let corpus = tokenize(&text, &config, Some(stored_tokenizer(ck, path)?))?;
            let stored = ck.meta("data_crc32", path).map_err(|e| e.to_string())?;
            if stored != corpus.crc32 {
                return Err(format!(
                    "--data {}: the text differs from the one {} was trained on",
                    config.data,
                    path.display()
                ));
            }
            corpus
        }
    };
    config.model.vocab = corpus.tokenizer.vocab_size();
    fits_in_memory(
        config.memory_estimate(),
        &format!(
            "--dim {} --depth {} --ctx {} --batch {} (vocabulary {})",
            config.model.dim,
            config.model.depth,
            config.model.ctx,
            config.batch,
            config.model.vocab
        ),
    )?;
    let out = prepare_out(
        args.out.as_deref(),
        PathBuf::from("runs/gpt"),
        args.overwrite,
        resumed.as_ref().map(|(p, _)| p.as_path()),
    )?;
    println!(
        "text: {} ({} tokenizer, vocabulary {}): {} training and {} validation tokens",
        config.data,
        config.tokenizer,
        corpus.tokenizer.describe(),
        corpus.train.len(),
        corpus.val.len()
    );
    let train_ids = corpus.train.clone();
    let mut run = match &resumed {
        None => GptRun::new(config.clone(), train_ids, &device)?,
        Some((path, ck)) => {
            let run = GptRun::resume(ck, path, config.clone(), train_ids, &device)?;
            resumed_at(path, run.step, config.steps)?;
            run
        }
    };
    std::fs::write(out.join("config.json"), config.to_json())
        .map_err(|e| format!("{}: {e}", out.join("config.json").display()))?;
    println!(
        "GPT: {} parameters, ctx {}, dim {}, depth {}, heads {}; {} steps of batch {}",
        run.model
            .parameters()
            .iter()
            .map(|p| p.numel())
            .sum::<usize>(),
        config.model.ctx,
        config.model.dim,
        config.model.depth,
        config.model.heads,
        config.steps,
        config.batch
    );
    let ckpt = out.join("checkpoint.safetensors");
    train(&args, &mut run, &corpus, &ckpt)?;
    plot(&out, &run)?;
    let val_loss = run.evals.last().map(|e| e.2);
    let mut sampler = Sampler::new(args.temperature, top_k(&args), config.seed);
    let prompt = args.prompt.clone().unwrap_or_else(|| "\n".into());
    let sample = generate(&run.model, &corpus, &prompt, &args, &mut sampler)?;
    std::fs::write(out.join("sample.txt"), &sample)
        .map_err(|e| format!("{}: {e}", out.join("sample.txt").display()))?;
    println!("sample:\n{sample}\n");
    if let Some(&(step, t, v)) = run.evals.last() {
        println!("step {step}: train loss {t:.3} val loss {v:.3}");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("total {seconds:.0} s; outputs in {}", out.display());
    Ok(GptOutcome {
        steps: run.step,
        val_loss,
        sample,
        seconds,
    })
}

/// Flags that need no data to check.
fn validate_options(args: &Args) -> Result<(), String> {
    require(
        args.eval_every >= 1,
        "eval_every",
        args.eval_every,
        "at least 1",
    )?;
    require(
        args.eval_batches >= 1,
        "eval_batches",
        args.eval_batches,
        "at least 1",
    )?;
    cadence(args.checkpoint_every, args.log_every)?;
    if let Some(target) = args.target_loss {
        require(
            target.is_finite() && target > 0.0,
            "target_loss",
            target,
            "a positive number",
        )?;
    }
    require(
        args.temperature > 0.0 && args.temperature.is_finite(),
        "temperature",
        args.temperature,
        "a positive number",
    )?;
    require(
        args.tokens <= 1_000_000,
        "tokens",
        args.tokens,
        "at most 1000000",
    )
}

fn top_k(args: &Args) -> Option<usize> {
    (args.top_k > 0).then_some(args.top_k)
}

impl TextRun for GptRun {
    type Data = Corpus;
    fn step(&self) -> u64 {
        self.step
    }
    fn peak_lr(&self) -> f64 {
        self.config.lr
    }
    fn train_step(&mut self, _: &Corpus) -> Result<f32, Stopped> {
        GptRun::train_step(self)
    }
    fn save(&self, path: &Path, corpus: &Corpus) -> Result<(), String> {
        GptRun::save(self, path, corpus)
    }
    fn tokens_per_step(&self) -> Option<usize> {
        Some(self.config.batch * self.config.model.ctx)
    }
}

/// Trains to `config.steps`, estimating losses every `--eval-every` steps and saving every
/// `--checkpoint-every`; a divergence stops with the last good checkpoint named.
fn train(args: &Args, run: &mut GptRun, corpus: &Corpus, ckpt: &Path) -> Result<(), String> {
    let every = Cadence {
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
    };
    let total = run.config.steps;
    text_loop(run, corpus, total, ckpt, &every, |run, hb| {
        let t = run.evaluate(&corpus.train, args.eval_batches)?;
        let v = run.evaluate(&corpus.val, args.eval_batches)?;
        run.evals.push((run.step, t, v));
        hb.say(format!(
            "step {}: train loss {t:.3} val loss {v:.3} ({:.0} s)",
            run.step,
            hb.elapsed()
        ));
        let reached = args.target_loss.filter(|&t| f64::from(v) <= t);
        if let Some(target) = reached {
            hb.say(format!(
                "reached val loss {target} at step {} after {:.1} s",
                run.step,
                hb.elapsed()
            ));
        }
        Ok(reached.is_some())
    })
}

/// `--tokens` tokens after `prompt`, timed.
fn generate(
    model: &Gpt,
    corpus: &Corpus,
    prompt: &str,
    args: &Args,
    sampler: &mut Sampler,
) -> Result<String, String> {
    let ids = corpus
        .tokenizer
        .encode(prompt)
        .map_err(|e| format!("--prompt: {e}"))?;
    if ids.is_empty() {
        return Err("--prompt: the prompt has no tokens".into());
    }
    model.set_training(false);
    let t0 = Instant::now();
    let new = model.generate(&ids, args.tokens, sampler, !args.no_cache);
    let secs = t0.elapsed().as_secs_f64();
    model.set_training(true);
    println!(
        "sampled {} tokens in {secs:.2} s ({:.0} tokens/s, KV cache {})",
        new.len(),
        new.len() as f64 / secs.max(1e-9),
        if args.no_cache { "off" } else { "on" }
    );
    Ok(format!("{prompt}{}", corpus.tokenizer.decode(&new)))
}

/// `--sample CKPT`: the checkpoint's model continues `--prompt`.
fn sample_only(args: &Args, path: &Path, device: &Device) -> Result<GptOutcome, String> {
    let ck = load_checkpoint(path)?;
    let config = GptRun::config_of(&ck, path)?;
    let corpus = Corpus {
        tokenizer: stored_tokenizer(&ck, path)?,
        train: Vec::new(),
        val: Vec::new(),
        crc32: String::new(),
    };
    let model = GptRun::model_of(&ck, path, device)?;
    let mut sampler = Sampler::new(args.temperature, top_k(args), config.seed);
    let prompt = args.prompt.clone().unwrap_or_else(|| "\n".into());
    let sample = generate(&model, &corpus, &prompt, args, &mut sampler)?;
    println!("{sample}");
    Ok(GptOutcome {
        sample,
        ..GptOutcome::default()
    })
}

/// `loss.png` (every step's training loss, and the train and validation estimates) and
/// `loss.csv` under `out`.
fn plot(out: &Path, run: &GptRun) -> Result<(), String> {
    let mut csv = String::from("step,loss\n");
    for (i, l) in run.history.iter().enumerate() {
        csv.push_str(&format!("{},{l}\n", i + 1));
    }
    let csv_path = out.join("loss.csv");
    std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let point = |f: fn(&(u64, f32, f32)) -> f32| {
        run.evals
            .iter()
            .map(|e| (e.0 as f64, f(e) as f64))
            .collect::<Vec<_>>()
    };
    let chart = Chart {
        title: format!(
            "GPT d{} L{} ctx{} ({} steps of batch {})",
            run.config.model.dim,
            run.config.model.depth,
            run.config.model.ctx,
            run.config.steps,
            run.config.batch
        ),
        x_label: "step".into(),
        y_label: "cross-entropy (nats/token)".into(),
        series: vec![
            Series {
                name: "train (per step)".into(),
                points: run
                    .history
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| ((i + 1) as f64, l as f64))
                    .collect(),
            },
            Series {
                name: "train (estimate)".into(),
                points: point(|e| e.1),
            },
            Series {
                name: "validation".into(),
                points: point(|e| e.2),
            },
        ],
        log_y: false,
        kind: Kind::Line,
    };
    let png = out.join("loss.png");
    chart
        .save_png(&png, 800, 500)
        .map_err(|e| format!("{}: {e}", png.display()))?;
    println!("curves: {} (loss.csv)", png.display());
    Ok(())
}
