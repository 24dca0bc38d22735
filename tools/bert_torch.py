#!/usr/bin/env python3
"""The BERT MLM step of `cargo bench --bench step -- cpu/bert` in PyTorch, for a side-by-side
timing (run by hand, alternated with the Rust bench in one session):

    torchenv/bin/python tools/bert_torch.py      # prints ms per step (median of 3 rounds of 20)

Same model as the `bert` example (transformers' BertForMaskedLM layout from make_fixtures.py:
4 layers x 128, 4 heads, feed-forward 512, vocabulary 4,096; dropout off in both), 64 random sentences of
40 tokens, 15 % chosen with BERT's 80-10-10 masking, the vocabulary decoded at the chosen
positions only (as ours), AdamW (0.9, 0.999, eps 1e-6, weight decay 0.01), one thread per core.
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import BertForMlm  # noqa: E402

torch.manual_seed(0)
B, T, V = 64, 40, 4096
model = BertForMlm(vocab=V, max_pos=64, types=2, dim=128, depth=4, heads=4, inter=512).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
ids = torch.randint(5, V, (B, T))
chosen = torch.rand(B, T) < 0.15
targets = torch.where(chosen, ids, torch.full_like(ids, -100))
r = torch.rand(B, T)
ids = torch.where(chosen & (r < 0.8), torch.full_like(ids, 4), ids)
ids = torch.where(chosen & (r >= 0.8) & (r < 0.9), torch.randint(5, V, (B, T)), ids)
types, mask = torch.zeros_like(ids), torch.ones_like(ids)
rows = targets.reshape(-1) != -100


def step():
    opt.zero_grad()
    e = model.bert.embeddings
    x = e.LayerNorm(e.word_embeddings(ids) + e.token_type_embeddings(types) + e.position_embeddings(torch.arange(T)))
    for layer in model.bert.encoder.layer:
        x = layer(x, torch.zeros(1))
    p = model.cls.predictions
    h = x.reshape(B * T, -1)[rows]
    logits = p.transform.LayerNorm(F.gelu(p.transform.dense(h))) @ e.word_embeddings.weight.t() + p.bias
    loss = F.cross_entropy(logits, targets.reshape(-1)[rows])
    loss.backward()
    opt.step()
    return loss.item()


for _ in range(5):
    step()
rounds = []
for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(20):
        step()
    rounds.append((time.perf_counter() - t0) / 20 * 1e3)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: BERT MLM step "
      f"{statistics.median(rounds):.1f} ms (rounds {', '.join(f'{r:.1f}' for r in rounds)})")
