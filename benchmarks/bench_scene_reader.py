"""Accuracy of the attribute reader on Shapes world 2 scenes it never saw (sdlearn.evaluate.read_scene):
background, each object's shape / colour / size, and the relation; appends to benchmarks/RESULTS.md.

    python benchmarks/bench_scene_reader.py [--n 600]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sdlearn import data, evaluate

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=600, help="scenes (a third with one object, the rest with two)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(777)
    scenes = [data.random_scene(rng, 1 if k % 3 == 0 else 2, holdout=False) for k in range(args.n)]
    images = [data.render_scene(s, seed=90_000 + k) for k, s in enumerate(scenes)]
    t0 = time.perf_counter()
    readings = evaluate.read_scene(images)
    seconds = time.perf_counter() - t0
    right = collections.Counter()
    by_relation = collections.Counter()
    for s, r in zip(scenes, readings):
        ok = evaluate.scene_correct(r, s, check_size=True)
        right.update({k: int(v) for k, v in ok.items()})
        if len(s.objects) == 2:
            by_relation[(s.relation, ok["relation"])] += 1
    rows = [f"| {k} | {right[k] / args.n:.1%} |" for k in ("objects", "relation", "background", "all")]
    rel = ", ".join(f"{r}: {by_relation[(r, True)]}/{by_relation[(r, True)] + by_relation[(r, False)]}"
                    for r in (*data.RELATIONS, "and"))
    lines = [f"\n## Scene reader, Shapes world 2 ({datetime.date.today()})\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), one torch thread. "
             f"`python benchmarks/bench_scene_reader.py --n {args.n}`: {args.n} unseen renders "
             f"({sum(len(s.objects) == 1 for s in scenes)} with one object, the rest with two), every "
             f"background, relation and (shape, colour) pair. Objects counted right when exactly the asked "
             f"objects are found with the asked shape, colour and size.\n",
             "| read right | share |", "|---|---|", *rows,
             f"\nRelations right, per relation: {rel}. {seconds / args.n * 1000:.1f} ms per image.\n"]
    print("\n".join(lines))
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
