//! Every method on the shared loop: it trains (the loss falls) on the CPU and the GPU, a resumed
//! run is bit-identical to an uninterrupted one (teacher, queue and optimizer state included),
//! and the pieces the methods rest on — momentum copies, EMA, the queue, train/eval mode — do
//! what they say.

mod common;

use selfsup::run::{OptimConfig, OptimizerKind, Run, RunConfig};
use selfsup_engine::checkpoint;
use selfsup_engine::data::Dataset;
use selfsup_engine::nn::{BatchNorm1d, Dropout, Init, Module};
use selfsup_engine::optim::{grad_norm, param_groups, AdamW, Optimizer};
use selfsup_engine::{no_grad, Device, Tensor};
use selfsup_models::dino::{Centering, Dino, DinoConfig};
use selfsup_models::heads::{HeadNorm, MlpHead, Tower};
use selfsup_models::method::{Method, MethodConfig, Progress};
use selfsup_models::moco_v2::{MocoV2, MocoV2Config};
use selfsup_models::views::{Recipe, ViewsConfig};
use selfsup_models::vit::{Pool, VisionTransformer, VitConfig};
use std::path::Path;
use std::sync::Arc;

fn digits(n: usize) -> Arc<Dataset> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist9k-images-idx3-ubyte.gz");
    Arc::new(
        Dataset::load_idx(&path)
            .unwrap()
            .subset(&(0..n).collect::<Vec<_>>()),
    )
}

fn tiny_vit() -> VitConfig {
    VitConfig {
        image: 28,
        channels: 1,
        patch: 7,
        dim: 16,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        pool: Pool::Mean,
        stem: Default::default(),
    }
}

fn views() -> ViewsConfig {
    ViewsConfig {
        recipe: Recipe::Digits,
        crop_min: 0.4,
        asymmetric: true,
    }
}

/// A small run of `method` whose heads are narrow enough to train in debug builds.
fn tiny(method: &str, steps: u64) -> RunConfig {
    let mut v = serde_json::to_value(MethodConfig::named(method).unwrap()).unwrap();
    for (k, x) in v.as_object_mut().unwrap() {
        match k.as_str() {
            "proj_hidden" | "proj_out" | "pred_hidden" => *x = 16.into(),
            "queue" => *x = 40.into(),
            // DINO: fewer prototypes, and local crops the 7-px patch divides.
            "out_dim" | "head_hidden" => *x = 32.into(),
            "local_size" => *x = 14.into(),
            "local_crops" => *x = 2.into(),
            "text_dim" | "embed_dim" => *x = 16.into(),
            _ => {}
        }
    }
    RunConfig {
        method: serde_json::from_value(v).unwrap(),
        vit: tiny_vit(),
        views: views(),
        optim: OptimConfig {
            optimizer: OptimizerKind::Adamw,
            lr: 1e-3,
            weight_decay: 0.05,
            clip: 0.0,
        },
        steps,
        batch: 16,
        seed: 7,
    }
}

/// Fixed views of one batch and its labels, so that a falling loss means learning, not easier
/// batches.
fn fixed_views(device: &Device) -> (Vec<Tensor>, Vec<u32>) {
    let data = digits(16);
    let img = Tensor::from_vec(data.images.clone(), &[16, 1, 28, 28], device);
    let shifted = Tensor::cat(&[&img.narrow(3, 1, 27), &img.narrow(3, 0, 1)], 3);
    (vec![img, shifted], data.labels.clone())
}

/// `method`'s tiny model on `device` (a fixed initialisation) and AdamW without decay over it.
fn tiny_model(method: &str, device: &Device) -> (Box<dyn Method>, AdamW) {
    let config = tiny(method, 1);
    let model = config
        .method
        .build(&mut Init::new(3, device), config.vit, config.views);
    let opt = AdamW::new(
        param_groups(model.named_parameters(), 0.0),
        0.9,
        0.999,
        1e-8,
    );
    (model, opt)
}

