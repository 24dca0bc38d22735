//! f16 storage on the GPU: casts, products and attention reading f16 operands, and autocast
//! (f16 operands, f32 compute, f32 gradients) against the CPU in f32; and the memory a forward
//! pass leaves for the backward pass (only what the backward closures keep, f16 under autocast).
//!
//! f16 needs an adapter with `SHADER_F16` (lavapipe has it). Without one these tests say loudly
//! that they were skipped; under `CI=true` they fail, since CI's adapter has it.

mod common;

use common::*;
use half::f16;
use selfsup_engine::{Autocast, DType, Device, Tensor};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `v` rounded to f16 and widened back (the host's reference rounding, the `half` crate).
fn round16(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| f16::from_f64(x).to_f64()).collect()
}

#[test]
fn casts_round_to_nearest_and_back_exactly() {
    let Some(gpu) = f16_gpu_or_skip("casts_round_to_nearest_and_back_exactly") else {
        return;
    };
    // Random values over many binades, halfway cases, subnormals, and beyond f16's range.
    let mut v: Vec<f64> = normal(&[1000], 7)
        .iter()
        .map(|x| x * 1e3_f64.powf(x / 2.0))
        .collect();
    v.extend([
        1.0 + 2f64.powi(-11),
        1.0 + 3.0 * 2f64.powi(-11),
        3e-6,
        -6e-8,
        65504.0,
        1e5,
        -7e4,
    ]);
    let x = Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), &[v.len()], &gpu);
    let h = x.to_dtype(DType::F16);
    assert_eq!(h.dtype(), DType::F16);
    let want: Vec<f32> = v
        .iter()
        .map(|&x| f16::from_f32(x as f32).to_f32())
        .collect();
    let got = h.to_vec();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "element {i} ({}): gpu {g}, half crate {w}",
            v[i]
        );
    }
    assert!(got[got.len() - 2].is_infinite() && got[got.len() - 1] < -65504.0);
    // Widening is exact, and so is the round trip of f16 values.
    assert_eq!(h.to_dtype(DType::F32).to_vec(), got);
    assert_eq!(h.to_dtype(DType::F32).to_dtype(DType::F16).to_vec(), got);
    // Gradients of f16 tensors are f32, whichever way they arrive: through a cast back to f32
    // and through a product, summed.
    let x = Tensor::from_vec(vec![0.5, -2.0], &[1, 2], &gpu).requires_grad_(true);
    let h = x.to_dtype(DType::F16);
    let w = Tensor::from_vec(vec![3.0, 4.0], &[2, 1], &gpu);
    (&h.to_dtype(DType::F32).sum_all() + &h.matmul(&w).sum_all()).backward();
    let g = x.grad().unwrap();
    assert_eq!((g.dtype(), g.to_vec()), (DType::F32, vec![4.0, 5.0]));
}

#[test]
fn f16_operands_multiply_like_their_f32_values() {
    let Some(gpu) = f16_gpu_or_skip("f16_operands_multiply_like_their_f32_values") else {
        return;
    };
    // (batch of a, batch of b, m, k, n): tile edges, K = 1, skinny, long K, broadcast batches.
    let shapes: [([usize; 2], usize, usize, usize); 10] = [
        ([1, 1], 63, 64, 65),
        ([1, 1], 127, 128, 129),
        ([1, 1], 64, 1, 64),
        ([1, 1], 5, 7, 3),
        ([1, 1], 130, 257, 33),
        ([3, 3], 33, 20, 12),
        ([3, 1], 9, 16, 8),
        ([1, 1], 16, 1100, 24),
        ([1, 1], 8, 12, 4),
        ([1, 1], 516, 8, 68),
    ];
    for (case, &(batches, m, k, n)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let sa = if ta {
                [batches[0], k, m]
            } else {
                [batches[0], m, k]
            };
            let sb = if tb {
                [batches[1], n, k]
            } else {
                [batches[1], k, n]
            };
            let a = round16(&normal(&sa, 100 + case as u64));
            let b = round16(&normal(&sb, 200 + case as u64));
            let want = Tensor::from_vec_f64(a.clone(), &sa)
                .matmul_ex(&Tensor::from_vec_f64(b.clone(), &sb), ta, tb)
                .to_vec();
            let up = |v: &[f64], s: &[usize]| {
                Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), s, &gpu)
            };
            for pass in kernel_passes(&gpu) {
                for (a16, b16) in [(true, true), (true, false), (false, true)] {
                    let cast = |t: Tensor, on: bool| if on { t.to_dtype(DType::F16) } else { t };
                    let (x, y) = (cast(up(&a, &sa), a16), cast(up(&b, &sb), b16));
                    let c = pass.run(|| x.matmul_ex(&y, ta, tb));
                    assert_eq!(c.dtype(), DType::F32);
                    let what = format!(
                        "{sa:?}{} · {sb:?}{} (f16 a {a16}, b {b16}, {pass})",
                        if ta { "ᵀ" } else { "" },
                        if tb { "ᵀ" } else { "" }
                    );
                    // The operands are exact f16 values; only f32 accumulation order differs.
                    assert_close32(&what, c.shape(), &c.to_vec(), &want, reduce_tol(k));
                }
            }
        }
    }
}

