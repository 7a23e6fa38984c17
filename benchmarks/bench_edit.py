"""Image-to-image and inpainting with the bundled tiny model, measured on Shapes.

(a) SDEdit: how much of the input survives as ``strength`` goes 0 -> 1. Each input is asked for a
    new colour *and* a new shape (same size and position); for each strength: PSNR to the input,
    the fraction whose read attributes are still the input's, and the fraction that follow the prompt.
(b) Inpainting with the 4-channel UNet (latent blending): each object's neighbourhood (a box on the
    8x8 latent grid, as notebook 09 builds it) is repainted to a new colour or a new shape by the
    prompt. Goals (issue 8): >= 90% follow the prompt (read with ``read_attributes``) and PSNR outside
    the mask >= 30 dB. Reported for the raw decoded image and after pasting the input back outside
    the mask (diffusers' ``apply_overlay``), for a few guidance scales and step counts.

Appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/bench_edit.py [--n-img2img 60] [--n-inpaint 120]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sdlearn import data
from sdlearn.data import RADIUS, Attributes, position_center, render, to_tensor
from sdlearn.evaluate import psnr, read_attributes
from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CELL = 8  # pixels per latent cell


def object_mask(position: str, size: str, extra: float = 1.0) -> torch.Tensor:
    """(1, 64, 64) mask, 1 over the object's neighbourhood, snapped outward to the latent grid:
    circumradius x 1.1 (star tips) x 1.08 (size jitter) + 2 sqrt(2) px (position jitter) + extra."""
    cx, cy = position_center(position)
    reach = 1.1 * 1.08 * RADIUS[size] + 2 * np.sqrt(2) + extra
    lo = lambda v: int(np.floor(max(v - reach, 0) / CELL) * CELL)   # noqa: E731
    hi = lambda v: int(np.ceil(min(v + reach, 64) / CELL) * CELL)   # noqa: E731
    m = torch.zeros(1, 64, 64)
    m[:, lo(cy):hi(cy), lo(cx):hi(cx)] = 1
    return m


def cases(n: int, seed: int) -> tuple[list[Attributes], list[Attributes]]:
    """n (source, target) pairs; even cases change the colour, odd ones the shape."""
    rng = np.random.default_rng(seed)
    sources, targets = [], []
    for k in range(n):
        a = data.random_attributes(rng, holdout=False)
        if k % 2 == 0:
            new = Attributes(a.shape, data.COLORS[(data.COLORS.index(a.color) + rng.integers(1, 6)) % 6],
                             a.size, a.position)
        else:
            new = Attributes(data.SHAPES[(data.SHAPES.index(a.shape) + rng.integers(1, 5)) % 5], a.color,
                             a.size, a.position)
        sources.append(a)
        targets.append(new)
    return sources, targets


def batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def img2img_curve(sd: StableDiffusion, n: int, strengths: list[float], batch: int) -> list[dict]:
    rng = np.random.default_rng(1)
    sources, targets = [], []
    for _ in range(n):
        a = data.random_attributes(rng, holdout=False)
        sources.append(a)
        targets.append(Attributes(data.SHAPES[(data.SHAPES.index(a.shape) + rng.integers(1, 5)) % 5],
                                  data.COLORS[(data.COLORS.index(a.color) + rng.integers(1, 6)) % 6],
                                  a.size, a.position))
    images = [render(a.shape, a.color, a.size, a.position, seed=1000 + k) for k, a in enumerate(sources)]
    x = torch.stack([to_tensor(im) for im in images])                              # (n, 3, 64, 64)
    read_in = read_attributes(x)
    rows = []
    for s in tqdm(strengths, desc="img2img strengths"):
        ys = [sd.image_to_image([t.caption() for t in targets[b]], images[b], strength=s, seed=k,
                                output_type="pt") * 2 - 1 for k, b in enumerate(batches(n, batch))]
        y = torch.cat(ys)
        r = read_attributes(y)
        row = {"strength": s, "steps": int(20 * s), "psnr": psnr(y, x)}
        for key in ("shape", "color", "size", "position"):
            row[f"kept {key}"] = np.mean([getattr(a, key) == getattr(b, key) for a, b in zip(r, read_in)])
        row["prompt color"] = np.mean([a.color == b.color for a, b in zip(r, targets)])
        row["prompt shape"] = np.mean([a.shape == b.shape for a, b in zip(r, targets)])
        rows.append(row)
    return rows


def inpaint_eval(sd: StableDiffusion, sources, targets, images, masks, batch: int, **kw) -> dict:
    x = torch.stack([to_tensor(im) for im in images])                              # (n, 3, 64, 64)
    m = torch.stack(masks)                                                         # (n, 1, 64, 64)
    t0 = time.perf_counter()
    y = torch.cat([sd.inpaint([t.caption() for t in targets[b]], images[b], m[b], seed=k, output_type="pt",
                              **kw) * 2 - 1 for k, b in enumerate(batches(len(images), batch))])
    seconds = (time.perf_counter() - t0) / len(images)
    outside = (1 - m).expand_as(x)
    pasted = m * y + (1 - m) * x                                                   # apply_overlay
    follow = lambda r: float(np.mean([a == t for a, t in zip(r, targets)]))       # noqa: E731 all four attributes
    r = read_attributes(y)
    per_image = [psnr(y[i:i + 1], x[i:i + 1], outside[i:i + 1]) for i in range(len(images))]
    return {"follow": follow(r), "follow pasted": follow(read_attributes(pasted)),
            "follow color cases": float(np.mean([a == t for a, t in zip(r[0::2], targets[0::2])])),
            "follow shape cases": float(np.mean([a == t for a, t in zip(r[1::2], targets[1::2])])),
            "psnr outside": psnr(y, x, outside), "psnr outside p10": float(np.percentile(per_image, 10)),
            "share >= 30 dB": float(np.mean(np.array(per_image) >= 30)), "s/image": seconds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-img2img", type=int, default=60)
    ap.add_argument("--n-inpaint", type=int, default=120)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print the section without appending it to RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sd = StableDiffusion.tiny(device="cpu")
    sd.progress_bar = False
    unet_file = TINY_MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = datetime.datetime.fromtimestamp(unet_file.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    t_start = time.perf_counter()

    strengths = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    curve = img2img_curve(sd, args.n_img2img, strengths, args.batch)

    sources, targets = cases(args.n_inpaint, seed=2)
    images = [render(a.shape, a.color, a.size, a.position, seed=2000 + k) for k, a in enumerate(sources)]
    masks = [object_mask(a.position, a.size) for a in sources]
    configs = {"20 steps, guidance 5 (default)": dict(num_inference_steps=20, guidance_scale=5.0),
               "20 steps, guidance 7.5": dict(num_inference_steps=20, guidance_scale=7.5),
               "50 steps, guidance 5": dict(num_inference_steps=50, guidance_scale=5.0)}
    results = {name: inpaint_eval(sd, sources, targets, images, masks, args.batch, **kw)
               for name, kw in tqdm(configs.items(), desc="inpainting settings")}
    x = torch.stack([to_tensor(im) for im in images])
    m = torch.stack(masks)
    round_trip = torch.cat([sd.image_to_image([""] * (b.stop - b.start), images[b], strength=0.0, seed=k,
                                              output_type="pt") * 2 - 1
                            for k, b in enumerate(batches(len(images), args.batch))])
    rt_outside = psnr(round_trip, x, (1 - m).expand_as(x))
    total = time.perf_counter() - t_start

    lines = [f"\n## Image-to-image and inpainting on Shapes (bench_edit.py), {datetime.date.today()}\n",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} CPU threads (2-core machine shared with "
             f"other jobs: timings are rough), torch {torch.__version__}. Model: {TINY_MODEL_DIR.name}/ with the "
             f"UNet exported {stamp}; DPM-Solver++ 20 steps unless said. Total {total / 60:.1f} min.\n",
             f"### (a) SDEdit: what survives ({args.n_img2img} inputs, each prompted for a new colour and a new shape)\n",
             "| strength | steps run | PSNR to input (dB) | kept shape | kept colour | kept size | kept position "
             "| prompt colour | prompt shape |", "|---|---|---|---|---|---|---|---|---|"]
    for r in curve:
        lines.append(f"| {r['strength']:.2f} | {r['steps']} | {r['psnr']:.1f} | {r['kept shape']:.0%} | "
                     f"{r['kept color']:.0%} | {r['kept size']:.0%} | {r['kept position']:.0%} | "
                     f"{r['prompt color']:.0%} | {r['prompt shape']:.0%} |")
    lines += [f"\n### (b) Inpainting, 4-channel UNet + latent blending ({args.n_inpaint} cases: half a new colour, "
              "half a new shape; mask = the object's neighbourhood snapped to the 8x8 latent grid)\n",
              "Goals: follows the prompt >= 90% (all four attributes read back), PSNR outside the mask >= 30 dB.\n",
              "| setting | follows prompt | colour cases | shape cases | PSNR outside (dB) | 10th pct per image "
              "| images >= 30 dB | follows, pasted back | s/image |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['follow']:.1%} | {r['follow color cases']:.0%} | {r['follow shape cases']:.0%} | "
                     f"{r['psnr outside']:.1f} | {r['psnr outside p10']:.1f} | {r['share >= 30 dB']:.0%} | "
                     f"{r['follow pasted']:.1%} | {r['s/image']:.2f} |")
    lines.append(f"\nPSNR outside the mask of the inputs' own VAE round trip (the decoder's ceiling): {rt_outside:.1f} dB. "
                 "Outside the mask the final latents equal the input's exactly (tests/test_edit.py); what PSNR loses "
                 "there comes from decoding: the VAE decoder (GroupNorm statistics and mid-block attention over the "
                 "whole latent) lets the new content shift colours elsewhere. Pasting the input back outside the "
                 "mask (diffusers' `apply_overlay`) makes the outside exact (PSNR infinite).\n")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with open(RESULTS, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
