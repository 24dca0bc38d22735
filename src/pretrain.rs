//! The main job as a library: parse flags, validate everything before any work, pre-train any
//! method with checkpoints and a visible heartbeat, then measure the representation beside
//! honest baselines. `examples/pretrain.rs` is a thin `main` over [`main_with`]; tests drive the
//! same function with bad input.

use crate::flags;
use crate::plot::{Chart, Kind, Series};
use crate::report::{self, Row};
use crate::run::{OptimConfig, OptimizerKind, Run, RunConfig};
use clap::{CommandFactory, FromArgMatches, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use selfsup_engine::checkpoint;
use selfsup_engine::data::Dataset;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::Device;
use selfsup_models::eval::{extract_features, knn_accuracy};
use selfsup_models::method::{require, MethodConfig};
use selfsup_models::views::{Recipe, ViewsConfig};
use selfsup_models::vit::{Pool, VisionTransformer, VitConfig};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Flags that set a field of the run configuration (the rest say where and how to run).
const CONFIG_FLAGS: [&str; 27] = [
    "method",
    "steps",
    "batch",
    "lr",
    "weight-decay",
    "optimizer",
    "clip",
    "dim",
    "depth",
    "heads",
    "patch",
    "pool",
    "recipe",
    "crop-min",
    "seed",
    "temperature",
    "proj-hidden",
    "proj-out",
    "pred-hidden",
    "tau-base",
    "tau",
    "queue",
    "lambda",
    "freeze-patch-embed",
    "mlp-ratio",
    "image",
    "pred-lr",
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pretrain",
    args_override_self = true,
    allow_negative_numbers = true,
    about = "Self-supervised pre-training of a ViT (SimCLR, BYOL, SimSiam, MoCo v2/v3, Barlow \
             Twins), then linear-probe and kNN evaluation beside raw pixels and a random encoder",
    after_help = "On --resume only --steps and --lr may differ from the checkpoint's settings \
                  (besides --device, --out, --checkpoint-every, --eval-every, --log-every and the \
                  evaluation flags); any other changed setting is an error."
)]
pub struct Args {
    /// simclr, byol, simsiam, moco-v2, moco-v3 or barlow
    #[arg(long, default_value = "simclr")]
    pub method: String,
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    pub device: Option<String>,
    /// Optimizer steps of pre-training (default: the method's, about 7 minutes on 2 cores)
    #[arg(long)]
    pub steps: Option<String>,
    /// Images per batch (each gives one view per recipe)
    #[arg(long)]
    pub batch: Option<String>,
    /// Peak learning rate (warm-up over the first tenth, then cosine decay)
    #[arg(long)]
    pub lr: Option<String>,
    #[arg(long)]
    pub weight_decay: Option<String>,
    /// adamw, lars or sgd
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Clip the global gradient norm (0: off)
    #[arg(long)]
    pub clip: Option<String>,
    /// ViT width
    #[arg(long)]
    pub dim: Option<String>,
    /// ViT blocks
    #[arg(long)]
    pub depth: Option<String>,
    #[arg(long)]
    pub heads: Option<String>,
    /// Patch size in pixels
    #[arg(long)]
    pub patch: Option<String>,
    /// Representation: cls (class token) or mean (of patch tokens)
    #[arg(long)]
    pub pool: Option<String>,
    #[arg(long, hide = true)]
    pub mlp_ratio: Option<String>,
    #[arg(long, hide = true)]
    pub image: Option<String>,
    /// View recipe: digits (no flips) or clothes (flips); default: clothes for files named
    /// *fashion*, else digits
    #[arg(long)]
    pub recipe: Option<String>,
    /// Smallest area fraction a random crop keeps
    #[arg(long)]
    pub crop_min: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    /// Contrastive temperature τ (simclr, moco-v2, moco-v3)
    #[arg(long)]
    pub temperature: Option<String>,
    /// Projector hidden width
    #[arg(long)]
    pub proj_hidden: Option<String>,
    /// Projector output width
    #[arg(long)]
    pub proj_out: Option<String>,
    /// Predictor hidden width (byol, simsiam, moco-v3)
    #[arg(long)]
    pub pred_hidden: Option<String>,
    /// The predictor's learning rate as a multiple of --lr (byol, simsiam)
    #[arg(long)]
    pub pred_lr: Option<String>,
    /// Starting momentum of the EMA teacher, ramped to 1 (byol, moco-v3)
    #[arg(long)]
    pub tau_base: Option<String>,
    /// Key-encoder momentum (moco-v2)
    #[arg(long)]
    pub tau: Option<String>,
    /// Keys in the queue, at most the training images (moco-v2)
    #[arg(long)]
    pub queue: Option<String>,
    /// Weight of the redundancy-reduction term (barlow)
    #[arg(long)]
    pub lambda: Option<String>,
    /// Keep the random patch projection frozen: true or false (moco-v3)
    #[arg(long)]
    pub freeze_patch_embed: Option<String>,
    /// Labelled IDX images file (plain or .gz); labels are found beside it
    #[arg(long, default_value = "data/mnist9k-images-idx3-ubyte.gz")]
    pub data: PathBuf,
    /// A separate labelled IDX set to evaluate on (default: a held-out split of --data)
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Images held out of --data for evaluation when no --test-data is given
    #[arg(long, default_value_t = 1000)]
    pub holdout: usize,
    /// Where checkpoint, config, curves and plots go (default: runs/METHOD)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace whatever run --out already holds
    #[arg(long)]
    pub overwrite: bool,
    /// Continue a run from its checkpoint
    #[arg(long, conflicts_with = "eval_only")]
    pub resume: Option<PathBuf>,
    /// Only evaluate this checkpoint's frozen encoder (probe trained on --data)
    #[arg(long)]
    pub eval_only: Option<PathBuf>,
    /// Save a checkpoint every this many steps (and at the end)
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    /// Online kNN accuracy on 1,000 validation images of --data every this many steps (0: never)
    #[arg(long, default_value_t = 250)]
    pub eval_every: u64,
    /// Seconds between progress lines when output is not a terminal
    #[arg(long, default_value_t = 10.0)]
    pub log_every: f64,
    /// Only pre-train: skip the evaluation after training (use --eval-only later)
    #[arg(long)]
    pub skip_eval: bool,
    /// Add a supervised ceiling: the same ViT trained on every training label
    #[arg(long)]
    pub supervised_baseline: bool,
    /// Epochs of the supervised ceiling
    #[arg(long, default_value_t = 20)]
    pub supervised_epochs: usize,
    /// After the frozen evaluation, fine-tune encoder + a new head on this many labelled
    /// training images (0: skip), beside a randomly initialised encoder fine-tuned the same way
    #[arg(long, default_value_t = 0)]
    pub finetune_labels: usize,
    /// Epochs of fine-tuning over those labels
    #[arg(long, default_value_t = 30)]
    pub finetune_epochs: usize,
}

