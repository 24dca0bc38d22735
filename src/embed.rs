//! The `embed` job: a Hugging Face BERT-architecture model directory (`config.json`,
//! `vocab.txt`, `model.safetensors`) loaded into our encoder, sentences tokenised as HF's
//! `BertTokenizer` does (`[CLS] … [SEP]`, padded to the longest), and their hidden states and
//! mean-pooled, L2-normalised sentence embeddings written to a safetensors file.

use crate::setup::{self, parse_args};
use clap::Parser;
use safetensors::tensor::{Dtype, TensorView};
use selfsup_engine::data::Tokenizer;
use selfsup_engine::nn::{Init, Module};
use selfsup_engine::{no_grad, Device, Tensor};
use selfsup_models::bert::{self, Batch, Bert, BertConfig};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "embed",
    about = "Sentence embeddings from a Hugging Face BERT model directory (config.json, vocab.txt, \
             model.safetensors)"
)]
pub struct Args {
    /// The model directory
    #[arg(long)]
    pub model: PathBuf,
    /// Where the safetensors file of ids, masks, hidden states and embeddings goes
    #[arg(long)]
    pub out: PathBuf,
    /// cpu, gpu or auto (default: $SELFSUP_DEVICE, else auto)
    #[arg(long)]
    pub device: Option<String>,
    /// On a GPU with f16 storage: products and attention read f16 operands (f32 arithmetic,
    /// weights and gradients)
    #[arg(long)]
    pub f16: bool,
    /// The sentences
    #[arg(required = true)]
    pub sentences: Vec<String>,
}

/// What the job computed, as written to `--out`.
pub struct Embedded {
    /// `(B, T)` token ids, padded with `[PAD]`.
    pub input_ids: Vec<i64>,
    /// `(B, T)`: 1 on tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
    /// `(B, T, H)`.
    pub last_hidden_state: Vec<f32>,
    /// `(B, H)`, unit length.
    pub sentence_embedding: Vec<f32>,
    pub shape: [usize; 3],
}

/// The encoder's shape from HF's `config.json`; an architecture we do not implement is refused.
pub fn bert_config(path: &Path) -> Result<BertConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let int = |k: &str| {
        v[k].as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("{}: no whole number {k:?}", path.display()))
    };
    for (k, want) in [
        ("hidden_act", "gelu"),
        ("position_embedding_type", "absolute"),
    ] {
        if let Some(got) = v[k].as_str().filter(|&g| g != want) {
            return Err(format!(
                "{}: {k} {got:?} is not supported (only {want:?})",
                path.display()
            ));
        }
    }
    Ok(BertConfig {
        vocab: int("vocab_size")?,
        max_positions: int("max_position_embeddings")?,
        type_vocab: int("type_vocab_size")?,
        dim: int("hidden_size")?,
        depth: int("num_hidden_layers")?,
        heads: int("num_attention_heads")?,
        intermediate: int("intermediate_size")?,
        dropout: 0.0,
        ln_eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12),
    })
}

/// HF tensors with known non-weight extras dropped: the `position_ids` index buffer (int64) and
/// the pooler (unused: the embedding is the masked mean). Any other tensor must be ours.
const EXTRAS: [&str; 3] = ["position_ids", "pooler.dense.weight", "pooler.dense.bias"];

/// Every floating-point tensor of a safetensors file as f32 (f16 and bf16 converted), by name.
fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if EXTRAS.iter().any(|x| name.ends_with(x)) {
            continue;
        }
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytemuck_f32(view.data()),
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(format!(
                    "{}: tensor {name} has dtype {other:?}, not a float",
                    path.display()
                ))
            }
        };
        out.insert(name, Tensor::from_vec(data, view.shape(), &Device::Cpu));
    }
    Ok(out)
}

fn bytemuck_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The encoder of `dir` with its weights; missing, unexpected and mis-shaped tensors are refused
/// by name.
pub fn load_bert(dir: &Path, device: &Device) -> Result<Bert, String> {
    let config = bert_config(&dir.join("config.json"))?;
    let weights_path = dir.join("model.safetensors");
    let source = weights_path.display().to_string();
    let hf = read_weights(&weights_path)?;
    let model = Bert::new(&mut Init::new(0, device), config);
    let ours = bert::from_hf(&model, &hf, &source)?;
    // Every HF tensor must have been used: q, k, v stack into one of ours, the rest map 1:1.
    let used = ours.len() + 2 * model.layers.len() * 2;
    if hf.len() != used {
        let known: Vec<String> = model
            .state_dict()
            .into_iter()
            .flat_map(|(n, _)| bert::hf_names(&n))
            .collect();
        let mut extra: Vec<&str> = hf
            .keys()
            .map(String::as_str)
            .filter(|k| !known.iter().any(|n| n == k || format!("bert.{n}") == *k))
            .collect();
        extra.sort_unstable();
        return Err(format!("{source}: unexpected tensors {}", extra.join(", ")));
    }
    let ours: HashMap<String, Tensor> = ours
        .into_iter()
        .map(|(k, v)| (k, v.to_device(device)))
        .collect();
    model
        .load_state_dict(&ours, &source)
        .map_err(|e| e.to_string())?;
    model.set_training(false);
    Ok(model)
}