fn loss_falls(method: &str, device: &Device) {
    let (mut model, mut opt) = tiny_model(method, device);
    let (views, labels) = fixed_views(device);
    let mut losses = Vec::new();
    for step in 0..30 {
        let at = Progress { step, total: 30 };
        opt.zero_grad();
        let loss = model.loss(&views, &labels, at);
        losses.push(loss.item());
        loss.backward();
        opt.step(3e-3);
        model.after_step(at);
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(losses.iter().all(|l| l.is_finite()), "{method}: {losses:?}");
    assert!(
        last < first,
        "{method} on {}: loss {first} → {last}",
        device.name()
    );
}

/// MoCo v2 on one fixed batch would fill its queue with that batch's own keys, which makes the
/// loss rise by design. So it trains on two batches in turn with a queue of one batch: each
/// step's negatives are the other batch's keys, as in a real run, and the loss of batch A against
/// batch B's current keys must fall.
fn moco_v2_learns(device: &Device) {
    let config = MocoV2Config {
        queue: 16,
        proj_hidden: 16,
        proj_out: 16,
        ..MocoV2Config::default()
    };
    let mut moco = MocoV2::new(&mut Init::new(3, device), tiny_vit(), views(), config);
    let data = digits(32);
    let others = Tensor::from_vec(data.images[16 * 784..].to_vec(), &[16, 1, 28, 28], device);
    let shifted = Tensor::cat(&[&others.narrow(3, 1, 27), &others.narrow(3, 0, 1)], 3);
    let batches = [fixed_views(device).0, vec![others.clone(), shifted]];
    let negatives = |m: &MocoV2| {
        let keys = selfsup_engine::no_grad(|| m.key.forward(&others).normalize(1, 1e-12));
        m.queue.set_data(&keys);
    };
    let mut opt = AdamW::new(param_groups(moco.named_parameters(), 0.0), 0.9, 0.999, 1e-8);
    let at = Progress { step: 0, total: 30 };
    negatives(&moco);
    let first = moco.loss(&batches[0], &[], at).item();
    for step in 0..30 {
        let at = Progress { step, total: 30 };
        opt.zero_grad();
        moco.loss(&batches[step as usize % 2], &[], at).backward();
        opt.step(3e-3);
        moco.after_step(at);
    }
    negatives(&moco);
    let last = moco.loss(&batches[0], &[], at).item();
    assert!(
        last < first,
        "moco-v2 on {}: loss {first} → {last}",
        device.name()
    );
}

/// Why DINO's head has BatchNorm here: a random ViT maps every digit to nearly one direction, so
/// without it the teacher gives every image the same distribution (its batch mean is as peaked as
/// each row), which centring then flattens to uniform. With it, images get distributions of
/// their own: the batch mean is much flatter than the rows.
#[test]
fn dinos_head_batch_norm_gives_images_distinct_teacher_outputs() {
    let cpu = Device::cpu();
    let data = digits(64);
    let images = Tensor::from_vec(data.images.clone(), &[64, 1, 28, 28], &cpu);
    let entropy =
        |p: &Tensor| -(p * &p.clamp(1e-30, 1.0).log()).sum_all().item() / p.shape()[0] as f32;
    // The main job's ViT and head (a tiny ViT's features are less alike).
    let vit = VitConfig {
        patch: 4,
        dim: 64,
        depth: 4,
        heads: 4,
        mlp_ratio: 4,
        ..tiny_vit()
    };
    let spread = |head_bn: bool| {
        let c = DinoConfig {
            head_bn,
            ..DinoConfig::default()
        };
        let dino = Dino::new(&mut Init::new(3, &cpu), vit.clone(), views(), c.clone());
        no_grad(|| {
            let q = dino
                .teacher
                .forward(&images, false)
                .mul_scalar(1.0 / c.warmup_teacher_temp)
                .softmax(-1);
            // H(mean of the rows) − mean H(row): 0 when every image gets the same distribution.
            entropy(&q.mean(0, true)) - entropy(&q)
        })
    };
    let (without, with) = (spread(false), spread(true));
    assert!(without < 0.5, "without BatchNorm: {without}");
    assert!(with > 1.5, "with BatchNorm: {with}");
}

/// DINO's loss is the cross-entropy H(P_t, P_s), which rises whenever the centred teacher grows
/// less confident, so learning shows in the part the student controls: the KL divergence
/// H(P_t, P_s) − H(P_t), which must fall on a fixed batch, with either centring.
fn dino_learns(device: &Device, centering: Centering) {
    let config = tiny("dino", 30);
    let MethodConfig::Dino(mut c) = config.method.clone() else {
        unreachable!()
    };
    c.centering = centering;
    let mut dino = Dino::new(
        &mut Init::new(3, device),
        config.vit.clone(),
        config.views.clone(),
        c,
    );
    let mut opt = AdamW::new(param_groups(dino.named_parameters(), 0.0), 0.9, 0.999, 1e-8);
    let (views, labels) = fixed_views(device);
    let globals = Tensor::cat(&[&views[0], &views[1]], 0);
    let mut kl = Vec::new();
    for step in 0..30 {
        let at = Progress { step, total: 30 };
        let q = no_grad(|| dino.teacher_targets(&dino.teacher.forward(&globals, false), step));
        let entropy = (&q * &q.clamp(1e-30, 1.0).log()).sum_all().item() / -32.0;
        opt.zero_grad();
        let loss = dino.loss(&views, &labels, at);
        kl.push(loss.item() - entropy);
        loss.backward();
        opt.step(3e-3);
        dino.after_step(at);
    }
    assert!(kl.iter().all(|k| k.is_finite() && *k > -1e-4), "{kl:?}");
    assert!(
        kl[29] < kl[0],
        "dino ({centering:?}) on {}: KL {} → {}",
        device.name(),
        kl[0],
        kl[29]
    );
}

fn every_method_trains(device: &Device) {
    for m in MethodConfig::NAMES
        .into_iter()
        .filter(|&m| m != "moco-v2" && m != "dino")
    {
        loss_falls(m, device);
    }
    moco_v2_learns(device);
    dino_learns(device, Centering::Mean);
    dino_learns(device, Centering::Sinkhorn);
}

#[test]
fn every_method_trains_on_the_cpu() {
    every_method_trains(&Device::cpu());
}

#[test]
fn every_method_trains_on_the_gpu() {
    let Some(gpu) = common::gpu_or_skip("every_method_trains_on_the_gpu") else {
        return;
    };
    every_method_trains(&gpu);
}

/// A GPU training step keeps its data on the device: past the batch itself (already there), it
/// uploads only index lists of a few hundred bytes — no zero pads, masks or weights built on the
/// host — and the optimizer is one launch per parameter.
#[test]
fn a_gpu_simclr_step_uploads_only_a_few_kilobytes() {
    let Some(gpu) = common::gpu_or_skip("a_gpu_simclr_step_uploads_only_a_few_kilobytes") else {
        return;
    };
    let (mut model, mut opt) = tiny_model("simclr", &gpu);
    let params = model.named_parameters().len() as u64;
    let (views, labels) = fixed_views(&gpu);
    let mut step = |step| {
        let at = Progress { step, total: 2 };
        let before = gpu.gpu_counters().expect("GPU counters");
        opt.zero_grad();
        model.loss(&views, &labels, at).backward();
        let mid = gpu.gpu_counters().expect("GPU counters");
        grad_norm(&model.parameters());
        let normed = gpu.gpu_counters().expect("GPU counters");
        opt.step(1e-3);
        model.after_step(at);
        let after = gpu.gpu_counters().expect("GPU counters");
        (mid - before, normed - mid, after - normed)
    };
    step(0);
    let (pass, norm, optimizer) = step(1);
    assert!(
        pass.upload_bytes <= 2048,
        "forward + backward uploaded {} bytes in {} writes",
        pass.upload_bytes,
        pass.uploads
    );
    assert_eq!(optimizer.upload_bytes, 0, "the optimizer uploaded data");
    assert_eq!(
        optimizer.dispatches,
        params.div_ceil(4),
        "AdamW: four parameters per launch"
    );
    // The gradient norm: eight gradients' Σg² per launch, one sum, one read-back.
    assert_eq!(
        (norm.dispatches, norm.readbacks, norm.upload_bytes),
        (params.div_ceil(8) + 1, 1, 0)
    );
}

/// Training steps launch the same kernels on buffers the pool hands out in a fixed order, so once a
/// few steps have filled the context's bind-group cache, most launches find their bind group
/// there instead of creating one.
#[test]
fn repeated_gpu_steps_reuse_their_bind_groups() {
    if common::gpu_or_skip("repeated_gpu_steps_reuse_their_bind_groups").is_none() {
        return;
    }
    // A context of its own, so that no other test's buffers interleave with the steps'.
    let gpu = common::private_gpu();
    let (mut model, mut opt) = tiny_model("simclr", &gpu);
    let (views, labels) = fixed_views(&gpu);
    let mut step = |step| {
        let at = Progress { step, total: 10 };
        let before = gpu.gpu_counters().expect("GPU counters");
        opt.zero_grad();
        model.loss(&views, &labels, at).backward();
        grad_norm(&model.parameters());
        opt.step(1e-3);
        model.after_step(at);
        gpu.synchronize();
        gpu.gpu_counters().expect("GPU counters") - before
    };
    let first = step(0);
    assert_eq!(first.bind_groups, first.dispatches, "{first:?}");
    for k in 1..5 {
        step(k);
    }
    let (created, launched) = (5..10)
        .map(step)
        .fold((0, 0), |(c, l), s| (c + s.bind_groups, l + s.dispatches));
    assert!(
        created * 3 <= launched,
        "{created} new bind groups for {launched} launches in steps 5-9"
    );
}

/// A run's training step on the GPU waits for the device once: the loss and the gradient norm
/// are read back together.
#[test]
fn a_gpu_training_step_reads_back_once() {
    let Some(gpu) = common::gpu_or_skip("a_gpu_training_step_reads_back_once") else {
        return;
    };
    let mut run = Run::new(tiny("simclr", 2), digits(32), &gpu);
    for _ in 0..2 {
        let before = gpu.gpu_counters().expect("GPU counters");
        run.train_step().unwrap();
        let spent = gpu.gpu_counters().expect("GPU counters") - before;
        assert_eq!(spent.readbacks, 1, "{spent:?}");
    }
}

/// Weights, buffers (teacher, queue) and optimizer state, sorted by name.
fn state(run: &Run) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = run
        .model
        .state_dict()
        .into_iter()
        .chain(run.optimizer.state_dict())
        .map(|(k, t)| (k, t.to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn resume_is_bit_identical(method: &str) {
    let cpu = Device::cpu();
    let data = digits(48);
    // 48 images make 3 batches of 16: six steps cross an epoch boundary.
    let config = tiny(method, 6);
    let mut straight = Run::new(config.clone(), data.clone(), &cpu);
    for _ in 0..6 {
        straight.train_step().unwrap();
    }
    let path = std::env::temp_dir().join(format!(
        "selfsup-resume-{method}-{}.safetensors",
        std::process::id()
    ));
    let mut first = Run::new(config.clone(), data.clone(), &cpu);
    for _ in 0..3 {
        first.train_step().unwrap();
    }
    first.save(&path).unwrap();
    drop(first);
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(Run::config_of(&ck, &path).unwrap(), config);
    let mut resumed = Run::resume(&ck, &path, config, data, &cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(resumed.step, 3);
    for _ in 0..3 {
        resumed.train_step().unwrap();
    }
    assert_eq!(
        resumed.history, straight.history,
        "{method}: loss curves differ"
    );
    let (a, b) = (state(&straight), state(&resumed));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{method}: {name} differs after resuming"
        );
    }
}

#[test]
fn resumed_simclr_byol_moco_v2_mae_dino_and_clip_runs_are_bit_identical() {
    for m in ["simclr", "byol", "moco-v2", "mae", "dino", "clip"] {
        resume_is_bit_identical(m);
    }
}

#[test]
fn a_momentum_copy_is_independent_and_the_ema_moves_it_toward_the_student() {
    let cpu = Device::cpu();
    let mut init = Init::new(1, &cpu);
    let student = Tower {
        encoder: VisionTransformer::new(&mut init, tiny_vit()),
        projector: MlpHead::new(&mut init, &[16, 8, 4], HeadNorm::Hidden),
    };
    let teacher = student.momentum_copy();
    let (s, t) = (student.state_dict(), teacher.state_dict());
    assert_eq!(s.len(), t.len());
    for ((name, a), (_, b)) in s.iter().zip(&t) {
        assert_eq!(a.to_vec(), b.to_vec(), "{name} not copied");
    }
    assert!(
        teacher.parameters().iter().all(|p| !p.requires_grad()),
        "a teacher is never trained"
    );
    // Changing the copy leaves the original alone, and the other way round.
    let (sw, tw) = (
        &student.projector.fcs[1].weight,
        &teacher.projector.fcs[1].weight,
    );
    let before = sw.to_vec();
    tw.set_data(&Tensor::zeros(&[4, 8], &cpu));
    assert_eq!(sw.to_vec(), before);
    let (sb, tb) = (
        student.encoder.norm.bias.clone(),
        teacher.encoder.norm.bias.clone(),
    );
    sb.set_data(&Tensor::ones(&[16], &cpu));
    assert_eq!(tb.to_vec(), vec![0.0; 16]);
    // teacher = τ·teacher + (1 − τ)·student, for every parameter.
    teacher.ema_from(&student, 0.75);
    for (g, w) in tw.to_vec().iter().zip(&before) {
        assert!((g - 0.25 * w).abs() < 1e-7, "{g} vs {}", 0.25 * w);
    }
    assert_eq!(tb.to_vec(), vec![0.25; 16]);
}

/// A composite two levels deep, to see that mode switches reach every leaf.
struct Nest {
    head: MlpHead,
    drop: Dropout,
    inner: Vec<BatchNorm1d>,
}

impl Module for Nest {
    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> =
            vec![("head".into(), &self.head), ("drop".into(), &self.drop)];
        v.extend(
            self.inner
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("inner.{i}"), b as &dyn Module)),
        );
        v
    }
}

