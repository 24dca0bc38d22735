//! The main job: SimCLR pre-training of a small ViT on unlabeled digits, then what it learned,
//! measured with few labels (linear probe, kNN) beside two baselines (raw pixels, a random
//! encoder), a checkpoint and a loss curve.
//!
//!     cargo run --release --example pretrain                 # embedded MNIST digits
//!     cargo run --release --example pretrain -- --help       # every flag

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use selfsup::engine::checkpoint;
use selfsup::engine::data::Dataset;
use selfsup::engine::nn::{Init, Module};
use selfsup::engine::Device;
use selfsup::models::eval::{
    extract_features, finetune, knn_accuracy, linear_probe, raw_pixels, Features, FinetuneConfig,
};
use selfsup::models::simclr::SimClr;
use selfsup::models::vit::{Pool, VisionTransformer, VitConfig};
use selfsup::plot::{Chart, Series};
use selfsup::simclr_run::{RunConfig, SimClrRun};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(about = "SimCLR pre-training of a ViT, then linear-probe and kNN evaluation")]
struct Args {
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    device: Option<String>,
    /// Optimizer steps of pre-training (the default takes about 7 minutes on a 2-core CPU).
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Images per batch (each gives two views).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// ViT width.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// ViT blocks.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Patch size in pixels.
    #[arg(long, default_value_t = 4)]
    patch: usize,
    /// Representation: cls (class token) or mean (of patch tokens).
    #[arg(long, default_value = "mean")]
    pool: String,
    /// NT-Xent temperature τ.
    #[arg(long, default_value_t = 0.05)]
    temperature: f64,
    /// Peak learning rate (AdamW, linear warm-up then cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Projector hidden width.
    #[arg(long, default_value_t = 128)]
    proj_hidden: usize,
    /// Projector output width.
    #[arg(long, default_value_t = 64)]
    proj_out: usize,
    /// Smallest area fraction of an image a random crop keeps.
    #[arg(long, default_value_t = 0.4)]
    crop_min: f64,
    /// Labelled IDX images file (plain or .gz); labels are found beside it.
    #[arg(long, default_value = "data/mnist9k-images-idx3-ubyte.gz")]
    data: PathBuf,
    /// A separate labelled IDX set to evaluate on (default: a held-out split of --data).
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// Images held out of --data for evaluation when no --test-data is given.
    #[arg(long, default_value_t = 1000)]
    holdout: usize,
    /// Where the checkpoint, config, loss history and plot go.
    #[arg(long, default_value = "runs/simclr")]
    out: PathBuf,
    /// Continue a run from its checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Only evaluate this checkpoint's frozen features (probe trained on --data).
    #[arg(long)]
    eval_only: Option<PathBuf>,
    /// After the frozen evaluation, fine-tune encoder + a new head on this many labelled training
    /// images (0: skip), beside a randomly initialised encoder fine-tuned the same way.
    #[arg(long, default_value_t = 0)]
    finetune_labels: usize,
    /// Epochs of fine-tuning over those labels.
    #[arg(long, default_value_t = 30)]
    finetune_epochs: usize,
    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Args {
    /// The run these flags describe, for images shaped like `data`'s.
    fn config(&self, data: &Dataset) -> Result<RunConfig, String> {
        if data.h != data.w {
            return Err(format!(
                "images are {}×{}; the ViT needs square images",
                data.h, data.w
            ));
        }
        if !(self.crop_min > 0.0 && self.crop_min <= 1.0) {
            return Err(format!(
                "--crop-min must be in (0, 1], got {}",
                self.crop_min
            ));
        }
        let vit = VitConfig {
            image: data.h,
            channels: data.c,
            patch: self.patch,
            dim: self.dim,
            depth: self.depth,
            heads: self.heads,
            mlp_ratio: 4,
            pool: self.pool.parse::<Pool>()?,
        };
        Ok(RunConfig {
            steps: self.steps,
            batch: self.batch,
            vit,
            temperature: self.temperature,
            lr: self.lr,
            weight_decay: self.weight_decay,
            proj_hidden: self.proj_hidden,
            proj_out: self.proj_out,
            crop_min: self.crop_min,
            seed: self.seed,
        })
    }
}

fn main() {
    selfsup::allocator::keep_freed_pages();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse();
    let device = match &args.device {
        Some(d) => Device::parse(d),
        None => Device::from_env(),
    }
    .map_err(|e| e.to_string())?;
    println!("device: {}", device.name());
    let data = Dataset::load_idx(&args.data).map_err(|e| e.to_string())?;
    let (train, test) = match &args.test_data {
        Some(p) => (data, Dataset::load_idx(p).map_err(|e| e.to_string())?),
        None => {
            if args.holdout >= data.n {
                return Err(format!(
                    "--holdout {} leaves no training images of {}",
                    args.holdout, data.n
                ));
            }
            let (train, test) = data.split(args.holdout, 12345);
            (train, test)
        }
    };
    if args.finetune_labels > train.n {
        return Err(format!(
            "--finetune-labels {} exceeds the {} training images",
            args.finetune_labels, train.n
        ));
    }
    println!(
        "data: {} training images, {} test images, {}×{}×{}",
        train.n, test.n, train.c, train.h, train.w
    );

    if let Some(path) = &args.eval_only {
        let ck = checkpoint::load(path).map_err(|e| e.to_string())?;
        let config = RunConfig::from_checkpoint(&ck, path).map_err(|e| e.to_string())?;
        let mut init = Init::new(config.seed, &device);
        let model = SimClr::new(
            &mut init,
            config.vit.clone(),
            config.proj_hidden,
            config.proj_out,
            config.temperature,
        );
        model
            .load_state_dict(&ck.with_prefix("model"), &path.display().to_string())
            .map_err(|e| e.to_string())?;
        let step = ck
            .meta("step", path)
            .map_err(|e| e.to_string())?
            .to_string();
        let name = format!("SimCLR ({step} steps)");
        evaluate(&config, &model.encoder, &train, &test, &device, &name)?;
        return fine_tune(
            &args,
            &config,
            &model.encoder,
            &train,
            &test,
            &device,
            &name,
        );
    }

    let train = Arc::new(train);
    let mut run = match &args.resume {
        Some(path) => {
            let run = SimClrRun::resume(path, args.steps, train.clone(), &device)
                .map_err(|e| e.to_string())?;
            println!("resumed {} at step {}", path.display(), run.step);
            run
        }
        None => SimClrRun::new(args.config(&train)?, train.clone(), &device),
    };
    let config = run.config.clone();
    let v = &config.vit;
    println!(
        "model: ViT dim {} depth {} heads {} patch {} ({} pool), projector {}→{}→{}; {} parameters",
        v.dim,
        v.depth,
        v.heads,
        v.patch,
        v.pool,
        v.dim,
        config.proj_hidden,
        config.proj_out,
        run.model.num_parameters()
    );
    let out_err = |e: std::io::Error| format!("{}: {e}", args.out.display());
    std::fs::create_dir_all(&args.out).map_err(out_err)?;
    std::fs::write(args.out.join("config.json"), config_json(&config)).map_err(out_err)?;
    let ckpt = args.out.join("checkpoint.safetensors");

    let bar = ProgressBar::new(config.steps).with_position(run.step);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}")
            .map_err(|e| e.to_string())?,
    );
    let (t0, start) = (Instant::now(), run.step);
    while run.step < config.steps {
        let (loss, lr) = run.train_step().map_err(|e| e.to_string())?;
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        bar.inc(1);
        if run.step % args.checkpoint_every == 0 || run.step == config.steps {
            run.save(&ckpt).map_err(|e| e.to_string())?;
        }
    }
    bar.finish();
    let trained = config.steps.saturating_sub(start);
    if trained > 0 {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "pre-training: {trained} steps in {secs:.1} s ({:.3} s/step, {:.2} steps/s); checkpoint {}",
            secs / trained as f64,
            trained as f64 / secs,
            ckpt.display()
        );
    }
    plot(&args.out, &config, &run.history)?;
    run.model.set_training(false);
    let name = format!("SimCLR ({} steps)", config.steps);
    evaluate(&config, &run.model.encoder, &train, &test, &device, &name)?;
    fine_tune(
        &args,
        &config,
        &run.model.encoder,
        &train,
        &test,
        &device,
        &name,
    )
}

