"""A small pixel-space diffusion model on Shapes (32x32, unconditional), for notebook 02.

    python -m sdlearn train pixel --seed 0            # writes sdlearn/assets/pixel_shapes/

It learns L_simple = || eps - eps_theta(x_t, t) ||^2 (Ho et al. 2020, Eq. 14) with the DDPM
paper's linear schedule, and keeps an exponential moving average of the weights (their Sec. 4),
which is what gets saved. The network is a plain convolutional UNet: residual blocks that add a
sinusoidal time embedding (Vaswani et al. 2017, Sec. 3.5), two downsamplings, skip connections.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sdlearn.data import ShapesDataset
from sdlearn.device import get_device, seed_everything
from sdlearn.schedules import alpha_bar, make_betas, q_sample

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "pixel_shapes"
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=True, prediction_type="epsilon")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the timestep: (B,) -> (B, dim), frequencies from 1 to 1/10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)  # (half,)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, plus the time embedding as a per-channel shift, twice; residual."""

    def __init__(self, c_in: int, c_out: int, t_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_in, H, W) -> (B, c_out, H, W)
        h = h + self.time(temb)[:, :, None, None]  # (B, c_out) -> (B, c_out, 1, 1), broadcast
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class PixelUNet(nn.Module):
    """eps_theta(x_t, t) for 3-channel images whose side is a multiple of 4."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), t_dim: int = 128) -> None:
        super().__init__()
        self.config = {"channels": list(channels), "t_dim": t_dim}
        self.t_dim = t_dim
        self.time_mlp = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        c = channels[0]
        for c_out in channels:
            self.down.append(ResBlock(c, c_out, t_dim))
            c = c_out
        self.mid = ResBlock(c, c, t_dim)
        self.up = nn.ModuleList()
        for c_skip in reversed(channels):
            self.up.append(ResBlock(c + c_skip, c_skip, t_dim))
            c = c_skip
        self.norm_out, self.conv_out = nn.GroupNorm(8, c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])  # (B,)
        temb = self.time_mlp(timestep_embedding(t, self.t_dim))  # (B, t_dim)
        h = self.conv_in(x)  # (B, 3, H, W) -> (B, c0, H, W)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)  # (B, c, H, W) -> (B, c, H/2, W/2)
        h = self.mid(h, temb)
        for i, block in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, c, H, W) -> (B, c, 2H, 2W)
            h = block(torch.cat([h, skips.pop()], dim=1), temb)  # concat the skip along channels
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, c0, H, W) -> (B, 3, H, W)


def shapes_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n Shapes images, downsampled to size x size: (n, 3, size, size) in [-1, 1]."""
    data = ShapesDataset(n, seed=seed)
    x = torch.stack([data[i][0] for i in range(n)])  # (n, 3, 64, 64)
    return F.interpolate(x, size=(size, size), mode="area") if size != x.shape[-1] else x


def train_step(model: nn.Module, x0: torch.Tensor, alpha_bar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One L_simple loss: random t, random eps, MSE between eps and the model's guess (Eq. 14)."""
    t = torch.randint(0, len(alpha_bar), (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    t, eps = t.to(x0.device), eps.to(x0.device)
    return F.mse_loss(model(q_sample(x0, t, eps, alpha_bar.to(x0.device)), t), eps)


def load_pixel_model(path: str | Path = ASSET_DIR) -> PixelUNet:
    """The bundled model (EMA weights), in eval mode on the CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    model = PixelUNet(tuple(config["channels"]), config["t_dim"])
    model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
    return model.eval()


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
    ap.add_argument("--out", type=Path, default=ASSET_DIR)
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
