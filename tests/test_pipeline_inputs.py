"""The pipeline refuses bad input clearly, follows diffusers' conventions, and is safe to share.

* ``BAD_INPUTS``: every public argument of text_to_image / image_to_image / inpaint, with values a
  learner (or a web form) might hand in. Each must raise the named error type *before any denoising
  step*, with a message that names the argument.
* Image tensors are in [0, 1] as in diffusers, so ``output_type="pt"`` round-trips.
* A list of generators, one per prompt: batch item i equals the single run with generator i, on
  all five samplers (the ancestral ones draw fresh noise at every step).
* Three threads sharing one pipeline get what the same calls give one after another.
* NaN/inf never turns silently into a black image: inputs are refused, overflow is named.
"""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_SIZE as SIZE
from sdlearn import schedulers
from sdlearn.data import to_tensor

pytestmark = pytest.mark.usefixtures("one_thread")

RGB = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
MASK = Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 4), "L")   # white 8x8 square = repaint
T2I, I2I, INP = "text_to_image", "image_to_image", "inpaint"
ALL = (T2I, I2I, INP)
nan = float("nan")


def _cases() -> list[tuple[str, dict, type, str]]:
    """(method, keyword arguments, error type, text the message must contain)."""
    c: list[tuple[str, dict, type, str]] = []
    for m in ALL:                                   # arguments all three tasks share
        c += [
            (m, dict(prompt=None), TypeError, "prompt"),
            (m, dict(prompt=5), TypeError, "prompt"),
            (m, dict(prompt=[]), TypeError, "prompt"),
            (m, dict(prompt=["a", 3]), TypeError, "prompt"),
            (m, dict(prompt=b"a red circle"), TypeError, "prompt"),
            (m, dict(negative_prompt=7), TypeError, "negative_prompt"),
            (m, dict(negative_prompt=["a", "b"]), ValueError, "negative_prompt"),
            (m, dict(num_inference_steps=0), ValueError, "num_inference_steps"),
            (m, dict(num_inference_steps=-3), ValueError, "num_inference_steps"),
            (m, dict(num_inference_steps=2.5), TypeError, "num_inference_steps"),
            (m, dict(num_inference_steps="20"), TypeError, "num_inference_steps"),
            (m, dict(num_inference_steps=None), TypeError, "num_inference_steps"),
            (m, dict(num_inference_steps=True), TypeError, "num_inference_steps"),
            (m, dict(num_inference_steps=10**6), ValueError, "num_inference_steps"),
            (m, dict(guidance_scale=float("inf")), ValueError, "guidance_scale"),
            (m, dict(guidance_scale=1e30), ValueError, "guidance_scale"),
            (m, dict(guidance_scale=nan), ValueError, "guidance_scale"),
            (m, dict(guidance_scale=-1.0), ValueError, "guidance_scale"),
            (m, dict(guidance_scale="5"), TypeError, "guidance_scale"),
            (m, dict(guidance_scale=None), TypeError, "guidance_scale"),
            (m, dict(guidance_scale=torch.tensor([5.0, 1.0])), TypeError, "guidance_scale"),
            (m, dict(seed=-1), ValueError, "seed"),
            (m, dict(seed=2**64), ValueError, "seed"),
            (m, dict(seed="0"), TypeError, "seed"),
            (m, dict(seed=2.5), TypeError, "seed"),
            (m, dict(seed=0, generator=torch.Generator()), ValueError, "seed or generator"),
            (m, dict(generator="abc"), TypeError, "generator"),
            (m, dict(generator=[torch.Generator()] * 2), ValueError, "generator"),
            (m, dict(generator=[torch.Generator(), 1]), TypeError, "generator"),
            (m, dict(scheduler="plms"), ValueError, "scheduler"),
            (m, dict(scheduler=42), TypeError, "scheduler"),
            (m, dict(output_type="png"), ValueError, "output_type"),
            (m, dict(output_type=None), ValueError, "output_type"),
            (m, dict(callback="print"), TypeError, "callback"),
        ]
    c += [                                          # text to image: size and starting noise
        (T2I, dict(height=-64), ValueError, "height"),
        (T2I, dict(height=0), ValueError, "height"),
        (T2I, dict(height=17), ValueError, "height"),
        (T2I, dict(width=15), ValueError, "width"),
        (T2I, dict(height="64"), TypeError, "height"),
        (T2I, dict(width=16.0), TypeError, "width"),
        (T2I, dict(height=10**6), ValueError, "height"),
        (T2I, dict(latents=np.zeros((1, 4, 8, 8), np.float32)), TypeError, "latents"),
        (T2I, dict(latents=[[0.0]]), TypeError, "latents"),
        (T2I, dict(latents=torch.zeros(1, 4, 3, 3)), ValueError, "latents"),
        (T2I, dict(latents=torch.zeros(2, 4, 8, 8)), ValueError, "latents"),
        (T2I, dict(latents=torch.zeros(1, 4, 8, 8, dtype=torch.long)), TypeError, "latents"),
        (T2I, dict(latents=torch.full((1, 4, 8, 8), nan)), ValueError, "latents"),
        (T2I, dict(latents=torch.full((1, 4, 8, 8), float("inf"))), ValueError, "latents"),
        (T2I, dict(latents=torch.zeros(1, 4, 8, 8, device="meta")), ValueError, "latents"),
    ]
    for m in (I2I, INP):                            # the input image and strength
        c += [
            (m, dict(strength="0.5"), TypeError, "strength"),
            (m, dict(strength="1"), TypeError, "strength"),
            (m, dict(strength=None), TypeError, "strength"),
            (m, dict(strength=-0.1), ValueError, "strength"),
            (m, dict(strength=1.01), ValueError, "strength"),
            (m, dict(strength=nan), ValueError, "strength"),
            (m, dict(image=None), TypeError, "image"),
            (m, dict(image="cat.png"), TypeError, "image"),
            (m, dict(image=[]), ValueError, "image"),
            (m, dict(image=Image.new("L", (SIZE, SIZE))), ValueError, "RGB"),
            (m, dict(image=Image.new("RGB", (0, 0))), ValueError, "image"),
            (m, dict(image=Image.new("RGB", (15, 15))), ValueError, "multiple of"),
            (m, dict(image=[RGB, Image.new("RGB", (SIZE + 2, SIZE))]), ValueError, "same size"),
            (m, dict(image=torch.rand(1, 4, SIZE, SIZE)), ValueError, "3 (RGB) channels"),
            (m, dict(image=torch.rand(SIZE, SIZE)), ValueError, "3 (RGB) channels"),
            (m, dict(image=torch.rand(1, 3, SIZE, SIZE) * 2 - 1.0001), ValueError, "[0, 1]"),
            (m, dict(image=torch.rand(1, 3, SIZE, SIZE) * 255), ValueError, "255"),
            (m, dict(image=torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)), TypeError, "uint8"),
            (m, dict(image=torch.full((1, 3, SIZE, SIZE), nan)), ValueError, "NaN"),
            (m, dict(image=torch.zeros(1, 3, SIZE, SIZE, device="meta")), ValueError, "meta"),
            (m, dict(image=np.zeros((SIZE, SIZE))), ValueError, "image array"),
            (m, dict(image=np.full((SIZE, SIZE, 3), 255.0)), ValueError, "[0, 1]"),
            (m, dict(prompt=["a", "b"], image=[RGB] * 3), ValueError, "3 images for 2"),
        ]
    c += [                                          # inpainting masks
        (INP, dict(mask=None), TypeError, "mask"),
        (INP, dict(mask=[[0, 1]]), TypeError, "mask"),
        (INP, dict(mask=MASK.resize((8, 8))), ValueError, "mask must be"),
        (INP, dict(mask=torch.zeros(2, SIZE, SIZE + 8)), ValueError, "mask must be"),
        (INP, dict(mask=torch.zeros(1, 1, 1, SIZE, SIZE)), ValueError, "mask must be"),
        (INP, dict(mask=torch.zeros(SIZE, SIZE, dtype=torch.long)), TypeError, "mask"),
        (INP, dict(mask=torch.full((SIZE, SIZE), 2.0)), ValueError, "mask values"),
        (INP, dict(mask=torch.full((SIZE, SIZE), nan)), ValueError, "mask"),
        (INP, dict(prompt=["a", "b", "c"], mask=torch.zeros(2, 1, SIZE, SIZE)), ValueError, "2 masks for 3"),
        (INP, dict(prompt=["a", "b", "c"], mask=[MASK, MASK]), ValueError, "2 masks for 3"),
    ]
    return c


