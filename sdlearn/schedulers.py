"""Samplers that run the reverse process: DDPM, DDIM, DPM-Solver++ (2M), Euler, Euler ancestral.

Each follows diffusers' scheduler protocol, so ours and diffusers' can be swapped both ways:

    scheduler.set_timesteps(n, device=...)          # choose the n steps to visit
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x).prev_sample

As in diffusers, DDPM, Euler and EulerAncestral may skip ``set_timesteps``: they start on the full
training schedule (timesteps T-1, ..., 0); DDIM and DPMSolverPP raise until it is called. Bad input
(a timestep not in the schedule, mismatched shapes, an impossible config) is a ValueError/TypeError
naming the argument.

Constructor keywords are diffusers' config keys with diffusers' defaults (``Scheduler.defaults``),
``from_config`` takes a diffusers ``scheduler_config.json`` (unknown keys ignored) and ``.config``
reads like diffusers' (``config.num_train_timesteps`` or ``config["num_train_timesteps"]``).
Options diffusers has and sdlearn does not (zero-terminal-SNR rescaling, learned variances, SDE
variants of DPM-Solver, ...) are accepted only at their default value and raise a ValueError otherwise.

Two families:
  * alpha_bar samplers (DDPM, DDIM) work on x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps;
  * sigma samplers (Euler, EulerAncestral, DPMSolverPP) work with sigma = sqrt((1 - alpha_bar) / alpha_bar).
    Euler integrates the "variance exploding" x / sqrt(alpha_bar) = x_0 + sigma eps, so its starting
    noise is scaled by init_noise_sigma = sigma_max and the model input by 1 / sqrt(sigma^2 + 1).
"""
from __future__ import annotations

import json
import numbers
import operator
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from sdlearn.device import randn_like
from sdlearn.schedules import (BETA_SCHEDULES, alpha_bar, karras_sigmas, make_betas, q_sample, sigmas_from_alpha_bar,
                               v_target)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
BOOL_KEYS = ("clip_sample", "set_alpha_to_one", "thresholding", "use_karras_sigmas", "lower_order_final",
             "euler_at_final", "rescale_betas_zero_snr")


class SchedulerOutput(NamedTuple):
    """What ``step`` returns: x_{t-1} and the model's current guess of x_0 (both (B, C, H, W))."""
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class Config(dict):
    """A scheduler's settings: a dict whose keys also read as attributes, like diffusers' FrozenDict."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def spaced_timesteps(timestep_spacing: str, num_inference_steps: int, num_train_timesteps: int,
                     steps_offset: int = 0) -> np.ndarray:
    """The training timesteps a sampler visits, descending, as float64 (Lin et al. 2024, Table 2).

    linspace: n evenly spaced from T-1 down to 0 (both ends included, not yet rounded)
    leading:  multiples of T//n counted up from 0, plus ``steps_offset`` (SD 1.x: 1, so 981, 961, ..., 1)
    trailing: multiples of T/n counted down from T, minus 1 (always starts at T-1, the pure-noise end)
    """
    n, T = num_inference_steps, num_train_timesteps
    if timestep_spacing == "linspace":
        return np.linspace(0, T - 1, n)[::-1].copy()
    if timestep_spacing == "leading":
        return (np.arange(n) * (T // n))[::-1].astype(np.float64) + steps_offset
    if timestep_spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)) - 1
    raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")


def dynamic_threshold(x0: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per sample, s = the ``ratio``
    quantile of |x_0| clamped to [1, max_value]; clip x_0 to [-s, s] and divide by s. Keeps a pixel-space
    model's early, wild x_0 guesses in range (with max_value = 1 it is plain clipping to [-1, 1])."""
    b = x0.shape[0]
    flat = x0.float().reshape(b, -1)  # (B, C, H, W) -> (B, C*H*W)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value)[:, None]  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)


def as_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as a Python int (numpy ints too, via ``operator.index``; not bools, floats or strings),
    else a TypeError; a ValueError if it is below ``minimum``. Both name the argument."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and n < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {n}")
    return n


