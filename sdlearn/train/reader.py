"""Train the shape classifier of the Shapes attribute reader (``sdlearn.evaluate``).

    python -m sdlearn train reader --seed 0    # 200 steps: 6.8 min on 2 CPU cores shared with other jobs

It learns from renders made robust to what generated images look like: blur (Gaussian, and a 2x
down-up resampling as a VAE's bottleneck blurs), noise, colour and background shifts, smooth
background blotches, slight scale and rotation. Writes ``shape_classifier.safetensors`` and
``config.json`` to ``sdlearn/assets/reader/`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdlearn import data, evaluate
from sdlearn.device import seed_everything


def render_batch(n: int, seed: int, holdout: bool = False) -> tuple[torch.Tensor, list[data.Attributes]]:
    """``n`` jittered renders (n, 3, 64, 64) in [-1, 1] with their attributes; all combinations
    by default (the reader must also read the held-out ones)."""
    rng = np.random.default_rng(seed)
    attrs = [data.random_attributes(rng, holdout=holdout) for _ in range(n)]
    x = torch.stack([data.to_tensor(data.render(a.shape, a.color, a.size, a.position,
                                                seed=int(rng.integers(2**31)))) for a in attrs])
    return x, attrs


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image (B, C, H, W) with its own Gaussian ``sigma`` (B,) in pixels."""
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))   # (B, 7)
    k = k / k.sum(dim=1, keepdim=True)
    B, C, H, W = x.shape
    y = x.reshape(1, B * C, H, W)
    kx = k.repeat_interleave(C, 0)[:, None, None, :]                           # (B*C, 1, 1, 7)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), kx, groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), kx.transpose(2, 3), groups=B * C)
    return y.reshape(B, C, H, W)


def augment(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Degrade renders (B, 3, 64, 64) in [-1, 1] like generated images; ``strength`` scales it."""
    B = x.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, *shape, generator=g)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(B, generator=g) < p).float()

    s = strength
    x = torch.lerp(x, _gaussian_blur(x, u(0.3, 1.4 * s + 0.3)), coin(0.6)[:, None, None, None])
    down = F.interpolate(F.interpolate(x, size=32, mode="bilinear", antialias=True, align_corners=False),
                         size=64, mode="bilinear", align_corners=False)
    x = torch.lerp(x, down, coin(0.2 * s)[:, None, None, None])
    x = x * u(1 - 0.12 * s, 1 + 0.12 * s, 3, 1, 1) + u(-0.12 * s, 0.12 * s, 3, 1, 1)  # colour shift
    blotch = F.interpolate(torch.randn(B, 3, 4, 4, generator=g), size=64, mode="bicubic", align_corners=False)
    x = x + blotch * u(0, 0.06 * s, 1, 1, 1) * coin(0.5)[:, None, None, None]
    x = x + torch.randn(x.shape, generator=g) * u(0, 0.08 * s, 1, 1, 1) * coin(0.5)[:, None, None, None]
    return x.clamp(-1, 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sdlearn train reader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200, help="optimisation steps (default 200)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--pool", type=int, default=6000, help="renders to draw batches from")
    p.add_argument("--width", type=int, default=32, help="CNN channels (default 32)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", type=Path, default=evaluate.READER_DIR)
    args = p.parse_args(argv)

    g = seed_everything(args.seed)
    t0 = time.time()
    pool, pool_attrs = render_batch(args.pool, seed=args.seed)
    labels = torch.tensor([data.SHAPES.index(a.shape) for a in pool_attrs])
    val_x, val_attrs = render_batch(1000, seed=args.seed + 10_000)
    val_y = torch.tensor([data.SHAPES.index(a.shape) for a in val_attrs])
    model = evaluate.ShapeClassifier(width=args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)

    def crops(x: torch.Tensor, train: bool) -> torch.Tensor:
        alpha, _, _ = evaluate.foreground(x)
        center, radius = evaluate.centroid_and_radius(alpha)
        if not train:
            return evaluate.shape_crops(alpha, center, radius)
        B = x.shape[0]
        scale = 1 + 0.1 * (2 * torch.rand(B, generator=g) - 1)
        angle = math.radians(10) * (2 * torch.rand(B, generator=g) - 1)
        shift = 0.6 * torch.randn(B, 2, generator=g)
        return evaluate.shape_crops(alpha, center + shift, radius, scale, angle)

    bar = tqdm(range(args.steps), desc="reader")
    for step in bar:
        idx = torch.randint(len(pool), (args.batch_size,), generator=g)
        x = augment(pool[idx], g)
        loss = F.cross_entropy(model(crops(x, train=True)), labels[idx], label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        clean = (model(crops(val_x, False)).argmax(1) == val_y).float().mean().item()
        noisy = (model(crops(augment(val_x, g), False)).argmax(1) == val_y).float().mean().item()
    print(f"shape accuracy on 1000 held-out renders: clean {clean:.4f}, augmented {noisy:.4f} "
          f"({time.time() - t0:.0f} s)")

    from sdlearn.weights import save_file  # sdlearn's one safetensors writer

    args.out.mkdir(parents=True, exist_ok=True)
    save_file(model, args.out / "shape_classifier.safetensors")
    (args.out / "config.json").write_text(json.dumps(
        {"width": args.width, "shapes": list(data.SHAPES), "crop": evaluate.CROP, "seed": args.seed,
         "steps": args.steps, "val_accuracy_clean": round(clean, 4), "val_accuracy_augmented": round(noisy, 4)},
        indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
