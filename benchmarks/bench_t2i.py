"""Prompt following of the bundled tiny text-to-image model, read back by sdlearn.evaluate.

Prompts are canonical captions of random attributes ("a small red circle in the top left"); every
image is read by ``sdlearn.evaluate.read_attributes`` (each reader >= 99% on real renders). Prompt
``i`` always starts from the latents of seed ``SEED + i``, so every row below sees the same noise.

1. the headline: 20 DPM-Solver++ steps at the default guidance, on trained combinations and on
   the HELD_OUT (shape, colour) pairs the model never saw;
2. a guidance-scale curve (1, 2, 4, 7.5, 12);
3. a sampler table (DDPM 1000, DDIM 50, DPM-Solver++ 10 and 20, Euler 30, Euler ancestral 30):
   accuracy and seconds per image (DDPM 1000 on the first ``--n-ddpm`` prompts only).

Goals (issue 7): colour >= 95%, shape >= 90%, size >= 90%, position >= 90%.
Appends a dated section to benchmarks/RESULTS.md and prints it.

    python benchmarks/bench_t2i.py                  # ~15-25 min on 2 CPU cores
    python benchmarks/bench_t2i.py --n 40 --n-curve 20 --n-samplers 20 --n-ddpm 4 --no-write   # a quick look
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
from pathlib import Path

import torch

from sdlearn import evaluate
from sdlearn.configs import SCHEDULER_CONFIG
from sdlearn.pipeline import StableDiffusion, make_scheduler

SEED = 1000                      # noise seeds 1000.. ; prompt seeds 0 (trained) and 1 (held out)
GOALS = {"color": 0.95, "shape": 0.90, "size": 0.90, "position": 0.90}
GUIDANCE_CURVE = (1.0, 2.0, 4.0, 7.5, 12.0)
SAMPLERS = (("DDPM", "ddpm", 1000), ("DDIM", "ddim", 50), ("DPM-Solver++", "dpm++", 10),
            ("DPM-Solver++", "dpm++", 20), ("Euler", "euler", 30), ("Euler ancestral", "euler_a", 30))
COLUMNS = ("color", "shape", "size", "position", "all")


def row(result: dict) -> str:
    return " | ".join(f"{100 * result[k]:.1f}" for k in COLUMNS)


def main() -> None:
    default_guidance = inspect.signature(StableDiffusion.text_to_image).parameters["guidance_scale"].default
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="prompts per row (default 200)")
    ap.add_argument("--n-curve", type=int, default=200, help="prompts per guidance-curve row")
    ap.add_argument("--n-samplers", type=int, default=200, help="prompts per sampler row (DDPM 1000: --n-ddpm)")
    ap.add_argument("--n-ddpm", type=int, default=40, help="prompts for the DDPM 1000-step row")
    ap.add_argument("--guidance", type=float, default=default_guidance, help="guidance of the headline and sampler rows")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--no-write", action="store_true", help="print only; don't append to RESULTS.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = StableDiffusion.tiny(device="cpu")   # loaded as float32 (the files store float16)
    trained = evaluate.random_prompts(args.n, seed=0)
    held_out = evaluate.random_prompts(args.n, seed=1, held_out=True)

    def measure(prompts, label: str, **kw) -> dict:
        r = evaluate.prompt_following(pipe, prompts, seed=SEED, batch_size=args.batch_size, **kw)
        print(f"{label:<40} n={r['n']:<4} {row(r)}  {r['seconds_per_image']:.3f} s/image", flush=True)
        return r

    dpm20 = dict(scheduler="dpm++", num_inference_steps=20)
    results = {"headline": measure(trained, "DPM-Solver++ 20, trained combinations", guidance_scale=args.guidance, **dpm20),
               "held_out": measure(held_out, "DPM-Solver++ 20, held-out combinations", guidance_scale=args.guidance, **dpm20),
               "guidance": {}, "samplers": {}}
    for w in GUIDANCE_CURVE:
        results["guidance"][w] = (results["headline"] if w == args.guidance and args.n_curve == args.n
                                  else measure(trained[:args.n_curve], f"guidance {w}", guidance_scale=w, **dpm20))
    for name, key, steps in SAMPLERS:
        label = f"{name} {steps}"
        if (key, steps) == ("dpm++", 20) and args.n_samplers == args.n:
            results["samplers"][label] = results["headline"]
            continue
        prompts = trained[:args.n_ddpm if key == "ddpm" else args.n_samplers]
        config = {**SCHEDULER_CONFIG, "steps_offset": 0} if steps == 1000 else SCHEDULER_CONFIG  # t = 999..0
        results["samplers"][label] = measure(prompts, label, scheduler=make_scheduler(key, config),
                                             num_inference_steps=steps,
                                             guidance_scale=args.guidance)

    section = report(results, args, torch.get_num_threads())
    print("\n" + section)
    if not args.no_write:
        with open(args.out, "a") as f:
            f.write("\n" + section)
        print(f"appended to {args.out}")
    if args.json:
        args.json.write_text(json.dumps({k: ({kk: _plain(vv) for kk, vv in v.items()} if k in ("guidance", "samplers")
                                             else _plain(v)) for k, v in results.items()}, indent=1))


def _plain(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "read"}


def report(results: dict, args: argparse.Namespace, threads: int) -> str:
    head, held = results["headline"], results["held_out"]
    goals = ", ".join(f"{k} {100 * head[k]:.1f}% (goal {100 * g:.0f}%: {'met' if head[k] >= g else 'MISSED'})"
                      for k, g in GOALS.items())
    lines = [
        f"## Text-to-image prompt following, bundled tiny model ({datetime.date.today()}, cpu)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {threads} torch threads, torch {torch.__version__}, "
        f"shared with other jobs (timings are indicative). `python benchmarks/bench_t2i.py --n {args.n} "
        f"--n-curve {args.n_curve} --n-samplers {args.n_samplers} --n-ddpm {args.n_ddpm}`. Canonical captions of random attributes (`evaluate.random_prompts`, seed 0; "
        f"held-out pairs: seed 1), initial noise seed {SEED}+i for prompt i, read by `evaluate.read_attributes`. "
        f"Guidance {args.guidance} unless stated. Accuracies in %.", "",
        f"Headline (DPM-Solver++ 20 steps, n={head['n']}): {goals}; all four right {100 * head['all']:.1f}%.", "",
        "| prompts | n | colour | shape | size | position | all four |", "|---|---|---|---|---|---|---|",
        f"| trained combinations | {head['n']} | {row(head)} |",
        f"| held-out (shape, colour) pairs | {held['n']} | {row(held)} |", "",
        "Guidance-scale curve (DPM-Solver++ 20 steps, the first n prompts of the headline's):", "",
        "| guidance | n | colour | shape | size | position | all four |", "|---|---|---|---|---|---|---|",
        *[f"| {w} | {r['n']} | {row(r)} |" for w, r in results["guidance"].items()], "",
        f"Samplers (guidance {args.guidance}; the first n prompts of the headline's):", "",
        "| sampler | steps | n | colour | shape | size | position | all four | s / image |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {label.rsplit(' ', 1)[0]} | {label.rsplit(' ', 1)[1]} | {r['n']} | {row(r)} | {r['seconds_per_image']:.3f} |"
          for label, r in results["samplers"].items()], "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
