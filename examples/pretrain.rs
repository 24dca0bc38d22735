//! The main job: SimCLR pre-training of a small ViT on unlabeled digits, then what it learned,
//! measured with few labels (linear probe, kNN) beside two baselines (raw pixels, a random
//! encoder), a checkpoint and a loss curve.
//!
//!     cargo run --release --example pretrain                 # embedded MNIST digits
//!     cargo run --release --example pretrain -- --help       # every flag

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use selfsup::engine::checkpoint::{self, Checkpoint};
use selfsup::engine::data::{two_views, Augment, Dataset, Loader};
use selfsup::engine::nn::{Init, Module};
use selfsup::engine::optim::{param_groups, AdamW, Optimizer, WarmupCosine};
use selfsup::engine::{Device, Tensor};
use selfsup::models::eval::{extract_features, knn_accuracy, linear_probe, raw_pixels, Features};
use selfsup::models::simclr::SimClr;
use selfsup::models::vit::{Pool, VisionTransformer, VitConfig};
use selfsup::plot::{Chart, Series};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(about = "SimCLR pre-training of a ViT, then linear-probe and kNN evaluation")]
struct Args {
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    device: Option<String>,
    /// Optimizer steps of pre-training (the default fits ~10 minutes on a 2-core CPU).
    #[arg(long, default_value_t = 400)]
    steps: u64,
    /// Images per batch (each gives two views).
    #[arg(long, default_value_t = 256)]
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
    #[arg(long, default_value = "cls")]
    pool: String,
    /// NT-Xent temperature τ.
    #[arg(long, default_value_t = 0.2)]
    temperature: f64,
    /// Peak learning rate (AdamW, linear warm-up then cosine decay).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Projector hidden width.
    #[arg(long, default_value_t = 128)]
    proj_hidden: usize,
    /// Projector output width.
    #[arg(long, default_value_t = 64)]
    proj_out: usize,
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
    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Flags that define the model and the run, stored in the checkpoint and restored on resume.
const RUN_KEYS: [&str; 13] = [
    "steps",
    "batch",
    "dim",
    "depth",
    "heads",
    "patch",
    "pool",
    "temperature",
    "lr",
    "weight_decay",
    "proj_hidden",
    "proj_out",
    "seed",
];

impl Args {
    fn metadata(&self) -> HashMap<String, String> {
        let v = [
            self.steps.to_string(),
            self.batch.to_string(),
            self.dim.to_string(),
            self.depth.to_string(),
            self.heads.to_string(),
            self.patch.to_string(),
            self.pool.clone(),
            self.temperature.to_string(),
            self.lr.to_string(),
            self.weight_decay.to_string(),
            self.proj_hidden.to_string(),
            self.proj_out.to_string(),
            self.seed.to_string(),
        ];
        RUN_KEYS.iter().map(|k| k.to_string()).zip(v).collect()
    }

    /// Takes the run-defining flags from a checkpoint's metadata.
    fn restore(&mut self, ck: &Checkpoint, path: &Path) -> Result<(), String> {
        let get = |k: &str| {
            ck.meta(k, path)
                .map_err(|e| e.to_string())
                .map(str::to_string)
        };
        let num = |k: &str| -> Result<f64, String> {
            get(k)?
                .parse::<f64>()
                .map_err(|e| format!("{}: metadata {k}: {e}", path.display()))
        };
        self.batch = num("batch")? as usize;
        self.dim = num("dim")? as usize;
        self.depth = num("depth")? as usize;
        self.heads = num("heads")? as usize;
        self.patch = num("patch")? as usize;
        self.pool = get("pool")?;
        self.temperature = num("temperature")?;
        self.lr = num("lr")?;
        self.weight_decay = num("weight_decay")?;
        self.proj_hidden = num("proj_hidden")? as usize;
        self.proj_out = num("proj_out")? as usize;
        self.seed = num("seed")? as u64;
        Ok(())
    }

    fn vit(&self, data: &Dataset) -> Result<VitConfig, String> {
        if data.h != data.w {
            return Err(format!(
                "images are {}×{}; the ViT needs square images",
                data.h, data.w
            ));
        }
        Ok(VitConfig {
            image: data.h,
            channels: data.c,
            patch: self.patch,
            dim: self.dim,
            depth: self.depth,
            heads: self.heads,
            mlp_ratio: 4,
            pool: self.pool.parse::<Pool>()?,
        })
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = Args::parse();
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
    println!(
        "data: {} training images, {} test images, {}×{}×{}",
        train.n, test.n, train.c, train.h, train.w
    );

    if let Some(path) = args.eval_only.clone() {
        let ck = checkpoint::load(&path).map_err(|e| e.to_string())?;
        args.restore(&ck, &path)?;
        let model = build(&args, &train, &device)?;
        model
            .load_state_dict(&ck.with_prefix("model"), &path.display().to_string())
            .map_err(|e| e.to_string())?;
        let step = ck
            .meta("step", &path)
            .map_err(|e| e.to_string())?
            .to_string();
        return evaluate(
            &args,
            &model.encoder,
            &train,
            &test,
            &device,
            &format!("SimCLR ({step} steps)"),
        );
    }

    let mut model = build(&args, &train, &device)?;
    let mut opt = AdamW::new(
        param_groups(model.named_parameters(), args.weight_decay),
        0.9,
        0.999,
        1e-8,
    );
    let mut start = 0u64;
    let mut history: Vec<f32> = Vec::new();
    if let Some(path) = args.resume.clone() {
        let ck = checkpoint::load(&path).map_err(|e| e.to_string())?;
        let steps = args.steps;
        args.restore(&ck, &path)?;
        args.steps = steps;
        model = build(&args, &train, &device)?;
        opt = AdamW::new(
            param_groups(model.named_parameters(), args.weight_decay),
            0.9,
            0.999,
            1e-8,
        );
        let src = path.display().to_string();
        model
            .load_state_dict(&ck.with_prefix("model"), &src)
            .map_err(|e| e.to_string())?;
        opt.load_state_dict(&ck.with_prefix("optim"), &src)
            .map_err(|e| e.to_string())?;
        start = ck
            .meta("step", &path)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e| format!("{src}: step: {e}"))?;
        history = ck
            .tensors
            .get("history.loss")
            .map(|t| t.to_vec())
            .unwrap_or_default();
        history.truncate(start as usize);
        println!("resumed {src} at step {start}");
    }
    println!(
        "model: ViT dim {} depth {} heads {} patch {} ({} pool), projector {}→{}→{}; {} parameters",
        args.dim,
        args.depth,
        args.heads,
        args.patch,
        args.pool,
        args.dim,
        args.proj_hidden,
        args.proj_out,
        model.num_parameters()
    );

