"""Per-step scheduler overhead: sdlearn vs diffusers, same run, same inputs.

Times ``scale_model_input`` + ``step`` on SD-sized latents (default (2, 4, 64, 64): batch 1 with
classifier-free guidance) with a fixed tensor standing in for the UNet, so only the scheduler's own
work is measured. Appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/bench_schedulers.py [--steps 50] [--repeats 7] [--shape 2 4 64 64]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import diffusers
import torch

from sdlearn import schedulers as S

SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
ROWS = [("DDPM", S.DDPM, {}), ("DDIM", S.DDIM, {}), ("DPMSolverPP (2M)", S.DPMSolverPP, {}),
        ("DPMSolverPP (2M, Karras)", S.DPMSolverPP, {"use_karras_sigmas": True}), ("Euler", S.Euler, {}),
        ("EulerAncestral", S.EulerAncestral, {})]


def time_loop(scheduler, steps: int, x: torch.Tensor, eps: torch.Tensor) -> float:
    """Seconds per step of a full sampling loop (set_timesteps included, spread over the steps)."""
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    scheduler.set_timesteps(steps)
    sample = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        scheduler.scale_model_input(sample, t)
        sample = scheduler.step(eps, t, sample, generator=g).prev_sample
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--shape", type=int, nargs="+", default=[2, 4, 64, 64])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = ap.parse_args()
    x = torch.randn(*args.shape, generator=torch.Generator().manual_seed(0))
    eps = 0.1 * torch.randn(*args.shape, generator=torch.Generator().manual_seed(1))
    rows = []
    for name, ours_cls, extra in ROWS:
        theirs_cls = getattr(diffusers, ours_cls.diffusers_name)       # the diffusers class it matches
        ours, theirs = ours_cls.from_config(SD, **extra), theirs_cls.from_config(SD, **extra)
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):  # interleave, so machine load hits both alike
            t_ours.append(time_loop(ours, args.steps, x, eps))
            t_theirs.append(time_loop(theirs, args.steps, x, eps))
        o, d = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append((name, o * 1e6, d * 1e6, o / d))
        print(f"{name:26s} sdlearn {o * 1e6:8.0f} us/step  diffusers {d * 1e6:8.0f} us/step  ratio {o / d:.2f}")

    today = datetime.date.today().isoformat()
    lines = [f"\n## Scheduler overhead per step (bench_schedulers.py), {today}\n",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
             f"diffusers {diffusers.__version__}; CPU shared with other jobs, so absolute times are rough "
             "(the ratio is measured in the same run, interleaved). "
             f"Latents {tuple(args.shape)}, {args.steps} steps, SD v1 config, a fixed tensor in place of the "
             f"UNet; median of {args.repeats} loops, set_timesteps included.\n",
             "| scheduler | sdlearn us/step | diffusers us/step | sdlearn / diffusers |", "|---|---|---|---|"]
    lines += [f"| {n} | {o:.0f} | {d:.0f} | {r:.2f} |" for n, o, d, r in rows]
    with args.out.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