def _as_real(name: str, value: Any) -> float:
    """``value`` as a finite float, else a TypeError/ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_same_shape(**tensors: Any) -> None:
    """Two tensors of one shape, else a TypeError/ValueError naming them (``step``'s and ``add_noise``'s inputs)."""
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    (name_a, a), (name_b, b) = tensors.items()
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _short(values: torch.Tensor) -> str:
    """A schedule for an error message: all of it if short, else its ends."""
    v = [int(x) if float(x).is_integer() else round(float(x), 3) for x in values.flatten().tolist()]
    if len(v) <= 12:
        return str(v)
    return f"[{', '.join(map(str, v[:4]))}, ..., {', '.join(map(str, v[-2:]))}] ({len(v)} timesteps)"


class Scheduler:
    """What all five samplers share: the config, the beta schedule, timestep bookkeeping, errors."""

    defaults: ClassVar[dict[str, Any]]  # diffusers' config keys and defaults for this sampler
    only: ClassVar[dict[str, tuple]] = {}  # options sdlearn implements only some values of
    prediction_types: ClassVar[tuple[str, ...]] = PREDICTION_TYPES
    diffusers_name: ClassVar[str]  # the diffusers class this one matches step for step
    order: ClassVar[int] = 1  # model calls per step (diffusers pipelines read it)
    # as in diffusers: DDPM and Euler (ancestral) start on the full training schedule (T-1, ..., 0) and step
    # without set_timesteps; DDIM and DPM-Solver++ need set_timesteps first (diffusers' raise or misread sigmas)
    needs_set_timesteps: ClassVar[bool] = True

    def __init__(self, **config: Any) -> None:
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown config keys {unknown}; "
                            f"allowed: {sorted(self.defaults)} (from_config ignores unknown keys)")
        self._internal_dict = Config({**self.defaults, **config})  # diffusers pipelines may replace it
        self._check_config()
        c = self.config
        for key, allowed in self.only.items():
            if c[key] not in allowed:
                raise ValueError(f"{key} must be one of {allowed} in sdlearn's {type(self).__name__}, got "
                                 f"{c[key]!r} (diffusers' {self.diffusers_name} has the other options)")
        self.betas = make_betas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end, c.trained_betas)
        self.alphas_cumprod = alpha_bar(self.betas)  # (T,) alpha_bar, diffusers' name for it
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(c.num_train_timesteps - 1, -1, -1)  # replaced by set_timesteps
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def _check_config(self) -> None:
        """Refuse settings that would give a wrong or NaN schedule, naming the key and what is allowed."""
        c = self.config
        T = as_int("num_train_timesteps", c.num_train_timesteps, minimum=1)
        if c.trained_betas is not None:
            betas = np.asarray(c.trained_betas, dtype=np.float64)
            if betas.shape != (T,) or not ((betas > 0) & (betas < 1)).all():
                raise ValueError(f"trained_betas must be num_train_timesteps={T} numbers in (0, 1), "
                                 f"got shape {betas.shape}")
        elif c.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {c.beta_schedule!r}")
        elif c.beta_schedule != "squaredcos_cap_v2":  # the cosine schedule ignores beta_start/beta_end
            start, end = _as_real("beta_start", c.beta_start), _as_real("beta_end", c.beta_end)
            if not 0 < start < end < 1:
                raise ValueError(f"beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1, "
                                 f"got beta_start={start}, beta_end={end}")
        if c.prediction_type not in self.prediction_types:
            raise ValueError(f"prediction_type must be one of {self.prediction_types}, got {c.prediction_type!r}")
        if c.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {c.timestep_spacing!r}")
        as_int("steps_offset", c.steps_offset, minimum=0)
        for key in BOOL_KEYS:
            if key in c and not isinstance(c[key], (bool, np.bool_)):
                raise TypeError(f"{key} must be True or False, got {type(c[key]).__name__} {c[key]!r}")
        for key in ("clip_sample_range", "sample_max_value", "sigma_min", "sigma_max"):
            if c.get(key) is not None and _as_real(key, c[key]) <= 0:
                raise ValueError(f"{key} must be > 0, got {c[key]}")
        if "dynamic_thresholding_ratio" in c and not 0 < _as_real("dynamic_thresholding_ratio",
                                                                  c.dynamic_thresholding_ratio) <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1], got {c.dynamic_thresholding_ratio}")
        if c.get("sigma_min") is not None and c.get("sigma_max") is not None and c.sigma_min >= c.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={c.sigma_min}, sigma_max={c.sigma_max}")

    # --- config -----------------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self._internal_dict

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> Scheduler:
        """Build from a diffusers scheduler config (any scheduler's: keys this sampler lacks are ignored,
        and keys left unset (None) take this sampler's own defaults)."""
        merged = {**dict(config), **overrides}
        return cls(**{k: v for k, v in merged.items() if k in cls.defaults and v is not None})

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``scheduler_config.json`` naming the matching diffusers class, so that diffusers'
        ``from_pretrained`` loads this folder too."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        data = {"_class_name": self.diffusers_name, **self.config}
        (path / "scheduler_config.json").write_text(json.dumps(data, indent=2, default=float) + "\n")

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.config.items() if self.defaults.get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # --- timesteps --------------------------------------------------------------------------------
    def _check_num_inference_steps(self, num_inference_steps: int) -> int:
        """``num_inference_steps`` as an int in [1, num_train_timesteps] (numpy ints accepted)."""
        T = self.config.num_train_timesteps
        n = as_int("num_inference_steps", num_inference_steps)
        if not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be between 1 and num_train_timesteps={T}, got {n}")
        return n

    def _check_ready(self, method: str = "step") -> None:
        if self.needs_set_timesteps and self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}.{method}() called before set_timesteps(num_inference_steps): "
                             "call scheduler.set_timesteps(n) first")

    def _check_step_inputs(self, model_output: torch.Tensor, timestep: float | torch.Tensor,
                           sample: torch.Tensor) -> None:
        """What every ``step`` checks first: set_timesteps was called (where needed), tensors of one
        shape, and a timestep of the current schedule."""
        self._check_ready()
        _check_same_shape(model_output=model_output, sample=sample)
        self.index_for_timestep(timestep)

    def _check_add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                         timesteps: torch.Tensor | int) -> torch.Tensor:
        """Tensors of one shape and one timestep (or one per batch element); returns timesteps as (B,) or (1,)."""
        _check_same_shape(noise=noise, original_samples=original_samples)
        if not isinstance(timesteps, (torch.Tensor, numbers.Real)) or isinstance(timesteps, bool):
            raise TypeError(f"timesteps must be a tensor or a number, got {type(timesteps).__name__}")
        t = torch.as_tensor(timesteps).flatten()
        B = original_samples.shape[0]
        if torch.as_tensor(timesteps).ndim > 1 or t.numel() not in (1, B):
            raise ValueError(f"timesteps must be one timestep or one per sample (B={B},), "
                             f"got shape {tuple(torch.as_tensor(timesteps).shape)}")
        return t

    @property
    def step_index(self) -> int | None:
        """Position in ``timesteps`` of the next step (sigma samplers count steps instead of looking t up)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start part-way down the schedule (image-to-image: the pipeline skips the noisiest steps)."""
        self._begin_index = begin_index

    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Where ``timestep`` is in the schedule. A timestep listed twice (Karras sigmas, rounded) starts
        at its second place, as diffusers does, so that image-to-image does not skip a step."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        if isinstance(timestep, torch.Tensor) and timestep.numel() != 1:
            raise ValueError(f"timestep must be a single timestep, got a tensor of shape {tuple(timestep.shape)}")
        if not isinstance(timestep, (torch.Tensor, numbers.Real)) or isinstance(timestep, bool):
            raise TypeError(f"timestep must be a number or a 1-element tensor, got {type(timestep).__name__}")
        matches = (schedule == torch.as_tensor(timestep, device=schedule.device).reshape(())).nonzero()
        if len(matches) == 0:
            raise ValueError(f"timestep {float(timestep)} is not one of this scheduler's timesteps "
                             f"{_short(schedule)}")
        return matches[1 if len(matches) > 1 else 0].item()

    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    # --- what every sampler can do ----------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's input at this step: x_t itself for alpha_bar samplers (Euler overrides it)."""
        return sample

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the starting noise x_T (1 for samplers that work on x_t itself)."""
        return 1.0

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction training target at integer ``timesteps`` (``sample`` is x_0)."""
        return v_target(sample, noise, timesteps, self.alphas_cumprod)


