"""Behaviour of image_to_image (SDEdit) and inpaint on tiny random sdlearn models.

tests/test_pipeline.py checks that both equal diffusers' pipelines; these tests check what the
methods *promise*: strength decides how many steps run, strength 0 is the VAE round trip, inpainting
never changes the unmasked latents, an all-white mask is text-to-image, the 9-channel UNet sees
[z_t, mask, masked-image latents], and bad input is refused before any step runs.
"""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from sdlearn.device import randn
from sdlearn.pipeline import StableDiffusion

SIZE = 16  # pixels; the VAE has two blocks (factor 2), so latents are 8x8


@pytest.fixture(scope="module")
def pipe(tiny_pipeline) -> StableDiffusion:
    return tiny_pipeline()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))


def box_mask(top: int, left: int, size: int) -> Image.Image:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[top:top + size, left:left + size] = 255
    return Image.fromarray(m, "L")


# ---------------------------------------------------------------- image to image
@pytest.mark.parametrize("strength, steps", [(0.0, 0), (0.25, 2), (0.5, 5), (0.75, 7), (1.0, 10)])
def test_strength_decides_the_number_of_steps(pipe, image, strength, steps):
    calls = []
    pipe.image_to_image("a red circle", image, strength=strength, num_inference_steps=10, seed=0,
                        output_type="latent", callback=lambda i, t, z: calls.append(int(t)))
    assert len(calls) == steps
    schedule = copy.deepcopy(pipe.scheduler)                  # each call runs on its own copy
    schedule.set_timesteps(10)
    full = schedule.timesteps.tolist()
    assert calls == full[len(full) - steps:]  # the *last* steps of the schedule: the low-noise end


def test_strength_zero_is_the_vae_round_trip(pipe, image):
    out = pipe.image_to_image("a red circle", image, strength=0.0, seed=3, output_type="pt")
    x = pipe._image_tensor(image, 1)
    z = pipe.encode_image(x, torch.Generator().manual_seed(3))       # the same posterior sample
    expected = (pipe.decode_latents(z) + 1) / 2
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_more_strength_moves_further_from_the_input(pipe, image):
    """Averaged over seeds, the output's latents drift monotonically away from the input's."""
    x = pipe._image_tensor(image, 1)
    z0 = pipe.encode_image(x, torch.Generator().manual_seed(0))
    dist = []
    for strength in (0.0, 0.3, 0.6, 1.0):
        z = pipe.image_to_image(["a blue star"] * 4, image, strength=strength, num_inference_steps=10,
                                seed=0, output_type="latent")        # (4, 4, 8, 8): four noise draws
        dist.append(float((z - z0).pow(2).mean()))
    assert dist == sorted(dist), dist
    assert dist[0] < 0.1 * dist[-1]


def test_same_seed_same_image(pipe, image):
    kw = dict(strength=0.5, num_inference_steps=4, output_type="pt")
    a = pipe.image_to_image("a red circle", image, seed=1, **kw)
    b = pipe.image_to_image("a red circle", image, seed=1, **kw)
    c = pipe.image_to_image("a red circle", image, seed=2, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- inpainting, 4-channel UNet
def test_inpaint_keeps_the_unmasked_latents_exactly(pipe, image):
    mask = box_mask(4, 8, 8)                                         # 8x8 pixels -> 4x4 latents
    z = pipe.inpaint("a yellow diamond", image, mask, num_inference_steps=6, seed=5, output_type="latent")
    z0 = pipe.encode_image(pipe._image_tensor(image, 1), torch.Generator().manual_seed(5))
    m = torch.nn.functional.interpolate(pipe._mask_tensor(mask, 1, SIZE, SIZE), size=z.shape[-2:])
    keep = m.expand_as(z) == 0
    assert keep.sum() == 4 * (64 - 16)
    torch.testing.assert_close(z[keep], z0[keep], rtol=0, atol=0)    # the last blend puts z0 back
    assert (z[~keep] - z0[~keep]).abs().mean() > 0.1                 # ...and the hole was repainted


def test_black_mask_is_the_round_trip_and_white_mask_is_text_to_image(pipe, image):
    kw = dict(num_inference_steps=4, guidance_scale=3.0, output_type="pt")
    black = pipe.inpaint("a green square", image, box_mask(0, 0, 0), seed=2, **kw)
    z0 = pipe.encode_image(pipe._image_tensor(image, 1), torch.Generator().manual_seed(2))
    torch.testing.assert_close(black, (pipe.decode_latents(z0) + 1) / 2, rtol=0, atol=0)

    white = pipe.inpaint("a green square", image, box_mask(0, 0, SIZE), seed=2, **kw)
    g = torch.Generator().manual_seed(2)
    pipe.encode_image(pipe._image_tensor(image, 1), g)               # inpaint draws the posterior first,
    noise = randn((1, 4, 8, 8), g)                                   # then the starting noise
    t2i = pipe.text_to_image("a green square", latents=noise, height=SIZE, width=SIZE, **kw)
    torch.testing.assert_close(white, t2i, rtol=0, atol=1e-6)


def test_pil_and_tensor_masks_agree(pipe, image):
    mask = box_mask(0, 0, 8)
    as_tensor = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)   # (H, W) in [0, 1]
    a = pipe.inpaint("a red circle", image, mask, num_inference_steps=3, seed=0, output_type="latent")
    b = pipe.inpaint("a red circle", image, as_tensor, num_inference_steps=3, seed=0, output_type="latent")
    assert torch.equal(a, b)