/// Full fine-tuning on `--finetune-labels` labelled images: the pre-trained encoder (changed in
/// place, after its checkpoint was written) against a random-init one given the same budget.
fn fine_tune(
    args: &Args,
    config: &RunConfig,
    encoder: &VisionTransformer,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    name: &str,
) -> Result<(), String> {
    let n = args.finetune_labels;
    if n == 0 {
        return Ok(());
    }
    let t = Instant::now();
    let (_, labelled) = train.split(n, config.seed ^ 0x5EED);
    let cfg = FinetuneConfig {
        epochs: args.finetune_epochs,
        seed: config.seed,
        ..FinetuneConfig::default()
    };
    let ours = finetune(encoder, &labelled, test, &cfg, device);
    let mut init = Init::new(config.seed.wrapping_add(1), device);
    let random = VisionTransformer::new(&mut init, encoder.config.clone());
    let theirs = finetune(&random, &labelled, test, &cfg, device);
    println!(
        "\nfine-tuning on {n} labels, {} epochs (head lr {}, encoder lr ×{}; {:.1} s)",
        cfg.epochs,
        cfg.lr,
        cfg.encoder_lr_scale,
        t.elapsed().as_secs_f64()
    );
    println!("| method | fine-tuned accuracy % |");
    println!("|---|---|");
    println!("| {name} | {:.1} |", ours * 100.0);
    println!("| random-init ViT | {:.1} |", theirs * 100.0);
    Ok(())
}

