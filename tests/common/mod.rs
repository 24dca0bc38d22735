//! Shared harness for the op test suites (`gradcheck.rs`, `gpu_vs_cpu.rs`):
//!
//! * [`gpu_or_skip`]: the GPU device, or a loud skip (a hard failure under `CI=true`);
//! * seeded inputs kept inside an op's domain ([`normal`], [`positive`], [`away_from`],
//!   [`distinct`], …) and leaf/constant tensor constructors in f64 and f32;
//! * [`gradcheck`]: analytic gradients of `sum(f(x) · w)` against central differences in f64;
//! * [`gpu_check`]: forward values and input gradients on the GPU against the CPU in f32;
//! * [`train_mlp`]: a tiny classifier trained with manual SGD, for end-to-end checks;
//! * [`Scratch`]: a temporary folder for a test's files.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use selfsup_engine::backend::gpu::{with_kernel_profile, with_subgroups, KernelProfile};
use selfsup_engine::SeededRng;
use selfsup_engine::{no_grad, DType, Device, Tensor};

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

/// The GPU device, or `None` after printing that `test` was skipped.
///
/// Under `CI=true` a missing adapter is a hard failure: a GPU test must never pass without
/// having run.
pub fn gpu_or_skip(test: &str) -> Option<Device> {
    match Device::gpu() {
        Ok(dev) => {
            assert!(
                dev.is_gpu(),
                "{test}: Device::gpu() returned a non-GPU device {dev:?}"
            );
            Some(dev)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but no GPU adapter: install mesa-vulkan-drivers (lavapipe) or run on a \
                     machine with a GPU, so that the GPU test `{test}` really runs (Device::gpu(): {e})"
                );
            }
            // Written to the process's stderr directly rather than with eprintln!, which the
            // test harness captures (and hides) for tests that pass: a skip must be visible.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED {test}: no GPU adapter (Device::gpu(): {e}); nothing was checked. \
                 Set CI=true to make a missing adapter a failure."
            );
            None
        }
    }
}

/// The GPU if it stores f16 (`SHADER_F16`), else `None` after a visible notice; under `CI=true`
/// a failure, since CI's adapter (lavapipe) has it.
pub fn f16_gpu_or_skip(test: &str) -> Option<Device> {
    let dev = gpu_or_skip(test)?;
    if selfsup_engine::Autocast::f16(&dev).is_ok() {
        return Some(dev);
    }
    let why = format!("SKIPPED {test}: {dev:?} has no f16 storage (SHADER_F16); nothing checked");
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true: {why}"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{why}");
    None
}

/// A GPU context of the caller's own, apart from the shared one, so that what it counts
/// (memory, bind groups) is no other test's; call after [`gpu_or_skip`] found an adapter.
pub fn private_gpu() -> Device {
    Device::Gpu(selfsup_engine::backend::gpu::GpuContext::new().expect("a second context"))
}

/// A scratch folder under the system temp dir, unique per tag and process, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("selfsup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded inputs
// ---------------------------------------------------------------------------------------------

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub fn rng(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

fn std_normal(r: &mut SeededRng) -> f64 {
    let u1: f64 = 1.0 - r.random::<f64>();
    let u2: f64 = r.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Standard normal samples.
pub fn normal(shape: &[usize], seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..numel(shape)).map(|_| std_normal(&mut r)).collect()
}

/// Uniform samples in [lo, hi).
pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..numel(shape))
        .map(|_| lo + (hi - lo) * r.random::<f64>())
        .collect()
}

/// Values in [0.5, 2): the domain of log, sqrt, rsqrt, recip and fractional powers.
pub fn positive(shape: &[usize], seed: u64) -> Vec<f64> {
    uniform(shape, 0.5, 2.0, seed)
}

/// Normal samples at least `margin` from every kink (relu/abs at 0, clamp at its bounds), so that
/// central differences never straddle a point where the function is not differentiable.
pub fn away_from(shape: &[usize], seed: u64, kinks: &[f64], margin: f64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..numel(shape))
        .map(|_| loop {
            let v = 1.5 * std_normal(&mut r);
            if kinks.iter().all(|k| (v - k).abs() >= margin) {
                break v;
            }
        })
        .collect()
}

/// Pairwise distinct values in about [-2, 2], shuffled, with gaps of at least
/// max(0.005, 2/n): max/min reductions, maximum/minimum and sorting have no ties and stay
/// differentiable under a finite-difference step.
pub fn distinct(shape: &[usize], seed: u64) -> Vec<f64> {
    let n = numel(shape);
    let step = (4.0 / n as f64).max(0.01);
    let mut r = rng(seed);
    let mut v: Vec<f64> = (0..n)
        .map(|i| (i as f64 - n as f64 / 2.0) * step + 0.5 * step * r.random::<f64>())
        .collect();
    v.shuffle(&mut r);
    v
}

