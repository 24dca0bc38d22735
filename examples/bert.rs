//! BERT pre-training by masked language modelling (with a contrastive loss between nearby
//! passages) on the Austen novels and Moby-Dick, then held-out masked-token accuracy and a
//! book-of-origin probe beside baselines.
//!
//!     cargo run --release --example bert
//!     cargo run --release --example bert -- --help             # every flag

#[global_allocator]
static GLOBAL: selfsup::allocator::Allocator = selfsup::allocator::Allocator;

fn main() {
    selfsup::allocator::keep_freed_pages();
    selfsup::program::run_main(|| selfsup::bert::main_with(std::env::args().collect()));
}
