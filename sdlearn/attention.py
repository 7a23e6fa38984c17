"""Multi-head self- and cross-attention, written out and through PyTorch's fused kernel.

Attention (Vaswani et al. 2017, eq. 1; Rombach et al. 2022, eq. 3 for the cross-attention of
latent diffusion)::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

with ``Q = phi(z) W_Q`` (from the image features, N positions of width d_e) and ``K = tau(y) W_K``,
``V = tau(y) W_V`` (from the M text tokens of width d_tau, or from the image itself for
self-attention). Every row of ``softmax(Q K^T / sqrt(d))`` sums to 1: it says where one image position
"looks".

``Attention`` holds the weights under diffusers' names (``to_q, to_k, to_v, to_out.0``). It runs the
fused ``torch.nn.functional.scaled_dot_product_attention`` by default; the written-out formula runs
when ``fast=False`` or while probabilities are being captured.

Capturing attention maps for heatmaps::

    with capture_attention(unet) as maps:            # cross-attention only (the default)
        eps = unet(x, t, context)
    # maps: {"down_blocks.0.attentions.0.transformer_blocks.0.attn2": [probs, ...], ...}
    # probs: (B, heads, H*W, T) per call, rows summing to 1 over the T text tokens
    heat = attention_heatmaps(maps, size=(64, 64))  # (B, T, 64, 64), averaged over layers/heads/calls

Outside the ``with`` block nothing is recorded and the fast path runs: capturing costs nothing when off.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["scaled_dot_product_attention", "split_heads", "merge_heads", "Attention",
           "capture_attention", "attention_heatmaps"]


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d)) V written out; returns ``(output, probs)``.

    q: (..., N, d), k: (..., M, d), v: (..., M, d_v) -> output (..., N, d_v), probs (..., N, M).
    """
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., N, d) @ (..., d, M) -> (..., N, M)
    probs = scores.softmax(dim=-1)                   # each row sums to 1 over the M keys
    return probs @ v, probs                          # (..., N, M) @ (..., M, d_v) -> (..., N, d_v)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d): each head attends in its own d-dimensional subspace."""
    B, N, inner = x.shape
    return x.view(B, N, heads, inner // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d): concatenate the heads again."""
    B, heads, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, heads * d)


class Attention(nn.Module):
    """Multi-head attention; cross-attention when ``context_dim`` is given (keys as diffusers' ``Attention``).

    ``query_dim`` is d_e (image features), ``context_dim`` d_tau (text tokens; defaults to d_e: self-
    attention). W_Q: (d_e, heads*dim_head), W_K, W_V: (d_tau, heads*dim_head), W_O: (heads*dim_head, d_e).
    ``upcast`` computes the attention in float32 when the weights are float16/bfloat16 (SD 2.x's
    ``upcast_attention``; a no-op in float32).
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0, upcast: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.upcast = heads, dim_head, upcast
        self.is_cross = context_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])
        self.fast = True                              # fused SDPA kernel; False: the written-out formula
        self.captured: list[torch.Tensor] | None = None  # set by capture_attention()
        self.capture_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.capture_grad = False                     # keep captured maps in the autograd graph

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, query_dim), context: (B, M, context_dim) or None (self-attention) -> (B, N, query_dim)."""
        context = x if context is None else context
        q = split_heads(self.to_q(x), self.heads)        # (B, N, d_e) -> (B, heads, N, dim_head)
        k = split_heads(self.to_k(context), self.heads)  # (B, M, d_tau) -> (B, heads, M, dim_head)
        v = split_heads(self.to_v(context), self.heads)  # (B, M, d_tau) -> (B, heads, M, dim_head)
        dtype = q.dtype
        if self.upcast and dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        if self.captured is None and self.fast:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, dim_head)
        else:
            out, probs = scaled_dot_product_attention(q, k, v)  # probs: (B, heads, N, M)
            if self.captured is not None:
                probs = probs if self.capture_grad else probs.detach()
                self.captured.append(self.capture_fn(probs) if self.capture_fn else probs)
        out = merge_heads(out.to(dtype))                  # (B, heads, N, dim_head) -> (B, N, heads*dim_head)
        return self.to_out[1](self.to_out[0](out))        # (B, N, heads*dim_head) -> (B, N, d_e)


