"""Shared fixtures: one tiny random Stable Diffusion, built as sdlearn modules or as diffusers/transformers
ones from the same three configs, and a one-thread switch."""
from typing import Any

import pytest
import torch

from sdlearn import schedulers
from sdlearn.clip import CLIPTextEncoder
from sdlearn.configs import SCHEDULER_CONFIG
from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion
from sdlearn.tokenizer import CLIPTokenizer
from sdlearn.unet import UNet
from sdlearn.vae import VAE

TINY_SIZE = 16  # pixels: the tiny random VAE has two blocks (factor 2), so latents are 8x8
TINY_UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
             "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
             "attention_head_dim": 4, "norm_num_groups": 16}
TINY_VAE = {"block_out_channels": [16, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 8,
            "sample_size": TINY_SIZE}
TINY_TEXT = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 77}


def build_tiny_pipeline(in_channels: int = 4, seed: int = 0) -> StableDiffusion:
    """A random sdlearn pipeline small enough to run in milliseconds (16x16 images, 8x8 latents)."""
    torch.manual_seed(seed)
    unet = UNet.from_config({**TINY_UNET, "in_channels": in_channels})
    vae, text = VAE.from_config(TINY_VAE), CLIPTextEncoder.from_config(TINY_TEXT)
    pipe = StableDiffusion(unet, vae, text, CLIPTokenizer(), schedulers.DPMSolverPP.from_config(SCHEDULER_CONFIG))
    pipe.progress_bar = False
    return pipe


def build_tiny_diffusers_parts(in_channels: int = 4, seed: int = 0) -> dict[str, Any]:
    """The same tiny model as diffusers/transformers modules (random weights of their own), with the
    bundled CLIP tokenizer and DPM-Solver++: ``StableDiffusionPipeline(**parts)`` (or Img2Img, Inpaint)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers import CLIPTokenizer as HFTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**TINY_UNET, "in_channels": in_channels})
    vae, text = AutoencoderKL.from_config(TINY_VAE), CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    return dict(unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(),
                tokenizer=HFTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer"),
                scheduler=DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="session")
def tiny_pipeline():
    """The builder of tiny random sdlearn pipelines: ``tiny_pipeline(in_channels=4, seed=0)``."""
    return build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_diffusers_parts():
    """The builder of the same tiny model in diffusers: ``tiny_diffusers_parts(in_channels=4, seed=0)``."""
    return build_tiny_diffusers_parts


@pytest.fixture
def one_thread():
    """Run a test on one torch thread. On a busy 2-core machine two OpenMP threads waiting on each other
    make small forwards 5-50x slower; one thread is nearly as fast on an idle machine and steady on a busy one.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
