"""Exercise checks for the notebooks: a hint until the answer is right, then "correct!".

Every exercise in the series has a stub cell (the student edition ships it unsolved) and a check
cell that calls ``check``. The check never raises on a wrong or missing answer: it prints what is
not yet right and a hint, so a learner can run the notebook top to bottom at any time. It returns
whether the answer is right; the solutions edition asserts that it is.

    ok = check("Exercise 1", answer_1, expected=int((snr < 1).nonzero()[0]) + 1,
               hint="find the first index where snr < 1; steps are counted from 1")

``expected`` is computed by the check cell, never typed in as a literal. For answers that are not a
single value, pass ``test``: a function of the answer that returns True, or a string saying what is
wrong (it may also raise; the error is shown as part of the hint).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["check", "close", "generative_families"]

Test = Callable[[Any], "bool | str | None"]


def close(answer: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """True when ``answer`` equals ``expected``: exactly for ints, strings, bools and containers of
    them; within ``rtol``/``atol`` for floats, tensors and arrays (of the same shape)."""
    if isinstance(expected, torch.Tensor) or isinstance(answer, torch.Tensor):
        if not isinstance(answer, torch.Tensor) or not isinstance(expected, torch.Tensor):
            return False
        return answer.shape == expected.shape and torch.allclose(answer.double(), expected.double(), rtol, atol)
    if isinstance(expected, np.ndarray) or isinstance(answer, np.ndarray):
        a, e = np.asarray(answer), np.asarray(expected)
        return a.shape == e.shape and bool(np.allclose(a, e, rtol, atol))
    if isinstance(expected, bool) or isinstance(answer, bool):
        return answer is expected or (isinstance(answer, (bool, np.bool_)) and bool(answer) == expected)
    if isinstance(expected, float) or isinstance(answer, float):
        try:
            return math.isclose(float(answer), float(expected), rel_tol=rtol, abs_tol=atol)
        except (TypeError, ValueError):
            return False
    if isinstance(expected, (list, tuple)) and isinstance(answer, (list, tuple)):
        return len(answer) == len(expected) and all(close(a, e, rtol, atol) for a, e in zip(answer, expected))
    if isinstance(expected, dict) and isinstance(answer, dict):
        return answer.keys() == expected.keys() and all(close(answer[k], expected[k], rtol, atol) for k in expected)
    return answer == expected


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def check(label: str, answer: Any, expected: Any = None, *, test: Test | None = None,
          hint: str = "", rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Print "correct!" or "not yet: ..." with ``hint``; return whether ``answer`` is right.

    Give either ``expected`` (compared with ``close``) or ``test`` (a function of the answer:
    True when right, False or a message when not). An answer that is still ``None`` or ``...``
    (the stubs' placeholders) gets the hint without running the test.
    """
    if (expected is None) == (test is None):
        raise ValueError("give check() either expected= or test=, not both")
    tail = f" Hint: {hint}" if hint else ""
    stub = answer is None or answer is Ellipsis or (isinstance(answer, (tuple, list)) and len(answer) > 0
                                                   and all(a is None or a is Ellipsis for a in answer))
    if stub:
        print(f"not yet: {label} is still the stub (None or ...): write your answer in the cell above.{tail}")
        return False
    if test is not None:
        try:
            verdict = test(answer)
        except Exception as e:  # noqa: BLE001 - the learner's code may fail in any way; say how
            print(f"not yet: checking {label} raised {type(e).__name__}: {e}.{tail}")
            return False
        ok = verdict is True or (verdict is not False and verdict is not None and not isinstance(verdict, str)
                                 and bool(verdict))
        if not ok:
            why = verdict if isinstance(verdict, str) else f"{_describe(answer)} does not pass the check"
            print(f"not yet: {label}: {why}.{tail}")
            return False
    elif not close(answer, expected, rtol, atol):
        print(f"not yet: {label} is {_describe(answer)}, which is not right.{tail}")
        return False
    print(f"{label}: correct!")
    return True


def generative_families() -> dict[str, tuple[int, str]]:
    """The reference for notebook 00's Exercise 5, kept here so that the student edition does not show
    it: for each family, how many network calls, one after the other, sample one 64x64 RGB Shapes image
    (counted from a real render and DDPM's T), and what its training loss says about log p(x)."""
    import diffusers

    from sdlearn import data

    values = data.to_tensor(data.render("circle", "red", "large", "center")).numel()   # 3 x 64 x 64
    T = diffusers.DDPMScheduler().config.num_train_timesteps
    loss = {                                                  # (calls to sample, the training loss)
        "VAE": (1, "ELBO"),                                   # decoder(z), z ~ N(0, I)
        "GAN": (1, "adversarial"),                            # generator(z)
        "diffusion": (T, "ELBO"),                             # one denoising step per call; L_simple reweights it
        "autoregressive": (values, "log-likelihood"),         # the chain rule, value by value
        "flow": (1, "log-likelihood"),                        # inverse(z), change of variables
    }
    gives = {"ELBO": "bound", "log-likelihood": "exact", "adversarial": "none"}
    return {name: (calls, gives[kind]) for name, (calls, kind) in loss.items()}
