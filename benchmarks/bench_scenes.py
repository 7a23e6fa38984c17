"""Shapes world 2: does a text-to-image model do what the series says it does? (issue 16's goals)

Every image is read back by ``sdlearn.evaluate.read_scene`` (100% on 600 unseen renders,
``bench_scene_reader.py``) and scored by ``scene_correct``. Prompts are canonical captions of
random scenes (``evaluate.random_scene_prompts``, seed 0), so never a training caption's exact
wording with that combination of sizes, places and backgrounds except by chance (the share that
collides with a training caption is reported). Prompt ``i`` starts from the noise of seed SEED + i.

Rows (20 DPM-Solver++ steps, guidance 5 unless stated):

* single-object prompts, world 1's captions ("a small red circle in the top left"): colour,
  shape, size, position (goal >= 95% each);
* two-object prompts with a relation: both objects' shape and colour, the relation, all
  (goal >= 80%); attribute-binding errors, colours swapped between the shapes (goal <= 10%);
* the named background (goal >= 95%);
* guidance 1, 3, 5, 7.5 on the two-object prompts (goal: guidance 1 >= 20 points below the best);
* vague prompts over 32 seeds: "a {shape}" (goal >= 5 of 6 colours and >= 6 of 9 places appear),
  "a {color} shape" (goal >= 4 of 5 shapes).

    python benchmarks/bench_scenes.py --model runs/scenes          # ~5 min on 2 CPU cores
    python benchmarks/bench_scenes.py --model runs/scenes --n 100 --no-write --curve-only   # the training curve
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from sdlearn import data, evaluate
from sdlearn.pipeline import StableDiffusion

SEED = 2000
GUIDANCE = (1.0, 3.0, 5.0, 7.5)
N_VAGUE_SEEDS = 32


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def vague(pipe: StableDiffusion, guidance: float) -> dict:
    """Over 32 seeds: which colours and places "a {shape}" takes, which shapes "a {color} shape" takes."""
    out = {"shape": {}, "color": {}}
    for shape in data.SHAPES:
        r = evaluate.prompt_following(pipe, [data.Attributes(shape, "red", "small", "center")] * N_VAGUE_SEEDS,
                                      seed=SEED, progress=False, guidance_scale=guidance, num_inference_steps=20,
                                      scheduler="dpm++", prompts=[f"a {shape}"] * N_VAGUE_SEEDS)
        out["shape"][shape] = {"colors": sorted({a.color for a in r["read"]}),
                               "positions": sorted({a.position for a in r["read"]})}
    for color in data.COLORS:
        r = evaluate.prompt_following(pipe, [data.Attributes("circle", color, "small", "center")] * N_VAGUE_SEEDS,
                                      seed=SEED, progress=False, guidance_scale=guidance, num_inference_steps=20,
                                      scheduler="dpm++", prompts=[f"a {color} shape"] * N_VAGUE_SEEDS)
        out["color"][color] = {"shapes": sorted({a.shape for a in r["read"]})}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="a diffusers-layout folder (default: the bundled model)")
    ap.add_argument("--n", type=int, default=200, help="prompts per accuracy row (default 200)")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--curve-only", action="store_true", help="only the two-object row at --guidance (training curve)")
    ap.add_argument("--label", default="", help="a note for the report (e.g. the training step)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--no-write", action="store_true", help="print only; don't append to RESULTS.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = (StableDiffusion.from_pretrained(args.model, device="cpu") if args.model
            else StableDiffusion.tiny(device="cpu"))
    dpm20 = dict(scheduler="dpm++", num_inference_steps=20)
    two = evaluate.random_scene_prompts(args.n, seed=0, n_objects=2, relation=True)

    def scenes(w: float) -> dict:
        r = evaluate.scene_following(pipe, two, seed=SEED, progress=False, guidance_scale=w, **dpm20)
        print(f"two objects, guidance {w}: objects {_pct(r['objects'])}  relation {_pct(r['relation'])}  "
              f"pair {_pct(r['pair'])}  background {_pct(r['background'])}  all {_pct(r['all'])}  "
              f"swapped {_pct(r['swapped'])}  one colour {_pct(r['one_color'])}  neglect {_pct(r['neglect'])}",
              flush=True)
        return r

    results: dict = {"two": {args.guidance: scenes(args.guidance)}}
    if not args.curve_only:
        single = evaluate.prompt_following(pipe, evaluate.random_prompts(args.n, seed=0), seed=SEED, progress=False,
                                           guidance_scale=args.guidance, **dpm20)
        print("single objects: " + "  ".join(f"{k} {_pct(single[k])}" for k in ("color", "shape", "size", "position")))
        results["single"] = single
        for w in GUIDANCE:
            if w != args.guidance:
                results["two"][w] = scenes(w)
        results["vague"] = vague(pipe, args.guidance)
        print(json.dumps(results["vague"]))
    section = report(results, args)
    print("\n" + section)
    if not args.no_write:
        with open(args.out, "a") as f:
            f.write("\n" + section)
        print(f"appended to {args.out}")
    if args.json:
        plain = {"two": {w: {k: v for k, v in r.items() if k in ("objects", "relation", "pair", "background", "all", "swapped", "one_color", "neglect", "n")}
                         for w, r in results["two"].items()}}
        if "single" in results:
            plain["single"] = {k: results["single"][k] for k in ("color", "shape", "size", "position", "all", "n")}
            plain["vague"] = results["vague"]
        args.json.write_text(json.dumps(plain, indent=1))


def report(results: dict, args: argparse.Namespace) -> str:
    model = str(args.model) if args.model else "the bundled tiny model"
    head = results["two"][args.guidance]
    lines = [f"## Shapes world 2 goals, {model}{' (' + args.label + ')' if args.label else ''} "
             f"({datetime.date.today()}, cpu)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}. `python benchmarks/bench_scenes.py --model {args.model} --n {args.n}`. "
             f"20 DPM-Solver++ steps, guidance {args.guidance}, noise seed {SEED}+i, read by `evaluate.read_scene`.", "",
             "| what | measured | goal | |", "|---|---|---|---|"]

    def goal(what: str, value: str, target: str, ok: bool) -> None:
        lines.append(f"| {what} | {value} | {target} | {'met' if ok else 'MISSED'} |")
    if "single" in results:
        s = results["single"]
        for k in ("color", "shape", "size", "position"):
            goal(f"single object: {k} (n={s['n']})", f"{_pct(s[k])}%", ">= 95%", s[k] >= 0.95)
    pair = head["pair"]
    goal(f"two objects: both objects and the relation (n={head['n']})", f"{_pct(pair)}%", ">= 80%", pair >= 0.8)
    goal("binding errors (colours swapped)", f"{_pct(head['swapped'])}%", "<= 10%", head["swapped"] <= 0.10)
    goal("named background", f"{_pct(head['background'])}%", ">= 95%", head["background"] >= 0.95)
    if len(results["two"]) > 1:
        acc = {w: r["pair"] for w, r in sorted(results["two"].items())}
        curve = ", ".join(f"w={w:g}: {_pct(a)}%" for w, a in acc.items())
        goal("guidance matters (two objects)", curve, "w=1 >= 20 points below the best", max(acc.values()) - acc[1.0] >= 0.2)
    if "vague" in results:
        v = results["vague"]
        colors = min(len(x["colors"]) for x in v["shape"].values())
        places = min(len(x["positions"]) for x in v["shape"].values())
        shapes = min(len(x["shapes"]) for x in v["color"].values())
        goal('"a {shape}" over 32 seeds: colours / places (the fewest over shapes)', f"{colors} / {places}",
             ">= 5 of 6 / >= 6 of 9", colors >= 5 and places >= 6)
        goal('"a {color} shape" over 32 seeds: shapes (the fewest over colours)', f"{shapes}", ">= 4 of 5", shapes >= 4)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
