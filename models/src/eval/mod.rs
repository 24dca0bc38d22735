//! Measuring a representation: linear probe, k-nearest neighbours, full fine-tuning, and the
//! baselines (raw pixels, a randomly initialised encoder) computed by the same code.

mod features;
mod finetune;
mod knn;
mod probe;
mod zero_shot;

pub use features::{extract_features, raw_pixels, Features};
pub use finetune::{finetune, FinetuneConfig};
pub use knn::knn_accuracy;
pub use probe::{linear_probe, ProbeReport};
pub use zero_shot::{class_embeddings, nearest, zero_shot, ZeroShot};

use crate::vit::VisionTransformer;
use selfsup_engine::nn::Module;
use selfsup_engine::Tensor;

/// What the protocols need of a representation: images `(B, C, H, W)` in, `(B, dim)` out, and
/// parameters to fine-tune. Any encoder a method trains can be measured by the same code.
pub trait Encoder: Module {
    fn features(&self, images: &Tensor) -> Tensor;
    fn dim(&self) -> usize;
}

/// A ViT is measured on its class token and mean patch token together, whichever it trains.
impl Encoder for VisionTransformer {
    fn features(&self, images: &Tensor) -> Tensor {
        self.representation(images)
    }

    fn dim(&self) -> usize {
        2 * self.config.dim
    }
}