/// A linear layer and packed multi-head attention under autocast against the CPU in f32: values
/// and gradients within f16's precision (11 bits), gradients f32, parameters untouched.
#[test]
fn autocast_matches_f32_within_f16_precision() {
    let Some(gpu) = f16_gpu_or_skip("autocast_matches_f32_within_f16_precision") else {
        return;
    };
    let (b, t, c, heads) = (3, 17, 32, 4);
    let x = normal(&[b, t, c], 1);
    let w_qkv = normal(&[3 * c, c], 2)
        .iter()
        .map(|v| v * 0.2)
        .collect::<Vec<_>>();
    let b_qkv = normal(&[3 * c], 3);
    let w_out = normal(&[c, c], 4)
        .iter()
        .map(|v| v * 0.2)
        .collect::<Vec<_>>();
    let mask: Vec<f64> = (0..b * t)
        .map(|i| (i % t >= t - 2 * (i / t)) as u8 as f64)
        .collect();
    let weights = loss_weights(&[b, t, c], 5);
    let run = |dev: &Device, f16_on: bool| {
        let leaf = |v: &[f64], s: &[usize]| {
            Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), s, dev).requires_grad_(true)
        };
        let (x, wq, bq, wo) = (
            leaf(&x, &[b, t, c]),
            leaf(&w_qkv, &[3 * c, c]),
            leaf(&b_qkv, &[3 * c]),
            leaf(&w_out, &[c, c]),
        );
        let m = Tensor::from_vec(mask.iter().map(|&v| v as f32).collect(), &[b, t], dev);
        let y = {
            let _cast = f16_on.then(|| Autocast::f16(dev).unwrap());
            let qkv = x.linear(&wq, Some(&bq));
            let h = Tensor::multi_head_attention(&qkv, heads, false, Some(&m));
            h.matmul_nt(&wo)
        };
        assert_eq!(y.dtype(), DType::F32);
        let w = Tensor::from_vec(weights.iter().map(|&v| v as f32).collect(), &[b, t, c], dev);
        (&y * &w).sum_all().backward();
        let mut out = vec![y.to_vec()];
        for p in [&x, &wq, &bq, &wo] {
            let g = p.grad().expect("a gradient");
            assert_eq!((p.dtype(), g.dtype()), (DType::F32, DType::F32));
            out.push(g.to_vec());
        }
        out
    };
    let cpu = run(&Device::cpu(), false);
    let f32_gpu = run(&gpu, false);
    for pass in kernel_passes(&gpu) {
        let got = pass.run(|| run(&gpu, true));
        let again = pass.run(|| run(&gpu, true));
        assert_eq!(got, again, "{pass}: two autocast runs differ");
        for (i, (g, w)) in got.iter().zip(&cpu).enumerate() {
            let what = format!("{pass} autocast, output {i}");
            let tol = Tol32 {
                atol: 2e-2,
                rtol: 2e-2,
            };
            assert_close32(&what, &[g.len()], g, w, tol);
        }
        // f16 really was used: the results differ from the f32 GPU run's.
        assert_ne!(got[0], f32_gpu[0], "{pass}: autocast changed nothing");
    }
}

#[test]
fn separate_attention_reads_f16_under_autocast() {
    let Some(gpu) = f16_gpu_or_skip("separate_attention_reads_f16_under_autocast") else {
        return;
    };
    let s = [2, 3, 9, 8];
    let (q, k, v) = (normal(&s, 11), normal(&s, 12), normal(&s, 13));
    let inputs = [q, k, v].map(|d| leaf32(round16(&d), &s));
    // The operands are exact f16 values, so only the kernels' f32 arithmetic differs.
    gpu_check("attention on f16 operands", &gpu, &inputs, |t| {
        let _cast = t[0]
            .device()
            .is_gpu()
            .then(|| Autocast::f16(&t[0].device()).unwrap());
        Tensor::scaled_dot_product_attention(&t[0], &t[1], &t[2], true, None, None)
    });
}

