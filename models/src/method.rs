//! What a self-supervised method is to the shared training loop: its views, its loss, and what it
//! updates after each optimizer step. The loop (`selfsup::run`) knows nothing else about it.
//!
//! A method is a [`Module`]: its `named_parameters` are exactly what the optimizer trains (a
//! momentum teacher's weights, a queue or a centre are *buffers*), and its `state_dict` is
//! everything a checkpoint must hold to resume it bit for bit.

use crate::views::ViewsConfig;
use crate::vit::{VisionTransformer, VitConfig};
use crate::{barlow, byol, clip, dino, mae, moco_v2, moco_v3, simclr, simsiam};
use selfsup_engine::data::Augment;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::Tensor;
use serde::{Deserialize, Serialize};

/// Where the run is: `step` optimizer steps done out of `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
}

pub trait Method: Module + Send {
    /// The augmentation recipe of each view, in the order [`Method::loss`] receives them.
    fn views(&self) -> Vec<Augment>;

    /// The objective on one batch: view `v` of every image is `views[v]`, `(N, C, H, W)`.
    /// `labels` are the images' classes: no self-supervised loss reads them; CLIP makes its
    /// captions, the paired text these datasets lack, from them.
    fn loss(&mut self, views: &[Tensor], labels: &[u32], at: Progress) -> Tensor;

    /// After the optimizer step: the momentum teacher, the queue, the centre.
    fn after_step(&mut self, _at: Progress) {}

    /// The learning rate of parameter `name` as a multiple of the run's (a predictor that must
    /// track a moving target learns faster than the encoder).
    fn lr_scale(&self, _name: &str) -> f64 {
        1.0
    }

    /// The representation downstream tasks measure (before any head).
    fn encoder(&self) -> &VisionTransformer;

    /// For methods that predict pixels (MAE), pictures of held-out `images` as the job saves
    /// them: the masked input, the reconstruction, and the reconstruction with the visible
    /// patches pasted back, each `(B, C, H, W)`; `seed` fixes the masks.
    fn reconstructions(&self, _images: &Tensor, _seed: u64) -> Option<[Tensor; 3]> {
        None
    }

    /// The method as CLIP, whose text tower the job also measures (zero-shot, retrieval).
    fn clip(&self) -> Option<&clip::Clip> {
        None
    }
}

/// Every method's configuration, tagged by its `--method` name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum MethodConfig {
    Simclr(simclr::SimClrConfig),
    Byol(byol::ByolConfig),
    Simsiam(simsiam::SimSiamConfig),
    MocoV2(moco_v2::MocoV2Config),
    MocoV3(moco_v3::MocoV3Config),
    Barlow(barlow::BarlowConfig),
    Mae(mae::MaeConfig),
    Dino(dino::DinoConfig),
    Clip(clip::ClipConfig),
}

impl MethodConfig {
    /// The `--method` names, in the order the README lists them.
    pub const NAMES: [&'static str; 9] = [
        "simclr", "byol", "simsiam", "moco-v2", "moco-v3", "barlow", "mae", "dino", "clip",
    ];

    /// The method's defaults (the paper's, scaled to small images), by `--method` name.
    pub fn named(name: &str) -> Result<MethodConfig, String> {
        Ok(match name {
            "simclr" => MethodConfig::Simclr(Default::default()),
            "byol" => MethodConfig::Byol(Default::default()),
            "simsiam" => MethodConfig::Simsiam(Default::default()),
            "moco-v2" => MethodConfig::MocoV2(Default::default()),
            "moco-v3" => MethodConfig::MocoV3(Default::default()),
            "barlow" => MethodConfig::Barlow(Default::default()),
            "mae" => MethodConfig::Mae(Default::default()),
            "dino" => MethodConfig::Dino(Default::default()),
            "clip" => MethodConfig::Clip(Default::default()),
            _ => {
                return Err(format!(
                    "--method {name:?} is not one of {}",
                    MethodConfig::NAMES.join(", ")
                ))
            }
        })
    }