#[test]
fn set_training_reaches_every_submodule() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut init = Init::new(0, &Device::cpu());
    let nest = Nest {
        head: MlpHead::new(&mut init, &[4, 8, 8, 4], HeadNorm::HiddenAndOutput),
        drop: Dropout::new(&mut init, 0.5),
        inner: vec![
            BatchNorm1d::new(&init, 4, true),
            BatchNorm1d::new(&init, 4, false),
        ],
    };
    let flags = |n: &Nest| {
        let mut f: Vec<bool> = n
            .head
            .bns
            .iter()
            .flatten()
            .map(|b| b.training.load(Relaxed))
            .collect();
        f.push(n.drop.training.load(Relaxed));
        f.extend(n.inner.iter().map(|b| b.training.load(Relaxed)));
        f
    };
    assert_eq!(flags(&nest).len(), 6);
    nest.set_training(false);
    assert!(flags(&nest).iter().all(|t| !t));
    nest.set_training(true);
    assert!(flags(&nest).iter().all(|&t| t));
    // Names come through the same traversal: every BatchNorm's statistics are buffers.
    assert_eq!(nest.named_buffers().len(), 2 * 5);
}

#[test]
fn the_moco_queue_replaces_its_oldest_keys_and_wraps_around() {
    let cpu = Device::cpu();
    let config = MocoV2Config {
        queue: 5,
        proj_hidden: 4,
        proj_out: 2,
        ..MocoV2Config::default()
    };
    let moco = MocoV2::new(&mut Init::new(0, &cpu), tiny_vit(), views(), config);
    let start = moco.queue.to_vec();
    let keys = |v: f32| Tensor::from_vec(vec![v; 6], &[3, 2], &cpu);
    moco.enqueue(&keys(1.0));
    let q = moco.queue.to_vec();
    assert_eq!(&q[..6], &[1.0; 6], "rows 0–2 hold the first keys");
    assert_eq!(&q[6..], &start[6..], "rows 3–4 are untouched");
    assert_eq!(moco.ptr.item(), 3.0);
    // Three more: rows 3 and 4, then round to row 0.
    moco.enqueue(&keys(2.0));
    assert_eq!(
        moco.queue.to_vec(),
        [2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    );
    assert_eq!(moco.ptr.item(), 1.0);
    // Checkpointed: queue and pointer are buffers of the method.
    let names: Vec<String> = moco.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"queue".to_string()) && names.contains(&"queue_ptr".to_string()));
    assert!(moco
        .named_parameters()
        .iter()
        .all(|(n, _)| !n.starts_with("key_")));
}
