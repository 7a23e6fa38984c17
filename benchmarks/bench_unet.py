"""Forward time and peak memory of sdlearn's UNet vs diffusers' UNet2DConditionModel on the same weights.

Both models hold the very same weight tensors (built once, assigned into both), run the same inputs,
and are timed interleaved (alternating which goes first) so that load from other processes hits both alike.
Peak memory is the rise of the process's resident memory during one forward (sampled every 0.5 ms
on CPU; torch.cuda.max_memory_allocated on CUDA). Appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/bench_unet.py                      # tiny + SD 1.5 size, CPU, float32 and bfloat16
    python benchmarks/bench_unet.py --configs tiny --repeats 20 --threads 1
    python benchmarks/bench_unet.py --device cuda --dtypes float32 float16
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from sdlearn.configs import SD15_UNET
from sdlearn.unet import UNet

RESULTS = Path(__file__).with_name("RESULTS.md")
TINY = {**SD15_UNET, "block_out_channels": [32, 64, 128, 128], "attention_head_dim": 4,
        "cross_attention_dim": 64, "norm_num_groups": 8, "sample_size": 16}
CASES = {  # name: (config, latent (B, C, H, W), text tokens)
    "tiny": (TINY, (2, 4, 16, 16), 77),
    "sd15": (SD15_UNET, (2, 4, 16, 16), 77),   # CFG batch of 2, a 128x128-pixel latent keeps CPU runs short
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn, device: torch.device) -> float:
    """MiB the process grows by while ``fn`` runs."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so the baseline is honest
    except OSError:
        pass
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    fn()
    done.set()
    sampler.join()
    return max(peak[0] - base, 0) / 2**20


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time leaves out the time other processes
    held the cores, so on a shared machine it is the steadier of the two."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_case(name: str, dtypes: list[torch.dtype], device: torch.device, repeats: int) -> list[dict]:
    config, shape, tokens = CASES[name]
    torch.manual_seed(0)
    with torch.device("meta"):
        ours, theirs = UNet.from_config(config), UNet2DConditionModel.from_config(config)
    ref_fp32 = UNet.from_config(config).state_dict()          # random weights, built once
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    context = torch.randn(shape[0], tokens, config["cross_attention_dim"], generator=g)
    t = torch.tensor([999, 500][: shape[0]] * (shape[0] // 2 or 1))[: shape[0]]
    rows = []
    for dtype in dtypes:
        state = {k: v.to(device=device, dtype=dtype) for k, v in ref_fp32.items()}
        ours.load_state_dict(state, assign=True)               # both models hold the same tensors
        theirs.load_state_dict(state, assign=True)
        ours.eval(), theirs.eval()
        xd, cd, td = x.to(device, dtype), context.to(device, dtype), t.to(device)
        run_ours = lambda: ours(xd, td, cd)
        run_theirs = lambda: theirs(xd, td, encoder_hidden_states=cd).sample
        with torch.inference_mode():
            err = (run_ours().float() - run_theirs().float()).abs().max().item()   # also the warm-up
            times = {"sdlearn": [], "diffusers": []}
            for i in range(repeats):  # alternate who goes first, so neither always follows the other
                order = [("sdlearn", run_ours), ("diffusers", run_theirs)][:: 1 if i % 2 == 0 else -1]
                for who, fn in order:
                    times[who].append(timed(fn, device))
            mem = {"sdlearn": peak_memory(run_ours, device), "diffusers": peak_memory(run_theirs, device)}
        med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        rows.append(dict(case=name, shape=shape, dtype=str(dtype).removeprefix("torch."), repeats=repeats,
                         ours_ms=1000 * med["sdlearn"], theirs_ms=1000 * med["diffusers"],
                         ours_min=1000 * min(times["sdlearn"])[0], theirs_min=1000 * min(times["diffusers"])[0],
                         ours_cpu=1000 * cpu["sdlearn"], theirs_cpu=1000 * cpu["diffusers"],
                         ours_mib=mem["sdlearn"], theirs_mib=mem["diffusers"], max_diff=err))
        print(rows[-1], flush=True)
        del state
    del ours, theirs, ref_fp32
    gc.collect()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "sd15"], choices=list(CASES))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per model (default: tiny 20, sd15 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-write", action="store_true", help="print only, don't append to RESULTS.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes]
    rows = []
    for name in args.configs:
        rows += bench_case(name, dtypes, device, args.repeats or (20 if name == "tiny" else 3))

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""))
    lines = [f"\n## UNet forward: sdlearn vs diffusers, same weights ({datetime.date.today()}, {device.type})\n",
             f"Machine: {machine}. `python benchmarks/bench_unet.py {' '.join(os.sys.argv[1:])}`. Shared machine: "
             "the two models are timed interleaved, median (and min) of the runs, wall-clock and process CPU time; "
             "ratio = sdlearn / diffusers, < 1 means sdlearn is faster.\n",
             "| config | latent | dtype | runs | sdlearn ms | diffusers ms | ratio (median) | ratio (min) "
             "| sdlearn CPU ms | diffusers CPU ms | ratio (CPU) | sdlearn peak MiB | diffusers peak MiB | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | {r['repeats']} "
                     f"| {r['ours_ms']:.1f} | {r['theirs_ms']:.1f} | {r['ours_ms'] / r['theirs_ms']:.2f} "
                     f"| {r['ours_min'] / r['theirs_min']:.2f} | {r['ours_cpu']:.1f} | {r['theirs_cpu']:.1f} "
                     f"| {r['ours_cpu'] / r['theirs_cpu']:.2f} | {r['ours_mib']:.0f} | {r['theirs_mib']:.0f} "
                     f"| {r['max_diff']:.2g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
