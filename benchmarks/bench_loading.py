"""Loading: time and peak memory to reject a bogus 400-byte SD single file, and to load the tiny model
folder, sdlearn vs diffusers; appends to benchmarks/RESULTS.md.

Each measurement runs in a fresh subprocess (imports done first, not counted): wall time of the call,
and its peak memory as the growth of the process's peak RSS (``resource.ru_maxrss``) over its RSS
just before the call (an upper bound of what the call itself needed).

    python benchmarks/bench_loading.py [--baseline DIR]   # DIR: an older checkout to compare with
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from sdlearn import weights as W
from sdlearn.pipeline import TINY_MODEL_DIR

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ROOT = Path(__file__).resolve().parents[1]

# Runs in the subprocess: SETUP (imports), then CALL timed and measured; prints one JSON line.
HARNESS = """
import json, resource, time
{setup}
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
before = rss_mb()
t0 = time.perf_counter()
try:
    {call}
    outcome = "loaded"
except Exception as err:
    outcome = type(err).__name__ + ": " + str(err).splitlines()[0][:110]
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_mb": peak - before, "outcome": outcome}}))
"""


def measure(setup: str, call: str, pythonpath: Path = ROOT) -> dict:
    """Run ``call`` after ``setup`` in a fresh offline, one-thread interpreter; return its figures."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(pythonpath)}
    code = HARNESS.format(setup=setup, call=call)
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=pythonpath, capture_output=True, text=True,
                         timeout=600)  # cwd: `python -c` puts it first on sys.path
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"seconds": float("nan"), "peak_mb": float("nan"), "outcome": "crashed: " + run.stderr[-300:]}
    return json.loads(lines[-1])


def sd15_config_folder(folder: Path) -> Path:
    """The SD 1.5 configs as a local diffusers folder (what diffusers' from_single_file reads offline
    through ``config=``; without one it asks the hub for them)."""
    cfg = W.SD_CONFIGS["v1"]
    for part, config in (("unet", cfg["unet"]), ("vae", cfg["vae"] | {"_class_name": "AutoencoderKL"}),
                         ("text_encoder", cfg["text_encoder"] | {"architectures": ["CLIPTextModel"]})):
        (folder / part).mkdir(parents=True, exist_ok=True)
        (folder / part / "config.json").write_text(json.dumps(config))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler",
                                                                            **cfg["scheduler"]}))
    W.write_model_index(folder, scheduler="DDIMScheduler")
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, default=None, help="an older sdlearn checkout to measure too")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    # right prefixes and key names, wrong shapes: the full SD architecture must be consulted to refuse it
    bogus = W.save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2),
                         "first_stage_model.encoder.conv_in.weight": torch.zeros(2),
                         "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)},
                        tmp / "bogus.safetensors")
    config = sd15_config_folder(tmp / "sd15")
    ours_setup = "from sdlearn.pipeline import StableDiffusion"
    ours_call = f"StableDiffusion.from_single_file({str(bogus)!r}, device='cpu')"
    theirs_setup = "from diffusers import StableDiffusionPipeline\nfrom transformers import CLIPTokenizer"
    tokenizer = f"CLIPTokenizer.from_pretrained({str(TINY_MODEL_DIR / 'tokenizer')!r})"
    rows = [("sdlearn `StableDiffusion.from_single_file` (bogus file)", measure(ours_setup, ours_call))]
    if args.baseline:
        rows.append((f"sdlearn before (`{args.baseline}`), same call", measure(ours_setup, ours_call, args.baseline)))
    rows += [
        ("diffusers `from_single_file` (bogus file), no config", measure(
            theirs_setup, f"StableDiffusionPipeline.from_single_file({str(bogus)!r}, local_files_only=True)")),
        ("diffusers `from_single_file` (bogus file), local `config=` folder", measure(
            theirs_setup, f"StableDiffusionPipeline.from_single_file({str(bogus)!r}, config={str(config)!r}, "
                          f"local_files_only=True, tokenizer={tokenizer}, safety_checker=None)")),
        ("sdlearn `StableDiffusion.from_pretrained(TINY_MODEL_DIR)`", measure(
            ours_setup, f"StableDiffusion.from_pretrained({str(TINY_MODEL_DIR)!r}, device='cpu')")),
        ("diffusers `StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR)`", measure(
            theirs_setup, f"StableDiffusionPipeline.from_pretrained({str(TINY_MODEL_DIR)!r}, safety_checker=None, "
                          "local_files_only=True)")),
    ]
    if args.baseline:
        rows.append((f"sdlearn before (`{args.baseline}`), tiny folder", measure(
            ours_setup, f"StableDiffusion.from_pretrained({str(TINY_MODEL_DIR)!r}, device='cpu')", args.baseline)))
    for label, r in rows:
        print(f"{label}: {r['seconds']:.2f} s, {r['peak_mb']:.0f} MB, {r['outcome']}")

    lines = [f"\n## Loading: rejecting a bogus single file, loading the tiny folder (bench_loading.py), "
             f"{datetime.date.today()}\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
             f"one thread, HF_HUB_OFFLINE=1. `python benchmarks/bench_loading.py"
             f"{' --baseline ' + str(args.baseline) if args.baseline else ''}`. Bogus file: "
             f"{bogus.stat().st_size} bytes, three SD-layout keys (UNet, VAE, text encoder) of shape (2,). "
             "Each call in a fresh process after its imports; memory is the growth of peak RSS over the RSS "
             "before the call.\n",
             "| call | seconds | peak memory (MB) | outcome |", "|---|---|---|---|"]
    lines += [f"| {label} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['outcome'].replace('|', '/')} |"
              for label, r in rows]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
