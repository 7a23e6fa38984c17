"""sdlearn's samplers agree with diffusers' step for step, and swap into a diffusers pipeline.

Tolerances. The schedules (timesteps, sigmas, init_noise_sigma) are built by the same numpy/torch
operations in the same dtypes as diffusers', so they must be *equal*, bit for bit. The steps use
the same formulas, but not always in the same order (e.g. sqrt(ab) * x vs x * sqrt(ab)), so
samples may differ by a few float32 ulps per step. Over at most 1000 steps that stays below 1e-5
relative; we allow rtol = atol = 2e-5 times the sample's scale (Euler's samples start at
sigma_max ~ 14.6).
"""
from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch

from sdlearn import schedulers as S

SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
          clip_sample=False, set_alpha_to_one=False, steps_offset=1, skip_prk_steps=True, trained_betas=None,
          _class_name="PNDMScheduler")  # Stable Diffusion v1.x's scheduler_config.json
DDPM_PAPER = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
COSINE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)

PAIRS = {
    "ddpm": (S.DDPM, diffusers.DDPMScheduler),
    "ddim": (S.DDIM, diffusers.DDIMScheduler),
    "dpmsolver++": (S.DPMSolverPP, diffusers.DPMSolverMultistepScheduler),
    "euler": (S.Euler, diffusers.EulerDiscreteScheduler),
    "euler_ancestral": (S.EulerAncestral, diffusers.EulerAncestralDiscreteScheduler),
}
STOCHASTIC = {"ddpm", "euler_ancestral"}


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a UNet whose output depends on both x and t."""
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(x.shape[1:], generator=g)
    return 0.3 * x + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 97.0) * direction


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = max(1.0, float(b.abs().max()))
    return torch.allclose(a.float(), b.float(), rtol=2e-5, atol=2e-5 * scale)


def run_both(name: str, config: dict, n: int | None, begin: int = 0, step_kwargs: dict | None = None, **overrides):
    """Sample with ours and theirs side by side from the same noise; compare everything each step."""
    ours_cls, theirs_cls = PAIRS[name]
    ours, theirs = ours_cls.from_config(config, **overrides), theirs_cls.from_config(config, **overrides)
    if n is not None:  # None: no set_timesteps, the full training schedule (DDPM, Euler, Euler ancestral)
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        assert ours.timesteps.dtype == theirs.timesteps.dtype
    # the schedules are equal exactly (module docstring). diffusers' EulerAncestral starts with float64
    # timesteps; ours keep float32, which MPS can hold, and hold the same values
    assert torch.equal(ours.timesteps.double(), theirs.timesteps.double()), (ours.timesteps, theirs.timesteps)
    if name in ("euler", "euler_ancestral", "dpmsolver++"):
        assert torch.equal(ours.sigmas, theirs.sigmas), (ours.sigmas, theirs.sigmas)
    assert float(ours.init_noise_sigma) == float(theirs.init_noise_sigma)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    if begin:  # image-to-image: noise a clean sample to the begin-th timestep, skip the steps above it
        x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5)).clamp(-1, 1)
        if hasattr(theirs, "set_begin_index"):  # sigma samplers count steps; DDPM/DDIM look t up
            ours.set_begin_index(begin)
            theirs.set_begin_index(begin)
        t0 = ours.timesteps[begin : begin + 1].repeat(2)
        x_o, x_t = ours.add_noise(x0, noise, t0), theirs.add_noise(x0, noise, theirs.timesteps[begin : begin + 1].repeat(2))
        assert close(x_o, x_t)
    else:
        x_o, x_t = noise * ours.init_noise_sigma, noise * theirs.init_noise_sigma
    g_o, g_t = torch.Generator().manual_seed(42), torch.Generator().manual_seed(42)
    kwargs = dict(step_kwargs or {})
    for t_o, t_t in zip(ours.timesteps[begin:], theirs.timesteps[begin:]):
        in_o, in_t = ours.scale_model_input(x_o, t_o), theirs.scale_model_input(x_t, t_t)
        assert close(in_o, in_t)
        out_o = ours.step(fake_model(in_o, t_o), t_o, x_o, generator=g_o, **kwargs)
        out_t = theirs.step(fake_model(in_t, t_t), t_t, x_t, generator=g_t, **kwargs)
        assert close(out_o.prev_sample, out_t.prev_sample), f"{name} differs at t={float(t_o)}"
        if getattr(out_t, "pred_original_sample", None) is not None:
            assert close(out_o.pred_original_sample, out_t.pred_original_sample)
        x_o, x_t = out_o.prev_sample, out_t.prev_sample
    assert torch.isfinite(x_o).all()
    return x_o


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("config", [SD, DDPM_PAPER], ids=["sd", "ddpm_paper"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("n", [7, 25])
def test_matches_diffusers(name, config, prediction_type, n):
    run_both(name, config, n, prediction_type=prediction_type)


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_spacings(name, spacing):
    run_both(name, SD, 20, timestep_spacing=spacing)


@pytest.mark.parametrize("name", list(PAIRS))
def test_cosine_schedule(name):
    run_both(name, COSINE, 15)


@pytest.mark.parametrize("name", ["euler", "dpmsolver++"])
@pytest.mark.parametrize("n", [10, 20, 30])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_karras_sigmas(name, n, prediction_type):
    run_both(name, SD, n, use_karras_sigmas=True, prediction_type=prediction_type)


def test_full_1000_step_ddpm():
    run_both("ddpm", DDPM_PAPER, 1000)


@pytest.mark.parametrize("case", [
    ("ddim", dict(step_kwargs={"eta": 1.0})),
    ("ddim", dict(step_kwargs={"eta": 0.5, "use_clipped_model_output": True}, clip_sample=True)),
    ("ddim", dict(set_alpha_to_one=True)),
    ("ddpm", dict(variance_type="fixed_large")),
    ("ddpm", dict(clip_sample=True, clip_sample_range=0.5)),
    ("euler", dict(step_kwargs={"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 5.0})),
    ("euler", dict(final_sigmas_type="sigma_min")),
    ("dpmsolver++", dict(solver_type="heun")),
    ("dpmsolver++", dict(solver_order=1)),
    ("dpmsolver++", dict(lower_order_final=False)),
    ("dpmsolver++", dict(euler_at_final=True, final_sigmas_type="sigma_min")),
    ("dpmsolver++", dict(prediction_type="sample")),
    ("dpmsolver++", dict(thresholding=True, sample_max_value=1.5)),
    ("ddim", dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0)),
    ("ddpm", dict(thresholding=True)),
], ids=lambda c: f"{c[0]}-{'-'.join(c[1])}")
def test_options(case):
    name, kw = case
    run_both(name, SD, 12, **kw)


@pytest.mark.parametrize("name, karras", [(n, False) for n in PAIRS] + [("euler", True), ("dpmsolver++", True)])
def test_noised_start(name, karras):
    """add_noise + set_begin_index, as image-to-image uses them (Karras sigmas: Euler and DPM-Solver++ only)."""
    run_both(name, SD, 20, begin=6, **({"use_karras_sigmas": True} if karras else {}))


@pytest.mark.parametrize("name", list(PAIRS))
def test_add_noise_batch_of_timesteps(name):
    ours_cls, theirs_cls = PAIRS[name]
    ours, theirs = ours_cls.from_config(SD), theirs_cls.from_config(SD)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert close(ours.add_noise(x0, noise, ours.timesteps[[0, 4, 9]]),
                 theirs.add_noise(x0, noise, theirs.timesteps[[0, 4, 9]]))


def test_config_roundtrip_both_ways(tmp_path):
    """diffusers' config -> ours -> diffusers' class again, and save_pretrained -> from_pretrained."""
    ours = S.DPMSolverPP.from_config(diffusers.PNDMScheduler.from_config(SD).config, use_karras_sigmas=True)
    assert ours.config.use_karras_sigmas and ours.config["steps_offset"] == 1 and len(ours) == 1000
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(ours.config)
    assert theirs.config.use_karras_sigmas and theirs.config.beta_schedule == "scaled_linear"
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["_class_name"] == "DPMSolverMultistepScheduler"
    loaded = diffusers.DPMSolverMultistepScheduler.from_pretrained(tmp_path)
    assert loaded.config.beta_end == 0.012 and loaded.config.use_karras_sigmas
    assert S.scheduler_class("EulerDiscreteScheduler") is S.Euler and S.scheduler_class("DDIM") is S.DDIM


def test_one_table_names_every_sampler_and_its_diffusers_class():
    """SCHEDULERS names each sampler once by its short name (the comment beside it is its diffusers class),
    and every name, alias or diffusers class name finds the class through scheduler_class."""
    short = {"ddpm": "ddpm", "ddim": "ddim", "dpm++": "dpmsolver++", "euler": "euler", "euler_a": "euler_ancestral"}
    for name, pair_name in short.items():
        ours_cls, theirs_cls = PAIRS[pair_name]
        assert S.SCHEDULERS[name] is ours_cls and ours_cls.diffusers_name == theirs_cls.__name__
        assert S.scheduler_class(theirs_cls.__name__) is ours_cls
    assert set(S.SCHEDULERS.values()) == {cls for cls, _ in PAIRS.values()}
    assert all(S.scheduler_class(name) is cls for name, cls in S.SCHEDULERS.items())


def test_defaults_are_diffusers_defaults():
    for name, (ours_cls, theirs_cls) in PAIRS.items():
        theirs = theirs_cls().config
        for key, value in ours_cls.defaults.items():
            assert key in theirs, f"{name}: {key} is not a diffusers config key"
            assert theirs[key] == value or (value != value and theirs[key] != theirs[key]), (name, key)


# --- before set_timesteps ----------------------------------------------------------------------------
FULL_SCHEDULE = ["ddpm", "euler", "euler_ancestral"]  # diffusers' step works right after construction


@pytest.mark.parametrize("name", FULL_SCHEDULE)
@pytest.mark.parametrize("config", [SD, DDPM_PAPER], ids=["sd", "ddpm_paper"])
def test_full_training_schedule_without_set_timesteps(name, config):
    """As diffusers: before set_timesteps, DDPM and Euler (ancestral) walk all 1000 training steps, and
    agree with diffusers' own schedulers step for step (same tolerance as above: float32 round-off)."""
    x = run_both(name, config, None)
    assert x.shape == (2, 4, 8, 8)