/// What a finished job measured: the results table's rows, the method's first.
pub struct Outcome {
    pub title: String,
    pub rows: Vec<Row>,
    pub seconds: f64,
}

/// The defaults of `method` for images of `data`: each method's budget fits about 7 minutes of
/// this project's 2-core CPU.
pub fn defaults(method: &str, data: &Dataset, recipe: Recipe) -> Result<RunConfig, String> {
    let method = MethodConfig::named(method)?;
    let steps = match &method {
        // Steps with a teacher forward (BYOL, MoCo v3) or per-view batches cost more each.
        // (measured here: 0.31 s per step for BYOL and MoCo v3, 0.23 Barlow, 0.16 MoCo v2,
        // 0.20–0.21 SimCLR and SimSiam at batch 128).
        MethodConfig::Byol(_) | MethodConfig::MocoV3(_) => 1300,
        MethodConfig::Barlow(_) => 1800,
        MethodConfig::MocoV2(_) => 2500,
        _ => 2000,
    };
    Ok(RunConfig {
        method,
        vit: VitConfig {
            image: data.h,
            channels: data.c,
            patch: 4,
            dim: 64,
            depth: 4,
            heads: 4,
            mlp_ratio: 4,
            pool: Pool::Mean,
        },
        views: ViewsConfig {
            recipe,
            crop_min: 0.4,
        },
        optim: OptimConfig {
            optimizer: OptimizerKind::Adamw,
            lr: 2e-3,
            weight_decay: 0.05,
            clip: 0.0,
        },
        steps,
        batch: 128,
        seed: 0,
    })
}