def _x0_and_eps(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor,
                prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the model's output as (x_0, eps), using x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps (Ho et al. Eq. 4)
    and, for v = sqrt(ab) eps - sqrt(1 - ab) x_0, its inverse (Salimans & Ho 2022, Sec. 4)."""
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - beta_prod_t**0.5 * eps) / alpha_prod_t**0.5
    elif prediction_type == "v_prediction":
        x0 = alpha_prod_t**0.5 * sample - beta_prod_t**0.5 * model_output
        eps = alpha_prod_t**0.5 * model_output + beta_prod_t**0.5 * sample
    else:  # "sample": the model predicts x_0 directly
        x0 = model_output
        eps = (sample - alpha_prod_t**0.5 * x0) / beta_prod_t**0.5
    return x0, eps


class _AlphaBarScheduler(Scheduler):
    """DDPM and DDIM: look up alpha_bar at integer timesteps."""

    only = {"rescale_betas_zero_snr": (False,)}

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Visit ``num_inference_steps`` integer timesteps chosen by ``config.timestep_spacing``."""
        num_inference_steps = self._check_num_inference_steps(num_inference_steps)
        c = self.config
        t = spaced_timesteps(c.timestep_spacing, num_inference_steps, c.num_train_timesteps, c.steps_offset)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(t.round().astype(np.int64)).to(device)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward-noise x_0 to x_t in one jump (Ho et al. Eq. 4); ``timesteps`` is (B,) integer."""
        t = self._check_add_noise(original_samples, noise, timesteps)
        T = self.config.num_train_timesteps
        if (t.is_floating_point() and not torch.equal(t, t.round())) or not ((t >= 0) & (t < T)).all():
            raise ValueError(f"timesteps must be integers in [0, num_train_timesteps={T}), got {_short(t)}")
        return q_sample(original_samples, timesteps, noise, self.alphas_cumprod)

    def _alpha_bar_at(self, t: int) -> torch.Tensor:
        """alpha_bar_t, and 1 before the first step (t < 0) where nothing has been noised yet."""
        return self.alphas_cumprod[t] if t >= 0 else torch.tensor(1.0)

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        """Keep x_0 in the data range: dynamic thresholding, else clipping to +-clip_sample_range."""
        c = self.config
        if c.thresholding:
            return dynamic_threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        return x0.clamp(-c.clip_sample_range, c.clip_sample_range) if c.clip_sample else x0


class DDPM(_AlphaBarScheduler):
    """Ancestral sampling of Ho et al. 2020 (Algorithm 2), generalised to skip steps.

    From t to the previous visited step s < t, sample the Gaussian posterior q(x_s | x_t, x_0)
    (Eq. 6-7) with x_0 replaced by the model's guess:
        mean = sqrt(ab_s) beta / (1 - ab_t) * x_0 + sqrt(alpha) (1 - ab_s) / (1 - ab_t) * x_t,
        var  = (1 - ab_s) / (1 - ab_t) * beta   ("fixed_small";  "fixed_large" uses beta),
    where alpha = ab_t / ab_s and beta = 1 - alpha cover the whole jump from s to t.
    """

    diffusers_name = "DDPMScheduler"
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, variance_type="fixed_small", clip_sample=True, prediction_type="epsilon",
                    thresholding=False, dynamic_thresholding_ratio=0.995, clip_sample_range=1.0,
                    sample_max_value=1.0, timestep_spacing="leading", steps_offset=0, rescale_betas_zero_snr=False)
    only = {**_AlphaBarScheduler.only, "variance_type": ("fixed_small", "fixed_large")}
    needs_set_timesteps = False  # until then: all T training steps, t -> t - 1 (diffusers' DDPMScheduler too)

    def _previous_timestep(self, t: int) -> int:
        """The next timestep in the schedule (-1 after the last one; t - 1 before set_timesteps)."""
        i = self.index_for_timestep(t)
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True) -> SchedulerOutput | tuple:
        """x_t -> x_s: the posterior mean plus fresh noise (none on the last step)."""
        self._check_step_inputs(model_output, timestep, sample)
        t = int(timestep)
        s = self._previous_timestep(t)
        ab_t, ab_s = self.alphas_cumprod[t], self._alpha_bar_at(s)
        alpha = ab_t / ab_s  # 1 - beta for the whole jump s -> t
        beta = 1 - alpha
        x0, _ = _x0_and_eps(model_output, sample, ab_t, self.config.prediction_type)
        x0 = self._clip(x0)
        mean = (ab_s**0.5 * beta / (1 - ab_t)) * x0 + (alpha**0.5 * (1 - ab_s) / (1 - ab_t)) * sample  # Eq. 7
        prev_sample = mean
        if t > 0:
            if self.config.variance_type == "fixed_small":  # the true posterior variance, beta-tilde
                variance = torch.clamp((1 - ab_s) / (1 - ab_t) * beta, min=1e-20)
            else:  # "fixed_large": beta, the upper bound (Ho et al. Sec. 3.2)
                variance = beta
            prev_sample = mean + variance**0.5 * randn_like(model_output, generator)
        out = SchedulerOutput(prev_sample, x0)
        return out if return_dict else tuple(out)


class DDIM(_AlphaBarScheduler):
    """Denoising diffusion implicit models (Song et al. 2021, Eq. 12):

        x_s = sqrt(ab_s) x_0 + sqrt(1 - ab_s - sigma^2) eps + sigma z,
        sigma = eta * sqrt((1 - ab_s) / (1 - ab_t)) * sqrt(1 - ab_t / ab_s)    (Eq. 16).

    eta = 0 is deterministic (an ODE solver); eta = 1 has DDPM's variance.
    As in diffusers, the previous step is taken to be t - T // n for every spacing.
    """

    diffusers_name = "DDIMScheduler"
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, clip_sample=True, set_alpha_to_one=True, steps_offset=0,
                    prediction_type="epsilon", thresholding=False, dynamic_thresholding_ratio=0.995,
                    clip_sample_range=1.0, sample_max_value=1.0, timestep_spacing="leading",
                    rescale_betas_zero_snr=False)

    def _alpha_bar_at(self, t: int) -> torch.Tensor:
        # the step below the first: "clean" (1) or, as SD's config asks, alpha_bar at t=0
        if t >= 0:
            return self.alphas_cumprod[t]
        return torch.tensor(1.0) if self.config.set_alpha_to_one else self.alphas_cumprod[0]

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> SchedulerOutput | tuple:
        """x_t -> x_s along Eq. 12; with eta > 0, noise from ``generator`` (or ``variance_noise``)."""
        self._check_step_inputs(model_output, timestep, sample)
        if _as_real("eta", eta) < 0:
            raise ValueError(f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        t = int(timestep)
        s = t - self.config.num_train_timesteps // self.num_inference_steps
        ab_t, ab_s = self.alphas_cumprod[t], self._alpha_bar_at(s)
        x0, eps = _x0_and_eps(model_output, sample, ab_t, self.config.prediction_type)
        x0 = self._clip(x0)
        if use_clipped_model_output:  # re-derive eps from the clipped x_0
            eps = (sample - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5
        variance = (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        sigma = eta * variance**0.5  # Eq. 16
        prev_sample = ab_s**0.5 * x0 + (1 - ab_s - sigma**2) ** 0.5 * eps  # Eq. 12
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass either generator or variance_noise to DDIM.step, not both")
            z = variance_noise if variance_noise is not None else randn_like(model_output, generator)
            prev_sample = prev_sample + sigma * z
        out = SchedulerOutput(prev_sample, x0)
        return out if return_dict else tuple(out)


class _SigmaScheduler(Scheduler):
    """Euler, Euler ancestral and DPM-Solver++: count steps through a table of sigmas."""

    only = {"rescale_betas_zero_snr": (False,)}

    def _sigma_table(self) -> np.ndarray:
        """sigma at every training timestep, (T,) float32, increasing with t."""
        return sigmas_from_alpha_bar(self.alphas_cumprod).numpy()

    def _t_from_sigma(self, sigmas: np.ndarray) -> np.ndarray:
        """Invert sigma(t): linear interpolation in log sigma between neighbouring training timesteps."""
        table = self._sigma_table()
        return np.interp(np.log(np.maximum(sigmas, 1e-10)), np.log(table), np.arange(len(table)))

    def _final_sigma(self) -> float:
        # "zero": end at the clean image; "sigma_min": stop at the smallest training noise level
        return 0.0 if self.config.get("final_sigmas_type", "zero") == "zero" else float(self._sigma_table()[0])

    def _karras(self, sigmas: np.ndarray, n: int) -> np.ndarray:
        lo = self.config.get("sigma_min") or float(sigmas[-1])
        hi = self.config.get("sigma_max") or float(sigmas[0])
        return karras_sigmas(lo, hi, n)

    def _sigma_for(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """sigma at each of the (B,) ``timesteps`` of the current schedule (img2img: at begin_index)."""
        self._check_ready("add_noise")
        timesteps = self._check_add_noise(original_samples, noise, timesteps)
        if self._begin_index is None:
            idx = [self.index_for_timestep(t) for t in timesteps.flatten()]
        else:
            idx = [self._step_index if self._step_index is not None else self._begin_index] * timesteps.numel()
        return self.sigmas[idx]

    def _check_index(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor) -> int:
        self._check_step_inputs(model_output, timestep, sample)
        if self._step_index is None:
            self._init_step_index(timestep)
        return self._step_index


class Euler(_SigmaScheduler):
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x_0(x, sigma)) / sigma
    (Karras et al. 2022, Algorithm 2 with its optional "churn" noise s_churn, Eq. 4-5 of Sec. 4).

    x lives in the variance-exploding space x = x_t / sqrt(alpha_bar) = x_0 + sigma eps, which is why
    the starting noise has standard deviation init_noise_sigma and the UNet sees x / sqrt(sigma^2 + 1).
    """

    diffusers_name = "EulerDiscreteScheduler"
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, prediction_type="epsilon", interpolation_type="linear",
                    use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False, sigma_min=None,
                    sigma_max=None, timestep_spacing="linspace", timestep_type="discrete", steps_offset=0,
                    rescale_betas_zero_snr=False, final_sigmas_type="zero")
    only = {**_SigmaScheduler.only, "interpolation_type": ("linear",), "use_exponential_sigmas": (False,),
            "use_beta_sigmas": (False,), "timestep_type": ("discrete",), "final_sigmas_type": ("zero", "sigma_min")}
    needs_set_timesteps = False  # until then: all T training sigmas, as diffusers' Euler schedulers

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.timesteps = self.timesteps.float()
        self.sigmas = torch.from_numpy(np.append(self._sigma_table()[::-1], 0.0).astype(np.float32))

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Pick the timesteps (``timestep_spacing``), read sigma at each, optionally respace them as
        Karras et al. (Eq. 5), and append the final sigma."""
        num_inference_steps = self._check_num_inference_steps(num_inference_steps)
        c = self.config
        t = spaced_timesteps(c.timestep_spacing, num_inference_steps, c.num_train_timesteps, c.steps_offset)
        t = t.astype(np.float32)
        table = self._sigma_table()
        sigmas = np.interp(t, np.arange(len(table)), table)  # sigma at fractional timesteps
        if c.get("use_karras_sigmas"):  # (EulerAncestral has no such option)
            sigmas = self._karras(sigmas, num_inference_steps)
            t = self._t_from_sigma(sigmas)
        self.sigmas = torch.from_numpy(np.append(sigmas, self._final_sigma()).astype(np.float32))  # (n+1,)
        self.timesteps = torch.from_numpy(t.astype(np.float32)).to(device)
        self.num_inference_steps = num_inference_steps
        self._step_index = self._begin_index = None

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        sigma_max = self.sigmas.max()
        # "leading" never reaches t=T-1, so x_T ~ N(0, sigma^2 + 1) rather than N(0, sigma^2)
        return sigma_max if self.config.timestep_spacing in ("linspace", "trailing") else (sigma_max**2 + 1) ** 0.5

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """x / sqrt(sigma^2 + 1) = x_t: the UNet was trained on the alpha_bar-scaled sample."""
        if self._step_index is None:
            self._init_step_index(timestep)
        return sample / (self.sigmas[self._step_index] ** 2 + 1) ** 0.5

    def _x0(self, model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The model's x_0 in VE space: x - sigma eps, or from v (x_t = x / sqrt(sigma^2 + 1))."""
        p = self.config.prediction_type
        if p == "epsilon":
            return sample - sigma * model_output
        if p == "v_prediction":
            return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        return model_output

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: torch.Generator | None = None, return_dict: bool = True) -> SchedulerOutput | tuple:
        """One Euler step from sigma_i to sigma_{i+1}; with s_churn > 0, first raise the noise to
        sigma_hat = sigma (1 + gamma) (Karras et al. Algorithm 2, lines 5-7)."""
        if _as_real("s_churn", s_churn) < 0:
            raise ValueError(f"s_churn must be >= 0 (0: no extra noise), got {s_churn}")
        i = self._check_index(model_output, timestep, sample)
        sample = sample.float()
        sigma = self.sigmas[i]
        gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            noise = randn_like(model_output, generator) * s_noise
            sample = sample + noise * (sigma_hat**2 - sigma**2) ** 0.5
        x0 = self._x0(model_output, sample, sigma_hat if self.config.prediction_type == "epsilon" else sigma)
        d = (sample - x0) / sigma_hat  # dx/dsigma
        prev_sample = (sample + d * (self.sigmas[i + 1] - sigma_hat)).to(model_output.dtype)
        self._step_index += 1
        out = SchedulerOutput(prev_sample, x0)
        return out if return_dict else tuple(out)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_0 + sigma eps at the schedule's ``timesteps`` (VE space: no sqrt(alpha_bar) factor)."""
        sigma = self._sigma_for(original_samples, noise, timesteps).to(original_samples)  # (B,)
        return original_samples + noise * sigma.reshape(-1, *([1] * (original_samples.ndim - 1)))