def _diffusers_test_sample(flip: bool = False) -> torch.Tensor:
    """diffusers' SchedulerCommonTest.dummy_sample_deter (and, flipped, dummy_noise_deter): (4, 3, 8, 8)."""
    n = 4 * 3 * 8 * 8
    values = torch.arange(n).flip(-1) if flip else torch.arange(n)
    return (values.reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


@pytest.mark.parametrize("prediction_type, noised, total, mean", [
    ("epsilon", False, 258.9606, 0.3372),       # test_full_loop_no_noise
    ("v_prediction", False, 202.0296, 0.2631),  # test_full_loop_with_v_prediction
    ("epsilon", True, 387.9466, 0.5051),        # test_full_loop_with_noise
])
def test_diffusers_published_ddpm_full_loop(prediction_type, noised, total, mean):
    """The values diffusers' tests/schedulers/test_scheduler_ddpm.py asserts (not installed with the package,
    so copied here with its tolerances 1e-2 / 1e-3): no set_timesteps, model(x, t) = x t / (t + 1)."""
    s = S.DDPM(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
               variance_type="fixed_small", clip_sample=True, prediction_type=prediction_type)
    sample, generator = _diffusers_test_sample(), torch.Generator().manual_seed(0)
    timesteps = s.timesteps
    if noised:  # start two steps from the end: x_1 from add_noise
        timesteps = s.timesteps[len(s) - 2:]
        sample = s.add_noise(sample, _diffusers_test_sample(flip=True), timesteps[:1])
    for t in timesteps:
        sample = s.step(sample * t / (t + 1), t, sample, generator=generator).prev_sample
    assert abs(sample.abs().sum().item() - total) < 1e-2
    assert abs(sample.abs().mean().item() - mean) < 1e-3


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++"])
def test_set_timesteps_required_where_diffusers_requires_it(name):
    """diffusers' DDIM and DPM-Solver++ raise in step() before set_timesteps; ours say what to call."""
    ours_cls, theirs_cls = PAIRS[name]
    ours, theirs = ours_cls.from_config(SD), theirs_cls.from_config(SD)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="set_timesteps"):
        theirs.step(x, theirs.timesteps[0], x)
    with pytest.raises(ValueError, match=r"step\(\) called before set_timesteps\(num_inference_steps\)"):
        ours.step(x, ours.timesteps[0], x)
    if name == "dpmsolver++":  # diffusers' add_noise reads its unsorted sigmas here: t=999 gets sigma(0)
        t = torch.tensor([999])
        before = theirs.add_noise(x, x + 1, t)
        theirs.set_timesteps(1000)
        assert not torch.allclose(before, theirs.add_noise(x, x + 1, t))
        with pytest.raises(ValueError, match=r"add_noise\(\) called before set_timesteps"):
            ours.add_noise(x, x + 1, t)


