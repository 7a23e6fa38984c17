"""Where tensors live and where randomness comes from.

Noise is always drawn on a CPU ``torch.Generator`` and then moved to the device, so a seed gives
the same starting latents on CPU, CUDA and MPS (GPU generators produce different streams).
"""
from __future__ import annotations

import logging
import random

import numpy as np
import torch

Generators = torch.Generator | list[torch.Generator] | None  # one generator, or one per batch item


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: ``cuda``, then ``mps``, then ``cpu`` (or ``prefer`` if given)."""
    if prefer is not None:
        try:
            return torch.device(prefer)
        except RuntimeError as e:
            raise ValueError(f"unknown device {prefer!r}; use 'cuda', 'cuda:N', 'mps' or 'cpu'") from e
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_dtype(device: torch.device | str, half: bool = False) -> torch.dtype:
    """float32 by default; with ``half=True``: bfloat16 where supported, else float16 (CUDA/MPS)."""
    device = torch.device(device)
    if not half:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator("cpu").manual_seed(seed)


def randn(shape: tuple[int, ...], generator: Generators = None, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal noise drawn on the CPU (from ``generator``) and moved to ``device``.
    A list of generators draws batch item i from generator i (as diffusers' ``randn_tensor``).
    The draw is float32 (float64 if asked) and then cast, so a float16 request is the float32 draw rounded.
    A generator already on ``device`` draws there (a diffusers pipeline on a GPU may hand one to a scheduler)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; give one per item")
        return torch.cat([randn((1, *shape[1:]), g, device, dtype) for g in generator])
    draw_on = torch.device("cpu") if generator is None else generator.device
    if draw_on.type not in ("cpu", torch.device(device).type):
        raise ValueError(f"generator must be a CPU torch.Generator (got one on {generator.device}); "
                         "sdlearn draws noise on the CPU so that every device starts from the same latents")
    draw_dtype = torch.promote_types(dtype, torch.float32)
    return torch.randn(shape, generator=generator, device=draw_on, dtype=draw_dtype).to(device=device, dtype=dtype)


def randn_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """``randn`` shaped like ``x``, on its device and in its dtype (the noise a sampler's step adds)."""
    return randn(tuple(x.shape), generator, x.device, x.dtype)


class _DropMessage(logging.Filter):
    """Drop the log records whose message contains ``text``; pass all others."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


TORCHVISION_NOTICE = "requires torchvision (not installed)"


def quiet_hub_loading() -> None:
    """Hide what diffusers and transformers print while loading that is not about your run: their
    "Loading weights" progress bars (stored in a notebook at "0%", they look like a stall) and
    transformers' notice that CLIPImageProcessor falls back to PIL without torchvision (no image
    processor is used in sdlearn). The notice is a log record, not a Python warning, so a logging
    filter drops it by its message; every other warning and log record still shows."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):   # once, however often it is called
        logger.addFilter(_DropMessage(TORCHVISION_NOTICE))
