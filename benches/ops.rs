//! Kernel benchmarks on the CPU backend and, where an adapter exists, the GPU backend:
//! matmul (GFLOP/s: criterion's "elem/s" counts floating-point operations), softmax and
//! layer norm (GB/s of input read + output written), attention forward+backward, and the cost
//! per op of a chain of 1,000 small ops (how well launches are batched).
//!
//!     cargo bench --bench ops                       # everything
//!     cargo bench --bench ops -- cpu/matmul         # a filter

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use selfsup_engine::{no_grad, Device, Tensor};
use std::time::Duration;

fn devices() -> Vec<(&'static str, Device)> {
    selfsup::allocator::keep_freed_pages();
    let mut v = vec![("cpu", Device::cpu())];
    match Device::gpu() {
        Ok(gpu) => {
            println!("GPU adapter: {}", gpu.name());
            v.push(("gpu", gpu));
        }
        Err(e) => println!("no GPU benchmarks: {e}"),
    }
    println!("CPU: {}", Device::cpu().name());
    v
}

/// Runs `f` and waits for the device, so GPU timings include the work, not just its recording.
fn run(device: &Device, f: impl Fn() -> Tensor) {
    let t = f();
    device.synchronize();
    drop(t);
}

fn matmul(c: &mut Criterion) {
    for (name, dev) in devices() {
        let mut g = c.benchmark_group(format!("{name}/matmul"));
        g.sample_size(10).measurement_time(Duration::from_secs(4));
        // Square products, then the ViT's token projection (25,600 tokens is 512 views × 50).
        let shapes: &[(usize, usize, usize)] = &[
            (256, 256, 256),
            (512, 512, 512),
            (1024, 1024, 1024),
            (2048, 2048, 2048),
            (2048, 64, 256),
            (25600, 64, 256),
        ];
        for &(m, k, n) in shapes {
            if dev.is_gpu() && m * k * n > 1 << 31 {
                continue; // minutes per sample on a software adapter
            }
            let a = Tensor::randn(&[m, k], 1, &dev);
            let b = Tensor::randn(&[k, n], 2, &dev);
            g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
            g.bench_function(
                BenchmarkId::from_parameter(format!("{m}x{k}x{n}")),
                |bench| bench.iter(|| run(&dev, || a.matmul(&b))),
            );
        }
        // The char-GPT's linear layers over 4,096 tokens (batch 32 × ctx 128): forward
        // x·wᵀ + b, and the backward products dx = dy·w and dw = dyᵀ·x.
        for (i, o) in [(128, 384), (128, 128), (128, 512), (512, 128)] {
            let x = Tensor::randn(&[4096, i], 1, &dev);
            let w = Tensor::randn(&[o, i], 2, &dev);
            let b = Tensor::randn(&[o], 3, &dev);
            let dy = Tensor::randn(&[4096, o], 4, &dev);
            g.throughput(Throughput::Elements(2 * (4096 * i * o) as u64));
            g.bench_function(format!("linear 4096x{i}->{o}"), |bench| {
                bench.iter(|| run(&dev, || x.linear(&w, Some(&b))))
            });
            g.bench_function(format!("dx 4096x{o}x{i}"), |bench| {
                bench.iter(|| run(&dev, || dy.matmul(&w)))
            });
            g.bench_function(format!("dw {o}x4096x{i}"), |bench| {
                bench.iter(|| run(&dev, || dy.matmul_tn(&x)))
            });
        }
        g.finish();
    }
}

fn row_ops(c: &mut Criterion) {
    for (name, dev) in devices() {
        let mut g = c.benchmark_group(format!("{name}/rows"));
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        let x = Tensor::randn(&[4096, 1024], 3, &dev);
        let (w, b) = (Tensor::ones(&[1024], &dev), Tensor::zeros(&[1024], &dev));
        g.throughput(Throughput::Bytes(2 * 4 * x.numel() as u64));
        g.bench_function("softmax 4096x1024", |bench| {
            bench.iter(|| run(&dev, || x.softmax(-1)))
        });
        g.bench_function("layer_norm 4096x1024", |bench| {
            bench.iter(|| run(&dev, || x.layer_norm(Some(&w), Some(&b), 1e-5)))
        });
        // The char-GPT's row ops (4,096 tokens): GELU on the 512-wide hidden layer, layer norm
        // and the residual add on the 128-wide stream, forward and forward+backward.
        let h = Tensor::randn(&[4096, 512], 4, &dev);
        let r = Tensor::randn(&[4096, 128], 5, &dev);
        let (w, b) = (Tensor::ones(&[128], &dev), Tensor::zeros(&[128], &dev));
        g.throughput(Throughput::Bytes(2 * 4 * h.numel() as u64));
        g.bench_function("gelu 4096x512", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| h.gelu())))
        });
        g.bench_function("gelu forward+backward 4096x512", |bench| {
            bench.iter(|| {
                let h = h.detach().requires_grad_(true);
                h.gelu().sum_all().backward();
                run(&dev, || h.grad().unwrap());
            })
        });
        g.throughput(Throughput::Bytes(2 * 4 * r.numel() as u64));
        g.bench_function("layer_norm 4096x128", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| r.layer_norm(Some(&w), Some(&b), 1e-5))))
        });
        g.bench_function("layer_norm forward+backward 4096x128", |bench| {
            bench.iter(|| {
                let (r, w) = (
                    r.detach().requires_grad_(true),
                    w.detach().requires_grad_(true),
                );
                r.layer_norm(Some(&w), Some(&b), 1e-5).sum_all().backward();
                run(&dev, || r.grad().unwrap());
            })
        });
        g.bench_function("add 4096x128", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| &r + &r)))
        });
        g.finish();
    }
}

