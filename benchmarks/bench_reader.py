"""Accuracy of the Shapes attribute reader (sdlearn.evaluate) on renders it never saw, clean and
degraded the way generated images are; appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/bench_reader.py [--n 2000]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sdlearn import data, evaluate
from sdlearn.train.reader import _gaussian_blur, augment, render_batch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def held_out_batch(n: int, seed: int) -> tuple[torch.Tensor, list[data.Attributes]]:
    """Renders of the HELD_OUT (shape, colour) pairs only, random size and position."""
    g = torch.Generator().manual_seed(seed)
    attrs, imgs = [], []
    for i in range(n):
        shape, color = data.HELD_OUT[i % len(data.HELD_OUT)]
        a = data.Attributes(shape, color, data.SIZES[int(torch.randint(2, (1,), generator=g))],
                            data.POSITIONS[int(torch.randint(9, (1,), generator=g))])
        attrs.append(a)
        imgs.append(data.to_tensor(data.render(a.shape, a.color, a.size, a.position, seed=seed + i)))
    return torch.stack(imgs), attrs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000, help="renders per condition")
    args = p.parse_args()
    x, attrs = render_batch(args.n, seed=2024)   # neither the training pool (0) nor its validation (10000)
    g = torch.Generator().manual_seed(0)
    down16 = F.interpolate(F.interpolate(x, size=16, mode="bilinear", antialias=True), size=64, mode="bilinear")
    conditions = {
        "clean renders": (x, attrs),
        "held-out (shape, colour) pairs": held_out_batch(args.n // 2, seed=99),
        "Gaussian blur sigma=1.0": (_gaussian_blur(x, torch.full((len(x),), 1.0)), attrs),
        "down to 16x16 and back (f=4 blur)": (down16.clamp(-1, 1), attrs),
        "noise std 0.1 (of range 2)": ((x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1), attrs),
        "training augmentations": (augment(x, g), attrs),
        "training augmentations x1.5": (augment(x, g, 1.5), attrs),
    }
    rows = []
    for name, (imgs, a) in conditions.items():
        t0 = time.perf_counter()
        acc = evaluate.attribute_accuracy(imgs, a)
        ms = 1000 * (time.perf_counter() - t0) / len(a)
        rows.append((name, len(a), acc, ms))
        print(f"{name:38s} n={len(a):5d} " + " ".join(f"{k} {v:.4f}" for k, v in acc.items()) + f"  {ms:.2f} ms/img")
    lines = [f"\n## Attribute reader ({datetime.date.today()})\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs, so timings are rough), "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads. `python benchmarks/bench_reader.py --n {args.n}`.\n",
             "| condition | n | shape | colour | size | position | all four | ms/image |",
             "|---|---|---|---|---|---|---|---|"]
    for name, n, acc, ms in rows:
        lines.append(f"| {name} | {n} | " + " | ".join(f"{100 * acc[k]:.1f}%" for k in
                                                     ("shape", "color", "size", "position", "all")) + f" | {ms:.2f} |")
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