fn config_json(config: &RunConfig) -> String {
    let mut entries: Vec<(String, String)> = config.metadata().into_iter().collect();
    entries.sort();
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("  \"{k}\": \"{v}\""))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

fn plot(out: &Path, config: &RunConfig, history: &[f32]) -> Result<(), String> {
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
    let chart = Chart {
        title: format!(
            "SimCLR NT-Xent loss (tau {}, batch {})",
            config.temperature, config.batch
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
    };
    let path = out.join("loss.png");
    chart
        .save_png(&path, 900, 500)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let csv: String = history
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{},{l}\n", i + 1))
        .collect();
    std::fs::write(out.join("loss.csv"), format!("step,loss\n{csv}")).map_err(|e| e.to_string())?;
    println!("loss curve: {} (and loss.csv)", path.display());
    Ok(())
}

/// Linear probe and kNN of the encoder's frozen features, beside the two baselines.
fn evaluate(
    config: &RunConfig,
    encoder: &VisionTransformer,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    name: &str,
) -> Result<(), String> {
    let classes = train.classes.max(test.classes);
    let t = Instant::now();
    // Effective rank is the collapse monitor for learned features (64-d); pixels get none.
    let score = |tr: &Features, te: &Features| {
        let probe = linear_probe(tr, te, classes, config.seed);
        let knn = knn_accuracy(tr, te, 20, 0.07, classes);
        let rank = if tr.dim <= 512 {
            format!("{:.1} of {}", tr.effective_rank(), tr.dim)
        } else {
            "-".to_string()
        };
        (probe.accuracy * 100.0, knn * 100.0, rank)
    };
    let feats = |enc: &VisionTransformer| {
        (
            extract_features(enc, train, 256, device),
            extract_features(enc, test, 256, device),
        )
    };
    let (tr, te) = feats(encoder);
    let ours = score(&tr, &te);
    let mut init = Init::new(config.seed.wrapping_add(1), device);
    let random = VisionTransformer::new(&mut init, encoder.config.clone());
    let (rtr, rte) = feats(&random);
    let rand_scores = score(&rtr, &rte);
    let pix = score(&raw_pixels(train), &raw_pixels(test));
    println!(
        "\nevaluation on {} held-out images ({:.1} s)",
        test.n,
        t.elapsed().as_secs_f64()
    );
    println!("| method | linear probe % | kNN % (k=20) | effective rank |");
    println!("|---|---|---|---|");
    for (label, (p, k, r)) in [
        (name.to_string(), ours),
        ("random-init ViT (frozen)".into(), rand_scores),
        ("raw pixels".into(), pix),
    ] {
        println!("| {label} | {p:.1} | {k:.1} | {r} |");
    }
    Ok(())
}
