//! The BERT job as a library: masked-language-model pre-training of a small BERT on the books in
//! `data/text/` (with DeCLUTR's contrastive loss between nearby passages, `--contrast`), then
//! two measurements on held-out sentences beside honest baselines: the masked-token accuracy
//! (against always predicting the most frequent word) and a linear probe that tells which book a
//! sentence comes from (against a random-init BERT and bag-of-words).

use crate::flags;
use crate::mlm_run::{read_corpus, BertRunConfig, Corpus, MlmRun, Specials};
use crate::plot::{Chart, Kind, Series};
use crate::run::{stored_tokenizer, Stopped};
use crate::setup::{self, cadence, parse_args, prepare_out};
use crate::training::{resumed_at, text_loop, Cadence, TextRun};
use clap::Parser;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::no_grad;
use selfsup_models::bert::{mean_pool, Batch, BertMlm};
use selfsup_models::eval::{linear_probe, Features};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags that set a field of [`BertRunConfig`].
const CONFIG_FLAGS: [&str; 17] = [
    "data",
    "vocab-size",
    "steps",
    "batch",
    "ctx",
    "dim",
    "depth",
    "heads",
    "dropout",
    "mask-rate",
    "lr",
    "weight-decay",
    "clip",
    "seed",
    "rows",
    "contrast",
    "contrast-tau",
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bert",
    args_override_self = true,
    about = "Pre-train a small BERT by masked language modelling, with a contrastive loss \
             between nearby passages, on books (default: the six Austen novels and \
             Moby-Dick), then report held-out masked-token accuracy and a book-of-origin probe \
             beside baselines",
    after_help = "On --resume only --steps and --lr may differ from the checkpoint's settings."
)]
pub struct Args {
    /// Text files, comma-separated; each is one class of the probe
    #[arg(long)]
    pub data: Option<String>,
    /// WordPiece vocabulary learnt from the training sentences
    #[arg(long)]
    pub vocab_size: Option<String>,
    #[arg(long)]
    pub steps: Option<String>,
    /// Sentences per batch
    #[arg(long)]
    pub batch: Option<String>,
    /// Most tokens per sentence, [CLS] and [SEP] included
    #[arg(long)]
    pub ctx: Option<String>,
    #[arg(long)]
    pub dim: Option<String>,
    #[arg(long)]
    pub depth: Option<String>,
    #[arg(long)]
    pub heads: Option<String>,
    #[arg(long)]
    pub dropout: Option<String>,
    /// Fraction of tokens chosen for prediction (80 % masked, 10 % random, 10 % kept)
    #[arg(long)]
    pub mask_rate: Option<String>,
    /// Peak learning rate (warm-up over the first tenth, then cosine decay)
    #[arg(long)]
    pub lr: Option<String>,
    #[arg(long)]
    pub weight_decay: Option<String>,
    /// Clip the global gradient norm (0: off)
    #[arg(long)]
    pub clip: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    /// What a training row holds: sentence (one) or packed (consecutive sentences of one book,
    /// as many as fit --ctx)
    #[arg(long)]
    pub rows: Option<String>,
    /// Weight of a contrastive loss (DeCLUTR's) between rows from nearby in one book, beside
    /// the MLM loss (0: MLM alone)
    #[arg(long)]
    pub contrast: Option<String>,
    /// Temperature of the contrastive loss
    #[arg(long)]
    pub contrast_tau: Option<String>,
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    pub device: Option<String>,
    /// On a GPU with f16 storage: products and attention read f16 operands (f32 arithmetic,
    /// weights and gradients)
    #[arg(long)]
    pub f16: bool,
    /// Where checkpoint, config and curves go (default: runs/bert)
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub overwrite: bool,
    /// Continue a run from its checkpoint
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Held-out masked-token accuracy every this many steps
    #[arg(long, default_value_t = 500)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Seconds between progress lines when output is not a terminal
    #[arg(long, default_value_t = 30.0)]
    pub log_every: f64,
    /// Sentences of each set the evaluation uses (training sentences for the probe's fit)
    #[arg(long, default_value_t = 3000)]
    pub eval_sentences: usize,
    /// Score the book probe on other training sentences instead of the held-out ones (for
    /// choosing settings; the held-out ones are for the report)
    #[arg(long)]
    pub validate: bool,
}

/// What a finished job measured (percentages).
#[derive(Debug, Default)]
pub struct BertOutcome {
    pub steps: u64,
    pub masked_accuracy: f64,
    pub unigram_accuracy: f64,
    pub random_masked_accuracy: f64,
    pub probe: f64,
    pub random_probe: f64,
    pub bag_of_words_probe: f64,
}