# ---------------------------------------------------------------- inpainting, 9-channel UNet
def test_nine_channel_unet_sees_latents_mask_and_masked_image(tiny_pipeline):
    pipe = tiny_pipeline(in_channels=9, seed=1)
    rng = np.random.default_rng(1)
    image = Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))
    mask = box_mask(8, 0, 8)
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        pipe.inpaint("a purple star", image, mask, num_inference_steps=3, guidance_scale=2.0, seed=0,
                     output_type="latent")
    finally:
        hook.remove()
    assert len(seen) == 3 and all(x.shape == (2, 9, 8, 8) for x in seen)  # [uncond; cond] x (4 + 1 + 4)
    m_latent = torch.zeros(8, 8)
    m_latent[4:, :4] = 1
    for x in seen:
        assert torch.equal(x[:, 4], m_latent.expand(2, -1, -1))          # channel 4: the mask
        assert torch.equal(x[:, 5:], seen[0][:, 5:])                      # 5-8: fixed masked-image latents
        assert torch.equal(x[0], x[1])                                    # same input for both CFG halves
    masked = pipe._image_tensor(image, 1) * (pipe._mask_tensor(mask, 1, SIZE, SIZE) < 0.5)
    g = torch.Generator().manual_seed(0)
    randn((1, 4, 8, 8), g)                                               # strength 1: noise first
    torch.testing.assert_close(seen[0][:1, 5:], pipe.encode_image(masked, g), rtol=0, atol=0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("method, kwargs, error, match", [
    ("image_to_image", dict(strength=-0.1), ValueError, "strength must be a finite number in"),
    ("image_to_image", dict(strength=1.01), ValueError, "strength must be a finite number in"),
    ("image_to_image", dict(image=Image.new("L", (SIZE, SIZE))), ValueError, "RGB"),
    ("image_to_image", dict(image=np.zeros((SIZE, SIZE))), ValueError, "image array must be"),
    ("image_to_image", dict(image=torch.zeros(1, 4, SIZE, SIZE)), ValueError, "3 \\(RGB\\) channels"),
    ("image_to_image", dict(image=Image.new("RGB", (15, 15))), ValueError, "multiple of"),
    ("inpaint", dict(mask=box_mask(0, 0, 4).resize((8, 8))), ValueError, "mask must be"),
    ("inpaint", dict(mask=torch.zeros(2, SIZE, SIZE + 8)), ValueError, "mask must be"),
    ("inpaint", dict(mask=[[0, 1]]), TypeError, "mask must be a PIL image"),
    ("inpaint", dict(strength=2.0), ValueError, "strength must be a finite number in"),
    ("inpaint", dict(prompt=["a", "b"], image=[Image.new("RGB", (SIZE, SIZE))] * 3), ValueError, "3 images for 2"),
])
def test_bad_input_is_refused_before_any_step(pipe, image, method, kwargs, error, match):
    calls = []
    args = dict(prompt="a red circle", image=image) | ({"mask": box_mask(0, 0, 8)} if method == "inpaint" else {})
    with pytest.raises(error, match=match):
        getattr(pipe, method)(**(args | kwargs), num_inference_steps=3, callback=lambda *a: calls.append(a))
    assert calls == []


def test_inpaint_refuses_a_unet_with_other_input_channels(tiny_pipeline, image):
    pipe = tiny_pipeline(in_channels=5)
    with pytest.raises(ValueError, match="4 or 9 input channels"):
        pipe.inpaint("a red circle", image, box_mask(0, 0, 8))
