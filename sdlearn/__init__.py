"""sdlearn: Stable Diffusion built from scratch, for learning.

Submodules (import what you need; nothing heavy happens at import time):
device, data, schedules, schedulers, attention, tokenizer, clip, vae, unet, pipeline, weights,
train, evaluate, viz; toys (the course's small teaching models: PixelUNet, TinyCLIP).
"""
from pathlib import Path

__version__ = "0.1.0"

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"
"""The package data: bundled weights, the CLIP vocabulary and the figures notebooks show
(``figures/``). Notebooks find every file they read through here, never through a path
relative to the checkout, so that they run from a pip install (Colab, a classroom machine)."""
