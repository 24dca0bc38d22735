//! Everything checked before any work: flags, data files against each other, the configuration
//! (over a method's defaults or a checkpoint's own), memory, and the output folder. Each failure
//! is one line naming the flag or file.

use crate::flags;
use crate::pretrain::{defaults, Args};
use crate::run::{stored_config, stored_step, Run, RunConfig};
use selfsup_engine::checkpoint;
use selfsup_engine::data::Dataset;
use selfsup_engine::{Autocast, Device};
use selfsup_models::method::{require, MethodConfig};
use selfsup_models::views::Recipe;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `argv` parsed into `A`, or `None` when it asked for `--help` or `--version` (printed here).
/// A bad flag is clap's first line, without the usage block.
pub(crate) fn parse_args<A: clap::CommandFactory + clap::FromArgMatches>(
    argv: &[String],
) -> Result<Option<(A, clap::ArgMatches)>, String> {
    let matches = match A::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            // `--help | head` closes the pipe early: not an error worth a panic.
            let _ = write!(std::io::stdout(), "{e}");
            return Ok(None);
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            return Err(first.trim_start_matches("error: ").to_string());
        }
    };
    let args = A::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    Ok(Some((args, matches)))
}

/// `--checkpoint-every` (steps) and `--log-every` (seconds).
/// The device `--device` names, else `$SELFSUP_DEVICE`'s (auto when unset).
pub(crate) fn device(flag: Option<&str>) -> Result<Device, String> {
    match flag {
        Some(d) => Device::parse(d),
        None => Device::from_env(),
    }
    .map_err(|e| e.to_string())
}

/// `--f16`: autocast for the rest of the program (products and attention read f16 operands; see
/// [`Autocast`]), or an error naming the flag where `device` has no f16 storage.
pub(crate) fn autocast(f16: bool, device: &Device) -> Result<Option<Autocast>, String> {
    f16.then(|| Autocast::f16(device).map_err(|e| format!("--f16: {e}")))
        .transpose()
}

/// The typed flags with `--ctx` read as the encoder's `max_positions` (BERT, BART).
pub(crate) fn ctx_as_max_positions(given: Vec<(String, String)>) -> Vec<(String, String)> {
    given
        .into_iter()
        .map(|(f, v)| {
            (
                if f == "ctx" {
                    "max-positions".into()
                } else {
                    f
                },
                v,
            )
        })
        .collect()
}

/// A text job's run config: `defaults` under the typed flags, or with `--resume` the
/// checkpoint's own under the flags that may change on resume (the opened checkpoint comes back
/// with it). `job` names the config's owner in errors.
pub(crate) fn text_config<C: Serialize + DeserializeOwned>(
    defaults: &C,
    given: &[(String, String)],
    resume: Option<&PathBuf>,
    job: &str,
) -> Result<(C, Option<(PathBuf, checkpoint::Checkpoint)>), String> {
    let fields = flags::field_names(defaults);
    match resume {
        None => Ok((flags::apply(defaults, given, &fields, false, job)?, None)),
        Some(path) => {
            let ck = load_checkpoint(path)?;
            let stored: C = stored_config(&ck, path)?;
            let config = flags::apply(&stored, given, &fields, true, job)?;
            Ok((config, Some((path.clone(), ck))))
        }
    }
}

pub(crate) fn cadence(checkpoint_every: u64, log_every: f64) -> Result<(), String> {
    require(
        checkpoint_every >= 1,
        "checkpoint_every",
        checkpoint_every,
        "at least 1",
    )?;
    require(
        log_every > 0.0 && log_every.is_finite(),
        "log_every",
        log_every,
        "a positive number of seconds",
    )
}

/// Flags that need no data to check.
pub(crate) fn validate_options(args: &Args) -> Result<(), String> {
    cadence(args.checkpoint_every, args.log_every)?;
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
pub(crate) fn load_data(args: &Args) -> Result<(Dataset, Dataset), String> {
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
pub(crate) fn recipe_for(path: &Path) -> Recipe {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if name.is_some_and(|n| n.contains("fashion")) {
        Recipe::Clothes
    } else {
        Recipe::Digits
    }
}

pub(crate) type Resumed = Option<(PathBuf, checkpoint::Checkpoint)>;

/// Every config field of every method.
pub(crate) fn all_fields(train: &Dataset) -> Vec<String> {
    MethodConfig::NAMES
        .iter()
        .flat_map(|m| flags::field_names(&defaults(m, train, Recipe::Digits).expect("known")))
        .collect()
}

/// Whose flags a run takes, for errors about flags it does not.
pub(crate) fn owner(config: &RunConfig) -> String {
    format!("--method {}", config.method.name())
}

/// The run's configuration from the flags: over the method's defaults for a new run, over the
/// checkpoint's own configuration on `--resume`.
pub(crate) fn configure(
    args: &Args,
    given: &[(String, String)],
    train: &Dataset,
) -> Result<(RunConfig, Resumed), String> {
    let all_fields = all_fields(train);
    let (config, resumed) = match &args.resume {
        None => {
            let base = defaults(&args.method, train, recipe_for(&args.data))?;
            (
                flags::apply(&base, given, &all_fields, false, &owner(&base))?,
                None,
            )
        }
        Some(path) => {
            let ck = load_checkpoint(path)?;
            let stored = Run::config_of(&ck, path)?;
            let step = stored_step(&ck, path)?;
            let config = flags::apply(&stored, given, &all_fields, true, &owner(&stored))?;
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
pub(crate) fn check_memory(config: &RunConfig) -> Result<(), String> {
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
    fits_in_memory(
        bytes,
        &format!(
            "--dim {} --depth {} --batch {}",
            v.dim, v.depth, config.batch
        ),
    )
}

/// An error naming `what` (the flags that set the size) when `bytes` exceed the memory
/// available now.
pub(crate) fn fits_in_memory(bytes: f64, what: &str) -> Result<(), String> {
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
            "{what} would need about {:.1} GiB, more than the {:.1} GiB of memory available",
            bytes / 1073741824.0,
            avail / 1073741824.0
        )),
        _ => Ok(()),
    }
}

/// The output folder (`out`, else the resumed checkpoint's folder, else `default`), refusing to
/// replace another run's files unless `--overwrite` says so.
pub(crate) fn prepare_out(
    out: Option<&Path>,
    default: PathBuf,
    overwrite: bool,
    resumed: Option<&Path>,
) -> Result<PathBuf, String> {
    let out = match (out, resumed) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(ck)) => ck.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => default,
    };
    let same_run = resumed.is_some_and(|ck| {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        canon(&out).is_some() && canon(ck.parent().unwrap_or(Path::new("."))) == canon(&out)
    });
    if !same_run && !overwrite {
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

/// A checkpoint, verified by its checksum; one written before checksums existed loads with a
/// warning.
pub(crate) fn load_checkpoint(path: &Path) -> Result<checkpoint::Checkpoint, String> {
    let ck = checkpoint::load(path).map_err(|e| e.to_string())?;
    if !ck.checksummed {
        eprintln!(
            "warning: {} has no checksum (written by an older selfsup); its contents cannot be \
             verified",
            path.display()
        );
    }
    Ok(ck)
}
