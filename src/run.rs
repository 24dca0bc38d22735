//! A pre-training run of any [`Method`] as one resumable unit: model (with its teacher, queue or
//! centre), optimizer, data order, schedule and histories. A checkpoint holds all of it, so a
//! resumed run continues the same run: on the CPU backend it ends bit-identical to an
//! uninterrupted one. This is the shared loop; a method file only says what one step computes.
//!
//! The run also refuses to go on when training diverges: a non-finite loss or gradient stops the
//! step before the optimizer touches the weights, parameters are checked every few steps and
//! before every save, so a checkpoint on disk only ever holds finite weights.

use selfsup_engine::checkpoint::{self, Checkpoint};
use selfsup_engine::data::{n_views, Dataset, Loader, Tokenizer, Views};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{
    clip_grads, grad_norm_squared, param_groups, AdamW, Lars, Optimizer, Sgd, WarmupCosine,
};
use selfsup_engine::{no_grad, Device, Tensor};
use selfsup_models::method::{
    positive, require, transformer_shape, Method, MethodConfig, Progress,
};
use selfsup_models::views::ViewsConfig;
use selfsup_models::vit::{Stem, VitConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Which optimizer trains the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (β 0.9/0.999): what small-scale SSL trains well with.
    Adamw,
    /// LARS (momentum 0.9, trust 0.001), as SimCLR, BYOL and Barlow Twins use at large batch.
    Lars,
    /// SGD with momentum 0.9, as SimSiam and MoCo use.
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub optimizer: OptimizerKind,
    /// Peak learning rate: linear warm-up over the first tenth of the run, then cosine decay.
    pub lr: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip: f64,
}

/// Everything that defines a run; stored as JSON in its checkpoint and in `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub method: MethodConfig,
    pub vit: VitConfig,
    pub views: ViewsConfig,
    pub optim: OptimConfig,
    pub steps: u64,
    pub batch: usize,
    pub seed: u64,
}

impl RunConfig {
    /// Checks every setting against the training data, naming the flag of the first bad one.
    pub fn validate(&self, train: &Dataset) -> Result<(), String> {
        let (v, o) = (&self.vit, &self.optim);
        self.method.validate(train.n, train.classes, v.patch)?;
        transformer_shape(v.dim, v.heads, v.depth)?;
        require(
            v.patch >= 1 && v.image.is_multiple_of(v.patch),
            "patch",
            v.patch,
            &format!("a divisor of the image size {}", v.image),
        )?;
        if v.stem == Stem::Conv {
            require(
                v.patch >= 2 && v.patch.is_power_of_two(),
                "patch",
                v.patch,
                "a power of two ≥ 2 with --stem conv (the default but for mae; --stem patch takes any divisor)",
            )?;
            if matches!(self.method, MethodConfig::Mae(_)) {
                return Err(
                    "--stem conv does not apply to --method mae: the convolutions would \
                            see the masked patches' pixels"
                        .into(),
                );
            }
        }
        require(v.mlp_ratio >= 1, "mlp_ratio", v.mlp_ratio, "at least 1")?;
        require(
            self.views.crop_min > 0.0 && self.views.crop_min <= 1.0,
            "crop_min",
            self.views.crop_min,
            "in (0, 1]",
        )?;
        positive("lr", o.lr)?;
        require(
            o.weight_decay >= 0.0 && o.weight_decay.is_finite(),
            "weight_decay",
            o.weight_decay,
            "a number ≥ 0",
        )?;
        require(
            o.clip >= 0.0 && o.clip.is_finite(),
            "clip",
            o.clip,
            "a number ≥ 0",
        )?;
        require(self.steps >= 1, "steps", self.steps, "at least 1")?;
        require(
            (1..=train.n).contains(&self.batch),
            "batch",
            self.batch,
            &format!("between 1 and the {} training images", train.n),
        )
    }

    pub fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            base_lr: self.optim.lr,
            warmup_steps: (self.steps / 10).max(1),
            total_steps: self.steps,
            final_lr: self.optim.lr * 0.01,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a run config serialises")
    }
}

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f32,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Why training stopped before its end.
#[derive(Clone, Debug)]
pub enum Cause {
    /// A loss, gradient or weight became NaN or ∞ (what, where).
    NonFinite(String),
    /// The GPU failed (out of memory, device lost), naming the op it hit.
    Device(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::NonFinite(what) | Cause::Device(what) => f.write_str(what),
        }
    }
}

impl From<selfsup_engine::Error> for Cause {
    fn from(e: selfsup_engine::Error) -> Cause {
        Cause::Device(e.to_string())
    }
}