@contextlib.contextmanager
def capture_attention(model: nn.Module, kind: str = "cross", average_heads: bool = False,
                      to_cpu: bool = False, layers: Callable[[str], bool] | None = None,
                      keep_grad: bool = False) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record attention probabilities of every ``Attention`` layer in ``model`` while inside the block.

    Yields a dict ``{layer_name: [probs, ...]}`` filled as the model runs, one entry per forward call
    (e.g. one per denoising step), layer names as in ``model.named_modules()``. ``probs`` has shape
    (B, heads, N, M): N query positions (H*W of that UNet level, row-major), M keys (the T text tokens
    for cross-attention, N positions for self-attention); each row sums to 1.

    kind: "cross" (text tokens, the default), "self" or "all". average_heads: store (B, 1, N, M) means
    over heads (saves memory over many steps). to_cpu: move each map to the CPU as it is recorded.
    layers: optional predicate on the layer name choosing which layers to record.
    keep_grad: keep the maps in the autograd graph (for a loss on attention, as Attend-and-Excite's);
    by default they are detached.
    Memory: a cross-attention map holds B*heads*H*W*T floats (SD 1.5 at 64x64 latents: 20 MB per
    layer and step for B=2); self-attention maps hold (H*W)^2 per head, so record those sparingly.
    """
    if kind not in ("cross", "self", "all"):
        raise ValueError(f"kind must be one of 'cross', 'self', 'all' (got {kind!r})")

    def reduce(probs: torch.Tensor) -> torch.Tensor:
        if average_heads:
            probs = probs.mean(dim=1, keepdim=True)  # (B, heads, N, M) -> (B, 1, N, M)
        return probs.cpu() if to_cpu else probs

    maps: dict[str, list[torch.Tensor]] = {}
    chosen = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)
              and (kind == "all" or m.is_cross == (kind == "cross")) and (layers is None or layers(name))]
    if not chosen:
        raise ValueError(f"model has no {kind!r} attention layers to capture")
    try:
        for name, m in chosen:
            m.captured, m.capture_fn, m.capture_grad = maps.setdefault(name, []), reduce, keep_grad
        yield maps
    finally:
        for _, m in chosen:
            m.captured, m.capture_fn, m.capture_grad = None, None, False


def attention_heatmaps(maps: dict[str, list[torch.Tensor]], size: tuple[int, int],
                       calls: slice | list[int] | None = None) -> torch.Tensor:
    """Average captured cross-attention maps into per-token heatmaps of shape (B, T, *size).

    Each layer's (B, heads, H*W, T) maps are averaged over heads and the chosen calls (default: all),
    reshaped to that layer's (h, w) grid (inferred from H*W and the aspect ratio of ``size``), resized
    bilinearly to ``size`` and averaged over layers. The result at (b, j) shows where the image
    attends to text token j; summing over j gives 1 at every pixel.
    """
    H, W = size
    per_layer = []
    for name, probs_list in maps.items():
        chosen = probs_list if calls is None else (probs_list[calls] if isinstance(calls, slice)
                                                   else [probs_list[i] for i in calls])
        if not chosen:
            continue
        p = torch.stack([q.float().cpu() for q in chosen]).mean(dim=(0, 2))  # (calls, B, h, N, T) -> (B, N, T)
        B, N, T = p.shape
        h = round(math.sqrt(N * H / W))
        w = N // h
        if h * w != N:
            raise ValueError(f"layer {name}: {N} positions do not form a grid with the aspect ratio of size={size}")
        p = p.transpose(1, 2).reshape(B, T, h, w)                    # (B, N, T) -> (B, T, h, w)
        per_layer.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))
    if not per_layer:
        raise ValueError("maps holds no captured calls (run the model inside capture_attention first)")
    return torch.stack(per_layer).mean(dim=0)                        # (layers, B, T, H, W) -> (B, T, H, W)
