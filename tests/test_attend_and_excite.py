"""Attend-and-Excite (sdlearn.attend_excite, text_to_image(attend_and_excite=...)).

It must leave the result bit-identical when off, change the latents only during the steps it is
asked to, raise the least attended subject's strongest attention, and run on an SD v1 architecture
(it uses only the shared attention capture)."""
import pytest
import torch

import sdlearn.pipeline as pipeline_module
from sdlearn import attend_excite as ae
from sdlearn.device import randn
from sdlearn.pipeline import StableDiffusion

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "a large red circle in the top left"


@pytest.fixture(scope="module")
def sd():
    pipe = StableDiffusion.tiny("cpu")
    pipe.progress_bar = False
    return pipe


def test_off_is_bit_identical(sd):
    a = sd.text_to_image(PROMPT, seed=0, num_inference_steps=6, output_type="latent")
    b = sd.text_to_image(PROMPT, seed=0, num_inference_steps=6, output_type="latent", attend_and_excite=None)
    assert torch.equal(a, b)
    c = sd.text_to_image(PROMPT, seed=0, num_inference_steps=6, output_type="latent", attend_and_excite=["circle"])
    assert not torch.allclose(a, c)


def test_the_latents_change_only_during_the_excited_steps(sd, monkeypatch):
    calls = []

    def spy(unet, z, t, context, excite, i, scale_model_input):
        new, loss = ae.excite_step(unet, z, t, context, excite, i, scale_model_input)
        calls.append((i, float((new - z).abs().max())))
        return new, loss
    monkeypatch.setattr(pipeline_module, "excite_step", spy)
    sd.text_to_image(PROMPT, seed=1, num_inference_steps=6, output_type="latent",
                     attend_and_excite=["circle", "red"], attend_and_excite_steps=2)
    assert [i for i, _ in calls] == [0, 1] and all(change > 0 for _, change in calls)
    calls.clear()
    sd.text_to_image(PROMPT, seed=1, num_inference_steps=6, output_type="latent", attend_and_excite=["circle"])
    assert [i for i, _ in calls] == [0, 1, 2]                          # default: the first half


def test_an_update_raises_the_least_attended_subjects_peak(sd):
    run = sd._prepare(PROMPT, None, 20, 5.0, 0, None, None, "latent", None)
    excite = sd._check_excite(run, ["circle", "red"], None, ae.DEFAULT_SCALE)
    assert excite.tokens == ((4, 3),) and excite.ends == (9,)           # [start] a large red circle ...
    run.scheduler.set_timesteps(20)
    z = randn((1, 4, 8, 8), torch.Generator().manual_seed(0)) * run.scheduler.init_noise_sigma
    t = run.scheduler.timesteps[0]
    cond = run.context[-1:]
    z1, before = ae.excite_step(sd.unet, z, t, cond, excite, 0, run.scheduler.scale_model_input)
    _, after = ae.excite_step(sd.unet, z1, t, cond, excite, 0, run.scheduler.scale_model_input)
    assert after < before                                              # loss = 1 - the weakest subject's peak


def test_it_runs_on_an_sd_v1_architecture(tiny_pipeline):
    pipe = tiny_pipeline()                                             # SD v1 blocks, reduced widths
    kw = dict(seed=0, num_inference_steps=4, guidance_scale=3.0, output_type="latent")
    plain = pipe.text_to_image(["a red cat and a blue dog"] * 2, **kw)
    excited = pipe.text_to_image(["a red cat and a blue dog"] * 2, attend_and_excite=["cat", "dog"], **kw)
    assert excited.shape == plain.shape and torch.isfinite(excited).all() and not torch.allclose(plain, excited)


def test_the_loss_is_one_minus_the_weakest_peak():
    maps = torch.zeros(1, 5, 6, 6)
    maps[0, 2, 1:4, 1:4] = 0.9                                         # a 3x3 plateau: smoothing keeps its centre
    maps[0, 3, 2:5, 2:5] = 0.4
    loss = ae.attend_and_excite_loss(maps, [(2, 3)])
    torch.testing.assert_close(loss, torch.tensor([1 - 0.4]), rtol=0, atol=1e-6)
    assert ae.attend_and_excite_loss(maps, [(2,)]).item() == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(attend_and_excite=["dog"]), ValueError, "attend_and_excite"),
    (dict(attend_and_excite="circle"), TypeError, "attend_and_excite"),
    (dict(attend_and_excite=[]), TypeError, "attend_and_excite"),
    (dict(attend_and_excite=[3]), TypeError, "attend_and_excite"),
    (dict(attend_and_excite=["circle"], attend_and_excite_steps=0), ValueError, "attend_and_excite_steps"),
    (dict(attend_and_excite=["circle"], attend_and_excite_steps=7), ValueError, "attend_and_excite_steps"),
    (dict(attend_and_excite=["circle"], attend_and_excite_scale=float("nan")), ValueError, "attend_and_excite_scale"),
    (dict(attend_and_excite=["circle"], attend_and_excite_scale=-1.0), ValueError, "attend_and_excite_scale"),
])
def test_bad_arguments_name_themselves(sd, kwargs, error, needle):
    with pytest.raises(error, match=needle):
        sd.text_to_image(PROMPT, seed=0, num_inference_steps=6, **kwargs)
