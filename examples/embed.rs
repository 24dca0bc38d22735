//! Sentence embeddings from a Hugging Face BERT model directory:
//!
//!     cargo run --release --example embed -- --model DIR --out emb.safetensors "A sentence." "Another."

fn main() {
    selfsup::program::run_main(|| selfsup::embed::main_with(std::env::args().collect()));
}