class EulerAncestral(Euler):
    """Euler ancestral (Karras et al. 2022 / k-diffusion): step deterministically down to
    sigma_down, then add fresh noise of size sigma_up so the marginal is right at sigma_{i+1}:
        sigma_up = sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2),
        sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2).
    """

    diffusers_name = "EulerAncestralDiscreteScheduler"
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, prediction_type="epsilon", timestep_spacing="linspace", steps_offset=0,
                    rescale_betas_zero_snr=False)
    only = _SigmaScheduler.only
    prediction_types = ("epsilon", "v_prediction")

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True) -> SchedulerOutput | tuple:
        """Euler down to sigma_down, then noise up by sigma_up (noise is drawn on the last step too)."""
        i = self._check_index(model_output, timestep, sample)
        sample = sample.float()
        sigma, sigma_to = self.sigmas[i], self.sigmas[i + 1]
        x0 = self._x0(model_output, sample, sigma)
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        d = (sample - x0) / sigma
        prev_sample = sample + d * (sigma_down - sigma)
        prev_sample = prev_sample + randn_like(model_output, generator) * sigma_up
        self._step_index += 1
        out = SchedulerOutput(prev_sample.to(model_output.dtype), x0)
        return out if return_dict else tuple(out)


class DPMSolverPP(_SigmaScheduler):
    """DPM-Solver++ 2M (Lu et al. 2022b, Algorithm 2): a multistep solver of the diffusion ODE in
    the half-log-SNR time lambda = log(alpha_t / sigma_t), which predicts x_0 and reuses the
    previous step's x_0 for a second-order correction (one model call per step).

    With h = lambda_t - lambda_s, the first-order step (= DDIM) is
        x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s,
    and 2M adds  - 0.5 alpha_t (e^{-h} - 1) D1,  D1 = (x0_s - x0_prev) / r,  r = h_prev / h.
    Here alpha_t = 1 / sqrt(sigma^2 + 1) and sigma_t = sigma * alpha_t (VP variables from the VE sigma).
    """

    diffusers_name = "DPMSolverMultistepScheduler"
    defaults = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, solver_order=2, prediction_type="epsilon", thresholding=False,
                    dynamic_thresholding_ratio=0.995, sample_max_value=1.0, algorithm_type="dpmsolver++",
                    solver_type="midpoint", lower_order_final=True, euler_at_final=False, use_karras_sigmas=False,
                    use_exponential_sigmas=False, use_beta_sigmas=False, use_lu_lambdas=False,
                    use_flow_sigmas=False, flow_shift=1.0, final_sigmas_type="zero",
                    lambda_min_clipped=-float("inf"), variance_type=None, timestep_spacing="linspace",
                    steps_offset=0, rescale_betas_zero_snr=False, use_dynamic_shifting=False,
                    time_shift_type="exponential")
    only = {**_SigmaScheduler.only, "solver_order": (1, 2), "algorithm_type": ("dpmsolver++",),
            "solver_type": ("midpoint", "heun"), "use_exponential_sigmas": (False,),
            "use_beta_sigmas": (False,), "use_lu_lambdas": (False,), "use_flow_sigmas": (False,),
            "lambda_min_clipped": (-float("inf"),), "variance_type": (None,), "use_dynamic_shifting": (False,),
            "final_sigmas_type": ("zero", "sigma_min")}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.sigmas = torch.from_numpy(np.append(self._sigma_table()[::-1], 0.0).astype(np.float32))
        self.model_outputs: list[torch.Tensor | None] = [None] * self.config.solver_order
        self.lower_order_nums = 0

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Timesteps by ``timestep_spacing`` (linspace/leading split [0, T) into n+1 points and drop t=0,
        since the last step goes to sigma=0), or Karras sigmas mapped back to rounded timesteps."""
        num_inference_steps = self._check_num_inference_steps(num_inference_steps)
        c, n, T = self.config, num_inference_steps, self.config.num_train_timesteps
        if c.timestep_spacing == "trailing":
            t = spaced_timesteps("trailing", n, T)
        else:
            t = spaced_timesteps(c.timestep_spacing, n + 1, T, c.steps_offset if c.timestep_spacing == "leading" else 0)
            t = t.round()[:-1]
        table = self._sigma_table()
        if c.use_karras_sigmas:
            sigmas = self._karras(table[::-1], n)
            t = self._t_from_sigma(sigmas)
            if c.beta_schedule != "squaredcos_cap_v2":
                t = t.round()
        else:
            sigmas = np.interp(t, np.arange(len(table)), table)
        self.sigmas = torch.from_numpy(np.append(sigmas, self._final_sigma()).astype(np.float32))  # (n+1,)
        self.timesteps = torch.from_numpy(t).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(t)
        self.model_outputs = [None] * c.solver_order
        self.lower_order_nums = 0
        self._step_index = self._begin_index = None

    @staticmethod
    def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VE sigma -> VP (alpha_t, sigma_t) with alpha_t^2 + sigma_t^2 = 1."""
        alpha_t = 1 / (sigma**2 + 1) ** 0.5
        return alpha_t, sigma * alpha_t

    def _lambda(self, sigma: torch.Tensor) -> torch.Tensor:
        alpha_t, sigma_t = self._alpha_sigma(sigma)
        return torch.log(alpha_t) - torch.log(sigma_t)

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True) -> SchedulerOutput | tuple:
        """First order on the first step (no history) and on the final step (to sigma = 0, or when
        lower_order_final with < 15 steps); second order (2M) in between."""
        i = self._check_index(model_output, timestep, sample)
        n = len(self.timesteps)
        c = self.config
        alpha_s, sigma_s = self._alpha_sigma(self.sigmas[i])
        if c.prediction_type == "epsilon":  # x_s = alpha_s x_0 + sigma_s eps
            x0 = (sample - sigma_s * model_output) / alpha_s
        elif c.prediction_type == "v_prediction":
            x0 = alpha_s * sample - sigma_s * model_output
        else:
            x0 = model_output
        if c.thresholding:  # pixel-space models: keep x_0 in range (Lu et al. 2022b, Sec. 5)
            x0 = dynamic_threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        self.model_outputs = [*self.model_outputs[1:], x0]
        sample = sample.float()
        final = i == n - 1 and (c.euler_at_final or (c.lower_order_final and n < 15) or c.final_sigmas_type == "zero")
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        h = self._lambda(self.sigmas[i + 1]) - self._lambda(self.sigmas[i])
        prev_sample = sigma_t / sigma_s * sample - alpha_t * (torch.exp(-h) - 1.0) * x0  # first order (DDIM)
        if not (c.solver_order == 1 or self.lower_order_nums < 1 or final):
            h_prev = self._lambda(self.sigmas[i]) - self._lambda(self.sigmas[i - 1])
            d1 = (x0 - self.model_outputs[-2]) / (h_prev / h)  # finite difference of x_0 in lambda
            if c.solver_type == "midpoint":
                prev_sample = prev_sample - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d1
            else:  # "heun"
                prev_sample = prev_sample + alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0) * d1
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self._step_index += 1
        out = SchedulerOutput(prev_sample.to(model_output.dtype), x0)
        return out if return_dict else tuple(out)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """alpha_t x_0 + sigma_t eps at the schedule's ``timesteps`` (the VP form of Eq. 4)."""
        alpha_t, sigma_t = self._alpha_sigma(self._sigma_for(original_samples, noise, timesteps).to(original_samples))
        shape = (-1, *([1] * (original_samples.ndim - 1)))
        return alpha_t.reshape(shape) * original_samples + sigma_t.reshape(shape) * noise


