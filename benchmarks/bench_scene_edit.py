"""Shapes world 2: SDEdit and inpainting on two-object scenes (issue 16's last two goal rows).

Inputs are renders of random two-object scenes with a named relation (``evaluate.random_scene_prompts``,
seed 5, never a HELD_OUT pair), each on one of the three backgrounds; every output is read back with
``evaluate.read_scene`` (100% on unseen renders, ``bench_scene_reader.py``).

(a) SDEdit, one strength at a time: each input is prompted with its own caption but both colours changed
    (same shapes, sizes, places, relation and background). Per strength: PSNR to the input, the share that
    kept both shapes and both places (each object's centre within 6 px of where it was), and the share
    that took both new colours. Goal: a range of strengths keeps shape and place (>= 90%) while adopting
    the new colours (>= 80%).
(b) Inpainting one object of two (4-channel UNet, latent blending): the mask is one object's
    neighbourhood snapped to the 8x8 latent grid (cases where it would touch the other object are
    redrawn), and the prompt is the scene's caption with that object given a new colour (even cases) or
    a new shape (odd cases). Goals: followed >= 90% (the new object read in the hole with the asked shape
    and colour, the other object read unchanged, one object each); the other object untouched, PSNR
    outside the mask >= 40 dB; the background continues into the hole (mask pixels clear of the new
    object, more than 3 px outside its circumradius, within 0.1 of the background colour, on [-1, 1]).
    Outside the mask the final latents equal the input's (tests/test_edit.py), so what PSNR loses there
    is the decoder's: the inputs' own VAE round trip is reported as the ceiling.

    python benchmarks/bench_scene_edit.py --model runs/scenes2 [--n-img2img 100] [--n-inpaint 200]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sdlearn import data, evaluate
from sdlearn.data import Scene, SceneObject, render_scene, to_tensor
from sdlearn.evaluate import psnr, read_scene
from sdlearn.pipeline import StableDiffusion

CELL = 8                 # pixels per latent cell
PLACE_TOLERANCE = 6.0    # px: a kept object's centre moved less than this
STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def object_mask(o: SceneObject, extra: float = 1.0) -> torch.Tensor:
    """(1, 64, 64): 1 over the object's neighbourhood, snapped outward to the latent grid (the reach of
    notebook 09's mask: circumradius x 1.1 for star tips x 1.08 for size jitter, plus ``extra`` px)."""
    reach = 1.1 * 1.08 * o.radius + extra
    lo = lambda v: int(np.floor(max(v - reach, 0) / CELL) * CELL)   # noqa: E731
    hi = lambda v: int(np.ceil(min(v + reach, 64) / CELL) * CELL)   # noqa: E731
    m = torch.zeros(1, 64, 64)
    m[:, lo(o.y):hi(o.y), lo(o.x):hi(o.x)] = 1
    return m


def disk(o: SceneObject, pad: float) -> torch.Tensor:
    """(64, 64) bool: pixels within the object's circumradius (x 1.1) plus ``pad`` of its centre."""
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    return (xs - o.x) ** 2 + (ys - o.y) ** 2 <= (1.1 * 1.08 * o.radius + pad) ** 2


def other(values: tuple[str, ...], value: str, rng: np.random.Generator) -> str:
    return values[(values.index(value) + int(rng.integers(1, len(values)))) % len(values)]


