//! A GPU that fails (here: a device destroyed as a driver reset would) gives errors naming the
//! op, never values that were not computed: read-backs return the failure, a checkpoint is not
//! overwritten, and a training step stops with the failure as its cause.
//!
//! Each test opens a context of its own, so that losing it does not touch the shared one.

mod common;

use common::*;
use selfsup::run::{optimize, Cause};
use selfsup_engine::backend::gpu::GpuContext;
use selfsup_engine::checkpoint;
use selfsup_engine::nn::{Init, Linear, Module};
use selfsup_engine::optim::{param_groups, AdamW};
use selfsup_engine::{Device, Tensor};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// A GPU context of this test's own, or `None` (skipped loudly, or a failure under `CI=true`).
fn own_gpu(test: &str) -> Option<(Arc<GpuContext>, Device)> {
    gpu_or_skip(test)?;
    let ctx = GpuContext::new().expect("a second context on the adapter just opened");
    Some((ctx.clone(), Device::Gpu(ctx)))
}

#[test]
fn a_lost_device_makes_read_backs_errors_that_name_the_op() {
    let Some((ctx, dev)) = own_gpu("lost device") else {
        return;
    };
    let a = Tensor::randn(&[33, 65], 1, &dev);
    let before = a.matmul(&a.transpose(0, 1)).to_vec();
    assert_eq!(before.len(), 33 * 33);
    assert!(dev.check().is_ok());

    ctx.destroy();
    let product = a.matmul(&a.transpose(0, 1));
    let e = product
        .try_to_vec()
        .expect_err("no values from a lost device");
    let message = e.to_string();
    assert!(message.contains("lost"), "{message}");
    assert!(message.contains("kernel "), "the op is named: {message}");
    assert_eq!(dev.check().unwrap_err().to_string(), message);
    // The panicking read says the same; later ops neither panic nor run.
    let panicked = catch_unwind(AssertUnwindSafe(|| product.relu().to_vec()))
        .expect_err("to_vec panics on a failed device");
    let text = panicked
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(text, message);
}

#[test]
fn a_failed_device_does_not_overwrite_a_checkpoint() {
    let Some((ctx, dev)) = own_gpu("checkpoint after failure") else {
        return;
    };
    let dir = Scratch::new("gpu-failure-ckpt");
    let path = dir.path("ck.safetensors");
    let w = Tensor::randn(&[4, 5], 2, &dev);
    checkpoint::save(&path, &[("w".into(), w.clone())], &HashMap::new()).unwrap();
    let good = std::fs::read(&path).unwrap();

    ctx.destroy();
    let changed = &w * 2.0;
    let e = checkpoint::save(&path, &[("w".into(), changed)], &HashMap::new())
        .expect_err("nothing to save from a lost device");
    assert!(e.to_string().contains("not saved"), "{e}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the good checkpoint is kept"
    );
}

#[test]
fn a_training_step_on_a_failed_device_stops_with_the_device_as_cause() {
    let Some((ctx, dev)) = own_gpu("training step after failure") else {
        return;
    };
    let layer = Linear::new(&mut Init::new(3, &dev), 8, 4, true);
    let mut adamw = AdamW::new(
        param_groups(layer.named_parameters(), 0.01),
        0.9,
        0.999,
        1e-8,
    );
    let x = Tensor::randn(&[16, 8], 4, &dev);
    let (mut step, mut history) = (0, Vec::new());
    let mut train_step = |step: &mut u64, history: &mut Vec<f32>| {
        let loss = layer.forward(&x).square().mean_all();
        optimize(&loss, &layer, &mut adamw, step, history, 1e-3, 1.0)
    };
    train_step(&mut step, &mut history).unwrap();
    assert_eq!(step, 1);

    ctx.destroy();
    let stopped = train_step(&mut step, &mut history).expect_err("a lost device stops the step");
    assert!(matches!(stopped.cause, Cause::Device(_)), "{stopped:?}");
    assert!(
        stopped.to_string().starts_with("the GPU failed at step 1:"),
        "{stopped}"
    );
    assert_eq!(
        (step, history.len()),
        (1, 1),
        "the failed step is not counted"
    );
}
