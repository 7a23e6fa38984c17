"""Beta schedules, the closed-form forward process and its friends (sdlearn.schedules)."""
from __future__ import annotations

import math

import diffusers
import pytest
import torch

from sdlearn import schedules as sch


@pytest.mark.parametrize("schedule, start, end", [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012),
                                                   ("squaredcos_cap_v2", 1e-4, 0.02)])
def test_betas_match_diffusers(schedule, start, end):
    theirs = diffusers.DDPMScheduler(beta_schedule=schedule, beta_start=start, beta_end=end)
    betas = sch.make_betas(schedule, 1000, start, end)
    assert betas.shape == (1000,) and betas.dtype == torch.float32
    assert torch.equal(betas, theirs.betas)  # same float32 formula: bit-identical
    assert torch.allclose(sch.alpha_bar(betas), theirs.alphas_cumprod, rtol=1e-6)


def test_schedule_endpoints():
    ab = sch.alpha_bar(sch.make_betas("scaled_linear", 1000, 0.00085, 0.012))
    assert ab[0] == pytest.approx(1 - 0.00085, rel=1e-6)  # first step removes beta_1 of the variance
    assert 0.004 < float(ab[-1]) < 0.005  # SD's x_T keeps sqrt(0.0047) = 6.9% of the signal
    assert (ab[1:] < ab[:-1]).all()
    cos = sch.alpha_bar(sch.cosine_betas(1000))
    assert float(cos[-1]) < 1e-6 and sch.cosine_betas(1000).max() <= 0.999


def test_unknown_schedule():
    with pytest.raises(ValueError, match=r"beta_schedule must be one of \('linear', 'scaled_linear'"):
        sch.make_betas("quadratic")


def test_q_sample_is_diffusers_add_noise_and_eq4():
    theirs = diffusers.DDPMScheduler()
    ab = sch.alpha_bar(sch.make_betas())
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    ours = sch.q_sample(x0, t, noise, ab)
    assert torch.allclose(ours, theirs.add_noise(x0, noise, t), atol=1e-6)
    # t = 999 is nearly pure noise: its correlation with x_0 is sqrt(alpha_bar) ~ 0.006
    assert ours[3].flatten() @ noise[3].flatten() / noise[3].norm() / ours[3].norm() > 0.99
    assert torch.allclose(sch.v_target(x0, noise, t, ab), theirs.get_velocity(x0, noise, t), atol=1e-6)


def test_markov_chain_equals_closed_form():
    """Iterating q(x_t | x_{t-1}) (Eq. 2) t times gives the distribution of Eq. 4: same mean and std."""
    torch.manual_seed(0)
    betas = sch.make_betas("linear", 1000)
    ab = sch.alpha_bar(betas)
    n, t = 20000, 300
    x0 = torch.full((n,), 1.5)
    x = x0.clone()
    for s in range(t + 1):  # steps 0..t (0-based, as betas[0] is beta_1)
        x = (1 - betas[s]) ** 0.5 * x + betas[s] ** 0.5 * torch.randn(n)
    closed = sch.q_sample(x0, t, torch.randn(n), ab)
    se = 4 / math.sqrt(n)  # 4 standard errors of a mean (and roughly of a std) of unit-scale data
    assert abs(float(x.mean()) - 1.5 * float(ab[t]) ** 0.5) < se
    assert abs(float(x.mean() - closed.mean())) < 1.5 * se
    assert abs(float(x.std()) - float(1 - ab[t]) ** 0.5) < se
    assert abs(float(x.std() - closed.std())) < 1.5 * se


def test_snr_sigma_relations():
    ab = sch.alpha_bar(sch.make_betas("scaled_linear", 1000, 0.00085, 0.012))
    sigma = sch.sigmas_from_alpha_bar(ab)
    assert torch.allclose(sch.snr(ab), sigma**-2, rtol=1e-4)
    assert torch.allclose(sch.log_snr(ab), -2 * torch.log(sigma), atol=1e-4)
    assert (sch.log_snr(ab)[1:] < sch.log_snr(ab)[:-1]).all()  # noise only grows
    assert float(sigma[-1]) == pytest.approx(14.61, abs=0.01)  # SD's sigma_max, Euler's init_noise_sigma


def test_karras_sigmas():
    s = sch.karras_sigmas(0.03, 14.6, 10)
    assert s[0] == pytest.approx(14.6) and s[-1] == pytest.approx(0.03)
    steps = -torch.diff(torch.tensor(s))
    assert (steps > 0).all() and (steps[1:] < steps[:-1]).all()  # ever smaller steps towards sigma_min