def recolour(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with each object in a new colour (the two new colours differ, like the old ones may)."""
    a, b = scene.objects
    ca = other(data.COLORS, a.color, rng)
    cb = other(data.COLORS, b.color, rng)
    while cb == ca:
        cb = other(data.COLORS, b.color, rng)
    return dataclasses.replace(scene, objects=(dataclasses.replace(a, color=ca), dataclasses.replace(b, color=cb)))


def matched(reading: evaluate.SceneReading, o: SceneObject, shape: bool = True, color: bool = True) -> bool:
    """An object read within PLACE_TOLERANCE of o's centre with o's shape and/or colour."""
    return any(math.hypot(x - o.x, y - o.y) < PLACE_TOLERANCE and (not shape or a.shape == o.shape)
               and (not color or a.color == o.color) for a, x, y in reading.objects)


def sdedit_curve(sd: StableDiffusion, n: int, batch: int, **kw) -> list[dict]:
    rng = np.random.default_rng(6)
    scenes = evaluate.random_scene_prompts(n, seed=5)
    targets = [recolour(s, rng) for s in scenes]
    images = [render_scene(s, seed=3000 + k) for k, s in enumerate(scenes)]
    x = torch.stack([to_tensor(im) for im in images])                             # (n, 3, 64, 64)
    rows = []
    for strength in STRENGTHS:
        y = torch.cat([sd.image_to_image([t.caption() for t in targets[i:i + batch]], images[i:i + batch],
                                         strength=strength, seed=i, output_type="pt", **kw) * 2 - 1
                       for i in range(0, n, batch)])
        readings = read_scene(y)
        kept = [len(r.objects) == 2 and all(matched(r, o, color=False) for o in s.objects)
                for r, s in zip(readings, scenes)]
        took = [len(r.objects) == 2 and all(matched(r, o) for o in t.objects) for r, t in zip(readings, targets)]
        rows.append({"strength": strength, "psnr": psnr(y, x), "kept": float(np.mean(kept)),
                     "took": float(np.mean(took)), "both": float(np.mean([k and t for k, t in zip(kept, took)]))})
        print(f"SDEdit strength {strength:.2f}: PSNR {rows[-1]['psnr']:.1f} dB, kept shapes and places "
              f"{rows[-1]['kept']:.0%}, new colours {rows[-1]['took']:.0%}", flush=True)
    return rows


def inpaint_cases(n: int, seed: int = 7) -> list[tuple[Scene, Scene, int, torch.Tensor]]:
    """n (input scene, target scene, index of the repainted object, mask) cases."""
    rng = np.random.default_rng(seed)
    cases = []
    for scene in evaluate.random_scene_prompts(8 * n, seed=seed):                # ~45% of scenes have a clear hole
        if len(cases) == n:
            break
        first = int(rng.integers(2))                                             # which object is repainted:
        holes = {j: object_mask(scene.objects[j]) for j in (first, 1 - first)}    # one whose hole misses the other
        fits = [j for j, m in holes.items() if not (m[0].bool() & disk(scene.objects[1 - j], pad=2)).any()]
        if not fits:
            continue
        j = fits[0]
        o, keep, mask = scene.objects[j], scene.objects[1 - j], holes[j]
        new = (dataclasses.replace(o, color=other(data.COLORS, o.color, rng)) if len(cases) % 2 == 0
               else dataclasses.replace(o, shape=other(data.SHAPES, o.shape, rng)))
        if (new.shape, new.color) in data.HELD_OUT or (new.shape, new.color) == (keep.shape, keep.color):
            continue
        objects = list(scene.objects)
        objects[j] = new
        cases.append((scene, dataclasses.replace(scene, objects=tuple(objects)), j, mask))
    return cases


def inpaint_eval(sd: StableDiffusion, n: int, batch: int, **kw) -> dict:
    cases = inpaint_cases(n)
    images = [render_scene(s, seed=4000 + k) for k, (s, _, _, _) in enumerate(cases)]
    x = torch.stack([to_tensor(im) for im in images])                             # (n, 3, 64, 64)
    m = torch.stack([c[3] for c in cases])                                        # (n, 1, 64, 64)
    prompts = [t.caption() for _, t, _, _ in cases]
    t0 = time.perf_counter()
    y = torch.cat([sd.inpaint(prompts[i:i + batch], images[i:i + batch], m[i:i + batch], seed=i,
                              output_type="pt", **kw) * 2 - 1 for i in range(0, n, batch)])
    seconds = (time.perf_counter() - t0) / n
    readings = read_scene(y)
    followed, new_right, kept_right, outside, hole_bg = [], [], [], [], []
    for k, ((scene, target, j, mask), r) in enumerate(zip(cases, readings)):
        new, keep = target.objects[j], target.objects[1 - j]
        new_right.append(matched(r, new))
        kept_right.append(matched(r, keep))
        followed.append(new_right[-1] and kept_right[-1] and len(r.objects) == 2)
        outside.append(psnr(y[k:k + 1], x[k:k + 1], (1 - mask).expand(1, 3, 64, 64)))
        clear = mask[0].bool() & ~disk(new, pad=3) & ~disk(scene.objects[j], pad=3)   # hole pixels away from both
        bg = torch.tensor(data.BACKGROUND_RGB[scene.background], dtype=torch.float32) / 127.5 - 1
        if clear.any():
            hole_bg.append(float(((y[k][:, clear] - bg[:, None]).abs().max(dim=0).values < 0.1).float().mean()))
    outside_all = psnr(y, x, (1 - m).expand_as(x))
    round_trip = torch.cat([sd.image_to_image([""] * len(images[i:i + batch]), images[i:i + batch], strength=0.0,
                                              output_type="pt") * 2 - 1 for i in range(0, n, batch)])
    return {"n": n, "followed": float(np.mean(followed)), "new object": float(np.mean(new_right)),
            "other object": float(np.mean(kept_right)), "psnr outside": outside_all,
            "psnr outside p10": float(np.percentile(outside, 10)), "share >= 40 dB": float(np.mean(np.array(outside) >= 40)),
            "hole background": float(np.mean(hole_bg)), "s/image": seconds,
            "round trip outside": psnr(round_trip, x, (1 - m).expand_as(x)), "images": y, "inputs": x, "masks": m}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a diffusers-layout Shapes world 2 folder")
    ap.add_argument("--n-img2img", type=int, default=100)
    ap.add_argument("--n-inpaint", type=int, default=200)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--label", default="", help="a note for the report (e.g. the training step)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only; don't append to RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sd = StableDiffusion.from_pretrained(args.model, device="cpu")
    sd.progress_bar = False
    kw = dict(guidance_scale=args.guidance, num_inference_steps=20)
    t_start = time.perf_counter()
    curve = sdedit_curve(sd, args.n_img2img, args.batch, **kw) if args.n_img2img else []
    inp = inpaint_eval(sd, args.n_inpaint, args.batch, **kw)
    print(f"inpainting: followed {inp['followed']:.1%} (new object {inp['new object']:.1%}, other object "
          f"{inp['other object']:.1%}), PSNR outside {inp['psnr outside']:.1f} dB, hole background "
          f"{inp['hole background']:.1%}", flush=True)
    total = time.perf_counter() - t_start

    label = f" ({args.label})" if args.label else ""
    lines = [f"## Shapes world 2 editing, {args.model}{label} ({datetime.date.today()}, cpu)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}. `python benchmarks/bench_scene_edit.py --model {args.model} "
             f"--n-img2img {args.n_img2img} --n-inpaint {args.n_inpaint}`: DPM-Solver++ 20 steps (SDEdit runs "
             f"strength x 20 of them), guidance {args.guidance:g}, read by `evaluate.read_scene`. {total / 60:.1f} min.", ""]
    if curve:
        good = [r["strength"] for r in curve if r["kept"] >= 0.9 and r["took"] >= 0.8]
        lines += [f"SDEdit on {args.n_img2img} two-object scenes, each prompted with both colours changed. Goal: some "
                  f"strength keeps shapes and places >= 90% and takes the new colours >= 80%: "
                  f"{'met at ' + ', '.join(f'{s:g}' for s in good) if good else 'MISSED'}.", "",
                  "| strength | PSNR to input (dB) | kept shapes and places | new colours | both |", "|---|---|---|---|---|"]
        lines += [f"| {r['strength']:.2f} | {r['psnr']:.1f} | {r['kept']:.0%} | {r['took']:.0%} | {r['both']:.0%} |"
                  for r in curve]
        lines.append("")
    ok = lambda cond: "met" if cond else "MISSED"   # noqa: E731
    lines += [f"Inpainting one object of two ({inp['n']} cases, half a new colour, half a new shape; 4-channel UNet, "
              "latent blending; mask = the object's neighbourhood on the latent grid):", "",
              "| what | measured | goal | |", "|---|---|---|---|",
              f"| followed: new object right, other object right, two objects | {inp['followed']:.1%} | >= 90% | "
              f"{ok(inp['followed'] >= 0.9)} |",
              f"| the new object alone | {inp['new object']:.1%} | | |",
              f"| the other object read unchanged | {inp['other object']:.1%} | | |",
              f"| PSNR outside the mask (all images; 10th percentile per image) | {inp['psnr outside']:.1f} dB; "
              f"{inp['psnr outside p10']:.1f} dB | >= 40 dB | {ok(inp['psnr outside'] >= 40)} |",
              f"| images with PSNR outside >= 40 dB | {inp['share >= 40 dB']:.0%} | | |",
              f"| the ceiling: the inputs' own VAE round trip, outside the mask | {inp['round trip outside']:.1f} dB | | |",
              f"| hole pixels clear of both objects within 0.1 of the background | {inp['hole background']:.1%} | "
              f"the background continues | |",
              f"| seconds per image | {inp['s/image']:.2f} | | |", ""]
    section = "\n".join(lines) + "\n"
    print("\n" + section)
    if not args.no_write:
        with open(args.out, "a") as f:
            f.write("\n" + section)
        print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
