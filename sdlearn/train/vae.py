"""Train the Shapes VAE: ``python -m sdlearn train vae --seed 0 [--steps N] [--out DIR]``.

64x64x3 -> 8x8x4 (f=8, 4 latent channels: Stable Diffusion's geometry, compression 48x).
The loss is the negative ELBO with a tiny KL weight (as SD's 1e-6), where the reconstruction
term is adapted to the Shapes world:

* Foreground weighting. A flat background covers ~90% of each image, so a plain per-pixel loss
  is happy with blurry blobs. Pixels on and around the shape weigh ``fg_weight`` (20) times more.
* An edge term: L1 between the horizontal and vertical finite differences of input and
  reconstruction, which keeps corners sharp (star points, square corners).
* Small shapes are drawn more often (``p_small``): they are the hard cases.

Images are rendered on the fly, item ``i`` from seed ``[seed, i]``, so a run is fully decided by
``--seed`` on a given device. At the end the scaling factor 1 / std(latents) is computed over
training images (how SD's 0.18215 was found) and written into ``config.json``.

Cost of the default schedule (3000 steps x batch 16 = 48k renders): 39.4 minutes on 2 CPU cores
(``--seed 0 --device cpu``: 0.79 s per step, 42.2 dB PSNR and 100% of attributes surviving on
held-out renders); 115 s on an H200 GPU, where the bundled weights were trained
(``--seed 0 --device cuda --workers 4``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdlearn import ASSETS_DIR
from sdlearn.data import (BACKGROUND, COLORS, POSITIONS, SHAPES, SIZES, Attributes, random_scene, render,
                          render_scene, to_tensor)
from sdlearn.device import get_device, seed_everything
from sdlearn.evaluate import psnr
from sdlearn.vae import DEFAULT_CONFIG, VAE

#: The bundled Shapes VAE: f = 2**3 = 8, 4 latent channels.
SHAPES_VAE_CONFIG: dict[str, Any] = {
    **DEFAULT_CONFIG,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 64, 128, 128],
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "latent_channels": 4,
    "sample_size": 64,
}

_BG = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1.0  # background in [-1, 1]


class ShapesStream(torch.utils.data.Dataset):
    """``length`` Shapes renders (all shape/colour pairs: the VAE has no text to leak), item ``i``
    decided by ``(seed, i)``; small shapes with probability ``p_small``. Returns (image, attributes index)."""

    def __init__(self, length: int, seed: int, p_small: float = 0.5) -> None:
        self.length, self.seed, self.p_small = length, seed, p_small

    def __len__(self) -> int:
        return self.length

    def attributes(self, i: int) -> tuple[Attributes, int]:
        rng = np.random.default_rng([self.seed, i])
        a = Attributes(SHAPES[rng.integers(len(SHAPES))], COLORS[rng.integers(len(COLORS))],
                       SIZES[0] if rng.random() < self.p_small else SIZES[1], POSITIONS[rng.integers(len(POSITIONS))])
        return a, int(rng.integers(2**31))

    def __getitem__(self, i: int) -> torch.Tensor:
        a, render_seed = self.attributes(i)
        return to_tensor(render(a.shape, a.color, a.size, a.position, seed=render_seed))


class ScenesStream(ShapesStream):
    """Shapes world 2 for the VAE: with probability ``p_scene`` a scene of one or two objects on a
    random background (``sdlearn.data.random_scene``), otherwise a single-object render as
    ``ShapesStream``; item ``i`` decided by ``(seed, i)``."""

    def __init__(self, length: int, seed: int, p_small: float = 0.5, p_scene: float = 0.75) -> None:
        super().__init__(length, seed, p_small)
        self.p_scene = p_scene

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, i, 3])
        if rng.random() >= self.p_scene:
            return super().__getitem__(i)
        scene = random_scene(rng, holdout=False)
        return to_tensor(render_scene(scene, seed=int(rng.integers(2**31))))


STREAMS = {"shapes": ShapesStream, "scenes": ScenesStream}


def border_background(x: torch.Tensor) -> torch.Tensor:
    """Each image's background colour (B, 3, 1, 1): the median of its outermost pixels."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)   # (B, 3, 4W)
    return border.median(dim=2).values[:, :, None, None]