/// `[CLS] tokens [SEP]` ids of each sentence under `vocab.txt`'s WordPiece (lower-cased, accents
/// stripped, punctuation split, as HF's uncased `BertTokenizer`), with the `[PAD]` id.
pub fn tokenize(vocab: &Path, sentences: &[String]) -> Result<(Vec<Vec<u32>>, u32), String> {
    let tk = Tokenizer::wordpiece(vocab).map_err(|e| e.to_string())?;
    let special = |t: &str| {
        tk.token_id(t)
            .ok_or_else(|| format!("{}: no {t} token", vocab.display()))
    };
    let (cls, sep, pad) = (special("[CLS]")?, special("[SEP]")?, special("[PAD]")?);
    let rows = sentences
        .iter()
        .map(|s| {
            let mut ids = vec![cls];
            ids.extend(tk.encode(s)?);
            ids.push(sep);
            Ok(ids)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((rows, pad))
}

/// Hidden states and masked-mean, L2-normalised embeddings of `sentences`.
pub fn embed(model: &Bert, rows: &[Vec<u32>], pad: u32) -> Result<Embedded, String> {
    let batch = Batch::pad(rows, pad);
    let (b, t, h) = (batch.rows(), batch.t, model.config.dim);
    if t > model.config.max_positions {
        return Err(format!(
            "a sentence has {t} tokens, more than the model's {} positions",
            model.config.max_positions
        ));
    }
    let mask = batch.attention_mask();
    let (hidden, pooled) = no_grad(|| {
        let x = model.forward(&batch); // (B, T, H)
        (
            x.to_vec(),
            bert::mean_pool(&x, &batch).normalize(1, 1e-12).to_vec(),
        )
    });
    Ok(Embedded {
        input_ids: batch.ids.iter().map(|&i| i as i64).collect(),
        attention_mask: mask.iter().map(|&m| m as i64).collect(),
        last_hidden_state: hidden,
        sentence_embedding: pooled,
        shape: [b, t, h],
    })
}

/// Writes `e` as safetensors: int64 ids and mask, f32 hidden states and embeddings.
pub fn write(path: &Path, e: &Embedded) -> Result<(), String> {
    let [b, t, h] = e.shape;
    let ids: Vec<u8> = e.input_ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mask: Vec<u8> = e
        .attention_mask
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let hidden: Vec<u8> = e
        .last_hidden_state
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let pooled: Vec<u8> = e
        .sentence_embedding
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> TensorView<'_> {
        TensorView::new(dtype, shape, data).expect("shapes match the data")
    }
    let tensors = [
        ("input_ids", view(Dtype::I64, vec![b, t], &ids)),
        ("attention_mask", view(Dtype::I64, vec![b, t], &mask)),
        (
            "last_hidden_state",
            view(Dtype::F32, vec![b, t, h], &hidden),
        ),
        ("sentence_embedding", view(Dtype::F32, vec![b, h], &pooled)),
    ];
    safetensors::serialize_to_file(tensors, None, path)
        .map_err(|e| format!("--out {}: {e}", path.display()))
}

/// The job, for `argv` (program name first): every failure is one line naming a flag or file.
pub fn main_with(argv: Vec<String>) -> Result<Option<Embedded>, String> {
    let Some((args, _)) = parse_args::<Args>(&argv)? else {
        return Ok(None);
    };
    let device = setup::device(args.device.as_deref())?;
    let _f16 = setup::autocast(args.f16, &device)?;
    let model = load_bert(&args.model, &device).map_err(|e| format!("--model {e}"))?;
    let (rows, pad) = tokenize(&args.model.join("vocab.txt"), &args.sentences)?;
    let e = embed(&model, &rows, pad)?;
    write(&args.out, &e)?;
    let [b, _, h] = e.shape;
    println!(
        "{b} sentences, {} tokens at most, {h}-dim embeddings → {}",
        e.shape[1],
        args.out.display()
    );
    println!("cosine similarities:");
    let row = |i: usize| &e.sentence_embedding[i * h..(i + 1) * h];
    for i in 0..b {
        let cells: Vec<String> = (0..b)
            .map(|j| {
                format!(
                    "{:.3}",
                    row(i).iter().zip(row(j)).map(|(x, y)| x * y).sum::<f32>()
                )
            })
            .collect();
        println!("  {}  {}", cells.join(" "), args.sentences[i]);
    }
    Ok(Some(e))
}
