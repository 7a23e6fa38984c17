"""Attend-and-Excite (Chefer et al. 2023): steer the latents so every named subject gets attention.

Stable Diffusion often drops one of two subjects ("a cat and a dog" gives a cat). Chefer et al.
observed that the dropped subject's token gets weak cross-attention everywhere in the image. Their
fix works at inference, on the latents only: during the first denoising steps,

1. run the UNet on z_t with the prompt and capture its cross-attention maps at one resolution
   (16x16 for SD's 64x64 latents: a quarter of the latent side), averaged over heads and layers;
2. drop the start token, rescale the rest (x100) and softmax over the tokens, so each pixel's
   attention is shared among the words only (Sec. 3.2);
3. smooth each subject token's map with a 3x3 Gaussian (sigma 0.5) and take its maximum;
4. the loss is that of the *least* attended subject: L = max_s (1 - max_pixels A_s) (their Eq. 2);
5. z_t <- z_t - alpha_i * dL/dz_t, with the step alpha_i shrinking from 20 to 10 over the excited
   steps (alpha = 20 sqrt(1 - 0.5 i / n)), then denoise as usual.

Nothing here depends on the model's size: it uses only ``sdlearn.attention.capture_attention``, so
the same code excites the bundled tiny model and SD v1.x.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sdlearn.attention import capture_attention

SOFTMAX_SCALE = 100.0     # A&E rescales attention before the softmax over words (their code)
DEFAULT_SCALE = 20.0      # the step size alpha at the first excited step (their Sec. 4)


@dataclass(frozen=True)
class Excite:
    """What one call excites: per prompt, the token positions of the subjects and of the end token."""
    tokens: tuple[tuple[int, ...], ...]   # (B, K) positions in the 77 tokens, start token = 0
    ends: tuple[int, ...]                 # (B,) position of each prompt's end token
    steps: int                            # excite during steps 0 .. steps-1
    scale: float                          # alpha at the first excited step


def subject_tokens(tokenizer: Any, prompt: str, words: Sequence[str]) -> tuple[tuple[int, ...], int]:
    """Positions of ``words`` in the tokenized ``prompt`` (each word's last BPE token: under CLIP's
    causal mask it has read the whole word) and the position of the end token."""
    ids = tokenizer.encode(prompt)                               # [start, ..., end]
    positions = []
    for w in words:
        piece = tokenizer.encode(w)[1:-1]
        hits = [i for i in range(1, len(ids) - len(piece)) if ids[i:i + len(piece)] == piece]
        if not piece or not hits:
            raise ValueError(f"attend_and_excite: the word {w!r} is not in the prompt {prompt!r}; "
                             "name words of the prompt itself")
        positions.append(hits[0] + len(piece) - 1)
    return tuple(positions), min(len(ids), 77) - 1              # the end token (kept at 76 on truncation)


def gaussian_smooth(maps: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Smooth (B, K, h, w) maps with a 3x3 Gaussian kernel, reflect padding (A&E's smoothing)."""
    x = torch.arange(3, dtype=maps.dtype, device=maps.device) - 1
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = (g[:, None] * g[None]) / (g.sum() ** 2)             # (3, 3), sums to 1
    B, K, h, w = maps.shape
    padded = F.pad(maps.reshape(B * K, 1, h, w), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel[None, None]).reshape(B, K, h, w)


def word_attention(maps: dict[str, list[torch.Tensor]], ends: Sequence[int], latent_hw: tuple[int, int]
                   ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Captured cross-attention (one UNet call) -> (B, T, h, w) attention over the words only.

    Uses the layers at a quarter of the latent side (16x16 for 64x64 latents), or the finest level
    the UNet has when it has none there; averages heads and layers, drops the start token and
    the padding after the end token, and re-softmaxes (x100) over the remaining tokens."""
    H, W = latent_hw
    sizes = {probs[-1].shape[2] for probs in maps.values()}                      # N = h * w per layer
    want = (H // 4) * (W // 4)
    n = want if want in sizes and H // 4 >= 4 else max(sizes)
    chosen = [probs[-1].float().mean(dim=1) for probs in maps.values() if probs[-1].shape[2] == n]
    p = torch.stack(chosen).mean(dim=0)                                          # (layers, B, N, T) -> (B, N, T)
    h = round(math.sqrt(n * H / W))
    w = n // h
    B, N, T = p.shape
    mask = torch.full((B, 1, T), float("-inf"), device=p.device)
    for b, end in enumerate(ends):
        mask[b, 0, 1:end] = 0.0                                                  # words only
    words = torch.softmax(p * SOFTMAX_SCALE + mask, dim=-1)                     # (B, N, T)
    return words.transpose(1, 2).reshape(B, T, h, w), (h, w)


def attend_and_excite_loss(word_maps: torch.Tensor, tokens: Sequence[Sequence[int]]) -> torch.Tensor:
    """A&E's loss per prompt (B,): 1 - the smoothed maximum attention of the least attended subject.

    ``word_maps``: (B, T, h, w) from ``word_attention``; ``tokens``: per prompt, the subjects' positions."""
    losses = []
    for b, positions in enumerate(tokens):
        subject = gaussian_smooth(word_maps[b:b + 1, list(positions)])            # (1, K, h, w)
        peak = subject.flatten(2).max(dim=2).values[0]                           # (K,) each subject's max
        losses.append((1.0 - peak).clamp_min(0).max())                           # the least attended one
    return torch.stack(losses)


def excite_step(unet: Any, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor, excite: Excite,
                i: int, scale_model_input: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One Attend-and-Excite update of the latents at denoising step ``i``: (new z, loss before).

    ``context`` is the prompts' own (conditional) text states (B, 77, d); ``scale_model_input`` the
    scheduler's input scaling (Euler divides by sqrt(sigma^2 + 1))."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        x = scale_model_input(z, t) if scale_model_input is not None else z
        dtype = next(unet.parameters()).dtype
        with capture_attention(unet, keep_grad=True) as maps:
            unet(x.to(dtype), t, context)
        word_maps, _ = word_attention(maps, excite.ends, tuple(z.shape[-2:]))
        loss = attend_and_excite_loss(word_maps, excite.tokens)                 # (B,)
        (grad,) = torch.autograd.grad(loss.sum(), z)                             # prompts are independent
    alpha = excite.scale * math.sqrt(1.0 - 0.5 * i / max(excite.steps - 1, 1))  # 20 -> 10 over the steps
    return (z - alpha * grad).detach(), loss.detach()
