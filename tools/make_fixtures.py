#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for the Rust tests (run by hand; CI never needs PyTorch).

    python3 -m venv torchenv && torchenv/bin/pip install torch numpy safetensors
    torchenv/bin/python tools/make_fixtures.py      # writes tests/fixtures/*.safetensors

vit_tiny.safetensors: a small ViT written with plain torch.nn under the exact parameter names of
selfsup's VisionTransformer (timm's layout), fixed weights, an input batch, the final-norm tokens,
and the gradients of sum(tokens * w) for every parameter and the input.
nt_xent.safetensors: two projected views, the SimCLR NT-Xent loss at two temperatures, and its
gradients.
ssl_losses.safetensors: inputs, loss and input gradients of the BYOL, SimSiam, MoCo v2 (InfoNCE with a
queue), MoCo v3 and Barlow Twins losses, computed in float64 from float32 inputs.
gpt_tiny.safetensors: a tiny GPT (nanoGPT's layout under selfsup's parameter names: tied LM head,
causal attention), fixed weights, token ids and targets, the logits, the cross-entropy loss and the
gradient of that loss for every parameter.
mae_tiny.safetensors: a tiny MAE (the paper's models_mae.py under selfsup's parameter names), fixed
weights, images and masking noise, and the masked-patch loss with raw and per-patch normalised
targets, each with the gradient of every parameter.
dino_loss.safetensors: DINO's loss (main_dino.py's DINOLoss) over 2 global and 2 local views with
centring and both temperatures, its gradient, and the updated centre.
sinkhorn.safetensors: DINOv2's sinkhorn_knopp_teacher (3 iterations) on teacher logits of 6 images over 10
prototypes at two temperatures.
clip_loss.safetensors: CLIP's symmetric cross-entropy (open_clip's ClipLoss) over 6 image and 6 text
features at two logit scales, with the gradients of both features and of the logit scale.
bert_tiny.safetensors: a tiny BERT for masked language modelling written as Hugging Face's
BertForMaskedLM (separate query/key/value, post-LN blocks, LN eps 1e-12, erf GELU, the additive
padding mask, tied decoder with its own bias) under HF's parameter names, padded rows of token and
segment ids, the last hidden states, the MLM loss on chosen positions, and every gradient; then
the MLM loss plus 0.5 × NT-Xent (τ 0.1) between the mean-pooled states of rows i and B/2 + i
(the bert job's --contrast objective) and its every gradient.
bart_tiny.safetensors: a tiny BART (post-LN encoder and decoder, causal self-attention, cross-attention
with source padding, tied output with final_logits_bias) written functionally under selfsup's
parameter names: padded source and decoder-input rows, the teacher-forced loss and every gradient.
resize.safetensors: a (2, 3, 7, 7) tensor resized bicubically (align_corners=False) to 3×3, 12×12
and 5×9, as DINO interpolates a ViT's position grid.

    torchenv/bin/python tools/make_fixtures.py gpt  # only those named: vit nt_xent ssl gpt mae resize dino sinkhorn clip bert bart
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


class Attention(nn.Module):
    def __init__(self, dim, heads, causal=False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=self.causal)
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


SSL_N, SSL_D, SSL_K = 8, 6, 16  # batch rows, features, MoCo v2 queue length
MOCO_TAU = 0.2
BARLOW_LAMBDA = 0.0051


def f64_leaf(*shape):
    """A float32 randn draw upcast to float64, so the saved float32 values are exactly the inputs used."""
    return torch.randn(*shape).double().requires_grad_(True)


def byol_loss(p1, p2, z1, z2):
    def half(p, z):
        return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1, eps=1e-8)).mean()
    return half(p1, z2) + half(p2, z1)


def simsiam_loss(p1, p2, z1, z2):
    def d(p, z):
        return F.cosine_similarity(p, z.detach(), dim=1, eps=1e-8).mean()
    return -0.5 * (d(p1, z2) + d(p2, z1))