/// The job, for `argv` (program name first); every failure is one line naming a flag or file.
pub fn main_with(argv: Vec<String>) -> Result<BertOutcome, String> {
    let Some((args, matches)) = parse_args::<Args>(&argv)? else {
        return Ok(BertOutcome::default());
    };
    // `--ctx` is the model's `max_positions`.
    let given: Vec<(String, String)> =
        setup::ctx_as_max_positions(flags::given(&matches, &CONFIG_FLAGS));
    cadence(args.checkpoint_every, args.log_every)?;
    let device = setup::device(args.device.as_deref())?;
    let _f16 = setup::autocast(args.f16, &device)?;
    let f16 = if args.f16 { ", f16 operands" } else { "" };
    println!("device: {}{f16}", device.name());
    let (mut config, resumed) = setup::text_config(
        &BertRunConfig::defaults(),
        &given,
        args.resume.as_ref(),
        "bert",
    )?;
    config.validate()?;
    let started = Instant::now();
    let corpus = match &resumed {
        None => read_corpus(
            &config.data,
            config.vocab_size,
            config.model.max_positions,
            None,
        )?,
        Some((path, ck)) => {
            let tokenizer = stored_tokenizer(ck, path)?;
            let m = &config.model;
            let corpus = read_corpus(
                &config.data,
                config.vocab_size,
                m.max_positions,
                Some(tokenizer),
            )?;
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
    if args.validate && corpus.train.len() <= args.eval_sentences {
        return Err(format!(
            "--validate: no training sentences left beyond the probe's {}; lower --eval-sentences",
            args.eval_sentences
        ));
    }
    let out = prepare_out(
        args.out.as_deref(),
        PathBuf::from("runs/bert"),
        args.overwrite,
        resumed.as_ref().map(|(p, _)| p.as_path()),
    )?;
    println!(
        "text: {} books, {} training and {} held-out sentences; WordPiece of {}",
        corpus.books.len(),
        corpus.train.len(),
        corpus.held_out.len(),
        corpus.tokenizer.describe()
    );
    let specials = || Specials::of(&corpus.tokenizer);
    let mut run = match &resumed {
        None => MlmRun::new(config.clone(), specials()?, &device),
        Some((path, ck)) => {
            let run = MlmRun::resume(ck, path, config.clone(), specials()?, &device)?;
            resumed_at(path, run.step, config.steps)?;
            run
        }
    };
    std::fs::write(out.join("config.json"), config.to_json())
        .map_err(|e| format!("{}: {e}", out.join("config.json").display()))?;
    let m = &config.model;
    println!(
        "BERT: {} parameters, dim {}, depth {}, heads {}, ctx {}; {} steps of batch {}, lr {:.1e}",
        run.model
            .parameters()
            .iter()
            .map(|p| p.numel())
            .sum::<usize>(),
        m.dim,
        m.depth,
        m.heads,
        m.max_positions,
        config.steps,
        config.batch,
        config.lr
    );
    let unigram = most_frequent(&corpus);
    let n_eval = args.eval_sentences.min(corpus.held_out.len());
    let held_out = &corpus.held_out[..n_eval];
    let ckpt = out.join("checkpoint.safetensors");
    train(&args, &mut run, &corpus, &ckpt, held_out, unigram)?;
    let title = format!(
        "BERT MLM d{} L{} ({} steps of batch {})",
        m.dim, m.depth, config.steps, config.batch
    );
    let y_label = match config.contrast > 0.0 {
        true => "masked-token cross-entropy + weighted contrastive loss (nats)",
        false => "masked-token cross-entropy (nats)",
    };
    plot_loss(&out, &title, y_label, &run.history)?;

    // The measurements, each beside the same thing from the untrained initial weights.
    let random = BertMlm::new(&mut Init::new(config.seed, &device), config.model.clone());
    let (acc, base) = run.masked_accuracy(&run.model, held_out, unigram);
    let (random_acc, _) = run.masked_accuracy(&random, held_out, unigram);
    let fit = &corpus.train[..args.eval_sentences.min(corpus.train.len())];
    let classes = corpus.books.len();
    // --validate scores the probe on the training sentences after those it is fit on.
    let scored = match args.validate {
        true => &corpus.train[fit.len()..(2 * fit.len()).min(corpus.train.len())],
        false => held_out,
    };
    let probe = |model: &BertMlm| {
        let (tr, te) = (embed(model, fit, &run), embed(model, scored, &run));
        100.0 * linear_probe(&tr, &te, classes, config.seed).accuracy
    };
    let (p, p_random) = (probe(&run.model), probe(&random));
    let vocab = corpus.tokenizer.vocab_size();
    let p_bow = 100.0
        * linear_probe(
            &bag_of_words(fit, vocab),
            &bag_of_words(scored, vocab),
            classes,
            config.seed,
        )
        .accuracy;
    println!(
        "\nheld-out sentences: {n_eval} ({} books: {}); book probe scored on {}",
        classes,
        corpus.books.join(", "),
        match args.validate {
            true => format!("{} other training sentences (--validate)", scored.len()),
            false => "them".into(),
        }
    );
    println!("| model | masked-token accuracy % | book probe % |");
    println!("|---|---|---|");
    println!("| BERT ({} steps) | {acc:.1} | {p:.1} |", run.step);
    println!("| random-init BERT | {random_acc:.1} | {p_random:.1} |");
    println!("| unigram (always the most frequent word) | {base:.1} | – |");
    println!("| bag of words | – | {p_bow:.1} |");
    println!(
        "total {:.0} s; outputs in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(BertOutcome {
        steps: run.step,
        masked_accuracy: acc,
        unigram_accuracy: base,
        random_masked_accuracy: random_acc,
        probe: p,
        random_probe: p_random,
        bag_of_words_probe: p_bow,
    })
}

/// The most frequent word (not a special token) of the training sentences.
fn most_frequent(corpus: &Corpus) -> u32 {
    let mut counts = vec![0usize; corpus.tokenizer.vocab_size()];
    for (ids, _) in &corpus.train {
        for &i in ids.iter().filter(|&&i| i >= 5) {
            counts[i as usize] += 1;
        }
    }
    (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(5) as u32
}

/// Each sentence's last hidden states averaged over its tokens, with its book as the label.
fn embed(model: &BertMlm, rows: &[(Vec<u32>, u32)], run: &MlmRun) -> Features {
    model.set_training(false);
    let dim = model.bert.config.dim;
    let mut x = Vec::with_capacity(rows.len() * dim);
    no_grad(|| {
        for chunk in rows.chunks(128) {
            let r: Vec<Vec<u32>> = chunk.iter().map(|(ids, _)| ids.clone()).collect();
            let batch = Batch::pad(&r, run.specials.pad);
            x.extend(mean_pool(&model.bert.forward(&batch), &batch).to_vec()); // (B, D)
        }
    });
    model.set_training(true);
    Features {
        x,
        y: rows.iter().map(|(_, y)| *y).collect(),
        n: rows.len(),
        dim,
    }
}

/// Word frequencies of each sentence (counts over its length), a `vocab`-wide feature.
fn bag_of_words(rows: &[(Vec<u32>, u32)], vocab: usize) -> Features {
    let mut x = vec![0.0f32; rows.len() * vocab];
    for (r, (ids, _)) in rows.iter().enumerate() {
        for &i in ids {
            x[r * vocab + i as usize] += 1.0 / ids.len() as f32;
        }
    }
    Features {
        x,
        y: rows.iter().map(|(_, y)| *y).collect(),
        n: rows.len(),
        dim: vocab,
    }
}

impl TextRun for MlmRun {
    type Data = Corpus;
    fn step(&self) -> u64 {
        self.step
    }
    fn peak_lr(&self) -> f64 {
        self.config.lr
    }
    fn train_step(&mut self, corpus: &Corpus) -> Result<f32, Stopped> {
        MlmRun::train_step(self, corpus)
    }
    fn save(&self, path: &Path, corpus: &Corpus) -> Result<(), String> {
        MlmRun::save(self, path, corpus)
    }
}

/// Trains to `config.steps` with held-out accuracy every `--eval-every` steps and a checkpoint
/// every `--checkpoint-every`; a divergence stops with the last good checkpoint named.
fn train(
    args: &Args,
    run: &mut MlmRun,
    corpus: &Corpus,
    ckpt: &Path,
    held_out: &[(Vec<u32>, u32)],
    unigram: u32,
) -> Result<(), String> {
    let every = Cadence {
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
    };
    let total = run.config.steps;
    text_loop(run, corpus, total, ckpt, &every, |run, hb| {
        let (acc, _) = run.masked_accuracy(&run.model, held_out, unigram);
        run.evals.push((run.step, acc as f32));
        hb.say(format!(
            "step {}: held-out masked-token accuracy {acc:.1} %",
            run.step
        ));
        Ok(false)
    })
}

/// `loss.csv` and `loss.png` (the training loss of every step, `history`) under `out`.
pub(crate) fn plot_loss(
    out: &Path,
    title: &str,
    y_label: &str,
    history: &[f32],
) -> Result<(), String> {
    let mut csv = String::from("step,loss\n");
    for (i, l) in history.iter().enumerate() {
        csv.push_str(&format!("{},{l}\n", i + 1));
    }
    let csv_path = out.join("loss.csv");
    std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let chart = Chart {
        title: title.into(),
        x_label: "step".into(),
        y_label: y_label.into(),
        series: vec![Series {
            name: "train".into(),
            points: history
                .iter()
                .enumerate()
                .map(|(i, &l)| ((i + 1) as f64, l as f64))
                .collect(),
        }],
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