    /// The `--method` name.
    pub fn name(&self) -> &'static str {
        match self {
            MethodConfig::Simclr(_) => "simclr",
            MethodConfig::Byol(_) => "byol",
            MethodConfig::Simsiam(_) => "simsiam",
            MethodConfig::MocoV2(_) => "moco-v2",
            MethodConfig::MocoV3(_) => "moco-v3",
            MethodConfig::Barlow(_) => "barlow",
            MethodConfig::Mae(_) => "mae",
            MethodConfig::Dino(_) => "dino",
            MethodConfig::Clip(_) => "clip",
        }
    }

    /// The name a results table shows.
    pub fn title(&self) -> &'static str {
        match self {
            MethodConfig::Simclr(_) => "SimCLR",
            MethodConfig::Byol(_) => "BYOL",
            MethodConfig::Simsiam(_) => "SimSiam",
            MethodConfig::MocoV2(_) => "MoCo v2",
            MethodConfig::MocoV3(_) => "MoCo v3",
            MethodConfig::Barlow(_) => "Barlow Twins",
            MethodConfig::Mae(_) => "MAE",
            MethodConfig::Dino(_) => "DINO",
            MethodConfig::Clip(_) => "CLIP",
        }
    }

    /// Checks every setting, naming the flag of the first bad one; `patch` is the ViT's, and
    /// the training set has `train_images` images of `classes` classes.
    pub fn validate(
        &self,
        train_images: usize,
        classes: usize,
        patch: usize,
    ) -> Result<(), String> {
        match self {
            MethodConfig::Simclr(c) => c.validate(),
            MethodConfig::Byol(c) => c.validate(),
            MethodConfig::Simsiam(c) => c.validate(),
            MethodConfig::MocoV2(c) => c.validate(train_images),
            MethodConfig::MocoV3(c) => c.validate(),
            MethodConfig::Barlow(c) => c.validate(),
            MethodConfig::Mae(c) => c.validate(),
            MethodConfig::Dino(c) => c.validate(patch),
            MethodConfig::Clip(c) => c.validate(classes),
        }
    }

    /// The method with freshly initialised weights.
    pub fn build(&self, init: &mut Init, vit: VitConfig, views: ViewsConfig) -> Box<dyn Method> {
        match self {
            MethodConfig::Simclr(c) => Box::new(simclr::SimClr::new(init, vit, views, c.clone())),
            MethodConfig::Byol(c) => Box::new(byol::Byol::new(init, vit, views, c.clone())),
            MethodConfig::Simsiam(c) => {
                Box::new(simsiam::SimSiam::new(init, vit, views, c.clone()))
            }
            MethodConfig::MocoV2(c) => Box::new(moco_v2::MocoV2::new(init, vit, views, c.clone())),
            MethodConfig::MocoV3(c) => Box::new(moco_v3::MocoV3::new(init, vit, views, c.clone())),
            MethodConfig::Barlow(c) => Box::new(barlow::Barlow::new(init, vit, views, c.clone())),
            MethodConfig::Mae(c) => Box::new(mae::Mae::new(init, vit, views, c.clone())),
            MethodConfig::Dino(c) => Box::new(dino::Dino::new(init, vit, views, c.clone())),
            MethodConfig::Clip(c) => Box::new(clip::Clip::new(init, vit, views, c.clone())),
        }
    }
}

/// `Err("--flag must be what, got value")` unless `ok`: the one-line message every setting gets.
pub fn require(
    ok: bool,
    flag: &str,
    value: impl std::fmt::Display,
    what: &str,
) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--{} must be {what}, got {value}",
            flag.replace('_', "-")
        ))
    }
}

/// A positive, finite number (temperatures, widths given as floats).
/// A Transformer's `--dim`, `--heads` and `--depth`: heads divide the width, sizes in range.
pub fn transformer_shape(dim: usize, heads: usize, depth: usize) -> Result<(), String> {
    require(heads >= 1, "heads", heads, "at least 1")?;
    require((1..=4096).contains(&dim), "dim", dim, "between 1 and 4096")?;
    require(
        dim.is_multiple_of(heads),
        "dim",
        dim,
        &format!("a multiple of --heads {heads}"),
    )?;
    require(
        (1..=64).contains(&depth),
        "depth",
        depth,
        "between 1 and 64",
    )
}

pub fn positive(flag: &str, v: f64) -> Result<(), String> {
    require(v > 0.0 && v.is_finite(), flag, v, "a positive number")
}

/// A softmax temperature: below 0.001 the logits overflow f32 (1e-30 would fill the optimizer
/// state with ∞).
pub fn temperature(v: f64) -> Result<(), String> {
    require(
        (1e-3..=100.0).contains(&v),
        "temperature",
        v,
        "between 0.001 and 100",
    )
}

/// A momentum in [0, 1).
pub fn momentum(flag: &str, v: f64) -> Result<(), String> {
    require((0.0..1.0).contains(&v), flag, v, "in [0, 1)")
}

/// A layer width: at least 1 and small enough to allocate.
pub fn width(flag: &str, v: usize) -> Result<(), String> {
    require((1..=16_384).contains(&v), flag, v, "between 1 and 16384")
}

/// The learning-rate scale of parameter `name` when a predictor learns `scale`× faster.
pub fn predictor_lr(name: &str, scale: f64) -> f64 {
    if name.starts_with("predictor.") {
        scale
    } else {
        1.0
    }
}

/// Cosine similarity of matching rows, `(N, D), (N, D) → (N)`.
pub fn row_cosine(a: &Tensor, b: &Tensor) -> Tensor {
    a.cosine_similarity(b, 1, 1e-8)
}
