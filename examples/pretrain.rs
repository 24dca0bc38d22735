//! The main job: self-supervised pre-training of a small ViT on unlabeled images with any method,
//! then what it learned, measured with few labels (linear probe, kNN) beside raw pixels and a
//! random encoder, with a checkpoint, curves and an embedding scatter.
//!
//!     cargo run --release --example pretrain                          # SimCLR, embedded digits
//!     cargo run --release --example pretrain -- --method byol         # any of the six methods
//!     cargo run --release --example pretrain -- --help                # every flag

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

fn main() {
    selfsup::allocator::keep_freed_pages();
    selfsup::program::run_main(|| selfsup::pretrain::main_with(std::env::args().collect()));
}
