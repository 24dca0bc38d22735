//! Datasets, augmentations and batch loading for self-supervised training.
//!
//! Files (MNIST-style IDX, CIFAR-10 binary) load into one in-memory [`Dataset`] form; seeded
//! [`Augment`] recipes turn images into views; a [`Loader`] shuffles and batches them on a
//! background thread, reproducibly and resumably. Text is read whole, tokenized, and sampled in
//! seeded random blocks.

mod augment;
mod cifar;
mod dataset;
mod idx;
mod loader;
#[cfg(test)]
mod test_util;
mod text;
mod tokenizer;

pub use augment::{Augment, Image, Transform};
pub use cifar::{load_cifar10, load_cifar10_dir};
pub use dataset::Dataset;
pub use idx::{labels_path_for, read_idx, IdxArray};
pub use loader::{n_views, one_view, Batch, BatchFn, LabelledBatch, Loader, View, Views};
pub use text::{decode_text, read_text, split_ids, TokenBatch, TokenBlocks};
pub use tokenizer::Tokenizer;
