//! The main job as a library: parse flags, validate everything before any work, pre-train any
//! method with checkpoints and a visible heartbeat, then measure the representation beside
//! honest baselines. `examples/pretrain.rs` is a thin `main` over [`main_with`]; tests drive the
//! same function with bad input.

use crate::flags;
use crate::report::{self, Row};
use crate::run::{OptimConfig, OptimizerKind, Run, RunConfig};
use crate::setup::{
    self, all_fields, check_memory, configure, load_checkpoint, load_data, owner, parse_args,
    prepare_out, validate_options,
};
use crate::training::{plot_curves, train_loop};
use clap::Parser;
use selfsup_engine::data::Dataset;
use selfsup_engine::nn::Init;
use selfsup_engine::Device;
use selfsup_models::eval::{zero_shot, ZeroShot};
use selfsup_models::method::{Method, MethodConfig};
use selfsup_models::views::{Recipe, ViewsConfig};
use selfsup_models::vit::{Pool, Stem, VitConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Flags that set a field of the run configuration (the rest say where and how to run).
const CONFIG_FLAGS: [&str; 53] = [
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
    "stem",
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
    "asymmetric",
    "mask-ratio",
    "decoder-dim",
    "decoder-depth",
    "decoder-heads",
    "norm-pix-loss",
    "out-dim",
    "head-hidden",
    "bottleneck",
    "local-crops",
    "local-size",
    "student-temp",
    "warmup-teacher-temp",
    "teacher-temp",
    "teacher-temp-steps",
    "center-momentum",
    "norm-last-layer",
    "freeze-last-layer",
    "embed-dim",
    "text-dim",
    "text-depth",
    "text-heads",
    "captions",
    "head-bn",
    "centering",
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pretrain",
    args_override_self = true,
    allow_negative_numbers = true,
    about = "Self-supervised pre-training of a ViT (SimCLR, BYOL, SimSiam, MoCo v2/v3, Barlow \
             Twins, MAE, DINO, CLIP), then linear-probe and kNN evaluation beside raw pixels and \
             a random encoder",
    after_help = "On --resume only --steps and --lr may differ from the checkpoint's settings \
                  (besides --device, --out, --checkpoint-every, --eval-every, --log-every and the \
                  evaluation flags); any other changed setting is an error."
)]
pub struct Args {
    /// simclr, byol, simsiam, moco-v2, moco-v3, barlow, mae, dino or clip
    #[arg(long, default_value = "simclr")]
    pub method: String,
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    pub device: Option<String>,
    /// On a GPU with f16 storage: products and attention read f16 operands (f32 arithmetic,
    /// weights and gradients)
    #[arg(long)]
    pub f16: bool,
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
    /// Pixels to tokens: patch (a linear map of each patch) or conv (3×3 stride-2 convolutions
    /// down to the patch grid; not with mae)
    #[arg(long)]
    pub stem: Option<String>,
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
    /// Blur and solarise the views of byol, moco-v3 and barlow as BYOL's pair does: true or false
    #[arg(long)]
    pub asymmetric: Option<String>,
    /// Smallest area fraction a random crop keeps
    #[arg(long)]
    pub crop_min: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    /// Contrastive temperature τ (simclr, moco-v2, moco-v3; clip: where the learnt one starts)
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
    /// Starting momentum of the EMA teacher, ramped to 1 (byol, moco-v3, dino)
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
    /// Fraction of patches hidden from the encoder (mae)
    #[arg(long)]
    pub mask_ratio: Option<String>,
    /// Decoder width (mae)
    #[arg(long)]
    pub decoder_dim: Option<String>,
    /// Decoder blocks (mae)
    #[arg(long)]
    pub decoder_depth: Option<String>,
    /// Decoder attention heads (mae)
    #[arg(long)]
    pub decoder_heads: Option<String>,
    /// Reconstruct each patch's pixels normalised by its own mean and variance: true or false
    /// (mae)
    #[arg(long)]
    pub norm_pix_loss: Option<String>,
    /// Prototypes K of the head's last layer (dino)
    #[arg(long)]
    pub out_dim: Option<String>,
    /// Hidden width of the head's MLP (dino)
    #[arg(long)]
    pub head_hidden: Option<String>,
    /// Width of the head's L2-normalised bottleneck (dino)
    #[arg(long)]
    pub bottleneck: Option<String>,
    /// Small crops per image besides the two global ones (dino)
    #[arg(long)]
    pub local_crops: Option<String>,
    /// Side of a small crop in pixels, a multiple of --patch (dino)
    #[arg(long)]
    pub local_size: Option<String>,
    /// Student temperature (dino)
    #[arg(long)]
    pub student_temp: Option<String>,
    /// Teacher temperature at the start of its warm-up (dino)
    #[arg(long)]
    pub warmup_teacher_temp: Option<String>,
    /// Teacher temperature after its warm-up (dino)
    #[arg(long)]
    pub teacher_temp: Option<String>,
    /// Steps of the teacher temperature's linear warm-up (dino)
    #[arg(long)]
    pub teacher_temp_steps: Option<String>,
    /// Momentum of the centre of the teacher's outputs (dino)
    #[arg(long)]
    pub center_momentum: Option<String>,
    /// Keep the last layer's rows at unit norm: true or false (dino)
    #[arg(long)]
    pub norm_last_layer: Option<String>,
    /// Steps during which the last layer does not learn (dino)
    #[arg(long)]
    pub freeze_last_layer: Option<String>,
    /// BatchNorm in the head's hidden layers: true or false (dino)
    #[arg(long)]
    pub head_bn: Option<String>,
    /// The teacher's centring: mean (DINO's running centre) or sinkhorn (DINOv2's) (dino)
    #[arg(long)]
    pub centering: Option<String>,
    /// Width of the shared image–text space (clip)
    #[arg(long)]
    pub embed_dim: Option<String>,
    /// Text tower width (clip)
    #[arg(long)]
    pub text_dim: Option<String>,
    /// Text tower blocks (clip)
    #[arg(long)]
    pub text_depth: Option<String>,
    /// Text tower attention heads (clip)
    #[arg(long)]
    pub text_heads: Option<String>,
    /// Caption vocabulary: digits or clothes (Fashion-MNIST's classes); default: as --recipe
    /// (clip)
    #[arg(long)]
    pub captions: Option<String>,
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
    /// Add a supervised ceiling: the same ViT trained on every training label, on the recipe's views
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
    /// CLIP's zero-shot accuracy and retrieval recall.
    pub zero_shot: Option<ZeroShot>,
    pub seconds: f64,
}

