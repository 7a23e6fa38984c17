"""sdlearn's StableDiffusion against diffusers' pipelines on the same tiny random components.

Tolerance: both run the same float32 arithmetic in a different order (our attention and
convolutions are our own code), so latents differ by ~1e-6 per step; over 4-10 steps and a VAE
decode that stays below 1e-4 on images in [0, 1], far below one 8-bit grey level (3.9e-3).
"""
import numpy as np
import pytest
import torch
from diffusers import (DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionPipeline)
from PIL import Image

from sdlearn import schedulers
from sdlearn.configs import SCHEDULER_CONFIG
from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion

ATOL = 1e-4


@pytest.fixture(scope="module")
def pair(tiny_diffusers_parts):
    theirs = StableDiffusionPipeline(**tiny_diffusers_parts())
    theirs.set_progress_bar_config(disable=True)
    ours = StableDiffusion.from_diffusers(theirs)
    ours.progress_bar = False
    return theirs, ours


def latents(shape=(1, 4, 8, 8), seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_text_to_image_matches_diffusers(pair, negative):
    theirs, ours = pair
    kw = dict(negative_prompt=negative, num_inference_steps=6, guidance_scale=4.0, height=16, width=16)
    z = latents()
    ref = theirs("a red circle", latents=z.clone(), output_type="np", **kw).images
    got = ours.text_to_image("a red circle", latents=z.clone(), output_type="np", **kw)
    assert got.shape == ref.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(got, ref, atol=ATOL)


@pytest.mark.parametrize("sched", ["ours_in_theirs", "theirs_in_ours"])
def test_schedulers_swap_between_pipelines(pair, sched):
    theirs, ours = pair
    kw = dict(num_inference_steps=5, guidance_scale=3.0, height=16, width=16)
    z = latents(seed=2)
    ref = theirs("a blue star", latents=z.clone(), output_type="np", **kw).images
    if sched == "ours_in_theirs":
        pipe = StableDiffusionPipeline(**(dict(theirs.components) | {"scheduler": schedulers.DPMSolverPP.from_config(SCHEDULER_CONFIG)}))
        pipe.set_progress_bar_config(disable=True)
        got = pipe("a blue star", latents=z.clone(), output_type="np", **kw).images
    else:
        got = ours.text_to_image("a blue star", latents=z.clone(), output_type="np",
                                 scheduler=DPMSolverMultistepScheduler.from_config(SCHEDULER_CONFIG), **kw)
    np.testing.assert_allclose(got, ref, atol=ATOL)


def test_batch_of_prompts_and_seed_determinism(pair):
    _, ours = pair
    a = ours.text_to_image(["a red circle", "a green square"], num_inference_steps=3, height=16, width=16,
                           seed=7, output_type="pt")
    b = ours.text_to_image(["a red circle", "a green square"], num_inference_steps=3, height=16, width=16,
                           seed=7, output_type="pt")
    c = ours.text_to_image(["a red circle", "a green square"], num_inference_steps=3, height=16, width=16,
                           seed=8, output_type="pt")
    assert a.shape == (2, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    pil = ours.text_to_image("a red circle", num_inference_steps=2, height=16, width=16, seed=0)
    assert isinstance(pil[0], Image.Image) and pil[0].size == (16, 16)


def test_image_to_image_matches_diffusers(pair):
    theirs, ours = pair
    img2img = StableDiffusionImg2ImgPipeline(**theirs.components)
    img2img.set_progress_bar_config(disable=True)
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    kw = dict(strength=0.6, num_inference_steps=10, guidance_scale=3.0)
    ref = img2img("a red circle", image=image, generator=torch.Generator().manual_seed(3), output_type="np", **kw).images
    got = ours.image_to_image("a red circle", image, generator=torch.Generator().manual_seed(3), output_type="np", **kw)
    np.testing.assert_allclose(got, ref, atol=ATOL)


@pytest.mark.parametrize("in_channels", [4, 9])
def test_inpaint_matches_diffusers(tiny_diffusers_parts, in_channels):
    theirs = StableDiffusionInpaintPipeline(**tiny_diffusers_parts(in_channels=in_channels, seed=4))
    theirs.set_progress_bar_config(disable=True)
    ours = StableDiffusion.from_diffusers(theirs)
    ours.progress_bar = False
    rng = np.random.default_rng(1)
    image = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 8:16] = 255
    mask = Image.fromarray(mask, "L")
    kw = dict(num_inference_steps=6, guidance_scale=3.0, height=16, width=16)
    ref = theirs("a yellow diamond", image=image, mask_image=mask, generator=torch.Generator().manual_seed(5),
                 output_type="np", **kw).images
    got = ours.inpaint("a yellow diamond", image, mask, generator=torch.Generator().manual_seed(5),
                       output_type="np", num_inference_steps=6, guidance_scale=3.0)
    np.testing.assert_allclose(got, ref, atol=ATOL)


@pytest.mark.parametrize("call, error", [
    (dict(height=17), "multiple of"),     # not a multiple of the VAE factor (2 here)
    (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(negative_prompt=["a", "b"]), "negative_prompt"),
    (dict(scheduler="plms"), "unknown scheduler"),
    (dict(latents=torch.zeros(1, 4, 3, 3)), "latents must have shape"),
])
def test_bad_input_is_refused_before_denoising(pair, call, error):
    _, ours = pair
    steps = []
    with pytest.raises(ValueError, match=error):
        ours.text_to_image("a red circle", callback=lambda *a: steps.append(a), **call)
    assert steps == []


def test_image_errors(pair):
    _, ours = pair
    image = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="strength"):
        ours.image_to_image("x", image, strength=1.5)
    with pytest.raises(ValueError, match="RGB"):
        ours.image_to_image("x", Image.new("L", (16, 16)))
    with pytest.raises(ValueError, match="mask must be"):
        ours.inpaint("x", image, Image.new("L", (8, 8)))
    with pytest.raises(TypeError, match="prompt"):
        ours.text_to_image(3)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++", "euler", "euler_a"])
