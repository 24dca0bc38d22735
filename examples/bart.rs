//! BART pre-training by denoising (text infilling by default) on the Austen novels and
//! Moby-Dick, then held-out reconstruction accuracy and a few reconstructed examples.
//!
//!     cargo run --release --example bart
//!     cargo run --release --example bart -- --noise sentence-permutation
//!     cargo run --release --example bart -- --help             # every flag

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

fn main() {
    selfsup::allocator::keep_freed_pages();
    selfsup::program::run_main(|| selfsup::bart::main_with(std::env::args().collect()));
}