/// Integers in 0..k as floats (index lists, ties for comparisons).
pub fn small_ints(shape: &[usize], k: u32, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..numel(shape))
        .map(|_| r.random_range(0..k) as f64)
        .collect()
}

/// A 0/1 mask where each entry is 1 with probability `p`.
pub fn bernoulli(shape: &[usize], p: f64, seed: u64) -> Vec<f64> {
    uniform(shape, 0.0, 1.0, seed)
        .into_iter()
        .map(|u| if u < p { 1.0 } else { 0.0 })
        .collect()
}

/// An f64 CPU leaf that requires grad (checked by [`gradcheck`]).
pub fn leaf64(data: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec_f64(data, shape).requires_grad_(true)
}

/// An f64 CPU constant (masks, conditions, running statistics): not perturbed or checked.
pub fn const64(data: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec_f64(data, shape)
}

/// An f32 CPU leaf that requires grad (its gradient is compared by [`gpu_check`]).
pub fn leaf32(data: Vec<f64>, shape: &[usize]) -> Tensor {
    const32(data, shape).requires_grad_(true)
}

/// An f32 CPU constant.
pub fn const32(data: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(
        data.into_iter().map(|v| v as f32).collect(),
        shape,
        &Device::cpu(),
    )
}

/// Row-major multi-index of flat element `i` of `shape`, for messages.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    idx
}

/// Weights for the checked loss `sum(f(x) · w)`: magnitudes in [0.5, 1.5) with random signs,
/// so every output element contributes and no two contribute alike.
pub fn loss_weights(shape: &[usize], seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..numel(shape))
        .map(|_| {
            let m = 0.5 + r.random::<f64>();
            if r.random::<bool>() {
                m
            } else {
                -m
            }
        })
        .collect()
}

fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Finite-difference gradient check (f64, CPU)
// ---------------------------------------------------------------------------------------------

/// Central-difference step.
pub const FD_STEP: f64 = 1e-6;

/// |analytic - numeric| ≤ atol + rtol·|numeric|.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

/// Central differences in f64 with h = 1e-6 are accurate to about 1e-9 here (truncation
/// ~h²·f''' ≈ 1e-12, round-off ~ε·|f|/h ≈ 1e-10·|f|), so 1e-6 leaves a wide margin while still
/// catching any real mistake in a backward formula.
pub const F64_TOL: Tol = Tol {
    atol: 1e-6,
    rtol: 1e-6,
};

/// Checks every input gradient of `f` against central differences; see [`gradcheck_with`].
#[track_caller]
pub fn gradcheck(op: &str, inputs: impl AsRef<[Tensor]>, f: impl Fn(&[Tensor]) -> Tensor) {
    gradcheck_with(op, inputs, F64_TOL, f)
}

/// Fresh copies of the inputs for one evaluation, keeping each one's requires-grad flag.
fn fresh64(inputs: &[Tensor]) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| Tensor::from_vec_f64(t.to_vec_f64(), t.shape()).requires_grad_(t.requires_grad()))
        .collect()
}

