//! SimCLR (Chen et al., 2020): two augmented views of each image, an encoder f and projector g,
//! and the NT-Xent loss that pulls the two views of an image together against the other 2(N−1)
//! views of the batch.

use crate::heads::ProjectionHead;
use crate::vit::{VisionTransformer, VitConfig};
use selfsup_engine::nn::{prefixed, Init, Module};
use selfsup_engine::Tensor;

/// NT-Xent over 2N views: for anchor i, the positive is its other view and the negatives are the
/// remaining 2(N−1) views; similarities are cosine / τ, and the anchor itself is excluded.
///
/// ℓ = −(1/2N) Σᵢ log( exp(sim(zᵢ, zⱼ₍ᵢ₎)/τ) / Σ_{k≠i} exp(sim(zᵢ, z_k)/τ) )
#[track_caller]
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Tensor {
    assert!(
        z1.rank() == 2 && z1.shape() == z2.shape(),
        "nt_xent: views must be two (N, D) tensors of one shape, got {:?} and {:?}",
        z1.shape(),
        z2.shape()
    );
    assert!(
        temperature > 0.0,
        "nt_xent: temperature must be positive, got {temperature}"
    );
    let n = z1.shape()[0];
    let z = Tensor::cat(&[z1, z2], 0).normalize(1, 1e-12);
    let sim = z.matmul_nt(&z).mul_scalar(1.0 / temperature);
    let eye: Vec<f64> = (0..4 * n * n)
        .map(|i| if i / (2 * n) == i % (2 * n) { 1.0 } else { 0.0 })
        .collect();
    let sim = sim.masked_fill(&z.new_from(&eye, &[2 * n, 2 * n]), f64::NEG_INFINITY);
    let targets: Vec<i64> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as i64).collect();
    sim.cross_entropy(&targets, -100, 0.0)
}

/// Encoder plus projection head.
pub struct SimClr {
    pub encoder: VisionTransformer,
    pub projector: ProjectionHead,
    pub temperature: f64,
}

impl SimClr {
    pub fn new(
        init: &mut Init,
        vit: VitConfig,
        hidden: usize,
        out: usize,
        temperature: f64,
    ) -> SimClr {
        let dim = vit.dim;
        SimClr {
            encoder: VisionTransformer::new(init, vit),
            projector: ProjectionHead::new(init, dim, hidden, out, true),
            temperature,
        }
    }

    /// The loss on a batch of view pairs `(N, C, H, W)`. Both views go through the encoder in
    /// one batch, so batch-norm statistics cover all 2N views as in the paper.
    pub fn loss(&self, view1: &Tensor, view2: &Tensor) -> Tensor {
        let n = view1.shape()[0];
        let z = self
            .projector
            .forward(&self.encoder.features(&Tensor::cat(&[view1, view2], 0)));
        nt_xent(&z.narrow(0, 0, n), &z.narrow(0, n, n), self.temperature)
    }
}

impl Module for SimClr {
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("encoder", self.encoder.named_parameters());
        v.extend(prefixed("projector", self.projector.named_parameters()));
        v
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("projector", self.projector.named_buffers())
    }

    fn set_training(&mut self, training: bool) {
        self.encoder.set_training(training);
        self.projector.set_training(training);
    }
}
