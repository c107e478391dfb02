#!/usr/bin/env python3
"""Evaluates a pixelrnn PixelCNN checkpoint with numpy alone, as docs/checkpoint.md
describes, and prints the mean NLL in bits/dim (and, with --per-pixel, writes the same
[N, C, H, W] array of -log2 p as `pixelrnn eval --per-pixel`).

    python3 scripts/reference_eval.py runs/main/last.safetensors \
        /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --limit 100
"""
import argparse
import gzip
import json
import struct

import numpy as np


def load_safetensors(path):
    """Returns (metadata, {name: float32 array}) without the safetensors package."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", name
        begin, end = t["data_offsets"]
        raw = data[8 + n + begin : 8 + n + end]
        tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(t["shape"])
    return meta, tensors


def conv(x, tensors, name):
    """Same-padded stride-1 cross-correlation: x [N, C_in, H, W] -> [N, C_out, H, W].
    The stored weights are already masked, so no mask is applied here."""
    w, b = tensors[name + ".weight"], tensors[name + ".bias"]
    k = w.shape[-1]
    r = k // 2
    _, _, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    y = np.broadcast_to(b[None, :, None, None], (x.shape[0], w.shape[0], h, wd)).copy()
    for ky in range(k):
        for kx in range(k):
            tap = w[:, :, ky, kx]
            if tap.any():
                y += np.einsum("oi,nihw->nohw", tap, padded[:, :, ky : ky + h, kx : kx + wd])
    return y


def relu(x):
    return np.maximum(x, 0)


def nll_bits(meta, tensors, images):
    """-log2 p of every sub-pixel of images [N, C, H, W] (uint8): [N, C, H, W]."""
    c = int(meta["channels"])
    x = images.astype(np.float32) / 127.5 - 1.0
    h = conv(x, tensors, "input")
    for l in range(int(meta["layers"])):
        r = relu(conv(relu(h), tensors, f"block{l}.conv1"))
        r = relu(conv(r, tensors, f"block{l}.conv2"))
        h = h + conv(r, tensors, f"block{l}.conv3")
    logits = conv(relu(conv(relu(h), tensors, "output.conv1")), tensors, "output.conv2")

    # Output channels c*256 .. c*256+255 are the logits of colour c.
    n, _, s, _ = images.shape
    logits = logits.reshape(n, c, 256, s, s).astype(np.float64)
    top = logits.max(axis=2, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=2)) + top[:, :, 0]
    picked = np.take_along_axis(logits, images[:, :, None].astype(np.int64), axis=2)[:, :, 0]
    return ((log_z - picked) / np.log(2)).astype(np.float32)


def read_idx(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    n, rows, cols = struct.unpack(">III", data[4:16])
    return np.frombuffer(data[16:], np.uint8).reshape(n, 1, rows, cols)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("idx", help="an IDX image file, e.g. t10k-images-idx3-ubyte.gz")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--per-pixel", help="write -log2 p as float32 [N, C, H, W] .npy")
    a = p.parse_args()
    meta, tensors = load_safetensors(a.checkpoint)
    images = read_idx(a.idx)[: a.limit]
    bits = np.concatenate([nll_bits(meta, tensors, images[i : i + 50]) for i in range(0, len(images), 50)])
    if a.per_pixel:
        np.save(a.per_pixel, bits)
    print(json.dumps({"bits_per_dim": float(bits.mean()), "images": len(images)}))


if __name__ == "__main__":
    main()
