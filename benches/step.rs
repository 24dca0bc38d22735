//! Whole SimCLR training steps (forward, backward, AdamW), the figure compared with PyTorch's
//! reference benchmark (`../shared/reference/pytorch/bench.py --only vit`): the same ViT-tiny
//! (patch 4, dim 64, depth 4, 4 heads), projector 64→128→64 with batch norm, random inputs.
//!
//!     cargo bench --bench step                      # CPU, and the GPU at a small batch
//!     cargo bench --bench step -- cpu/simclr/256    # a filter

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::optim::{param_groups, AdamW, Optimizer};
use selfsup_engine::Device;
use selfsup_models::simclr::SimClr;
use selfsup_models::vit::VitConfig;
use std::time::Duration;

/// One SimCLR step on `batch` image pairs; criterion's "elem/s" is images per second.
fn simclr_step(c: &mut Criterion, name: &str, device: &Device, batch: usize) {
    let mut init = Init::new(0, device);
    let model = SimClr::new(&mut init, VitConfig::mnist(), 128, 64, 0.5);
    let mut opt = AdamW::new(
        param_groups(model.named_parameters(), 0.05),
        0.9,
        0.999,
        1e-8,
    );
    let v1 = init.uniform(&[batch, 1, 28, 28], 1.0);
    let v2 = init.uniform(&[batch, 1, 28, 28], 1.0);
    let mut g = c.benchmark_group(format!("{name}/simclr"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(batch as u64));
    g.bench_function(batch.to_string(), |b| {
        b.iter(|| {
            opt.zero_grad();
            let loss = model.loss(&v1, &v2);
            loss.backward();
            opt.step(1e-3);
            // Reading the loss waits for the device, so GPU timings include the work.
            loss.item()
        })
    });
    g.finish();
}

fn steps(c: &mut Criterion) {
    selfsup::allocator::keep_freed_pages();
    let cpu = Device::cpu();
    println!("CPU: {}", cpu.name());
    simclr_step(c, "cpu", &cpu, 256);
    simclr_step(c, "cpu", &cpu, 128);
    match Device::gpu() {
        // A software adapter takes seconds per step; a small batch keeps the run short.
        Ok(gpu) => {
            println!("GPU adapter: {}", gpu.name());
            simclr_step(c, "gpu", &gpu, 32);
        }
        Err(e) => println!("no GPU benchmarks: {e}"),
    }
}

criterion_group!(benches, steps);
criterion_main!(benches);
