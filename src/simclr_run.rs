//! A SimCLR pre-training run as one resumable unit: model, optimizer, data order, schedule and
//! loss history. A checkpoint holds all of it, so a resumed run continues the same run: on the
//! CPU backend it ends with bit-identical weights to an uninterrupted one.

use selfsup_engine::checkpoint::{self, Checkpoint};
use selfsup_engine::data::{two_views, Augment, Dataset, Loader, ViewPair};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{param_groups, AdamW, Optimizer, WarmupCosine};
use selfsup_engine::{Device, Error, Result, Tensor};
use selfsup_models::simclr::SimClr;
use selfsup_models::vit::{Pool, VitConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Everything that defines a run (stored in its checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub steps: u64,
    pub batch: usize,
    pub vit: VitConfig,
    pub temperature: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub proj_hidden: usize,
    pub proj_out: usize,
    /// Smallest area fraction a random crop keeps (the MNIST augmentation's strength).
    pub crop_min: f64,
    pub seed: u64,
}

impl RunConfig {
    /// The configuration as checkpoint metadata.
    pub fn metadata(&self) -> HashMap<String, String> {
        let v = &self.vit;
        [
            ("method", "simclr".to_string()),
            ("steps", self.steps.to_string()),
            ("batch", self.batch.to_string()),
            ("image", v.image.to_string()),
            ("channels", v.channels.to_string()),
            ("patch", v.patch.to_string()),
            ("dim", v.dim.to_string()),
            ("depth", v.depth.to_string()),
            ("heads", v.heads.to_string()),
            ("mlp_ratio", v.mlp_ratio.to_string()),
            ("pool", v.pool.to_string()),
            ("temperature", self.temperature.to_string()),
            ("lr", self.lr.to_string()),
            ("weight_decay", self.weight_decay.to_string()),
            ("proj_hidden", self.proj_hidden.to_string()),
            ("proj_out", self.proj_out.to_string()),
            ("crop_min", self.crop_min.to_string()),
            ("seed", self.seed.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads the configuration back from a checkpoint's metadata.
    pub fn from_checkpoint(ck: &Checkpoint, path: &Path) -> Result<RunConfig> {
        let text = |k: &str| ck.meta(k, path);
        let num = |k: &str| -> Result<f64> {
            text(k)?
                .parse::<f64>()
                .map_err(|e| Error::format(path, format!("metadata {k}: {e}")))
        };
        let int = |k: &str| num(k).map(|v| v as usize);
        let pool = text("pool")?
            .parse::<Pool>()
            .map_err(|e| Error::format(path, e))?;
        Ok(RunConfig {
            steps: num("steps")? as u64,
            batch: int("batch")?,
            vit: VitConfig {
                image: int("image")?,
                channels: int("channels")?,
                patch: int("patch")?,
                dim: int("dim")?,
                depth: int("depth")?,
                heads: int("heads")?,
                mlp_ratio: int("mlp_ratio")?,
                pool,
            },
            temperature: num("temperature")?,
            lr: num("lr")?,
            weight_decay: num("weight_decay")?,
            proj_hidden: int("proj_hidden")?,
            proj_out: int("proj_out")?,
            // Runs saved before the crop was configurable used 0.4.
            crop_min: num("crop_min").unwrap_or(0.4),
            seed: num("seed")? as u64,
        })
    }

    /// Linear warm-up over the first tenth of the run, then cosine decay to 1 % of the peak.
    pub fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            base_lr: self.lr,
            warmup_steps: (self.steps / 10).max(1),
            total_steps: self.steps,
            final_lr: self.lr * 0.01,
        }
    }
}

pub struct SimClrRun {
    pub config: RunConfig,
    pub model: SimClr,
    pub optimizer: AdamW,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// The loss of every step so far.
    pub history: Vec<f32>,
    loader: Loader<ViewPair>,
    device: Device,
}

impl SimClrRun {
    /// A fresh run on `train` (its labels are never used).
    pub fn new(config: RunConfig, train: Arc<Dataset>, device: &Device) -> SimClrRun {
        SimClrRun::at_step(config, train, device, 0)
    }

    /// A freshly initialised run whose data order is positioned at `step`.
    fn at_step(config: RunConfig, train: Arc<Dataset>, device: &Device, step: u64) -> SimClrRun {
        let mut init = Init::new(config.seed, device);
        let model = SimClr::new(
            &mut init,
            config.vit.clone(),
            config.proj_hidden,
            config.proj_out,
            config.temperature,
        );
        let optimizer = AdamW::new(
            param_groups(model.named_parameters(), config.weight_decay),
            0.9,
            0.999,
            1e-8,
        );
        let aug = Augment::mnist_crop(train.h, config.crop_min as f32);
        let loader = Loader::new(
            train,
            config.batch,
            config.seed,
            true,
            two_views(aug.clone(), aug),
        );
        let per_epoch = loader.batches_per_epoch() as u64;
        let loader = loader.starting_at((step / per_epoch) as usize, (step % per_epoch) as usize);
        SimClrRun {
            config,
            model,
            optimizer,
            step,
            history: Vec::new(),
            loader,
            device: device.clone(),
        }
    }

    /// Continues the run saved at `path`, now to `steps` steps in all (the schedule is the
    /// original one when `steps` is unchanged).
    pub fn resume(
        path: &Path,
        steps: u64,
        train: Arc<Dataset>,
        device: &Device,
    ) -> Result<SimClrRun> {
        let ck = checkpoint::load(path)?;
        let mut config = RunConfig::from_checkpoint(&ck, path)?;
        config.steps = steps;
        let step: u64 = ck
            .meta("step", path)?
            .parse()
            .map_err(|e| Error::format(path, format!("metadata step: {e}")))?;
        let mut run = SimClrRun::at_step(config, train, device, step);
        let source = path.display().to_string();
        run.model
            .load_state_dict(&ck.with_prefix("model"), &source)?;
        run.optimizer
            .load_state_dict(&ck.with_prefix("optim"), &source)?;
        run.history = ck
            .tensors
            .get("history.loss")
            .map(|t| t.to_vec())
            .unwrap_or_default();
        run.history.truncate(step as usize);
        Ok(run)
    }

    /// One optimizer step on the next batch of view pairs; returns the loss and learning rate.
    pub fn train_step(&mut self) -> Result<(f32, f64)> {
        let batch = self.loader.next().expect("the loader is endless").data;
        let shape = [batch.n, batch.c, batch.h, batch.w];
        let v1 = Tensor::from_vec(batch.view1, &shape, &self.device);
        let v2 = Tensor::from_vec(batch.view2, &shape, &self.device);
        self.optimizer.zero_grad();
        let loss = self.model.loss(&v1, &v2);
        loss.backward();
        let lr = self.config.schedule().lr(self.step);
        self.optimizer.step(lr);
        let l = loss.item();
        if !l.is_finite() {
            return Err(Error::Setting {
                name: "lr".into(),
                value: self.config.lr.to_string(),
                reason: format!("the loss became {l} at step {}; try a lower learning rate or a higher temperature", self.step),
            });
        }
        self.step += 1;
        self.history.push(l);
        Ok((l, lr))
    }

    /// Writes model, optimizer state, step, loss history and configuration to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = self
            .model
            .state_dict()
            .into_iter()
            .map(|(k, v)| (format!("model.{k}"), v))
            .collect();
        tensors.extend(
            self.optimizer
                .state_dict()
                .into_iter()
                .map(|(k, v)| (format!("optim.{k}"), v)),
        );
        tensors.push((
            "history.loss".into(),
            Tensor::from_vec(self.history.clone(), &[self.history.len()], &Device::Cpu),
        ));
        let mut meta = self.config.metadata();
        meta.insert("step".into(), self.step.to_string());
        checkpoint::save(path, &tensors, &meta)
    }
}