# --- bad input ---------------------------------------------------------------------------------------
X = torch.zeros(1, 4, 8, 8)
ALL, ALPHA_BAR, SIGMA = tuple(PAIRS), ("ddpm", "ddim"), ("euler", "euler_ancestral", "dpmsolver++")


def make(name: str, **config) -> S.Scheduler:
    return PAIRS[name][0].from_config(SD, **config)


def ready(name: str, n: int = 10) -> S.Scheduler:
    s = make(name)
    s.set_timesteps(n)
    return s


def first_step(name: str, model_output=X, sample=X, timestep=None, **kwargs):
    s = ready(name)
    return s.step(model_output, s.timesteps[0] if timestep is None else timestep, sample, **kwargs)


# (case, schedulers it applies to, call(name) that must raise, error type, pattern the message must match)
BAD_INPUTS = [
    # constructor keywords
    ("T-zero", ALL, lambda n: make(n, num_train_timesteps=0), ValueError, r"num_train_timesteps must be an int >= 1, got 0"),
    ("T-negative", ALL, lambda n: make(n, num_train_timesteps=-5), ValueError, r"num_train_timesteps must be an int >= 1"),
    ("T-float", ALL, lambda n: make(n, num_train_timesteps=1000.0), TypeError, r"num_train_timesteps must be an int, got float"),
    ("T-str", ALL, lambda n: make(n, num_train_timesteps="1000"), TypeError, r"num_train_timesteps must be an int, got str"),
    ("beta-reversed", ALL, lambda n: make(n, beta_start=0.012, beta_end=0.00085), ValueError,
     r"0 < beta_start < beta_end < 1, got beta_start=0.012, beta_end=0.00085"),
    ("beta-equal", ALL, lambda n: make(n, beta_start=0.01, beta_end=0.01), ValueError, r"beta_start < beta_end"),
    ("beta-end-above-1", ALL, lambda n: make(n, beta_end=2.0), ValueError, r"beta_end < 1, got .*beta_end=2.0"),
    ("beta-start-zero", ALL, lambda n: make(n, beta_start=0.0), ValueError, r"0 < beta_start"),
    ("beta-str", ALL, lambda n: make(n, beta_start="0.001"), TypeError, r"beta_start must be a real number, got str"),
    ("beta-nan", ALL, lambda n: make(n, beta_end=float("nan")), ValueError, r"beta_end must be finite"),
    ("schedule", ALL, lambda n: make(n, beta_schedule="quadratic"), ValueError,
     r"beta_schedule must be one of .*scaled_linear.*got 'quadratic'"),
    ("trained-betas", ALL, lambda n: make(n, trained_betas=[0.01] * 10), ValueError,
     r"trained_betas must be num_train_timesteps=1000 numbers in \(0, 1\), got shape \(10,\)"),
    ("prediction-type", ALL, lambda n: make(n, prediction_type="flow"), ValueError,
     r"prediction_type must be one of .*v_prediction.*got 'flow'"),
    ("prediction-type-sample", ("euler_ancestral",), lambda n: make(n, prediction_type="sample"), ValueError,
     r"prediction_type must be one of \('epsilon', 'v_prediction'\)"),
    ("spacing", ALL, lambda n: make(n, timestep_spacing="uniform"), ValueError,
     r"timestep_spacing must be one of .*trailing.*got 'uniform'"),
    ("steps-offset-negative", ALL, lambda n: make(n, steps_offset=-1), ValueError, r"steps_offset must be an int >= 0"),
    ("steps-offset-float", ALL, lambda n: make(n, steps_offset=1.5), TypeError, r"steps_offset must be an int"),
    ("clip-sample-str", ALPHA_BAR, lambda n: make(n, clip_sample="yes"), TypeError, r"clip_sample must be True or False"),
    ("clip-range", ALPHA_BAR, lambda n: make(n, clip_sample_range=0), ValueError, r"clip_sample_range must be > 0"),
    ("threshold-ratio", ("ddpm", "ddim", "dpmsolver++"), lambda n: make(n, dynamic_thresholding_ratio=1.5), ValueError,
     r"dynamic_thresholding_ratio must be in \(0, 1\]"),
    ("karras-str", ("euler", "dpmsolver++"), lambda n: make(n, use_karras_sigmas="true"), TypeError,
     r"use_karras_sigmas must be True or False"),
    ("sigma-order", ("euler",), lambda n: make(n, sigma_min=10.0, sigma_max=1.0), ValueError, r"sigma_min must be < sigma_max"),
    ("sigma-negative", ("euler",), lambda n: make(n, sigma_min=-1.0), ValueError, r"sigma_min must be > 0"),
    ("solver-order", ("dpmsolver++",), lambda n: make(n, solver_order=3), ValueError, r"solver_order must be one of \(1, 2\)"),
    ("variance-type", ("ddpm",), lambda n: make(n, variance_type="learned"), ValueError, r"variance_type must be one of"),
    ("unknown-key", ALL, lambda n: PAIRS[n][0](num_steps=10), TypeError, r"unknown config keys \['num_steps'\]"),
    # set_timesteps
    ("n-zero", ALL, lambda n: make(n).set_timesteps(0), ValueError,
     r"num_inference_steps must be between 1 and num_train_timesteps=1000, got 0"),
    ("n-too-many", ALL, lambda n: make(n).set_timesteps(1001), ValueError, r"between 1 and num_train_timesteps=1000, got 1001"),
    ("n-too-many-small-T", ALL, lambda n: make(n, num_train_timesteps=50).set_timesteps(51), ValueError,
     r"num_train_timesteps=50, got 51"),
    ("n-float", ALL, lambda n: make(n).set_timesteps(10.0), TypeError, r"num_inference_steps must be an int, got float"),
    ("n-str", ALL, lambda n: make(n).set_timesteps("10"), TypeError, r"num_inference_steps must be an int, got str"),
    ("n-bool", ALL, lambda n: make(n).set_timesteps(True), TypeError, r"num_inference_steps must be an int, got bool"),
    # step
    ("step-before-set", ("ddim", "dpmsolver++"), lambda n: make(n).step(X, 999, X), ValueError,
     r"step\(\) called before set_timesteps"),
    ("step-t-fraction", ALL, lambda n: first_step(n, timestep=500.5), ValueError,
     r"timestep 500.5 is not one of this scheduler's timesteps"),
    ("step-t-off-schedule", ALL, lambda n: first_step(n, timestep=998), ValueError, r"timestep 998.0 is not one of"),
    ("step-t-too-big", FULL_SCHEDULE, lambda n: make(n).step(X, 1000, X), ValueError,
     r"timestep 1000.0 is not one of .*\(1000 timesteps\)"),
    ("step-t-str", ALL, lambda n: first_step(n, timestep="999"), TypeError, r"timestep must be a number"),
    ("step-t-batch", ALL, lambda n: first_step(n, timestep=torch.tensor([1, 1])), ValueError, r"timestep must be a single"),
    ("step-shape", ALL, lambda n: first_step(n, sample=torch.zeros(1, 4, 8, 9)), ValueError,
     r"model_output and sample must have the same shape, got \(1, 4, 8, 8\) and \(1, 4, 8, 9\)"),
    ("step-learned-variance-shape", ("ddpm",), lambda n: first_step(n, model_output=torch.zeros(1, 8, 8, 8)), ValueError,
     r"same shape"),
    ("step-numpy", ALL, lambda n: first_step(n, model_output=np.zeros((1, 4, 8, 8))), TypeError,
     r"model_output must be a torch.Tensor, got ndarray"),
    ("ddim-eta", ("ddim",), lambda n: first_step(n, eta=-0.5), ValueError, r"eta must be >= 0"),
    ("euler-churn", ("euler",), lambda n: first_step(n, s_churn=-1.0), ValueError, r"s_churn must be >= 0"),
    # add_noise
    ("add-noise-t-1000", ALPHA_BAR, lambda n: make(n).add_noise(X, X, torch.tensor([1000])), ValueError,
     r"timesteps must be integers in \[0, num_train_timesteps=1000\), got \[1000\]"),
    ("add-noise-t-negative", ALPHA_BAR, lambda n: make(n).add_noise(X, X, torch.tensor([-1])), ValueError,
     r"timesteps must be integers in \[0, num_train_timesteps=1000\)"),
    ("add-noise-t-fraction", ALPHA_BAR, lambda n: make(n).add_noise(X, X, torch.tensor([10.5])), ValueError,
     r"timesteps must be integers"),
    ("add-noise-off-schedule", SIGMA, lambda n: ready(n).add_noise(X, X, torch.tensor([998])), ValueError,
     r"timestep 998.0 is not one of"),
    ("add-noise-shape", ALL, lambda n: ready(n).add_noise(X, torch.zeros(1, 4, 8, 9), ready(n).timesteps[:1]), ValueError,
     r"noise and original_samples must have the same shape"),
    ("add-noise-t-count", ALL, lambda n: ready(n).add_noise(torch.zeros(3, 4, 8, 8), torch.zeros(3, 4, 8, 8),
                                                           ready(n).timesteps[:2]), ValueError,
     r"one timestep or one per sample \(B=3,\), got shape \(2,\)"),
    ("add-noise-t-str", ALL, lambda n: ready(n).add_noise(X, X, "999"), TypeError, r"timesteps must be a tensor or a number"),
    ("add-noise-before-set", ("dpmsolver++",), lambda n: make(n).add_noise(X, X, torch.tensor([999])), ValueError,
     r"add_noise\(\) called before set_timesteps"),
]
assert len(BAD_INPUTS) >= 25


