#!/usr/bin/env python3
"""PyTorch's side of the kernel-by-kernel comparison in BENCHMARKS.md (run by hand, never by CI):
the char-GPT's kernels at its training shapes (4,096 tokens = batch 32 × ctx 128, width 128,
4 heads), on 2 threads, median of 30 calls. Our side is `cargo bench --bench ops -- 'cpu/(matmul/
(linear|dx|dw)|rows/(gelu|layer_norm 4096x128|layer_norm forward|add)|attention/causal)'`.

    torchenv/bin/python tools/gpt_kernels_torch.py
"""
import time

import torch
import torch.nn.functional as F


def median_ms(f, n=30):
    for _ in range(3):
        f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[n // 2] * 1e3


def main():
    torch.set_num_threads(2)
    tokens = 4096
    for i, o in [(128, 384), (128, 128), (128, 512), (512, 128)]:
        x, w, b, dy = torch.randn(tokens, i), torch.randn(o, i), torch.randn(o), torch.randn(tokens, o)
        fwd = median_ms(lambda: torch.addmm(b, x, w.t()))
        dx = median_ms(lambda: dy @ w)
        dw = median_ms(lambda: dy.t() @ x)
        print(f"linear {tokens}x{i}->{o}: forward {fwd:.3f} ms, dx {dx:.3f} ms, dw {dw:.3f} ms")

    # Backward passes take a dense gradient, as in training (`.sum().backward()` would hand
    # PyTorch an expanded one, which sends GELU's backward down a slow strided path).
    h = torch.randn(tokens, 512)
    hg, dh = h.clone().requires_grad_(True), torch.randn(tokens, 512)
    print(f"gelu {tokens}x512: forward {median_ms(lambda: F.gelu(h)):.3f} ms, "
          f"forward+backward {median_ms(lambda: F.gelu(hg).backward(dh)):.3f} ms")

    ln = torch.nn.LayerNorm(128)
    r = torch.randn(tokens, 128)
    rg, dr = r.clone().requires_grad_(True), torch.randn(tokens, 128)
    with torch.no_grad():
        ln_fwd = median_ms(lambda: ln(r))
    print(f"layer_norm {tokens}x128: forward {ln_fwd:.3f} ms, "
          f"forward+backward {median_ms(lambda: ln(rg).backward(dr)):.3f} ms")
    print(f"add {tokens}x128: {median_ms(lambda: r + r):.3f} ms")

    # Packed qkv as the GPT block holds it, split into heads, causal SDPA, heads merged back.
    B, T, H, D = 32, 128, 4, 32
    qkv = torch.randn(B, T, 3 * H * D)
    qkvg, dy = qkv.clone().requires_grad_(True), torch.randn(B, T, H * D)

    def attention(p):
        q, k, v = p.reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, H * D)

    with torch.no_grad():
        a_fwd = median_ms(lambda: attention(qkv))
    print(f"causal packed attention b{B} t{T} h{H} d{D}: forward {a_fwd:.3f} ms, "
          f"forward+backward {median_ms(lambda: attention(qkvg).backward(dy)):.3f} ms")


if __name__ == "__main__":
    main()
