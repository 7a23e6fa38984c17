"""GPU check at Stable Diffusion 1.5 size: ours vs diffusers on the same random weights.

512x512, 20 DPM-Solver++ steps, classifier-free guidance, batch 1, float16 (and bfloat16 for
ours): denoising it/s, seconds per image, peak GPU memory, and a NaN check of the decoded image
(the VAE decodes in float32). Needs a CUDA machine; appends to benchmarks/RESULTS.md.

    python benchmarks/bench_gpu.py [--compile]
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from sdlearn.configs import CLIP_VIT_L_TEXT, SD15_UNET, SD_VAE

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PROMPT, NEGATIVE = "a photo of a white cat", "blurry, low quality"


def timed(fn, steps: int) -> dict:
    """Run ``fn(callback)`` twice (warm-up, then timed); it/s from the callback timestamps."""
    stamps: list[float] = []

    def callback(*_):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    fn(callback)  # warm-up (cuDNN autotuning, allocator)
    stamps.clear()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    image = fn(callback)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    return {"it/s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "s/image": total,
            "peak GiB": torch.cuda.max_memory_allocated() / 2**30,
            "nan": bool(torch.isnan(torch.as_tensor(image)).any()), "mean": float(torch.as_tensor(image).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile(unet)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "bench_gpu.py needs a CUDA GPU"
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer as HFTokenizer

    from sdlearn.configs import SCHEDULER_CONFIG
    from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion

    torch.manual_seed(0)
    dev, half = torch.device("cuda"), torch.float16
    theirs = StableDiffusionPipeline(
        vae=AutoencoderKL(**{k: v for k, v in SD_VAE.items() if not k.startswith("_")}),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT)),
        tokenizer=HFTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer"),
        unet=UNet2DConditionModel(**{k: v for k, v in SD15_UNET.items() if not k.startswith("_")}),
        scheduler=DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ours = StableDiffusion.from_diffusers(theirs).to(dev, half)
    ours.progress_bar = False
    theirs.to(dev, half)
    theirs.vae.to(torch.float32)     # decode in float32 in both: same work, no float16 overflow
    theirs.set_progress_bar_config(disable=True)
    g = lambda: torch.Generator("cpu").manual_seed(0)  # noqa: E731

    @torch.no_grad()
    def run_theirs(cb):
        lat = theirs(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=args.steps, guidance_scale=7.5,
                     generator=g(), output_type="latent", callback_on_step_end=lambda p, i, t, kw: (cb(), kw)[1]).images
        return theirs.vae.decode(lat.float() / SD_VAE["scaling_factor"]).sample

    def run_ours(cb):
        return ours.text_to_image(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=args.steps,
                                  guidance_scale=7.5, generator=g(), output_type="pt", callback=lambda *a: cb())

    rows = {"diffusers fp16": timed(run_theirs, args.steps), "sdlearn fp16": timed(run_ours, args.steps)}
    ours.to(dtype=torch.bfloat16)
    rows["sdlearn bf16"] = timed(run_ours, args.steps)
    ours.to(dtype=half)
    if args.compile:
        ours.unet.forward = torch.compile(ours.unet.forward)
        rows["sdlearn fp16 + torch.compile"] = timed(run_ours, args.steps)
    ratio = rows["sdlearn fp16"]["it/s"] / rows["diffusers fp16"]["it/s"]
    name = torch.cuda.get_device_name()
    lines = [f"\n## GPU: SD 1.5 size, 512x512, {args.steps} DPM-Solver++ steps, CFG, batch 1 "
             f"({datetime.date.today()}, {name}, torch {torch.__version__})\n",
             "| run | it/s | s/image | peak GiB | NaN |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['it/s']:.1f} | {v['s/image']:.2f} | {v['peak GiB']:.2f} | {v['nan']} |" for k, v in rows.items()]
    lines.append(f"\nsdlearn / diffusers it/s at fp16: {ratio:.2f} (higher is faster). Random weights; the VAE "
                 "decodes in float32 in both.")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(RESULTS, "a") as f:
        f.write(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
