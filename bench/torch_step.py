#!/usr/bin/env python3
"""The PyTorch peer of loom's `step` benchmark: the same model (d_model 512, 8 layers, 8 heads,
ffn 1376, vocab 257), the same packed batch lengths, AdamW and clipping, on CPU with the same
thread count. Attention runs per document with scaled_dot_product_attention(is_causal=True), the
usual way to train packed variable-length documents in PyTorch on a CPU.

Prints one JSON line: {"step_s": median seconds, "loss": ...}.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def rms_norm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Model(torch.nn.Module):
    def __init__(self, vocab=257, d=512, layers=8, heads=8, ffn=1376):
        super().__init__()
        self.heads, self.d = heads, d
        init = lambda *shape: torch.nn.Parameter(torch.randn(*shape) * 0.02)
        self.embed = init(vocab, d)
        self.layers = torch.nn.ModuleList()
        for _ in range(layers):
            layer = torch.nn.Module()
            layer.n1 = torch.nn.Parameter(torch.ones(d))
            layer.wq, layer.wk, layer.wv, layer.wo = init(d, d), init(d, d), init(d, d), init(d, d)
            layer.n2 = torch.nn.Parameter(torch.ones(d))
            layer.wg, layer.wu, layer.wd = init(ffn, d), init(ffn, d), init(d, ffn)
            self.layers.append(layer)
        self.norm = torch.nn.Parameter(torch.ones(d))
        self.head = init(vocab, d)

    def forward(self, tokens, targets, lengths, cos, sin):
        T, H, D = tokens.shape[0], self.heads, self.d // self.heads
        x = self.embed[tokens]

        def rope(t):
            t1, t2 = t[..., : D // 2], t[..., D // 2:]
            return t * cos + torch.cat([-t2, t1], dim=-1) * sin

        for l in self.layers:
            h = rms_norm(x, l.n1)
            q = rope((h @ l.wq.T).view(T, H, D))
            k = rope((h @ l.wk.T).view(T, H, D))
            v = (h @ l.wv.T).view(T, H, D)
            outs, start = [], 0
            for n in lengths:
                sl = slice(start, start + n)
                o = F.scaled_dot_product_attention(q[sl].transpose(0, 1), k[sl].transpose(0, 1),
                                                   v[sl].transpose(0, 1), is_causal=True)
                outs.append(o.transpose(0, 1).reshape(n, H * D))
                start += n
            x = x + torch.cat(outs) @ l.wo.T
            h = rms_norm(x, l.n2)
            x = x + (F.silu(h @ l.wg.T) * (h @ l.wu.T)) @ l.wd.T
        logits = rms_norm(x, self.norm) @ self.head.T
        return F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = [512, 256, 128, 64, 64] if args.quick else [2048, 1024, 512, 256, 128, 64, 64]
    T = sum(lengths)
    tokens = torch.randint(0, 257, (T,))
    targets, pos, start = tokens.clone(), [], 0
    for n in lengths:
        targets[start:start + n - 1] = tokens[start + 1:start + n]
        targets[start + n - 1] = -1
        pos += list(range(n))
        start += n
    D = 64
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    f = torch.tensor(pos, dtype=torch.float64)[:, None] * inv[None]
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos().float()[:, None, :], emb.sin().float()[:, None, :]
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    n_targets = int((targets != -1).sum())

    def step():
        opt.zero_grad(set_to_none=False)
        loss = model(tokens, targets, lengths, cos, sin)
        (loss / n_targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    step()
    times, loss = [], 0.0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": statistics.median(times), "loss": loss,
                      "torch_version": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