/// Finite-difference gradient check in f64 on the CPU.
///
/// `inputs` are f64 CPU tensors; those that require grad are checked, the others are constants
/// passed through unchanged (masks, conditions). The analytic gradient of
/// `L = sum(f(x) · w)` for fixed random weights `w` comes from `backward()`; the numeric one is
/// `Σ (f(x + h·e_j) - f(x - h·e_j)) · w / 2h` for every element j of every checked input.
#[track_caller]
pub fn gradcheck_with(
    op: &str,
    inputs: impl AsRef<[Tensor]>,
    tol: Tol,
    f: impl Fn(&[Tensor]) -> Tensor,
) {
    let inputs = inputs.as_ref();
    for (i, t) in inputs.iter().enumerate() {
        assert!(
            t.dtype() == DType::F64 && !t.device().is_gpu(),
            "gradcheck {op}: input {i} must be an f64 CPU tensor, got {t:?}"
        );
    }
    assert!(
        inputs.iter().any(|t| t.requires_grad()),
        "gradcheck {op}: no input requires grad"
    );

    let leaves = fresh64(inputs);
    let out = f(&leaves);
    assert_eq!(
        out.dtype(),
        DType::F64,
        "gradcheck {op}: the output is {:?}, not F64",
        out.dtype()
    );
    let y = out.to_vec_f64();
    assert!(
        y.iter().all(|v| v.is_finite()),
        "gradcheck {op}: the forward output of shape {:?} is not finite: {y:?}",
        out.shape()
    );
    assert!(
        out.requires_grad(),
        "gradcheck {op}: the output does not require grad although an input does"
    );
    let w = loss_weights(out.shape(), name_seed(op));
    let loss = (&out * &Tensor::from_vec_f64(w.clone(), out.shape())).sum_all();
    loss.backward();

    for (i, x) in leaves.iter().enumerate() {
        if !x.requires_grad() {
            continue;
        }
        let n = x.numel();
        let analytic = match x.grad() {
            Some(g) => {
                assert_eq!(
                    g.shape(),
                    x.shape(),
                    "gradcheck {op}: gradient of input {i} has the wrong shape"
                );
                assert_eq!(
                    g.dtype(),
                    DType::F64,
                    "gradcheck {op}: gradient of input {i} is not F64"
                );
                g.to_vec_f64()
            }
            // No gradient reached this input: correct only if the numeric gradient is zero.
            None => vec![0.0; n],
        };
        let base = x.to_vec_f64();
        for j in 0..n {
            let eval = |delta: f64| {
                let mut d = base.clone();
                d[j] += delta;
                let mut xs: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
                xs[i] = Tensor::from_vec_f64(d, x.shape());
                no_grad(|| f(&xs)).to_vec_f64()
            };
            let (plus, minus) = (eval(FD_STEP), eval(-FD_STEP));
            let numeric = plus
                .iter()
                .zip(&minus)
                .zip(&w)
                .map(|((p, m), w)| (p - m) * w)
                .sum::<f64>()
                / (2.0 * FD_STEP);
            let a = analytic[j];
            let ok = (a - numeric).abs() <= tol.atol + tol.rtol * numeric.abs();
            assert!(
                ok,
                "gradcheck {op}: input {i} (shape {:?}) element {j} {:?}: analytic {a:e} vs numeric {numeric:e} \
                 (|diff| {:e} > {:e} + {:e}·|numeric|){}",
                x.shape(),
                unravel(j, x.shape()),
                (a - numeric).abs(),
                tol.atol,
                tol.rtol,
                if x.grad().is_none() { "; backward() left no gradient on this input" } else { "" }
            );
        }
    }
}

/// Asserts |a - b| ≤ tol element-wise, naming `what` and the first offending element.
#[track_caller]
pub fn assert_close64(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}: element {i} is {g}, expected {w} (tolerance {tol:e})\n got {got:?}\nwant {want:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// GPU against CPU (f32)
// ---------------------------------------------------------------------------------------------

/// |gpu - cpu| ≤ atol + rtol·|cpu|.
#[derive(Clone, Copy, Debug)]
pub struct Tol32 {
    pub atol: f32,
    pub rtol: f32,
}

/// f32 has a unit round-off of 6e-8; kernels that sum in another order, use FMA or WGSL's
/// built-in transcendental functions (a few ULP) differ from the CPU by a few 1e-7 relative.
pub const F32_TOL: Tol32 = Tol32 {
    atol: 1e-4,
    rtol: 1e-3,
};

/// For values produced by sums of `k` terms of order one (matmul over K, reductions, softmax
/// and norm backward over a row): the round-off of a different summation order grows like
/// √k·ε·√k, so the absolute slack grows with k.
pub fn reduce_tol(k: usize) -> Tol32 {
    Tol32 {
        atol: 1e-4 + 4e-7 * k as f32,
        rtol: 1e-3,
    }
}

/// Checks `f` on the GPU against the CPU; see [`gpu_check_with`].
#[track_caller]
pub fn gpu_check(
    op: &str,
    gpu: &Device,
    inputs: impl AsRef<[Tensor]>,
    f: impl Fn(&[Tensor]) -> Tensor,
) {
    gpu_check_with(op, gpu, inputs, F32_TOL, f)
}

struct Run {
    shape: Vec<usize>,
    out: Vec<f32>,
    grads: Vec<Option<Vec<f32>>>,
}

fn run_on(
    op: &str,
    dev: &Device,
    inputs: &[Tensor],
    w: &[f32],
    f: &impl Fn(&[Tensor]) -> Tensor,
) -> Run {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| Tensor::from_vec(t.to_vec(), t.shape(), dev).requires_grad_(t.requires_grad()))
        .collect();
    let out = f(&leaves);
    assert!(
        out.device() == *dev,
        "{op}: output is on {:?}, expected {dev:?}",
        out.device()
    );
    assert_eq!(
        out.dtype(),
        DType::F32,
        "{op}: output on {dev:?} is {:?}, not F32",
        out.dtype()
    );
    let shape = out.shape().to_vec();
    let values = out.to_vec();
    let mut grads = vec![None; leaves.len()];
    if leaves.iter().any(|l| l.requires_grad()) {
        assert!(
            out.requires_grad(),
            "{op}: output on {dev:?} does not require grad although an input does"
        );
        let loss = (&out * &Tensor::from_vec(w.to_vec(), &shape, dev)).sum_all();
        loss.backward();
        for (g, l) in grads.iter_mut().zip(&leaves) {
            if l.requires_grad() {
                let grad = l
                    .grad()
                    .unwrap_or_else(|| panic!("{op}: no gradient reached an input on {dev:?}"));
                assert!(
                    grad.device() == *dev,
                    "{op}: gradient on {:?}, expected {dev:?}",
                    grad.device()
                );
                assert_eq!(grad.shape(), l.shape(), "{op}: gradient shape on {dev:?}");
                *g = Some(grad.to_vec());
            }
        }
    }
    Run {
        shape,
        out: values,
        grads,
    }
}

