//! Measuring a representation: linear probe, k-nearest neighbours, full fine-tuning, and the
//! baselines (raw pixels, a randomly initialised encoder) computed by the same code.

mod features;
mod finetune;
mod knn;
mod probe;

pub use features::{extract_features, raw_pixels, Features};
pub use finetune::{finetune, FinetuneConfig};
pub use knn::knn_accuracy;
pub use probe::{linear_probe, ProbeReport};
