//! Full fine-tuning: the encoder and a new linear head trained together on labels, the encoder
//! with a smaller learning rate so that pre-trained features are adjusted, not overwritten.

use super::Encoder;
use rand::SeedableRng;
use selfsup_engine::data::{Augment, Dataset, Image};
use selfsup_engine::nn::{Init, Linear, Module};
use selfsup_engine::optim::{param_groups, AdamW, Optimizer, WarmupCosine};
use selfsup_engine::{no_grad, Device, SeededRng, Tensor};

#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// The encoder's learning rate as a fraction of the head's.
    pub encoder_lr_scale: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// A recipe each training image goes through afresh every epoch (the supervised ceiling
    /// trains on the pre-training views); `None`: the images as they are.
    pub augment: Option<Augment>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            epochs: 10,
            batch: 128,
            lr: 1e-3,
            encoder_lr_scale: 0.1,
            weight_decay: 0.05,
            seed: 0,
            augment: None,
        }
    }
}

/// Images `idx` of `data` as `(B, C, H, W)`, each through `augment` when given.
fn batch_tensor(
    data: &Dataset,
    idx: &[usize],
    device: &Device,
    augment: Option<(&Augment, &mut SeededRng)>,
) -> Tensor {
    let x: Vec<f32> = match augment {
        None => idx
            .iter()
            .flat_map(|&i| data.image(i).iter().copied())
            .collect(),
        Some((aug, rng)) => idx
            .iter()
            .flat_map(|&i| {
                let img = Image::new(data.c, data.h, data.w, data.image(i).to_vec());
                aug.apply(&img, rng).data
            })
            .collect(),
    };
    Tensor::from_vec(x, &[idx.len(), data.c, data.h, data.w], device)
}

/// Fine-tunes `encoder` (in place) with a fresh head on `train`; returns test accuracy (0–1).
pub fn finetune(
    encoder: &dyn Encoder,
    train: &Dataset,
    test: &Dataset,
    cfg: &FinetuneConfig,
    device: &Device,
) -> f64 {
    let classes = train.classes.max(test.classes);
    let mut init = Init::new(cfg.seed, device);
    let head = Linear::new(&mut init, encoder.dim(), classes, true);
    encoder.set_frozen(false);
    let mut groups = param_groups(encoder.named_parameters(), cfg.weight_decay);
    for g in &mut groups {
        g.lr_scale = cfg.encoder_lr_scale;
    }
    groups.extend(param_groups(head.named_parameters(), cfg.weight_decay));
    let mut opt = AdamW::new(groups, 0.9, 0.999, 1e-8);
    let per_epoch = train.n.div_ceil(cfg.batch);
    let total = (per_epoch * cfg.epochs) as u64;
    let schedule = WarmupCosine {
        base_lr: cfg.lr,
        warmup_steps: (total / 10).max(1),
        total_steps: total,
        final_lr: 0.0,
    };
    let mut step = 0;
    let mut s = cfg.seed ^ 0xD1B5_4A32_D192_ED03;
    let mut aug_rng = SeededRng::seed_from_u64(cfg.seed ^ 0x5DEE_CE66_D1CE_4E5B);
    for _ in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..train.n).collect();
        for i in (1..order.len()).rev() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        for idx in order.chunks(cfg.batch) {
            opt.zero_grad();
            let targets: Vec<i64> = idx.iter().map(|&i| train.labels[i] as i64).collect();
            let augment = cfg.augment.as_ref().map(|a| (a, &mut aug_rng));
            let x = batch_tensor(train, idx, device, augment);
            let logits = head.forward(&encoder.features(&x));
            logits.cross_entropy(&targets, -100, 0.0).backward();
            opt.step(schedule.lr(step));
            step += 1;
        }
    }
    let mut correct = 0;
    no_grad(|| {
        for start in (0..test.n).step_by(256) {
            let idx: Vec<usize> = (start..(start + 256).min(test.n)).collect();
            let pred = head
                .forward(&encoder.features(&batch_tensor(test, &idx, device, None)))
                .argmax(1, false)
                .to_vec();
            correct += idx
                .iter()
                .zip(pred)
                .filter(|(&i, p)| *p as u32 == test.labels[i])
                .count();
        }
    });
    correct as f64 / test.n.max(1) as f64
}
