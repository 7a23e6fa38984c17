"""Shapes world 2: does each object's words attend to that object? (issue 16, "Cross-attention")

Two-object prompts with a named relation, two different colours and two different shapes
("a small red circle to the left of a large blue square on a gray background"; from
``evaluate.random_scene_prompts``, seed 9) are sampled with the UNet's cross-attention captured
(20 DPM-Solver++ steps, guidance 5; the conditional half of [uncond; cond]). Each image is read back
with ``evaluate.read_scene``; only images that drew both objects with the asked shapes and colours
count, since a word can only find an object that is there.

For each such image, each object and each of its two words (its colour word and its noun, each
word's last token: under CLIP's causal mask it has read the whole word), the word's attention is
averaged over the object's own pixels and over the other object's pixels (a disk of the object's
circumradius around the centre the reader found, area-weighted onto each layer's grid). The word
**binds** when own > other. Reported: the share of (image, object) pairs whose word binds, and of
images where all four words bind, over all layers and steps (what ``attention_heatmaps`` shows), per
layer and per third of the steps. For scale: the share of a pixel's attention that goes to the
start token, the words and the end token (with its padding copies).

    python benchmarks/bench_scene_attention.py --model runs/scenes2 [--n 200]
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdlearn import evaluate
from sdlearn.attend_excite import subject_tokens
from sdlearn.attention import capture_attention
from sdlearn.data import RADIUS
from sdlearn.device import randn
from sdlearn.pipeline import StableDiffusion

SEED = 2000


def region(x: float, y: float, radius: float, side: int = 64) -> torch.Tensor:
    """(side, side) 0/1 disk of ``radius`` px around (x, y) on the 64x64 image, area-averaged to ``side``."""
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    disk = ((xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2).float()[None, None]
    return F.adaptive_avg_pool2d(disk, side)[0, 0]


def prompts(n: int) -> list:
    """n two-object scenes with a relation, two colours and two shapes (so each word names one object)."""
    out = []
    for s in evaluate.random_scene_prompts(8 * n, seed=9):
        a, b = s.objects
        if a.color != b.color and a.shape != b.shape:
            out.append(s)
        if len(out) == n:
            return out
    raise RuntimeError("not enough scenes")


def measure(sd: StableDiffusion, scenes: list, batch: int, **kw) -> dict:
    cfg = sd.unet.config
    latent = (cfg["out_channels"], cfg["sample_size"], cfg["sample_size"])
    records, mass, n_drawn, t0 = [], [], 0, time.perf_counter()
    step_noise = torch.Generator().manual_seed(SEED)
    for lo in range(0, len(scenes), batch):
        chunk = scenes[lo:lo + batch]
        text = [s.caption() for s in chunk]
        z_T = torch.stack([randn(latent, torch.Generator().manual_seed(SEED + lo + j)) for j in range(len(chunk))])
        with capture_attention(sd.unet, average_heads=True, to_cpu=True) as maps:
            images = sd.text_to_image(text, latents=z_T, generator=step_noise, output_type="pt", **kw)
        readings = evaluate.read_scene(images * 2 - 1)
        B = len(chunk)
        for b, (scene, reading, prompt) in enumerate(zip(chunk, readings, text)):
            (o1, o2) = scene.objects
            words = [o1.color, o1.shape, o2.color, o2.shape]
            tokens, end = subject_tokens(sd.tokenizer, prompt, words)          # positions in the 77 tokens
            drawn = [reading.find(o.shape, o.color) for o in scene.objects]
            cond = {name: torch.stack([p[B + b, 0] for p in calls]) for name, calls in maps.items()}  # (steps, N, 77)
            total = torch.stack([F.interpolate(
                v.mean(0).T.reshape(1, 77, int(math.isqrt(v.shape[1])), -1), size=8, mode="bilinear")[0]
                for v in cond.values()]).mean(0).mean(dim=(1, 2))                # (77,) mean share per pixel
            mass.append((float(total[0]), float(total[1:end].sum()), float(total[end:].sum())))
            if None in drawn or drawn[0] == drawn[1]:
                continue
            n_drawn += 1
            places = [reading.objects[k] for k in drawn]                          # (attributes, x, y) per object
            rec = {}
            for name, v in cond.items():                                          # v: (steps, N, 77)
                side = math.isqrt(v.shape[1])
                own = [region(x, y, RADIUS[a.size], side) for a, x, y in places]  # (side, side) per object
                maps_w = v.reshape(v.shape[0], side, side, 77)                    # (steps, h, w, 77)
                for k in (0, 1):
                    for kind, j in (("colour", tokens[2 * k]), ("noun", tokens[2 * k + 1])):
                        a = maps_w[..., j]                                        # (steps, h, w)
                        mine = (a * own[k]).sum(dim=(1, 2)) / own[k].sum().clamp_min(1e-6)
                        theirs = (a * own[1 - k]).sum(dim=(1, 2)) / own[1 - k].sum().clamp_min(1e-6)
                        rec[(name, k, kind)] = (mine, theirs)                     # (steps,) each
            records.append(rec)
    return {"records": records, "mass": np.array(mass), "n": len(scenes), "drawn": n_drawn,
            "seconds": time.perf_counter() - t0, "layers": list(maps),
            "sides": {name: math.isqrt(calls[0].shape[2]) for name, calls in maps.items()}}


def summarise(res: dict) -> dict:
    recs, layers = res["records"], res["layers"]
    steps = len(next(iter(recs[0].values()))[0]) if recs else 0
    thirds = {"early": slice(0, steps // 3), "middle": slice(steps // 3, 2 * steps // 3), "late": slice(2 * steps // 3, steps)}

    def binds(rec, kind, chosen_layers, steps_slice=slice(None)) -> list[bool]:
        out = []
        for k in (0, 1):
            mine = torch.stack([rec[(name, k, kind)][0][steps_slice].mean() for name in chosen_layers]).mean()
            theirs = torch.stack([rec[(name, k, kind)][1][steps_slice].mean() for name in chosen_layers]).mean()
            out.append(bool(mine > theirs))
        return out

    table = {}
    for label, chosen in [("all layers", layers)] + [(name, [name]) for name in layers]:
        for when, sl in [("all steps", slice(None))] + list(thirds.items()):
            if label != "all layers" and when != "all steps":
                continue
            row = {}
            for kind in ("colour", "noun"):
                pairs = [b for rec in recs for b in binds(rec, kind, chosen, sl)]
                row[kind] = float(np.mean(pairs)) if pairs else float("nan")
            every = [all(binds(rec, "colour", chosen, sl) + binds(rec, "noun", chosen, sl)) for rec in recs]
            row["all four"] = float(np.mean(every)) if every else float("nan")
            table[(label, when)] = row
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a diffusers-layout Shapes world 2 folder")
    ap.add_argument("--n", type=int, default=200, help="prompts (default 200)")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only; don't append to RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sd = StableDiffusion.from_pretrained(args.model, device="cpu")
    sd.progress_bar = False
    res = measure(sd, prompts(args.n), args.batch, guidance_scale=args.guidance, num_inference_steps=20,
                  scheduler="dpm++")
    table = summarise(res)
    start, words, end = res["mass"].mean(axis=0)
    label = f" ({args.label})" if args.label else ""
    lines = [f"## Shapes world 2 cross-attention binding, {args.model}{label} ({datetime.date.today()}, cpu)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads. "
             f"`python benchmarks/bench_scene_attention.py --model {args.model} --n {args.n}`: 20 DPM-Solver++ steps, "
             f"guidance {args.guidance:g}; {res['drawn']} of {res['n']} images drew both objects with the asked shapes "
             f"and colours and are measured ({res['seconds'] / 60:.1f} min). A word binds when its mean attention over "
             "its own object exceeds that over the other object (chance: 50%).", "",
             f"A pixel's attention, on average: start token {start:.0%}, the words {words:.0%}, the end token and its "
             f"padding copies {end:.0%}.", "",
             "| layers | steps | colour word binds | noun binds | all four words, per image |", "|---|---|---|---|---|"]
    for (layer, when), row in table.items():
        if layer in res["sides"]:
            side = res["sides"][layer]
            layer = f"`{layer.replace('.transformer_blocks.0.attn2', '')}` ({side}x{side})"
        lines.append(f"| {layer} | {when} | {row['colour']:.0%} | {row['noun']:.0%} | {row['all four']:.0%} |")
    section = "\n".join(lines) + "\n"
    print("\n" + section)
    if not args.no_write:
        with open(args.out, "a") as f:
            f.write("\n" + section)
        print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