#[test]
fn f16_views_copy_and_other_ops_refuse_f16() {
    let Some(gpu) = f16_gpu_or_skip("f16_views_copy_and_other_ops_refuse_f16") else {
        return;
    };
    let v = round16(&normal(&[4, 6], 21));
    let x = Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), &[4, 6], &gpu);
    let h = x.to_dtype(DType::F16);
    // Views are strided copies, f16 in and out.
    let p = h.permute(&[1, 0]);
    assert_eq!(p.dtype(), DType::F16);
    assert_eq!(p.to_vec(), x.permute(&[1, 0]).to_vec());
    // An op without f16 kernels refuses in one line naming it, rather than misreading bytes.
    let err = catch_unwind(AssertUnwindSafe(|| h.exp().to_vec())).unwrap_err();
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("unary") && msg.contains("f16"), "{msg}");
    // The device is still usable afterwards.
    assert_eq!(x.exp().to_vec().len(), 24);
}

#[test]
fn autocast_refuses_a_device_without_f16() {
    let err = Autocast::f16(&Device::cpu())
        .err()
        .expect("the CPU has no f16 autocast");
    assert!(err.to_string().contains("SHADER_F16"), "{err}");
    let r = catch_unwind(|| Tensor::from_vec(vec![1.0], &[1], &Device::cpu()).to_dtype(DType::F16));
    assert!(r.is_err(), "an f16 CPU tensor was made");
}

/// The tiny classifier of the other GPU tests, trained with every product under autocast: it
/// learns as in f32, along a slightly different path.
#[test]
fn training_under_autocast_follows_f32() {
    let Some(gpu) = f16_gpu_or_skip("training_under_autocast_follows_f32") else {
        return;
    };
    let f32_losses = train_mlp(&gpu, 60);
    let f16_losses = {
        let _cast = Autocast::f16(&gpu).unwrap();
        train_mlp(&gpu, 60)
    };
    assert!(f16_losses[59] < 0.3 * f16_losses[0], "{f16_losses:?}");
    assert_ne!(f16_losses, f32_losses, "autocast changed nothing");
    for (i, (a, b)) in f16_losses.iter().zip(&f32_losses).enumerate() {
        assert!(
            (a - b).abs() <= 0.01 + 0.02 * b,
            "step {i}: f16 {a} against f32 {b}"
        );
    }
}

/// Under autocast a trainable weight is cast once while its data stays the same: a second use
/// launches one cast fewer (the input is still cast) and still passes its gradient to the
/// weight, and new data (an optimizer's `set_data`) is cast again and used.
#[test]
fn autocast_casts_a_weight_once_per_value() {
    if f16_gpu_or_skip("autocast_casts_a_weight_once_per_value").is_none() {
        return;
    }
    let dev = private_gpu();
    let values = |seed| -> Vec<f32> { normal(&[8, 8], seed).iter().map(|&v| v as f32).collect() };
    let w = Tensor::from_vec(values(51), &[8, 8], &dev).requires_grad_(true);
    let x = Tensor::from_vec(values(52)[..32].to_vec(), &[4, 8], &dev);
    let _cast = Autocast::f16(&dev).unwrap();
    // (launches, output, weight gradient) of one use of w.
    let run = || {
        w.zero_grad();
        let before = dev.gpu_counters().unwrap();
        let y = x.matmul(&w);
        let launches = (dev.gpu_counters().unwrap() - before).dispatches;
        let out = y.to_vec();
        y.sum_all().backward();
        (
            launches,
            out,
            w.grad().expect("a gradient reaches w").to_vec(),
        )
    };
    let (first, second) = (run(), run());
    assert_eq!(first.0, second.0 + 1, "the second use casts only x");
    assert_eq!((&first.1, &first.2), (&second.1, &second.2));
    let doubled: Vec<f32> = values(51).iter().map(|v| 2.0 * v).collect();
    w.set_data(&Tensor::from_vec(doubled, &[8, 8], &dev));
    let third = run();
    assert_eq!(third.0, first.0, "new data is cast again");
    // Doubling is exact in f16 and in the f32 sums.
    let twice: Vec<f32> = first.1.iter().map(|v| 2.0 * v).collect();
    assert_eq!(third.1, twice);
}

