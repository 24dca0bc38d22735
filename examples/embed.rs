//! Sentence embeddings from a Hugging Face BERT model directory:
//!
//!     cargo run --release --example embed -- --model DIR --out emb.safetensors "A sentence." "Another."

fn main() {
    if let Err(e) = selfsup::embed::main_with(std::env::args().collect()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
