//! What the GPU backend does on this machine's adapter, one figure per line: the adapter and its
//! limits, copy bandwidth, matrix-product GFLOP/s (squares and the ViT's shapes), softmax, layer
//! norm and reduction bandwidth, attention forward+backward, and the SimCLR training step split
//! into forward, backward and optimizer (with the gradient norm the run takes first) with its
//! kernel launches, submissions and uploads, then the same step on the host's CPU backend. Where
//! the adapter stores f16, the products, attention and step again with f16 operands (autocast).
//!
//! Made to be run once on a borrowed GPU machine, so it is built portable (no `target-cpu=native`,
//! which `.cargo/config.toml` sets for this machine's CPU backend), stripped, and finishes in a few
//! minutes (on a software adapter such as lavapipe it shrinks its largest sizes):
//!
//!     CARGO_TARGET_DIR=target/portable RUSTFLAGS="" cargo build --release --example gpu_probe \
//!         --config 'profile.release.strip="symbols"'
//!     target/portable/release/examples/gpu_probe            # --quick: the smallest sizes only

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

use clap::Parser;
use selfsup::models::method::{MethodConfig, Progress};
use selfsup::models::views::{Recipe, ViewsConfig};
use selfsup::models::vit::{Pool, VitConfig};
use selfsup_engine::backend::gpu::GpuContext;
use selfsup_engine::nn::Init;
use selfsup_engine::optim::{grad_norm, param_groups, AdamW, Optimizer};
use selfsup_engine::{autocast, no_grad, Autocast, DType, Device, Tensor};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Measure the GPU backend on this adapter, one figure per line")]
struct Args {
    /// Only the smallest sizes (a check that the probe runs)
    #[arg(long)]
    quick: bool,
    /// Only the matrix products (to compare kernel profiles: SELFSUP_GPU_KERNELS=software|hardware)
    #[arg(long)]
    matmul: bool,
}

/// Median wall time of `f` in seconds over `reps` runs after one warm-up, each waited for.
fn time(dev: &Device, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    dev.synchronize();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            dev.synchronize();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    selfsup::program::run_main(|| probe(Args::parse()));
}