/// Training stopped at `step`; the weights are those of the last good step.
#[derive(Clone, Debug)]
pub struct Stopped {
    pub step: u64,
    pub cause: Cause,
    pub lr: f64,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Cause::NonFinite(what) => write!(
                f,
                "training diverged at step {}: {what} (learning rate {:.3e})",
                self.step, self.lr
            ),
            Cause::Device(what) => write!(f, "the GPU failed at step {}: {what}", self.step),
        }
    }
}

pub struct Run {
    pub config: RunConfig,
    pub model: Box<dyn Method>,
    pub optimizer: Box<dyn Optimizer>,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// The loss of every step so far.
    pub history: Vec<f32>,
    /// (step, accuracy %) of the online kNN monitor, filled by whoever evaluates.
    pub knn_history: Vec<(u64, f32)>,
    loader: Loader<Views>,
    device: Device,
}

/// How often parameters are scanned for non-finite values between saves.
const PARAM_CHECK_EVERY: u64 = 50;

impl Run {
    /// A fresh run on `train` (its labels are never used).
    pub fn new(config: RunConfig, train: Arc<Dataset>, device: &Device) -> Run {
        Run::at_step(config, train, device, 0)
    }

    /// A freshly initialised run whose data order is positioned at `step`.
    fn at_step(config: RunConfig, train: Arc<Dataset>, device: &Device, step: u64) -> Run {
        let mut init = Init::new(config.seed, device);
        let model = config
            .method
            .build(&mut init, config.vit.clone(), config.views.clone());
        // Frozen parameters (MoCo v3's random patch projection) are not the optimizer's.
        let trainable: Vec<(String, Tensor)> = model
            .named_parameters()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        // One set of groups per learning-rate scale the method asks for.
        let mut scales: Vec<f64> = Vec::new();
        let mut by_scale: Vec<Vec<(String, Tensor)>> = Vec::new();
        for (name, t) in trainable {
            let s = model.lr_scale(&name);
            match scales.iter().position(|&x| x == s) {
                Some(i) => by_scale[i].push((name, t)),
                None => {
                    scales.push(s);
                    by_scale.push(vec![(name, t)]);
                }
            }
        }
        let groups: Vec<_> = scales
            .iter()
            .zip(by_scale)
            .flat_map(|(&s, named)| {
                let mut g = param_groups(named, config.optim.weight_decay);
                g.iter_mut().for_each(|g| g.lr_scale = s);
                g
            })
            .collect();
        let optimizer: Box<dyn Optimizer> = match config.optim.optimizer {
            OptimizerKind::Adamw => Box::new(AdamW::new(groups, 0.9, 0.999, 1e-8)),
            OptimizerKind::Lars => Box::new(Lars::new(groups, 0.9, 0.001, 1e-8)),
            OptimizerKind::Sgd => Box::new(Sgd::new(groups, 0.9, false)),
        };
        let loader = Loader::new(
            train,
            config.batch,
            config.seed,
            true,
            n_views(model.views()),
        );
        let per_epoch = loader.batches_per_epoch() as u64;
        let loader = loader.starting_at((step / per_epoch) as usize, (step % per_epoch) as usize);
        Run {
            config,
            model,
            optimizer,
            step,
            history: Vec::new(),
            knn_history: Vec::new(),
            loader,
            device: device.clone(),
        }
    }

    /// The configuration stored in a checkpoint.
    pub fn config_of(ck: &Checkpoint, path: &Path) -> Result<RunConfig, String> {
        stored_config(ck, path)
    }

    /// Continues the run saved in `ck` (read from `path`) under `config`, which may differ from
    /// the stored one only in what may change on resume (steps, learning rate).
    pub fn resume(
        ck: &Checkpoint,
        path: &Path,
        config: RunConfig,
        train: Arc<Dataset>,
        device: &Device,
    ) -> Result<Run, String> {
        let step = stored_step(ck, path)?;
        let mut run = Run::at_step(config, train, device, step);
        run.history = restore(
            ck,
            path,
            run.model.as_ref(),
            run.optimizer.as_mut(),
            step,
            &["config", "step", "crc32"],
        )?;
        run.knn_history = stored_history(ck, "knn")
            .chunks_exact(2)
            .map(|p| (p[0] as u64, p[1]))
            .collect();
        Ok(run)
    }

