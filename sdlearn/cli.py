"""``python -m sdlearn generate`` and ``python -m sdlearn info``.

Every user error (a bad number, an output path that cannot be written, an unknown model folder or
device, a ``ValueError``/``TypeError`` from the pipeline) ends the command through
``ArgumentParser.error``: the usage, then one ``error:`` line that names the option, exit status 2,
no traceback. Everything that can be checked without the model is checked before it loads.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

MAX_SEED = 2**64 - 1     # torch.Generator.manual_seed takes 0 .. 2**64 - 1
MAX_UPSCALE = 16         # a 512 x 512 image enlarged 16 times is already 8192 x 8192
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")   # owner/name
# the pipeline's argument names -> this command's options, to reword the pipeline's own error messages
_PIPELINE_NAMES = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "negative_prompt": "--negative",
                   "height": "--height", "width": "--width"}

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


# ---------------------------------------------------------------------------- argument types
def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    allowed = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}; got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}; got {value}")
        return value

    return parse


def finite_float(low: float = 0.0, allow_low: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: a finite float ``>= low`` (``> low`` when ``allow_low`` is False)."""
    allowed = f"a finite number {'>=' if allow_low else '>'} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not allow_low):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text}")
        return value

    return parse


def one_line(error: BaseException) -> str:
    """An exception's message on one line (argparse prints it after ``error:``)."""
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------------------- checks before loading
def check_output(path: Path) -> str | None:
    """Why ``path`` can't take the PNG that ``generate`` writes (None when it can). Touches nothing:
    missing folders are created only when the image is saved."""
    name = f"-o/--output {str(path)!r}"
    if path.suffix.lower() != ".png":
        return f"{name}: the file name must end in .png (the image is saved as PNG); got {path.suffix or 'no suffix'!r}"
    if path.is_dir():
        return f"{name} is a folder; give a file name such as {str(path / 'out.png')!r}"
    folder = path.absolute().parent
    while not folder.exists():             # the folders that would be created on save
        folder = folder.parent
    if not folder.is_dir():
        return f"{name}: {str(folder)!r} is a file, not a folder"
    try:
        if path.exists():
            with open(path, "ab"):          # append mode: the file stays as it is until the image replaces it
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".sdlearn-", suffix=".png"):
                pass
    except OSError as e:
        return f"{name}: cannot write in {str(folder)!r} ({e.strerror or one_line(e)})"
    return None


def check_model(model: str | None) -> str | None:
    """Why ``--model`` names no loadable model (None when it may): a local folder must exist and hold
    ``unet/``, ``vae/``, ``text_encoder/``; anything else must look like a hub id ``owner/name``."""
    if model is None:
        return None
    name = f"--model {model!r}"
    folder = Path(model).expanduser()
    if folder.exists():
        if not folder.is_dir():
            return f"{name} is a file; give a diffusers folder (unet/, vae/, text_encoder/, ...) or a hub id"
        missing = [part + "/" for part in ("unet", "vae", "text_encoder") if not (folder / part).is_dir()]
        if missing:
            return f"{name} is not a diffusers Stable Diffusion folder: {', '.join(missing)} missing"
        return None
    if not _HUB_ID.fullmatch(model) or ".." in model:
        return f"{name}: no such folder, and not a hub id of the form owner/name"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return f"{name}: no such folder, and HF_HUB_OFFLINE=1 forbids downloading it from the hub"
    return None


def check_device(name: str | None) -> str | None:
    """Why ``--device`` can't be used here (None when it can): cpu, cuda, cuda:N or mps, if present."""
    from sdlearn.device import get_device

    if name is None:
        return None
    option = f"--device {name!r}"
    try:
        device = get_device(name)
    except ValueError:
        return f"{option}: unknown device; use cpu, cuda, cuda:N or mps"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"{option}: CUDA is not available on this machine; use cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"{option}: there are only {torch.cuda.device_count()} CUDA device(s) (cuda:0 ..)"
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            return f"{option}: MPS is not available on this machine; use cpu"
    elif device.type != "cpu":
        return f"{option}: use cpu, cuda, cuda:N or mps"
    return None