fn probe(args: Args) -> Result<(), String> {
    let dev = Device::gpu().map_err(|e| e.to_string())?;
    let Device::Gpu(ctx) = &dev else {
        unreachable!("Device::gpu gives a GPU")
    };
    for (what, value) in ctx.describe() {
        println!("{what}: {value}");
    }
    // Sizes shrink on a software adapter (minutes per large product) and with --quick.
    let big = !(ctx.is_software() || args.quick);
    let reps = if args.quick { 3 } else { 5 };

    // A GPU idles at low clocks: a second of products first, so that the first figures are not
    // taken while it speeds up.
    if big {
        let a = Tensor::randn(&[2048, 2048], 0, &dev);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 1.0 {
            drop(no_grad(|| a.matmul(&a)));
            dev.synchronize();
        }
    }

    // Copy: one read and one write of every element.
    let n = if big { 1 << 26 } else { 1 << 22 };
    let x = Tensor::randn(&[n], 0, &dev);
    let s = no_grad(|| time(&dev, reps, || drop(x.mul_scalar(1.0))));
    println!(
        "copy (x·1, one read and one write) {} MiB: {:.1} GB/s",
        (n * 4) >> 20,
        2.0 * 4.0 * n as f64 / s / 1e9
    );
    if let Some([kernels, recorded, done]) =
        device_time(&dev, ctx, || drop(no_grad(|| x.mul_scalar(1.0))))
    {
        println!(
            "copy: {:.1} GB/s in kernels ({kernels:.3} ms; recorded in {recorded:.3} ms, done \
             after {done:.3} ms)",
            2.0 * 4.0 * n as f64 / kernels / 1e6
        );
    }
    drop(x);

    // Matrix products: squares, then the ViT-tiny's at batch 256 (256 × 2 views × 50 tokens).
    let squares: &[usize] = match (big, args.quick) {
        (_, true) => &[256],
        (false, _) => &[256, 512, 1024],
        (true, _) => &[256, 1024, 2048, 4096],
    };
    let mut shapes: Vec<(String, [usize; 3], bool)> = squares
        .iter()
        .map(|&n| (format!("matmul {n}³"), [n, n, n], false))
        .collect();
    if !args.quick {
        let t = 25_600;
        for (k, n) in [(64, 192), (64, 256), (256, 64)] {
            shapes.push((format!("linear {t}×{k}→{n}"), [t, k, n], false));
            shapes.push((format!("weight gradient {k}×{t}·{t}×{n}"), [k, t, n], true));
        }
    }
    for (name, [m, k, n], transposed) in shapes {
        let (a, b) = if transposed {
            (
                Tensor::randn(&[k, m], 1, &dev),
                Tensor::randn(&[k, n], 2, &dev),
            )
        } else {
            (
                Tensor::randn(&[m, k], 1, &dev),
                Tensor::randn(&[k, n], 2, &dev),
            )
        };
        let product = |a: &Tensor, b: &Tensor| {
            no_grad(|| {
                if transposed {
                    a.matmul_tn(b)
                } else {
                    a.matmul(b)
                }
            })
        };
        let s = time(&dev, reps, || drop(product(&a, &b)));
        let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
        println!("{name}: {gflops:.1} GFLOP/s ({:.3} ms)", s * 1e3);
        // The product against the CPU backend's, where the CPU is quick about it.
        if m * k * n <= 1 << 30 {
            let cpu = Device::cpu();
            let want = product(&a.to_device(&cpu), &b.to_device(&cpu)).to_vec();
            let got = product(&a, &b).to_vec();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            println!(
                "{name}: largest difference from the CPU {:.1e} of the largest value",
                err / scale
            );
        }
        // The same product reading f16 operands (f32 arithmetic), where the adapter stores f16.
        if ctx.has_f16() {
            let (a, b) = (a.to_dtype(DType::F16), b.to_dtype(DType::F16));
            let s = time(&dev, reps, || drop(product(&a, &b)));
            let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
            println!(
                "{name} f16 operands: {gflops:.1} GFLOP/s ({:.3} ms)",
                s * 1e3
            );
        }
        let profiled = device_time(&dev, ctx, || drop(product(&a, &b)));
        if let Some([kernels, recorded, done]) = profiled {
            println!(
                "{name}: {:.1} GFLOP/s in kernels ({kernels:.3} ms; recorded in {recorded:.3} ms, \
                 done after {done:.3} ms)",
                2.0 * (m * k * n) as f64 / kernels / 1e6
            );
        }
    }
    if args.matmul {
        return Ok(());
    }

    // Row kernels: bytes moved per call (read + write) over time.
    let (rows, cols) = if big { (16_384, 1024) } else { (4096, 256) };
    let x = Tensor::randn(&[rows, cols], 3, &dev);
    let gb = |bytes: usize, s: f64| bytes as f64 / s / 1e9;
    let s = no_grad(|| time(&dev, reps, || drop(x.softmax(-1))));
    println!(
        "softmax {rows}×{cols}: {:.1} GB/s",
        gb(2 * 4 * rows * cols, s)
    );
    let s = no_grad(|| time(&dev, reps, || drop(x.layer_norm(None, None, 1e-5))));
    println!(
        "layer norm {rows}×{cols}: {:.1} GB/s",
        gb(2 * 4 * rows * cols, s)
    );
    let s = no_grad(|| time(&dev, reps, || drop(x.sum_axes(&[0], false))));
    println!(
        "column sum {rows}×{cols} (a bias gradient): {:.1} GB/s",
        gb(4 * rows * cols, s)
    );
    drop(x);

    // Attention forward + backward on packed qkv: the ViT's T = 50 and a long sequence.
    let long = if big { 1024 } else { 256 };
    for (b, t, heads, d) in [(64, 50, 4, 16), (4, long, 4, 32)] {
        let qkv = Tensor::randn(&[b, t, 3 * heads * d], 4, &dev).requires_grad_(true);
        let modes: &[bool] = if ctx.has_f16() {
            &[false, true]
        } else {
            &[false]
        };
        for &f16 in modes {
            let _f16 = f16.then(|| Autocast::f16(&dev)).transpose();
            let s = time(&dev, reps, || {
                Tensor::multi_head_attention(&qkv, heads, false, None)
                    .sum_all()
                    .backward();
            });
            let tag = if f16 { " (f16 operands)" } else { "" };
            println!(
                "attention b{b} t{t} {heads}×{d}, forward+backward{tag}: {:.2} ms",
                s * 1e3
            );
        }
    }

    let batches: &[usize] = match (big, args.quick) {
        (_, true) => &[8],
        (false, _) => &[32, 128],
        (true, _) => &[32, 128, 256],
    };
    // The same steps with f16 operands (autocast) where the adapter stores f16, then on this
    // host's CPU backend, the alternative to the GPU.
    let reps = if args.quick { 2 } else { 3 };
    for &batch in batches {
        simclr_step(&dev, batch, reps);
    }
    if ctx.has_f16() {
        let _f16 = Autocast::f16(&dev).map_err(|e| e.to_string())?;
        for &batch in batches {
            simclr_step(&dev, batch, reps);
        }
    }
    for &batch in batches {
        simclr_step(&Device::cpu(), batch, reps);
    }
    Ok(())
}