    /// One optimizer step on the next batch of views. Nothing is updated when the loss or the
    /// gradient is not finite.
    pub fn train_step(&mut self) -> Result<StepStats, Stopped> {
        let batch = self.loader.next().expect("the loader is endless").data;
        let views: Vec<Tensor> = batch
            .views
            .iter()
            .map(|v| Tensor::from_vec(v.data.clone(), &[batch.n, v.c, v.h, v.w], &self.device))
            .collect();
        let at = Progress {
            step: self.step,
            total: self.config.steps,
        };
        let lr = self.config.schedule().lr(self.step);
        let stopped = |step, cause| Stopped { step, cause, lr };
        self.optimizer.zero_grad();
        let loss = self.model.loss(&views, &batch.labels, at);
        let (l, norm) = backward_checked(&loss, &self.model.parameters(), self.config.optim.clip)
            .map_err(|c| stopped(self.step, c))?;
        self.optimizer.step(lr);
        self.model.after_step(at);
        self.step += 1;
        self.history.push(l);
        if self.step.is_multiple_of(PARAM_CHECK_EVERY) {
            self.check_parameters().map_err(|c| stopped(self.step, c))?;
        }
        Ok(StepStats {
            loss: l,
            lr,
            grad_norm: norm,
        })
    }

    /// An error naming the first parameter or buffer (teacher, queue) holding a NaN or ∞.
    pub fn check_parameters(&self) -> Result<(), Cause> {
        check_finite(&self.model.state_dict())
    }

    /// Writes model (with teacher, queue, centre), optimizer state, step, histories and config
    /// to `path`. Refused if any weight is not finite, so a good checkpoint is never replaced by
    /// a diverged one.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let knn: Vec<f32> = self
            .knn_history
            .iter()
            .flat_map(|&(s, a)| [s as f32, a])
            .collect();
        let tensors = run_tensors(
            path,
            self.model.as_ref(),
            self.optimizer.as_ref(),
            vec![("loss", self.history.clone()), ("knn", knn)],
        )?;
        let meta = HashMap::from([
            ("config".to_string(), self.config.to_json()),
            ("step".to_string(), self.step.to_string()),
        ]);
        checkpoint::save(path, &tensors, &meta).map_err(|e| e.to_string())
    }
}

/// `loss`'s value, its backward pass, and the global gradient norm of `params`, which are
/// clipped to `clip` when it is positive. The loss and the norm are read back together, one wait
/// for the device per step. `Err` says what is not finite, the loss or the norm, before any
/// gradient is used, or how the GPU failed.
pub fn backward_checked(loss: &Tensor, params: &[Tensor], clip: f64) -> Result<(f32, f64), Cause> {
    loss.backward();
    let values = no_grad(|| {
        let l = loss.detach().reshape(&[1]);
        match grad_norm_squared(params) {
            Some(sq) => Tensor::cat(&[&l, &sq.reshape(&[1])], 0),
            None => l,
        }
    })
    .try_to_vec_f64()?;
    let (l, norm) = (values[0] as f32, values.get(1).map_or(0.0, |sq| sq.sqrt()));
    if !l.is_finite() {
        return Err(Cause::NonFinite(format!("the loss is {l}")));
    }
    if !norm.is_finite() {
        return Err(Cause::NonFinite(format!(
            "loss {l:.4}, gradient norm {norm}"
        )));
    }
    if clip > 0.0 {
        clip_grads(params, norm, clip);
    }
    Ok((l, norm))
}

/// What a text run does with the loss it built for step `*step` (0-based): backward with
/// [`backward_checked`]'s checks and clipping, the optimizer step at `lr`, a scan of the weights
/// every [`PARAM_CHECK_EVERY`] steps, then the step counted and its loss added to `history`.
/// Returns the loss; nothing is updated when the loss or the gradient is not finite.
pub fn optimize(
    loss: &Tensor,
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    step: &mut u64,
    history: &mut Vec<f32>,
    lr: f64,
    clip: f64,
) -> Result<f32, Stopped> {
    let at = *step;
    let stopped = |cause| Stopped {
        step: at,
        cause,
        lr,
    };
    optimizer.zero_grad();
    let (l, _) = backward_checked(loss, &model.parameters(), clip).map_err(stopped)?;
    optimizer.step(lr);
    if (at + 1).is_multiple_of(PARAM_CHECK_EVERY) {
        check_finite(&model.state_dict()).map_err(stopped)?;
    }
    *step += 1;
    history.push(l);
    Ok(l)
}

/// The metadata keys of a text run's checkpoint (`crc32` is the checkpoint's own).
pub const TEXT_METADATA: [&str; 5] = ["config", "step", "crc32", "tokenizer", "data_crc32"];

/// A text run's checkpoint metadata: its config (JSON), step, tokenizer, and the checksum of the
/// text it trains on, so that a resume can refuse changed data.
pub fn text_meta(
    config: String,
    step: u64,
    tokenizer: &Tokenizer,
    data_crc32: &str,
) -> HashMap<String, String> {
    HashMap::from([
        ("config".to_string(), config),
        ("step".to_string(), step.to_string()),
        ("tokenizer".to_string(), tokenizer.to_json()),
        ("data_crc32".to_string(), data_crc32.to_string()),
    ])
}