/// Compares element-wise with `tol`, panicking with the count, the first and the worst
/// offending elements. Non-finite values must match exactly (inf = inf, NaN ~ NaN).
#[track_caller]
pub fn assert_close32(what: &str, shape: &[usize], gpu: &[f32], cpu: &[f32], tol: Tol32) {
    assert_eq!(
        gpu.len(),
        cpu.len(),
        "{what}: gpu has {} values, cpu {}",
        gpu.len(),
        cpu.len()
    );
    let mut bad = 0usize;
    let mut first = None;
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let ok = if c.is_finite() {
            (g - c).abs() <= tol.atol + tol.rtol * c.abs()
        } else {
            g == c || (g.is_nan() && c.is_nan())
        };
        if !ok {
            bad += 1;
            first.get_or_insert(i);
            let excess = (g - c).abs() - tol.rtol * c.abs();
            if worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
                worst = Some((i, excess));
            }
        }
    }
    if let (Some(i), Some((k, _))) = (first, worst) {
        panic!(
            "{what}: {bad} of {} elements differ beyond |gpu - cpu| <= {:e} + {:e}·|cpu|; \
             first at {:?}: gpu {} vs cpu {}; worst at {:?}: gpu {} vs cpu {}",
            gpu.len(),
            tol.atol,
            tol.rtol,
            unravel(i, shape),
            gpu[i],
            cpu[i],
            unravel(k, shape),
            gpu[k],
            cpu[k]
        );
    }
}

/// One way the GPU's kernels are chosen: a profile, with or without subgroup operations.
#[derive(Clone, Copy)]
pub struct KernelPass {
    pub profile: KernelProfile,
    pub subgroups: bool,
}

impl KernelPass {
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        with_kernel_profile(self.profile, || with_subgroups(self.subgroups, f))
    }
}

impl std::fmt::Display for KernelPass {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let without = if self.subgroups { "" } else { ", no subgroups" };
        write!(f, "{:?} kernels{without}", self.profile)
    }
}

/// Both kernel profiles, whatever the adapter, and the software one again without subgroup
/// operations where `gpu`'s kernels use them.
pub fn kernel_passes(gpu: &Device) -> Vec<KernelPass> {
    let Device::Gpu(ctx) = gpu else {
        panic!("kernel_passes: {gpu:?} is not a GPU device");
    };
    let pass = |profile, subgroups| KernelPass { profile, subgroups };
    let mut passes = vec![pass(KernelProfile::Software, true)];
    if ctx.subgroups_of_8() {
        passes.push(pass(KernelProfile::Software, false));
    }
    passes.push(pass(KernelProfile::Hardware, true));
    passes
}