BAD_INPUTS = _cases()


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline()


def test_there_are_many_cases():
    assert len(BAD_INPUTS) >= 150


@pytest.mark.parametrize("method, kwargs, error, needle", BAD_INPUTS,
                         ids=[f"{m}-{'-'.join(k)}-{i}" for i, (m, k, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_refused_clearly_before_any_step(pipe, method, kwargs, error, needle):
    steps, calls = [], []
    unet_forward = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(1) or unet_forward(*a, **k)
    args = dict(prompt="a red circle", num_inference_steps=2, callback=lambda *a: steps.append(a))
    if method != T2I:
        args["image"] = RGB
    if method == INP:
        args["mask"] = MASK
    try:
        with pytest.raises(error) as info:
            getattr(pipe, method)(**(args | kwargs))
    finally:
        del pipe.unet.forward
    assert needle in str(info.value), f"message {str(info.value)!r} should name {needle!r}"
    assert steps == [] and calls == [], "refused only after denoising started"


def test_numpy_integers_are_accepted_like_ints(pipe):
    a = pipe.text_to_image("a red circle", num_inference_steps=np.int64(2), seed=np.uint32(3),
                           height=np.int32(SIZE), guidance_scale=np.float32(3.0), output_type="latent")
    b = pipe.text_to_image("a red circle", num_inference_steps=2, seed=3, height=SIZE, guidance_scale=3.0,
                           output_type="latent")
    assert torch.equal(a, b)


# ---------------------------------------------------------------- [0, 1] image tensors
def test_pil_image_and_its_0_1_tensor_give_the_same_edit(pipe):
    x01 = (to_tensor(RGB)[None] + 1) / 2                                   # (1, 3, H, W) in [0, 1]
    kw = dict(strength=0.5, num_inference_steps=4, seed=0, output_type="latent")
    assert torch.equal(pipe.image_to_image("a blue star", RGB, **kw), pipe.image_to_image("a blue star", x01, **kw))
    arr = x01[0].permute(1, 2, 0).numpy()                                  # (H, W, 3) in [0, 1], as output_type="np"
    assert torch.equal(pipe.image_to_image("a blue star", RGB, **kw), pipe.image_to_image("a blue star", arr, **kw))


def test_output_type_pt_round_trips_through_strength_zero():
    """On the bundled model (its VAE reaches 43 dB on Shapes): the generated image, fed back at
    strength 0, comes out as itself. Fed as if it were in [-1, 1] it would come back washed out."""
    from sdlearn.evaluate import psnr
    from sdlearn.pipeline import StableDiffusion

    sd = StableDiffusion.tiny(device="cpu")
    sd.progress_bar = False
    x = sd.text_to_image("a large red circle in the center", num_inference_steps=8, seed=0, output_type="pt")
    assert x.min() >= 0 and x.max() <= 1
    back = sd.image_to_image("", x, strength=0.0, seed=0, output_type="pt")
    assert psnr(back * 2 - 1, x * 2 - 1) > 30                              # dB; the round trip is near-lossless
    washed = sd.image_to_image("", x * 0.5 + 0.5, strength=0.0, seed=0, output_type="pt")  # [-1,1]-style misuse
    assert psnr(washed * 2 - 1, x * 2 - 1) < 20


# ---------------------------------------------------------------- one generator per prompt
SAMPLER_CLASSES = [schedulers.DDPM, schedulers.DDIM, schedulers.DPMSolverPP, schedulers.Euler,
                   schedulers.EulerAncestral]


@pytest.mark.parametrize("sampler", SAMPLER_CLASSES, ids=lambda s: s.__name__)
def test_a_list_of_generators_gives_item_i_the_single_run_with_generator_i(pipe, sampler):
    prompts = ["a red circle", "a blue star", "a green square"]
    scheduler = sampler.from_config(dict(pipe.scheduler.config))
    kw = dict(num_inference_steps=4, guidance_scale=3.0, scheduler=scheduler, output_type="latent")
    batch = pipe.text_to_image(prompts, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)], **kw)
    for i, s in enumerate((5, 6, 7)):
        single = pipe.text_to_image(prompts[i], generator=torch.Generator().manual_seed(s), **kw)
        # batched and single runs take different matmul paths: ~1e-6 per step on latents of size ~1
        torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("method", [I2I, INP])
def test_a_list_of_generators_works_for_editing(pipe, method):
    extra = dict(mask=MASK) if method == INP else dict(strength=0.7)
    kw = dict(image=RGB, num_inference_steps=4, scheduler="euler_a", output_type="latent", **extra)
    batch = getattr(pipe, method)(["a red circle", "a blue star"],
                                  generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **kw)
    for i, (p, s) in enumerate((("a red circle", 1), ("a blue star", 2))):
        single = getattr(pipe, method)(p, generator=torch.Generator().manual_seed(s), **kw)
        torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- threads
def test_three_threads_on_one_pipeline_get_what_sequential_calls_get(pipe):
    jobs = [dict(prompt="a red circle", seed=0, scheduler="euler"), dict(prompt="a blue star", seed=1),
            dict(prompt="a green square", seed=2, scheduler="euler_a")]
    kw = dict(num_inference_steps=6, output_type="latent")
    sequential = [pipe.text_to_image(**j, **kw) for j in jobs]
    results, errors = [None] * 3, []
    barrier = threading.Barrier(3)

    def run(k):
        try:
            barrier.wait()
            for _ in range(3):                                             # overlap the calls several times
                results[k] = pipe.text_to_image(**jobs[k], **kw)
        except Exception as e:                                             # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for got, want in zip(results, sequential):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_call_does_not_change_the_pipelines_scheduler(pipe):
    before = pipe.scheduler.timesteps.clone() if getattr(pipe.scheduler, "timesteps", None) is not None else None
    pipe.text_to_image("a red circle", num_inference_steps=3, seed=0, output_type="latent")
    after = getattr(pipe.scheduler, "timesteps", None)
    assert (before is None and after is None) or torch.equal(before, after)


# ---------------------------------------------------------------- NaN / inf is named, never silent
def test_nan_weights_in_the_unet_are_named(tiny_pipeline):
    broken = tiny_pipeline(seed=3)
    with torch.no_grad():
        broken.unet.conv_in.weight[0, 0, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="UNet"):
        out = broken.text_to_image("a red circle", num_inference_steps=2, seed=0, output_type="np")
    assert np.isfinite(out).all()                                          # no NaN reaches the caller's image


def test_nan_weights_in_the_text_encoder_are_named(tiny_pipeline):
    broken = tiny_pipeline(seed=4)
    with torch.no_grad():
        broken.text_encoder.text_model.embeddings.token_embedding.weight.fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="text encoder"):
        broken.text_to_image("a red circle", num_inference_steps=1, seed=0, output_type="latent")