/// An f16 tensor is saved as safetensors F16 (half the bytes) and loads widened, exactly, to f32
/// on the CPU (f16 storage is GPU-only).
#[test]
fn checkpoints_store_f16_and_load_it_widened() {
    let Some(gpu) = f16_gpu_or_skip("checkpoints_store_f16_and_load_it_widened") else {
        return;
    };
    let v: Vec<f32> = normal(&[5, 3], 31).iter().map(|&x| x as f32).collect();
    let h = Tensor::from_vec(v, &[5, 3], &gpu).to_dtype(DType::F16);
    let dir = Scratch::new("f16-checkpoint");
    let path = dir.path("h.safetensors");
    let tensors = [("h".to_string(), h.clone())];
    selfsup_engine::checkpoint::save(&path, &tensors, &Default::default()).unwrap();
    let ck = selfsup_engine::checkpoint::load(&path).unwrap();
    let back = &ck.tensors["h"];
    assert_eq!((back.dtype(), back.shape()), (DType::F32, &[5, 3][..]));
    assert_eq!(back.to_vec(), h.to_vec());
}

/// Bytes tensors hold on `dev` now.
fn live(dev: &Device) -> u64 {
    dev.gpu_memory().expect("a GPU").0
}

/// The graph holds an op's node, not its output's data: intermediate results that no handle
/// refers to are freed during the forward pass, and backward still works.
#[test]
fn the_graph_does_not_pin_intermediate_results() {
    if gpu_or_skip("the_graph_does_not_pin_intermediate_results").is_none() {
        return;
    }
    let dev = private_gpu();
    let n = 1 << 16;
    let x = Tensor::ones(&[n], &dev).requires_grad_(true);
    let base = live(&dev);
    let mut h = x.add_scalar(1.0);
    for _ in 0..10 {
        // add_scalar's backward needs no data: each replaced `h` keeps only its node.
        h = h.add_scalar(1.0);
    }
    let held = live(&dev) - base;
    assert!(
        held <= 4 * n as u64,
        "{held} bytes held for one {n}-float result"
    );
    let loss = h.sum_all();
    assert_eq!(loss.item(), 12.0 * n as f32);
    loss.backward();
    assert!(x.grad().unwrap().to_vec().iter().all(|&g| g == 1.0));
}

/// Under autocast a chain of linear layers keeps f16 copies of their inputs for the backward
/// pass, and the f32 results they were cast from are freed: about half the memory.
#[test]
fn autocast_keeps_half_the_activations() {
    if f16_gpu_or_skip("autocast_keeps_half_the_activations").is_none() {
        return;
    }
    let dev = private_gpu();
    let (rows, width, layers) = (2048, 128, 6);
    let weights: Vec<Tensor> = (0..layers)
        .map(|i| {
            let w = normal(&[width, width], 40 + i as u64);
            let w: Vec<f32> = w
                .iter()
                .map(|&v| (v / (width as f64).sqrt()) as f32)
                .collect();
            Tensor::from_vec(w, &[width, width], &dev).requires_grad_(true)
        })
        .collect();
    let x = Tensor::from_vec(vec![0.5; rows * width], &[rows, width], &dev);
    // Bytes held once the forward pass is done and only the graph refers to its results.
    let held_after_forward = |f16: bool| {
        let base = live(&dev);
        let loss = {
            let _cast = f16.then(|| Autocast::f16(&dev).unwrap());
            let mut h = x.clone();
            for w in &weights {
                h = h.linear(w, None);
            }
            h.sum_all()
        };
        let held = live(&dev) - base;
        loss.backward();
        held
    };
    let (f32_bytes, f16_bytes) = (held_after_forward(false), held_after_forward(true));
    // f32: layers 2… save their f32 inputs (the first shares x's data). f16: every layer saves
    // f16 copies of its input and its weight, and nothing else is left.
    let activation = (rows * width * 4) as u64;
    let weight = (width * width * 4) as u64;
    assert!(
        f32_bytes >= (layers as u64 - 1) * activation,
        "f32 held {f32_bytes}"
    );
    assert!(
        f16_bytes <= layers as u64 * (activation + weight) / 2 + 4096,
        "f16 held {f16_bytes} bytes after the forward pass, f32 {f32_bytes}"
    );
}