def _pipeline_message(error: Exception) -> str:
    """The pipeline's message with its argument names replaced by this command's options
    (``height``/``width`` only where they open the message: elsewhere they may describe a tensor)."""
    message = one_line(error)
    message = re.sub(r"\b(num_inference_steps|guidance_scale|negative_prompt)\b",
                     lambda m: _PIPELINE_NAMES[m.group(1)], message)
    return re.sub(r"^(height|width)\b", lambda m: _PIPELINE_NAMES[m.group(1)], message)


# ---------------------------------------------------------------------------- commands
def generate_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m sdlearn generate``."""
    from sdlearn.schedulers import SCHEDULERS

    ap = argparse.ArgumentParser(prog="python -m sdlearn generate", description=GENERATE_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", help="what to draw, in words")
    ap.add_argument("--negative", default=None, help="what to steer away from (negative prompt)")
    ap.add_argument("--steps", type=int_in(1), default=20, help="denoising steps, >= 1 (default 20)")
    ap.add_argument("--guidance", type=finite_float(0.0), default=5.0,
                    help="classifier-free guidance scale, finite and >= 0 (default 5; 1 = none)")
    ap.add_argument("--seed", type=int_in(0, MAX_SEED), nargs="+", default=[0],
                    help="one seed per image (0 .. 2**64-1); several make a grid")
    ap.add_argument("--sampler", default="dpm++", choices=sorted(SCHEDULERS), help="default dpm++ (DPM-Solver++ 2M)")
    ap.add_argument("--height", type=int_in(1), default=None, help="pixels (default: the model's size)")
    ap.add_argument("--width", type=int_in(1), default=None, help="pixels (default: the model's size)")
    ap.add_argument("--model", default=None, help="a diffusers folder or hub id (default: the bundled tiny model)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the best available)")
    ap.add_argument("--half", action="store_true", help="float16/bfloat16 UNet and text encoder (GPU)")
    ap.add_argument("--upscale", type=int_in(1, MAX_UPSCALE), default=4,
                    help=f"enlarge the saved image this many times (nearest), 1 .. {MAX_UPSCALE}; 1 keeps it (default 4)")
    ap.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="PNG file to write (default out.png)")
    return ap


def generate(argv: list[str]) -> None:
    """``python -m sdlearn generate PROMPT [options]``: write a PNG (a grid for several seeds)."""
    from sdlearn.pipeline import StableDiffusion
    from sdlearn.viz import image_grid

    ap = generate_parser()
    args = ap.parse_args(argv)
    for problem in (check_output(args.output), check_model(args.model), check_device(args.device)):
        if problem:
            ap.error(problem)

    try:
        pipe = StableDiffusion.tiny(args.device) if args.model is None else StableDiffusion.from_pretrained(
            args.model, args.device)
    except (ValueError, TypeError, OSError) as e:
        ap.error(f"--model {args.model!r}: {one_line(e)}" if args.model else one_line(e))
    if args.half:
        from sdlearn.device import get_dtype

        pipe.to(dtype=get_dtype(pipe.device, half=True))
    t0 = time.time()
    images = []
    try:
        for seed in args.seed:
            images += pipe.text_to_image(args.prompt, negative_prompt=args.negative, num_inference_steps=args.steps,
                                         guidance_scale=args.guidance, height=args.height, width=args.width,
                                         seed=seed, scheduler=args.sampler)
    except (ValueError, TypeError) as e:
        ap.error(_pipeline_message(e))
    out = images[0] if len(images) == 1 else image_grid(images, nrow=min(4, len(images)))
    if args.upscale > 1:
        out = out.resize((out.width * args.upscale, out.height * args.upscale), resample=0)
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        out.save(args.output, format="PNG")
    except OSError as e:
        ap.error(f"-o/--output {str(args.output)!r}: cannot write ({e.strerror or one_line(e)})")
    print(f"wrote {args.output} ({len(images)} image(s), {time.time() - t0:.1f} s)")


def info() -> None:
    """``python -m sdlearn info``: versions, the device, the bundled model's files."""
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