def test_every_sampler_name_runs(pair, name):
    _, ours = pair
    out = ours.text_to_image("a red circle", scheduler=name, num_inference_steps=3, height=16, width=16,
                             seed=0, output_type="pt")
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


def test_channels_last_gives_the_same_image(pair):
    _, ours = pair
    kw = dict(num_inference_steps=3, height=16, width=16, seed=0, output_type="pt")
    ref = ours.text_to_image("a red circle", **kw)
    ours.to(channels_last=True)
    try:
        got = ours.text_to_image("a red circle", **kw)
    finally:
        ours.unet.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_diffusers_runs_the_bundled_model_and_agrees():
    """TINY_MODEL_DIR is a diffusers folder: diffusers' own pipeline loads it offline and, from the
    same initial latents, draws the same picture as sdlearn (tolerance as above)."""
    theirs = StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR, safety_checker=None, local_files_only=True)
    theirs.set_progress_bar_config(disable=True)
    ours = StableDiffusion.tiny("cpu")
    ours.progress_bar = False
    z = latents()
    kw = dict(num_inference_steps=8, guidance_scale=5.0)
    ref = theirs("a small red circle in the top left", latents=z.clone(), output_type="np", **kw).images
    got = ours.text_to_image("a small red circle in the top left", latents=z.clone(), output_type="np", **kw)
    assert got.shape == ref.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(got, ref, atol=ATOL)
    # 72x40 pixels: latents 9x5, sides the UNet's two downsamplings don't divide. diffusers forwards
    # each skip's size to its upsampler; so does sdlearn, and the pipeline asks only for multiples of 8.
    z = latents((1, 4, 9, 5))
    kw |= dict(height=72, width=40)
    ref = theirs("a large blue star", latents=z.clone(), output_type="np", **kw).images
    got = ours.text_to_image("a large blue star", latents=z.clone(), output_type="np", **kw)
    assert got.shape == ref.shape == (1, 72, 40, 3)
    np.testing.assert_allclose(got, ref, atol=ATOL)