/// Runs `f` on f32 copies of `inputs` on the CPU and on `gpu`, and compares the forward
/// outputs and the gradients of `sum(f(x) · w)` for every input that requires grad. The GPU
/// runs under both kernel profiles (software and hardware, whatever the adapter), and the
/// software one again without subgroup operations where the adapter's kernels use them, each
/// twice: the two runs must agree bit for bit.
///
/// `inputs` are f32 CPU tensors (see [`leaf32`], [`const32`]); constants (masks, indices as
/// floats) are uploaded too but not differentiated.
#[track_caller]
pub fn gpu_check_with(
    op: &str,
    gpu: &Device,
    inputs: impl AsRef<[Tensor]>,
    tol: Tol32,
    f: impl Fn(&[Tensor]) -> Tensor,
) {
    let inputs = inputs.as_ref();
    assert!(gpu.is_gpu(), "gpu_check {op}: {gpu:?} is not a GPU device");
    for (i, t) in inputs.iter().enumerate() {
        assert!(
            t.dtype() == DType::F32 && !t.device().is_gpu(),
            "gpu_check {op}: input {i} must be an f32 CPU tensor, got {t:?}"
        );
    }
    // The output shape is known only after a run: size the weights from a gradient-free CPU run.
    let shape = no_grad(|| f(&fresh32(inputs))).shape().to_vec();
    let w: Vec<f32> = loss_weights(&shape, name_seed(op))
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let cpu = run_on(op, &Device::cpu(), inputs, &w, &f);
    for pass in kernel_passes(gpu) {
        let (gpu_run, again) = pass.run(|| {
            (
                run_on(op, gpu, inputs, &w, &f),
                run_on(op, gpu, inputs, &w, &f),
            )
        });
        let op = format!("{op} ({pass})");
        assert_eq!(
            gpu_run.shape, cpu.shape,
            "{op}: output shape on the GPU differs from the CPU's"
        );
        let bits = |r: &Run| {
            let grads = r.grads.iter().flatten().flatten();
            r.out
                .iter()
                .chain(grads)
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert!(
            bits(&gpu_run) == bits(&again),
            "{op}: two runs on the GPU gave different bits"
        );
        assert_close32(
            &format!("{op}: forward"),
            &cpu.shape,
            &gpu_run.out,
            &cpu.out,
            tol,
        );
        for (i, (g, c)) in gpu_run.grads.iter().zip(&cpu.grads).enumerate() {
            if let (Some(g), Some(c)) = (g, c) {
                assert_close32(
                    &format!("{op}: gradient of input {i}"),
                    inputs[i].shape(),
                    g,
                    c,
                    tol,
                );
            }
        }
    }
}

fn fresh32(inputs: &[Tensor]) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| Tensor::from_vec(t.to_vec(), t.shape(), &Device::cpu()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A toy end-to-end problem
// ---------------------------------------------------------------------------------------------

pub const MLP_STEPS: usize = 50;

/// Three Gaussian blobs in 8 dimensions, 64 points: (features (64, 8) row-major, labels).
pub fn blobs() -> (Vec<f32>, Vec<i64>) {
    const N: usize = 64;
    const DIM: usize = 8;
    let centres = normal(&[3, DIM], 11);
    let noise = normal(&[N, DIM], 12);
    let mut x = Vec::with_capacity(N * DIM);
    let mut y = Vec::with_capacity(N);
    for i in 0..N {
        let c = i % 3;
        y.push(c as i64);
        for d in 0..DIM {
            x.push((1.5 * centres[c * DIM + d] + 0.7 * noise[i * DIM + d]) as f32);
        }
    }
    (x, y)
}

/// Trains an 8→32→3 tanh MLP with cross-entropy and plain SGD for `steps` steps on
/// [`blobs`], from fixed initial weights (identical on every device); returns the loss at each
/// step, before that step's update.
pub fn train_mlp(device: &Device, steps: usize) -> Vec<f32> {
    let (xs, ys) = blobs();
    let x = Tensor::from_vec(xs, &[64, 8], device);
    let init = |shape: &[usize], seed: u64, scale: f64| {
        let data = normal(shape, seed)
            .into_iter()
            .map(|v| (v * scale) as f32)
            .collect();
        Tensor::from_vec(data, shape, device).requires_grad_(true)
    };
    let w1 = init(&[8, 32], 21, (1.0f64 / 8.0).sqrt());
    let b1 = init(&[32], 22, 0.1);
    let w2 = init(&[32, 3], 23, (1.0f64 / 32.0).sqrt());
    let b2 = init(&[3], 24, 0.1);
    let params = [&w1, &b1, &w2, &b2];
    let lr = 0.2;
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let hidden = (&x.matmul(&w1) + &b1).tanh();
        let logits = &hidden.matmul(&w2) + &b2;
        let loss = logits.cross_entropy(&ys, -100, 0.0);
        losses.push(loss.item());
        loss.backward();
        no_grad(|| {
            for p in params {
                let g = p
                    .grad()
                    .unwrap_or_else(|| panic!("train_mlp: no gradient at step {step}"));
                p.set_data(&(p - &(g * lr)));
                p.zero_grad();
            }
        });
    }
    losses
}
