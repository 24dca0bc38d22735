#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for the Rust tests (run by hand; CI never needs PyTorch).

    python3 -m venv torchenv && torchenv/bin/pip install torch numpy safetensors
    torchenv/bin/python tools/make_fixtures.py      # writes tests/fixtures/*.safetensors

vit_tiny.safetensors: a small ViT written with plain torch.nn under the exact parameter names of
selfsup's VisionTransformer (timm's layout), fixed weights, an input batch, the final-norm tokens,
and the gradients of sum(tokens * w) for every parameter and the input.
nt_xent.safetensors: two projected views, the SimCLR NT-Xent loss at two temperatures, and its
gradients.
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, channels, dim):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(patch * patch * channels, dim)

    def forward(self, imgs):
        B, C, H, W = imgs.shape
        p = self.patch
        x = imgs.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return self.proj(x.reshape(B, (H // p) * (W // p), p * p * C))


class ViT(nn.Module):
    def __init__(self, image, channels, patch, dim, depth, heads, mlp_ratio):
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = PatchEmbed(patch, channels, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):  # non-trivial affine parameters, so they are tested
                nn.init.normal_(m.weight, 1.0, 0.1)
                nn.init.normal_(m.bias, 0.0, 0.1)

    def forward(self, imgs):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1)
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


def vit_fixture():
    torch.manual_seed(0)
    cfg = dict(image=28, channels=1, patch=7, dim=32, depth=2, heads=4, mlp_ratio=4)
    model = ViT(**cfg)
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    tokens = model(x)
    w = torch.randn_like(tokens)
    (tokens * w).sum().backward()
    t = {"input": x.detach(), "output": tokens.detach(), "w": w, "grad.input": x.grad}
    for name, p in model.named_parameters():
        t[f"param.{name}"] = p.detach()
        t[f"grad.{name}"] = p.grad
    meta = {k: str(v) for k, v in cfg.items()}
    meta["torch"] = torch.__version__
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "vit_tiny.safetensors"), meta)


def nt_xent(z1, z2, temperature):
    """The SimCLR loss as PyTorch users write it (shared/reference/pytorch/models.py)."""
    N = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], 0), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(N, 2 * N), torch.arange(0, N)])
    return F.cross_entropy(sim, target)


def nt_xent_fixture():
    torch.manual_seed(1)
    t = {}
    for i, tau in enumerate((0.5, 0.1)):
        z1 = torch.randn(6, 8, requires_grad=True)
        z2 = (z1.detach() + 0.5 * torch.randn(6, 8)).requires_grad_(True)
        loss = nt_xent(z1, z2, tau)
        loss.backward()
        t.update({f"{i}.z1": z1.detach(), f"{i}.z2": z2.detach(), f"{i}.loss": loss.detach().reshape(1),
                  f"{i}.tau": torch.tensor([tau]), f"{i}.grad.z1": z1.grad, f"{i}.grad.z2": z2.grad})
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "nt_xent.safetensors"),
              {"torch": torch.__version__})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    vit_fixture()
    nt_xent_fixture()
    print("wrote", sorted(os.listdir(OUT)))