    let train = Arc::new(train);
    let aug = Augment::mnist(train.h);
    let mut loader = Loader::new(
        train.clone(),
        args.batch,
        args.seed,
        true,
        two_views(aug.clone(), aug),
    );
    let per_epoch = loader.batches_per_epoch() as u64;
    loader = loader.starting_at((start / per_epoch) as usize, (start % per_epoch) as usize);
    let schedule = WarmupCosine {
        base_lr: args.lr,
        warmup_steps: (args.steps / 10).max(1),
        total_steps: args.steps,
        final_lr: args.lr * 0.01,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    std::fs::write(args.out.join("config.json"), config_json(&args))
        .map_err(|e| format!("{}: {e}", args.out.display()))?;

    let bar = ProgressBar::new(args.steps).with_position(start);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}")
            .map_err(|e| e.to_string())?,
    );
    let t0 = Instant::now();
    for step in start..args.steps {
        let batch = loader.next().expect("the loader is endless");
        let shape = [batch.data.n, batch.data.c, batch.data.h, batch.data.w];
        let v1 = Tensor::from_vec(batch.data.view1, &shape, &device);
        let v2 = Tensor::from_vec(batch.data.view2, &shape, &device);
        opt.zero_grad();
        let loss = model.loss(&v1, &v2);
        loss.backward();
        let lr = schedule.lr(step);
        opt.step(lr);
        let l = loss.item();
        if !l.is_finite() {
            return Err(format!(
                "loss became {l} at step {step}; try a lower --lr or a higher --temperature"
            ));
        }
        history.push(l);
        bar.set_message(format!("loss {l:.4} lr {lr:.2e}"));
        bar.inc(1);
        let done = step + 1;
        if done % args.checkpoint_every == 0 || done == args.steps {
            save(&args, &model, &opt, done, &history)?;
        }
    }
    bar.finish();
    let trained = args.steps.saturating_sub(start);
    if trained > 0 {
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "pre-training: {trained} steps in {secs:.1} s ({:.3} s/step, {:.2} steps/s)",
            secs / trained as f64,
            trained as f64 / secs
        );
    }
    plot(&args, &history)?;
    model.set_training(false);
    evaluate(
        &args,
        &model.encoder,
        &train,
        &test,
        &device,
        &format!("SimCLR ({} steps)", args.steps),
    )
}

fn build(args: &Args, train: &Dataset, device: &Device) -> Result<SimClr, String> {
    let mut init = Init::new(args.seed, device);
    Ok(SimClr::new(
        &mut init,
        args.vit(train)?,
        args.proj_hidden,
        args.proj_out,
        args.temperature,
    ))
}

fn save(
    args: &Args,
    model: &SimClr,
    opt: &AdamW,
    step: u64,
    history: &[f32],
) -> Result<(), String> {
    let mut tensors: Vec<(String, Tensor)> = model
        .state_dict()
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
    tensors.extend(
        opt.state_dict()
            .into_iter()
            .map(|(k, v)| (format!("optim.{k}"), v)),
    );
    tensors.push((
        "history.loss".into(),
        Tensor::from_vec(history.to_vec(), &[history.len()], &Device::Cpu),
    ));
    let mut meta = args.metadata();
    meta.insert("step".into(), step.to_string());
    meta.insert("method".into(), "simclr".into());
    checkpoint::save(&args.out.join("checkpoint.safetensors"), &tensors, &meta)
        .map_err(|e| e.to_string())
}

fn config_json(args: &Args) -> String {
    let mut entries: Vec<(String, String)> = args.metadata().into_iter().collect();
    entries.sort();
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("  \"{k}\": \"{v}\""))
        .collect();
    format!("{{\n  \"method\": \"simclr\",\n{}\n}}\n", body.join(",\n"))
}

fn plot(args: &Args, history: &[f32]) -> Result<(), String> {
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
            args.temperature, args.batch
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
    let path = args.out.join("loss.png");
    chart
        .save_png(&path, 900, 500)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let csv: String = history
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{},{l}\n", i + 1))
        .collect();
    std::fs::write(args.out.join("loss.csv"), format!("step,loss\n{csv}"))
        .map_err(|e| e.to_string())?;
    println!("loss curve: {} (and loss.csv)", path.display());
    Ok(())
}

/// Linear probe and kNN of the encoder's frozen features, beside the two baselines.
fn evaluate(
    args: &Args,
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
        let probe = linear_probe(tr, te, classes, args.seed);
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
    let mut init = Init::new(args.seed.wrapping_add(1), device);
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
