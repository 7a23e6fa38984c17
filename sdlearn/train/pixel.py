"""Train notebook 02's pixel-space diffusion model on Shapes (32x32, unconditional).

    python -m sdlearn train pixel --seed 0            # writes sdlearn/assets/pixel_shapes/

It learns L_simple = || eps - eps_theta(x_t, t) ||^2 (Ho et al. 2020, Eq. 14) with the DDPM
paper's linear schedule, and keeps an exponential moving average of the weights (their Sec. 4),
which is what gets saved. The network is ``sdlearn.toys.PixelUNet``: a plain convolutional UNet of
resnet blocks told a sinusoidal time embedding (Vaswani et al. 2017, Sec. 3.5), two downsamplings,
skip connections.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sdlearn.data import ShapesDataset
from sdlearn.device import get_device, randn, seed_everything
from sdlearn.schedules import alpha_bar, make_betas, q_sample
from sdlearn.toys import PIXEL_MODEL_DIR, PixelUNet

SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=True, prediction_type="epsilon")


def shapes_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n Shapes images, downsampled to size x size: (n, 3, size, size) in [-1, 1]."""
    data = ShapesDataset(n, seed=seed)
    x = torch.stack([data[i][0] for i in range(n)])  # (n, 3, 64, 64)
    return F.interpolate(x, size=(size, size), mode="area") if size != x.shape[-1] else x


def train_step(model: nn.Module, x0: torch.Tensor, alpha_bar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One L_simple loss: random t, random eps, MSE between eps and the model's guess (Eq. 14)."""
    t = torch.randint(0, len(alpha_bar), (x0.shape[0],), generator=generator).to(x0.device)
    eps = randn(x0.shape, generator, x0.device)
    return F.mse_loss(model(q_sample(x0, t, eps, alpha_bar.to(x0.device)), t), eps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sdlearn train pixel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--images", type=int, default=6000, help="size of the (pre-rendered) training set")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=PIXEL_MODEL_DIR)
    args = ap.parse_args(argv)

    from sdlearn.weights import save_file  # sdlearn's one safetensors writer

    g = seed_everything(args.seed)
    device = get_device(args.device)
    data = shapes_images(args.images, args.size, seed=args.seed).to(device)
    ab = alpha_bar(make_betas(**{k: SCHEDULER_CONFIG[k] for k in ("beta_schedule", "num_train_timesteps",
                                                                  "beta_start", "beta_end")}))
    model = PixelUNet().to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    print(f"PixelUNet: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{len(data)} images {args.size}x{args.size}, {args.steps} steps on {device}")
    start, running = time.time(), None
    for step in (bar := tqdm(range(args.steps))):
        idx = torch.randint(0, len(data), (args.batch_size,), generator=g)
        x0 = data[idx.to(device)]
        x0 = torch.where(torch.rand(len(x0), 1, 1, 1, generator=g).to(device) < 0.5, x0, x0.flip(-1))  # mirror
        loss = train_step(model, x0, ab, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - args.ema)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, args.out / "model.safetensors")
    info = {**ema.config, "image_size": args.size, "scheduler": SCHEDULER_CONFIG, "seed": args.seed,
            "steps": args.steps, "batch_size": args.batch_size, "final_loss": round(running, 4),
            "train_seconds": round(time.time() - start), "device": str(device)}
    (args.out / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"saved {args.out} (loss {running:.4f}, {time.time() - start:.0f} s)")
