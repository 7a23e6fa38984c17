"""``python -m sdlearn generate`` and ``python -m sdlearn info``."""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

GENERATE_HELP = """Turn a prompt into an image with the bundled tiny model (offline, CPU is fine).

The tiny model knows the Shapes world: one shape (circle, square, triangle, diamond, star) in one
colour (red, orange, yellow, green, blue, purple), small or large, at one of nine places (top left,
top center, top right, center left, center, center right, bottom left, bottom center, bottom right).

examples:
  python -m sdlearn generate "a red circle in the top left" -o out.png
  python -m sdlearn generate "a large purple star in the center" --seed 0 1 2 3 -o grid.png
  python -m sdlearn generate "a green square" --sampler euler --steps 30 --guidance 7.5
  python -m sdlearn generate "a photo of a cat" --model stable-diffusion-v1-5/stable-diffusion-v1-5 --device cuda
"""


def generate(argv: list[str]) -> None:
    from sdlearn.pipeline import SAMPLERS, StableDiffusion
    from sdlearn.viz import image_grid

    ap = argparse.ArgumentParser(prog="python -m sdlearn generate", description=GENERATE_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", help="what to draw, in words")
    ap.add_argument("--negative", default=None, help="what to steer away from (negative prompt)")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    ap.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="one seed per image; several make a grid")
    ap.add_argument("--sampler", default="dpm++", choices=sorted(SAMPLERS), help="default dpm++ (DPM-Solver++ 2M)")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--model", default=None, help="a diffusers folder or hub id (default: the bundled tiny model)")
    ap.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    ap.add_argument("--half", action="store_true", help="float16/bfloat16 UNet and text encoder (GPU)")
    ap.add_argument("--upscale", type=int, default=4, help="enlarge the saved image this many times (nearest); 1 keeps it")
    ap.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="PNG file to write")
    args = ap.parse_args(argv)

    pipe = StableDiffusion.tiny(args.device) if args.model is None else StableDiffusion.from_pretrained(args.model, args.device)
    if args.half:
        from sdlearn.device import get_dtype

        pipe.to(dtype=get_dtype(pipe.device, half=True))
    t0 = time.time()
    images = []
    for seed in args.seed:
        images += pipe.text_to_image(args.prompt, negative_prompt=args.negative, num_inference_steps=args.steps,
                                     guidance_scale=args.guidance, height=args.height, width=args.width,
                                     seed=seed, scheduler=args.sampler)
    out = images[0] if len(images) == 1 else image_grid(images, nrow=min(4, len(images)))
    if args.upscale > 1:
        out = out.resize((out.width * args.upscale, out.height * args.upscale), resample=0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.output)
    print(f"wrote {args.output} ({len(images)} image(s), {time.time() - t0:.1f} s)")


def info() -> None:
    import diffusers
    import transformers

    from sdlearn import __version__
    from sdlearn.device import get_device
    from sdlearn.pipeline import TINY_MODEL_DIR

    device = get_device()
    print(f"sdlearn      {__version__}")
    print(f"python       {sys.version.split()[0]} ({platform.platform()})")
    print(f"torch        {torch.__version__}  threads={torch.get_num_threads()}")
    print(f"diffusers    {diffusers.__version__}")
    print(f"transformers {transformers.__version__}")
    print(f"device       {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    print(f"hub          {'offline (HF_HUB_OFFLINE=1)' if os.environ.get('HF_HUB_OFFLINE') == '1' else 'online allowed'}")
    files = sorted(p for p in TINY_MODEL_DIR.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files) / 2**20
    print(f"tiny model   {TINY_MODEL_DIR} ({len(files)} files, {size:.1f} MiB)")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        print(f"  {part:<12} {'ok' if (TINY_MODEL_DIR / part).is_dir() else 'missing'}")