def moco_v2_loss(q, k, queue, tau):
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1).detach()
    l_pos = (qn * kn).sum(1, keepdim=True)
    l_neg = qn @ queue.t()
    logits = torch.cat([l_pos, l_neg], 1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def moco_v3_loss(q1, q2, k1, k2, tau):
    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).detach().t() / tau
        return F.cross_entropy(logits, torch.arange(q.shape[0])) * 2 * tau
    return ctr(q1, k2) + ctr(q2, k1)


def barlow_loss(z1, z2, lam):
    def standardise(z):  # BatchNorm1d(affine=False) in training mode
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    c = standardise(z1).t() @ standardise(z2) / z1.shape[0]
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = (c ** 2).sum() - (torch.diagonal(c) ** 2).sum()
    return on + lam * off


def add_case(t, prefix, inputs, loss, grads):
    """Records inputs, the loss (shape [1]) and the gradients of the named inputs under prefix."""
    loss.backward()
    print(f"{prefix}.loss = {loss.item():.10f}")
    t[f"{prefix}.loss"] = loss.detach().reshape(1)
    for name, x in inputs.items():
        t[f"{prefix}.{name}"] = x.detach()
    for name in grads:
        t[f"{prefix}.grad.{name}"] = inputs[name].grad


def ssl_losses_fixture():
    torch.manual_seed(0)
    N, D, K = SSL_N, SSL_D, SSL_K
    t = {}
    x = {n: f64_leaf(N, D) for n in ("p1", "p2", "z1", "z2")}
    add_case(t, "byol", x, byol_loss(**x), ["p1", "p2"])
    x = {n: f64_leaf(N, D) for n in ("p1", "p2", "z1", "z2")}
    add_case(t, "simsiam", x, simsiam_loss(**x), ["p1", "p2"])
    x = {n: f64_leaf(N, D) for n in ("q", "k")}
    x["queue"] = F.normalize(torch.randn(K, D).double(), dim=1).float().double()
    add_case(t, "moco_v2", x, moco_v2_loss(x["q"], x["k"], x["queue"], MOCO_TAU), ["q"])
    x = {n: f64_leaf(N, D) for n in ("q1", "q2", "k1", "k2")}
    add_case(t, "moco_v3", x, moco_v3_loss(**x, tau=MOCO_TAU), ["q1", "q2"])
    x = {n: f64_leaf(N, D) for n in ("z1", "z2")}
    add_case(t, "barlow", x, barlow_loss(**x, lam=BARLOW_LAMBDA), ["z1", "z2"])
    meta = {"lambda": str(BARLOW_LAMBDA), "tau_moco_v2": str(MOCO_TAU), "tau_moco_v3": str(MOCO_TAU),
            "torch": torch.__version__}
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "ssl_losses.safetensors"), meta)


class GptBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, vocab, ctx, dim, depth, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList([GptBlock(dim, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, 0.1)
                nn.init.normal_(m.bias, 0.0, 0.1)
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.3)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.T  # the LM head is the token embedding


def gpt_fixture():
    torch.manual_seed(0)
    cfg = dict(vocab=11, ctx=8, dim=16, depth=2, heads=2)
    model = Gpt(**cfg)
    idx = torch.randint(0, cfg["vocab"], (3, cfg["ctx"]))
    targets = torch.randint(0, cfg["vocab"], (3, cfg["ctx"]))
    logits = model(idx)
    loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1))
    loss.backward()
    t = {"ids": idx.float(), "targets": targets.float(), "logits": logits.detach().reshape(-1, cfg["vocab"]),
         "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        t[f"param.{name}"] = p.detach()
        t[f"grad.{name}"] = p.grad
    meta = {k: str(v) for k, v in cfg.items()}
    meta["torch"] = torch.__version__
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "gpt_tiny.safetensors"), meta)


