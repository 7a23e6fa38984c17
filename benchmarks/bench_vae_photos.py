"""Figure 1 of the LDM paper at small scale: how much detail survives downsampling factor f?

Trains three small KL-VAEs (f = 4, 8, 16; 4 latent channels each, so an f x f x 3 patch becomes
4 numbers: compression 3*f^2/4 = 12x, 48x, 192x) on random 64x64 crops of three
offline photos, holds the fourth (grace_hopper) out, and reports its reconstruction PSNR
against f. Appends a dated section to benchmarks/RESULTS.md and draws the figure notebook 03 shows,
sdlearn/assets/figures/03_photo_f.png (and its numbers, 03_photo_f.json).

    python benchmarks/bench_vae_photos.py [--steps 3000] [--device cuda]   (the recorded run: --steps 3000, an H200)
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdlearn import ASSETS_DIR
from sdlearn.data import sample_photo, to_pil, to_tensor
from sdlearn.device import get_device, seed_everything
from sdlearn.evaluate import psnr
from sdlearn.vae import DEFAULT_CONFIG, VAE

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PHOTOS, HELD_OUT_PHOTO = ("chelsea", "astronaut", "coffee"), "grace_hopper"
CHANNELS = {4: [32, 64, 128], 8: [32, 64, 128, 128], 16: [32, 64, 128, 128, 128]}


def photo(name: str, scale: float = 0.5) -> torch.Tensor:
    """A sample photo at ``scale`` of its size, as (3, H, W) in [-1, 1]."""
    img = sample_photo(name)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return to_tensor(img)


def random_crops(photos: list[torch.Tensor], n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops (random photo, place, horizontal flip) -> (n, 3, size, size)."""
    out = []
    for _ in range(n):
        p = photos[int(torch.randint(len(photos), (1,), generator=g))]
        i = int(torch.randint(p.shape[1] - size + 1, (1,), generator=g))
        j = int(torch.randint(p.shape[2] - size + 1, (1,), generator=g))
        crop = p[:, i:i + size, j:j + size]
        out.append(crop.flip(-1) if torch.rand(1, generator=g) < 0.5 else crop)
    return torch.stack(out)


def train_f(f: int, steps: int, batch_size: int, device: torch.device, seed: int = 0) -> tuple[VAE, float]:
    g = seed_everything(seed)
    n = len(CHANNELS[f])
    vae = VAE.from_config({**DEFAULT_CONFIG, "block_out_channels": CHANNELS[f], "norm_num_groups": 16,
                           "down_block_types": ["DownEncoderBlock2D"] * n,
                           "up_block_types": ["UpDecoderBlock2D"] * n}).to(device)
    photos = [photo(name) for name in TRAIN_PHOTOS]
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    t0 = time.time()
    for _ in range(steps):
        x = random_crops(photos, batch_size, 64, g).to(device)         # (B, 3, 64, 64)
        posterior = vae.encode(x)
        x_hat = vae.decode(posterior.sample(g))
        loss = (x_hat - x).abs().mean() + (x_hat - x).pow(2).mean() + 1e-6 * posterior.kl().mean() / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return vae.eval(), time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--figure", default=str(ASSETS_DIR / "figures" / "03_photo_f.png"))
    args = ap.parse_args()
    device = get_device(args.device)
    held = photo(HELD_OUT_PHOTO)
    held = held[:, : held.shape[1] // 16 * 16, : held.shape[2] // 16 * 16].unsqueeze(0)  # (1, 3, H, W), H, W % 16 == 0
    rows, recons = [], {}
    for f in (4, 8, 16):
        vae, seconds = train_f(f, args.steps, args.batch_size, device)
        with torch.no_grad():
            x_hat = vae(held.to(device)).cpu().clamp(-1, 1)
        rows.append({"f": f, "latent": f"{held.shape[2] // f}x{held.shape[3] // f}x4",
                     "compression": 3 * f * f // 4, "psnr_held_out": round(float(psnr(x_hat, held)), 2),
                     "params_M": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2), "train_s": round(seconds, 1)})
        recons[f] = x_hat[0]
        print(rows[-1], flush=True)
    draw(held[0], recons, rows, args.figure)
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, "
               f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}; torch {torch.__version__}")
    lines = [f"\n## VAE downsampling factor vs detail (bench_vae_photos.py), {datetime.date.today()}\n",
             f"Machine: {machine}. Train photos {', '.join(TRAIN_PHOTOS)} (half size, random 64x64 crops), "
             f"held out {HELD_OUT_PHOTO} ({held.shape[2]}x{held.shape[3]}); {args.steps} steps x batch "
             f"{args.batch_size}, 4 latent channels. LDM paper (Fig. 1, 256x256 ImageNet): f=4 27.4 dB, "
             "f=8 22.8 (DALL-E), f=16 19.9 (VQGAN).\n",
             "| f | latent of held-out photo | compression | held-out PSNR (dB) | params (M) | train time (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['f']} | {r['latent']} | {r['compression']}x | {r['psnr_held_out']} | {r['params_M']} | "
              f"{r['train_s']} |" for r in rows]
    with open(args.results, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    Path(args.figure).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


def draw(original: torch.Tensor, recons: dict[int, torch.Tensor], rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8), gridspec_kw={"width_ratios": [1.2, 1, 1, 1, 1]})
    fs = [r["f"] for r in rows]
    axes[0].plot(fs, [r["psnr_held_out"] for r in rows], "o-", label="ours (tiny, held-out photo)")
    axes[0].plot([4, 8, 16], [27.4, 22.8, 19.9], "s--", color="gray", label="LDM paper Fig. 1")
    axes[0].set(xscale="log", xticks=fs, xticklabels=[str(f) for f in fs], xlabel="downsampling factor f",
                ylabel="PSNR (dB)", title="detail lost vs f")
    axes[0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # only the f ticks on the log axis
    axes[0].legend(fontsize=8)
    crop = (slice(None), slice(40, 168), slice(60, 188))  # a 128x128 window on the face
    panels = [("held-out original", original)] + [(f"f={f}: {r['psnr_held_out']} dB", recons[f])
                                                   for f, r in zip(fs, rows)]
    for ax, (title, img) in zip(axes[1:], panels):
        ax.imshow(np.asarray(to_pil(img[crop])))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