#: The one table of samplers: the names ``scheduler=`` and ``--sampler`` take, and beside each the diffusers
#: class it matches step for step (its ``diffusers_name``: what a diffusers ``scheduler_config.json`` says).
SCHEDULERS: dict[str, type[Scheduler]] = {
    "ddpm": DDPM,                        # DDPMScheduler
    "ddim": DDIM,                        # DDIMScheduler
    "dpm++": DPMSolverPP,                # DPMSolverMultistepScheduler
    "euler": Euler,                      # EulerDiscreteScheduler
    "euler_a": EulerAncestral,           # EulerAncestralDiscreteScheduler
    "dpmsolver++": DPMSolverPP, "euler_ancestral": EulerAncestral, "euler-ancestral": EulerAncestral,  # aliases
}


def scheduler_class(name: str) -> type[Scheduler]:
    """The sampler called ``name``: a key of ``SCHEDULERS`` (any case) or a diffusers class name
    (``"DDIMScheduler"``, ``"DPMSolverMultistepScheduler"``, ...)."""
    by_diffusers = {cls.diffusers_name: cls for cls in SCHEDULERS.values()}
    cls = (SCHEDULERS.get(name.lower()) or by_diffusers.get(name)) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)} "
                         f"or a diffusers name ({', '.join(by_diffusers)})")
    return cls


@torch.no_grad()
def sample_loop(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler: Scheduler,
                noise: torch.Tensor, num_inference_steps: int, generator: torch.Generator | None = None,
                progress: bool = True, return_trajectory: bool = False) -> torch.Tensor | tuple[torch.Tensor, list]:
    """Run the reverse process from standard-normal ``noise`` (B, ...) with ``model(x_t, t) -> output``.

    With ``return_trajectory``, also return the list of samples after every step (for plots).
    """
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma  # (B, ...)
    path = [x]
    for t in tqdm(scheduler.timesteps, disable=not progress, desc=type(scheduler).__name__):
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=generator).prev_sample
        path.append(x)
    return (x, path) if return_trajectory else x
