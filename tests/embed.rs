//! The `embed` job on a tiny random BERT saved by transformers (`tools/embed_parity.py
//! --fixture`): our WordPiece gives HF's token ids, the loader maps HF's names, and the hidden
//! states and embeddings match transformers'. Broken checkpoints are refused by name.

use safetensors::tensor::TensorView;
use selfsup::embed::main_with;
use selfsup_engine::checkpoint;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn argv(model: &Path, out: &Path, sentences: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["embed", "--device", "cpu", "--model"]
        .map(String::from)
        .to_vec();
    v.push(model.display().to_string());
    v.push("--out".into());
    v.push(out.display().to_string());
    v.extend(sentences.iter().cloned());
    v
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: differs by {worst}");
}

#[test]
fn tiny_bert_matches_transformers_token_for_token() {
    let expected_path = fixtures().join("tiny-bert-expected.safetensors");
    let bytes = std::fs::read(&expected_path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let sentences: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["sentences"]).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| -> Vec<i64> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let floats = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let out =
        std::env::temp_dir().join(format!("selfsup-embed-{}.safetensors", std::process::id()));
    let e = main_with(argv(&fixtures().join("tiny-bert"), &out, &sentences))
        .unwrap()
        .unwrap();
    assert_eq!(
        e.input_ids,
        ints("input_ids"),
        "WordPiece ids differ from HF's"
    );
    assert_eq!(e.attention_mask, ints("attention_mask"));
    close(
        "last_hidden_state",
        &e.last_hidden_state,
        &floats("last_hidden_state"),
        1e-4,
    );
    close(
        "sentence_embedding",
        &e.sentence_embedding,
        &floats("sentence_embedding"),
        1e-5,
    );
    // The file holds what the job returned.
    let written = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let w = safetensors::SafeTensors::deserialize(&written).unwrap();
    let [b, t, h] = e.shape;
    assert_eq!(w.tensor("last_hidden_state").unwrap().shape(), [b, t, h]);
    assert_eq!(w.tensor("sentence_embedding").unwrap().shape(), [b, h]);
    assert_eq!(w.tensor("input_ids").unwrap().shape(), [b, t]);
}

/// The tiny model with its tensors changed by `edit`, in a fresh folder.
fn broken(name: &str, edit: impl Fn(&mut Vec<(String, Vec<f32>, Vec<usize>)>)) -> PathBuf {
    let src = fixtures().join("tiny-bert");
    let dir = std::env::temp_dir().join(format!("selfsup-embed-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "vocab.txt"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let ck = checkpoint::load(&src.join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = ck
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.to_vec(), v.shape().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, v, _)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, _, s), b)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_refused_by_name() {
    let sentences = vec!["a man".to_string()];
    let out = std::env::temp_dir().join("selfsup-embed-never.safetensors");
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            broken("missing", |t| {
                t.retain(|(n, _, _)| n != "encoder.layer.1.attention.self.key.bias")
            }),
            "no tensor encoder.layer.1.attention.self.key.bias",
        ),
        (
            broken("unexpected", |t| {
                t.push((
                    "encoder.layer.2.output.dense.weight".into(),
                    vec![0.0; 4],
                    vec![2, 2],
                ))
            }),
            "unexpected tensors encoder.layer.2.output.dense.weight",
        ),
        (
            broken("misshaped", |t| {
                let w = t
                    .iter_mut()
                    .find(|(n, _, _)| n == "encoder.layer.0.output.LayerNorm.weight")
                    .unwrap();
                w.1.pop();
                w.2 = vec![w.1.len()];
            }),
            "encoder.layer.0.output.LayerNorm.weight has shape [15]",
        ),
    ];
    for (dir, want) in cases {
        let err = main_with(argv(&dir, &out, &sentences))
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", dir.display()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains(want), "{err}");
        assert!(err.starts_with("--model "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
    assert!(!out.exists());
}