@pytest.mark.parametrize("name, call, error, pattern", [
    pytest.param(name, call, error, pattern, id=f"{case}-{name}")
    for case, names, call, error, pattern in BAD_INPUTS for name in names])
def test_bad_inputs(name, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(name)


@pytest.mark.parametrize("name", list(PAIRS))
def test_numpy_ints_and_edge_values_are_accepted(name):
    """What the checks must let through: numpy ints, n = 1 and n = T, the cosine schedule (which ignores
    beta_start/beta_end), and the last timestep of the schedule."""
    s = make(name)
    s.set_timesteps(np.int64(10))
    assert s.num_inference_steps == 10 and type(s.num_inference_steps) is int
    reference = make(name)
    reference.set_timesteps(10)
    assert torch.equal(s.timesteps, reference.timesteps)
    for n in (1, 1000):
        make(name).set_timesteps(n)
    make(name, num_train_timesteps=np.int64(500)).set_timesteps(20)
    PAIRS[name][0](beta_schedule="squaredcos_cap_v2", beta_start=0.5, beta_end=0.1).set_timesteps(5)
    for t in s.timesteps:
        out = s.step(torch.zeros(1, 4, 8, 8), t, torch.ones(1, 4, 8, 8)).prev_sample
    assert torch.isfinite(out).all()


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match="algorithm_type must be one of"):
        S.DPMSolverPP(algorithm_type="sde-dpmsolver++")
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        S.DDIM(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="unknown scheduler 'pndm'"):
        S.scheduler_class("pndm")


# --- inside a diffusers pipeline --------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts(tiny_diffusers_parts):
    return tiny_diffusers_parts()


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.usefixtures("one_thread")
def test_diffusers_pipeline_accepts_ours(name, parts):
    """The same image from diffusers' StableDiffusionPipeline with our scheduler as with its own."""
    ours_cls, theirs_cls = PAIRS[name]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    images = []
    for scheduler in (ours_cls.from_config(SD), theirs_cls.from_config(SD)):
        pipe = diffusers.StableDiffusionPipeline(**(parts | {"scheduler": scheduler}))
        pipe.set_progress_bar_config(disable=True)
        out = pipe("a red circle", num_inference_steps=4, guidance_scale=5.0, height=16, width=16, latents=latents,
                   generator=torch.Generator().manual_seed(0), output_type="np")
        images.append(out.images)
    assert images[0].shape == (1, 16, 16, 3)
    assert np.abs(images[0] - images[1]).max() < 1e-5  # pixels in [0, 1]; float32 round-off only
