#!/usr/bin/env python3
"""Baselines for the Fashion-MNIST test set in bits/dim, from the training set's
statistics: a uniform model, one intensity histogram over all pixels, and one
histogram per pixel position (each histogram with add-one smoothing).

    python3 scripts/baselines.py [DIR]    # DIR: /usr/share/datasets/fashion-mnist
"""
import gzip
import json
import sys

import numpy as np


def read_idx(path):
    data = gzip.open(path).read()
    return np.frombuffer(data[16:], np.uint8).reshape(-1, 28 * 28)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    train = read_idx(f"{root}/train-images-idx3-ubyte.gz")
    test = read_idx(f"{root}/t10k-images-idx3-ubyte.gz")

    # One histogram over every pixel of every training image.
    counts = np.bincount(train.ravel(), minlength=256) + 1.0
    one = counts / counts.sum()

    # One histogram per pixel position: [784, 256].
    per_pixel = np.stack([np.bincount(col, minlength=256) for col in train.T]) + 1.0
    per_pixel /= per_pixel.sum(axis=1, keepdims=True)
    positions = np.arange(train.shape[1])[None, :]

    print(json.dumps({
        "uniform": 8.0,
        "one_histogram": round(float(-np.log2(one[test]).mean()), 4),
        "histogram_per_pixel": round(float(-np.log2(per_pixel[positions, test]).mean()), 4),
    }))


if __name__ == "__main__":
    main()