class Mae(nn.Module):
    """models_mae.py's MaskedAutoencoderViT, reduced to what the loss needs."""

    def __init__(self, image, channels, patch, dim, depth, heads, dec_dim, dec_depth, dec_heads, keep):
        super().__init__()
        n = (image // patch) ** 2
        self.encoder = ViT(image, channels, patch, dim, depth, heads, 4)
        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dec_dim) * 0.02)
        self.decoder_pos = nn.Parameter(torch.randn(1, n + 1, dec_dim) * 0.02)
        self.decoder_blocks = nn.ModuleList([Block(dec_dim, dec_heads, 4) for _ in range(dec_depth)])
        self.decoder_norm = nn.LayerNorm(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, patch * patch * channels)
        self.patch, self.keep = patch, keep
        for m in [self.decoder_norm, *[b.norm1 for b in self.decoder_blocks], *[b.norm2 for b in self.decoder_blocks]]:
            nn.init.normal_(m.weight, 1.0, 0.1)
            nn.init.normal_(m.bias, 0.0, 0.1)

    def forward(self, imgs, noise, norm_pix):
        e = self.encoder
        x = e.patch_embed(imgs) + e.pos_embed[:, 1:]
        B, N, D = x.shape
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :self.keep].unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones(B, N)
        mask[:, :self.keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        x = torch.cat([(e.cls_token + e.pos_embed[:, :1]).expand(B, -1, -1), x], 1)
        for b in e.blocks:
            x = b(x)
        x = self.decoder_embed(e.norm(x))
        x_ = torch.cat([x[:, 1:], self.mask_token.repeat(B, N - self.keep, 1)], 1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], 1) + self.decoder_pos
        for b in self.decoder_blocks:
            x = b(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        p = self.patch
        C, H, W = imgs.shape[1:]
        target = imgs.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, N, p * p * C)
        if norm_pix:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


def mae_fixture():
    torch.manual_seed(0)
    cfg = dict(image=16, channels=1, patch=4, dim=16, depth=1, heads=2, dec_dim=8, dec_depth=1, dec_heads=2, keep=4)
    model = Mae(**cfg)
    imgs = torch.rand(3, 1, 16, 16)
    noise = torch.rand(3, 16)
    t = {"input": imgs, "noise": noise}
    for case, norm_pix in (("pix", False), ("norm", True)):
        model.zero_grad()
        loss = model(imgs, noise, norm_pix)
        loss.backward()
        t[f"{case}.loss"] = loss.detach().reshape(1)
        for name, p in model.named_parameters():
            t[f"{case}.grad.{name}"] = p.grad.clone()
    for name, p in model.named_parameters():
        t[f"param.{name}"] = p.detach()
    meta = {k: str(v) for k, v in cfg.items()}
    meta["torch"] = torch.__version__
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "mae_tiny.safetensors"), meta)


def resize_fixture():
    """F.interpolate(bicubic, align_corners=False) of a 7×7 grid to DINO's 3×3 and to 12×12 and 5×9."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 7, 7)
    t = {"input": x}
    for h, w in ((3, 3), (12, 12), (5, 9)):
        t[f"{h}x{w}"] = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "resize.safetensors"),
              {"torch": torch.__version__})


def dino_fixture():
    """main_dino.py's DINOLoss: 2 global + 2 local views of 4 images, K = 10, centring, both temperatures."""
    torch.manual_seed(3)
    B, K, tau_s, tau_t, m = 4, 10, 0.1, 0.04, 0.9
    student = torch.randn(4 * B, K, requires_grad=True)
    teacher = torch.randn(2 * B, K)
    center = 0.3 * torch.randn(1, K)
    s_out = (student / tau_s).chunk(4)
    t_out = F.softmax((teacher - center) / tau_t, dim=-1).detach().chunk(2)
    total, n = 0, 0
    for iq, q in enumerate(t_out):
        for v in range(len(s_out)):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(s_out[v], dim=-1), dim=-1).mean()
            n += 1
    loss = total / n
    loss.backward()
    new_center = center * m + teacher.mean(0, keepdim=True) * (1 - m)
    t = {"student": student.detach(), "teacher": teacher, "center": center, "loss": loss.detach().reshape(1),
         "grad.student": student.grad, "new_center": new_center}
    meta = {"batch": str(B), "student_temp": str(tau_s), "teacher_temp": str(tau_t), "center_momentum": str(m),
            "torch": torch.__version__}
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "dino_loss.safetensors"), meta)


def sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=3):
    """dinov2/loss/dino_clstoken_loss.py's DINOLoss.sinkhorn_knopp_teacher on one process."""
    Q = torch.exp(teacher_output / teacher_temp).t()  # (K, B)
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(n_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def sinkhorn_fixture():
    torch.manual_seed(6)
    t = {"logits": 0.3 * torch.randn(6, 10)}
    for name, temp in [("t04", 0.04), ("t10", 0.1)]:
        t[f"q.{name}"] = sinkhorn_knopp_teacher(t["logits"].double(), temp)
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "sinkhorn.safetensors"),
              {"torch": torch.__version__})


def clip_fixture():
    """open_clip's ClipLoss: normalise, scale by exp(logit_scale), mean of both directions' CE."""
    torch.manual_seed(4)
    t = {}
    for case, scale in [("init", math.log(1 / 0.07)), ("sharp", 4.0)]:
        image, text = f64_leaf(6, 5), f64_leaf(6, 5)
        logit_scale = torch.tensor([scale], dtype=torch.float64, requires_grad=True)
        logits = logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
        labels = torch.arange(6)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        add_case(t, case, {"image": image, "text": text, "logit_scale": logit_scale}, loss,
                 ["image", "text", "logit_scale"])
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "clip_loss.safetensors"),
              {"torch": torch.__version__})


class BertLayer(nn.Module):
    """transformers' BertLayer, flattened: self-attention, add & norm, feed-forward, add & norm."""

    def __init__(self, dim, heads, inter):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for n in ["query", "key", "value"]:
            setattr(self.attention.self, n, nn.Linear(dim, dim))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(dim, dim)
        self.attention.output.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(dim, inter)
        self.output = nn.Module()
        self.output.dense = nn.Linear(inter, dim)
        self.output.LayerNorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x, additive_mask):
        B, T, C = x.shape
        a = self.attention.self
        split = lambda y: y.reshape(B, T, self.heads, C // self.heads).transpose(1, 2)
        q, k, v = split(a.query(x)), split(a.key(x)), split(a.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(C // self.heads) + additive_mask
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(y))
        return self.output.LayerNorm(x + self.output.dense(F.gelu(self.intermediate.dense(x))))


class BertForMlm(nn.Module):
    def __init__(self, vocab, max_pos, types, dim, depth, heads, inter):
        super().__init__()
        self.bert = nn.Module()
        e = self.bert.embeddings = nn.Module()
        e.word_embeddings = nn.Embedding(vocab, dim)
        e.position_embeddings = nn.Embedding(max_pos, dim)
        e.token_type_embeddings = nn.Embedding(types, dim)
        e.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList([BertLayer(dim, heads, inter) for _ in range(depth)])
        self.cls = nn.Module()
        p = self.cls.predictions = nn.Module()
        p.transform = nn.Module()
        p.transform.dense = nn.Linear(dim, dim)
        p.transform.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        p.bias = nn.Parameter(0.1 * torch.randn(vocab))
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, 0.1)
                nn.init.normal_(m.bias, 0.0, 0.1)

    def forward(self, ids, types, attention_mask):
        e = self.bert.embeddings
        T = ids.shape[1]
        x = e.word_embeddings(ids) + e.token_type_embeddings(types) + e.position_embeddings(torch.arange(T))
        x = e.LayerNorm(x)
        # transformers' extended mask: 0 where attended, the dtype's minimum where padded.
        additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.bert.encoder.layer:
            x = layer(x, additive)
        p = self.cls.predictions
        h = p.transform.LayerNorm(F.gelu(p.transform.dense(x)))
        return x, h @ e.word_embeddings.weight.t() + p.bias


def bert_fixture():
    torch.manual_seed(5)
    cfg = dict(vocab=23, max_pos=12, types=2, dim=16, depth=2, heads=2, inter=24)
    model = BertForMlm(**cfg)
    lens = [7, 4, 6, 5]
    B, T = len(lens), max(lens)
    ids = torch.randint(0, cfg["vocab"], (B, T))
    types = torch.randint(0, 2, (B, T))
    mask = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), -100)
    for b, n in enumerate(lens):
        mask[b, :n] = 1
        ids[b, n:] = 0
        types[b, n:] = 0
        chosen = torch.randperm(n)[:3]
        targets[b, chosen] = torch.randint(0, cfg["vocab"], (3,))
    hidden, logits = model(ids, types, mask)
    loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    t = {"ids": ids.float(), "types": types.float(), "targets": targets.float(), "lens": torch.tensor(lens).float(),
         "hidden": hidden.detach(), "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        t[f"param.{name}"] = p.detach()
        t[f"grad.{name}"] = p.grad.clone()
    # The same loss plus DeCLUTR's contrastive term: NT-Xent between the mean-pooled last states
    # of rows i and B/2 + i (sentence-transformers' mean pooling over the attention mask).
    weight, tau = 0.5, 0.1
    model.zero_grad()
    hidden, logits = model(ids, types, mask)
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1)
    mlm = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1), ignore_index=-100)
    contrast = mlm + weight * nt_xent(pooled[: B // 2], pooled[B // 2 :], tau)
    contrast.backward()
    t["contrast_loss"] = contrast.detach().reshape(1)
    for name, p in model.named_parameters():
        t[f"cgrad.{name}"] = p.grad.clone()
    meta = {k: str(v) for k, v in cfg.items()}
    meta.update(contrast_weight=str(weight), contrast_tau=str(tau), torch=torch.__version__)
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "bert_tiny.safetensors"), meta)