fn attention(c: &mut Criterion) {
    for (name, dev) in devices() {
        let mut g = c.benchmark_group(format!("{name}/attention"));
        g.sample_size(10).measurement_time(Duration::from_secs(5));
        // Batch 256, 50 tokens, 4 heads of 64: the SimCLR ViT's attention at width 256.
        let shape = [256, 4, 50, 64];
        let q = Tensor::randn(&shape, 4, &dev);
        let k = Tensor::randn(&shape, 5, &dev);
        let v = Tensor::randn(&shape, 6, &dev);
        g.bench_function("forward b256 t50 h4 d64", |bench| {
            bench.iter(|| {
                run(&dev, || {
                    no_grad(|| Tensor::scaled_dot_product_attention(&q, &k, &v, false, None, None))
                })
            })
        });
        g.bench_function("forward+backward b256 t50 h4 d64", |bench| {
            bench.iter(|| {
                let (q, k, v) = (
                    q.detach().requires_grad_(true),
                    k.detach().requires_grad_(true),
                    v.detach().requires_grad_(true),
                );
                Tensor::scaled_dot_product_attention(&q, &k, &v, false, None, None)
                    .sum_all()
                    .backward();
                run(&dev, || q.grad().unwrap());
            })
        });
        // The char-GPT's attention: packed qkv (B 32, T 128, 3 × 4 heads × 32), causal.
        let qkv = Tensor::randn(&[32, 128, 384], 7, &dev);
        g.bench_function("causal packed forward b32 t128 h4 d32", |bench| {
            bench.iter(|| {
                run(&dev, || {
                    no_grad(|| Tensor::multi_head_attention(&qkv, 4, true, None))
                })
            })
        });
        g.bench_function("causal packed forward+backward b32 t128 h4 d32", |bench| {
            bench.iter(|| {
                let qkv = qkv.detach().requires_grad_(true);
                Tensor::multi_head_attention(&qkv, 4, true, None)
                    .sum_all()
                    .backward();
                run(&dev, || qkv.grad().unwrap());
            })
        });
        g.finish();
    }
}

/// The element-wise and data-movement ops of the ViT step at the SimCLR batch of 128 (256 views of
/// 50 tokens, width 64): GB/s of operands read plus output written.
fn elementwise(c: &mut Criterion) {
    for (name, dev) in devices() {
        let mut g = c.benchmark_group(format!("{name}/elementwise"));
        g.sample_size(10).measurement_time(Duration::from_secs(3));
        let x = Tensor::randn(&[12800, 64], 8, &dev);
        let y = Tensor::randn(&[12800, 64], 9, &dev);
        let bias = Tensor::randn(&[64], 10, &dev);
        let col = Tensor::randn(&[12800, 1], 11, &dev);
        let bytes = |operands: usize| Throughput::Bytes(4 * (operands * x.numel()) as u64);
        g.throughput(bytes(3));
        g.bench_function("add 12800x64", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| &x + &y)))
        });
        g.throughput(bytes(2));
        g.bench_function("add bias 12800x64 + 64", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| &x + &bias)))
        });
        g.bench_function("mul column 12800x64 * 12800x1", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| x.mul(&col))))
        });
        g.bench_function("mul_scalar 12800x64", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| x.mul_scalar(0.5))))
        });
        g.bench_function("gelu 12800x64", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| x.gelu())))
        });
        let heads = x.reshape(&[256, 50, 4, 16]);
        g.bench_function("permute 256x50x4x16 to 256x4x50x16", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| heads.permute(&[0, 2, 1, 3]))))
        });
        g.bench_function("column sum 12800x64", |bench| {
            bench.iter(|| run(&dev, || no_grad(|| x.sum(0, false))))
        });
        g.finish();
    }
}

fn overhead(c: &mut Criterion) {
    for (name, dev) in devices() {
        let mut g = c.benchmark_group(format!("{name}/overhead"));
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        let x = Tensor::randn(&[64], 7, &dev);
        g.throughput(Throughput::Elements(1000));
        g.bench_function("chain of 1000 small ops", |bench| {
            bench.iter(|| {
                run(&dev, || {
                    let mut y = x.clone();
                    for i in 0..1000 {
                        y = if i % 2 == 0 {
                            y.add_scalar(0.5)
                        } else {
                            y.mul_scalar(0.5)
                        };
                    }
                    y
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, matmul, row_ops, elementwise, attention, overhead);
criterion_main!(benches);