/// One run of `f` with `SELFSUP_GPU_PROFILE=1`: its kernels' device time, the host's time to
/// record it and the time until the device is done, in ms; `None` when not profiling.
fn device_time(dev: &Device, ctx: &GpuContext, f: impl FnOnce()) -> Option<[f64; 3]> {
    ctx.take_kernel_times();
    let start = Instant::now();
    f();
    let recorded = start.elapsed();
    dev.synchronize();
    let done = start.elapsed();
    let ns: f64 = ctx.take_kernel_times().iter().map(|k| k.2).sum();
    (ns > 0.0).then_some([
        ns * 1e-6,
        recorded.as_secs_f64() * 1e3,
        done.as_secs_f64() * 1e3,
    ])
}

/// The SimCLR step of `benches/step.rs` at `batch` images (two views each), timed in its three
/// parts, with one step's kernel launches, submissions and uploads.
fn simclr_step(dev: &Device, batch: usize, reps: u64) {
    let mut init = Init::new(0, dev);
    let vit = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::mnist()
    };
    let views = ViewsConfig {
        recipe: Recipe::Digits,
        crop_min: 0.4,
        asymmetric: true,
    };
    let mut model = MethodConfig::named("simclr")
        .expect("a known method")
        .build(&mut init, vit, views);
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
    let labels = vec![0u32; batch];
    let mut parts = Vec::new();
    let mut per_step = Default::default();
    let mut peak = 0;
    for step in 0..=reps {
        let at = Progress {
            step,
            total: 1_000_000,
        };
        dev.synchronize();
        dev.reset_peak_memory();
        let before = dev.gpu_counters().unwrap_or_default();
        // Each part is timed to the end of its recording on the host, then to the device's end.
        let t0 = Instant::now();
        opt.zero_grad();
        let loss = model.loss(&x, &labels, at);
        let r0 = t0.elapsed();
        dev.synchronize();
        let t1 = Instant::now();
        loss.backward();
        let r1 = t1.elapsed();
        dev.synchronize();
        let t2 = Instant::now();
        // As the run's step: the gradient norm first (checked for NaN, used for clipping).
        grad_norm(&model.parameters());
        opt.step(1e-3);
        model.after_step(at);
        let r2 = t2.elapsed();
        dev.synchronize();
        let t3 = Instant::now();
        per_step = dev.gpu_counters().unwrap_or_default() - before;
        peak = dev.gpu_memory().map_or(0, |m| m.1);
        // The first step compiles kernels and fills the buffer pool.
        if step > 0 {
            let secs = [t1 - t0, t2 - t1, t3 - t2, r0 + r1 + r2].map(|d| d.as_secs_f64());
            parts.push(secs);
        }
    }
    parts.sort_by(|a, b| a[..3].iter().sum::<f64>().total_cmp(&b[..3].iter().sum()));
    let tag = if autocast::is_f16() { " f16" } else { "" };
    let [f, b, o, recording] = parts[parts.len() / 2];
    let on = if dev.is_gpu() {
        "gpu".into()
    } else {
        dev.name()
    };
    println!(
        "simclr{tag} step batch {batch} on the {on}: {:.1} ms (forward {:.1}, backward {:.1}, \
         optimizer {:.1})",
        (f + b + o) * 1e3,
        f * 1e3,
        b * 1e3,
        o * 1e3
    );
    let Device::Gpu(ctx) = dev else {
        return;
    };
    println!(
        "simclr{tag} step batch {batch}: {:.1} ms of it recording the launches on the host",
        recording * 1e3
    );
    println!(
        "simclr{tag} step batch {batch}: peak tensor memory {:.1} MB",
        peak as f64 / 1e6
    );
    // With SELFSUP_GPU_PROFILE=1, one more step's device time per kernel, longest first.
    ctx.take_kernel_times();
    let at = Progress {
        step: reps + 1,
        total: 1_000_000,
    };
    opt.zero_grad();
    model.loss(&x, &labels, at).backward();
    grad_norm(&model.parameters());
    opt.step(1e-3);
    let times = ctx.take_kernel_times();
    let total: f64 = times.iter().map(|k| k.2).sum();
    if total > 0.0 {
        println!(
            "simclr{tag} step batch {batch}: {:.1} ms in kernels",
            total * 1e-6
        );
    }
    for (kernel, launches, ns) in times.iter().take(12) {
        println!(
            "simclr{tag} step batch {batch}: kernel {kernel}: {launches} launches, {:.2} ms",
            ns * 1e-6
        );
    }
    println!(
        "simclr{tag} step batch {batch}: {} dispatches ({} new bind groups), {} submits, {} \
         uploads ({:.1} kB; kernel parameters {:.1} kB), {} readbacks",
        per_step.dispatches,
        per_step.bind_groups,
        per_step.submits,
        per_step.uploads,
        per_step.upload_bytes as f64 / 1e3,
        per_step.param_bytes as f64 / 1e3,
        per_step.readbacks
    );
}
