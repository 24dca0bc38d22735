//! Parameter initialisation, seeded so that a model is the same on every device.

use crate::device::Device;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};

/// A deterministic source of initial weights: each call draws from its own derived seed.
pub struct Init {
    rng: crate::SeededRng,
    pub device: Device,
}

impl Init {
    pub fn new(seed: u64, device: &Device) -> Init {
        Init {
            rng: crate::SeededRng::seed_from_u64(seed),
            device: device.clone(),
        }
    }

    /// A fresh seed for one tensor.
    pub fn seed(&mut self) -> u64 {
        self.rng.random()
    }

    /// Truncated normal (std, cut at ±2 std) as timm and the ViT reference use for linears.
    pub fn trunc_normal(&mut self, shape: &[usize], std: f64) -> Tensor {
        trunc_normal(shape, std, self.seed(), &self.device)
    }

    /// Uniform in [-bound, bound] (PyTorch's default Linear init with bound = 1/√fan_in).
    pub fn uniform(&mut self, shape: &[usize], bound: f64) -> Tensor {
        let t = Tensor::rand(shape, self.seed(), &Device::Cpu);
        let v: Vec<f32> = t
            .to_vec()
            .iter()
            .map(|&u| ((2.0 * u as f64 - 1.0) * bound) as f32)
            .collect();
        Tensor::from_vec(v, shape, &self.device)
    }

    pub fn zeros(&self, shape: &[usize]) -> Tensor {
        Tensor::zeros(shape, &self.device)
    }

    pub fn ones(&self, shape: &[usize]) -> Tensor {
        Tensor::ones(shape, &self.device)
    }
}

/// Samples N(0, std²) truncated to [-2·std, 2·std] by rejection.
pub fn trunc_normal(shape: &[usize], std: f64, seed: u64, device: &Device) -> Tensor {
    let mut rng = crate::SeededRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        if z.abs() <= 2.0 {
            v.push((z * std) as f32);
        }
    }
    Tensor::from_vec(v, shape, device)
}
