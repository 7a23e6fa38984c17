"""sdlearn: Stable Diffusion built from scratch, for learning.

Submodules (import what you need; nothing heavy happens at import time):
device, data, schedules, schedulers, attention, tokenizer, clip, vae, unet, pipeline, weights,
train, evaluate, viz.
"""
__version__ = "0.1.0"
