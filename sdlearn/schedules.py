"""Noise schedules: how much noise the forward process has added by step t.

The forward process (Ho et al. 2020, Eq. 2) adds a little Gaussian noise at each of T steps,

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I),

and because Gaussians compose, any step can be reached from the clean x_0 in one jump (Eq. 4):

    q(x_t | x_0) = N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),  alpha_bar_t = prod_{s<=t} (1 - beta_s).

Everything a sampler needs follows from alpha_bar: the signal-to-noise ratio
SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021), the "VE" noise level
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) = SNR^(-1/2) used by Euler and DPM-Solver
(Karras et al. 2022), and the v-target of Salimans & Ho 2022.

Indices are 0-based as in diffusers: ``betas[0]`` is beta_1 of the paper.
"""
from __future__ import annotations

import math

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2),
    betas read back as 1 - alpha_bar(t)/alpha_bar(t-1) and capped at ``max_beta`` (their Sec. 3.2)."""
    def f(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    T = num_train_timesteps
    betas = [min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(beta_schedule: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4,
               beta_end: float = 0.02, trained_betas: list[float] | np.ndarray | None = None) -> torch.Tensor:
    """The variance schedule beta_1..beta_T, shape (T,), float32.

    linear:            evenly from beta_start to beta_end (DDPM: 1e-4 .. 0.02, Ho et al. Sec. 4)
    scaled_linear:     evenly in sqrt(beta), then squared (Stable Diffusion: 0.00085 .. 0.012)
    squaredcos_cap_v2: the cosine schedule (Nichol & Dhariwal, Eq. 17)
    """
    if trained_betas is not None:
        return torch.tensor(trained_betas, dtype=torch.float32)
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(T)
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s): the fraction of signal *variance* left at step t."""
    return torch.cumprod(1.0 - betas, dim=0)


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021, Eq. 1)."""
    return alpha_bar / (1.0 - alpha_bar)


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """lambda_t = log SNR(t) = 2 log(alpha_t / sigma_t): the time variable of DPM-Solver (Lu et al. 2022)."""
    return torch.log(alpha_bar) - torch.log1p(-alpha_bar)


def sigmas_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Noise level sigma_t = sqrt((1 - alpha_bar) / alpha_bar) of the equivalent "variance exploding"
    process x_t / sqrt(alpha_bar_t) = x_0 + sigma_t * eps (Karras et al. 2022, Table 1)."""
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """n noise levels from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho)
    (Karras et al. 2022, Eq. 5): more of them at low noise, where details are decided."""
    ramp = np.linspace(0, 1, n)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def _per_sample(values: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped to broadcast over ``like``: (B,) -> (B, 1, 1, ...)."""
    t = torch.as_tensor(t, device=values.device).long().flatten()
    v = values[t].to(device=like.device, dtype=like.dtype)  # (B,)
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) in one jump (Ho et al. Eq. 4): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    ``t`` is an int or a (B,) tensor of 0-based timesteps; ``alpha_bar`` is the (T,) table.
    """
    ab = _per_sample(alpha_bar, t, x0)  # (B, 1, 1, 1)
    return ab**0.5 * x0 + (1 - ab) ** 0.5 * noise


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The "velocity" v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022, Sec. 4),
    the training target of ``prediction_type="v_prediction"`` (Stable Diffusion 2.x 768)."""
    ab = _per_sample(alpha_bar, t, x0)
    return ab**0.5 * noise - (1 - ab) ** 0.5 * x0