/// An error naming the first of `state`'s tensors that holds a NaN or ∞, or how the GPU failed.
pub fn check_finite(state: &[(String, Tensor)]) -> Result<(), Cause> {
    let sums: Vec<Tensor> = no_grad(|| state.iter().map(|(_, t)| t.sum_all()).collect());
    // One read-back: a sum is finite only if every element is (barring overflow, which is just as
    // fatal).
    let refs: Vec<&Tensor> = sums.iter().collect();
    let values = Tensor::stack(&refs, 0).try_to_vec()?;
    match state.iter().zip(values).find(|(_, s)| !s.is_finite()) {
        None => Ok(()),
        Some(((name, t), _)) => {
            let bad = t.try_to_vec()?.iter().filter(|v| !v.is_finite()).count();
            Err(Cause::NonFinite(format!(
                "{bad} of {} values of {name} are not finite",
                t.numel()
            )))
        }
    }
}

/// What a run's checkpoint holds besides metadata: `model.*` (weights and buffers), `optim.*`
/// and one `history.NAME` series per entry of `histories`. Refused, naming `path`, if any model
/// tensor is not finite, so a good checkpoint is never replaced by a diverged one.
pub fn run_tensors(
    path: &Path,
    model: &dyn Module,
    optimizer: &dyn Optimizer,
    histories: Vec<(&str, Vec<f32>)>,
) -> Result<Vec<(String, Tensor)>, String> {
    let state = model.state_dict();
    check_finite(&state).map_err(|e| format!("not saving {}: {e}", path.display()))?;
    let mut tensors: Vec<(String, Tensor)> = state
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
    tensors.extend(
        optimizer
            .state_dict()
            .into_iter()
            .map(|(k, v)| (format!("optim.{k}"), v)),
    );
    for (name, values) in histories {
        let n = values.len();
        tensors.push((
            format!("history.{name}"),
            Tensor::from_vec(values, &[n], &Device::Cpu),
        ));
    }
    Ok(tensors)
}

/// The tokenizer a text run's checkpoint stores (its `tokenizer` metadata, JSON).
pub fn stored_tokenizer(ck: &Checkpoint, path: &Path) -> Result<Tokenizer, String> {
    let text = ck.meta("tokenizer", path).map_err(|e| e.to_string())?;
    Tokenizer::from_json(text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The configuration stored as JSON under a checkpoint's `config` metadata.
pub fn stored_config<C: DeserializeOwned>(ck: &Checkpoint, path: &Path) -> Result<C, String> {
    let text = ck.meta("config", path).map_err(|e| e.to_string())?;
    serde_json::from_str(text).map_err(|e| format!("{}: checkpoint config: {e}", path.display()))
}

/// The optimizer steps a checkpoint's run had taken.
pub fn stored_step(ck: &Checkpoint, path: &Path) -> Result<u64, String> {
    ck.meta("step", path)
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|e| format!("{}: metadata step: {e}", path.display()))
}

/// The series `history.NAME` of a checkpoint (empty when it has none).
pub fn stored_history(ck: &Checkpoint, name: &str) -> Vec<f32> {
    ck.tensors
        .get(&format!("history.{name}"))
        .map(|t| t.to_vec())
        .unwrap_or_default()
}

/// Loads the model and optimizer state that [`run_tensors`] wrote, for a run at `step`, and
/// returns its loss history. Refused, naming `path`: metadata outside `metadata`, a loss history
/// of another length than `step`, model and optimizer tensors the run does not expect, and
/// non-finite weights.
pub fn restore(
    ck: &Checkpoint,
    path: &Path,
    model: &dyn Module,
    optimizer: &mut dyn Optimizer,
    step: u64,
    metadata: &[&str],
) -> Result<Vec<f32>, String> {
    let source = path.display().to_string();
    let err = |e: selfsup_engine::Error| e.to_string();
    model
        .load_state_dict(&ck.with_prefix("model"), &source)
        .map_err(err)?;
    optimizer
        .load_state_dict(&ck.with_prefix("optim"), &source)
        .map_err(err)?;
    let history = stored_history(ck, "loss");
    if history.len() as u64 != step {
        return Err(format!(
            "{source}: holds {} losses for {step} steps",
            history.len()
        ));
    }
    if let Some(k) = ck.metadata.keys().find(|k| !metadata.contains(&k.as_str())) {
        return Err(format!("{source}: unexpected metadata {k:?}"));
    }
    let expected = model.state_dict().len() + optimizer.state_dict().len();
    let held = ck
        .tensors
        .keys()
        .filter(|k| !k.starts_with("history."))
        .count();
    if held != expected {
        return Err(format!(
            "{source}: holds {held} model and optimizer tensors, the run expects {expected}"
        ));
    }
    check_finite(&model.state_dict()).map_err(|e| format!("{source}: {e}"))?;
    Ok(history)
}