/// The defaults of `method` for images of `data`: each method's budget fits about 7 minutes of
/// this project's 2-core CPU.
pub fn defaults(method: &str, data: &Dataset, recipe: Recipe) -> Result<RunConfig, String> {
    let mut method = MethodConfig::named(method)?;
    if let MethodConfig::Clip(c) = &mut method {
        c.captions = recipe;
    }
    // Steps fill about 6–8 minutes of pre-training on 2 cores at batch 128, DINO's about 10
    // (quiet-machine step times, 2026-12-01: SimCLR 0.165 s, SimSiam 0.17–0.19, MoCo v3 0.24,
    // BYOL 0.22–0.27, Barlow Twins 0.20, MoCo v2 0.12–0.14); the rate is the contrastive
    // methods' 2e-3 unless noted.
    let (steps, lr) = match &method {
        MethodConfig::Byol(_) => (1900, 2e-3),
        MethodConfig::MocoV3(_) => (1800, 2e-3),
        MethodConfig::Simsiam(_) => (2400, 2e-3),
        MethodConfig::Simclr(_) => (2300, 2e-3),
        // Two global views, also through the teacher: 0.32 s per step, so 2,000 steps fill the
        // ~10 minutes the issue allows; its online kNN still rises at 1,000 (README, "DINO").
        MethodConfig::Dino(_) => (2000, 2e-3),
        MethodConfig::Barlow(_) => (1800, 2e-3),
        MethodConfig::MocoV2(_) => (3500, 2e-3),
        // The encoder sees a quarter of the patches: 0.10 s per step. MAE's reconstruction
        // learnt features that beat the random encoder only at a quarter of the rate (README,
        // "MAE").
        MethodConfig::Mae(_) => (4000, 5e-4),
        // One view and a small text tower: 0.12 s per step. At 2e-3 both towers collapsed (the
        // loss sat at ln N from step ~50); CLIP's own rate, 5e-4, learns (README, "CLIP").
        MethodConfig::Clip(_) => (3000, 5e-4),
    };
    // The convolutional stem lifts every method that can take it (README, "Results"); MAE's
    // encoder must see only the visible patches' pixels.
    let stem = match &method {
        MethodConfig::Mae(_) => Stem::Patch,
        _ => Stem::Conv,
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
            stem,
        },
        views: ViewsConfig {
            recipe,
            crop_min: 0.4,
            asymmetric: true,
        },
        optim: OptimConfig {
            optimizer: OptimizerKind::Adamw,
            lr,
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
    let Some((args, matches)) = parse_args::<Args>(&argv)? else {
        return Ok(Outcome {
            title: String::new(),
            rows: Vec::new(),
            zero_shot: None,
            seconds: 0.0,
        });
    };
    let given = flags::given(&matches, &CONFIG_FLAGS);
    validate_options(&args)?;
    let device = setup::device(args.device.as_deref())?;
    let _f16 = setup::autocast(args.f16, &device)?;
    let f16 = if args.f16 { ", f16 operands" } else { "" };
    println!("device: {}{f16}", device.name());
    let (train, test) = load_data(&args)?;

    if let Some(path) = &args.eval_only {
        return eval_only(&args, &given, path, &train, &test, &device);
    }
    let started = Instant::now();
    let (config, resumed) = configure(&args, &given, &train)?;
    check_memory(&config)?;
    let out = prepare_out(
        args.out.as_deref(),
        PathBuf::from("runs").join(config.method.name()),
        args.overwrite,
        resumed.as_ref().map(|(p, _)| p.as_path()),
    )?;

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
        "method: {}; ViT dim {} depth {} heads {} patch {} ({:?} stem, {} pool); {} trainable \
         parameters; {} steps of batch {}, {:?} lr {:.1e}; recipe {:?}",
        config.method.title(),
        v.dim,
        v.depth,
        v.heads,
        v.patch,
        v.stem,
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
            zero_shot: None,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    run.model.set_training(false);
    let (rows, zero_shot) = measure(
        &args,
        &title,
        run.model.as_ref(),
        &config,
        (&train, &test),
        &device,
        Some(&out.join("pca.png")),
    )?;
    Ok(Outcome {
        title,
        rows,
        zero_shot,
        seconds: started.elapsed().as_secs_f64(),
    })
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
    let ck = load_checkpoint(path)?;
    let config = Run::config_of(&ck, path)?;
    // Settings come from the checkpoint; a flag that says otherwise is a mistake, not a wish.
    flags::apply(&config, given, &all_fields(train), true, &owner(&config))?;
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
    let (rows, zero_shot) = measure(
        args,
        &title,
        model.as_ref(),
        &config,
        (train, test),
        device,
        None,
    )?;
    Ok(Outcome {
        title,
        rows,
        zero_shot,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Smallest area fraction the supervised ceiling's crops keep.
const SUPERVISED_CROP_MIN: f64 = 0.8;

/// The results table (with the supervised ceiling if asked), the PCA scatter when `scatter`
/// names a file, and fine-tuning if asked: the same measurements after training and on
/// `--eval-only`. CLIP's towers are also measured together: zero-shot accuracy on the test set
/// and retrieval over its first 1,000 images.
fn measure(
    args: &Args,
    title: &str,
    method: &dyn Method,
    config: &RunConfig,
    (train, test): (&Dataset, &Dataset),
    device: &Device,
    scatter: Option<&Path>,
) -> Result<(Vec<Row>, Option<ZeroShot>), String> {
    let (encoder, seed) = (method.encoder(), config.seed);
    // The ceiling trains on the run's base recipe with gentle crops: the views' crops (down to
    // crop_min of the area) left a supervised ViT underfitting (90.6 % on MNIST after 30 epochs,
    // 91.8 % with no augmentation at all).
    let gentle = ViewsConfig {
        crop_min: SUPERVISED_CROP_MIN,
        ..config.views.clone()
    };
    let supervised = args
        .supervised_baseline
        .then(|| (args.supervised_epochs, gentle.base(encoder.config.image)));
    let rows = report::evaluate(title, encoder, train, test, device, seed, supervised);
    report::print_table(&rows);
    let zero_shot = method.clip().map(|clip| {
        let z = zero_shot(clip, test, 1000, device, seed);
        report::print_zero_shot(&z);
        z
    });
    if let Some(path) = scatter {
        report::pca_scatter(encoder, test, device, path, title)?;
    }
    report::fine_tune(
        args.finetune_labels,
        args.finetune_epochs,
        encoder,
        train,
        test,
        device,
        seed,
        title,
    );
    Ok((rows, zero_shot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_but_mae_defaults_to_the_convolutional_stem() {
        let digits = Dataset {
            images: vec![0.0; 784],
            labels: vec![0],
            n: 1,
            c: 1,
            h: 28,
            w: 28,
            classes: 10,
        };
        for name in MethodConfig::NAMES {
            let config = defaults(name, &digits, Recipe::Digits).unwrap();
            let want = if name == "mae" {
                Stem::Patch
            } else {
                Stem::Conv
            };
            assert_eq!(config.vit.stem, want, "{name}");
        }
    }
}
