//! GPT pre-training on text: next-token prediction with a causal Transformer, then a sample.
//!
//!     cargo run --release --example gpt                       # char-level, embedded Shakespeare
//!     cargo run --release --example gpt -- --sample runs/gpt/checkpoint.safetensors --prompt "ROMEO:"
//!     cargo run --release --example gpt -- --help             # every flag

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

fn main() {
    selfsup::allocator::keep_freed_pages();
    selfsup::program::run_main(|| selfsup::gpt::main_with(std::env::args().collect()));
}