def bart_fixture():
    torch.manual_seed(6)
    V, P, C, H, FF, LE, LD = 19, 12, 16, 2, 24, 2, 2
    shapes = {"embed_tokens.weight": (V, C), "embed_positions.weight": (P, C), "final_logits_bias": (V,)}
    ln = lambda n: {f"{n}.weight": (C,), f"{n}.bias": (C,)}
    lin = lambda n, o, i: {f"{n}.weight": (o, i), f"{n}.bias": (o,)}
    shapes.update(ln("encoder.layernorm_embedding"))
    shapes.update(ln("decoder.layernorm_embedding"))
    for i in range(LE):
        e = f"encoder.layers.{i}"
        shapes.update(lin(f"{e}.attention.qkv", 3 * C, C)); shapes.update(lin(f"{e}.attention.proj", C, C))
        shapes.update(ln(f"{e}.attention.output.LayerNorm")); shapes.update(lin(f"{e}.intermediate.dense", FF, C))
        shapes.update(lin(f"{e}.output.dense", C, FF)); shapes.update(ln(f"{e}.output.LayerNorm"))
    for i in range(LD):
        d = f"decoder.layers.{i}"
        shapes.update(lin(f"{d}.self_attn.qkv", 3 * C, C)); shapes.update(lin(f"{d}.self_attn.proj", C, C))
        shapes.update(ln(f"{d}.self_attn_layer_norm"))
        shapes.update(lin(f"{d}.cross_attn.q", C, C)); shapes.update(lin(f"{d}.cross_attn.kv", 2 * C, C))
        shapes.update(lin(f"{d}.cross_attn.proj", C, C)); shapes.update(ln(f"{d}.cross_attn_layer_norm"))
        shapes.update(lin(f"{d}.fc1", FF, C)); shapes.update(lin(f"{d}.fc2", C, FF)); shapes.update(ln(f"{d}.final_layer_norm"))
    P_ = {}
    for n, sh in shapes.items():
        if n.endswith("LayerNorm.weight") or n.endswith("norm.weight") or n.endswith("embedding.weight"):
            v = 1.0 + 0.1 * torch.randn(sh)
        else:
            v = (0.3 if len(sh) == 2 else 0.1) * torch.randn(sh)
        P_[n] = v.requires_grad_(True)
    lin_f = lambda n, x: F.linear(x, P_[f"{n}.weight"], P_[f"{n}.bias"])
    ln_f = lambda n, x: F.layer_norm(x, (C,), P_[f"{n}.weight"], P_[f"{n}.bias"], 1e-5)

    def heads(x):
        B, T, _ = x.shape
        return x.reshape(B, T, H, C // H).transpose(1, 2)

    def merge(y):
        B, _, T, _ = y.shape
        return y.transpose(1, 2).reshape(B, T, C)

    def self_attn(n, x, pad=None, causal=False):
        q, k, v = lin_f(f"{n}.qkv", x).chunk(3, dim=-1)
        mask = None
        if pad is not None:
            mask = ~pad[:, None, None, :]
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask, is_causal=causal)
        return lin_f(f"{n}.proj", merge(y))

    def cross(n, x, mem, pad):
        q = lin_f(f"{n}.q", x)
        k, v = lin_f(f"{n}.kv", mem).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=~pad[:, None, None, :])
        return lin_f(f"{n}.proj", merge(y))

    def embed(ids, norm):
        T = ids.shape[1]
        return ln_f(norm, F.embedding(ids, P_["embed_tokens.weight"]) + P_["embed_positions.weight"][:T])

    src_lens, tgt_lens = [7, 4, 6], [8, 5, 3]
    B, Ts, Tt = 3, max(src_lens), max(tgt_lens)
    src = torch.randint(0, V, (B, Ts))
    tgt = torch.randint(0, V, (B, Tt))
    targets = torch.randint(0, V, (B, Tt))
    src_pad = torch.zeros(B, Ts, dtype=torch.bool)
    for b in range(B):
        src_pad[b, src_lens[b]:] = True
        src[b, src_lens[b]:] = 0
        tgt[b, tgt_lens[b]:] = 0
        targets[b, tgt_lens[b]:] = -100
    x = embed(src, "encoder.layernorm_embedding")
    for i in range(LE):
        e = f"encoder.layers.{i}"
        x = ln_f(f"{e}.attention.output.LayerNorm", x + self_attn(f"{e}.attention", x, pad=src_pad))
        x = ln_f(f"{e}.output.LayerNorm", x + lin_f(f"{e}.output.dense", F.gelu(lin_f(f"{e}.intermediate.dense", x))))
    mem = x
    y = embed(tgt, "decoder.layernorm_embedding")
    for i in range(LD):
        d = f"decoder.layers.{i}"
        y = ln_f(f"{d}.self_attn_layer_norm", y + self_attn(f"{d}.self_attn", y, causal=True))
        y = ln_f(f"{d}.cross_attn_layer_norm", y + cross(f"{d}.cross_attn", y, mem, src_pad))
        y = ln_f(f"{d}.final_layer_norm", y + lin_f(f"{d}.fc2", F.gelu(lin_f(f"{d}.fc1", y))))
    logits = y.reshape(B * Tt, C) @ P_["embed_tokens.weight"].t() + P_["final_logits_bias"]
    loss = F.cross_entropy(logits, targets.reshape(-1), ignore_index=-100)
    loss.backward()
    t = {"src": src.float(), "tgt": tgt.float(), "targets": targets.float(), "src_lens": torch.tensor(src_lens).float(),
         "tgt_lens": torch.tensor(tgt_lens).float(), "loss": loss.detach().reshape(1)}
    for n, p in P_.items():
        t[f"param.{n}"] = p.detach()
        t[f"grad.{n}"] = p.grad
    meta = {"vocab": str(V), "max_pos": str(P), "dim": str(C), "heads": str(H), "ffn": str(FF),
            "encoder_depth": str(LE), "decoder_depth": str(LD), "torch": torch.__version__}
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "bart_tiny.safetensors"), meta)


if __name__ == "__main__":
    import sys
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float32)
    makers = {"vit": vit_fixture, "nt_xent": nt_xent_fixture, "ssl": ssl_losses_fixture, "gpt": gpt_fixture, "mae": mae_fixture, "resize": resize_fixture, "dino": dino_fixture, "sinkhorn": sinkhorn_fixture, "clip": clip_fixture, "bert": bert_fixture, "bart": bart_fixture}
    for name in sys.argv[1:] or makers:
        makers[name]()
    print("wrote", sorted(os.listdir(OUT)))
