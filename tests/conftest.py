"""Shared fixtures."""
import pytest
import torch

from sdlearn import schedulers
from sdlearn.clip import CLIPTextEncoder
from sdlearn.pipeline import StableDiffusion
from sdlearn.tokenizer import CLIPTokenizer
from sdlearn.train.t2i import SCHEDULER_CONFIG
from sdlearn.unet import UNet
from sdlearn.vae import VAE

TINY_SIZE = 16  # pixels: the tiny random VAE has two blocks (factor 2), so latents are 8x8


def build_tiny_pipeline(in_channels: int = 4, seed: int = 0) -> StableDiffusion:
    """A random sdlearn pipeline small enough to run in milliseconds (16x16 images, 8x8 latents)."""
    torch.manual_seed(seed)
    unet = UNet.from_config({
        "sample_size": 8, "in_channels": in_channels, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
        "attention_head_dim": 4, "norm_num_groups": 16})
    vae = VAE.from_config({"block_out_channels": [16, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
                           "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4,
                           "norm_num_groups": 8, "sample_size": TINY_SIZE})
    text = CLIPTextEncoder.from_config({"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                                        "num_hidden_layers": 2, "num_attention_heads": 4,
                                        "max_position_embeddings": 77})
    pipe = StableDiffusion(unet, vae, text, CLIPTokenizer(), schedulers.DPMSolverPP.from_config(SCHEDULER_CONFIG))
    pipe.progress_bar = False
    return pipe


@pytest.fixture(scope="session")
def tiny_pipeline():
    """The builder of tiny random pipelines: ``tiny_pipeline(in_channels=4, seed=0)``."""
    return build_tiny_pipeline


@pytest.fixture
def one_thread():
    """Run a test on one torch thread. On a busy 2-core machine two OpenMP threads waiting on each other
    make small forwards 5-50x slower; one thread is nearly as fast on an idle machine and steady on a busy one.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