/// The job, for `argv` (program name first). Every failure is one line naming a flag or file.
pub fn main_with(argv: Vec<String>) -> Result<Outcome, String> {
    let matches = match Args::command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            print!("{e}");
            return Ok(Outcome {
                title: String::new(),
                rows: Vec::new(),
                seconds: 0.0,
            });
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            return Err(first.trim_start_matches("error: ").to_string());
        }
    };
    let args = Args::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let given: Vec<(String, String)> = CONFIG_FLAGS
        .iter()
        .filter(|f| {
            matches.value_source(&f.replace('-', "_"))
                == Some(clap::parser::ValueSource::CommandLine)
        })
        .filter_map(|f| {
            matches
                .get_one::<String>(&f.replace('-', "_"))
                .map(|v| (f.to_string(), v.clone()))
        })
        .collect();
    validate_options(&args)?;
    let device = match &args.device {
        Some(d) => Device::parse(d),
        None => Device::from_env(),
    }
    .map_err(|e| e.to_string())?;
    println!("device: {}", device.name());
    let (train, test) = load_data(&args)?;

    if let Some(path) = &args.eval_only {
        return eval_only(&args, &given, path, &train, &test, &device);
    }
    let started = Instant::now();
    let (config, resumed) = configure(&args, &given, &train)?;
    check_memory(&config)?;
    let out = prepare_out(&args, &config, resumed.as_ref().map(|(p, _)| p.as_path()))?;

    let train = Arc::new(train);
    let mut run = match resumed {
        Some((path, ck)) => {
            let run = Run::resume(&ck, &path, config, train.clone(), &device)?;
            println!("resumed {} at step {}", path.display(), run.step);
            run
        }
        None => Run::new(config, train.clone(), &device),
    };
    let config = run.config.clone();
    let v = &config.vit;
    println!(
        "method: {}; ViT dim {} depth {} heads {} patch {} ({} pool); {} trainable parameters; \
         {} steps of batch {}, {:?} lr {:.1e}; recipe {:?}",
        config.method.title(),
        v.dim,
        v.depth,
        v.heads,
        v.patch,
        v.pool,
        run.model.num_parameters(),
        config.steps,
        config.batch,
        config.optim.optimizer,
        config.optim.lr,
        config.views.recipe,
    );
    std::fs::write(out.join("config.json"), config.to_json() + "\n")
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let ckpt = out.join("checkpoint.safetensors");
    train_loop(&args, &mut run, &train, &device, &ckpt)?;
    plot_curves(&out, &run)?;

    let title = format!("{} ({} steps)", config.method.title(), config.steps);
    if args.skip_eval {
        return Ok(Outcome {
            title,
            rows: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    run.model.set_training(false);
    let rows = report::evaluate(
        &title,
        run.model.encoder(),
        &train,
        &test,
        &device,
        config.seed,
        args.supervised_baseline.then_some(args.supervised_epochs),
    );
    report::print_table(&rows);
    report::pca_scatter(
        run.model.encoder(),
        &test,
        &device,
        &out.join("pca.png"),
        &title,
    )?;
    report::fine_tune(
        args.finetune_labels,
        args.finetune_epochs,
        run.model.encoder(),
        &train,
        &test,
        &device,
        config.seed,
        &title,
    );
    Ok(Outcome {
        title,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Flags that need no data to check.
fn validate_options(args: &Args) -> Result<(), String> {
    require(
        args.checkpoint_every >= 1,
        "checkpoint_every",
        args.checkpoint_every,
        "at least 1",
    )?;
    require(
        args.log_every > 0.0 && args.log_every.is_finite(),
        "log_every",
        args.log_every,
        "a positive number of seconds",
    )?;
    require(
        args.supervised_epochs >= 1,
        "supervised_epochs",
        args.supervised_epochs,
        "at least 1",
    )?;
    require(
        args.finetune_epochs >= 1,
        "finetune_epochs",
        args.finetune_epochs,
        "at least 1",
    )
}

/// Training and test sets, checked against each other before any work.
fn load_data(args: &Args) -> Result<(Dataset, Dataset), String> {
    let data = Dataset::load_idx(&args.data).map_err(|e| e.to_string())?;
    let (train, test) = match &args.test_data {
        Some(p) => {
            let test = Dataset::load_idx(p).map_err(|e| e.to_string())?;
            if (test.c, test.h, test.w) != (data.c, data.h, data.w) {
                return Err(format!(
                    "{}: images are {}×{}×{}, but --data's are {}×{}×{}",
                    p.display(),
                    test.c,
                    test.h,
                    test.w,
                    data.c,
                    data.h,
                    data.w
                ));
            }
            if test.classes > data.classes {
                return Err(format!(
                    "{}: has label {}, but --data has only {} classes",
                    p.display(),
                    test.classes - 1,
                    data.classes
                ));
            }
            (data, test)
        }
        None => {
            if args.holdout == 0 || args.holdout >= data.n {
                return Err(format!(
                    "--holdout must be between 1 and {} (the images of --data less one), got {}",
                    data.n.saturating_sub(1),
                    args.holdout
                ));
            }
            data.split(args.holdout, 12345)
        }
    };
    if train.h != train.w {
        return Err(format!(
            "{}: images are {}×{}; the ViT needs square images",
            args.data.display(),
            train.h,
            train.w
        ));
    }
    if args.finetune_labels > train.n {
        return Err(format!(
            "--finetune-labels {} exceeds the {} training images",
            args.finetune_labels, train.n
        ));
    }
    println!(
        "data: {} training images, {} test images, {}×{}×{}, {} classes",
        train.n, test.n, train.c, train.h, train.w, train.classes
    );
    Ok((train, test))
}

/// The recipe a data file suggests: clothes for Fashion-MNIST, digits otherwise.
fn recipe_for(path: &Path) -> Recipe {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if name.is_some_and(|n| n.contains("fashion")) {
        Recipe::Clothes
    } else {
        Recipe::Digits
    }
}

type Resumed = Option<(PathBuf, checkpoint::Checkpoint)>;

/// Every config field of every method.
fn all_fields(train: &Dataset) -> Vec<String> {
    MethodConfig::NAMES
        .iter()
        .flat_map(|m| flags::field_names(&defaults(m, train, Recipe::Digits).expect("known")))
        .collect()
}

/// The run's configuration from the flags: over the method's defaults for a new run, over the
/// checkpoint's own configuration on `--resume`.
fn configure(
    args: &Args,
    given: &[(String, String)],
    train: &Dataset,
) -> Result<(RunConfig, Resumed), String> {
    let all_fields = all_fields(train);
    let (config, resumed) = match &args.resume {
        None => {
            let base = defaults(&args.method, train, recipe_for(&args.data))?;
            (flags::apply(&base, given, &all_fields, false)?, None)
        }
        Some(path) => {
            let ck = checkpoint::load(path).map_err(|e| e.to_string())?;
            if !ck.checksummed {
                eprintln!("warning: {} has no checksum (written by an older selfsup); its contents cannot be verified", path.display());
            }
            let stored = Run::config_of(&ck, path)?;
            let step: u64 = ck
                .meta("step", path)
                .map_err(|e| e.to_string())?
                .parse()
                .map_err(|e| format!("{}: metadata step: {e}", path.display()))?;
            let config = flags::apply(&stored, given, &all_fields, true)?;
            if config.steps < step {
                return Err(format!(
                    "--steps {} is below the {step} steps {} has already taken",
                    config.steps,
                    path.display()
                ));
            }
            (config, Some((path.clone(), ck)))
        }
    };
    if (config.vit.image, config.vit.channels) != (train.h, train.c) {
        return Err(format!(
            "{}: images are {}×{}×{}, the run was made for {}×{}×{}",
            args.data.display(),
            train.c,
            train.h,
            train.w,
            config.vit.channels,
            config.vit.image,
            config.vit.image
        ));
    }
    config.validate(train)?;
    Ok((config, resumed))
}

/// Refuses a model that would not fit in memory, before allocating it.
fn check_memory(config: &RunConfig) -> Result<(), String> {
    let v = &config.vit;
    let (d, t) = (v.dim as f64, (v.patches() + 1) as f64);
    // Encoder and heads, with gradients, two Adam moments and a possible teacher copy.
    let params = v.depth as f64 * (4.0 + 2.0 * v.mlp_ratio as f64) * d * d;
    // Saved activations: about (12 + 2·mlp_ratio)·D floats and the H·T attention weights per
    // token per block, for two views, doubled for backward temporaries.
    let acts = 2.0
        * config.batch as f64
        * t
        * v.depth as f64
        * ((12.0 + 2.0 * v.mlp_ratio as f64) * d + v.heads as f64 * t)
        * 2.0;
    let bytes = 4.0 * (5.0 * params + acts);
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib * 1024.0);
    match available {
        Some(avail) if bytes > avail => Err(format!(
            "--dim {} --depth {} --batch {} would need about {:.1} GiB, more than the {:.1} GiB \
             of memory available",
            v.dim,
            v.depth,
            config.batch,
            bytes / 1073741824.0,
            avail / 1073741824.0
        )),
        _ => Ok(()),
    }
}

/// The output folder, refusing to replace another run's files unless `--overwrite` says so.
fn prepare_out(args: &Args, config: &RunConfig, resumed: Option<&Path>) -> Result<PathBuf, String> {
    let out = match (&args.out, resumed) {
        (Some(o), _) => o.clone(),
        (None, Some(ck)) => ck.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => PathBuf::from("runs").join(config.method.name()),
    };
    let same_run = resumed.is_some_and(|ck| {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        canon(&out).is_some() && canon(ck.parent().unwrap_or(Path::new("."))) == canon(&out)
    });
    if !same_run && !args.overwrite {
        if let Ok(mut entries) = std::fs::read_dir(&out) {
            if let Some(Ok(first)) = entries.next() {
                return Err(format!(
                    "--out {} already holds a run ({}); pass --overwrite to replace it, --resume \
                     {} to continue it, or another --out",
                    out.display(),
                    first.file_name().to_string_lossy(),
                    out.join("checkpoint.safetensors").display()
                ));
            }
        }
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    Ok(out)
}

/// Steps until the configured total, with checkpoints, the online kNN monitor and a heartbeat:
/// a bar on a terminal, a plain line every `--log-every` seconds otherwise (logs, CI).
fn train_loop(
    args: &Args,
    run: &mut Run,
    train: &Dataset,
    device: &Device,
    ckpt: &Path,
) -> Result<(), String> {
    let total = run.config.steps;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total).with_position(run.step);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}")
                .expect("a valid template"),
        );
        bar
    });
    let (bank, val) = monitor_split(train);
    let (t0, start) = (Instant::now(), run.step);
    let mut last_log = Instant::now();
    // A resumed run's own checkpoint is its last good one until it saves again.
    let mut saved: Option<u64> = (run.step > 0 && ckpt.exists()).then_some(run.step);
    while run.step < total {
        let stats = run.train_step().map_err(|d| {
            let resume = match saved {
                Some(step) => format!(
                    "{} still holds step {step}; resume it with a lower rate: --resume {} --lr {:.0e}",
                    ckpt.display(),
                    ckpt.display(),
                    run.config.optim.lr / 10.0
                ),
                None => format!(
                    "no checkpoint was written; start again with a lower rate, e.g. --lr {:.0e}",
                    run.config.optim.lr / 10.0
                ),
            };
            format!("{d}; {resume}")
        })?;
        let msg = format!("loss {:.4} lr {:.2e}", stats.loss, stats.lr);
        match &bar {
            Some(bar) => {
                bar.set_message(msg.clone());
                bar.inc(1);
            }
            None if last_log.elapsed().as_secs_f64() >= args.log_every || run.step == total => {
                let rate = (run.step - start) as f64 / t0.elapsed().as_secs_f64();
                let eta = (total - run.step) as f64 / rate.max(1e-9);
                println!(
                    "step {}/{total} {msg} {rate:.2} steps/s ETA {:.0}m{:02.0}s",
                    run.step,
                    (eta / 60.0).floor(),
                    eta % 60.0
                );
                last_log = Instant::now();
            }
            None => {}
        }
        if args.eval_every > 0 && (run.step.is_multiple_of(args.eval_every) || run.step == total) {
            let acc = online_knn(run.model.encoder(), &bank, &val, device);
            run.knn_history.push((run.step, acc));
            let line = format!("step {}: online kNN {acc:.1} % (validation)", run.step);
            match &bar {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
        }
        if run.step.is_multiple_of(args.checkpoint_every) || run.step == total {
            run.save(ckpt)?;
            saved = Some(run.step);
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    let trained = total.saturating_sub(start);
    if trained > 0 {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "pre-training: {trained} steps in {secs:.1} s ({:.3} s/step); checkpoint {}",
            secs / trained as f64,
            ckpt.display()
        );
    }
    Ok(())
}

/// The online kNN monitor's labelled bank and validation queries, both from the training images
/// (never the test set, so that settings chosen by watching it are not chosen on the test set):
/// up to 2,000 and 1,000 of them.
fn monitor_split(train: &Dataset) -> (Dataset, Dataset) {
    let val = (train.n / 4).min(1000);
    let bank = (train.n - val).min(2000);
    let pick = |r: std::ops::Range<usize>| train.subset(&r.collect::<Vec<_>>());
    (pick(0..bank), pick(train.n - val..train.n))
}

/// kNN accuracy (%) of `val` against `bank`, with the encoder in evaluation mode.
fn online_knn(encoder: &VisionTransformer, bank: &Dataset, val: &Dataset, device: &Device) -> f32 {
    encoder.set_training(false);
    let (b, v) = (
        extract_features(encoder, bank, 256, device),
        extract_features(encoder, val, 256, device),
    );
    encoder.set_training(true);
    (knn_accuracy(&b, &v, 20, 0.07, bank.classes.max(val.classes)) * 100.0) as f32
}

/// `loss.png` and `loss.csv`, and `knn.png` when the monitor ran.
fn plot_curves(out: &Path, run: &Run) -> Result<(), String> {
    let history = &run.history;
    let raw: Vec<(f64, f64)> = history
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as f64 + 1.0, l as f64))
        .collect();
    let w = (history.len() / 50).max(1);
    let smooth: Vec<(f64, f64)> = history
        .windows(w)
        .enumerate()
        .map(|(i, win)| {
            (
                (i + w) as f64,
                win.iter().map(|&v| v as f64).sum::<f64>() / w as f64,
            )
        })
        .collect();
    let c = &run.config;
    let loss = Chart {
        title: format!(
            "{} loss (batch {}, lr {:.0e})",
            c.method.title(),
            c.batch,
            c.optim.lr
        ),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![
            Series {
                name: "loss".into(),
                points: raw,
            },
            Series {
                name: format!("mean of {w}"),
                points: smooth,
            },
        ],
        log_y: false,
        kind: Kind::Line,
    };
    let save = |chart: &Chart, name: &str| {
        let path = out.join(name);
        chart
            .save_png(&path, 900, 500)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    save(&loss, "loss.png")?;
    let csv: String = history
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{},{l}\n", i + 1))
        .collect();
    std::fs::write(out.join("loss.csv"), format!("step,loss\n{csv}"))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let mut plots = "loss.png".to_string();
    if !run.knn_history.is_empty() {
        let knn = Chart {
            title: format!(
                "{}: online kNN accuracy on validation images",
                c.method.title()
            ),
            x_label: "step".into(),
            y_label: "kNN accuracy %".into(),
            series: vec![Series {
                name: "kNN (k=20)".into(),
                points: run
                    .knn_history
                    .iter()
                    .map(|&(s, a)| (s as f64, a as f64))
                    .collect(),
            }],
            log_y: false,
            kind: Kind::Line,
        };
        save(&knn, "knn.png")?;
        plots += ", knn.png";
    }
    println!("curves: {} ({plots}, loss.csv)", out.display());
    Ok(())
}

/// `--eval-only CKPT`: the checkpoint's frozen encoder measured as after training.
fn eval_only(
    args: &Args,
    given: &[(String, String)],
    path: &Path,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let ck = checkpoint::load(path).map_err(|e| e.to_string())?;
    if !ck.checksummed {
        eprintln!("warning: {} has no checksum (written by an older selfsup); its contents cannot be verified", path.display());
    }
    let config = Run::config_of(&ck, path)?;
    // Settings come from the checkpoint; a flag that says otherwise is a mistake, not a wish.
    flags::apply(&config, given, &all_fields(train), true)?;
    let v = &config.vit;
    if (v.channels, v.image, v.image) != (train.c, train.h, train.w) {
        return Err(format!(
            "{}: the encoder takes {}×{}×{} images, --data has {}×{}×{}",
            path.display(),
            v.channels,
            v.image,
            v.image,
            train.c,
            train.h,
            train.w
        ));
    }
    let model = config.method.build(
        &mut Init::new(config.seed, device),
        config.vit.clone(),
        config.views.clone(),
    );
    model
        .load_state_dict(&ck.with_prefix("model"), &path.display().to_string())
        .map_err(|e| e.to_string())?;
    model.set_training(false);
    let step = ck.meta("step", path).map_err(|e| e.to_string())?;
    let title = format!("{} ({step} steps)", config.method.title());
    let rows = report::evaluate(
        &title,
        model.encoder(),
        train,
        test,
        device,
        config.seed,
        args.supervised_baseline.then_some(args.supervised_epochs),
    );
    report::print_table(&rows);
    report::fine_tune(
        args.finetune_labels,
        args.finetune_epochs,
        model.encoder(),
        train,
        test,
        device,
        config.seed,
        &title,
    );
    Ok(Outcome {
        title,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}
