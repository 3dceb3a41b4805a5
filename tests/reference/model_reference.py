#!/usr/bin/env python3
"""Independent PyTorch reference for loom's decoder.

Builds the same LLaMA-style model in plain PyTorch (fp32, CPU) from weights that loom wrote as
safetensors, runs the same packed batch, and writes the loss, every parameter gradient and a
10-step AdamW loss trajectory to reference.safetensors in the same folder.

Inputs in --dir: config.json, weights.safetensors (Hugging Face LLaMA names), batch.safetensors
(I32 tokens, targets, doc, pos; target -1 means none). Attention is written densely with an
explicit mask (same document, key position <= query position), independently of loom's blockwise
kernel.

With --checkpoint DIR --batch FILE it instead loads a loom checkpoint the way a PyTorch user would
(the Hugging Face config.json and model.safetensors) and prints {"loss_sum": ..., "targets": ...}
for the batch as one JSON line.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = arr.copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.tobytes()
        header[name] = {"dtype": NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    # x: [T, H, D]; Hugging Face LLaMA rotate-half convention.
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = pos.to(torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos = emb.cos().to(torch.float32)[:, None, :]
    sin = emb.sin().to(torch.float32)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def forward(p, cfg, batch):
    tok, tgt, doc, pos = batch
    C, H, KV = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    D = C // H
    T = tok.shape[0]
    eps = cfg["norm_eps"]
    mask = (doc[:, None] == doc[None, :]) & (pos[None, :] <= pos[:, None])
    x = p["model.embed_tokens.weight"][tok]
    for l in range(cfg["n_layers"]):
        pre = f"model.layers.{l}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).view(T, H, D)
        k = (h @ p[pre + "self_attn.k_proj.weight"].T).view(T, KV, D)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(T, KV, D)
        q, k = rope(q, pos, cfg["rope_theta"]), rope(k, pos, cfg["rope_theta"])
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
        s = s.masked_fill(~mask[None], float("-inf"))
        a = torch.einsum("hts,shd->thd", torch.softmax(s, dim=-1), v).reshape(T, H * D)
        x = x + a @ p[pre + "self_attn.o_proj.weight"].T
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        g = h @ p[pre + "mlp.gate_proj.weight"].T
        u = h @ p[pre + "mlp.up_proj.weight"].T
        x = x + (F.silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tied_embeddings"] else p["lm_head.weight"]
    logits = x @ head.T
    return F.cross_entropy(logits, tgt, ignore_index=-1, reduction="sum")


def checkpoint_loss(ckpt_dir, batch_path):
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        hf = json.load(f)
    cfg = {"d_model": hf["hidden_size"], "n_heads": hf["num_attention_heads"],
           "n_kv_heads": hf["num_key_value_heads"], "n_layers": hf["num_hidden_layers"],
           "norm_eps": hf["rms_norm_eps"], "rope_theta": hf["rope_theta"],
           "tied_embeddings": hf["tie_word_embeddings"]}
    weights = read_safetensors(os.path.join(ckpt_dir, "model.safetensors"))
    params = {k: torch.from_numpy(v) for k, v in weights.items()}
    b = read_safetensors(batch_path)
    batch = tuple(torch.from_numpy(b[k].astype(np.int64)) for k in ("tokens", "targets", "doc", "pos"))
    with torch.no_grad():
        loss_sum = forward(params, cfg, batch).item()
    print(json.dumps({"loss_sum": loss_sum, "targets": int((batch[1] != -1).sum())}))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir")
    ap.add_argument("--checkpoint")
    ap.add_argument("--batch")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.checkpoint:
        return checkpoint_loss(args.checkpoint, args.batch)
    if not args.dir:
        ap.error("--dir or --checkpoint is required")
    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    weights = read_safetensors(os.path.join(args.dir, "weights.safetensors"))
    b = read_safetensors(os.path.join(args.dir, "batch.safetensors"))
    batch = tuple(torch.from_numpy(b[k].astype(np.int64)) for k in ("tokens", "targets", "doc", "pos"))
    n_targets = int((batch[1] != -1).sum())
    scale = 1.0 / n_targets if n_targets > 0 else 0.0

    params = {k: torch.nn.Parameter(torch.from_numpy(v)) for k, v in weights.items()}
    loss_sum = forward(params, cfg, batch)
    (loss_sum * scale).backward()
    out = {"loss_sum": np.array([loss_sum.item()], dtype=np.float64)}
    for k, prm in params.items():
        out["grad." + k] = prm.grad.detach().numpy().astype(np.float32)

    # A short training run: AdamW (matrices decayed, norm gains not), global-norm clipping.
    opt_cfg = cfg["adamw"]
    params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in weights.items()}
    decay = [prm for prm in params.values() if prm.dim() >= 2]
    no_decay = [prm for prm in params.values() if prm.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt_cfg["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"])
    trajectory = []
    for _ in range(opt_cfg["steps"]):
        opt.zero_grad(set_to_none=False)
        loss_sum = forward(params, cfg, batch)
        (loss_sum * scale).backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), opt_cfg["clip"])
        opt.step()
        trajectory.append(loss_sum.item())
    out["trajectory"] = np.array(trajectory, dtype=np.float64)
    write_safetensors(os.path.join(args.dir, "reference.safetensors"), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
