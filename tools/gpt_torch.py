#!/usr/bin/env python3
"""The `gpt` example's default run in plain PyTorch, for the side-by-side wall-time comparison in
BENCHMARKS.md (run by hand, never by CI): the same char-level Tiny Shakespeare split, the same
model (nanoGPT's layout, tied head, causal SDPA, GELU, 1/sqrt(2L) residual init), AdamW betas,
schedule, clipping and evaluation cadence. Prints the validation loss at every evaluation and
the wall time at which it first reached --target.

    torchenv/bin/python tools/gpt_torch.py --steps 2500 --target 1.88 --stop-at-target
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc1(self.ln_2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab, ctx, dim, depth, heads):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/tinyshakespeare.txt.gz")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--min-lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--target", type=float, default=1.88)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="initial weights and training batches")
    ap.add_argument("--stop-at-target", action="store_true", help="stop once --target is reached")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    import gzip
    text = gzip.open(a.data, "rt", encoding="utf-8").read() if a.data.endswith(".gz") else open(a.data).read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]

    def batch(data, g):
        ix = torch.randint(len(data) - a.ctx, (a.batch,), generator=g)
        x = torch.stack([data[i:i + a.ctx] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + a.ctx] for i in ix])
        return x, y

    model = Gpt(len(chars), a.ctx, a.dim, a.depth, a.heads)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.99))

    def lr_at(s):
        if s < a.warmup:
            return a.lr * (s + 1) / a.warmup
        p = (s - a.warmup) / max(1, a.steps - a.warmup)
        return a.min_lr + (a.lr - a.min_lr) * 0.5 * (1 + math.cos(math.pi * p))

    @torch.no_grad()
    def estimate(data):
        model.eval()
        g = torch.Generator().manual_seed(1234)
        losses = [F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1)).item()
                  for x, y in (batch(data, g) for _ in range(a.eval_batches))]
        model.train()
        return sum(losses) / len(losses)

    g = torch.Generator().manual_seed(a.seed)
    t0, reached, eval_s = time.time(), None, 0.0
    for s in range(a.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(s)
        x, y = batch(train, g)
        loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (s + 1) % a.eval_every == 0 or s + 1 == a.steps:
            e0 = time.time()
            t, v = estimate(train), estimate(val)  # both splits, as nanoGPT and the gpt job do
            eval_s += time.time() - e0
            wall = time.time() - t0
            print(f"step {s + 1}: train loss {t:.3f} val loss {v:.3f} ({wall:.0f} s, "
                  f"{1e3 * (wall - eval_s) / (s + 1):.0f} ms/step)", flush=True)
            if reached is None and v <= a.target:
                reached = (s + 1, wall)
                if a.stop_at_target:
                    break
    if reached:
        print(f"reached val loss {a.target} at step {reached[0]} after {reached[1]:.0f} s")
    else:
        print(f"did not reach val loss {a.target}")


if __name__ == "__main__":
    main()
