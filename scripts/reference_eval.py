#!/usr/bin/env python3
"""Evaluates a pixelrnn checkpoint (PixelCNN, Row LSTM, Diagonal BiLSTM or
Multi-Scale PixelRNN) with numpy alone, as docs/checkpoint.md describes, and prints
the mean NLL in bits/dim (and, with --per-pixel, writes the same [N, C, H, W] array of
-log2 p as `pixelrnn eval --per-pixel`). For a multi-scale checkpoint that is the
second stage's NLL given the true small image; the first stage's and both stages'
are printed too.

    python3 scripts/reference_eval.py runs/main/pixelcnn/last.safetensors \
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


def deconv(x, tensors, name, stride=2, pad=1):
    """Transposed convolution: x [N, C_in, s, s] -> [N, C_out, (s - 1) stride - 2 pad + k]
    with weights [k, k, C_in, C_out]: input pixel (iy, ix) adds w[ky, kx] x to output
    (iy stride + ky - pad, ix stride + kx - pad)."""
    w, b = tensors[name + ".weight"], tensors[name + ".bias"]
    k = w.shape[0]
    n, _, s, _ = x.shape
    full = (s - 1) * stride + k
    y = np.zeros((n, w.shape[3], full, full), np.float32)
    for ky in range(k):
        for kx in range(k):
            y[:, :, ky : ky + stride * s : stride, kx : kx + stride * s : stride] += np.einsum(
                "io,nihw->nohw", w[ky, kx], x
            )
    m = full - 2 * pad
    return y[:, :, pad : pad + m, pad : pad + m] + b[None, :, None, None]


def conditioning(meta, tensors, images):
    """A conditional model's upsampled maps [N, h, H, W] of the images' subsampled
    small images (every (H / s)-th pixel from the top left), or None."""
    if "small" not in meta:
        return None
    f = images.shape[2] // int(meta["small"])
    u = images[:, :, ::f, ::f].astype(np.float32) / 127.5 - 1.0
    j = 0
    while f"upsample{j}.weight" in tensors:
        u = relu(deconv(u, tensors, f"upsample{j}"))
        j += 1
    return u


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_scan(z, ss, init, t0):
    """The LSTM over steps: z [N, S, L, 4n] pre-activations (gate 4k + q of state k),
    ss [T, n, 4n] state-to-state weights reading positions l + t + t0 of the previous
    step, init [2, n] = (h_0, c_0). Returns the states h [N, S, L, n]."""
    images, steps, length, _ = z.shape
    n = ss.shape[1]
    h_prev = np.broadcast_to(init[0], (images, length, n))
    c_prev = np.broadcast_to(init[1], (images, length, n))
    out = np.zeros((images, steps, length, n), np.float32)
    for s in range(steps):
        zs = z[:, s].copy()
        for t in range(ss.shape[0]):
            d = t + t0
            tapped = np.zeros_like(h_prev)  # tapped[:, l] = h_prev[:, l + d], zero outside
            if d >= 0:
                tapped[:, : length - d] = h_prev[:, d:]
            else:
                tapped[:, -d:] = h_prev[:, : length + d]
            zs += tapped @ ss[t]
        zs = zs.reshape(images, length, n, 4)
        i, f, o = sigmoid(zs[..., 0]), sigmoid(zs[..., 1]), sigmoid(zs[..., 2])
        c = f * c_prev + i * np.tanh(zs[..., 3])
        h_prev, c_prev = o * np.tanh(c), c
        out[:, s] = h_prev
    return out


def input_to_state(h, tensors, name, u):
    """K^is of direction `name` over h, plus the conditioning term when u is given."""
    z = conv(h, tensors, name + ".is")
    return z if u is None else z + conv(u, tensors, name + ".cond")


def row_lstm(h, tensors, name, u):
    """States [N, n, H, W] of a Row LSTM layer over the residual stream h."""
    z = input_to_state(h, tensors, name, u).transpose(0, 2, 3, 1)  # rows are the steps
    states = lstm_scan(z, tensors[name + ".ss.weight"], tensors[name + ".init"], -1)
    return states.transpose(0, 3, 1, 2)


def diagonal_lstm(h, tensors, name, mirror, u):
    """States [N, n, H, W] of one direction of a Diagonal BiLSTM layer."""
    z = input_to_state(h, tensors, name, u).transpose(0, 2, 3, 1)  # [N, H, W, 4n]
    if mirror:
        z = z[:, :, ::-1]
    images, rows, cols, gates = z.shape
    skewed = np.zeros((images, rows + cols - 1, rows, gates), np.float32)
    for i in range(rows):
        skewed[:, i : i + cols, i] = z[:, i]
    states = lstm_scan(skewed, tensors[name + ".ss.weight"], tensors[name + ".init"], -1)
    image = np.stack([states[:, i : i + cols, i] for i in range(rows)], axis=1)
    if mirror:
        image = image[:, :, ::-1]
    return image.transpose(0, 3, 1, 2)


def nll_bits(meta, tensors, images):
    """-log2 p of every sub-pixel of images [N, C, H, W] (uint8): [N, C, H, W]."""
    c = int(meta["channels"])
    model = meta["model"]
    x = images.astype(np.float32) / 127.5 - 1.0
    u = conditioning(meta, tensors, images)
    h = conv(x, tensors, "input")
    for l in range(int(meta["layers"])):
        if model == "pixelcnn":
            r = conv(relu(h), tensors, f"block{l}.conv1")
            if u is not None:
                r = r + conv(u, tensors, f"block{l}.cond")
            r = relu(conv(relu(r), tensors, f"block{l}.conv2"))
            h = h + conv(r, tensors, f"block{l}.conv3")
            continue
        if model == "row-lstm":
            states = row_lstm(h, tensors, f"layer{l}", u)
        else:
            lr = diagonal_lstm(h, tensors, f"layer{l}.lr", False, u)
            rl = diagonal_lstm(h, tensors, f"layer{l}.rl", True, u)
            # The right-to-left states move down one row before they are added.
            down = np.zeros_like(rl)
            down[:, :, 1:] = rl[:, :, :-1]
            states = lr + down
        h = h + conv(states, tensors, f"layer{l}.out")
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
    def evaluate(meta, tensors, images):
        return np.concatenate(
            [nll_bits(meta, tensors, images[i : i + 50]) for i in range(0, len(images), 50)]
        )

    bits = evaluate(meta, tensors, images)
    if a.per_pixel:
        np.save(a.per_pixel, bits)
    out = {"bits_per_dim": float(bits.mean()), "images": len(images)}
    if "stage1.model" in meta:
        # The first stage, under the stage1. prefix, on the subsampled images.
        strip = lambda d: {k[len("stage1.") :]: v for k, v in d.items() if k.startswith("stage1.")}
        f = images.shape[2] // int(meta["small"])
        small = evaluate(strip(meta), strip(tensors), images[:, :, ::f, ::f])
        out["small_bits_per_dim"] = float(small.mean())
        out["two_stage_bits_per_dim"] = float((bits.sum() + small.sum()) / bits.size)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
