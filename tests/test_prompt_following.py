"""Prompt-following measurement: random prompts (trained and held-out combinations) and the loop
that prompts a pipeline and reads its images back, checked on a stand-in pipeline whose answers we
control, and once end to end on the bundled tiny model."""
from types import SimpleNamespace

import pytest
import torch

from sdlearn import data, evaluate
from sdlearn.data import Attributes


def test_random_prompts_reproducible_and_cover_the_vocabulary():
    a = evaluate.random_prompts(300, seed=3)
    assert a == evaluate.random_prompts(300, seed=3)
    assert a != evaluate.random_prompts(300, seed=4)
    assert not any((x.shape, x.color) in data.HELD_OUT for x in a)       # trained combinations only
    for name, values in (("shape", data.SHAPES), ("color", data.COLORS), ("size", data.SIZES),
                         ("position", data.POSITIONS)):
        assert {getattr(x, name) for x in a} == set(values), name


def test_random_prompts_held_out_only_held_out_pairs():
    a = evaluate.random_prompts(100, seed=0, held_out=True)
    assert {(x.shape, x.color) for x in a} == set(data.HELD_OUT)
    assert {x.position for x in a} == set(data.POSITIONS)


class RenderingPipe:
    """Stands in for StableDiffusion: "generates" the render of the caption, with colour ``recolor``
    instead when given; records what it was called with."""

    def __init__(self, prompts: list[Attributes], recolor: str | None = None):
        self.by_caption = {a.caption(): a for a in prompts}
        self.recolor, self.calls, self.progress_bar = recolor, [], True
        self.unet = SimpleNamespace(config={"out_channels": 4, "sample_size": 8})

    def text_to_image(self, prompt, latents, generator, output_type, **kwargs):
        assert output_type == "pt" and self.progress_bar is False
        self.calls.append({"n": len(prompt), "latents": latents.clone(), **kwargs})
        images = []
        for i, text in enumerate(prompt):
            a = self.by_caption[text]
            img = data.render(a.shape, self.recolor or a.color, a.size, a.position, seed=i)
            images.append((data.to_tensor(img) + 1) / 2)                 # [0, 1] like output_type="pt"
        return torch.stack(images)


def test_prompt_following_scores_a_perfect_and_a_colour_blind_model():
    prompts = [a for a in evaluate.random_prompts(60, seed=1) if a.color != "red"][:40]
    perfect = evaluate.prompt_following(RenderingPipe(prompts), prompts, batch_size=16, progress=False)
    assert perfect["n"] == 40 and perfect["all"] == 1.0, perfect
    blind = evaluate.prompt_following(RenderingPipe(prompts, recolor="red"), prompts, progress=False)
    assert blind["color"] == 0.0 and blind["shape"] == 1.0 and blind["all"] == 0.0, blind
    assert all(r.color == "red" for r in blind["read"]) and blind["seconds_per_image"] > 0


def test_prompt_following_noise_per_prompt_independent_of_batching():
    prompts = evaluate.random_prompts(10, seed=2)
    pipes = [RenderingPipe(prompts), RenderingPipe(prompts)]
    evaluate.prompt_following(pipes[0], prompts, seed=5, batch_size=10, progress=False, guidance_scale=3.0)
    evaluate.prompt_following(pipes[1], prompts, seed=5, batch_size=3, progress=False, guidance_scale=3.0)
    z_a = torch.cat([c["latents"] for c in pipes[0].calls])
    z_b = torch.cat([c["latents"] for c in pipes[1].calls])
    assert [c["n"] for c in pipes[1].calls] == [3, 3, 3, 1]
    assert torch.equal(z_a, z_b) and z_a.shape == (10, 4, 8, 8)
    assert all(c["guidance_scale"] == 3.0 for c in pipes[1].calls)    # sampler options passed through
    assert pipes[0].progress_bar is True                               # restored afterwards


def test_prompt_following_errors():
    pipe = RenderingPipe([])
    with pytest.raises(TypeError, match="attributes"):
        evaluate.prompt_following(pipe, ["a red circle"])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate.prompt_following(pipe, evaluate.random_prompts(2), batch_size=0)
    with pytest.raises(ValueError, match="generator"):
        evaluate.prompt_following(pipe, evaluate.random_prompts(2), generator=torch.Generator())
    with pytest.raises(ValueError, match="n must be"):
        evaluate.random_prompts(0)


def test_prompt_following_on_the_bundled_model_is_reproducible():
    from sdlearn.pipeline import StableDiffusion

    pipe = StableDiffusion.tiny(device="cpu")
    prompts = evaluate.random_prompts(8, seed=0)
    kw = dict(num_inference_steps=8, guidance_scale=4.0, scheduler="dpm++", progress=False)
    a = evaluate.prompt_following(pipe, prompts, seed=0, batch_size=8, **kw)
    b = evaluate.prompt_following(pipe, prompts, seed=0, batch_size=3, **kw)
    assert a["read"] == b["read"]                   # same noise per prompt, deterministic sampler
    assert set(a) >= {"shape", "color", "size", "position", "all", "n", "seconds_per_image"}
    assert all(0.0 <= a[k] <= 1.0 for k in evaluate.ATTRIBUTES + ("all",))