def foreground(x: torch.Tensor, dilate: int = 1, own_background: bool = False) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 1, H, W) mask of pixels that differ from the background
    (the single-object world's, or with ``own_background`` each image's border colour), grown by
    ``dilate`` pixels so the anti-aliased rim counts as foreground."""
    bg = border_background(x) if own_background else _BG.to(x)
    fg = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.05).float()  # (B, 1, H, W)
    return F.max_pool2d(fg, 2 * dilate + 1, stride=1, padding=dilate) if dilate else fg


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, fg_weight: float = 20.0,
                        edge_weight: float = 1.0, own_background: bool = False) -> torch.Tensor:
    """Foreground-weighted (L1 + MSE) plus an edge (finite-difference L1) term; a scalar."""
    w = 1.0 + (fg_weight - 1.0) * foreground(x, own_background=own_background)    # (B, 1, H, W)
    err = x_hat - x
    loss = (w * (err.abs() + err.pow(2))).mean()
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]                                # noqa: E731  (B, 3, H, W-1)
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]                                # noqa: E731  (B, 3, H-1, W)
    edges = (w[..., :, 1:] * (dx(x_hat) - dx(x)).abs()).mean() + (w[..., 1:, :] * (dy(x_hat) - dy(x)).abs()).mean()
    return loss + edge_weight * edges


@torch.no_grad()
def evaluate(vae: VAE, images: torch.Tensor, batch_size: int = 100, own_background: bool = False) -> dict[str, float]:
    """Per-image PSNR (whole image, and the foreground only) and foreground-mask IoU of reconstructions,
    each averaged over ``images``."""
    vae.eval()
    out = {"psnr": [], "psnr_fg": [], "iou": []}
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(vae.device)
        x_hat = vae(x).clamp(-1, 1)
        fg, fg_hat = foreground(x, 0, own_background), foreground(x_hat, 0, own_background)
        around = foreground(x, 1, own_background)
        out["psnr"] += [psnr(x_hat[j:j + 1], x[j:j + 1]) for j in range(len(x))]
        out["psnr_fg"] += [psnr(x_hat[j:j + 1], x[j:j + 1], around[j:j + 1]) for j in range(len(x))]
        out["iou"] += ((fg * fg_hat).sum(dim=(1, 2, 3)) / (fg + fg_hat).clamp(max=1).sum(dim=(1, 2, 3))).tolist()
    return {k: float(np.mean(v)) for k, v in out.items()}


@torch.no_grad()
def latent_std(vae: VAE, images: torch.Tensor, seed: int, batch_size: int = 100) -> float:
    """std of posterior samples z ~ q(z|x) over ``images``; the scaling factor is its inverse."""
    vae.eval()
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([vae.encode(images[i:i + batch_size].to(vae.device)).sample(g).cpu()
                   for i in range(0, len(images), batch_size)])
    return float(z.std())


def train(seed: int = 0, steps: int = 3000, batch_size: int = 16, lr: float = 1e-3, kl_weight: float = 1e-6,
          fg_weight: float = 20.0, edge_weight: float = 1.0, p_small: float = 0.6,
          config: dict[str, Any] | None = None, device: str | None = None, workers: int = 0,
          log_every: int = 100, world: str = "shapes", init: Path | None = None,
          decoder_only: bool = False) -> tuple[VAE, list[dict[str, float]]]:
    """Train a VAE on Shapes renders (``world="scenes"``: Shapes world 2); returns (vae, log).
    ``init``: start from the weights in that folder (fine-tuning) instead of from scratch.
    ``decoder_only``: freeze the encoder, so the latent space (and a UNet trained on it) stays
    valid while the decoder sharpens (as Stability's ft-MSE/ft-EMA decoders for SD 1.x did).
    Deterministic for a seed on one device."""
    gen = seed_everything(seed)
    dev = get_device(device)
    if dev.type == "cuda":  # same seed, same weights: no autotuned (nondeterministic) conv algorithms
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    vae = (VAE.from_pretrained(init) if init is not None else VAE.from_config(config or SHAPES_VAE_CONFIG)).to(dev)
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 50)
    # linear warm-up, then cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    scenes = world == "scenes"
    data = torch.utils.data.DataLoader(STREAMS[world](steps * batch_size, seed, p_small), batch_size=batch_size,
                                       num_workers=workers, persistent_workers=workers > 0)
    n_pixels = 3 * 64 * 64
    log, t0 = [], time.time()
    vae.train()
    for step, x in enumerate(tqdm(data, desc="train vae", total=steps)):
        x = x.to(dev)
        posterior = vae.encode(x)
        x_hat = vae.decode(posterior.sample(gen))
        rec = reconstruction_loss(x_hat, x, fg_weight, edge_weight, own_background=scenes)
        kl = posterior.kl().mean() / n_pixels          # per-pixel scale, as the reconstruction term
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.append({"step": step, "loss": loss.item(), "rec": rec.item(), "kl": kl.item() * n_pixels,
                        "seconds": time.time() - t0})
    return vae.eval(), log


def held_out_images(n: int = 500, seed: int = 10_000, world: str = "shapes") -> torch.Tensor:
    """``n`` renders from a seed stream training never uses (training uses ``--seed`` < 10000)."""
    ds = STREAMS[world](n, seed, p_small=0.5)
    return torch.stack([ds[i] for i in range(n)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sdlearn train vae", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--fg-weight", type=float, default=20.0)
    p.add_argument("--edge-weight", type=float, default=1.0)
    p.add_argument("--p-small", type=float, default=0.6)
    p.add_argument("--channels", type=int, nargs="+", default=SHAPES_VAE_CONFIG["block_out_channels"])
    p.add_argument("--groups", type=int, default=SHAPES_VAE_CONFIG["norm_num_groups"])
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: best available)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes rendering images")
    p.add_argument("--out", default=None, help="output folder (default: the bundled sdlearn/assets/tiny/vae)")
    p.add_argument("--world", choices=sorted(STREAMS), default="shapes",
                   help="shapes: one object on white (the bundled VAE); scenes: Shapes world 2, one or two "
                        "objects on white, black or gray")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune the VAE in this folder (e.g. the single-object one) instead of training from scratch")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train only the decoder; latents (and the scaling factor) stay those of --init")
    args = p.parse_args(argv)
    if args.seed >= 10_000:
        raise ValueError(f"--seed must be < 10000 (seeds >= 10000 are held-out evaluation renders); got {args.seed}")
    if args.decoder_only and args.init is None:
        raise ValueError("--decoder-only needs --init (the VAE whose encoder to keep)")
    n_blocks = len(args.channels)
    config = {**SHAPES_VAE_CONFIG, "block_out_channels": args.channels, "norm_num_groups": args.groups,
              "down_block_types": ["DownEncoderBlock2D"] * n_blocks, "up_block_types": ["UpDecoderBlock2D"] * n_blocks}
    t0 = time.time()
    vae, log = train(args.seed, args.steps, args.batch_size, args.lr, args.kl_weight, args.fg_weight,
                     args.edge_weight, args.p_small, config, args.device, args.workers, world=args.world,
                     init=args.init, decoder_only=args.decoder_only)
    train_seconds = time.time() - t0
    if not args.decoder_only:                         # the encoder changed: so did the latents' spread
        fit = torch.stack([STREAMS[args.world](2000, args.seed, args.p_small)[i] for i in range(2000)])
        vae.config["scaling_factor"] = round(1.0 / latent_std(vae, fit, args.seed), 5)
    metrics = evaluate(vae, held_out_images(world=args.world), own_background=args.world == "scenes")
    out = Path(args.out) if args.out else ASSETS_DIR / "tiny" / "vae"
    vae.save_pretrained(out)
    summary = {"args": vars(args), "train_seconds": round(train_seconds, 1), "device": str(vae.device),
               "scaling_factor": vae.config["scaling_factor"], **{k: round(v, 4) for k, v in metrics.items()}}
    (out / "training_log.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1, default=str) + "\n")
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
