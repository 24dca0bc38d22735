//! selfsup-engine: tensors, reverse-mode autodiff, a CPU reference backend and a wgpu backend.
//!
//! A [`Tensor`] holds a shape and a buffer on a [`Device`]. Its ops (in `ops/`) check arguments,
//! run primitive kernels of the device's backend (`backend::cpu` or `backend::gpu`), and record
//! how to send gradients back, using more tensor ops; [`Tensor::backward`] replays those records.

pub mod autocast;
pub mod autograd;
pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod nn;
mod ops;
pub mod optim;
pub mod shape;
pub mod tensor;

pub use autocast::Autocast;
pub use autograd::{is_grad_enabled, no_grad, NoGradGuard};
pub use device::Device;
pub use error::{Error, Result};
pub use ops::nn::embedding;
pub use tensor::{DType, Tensor};

/// The generator behind every seeded stream (init, dropout, shuffles, augmentations). ChaCha12 from
/// `rand_chacha`, whose output is fixed across versions: `rand`'s `StdRng` may change algorithm,
/// and bit-exact resume rests on these streams.
pub type SeededRng = rand_chacha::ChaCha12Rng;
