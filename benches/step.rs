//! Whole training steps of each method (forward, backward, AdamW, after-step update), the figure
//! compared with PyTorch's reference benchmark (`../shared/reference/pytorch/bench.py --only
//! vit,byol`): the same ViT-tiny (patch 4, dim 64, depth 4, 4 heads, mean pooling), each method's
//! default heads, random inputs.
//!
//! The char-GPT step is bench.py's `--only gpt`: vocabulary 96, ctx 128, d128, 4 layers, 4 heads,
//! batch 32, AdamW (wd 0.1), random tokens.
//!
//!     cargo bench --bench step                      # every method on the CPU, SimCLR on the GPU
//!     cargo bench --bench step -- cpu/byol/256      # a filter
//!     cargo bench --bench step -- cpu/gpt           # the char-GPT step
//!     cargo bench --bench step -- cpu/bert          # the BERT MLM step (tools/bert_torch.py)

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{param_groups, AdamW, Optimizer};
use selfsup_engine::{Autocast, Device, SeededRng};
use selfsup_models::bert::{mlm_mask, Batch, BertConfig, BertMlm};
use selfsup_models::gpt::{Gpt, GptConfig};
use selfsup_models::mae::MaeConfig;
use selfsup_models::method::{MethodConfig, Progress};
use selfsup_models::views::{Recipe, ViewsConfig};
use selfsup_models::vit::{Pool, VitConfig};
use std::time::Duration;

/// One step of `method` on `batch` images (two views each); "elem/s" is images per second.
fn method_step(c: &mut Criterion, name: &str, method: &str, device: &Device, batch: usize) {
    let mut init = Init::new(0, device);
    let vit = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::mnist()
    };
    let views = ViewsConfig {
        recipe: Recipe::Digits,
        crop_min: 0.4,
        asymmetric: true,
    };
    let config = match MethodConfig::named(method).expect("a known method") {
        // bench.py's MAE: a decoder of width 32.
        MethodConfig::Mae(c) => MethodConfig::Mae(MaeConfig {
            decoder_dim: 32,
            ..c
        }),
        c => c,
    };
    let mut model = config.build(&mut init, vit, views);
    let mut opt = AdamW::new(
        param_groups(model.named_parameters(), 0.05),
        0.9,
        0.999,
        1e-8,
    );
    let x = [
        init.uniform(&[batch, 1, 28, 28], 1.0),
        init.uniform(&[batch, 1, 28, 28], 1.0),
    ];
    let mut g = c.benchmark_group(format!("{name}/{method}"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(batch as u64));
    // Only CLIP reads labels (its captions are made from them).
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let mut step = 0;
    g.bench_function(batch.to_string(), |b| {
        b.iter(|| {
            let at = Progress {
                step,
                total: 1_000_000,
            };
            opt.zero_grad();
            let loss = model.loss(&x, &labels, at);
            loss.backward();
            opt.step(1e-3);
            model.after_step(at);
            step += 1;
            // Reading the loss waits for the device, so GPU timings include the work.
            loss.item()
        })
    });
    g.finish();
}

/// One char-GPT step on `batch` random sequences of 128 tokens; "elem/s" is tokens per second.
fn gpt_step(c: &mut Criterion, name: &str, device: &Device, batch: usize) {
    let ctx = 128;
    let mut init = Init::new(0, device);
    let config = GptConfig {
        vocab: 96,
        ctx,
        dim: 128,
        depth: 4,
        heads: 4,
        dropout: 0.0,
    };
    let model = Gpt::new(&mut init, config);
    let mut opt = AdamW::new(param_groups(model.named_parameters(), 0.1), 0.9, 0.99, 1e-8);
    let mut rng = SeededRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..batch * ctx).map(|_| rng.random_range(0..96)).collect();
    let targets: Vec<i64> = (0..batch * ctx).map(|_| rng.random_range(0..96)).collect();
    let mut g = c.benchmark_group(format!("{name}/gpt"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements((batch * ctx) as u64));
    g.bench_function(batch.to_string(), |b| {
        b.iter(|| {
            opt.zero_grad();
            let loss = model.loss(&ids, &targets, batch);
            loss.backward();
            opt.step(1e-3);
            loss.item()
        })
    });
    // The optimizer alone, gradients in place: its share of the step.
    g.bench_function("adamw", |b| b.iter(|| opt.step(1e-3)));
    g.finish();
}

/// One step of the `bert` example's model (4 × 128, vocabulary 4,096) on `batch` random
/// sentences of 40 tokens with BERT's masking, as `tools/bert_torch.py` times it in PyTorch;
/// "elem/s" is tokens per second.
fn bert_step(c: &mut Criterion, name: &str, device: &Device, batch: usize) {
    let (t, vocab) = (40, 4096);
    let config = BertConfig {
        vocab,
        max_positions: 64,
        type_vocab: 2,
        dim: 128,
        depth: 4,
        heads: 4,
        intermediate: 512,
        // Off, as in the PyTorch twin (the example trains with 0.1).
        dropout: 0.0,
        ln_eps: 1e-12,
    };
    let model = BertMlm::new(&mut Init::new(0, device), config);
    let mut opt = AdamW::new(
        param_groups(model.named_parameters(), 0.01),
        0.9,
        0.999,
        1e-6,
    );
    let mut rng = SeededRng::seed_from_u64(0);
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..t).map(|_| rng.random_range(5..vocab as u32)).collect())
        .collect();
    let batch_ids = Batch::pad(&rows, 0);
    let (ids, targets) = mlm_mask(&batch_ids, 0.15, 4, 5..vocab as u32, &[], &mut rng);
    let masked = Batch {
        ids,
        ..batch_ids.clone()
    };
    let mut g = c.benchmark_group(format!("{name}/bert"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements((batch * t) as u64));
    g.bench_function(batch.to_string(), |b| {
        b.iter(|| {
            opt.zero_grad();
            let loss = model.loss(&masked, &targets);
            loss.backward();
            opt.step(1e-3);
            loss.item()
        })
    });
    g.finish();
}

fn steps(c: &mut Criterion) {
    selfsup::allocator::keep_freed_pages();
    let cpu = Device::cpu();
    println!("CPU: {}", cpu.name());
    for method in MethodConfig::NAMES {
        method_step(c, "cpu", method, &cpu, 256);
    }
    method_step(c, "cpu", "simclr", &cpu, 128);
    gpt_step(c, "cpu", &cpu, 32);
    bert_step(c, "cpu", &cpu, 64);
    match Device::gpu() {
        // A software adapter takes seconds per step: batch 32, and the batch 128
        // (`-- gpu/simclr/128`, minutes on lavapipe).
        Ok(gpu) => {
            println!("GPU adapter: {}", gpu.name());
            method_step(c, "gpu", "simclr", &gpu, 32);
            method_step(c, "gpu", "simclr", &gpu, 128);
            // With f16 operands for products and attention, where the adapter stores f16.
            if let Ok(_f16) = Autocast::f16(&gpu) {
                method_step(c, "gpu-f16", "simclr", &gpu, 32);
                method_step(c, "gpu-f16", "simclr", &gpu, 128);
            }
        }
        Err(e) => println!("no GPU benchmarks: {e}"),
    }
}

criterion_group!(benches, steps);
criterion_main!(benches);
