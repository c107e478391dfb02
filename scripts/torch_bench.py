#!/usr/bin/env python3
"""The PixelCNN training step of `pixelrnn bench` in PyTorch on the CPU: the same
layers, masks, loss and RMSProp update on a batch of 28x28 grey images. Prints the
median seconds per step; `pixelrnn bench --vs-torch` runs it beside its own step."""
import argparse
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("PyTorch is not installed (pip install torch)")


def mask(out_ch, in_ch, k, kind, groups=1):
    """The raster-order mask of docs/checkpoint.md, [C_out, C_in, k, k]."""
    m = torch.zeros(out_ch, in_ch, k, k)
    r = k // 2
    m[:, :, :r, :] = 1
    m[:, :, r, :r] = 1
    go = torch.arange(out_ch)[:, None] * groups // out_ch
    gi = torch.arange(in_ch)[None, :] * groups // in_ch
    m[:, :, r, r] = ((gi < go) | ((gi == go) & (kind == "B"))).float()
    return m


class MaskedConv(torch.nn.Module):
    def __init__(self, in_ch, out_ch, k, kind):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_ch, out_ch, k, padding=k // 2)
        self.register_buffer("mask", mask(out_ch, in_ch, k, kind))

    def forward(self, x):
        return F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=self.conv.padding)


class PixelCnn(torch.nn.Module):
    def __init__(self, layers, h, out_hidden):
        super().__init__()
        self.input = MaskedConv(1, 2 * h, 7, "A")
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleList(
                [MaskedConv(2 * h, h, 1, "B"), MaskedConv(h, h, 3, "B"), MaskedConv(h, 2 * h, 1, "B")]
            )
            for _ in range(layers)
        )
        self.out1 = MaskedConv(2 * h, out_hidden, 1, "B")
        self.out2 = MaskedConv(out_hidden, 256, 1, "B")

    def forward(self, x):
        h = self.input(x)
        for c1, c2, c3 in self.blocks:
            h = h + c3(F.relu(c2(F.relu(c1(F.relu(h))))))
        return self.out2(F.relu(self.out1(F.relu(h))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--out-hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()

    torch.manual_seed(0)
    model = PixelCnn(a.layers, a.hidden, a.out_hidden)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.95, eps=1e-6)
    v = torch.randint(0, 256, (a.batch, 1, 28, 28))
    x = v.float() / 127.5 - 1

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), v[:, 0])
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(statistics.median(times))


if __name__ == "__main__":
    main()
