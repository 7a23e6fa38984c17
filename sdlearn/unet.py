"""The UNet noise predictor eps_theta(z_t, t, tau(y)) of latent diffusion (Rombach et al. 2022, eq. 3).

A UNet (Ronneberger et al. 2015) over latents: a down path of resnet blocks (each told the timestep)
and spatial transformers (self-attention over positions, cross-attention to the text tokens, GEGLU
feed-forward), a middle block, and an up path that concatenates the down path's activations (skip
connections). Parameter names, layout and arithmetic are those of diffusers' ``UNet2DConditionModel``,
so its ``config.json`` and weights load here unchanged (SD v1.x and v2.x)::

    unet = UNet.from_config(config)              # random weights
    unet = UNet.from_pretrained("path/to/unet")  # config.json + diffusion_pytorch_model.safetensors
    eps = unet(z_t, t, context)                  # (B, 4, h, w), t: int or (B,), context: (B, 77, d_tau)
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sdlearn.attention import Attention

__all__ = ["UNet", "timestep_embedding", "ResnetBlock", "Transformer2D", "DEFAULT_CONFIG"]

# diffusers' UNet2DConditionModel defaults for the keys sdlearn reads (its config.json may omit any).
DEFAULT_CONFIG: dict = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "dropout": 0.0, "act_fn": "silu",
    "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 1280, "transformer_layers_per_block": 1,
    "attention_head_dim": 8, "num_attention_heads": None, "use_linear_projection": False,
    "upcast_attention": False, "resnet_time_scale_shift": "default", "time_embedding_type": "positional",
    "conv_in_kernel": 3, "conv_out_kernel": 3, "class_embed_type": None, "addition_embed_type": None,
    "encoder_hid_dim_type": None, "dual_cross_attention": False,
}
# Config values that change the architecture in ways sdlearn does not build (not used by SD v1.x/v2.x).
_SUPPORTED = {"mid_block_type": ("UNetMidBlock2DCrossAttn",), "act_fn": ("silu",),
              "resnet_time_scale_shift": ("default",), "time_embedding_type": ("positional",),
              "class_embed_type": (None,), "addition_embed_type": (None,), "encoder_hid_dim_type": (None,),
              "only_cross_attention": (False,), "dual_cross_attention": (False,), "downsample_padding": (1,)}
_DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
_UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0,
                       max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, appendix B).

    t: (B,) -> (B, dim), [sin(t w_i), cos(t w_i)] (or [cos, sin] when ``flip_sin_to_cos``) with
    frequencies w_i = max_period ** (-i / (dim/2 - freq_shift)), i = 0 .. dim/2 - 1.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - freq_shift))              # (half,) from 1 down to ~1/max_period
    angles = t[:, None].float() * freqs[None, :]                    # (B, 1) * (1, half) -> (B, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)           # (B, dim)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return F.pad(emb, (0, dim % 2))                                 # odd dim: one zero column


class TimestepEmbedding(nn.Module):
    """MLP lifting the sinusoidal embedding: (B, c0) -> (B, 4 c0)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(emb)))


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep embedding added in between, plus a (1x1 conv) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, eps: float, dropout: float,
                 output_scale_factor: float = 1.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W), emb: (B, temb_dim) already through SiLU -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))                       # (B, in_ch, H, W) -> (B, out_ch, H, W)
        h = h + self.time_emb_proj(emb)[:, :, None, None]          # (B, out_ch) -> (B, out_ch, 1, 1), broadcast
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)                               # (B, in_ch, H, W) -> (B, out_ch, H, W)
        return (x + h) / self.output_scale_factor


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): proj to 2*inner, then value * GELU(gate)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)                # (B, N, dim) -> 2 x (B, N, inner)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with a 4x hidden width: (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(dropout), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer layer: self-attention, cross-attention to the text, feed-forward; residuals."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, dropout: float,
                 upcast: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, dim_head, dropout, upcast)         # positions <-> positions
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout, upcast)  # positions <- text tokens
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, dim), context: (B, T, context_dim) -> (B, H*W, dim)."""
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2D(nn.Module):
    """Spatial transformer: feature map -> sequence of H*W tokens -> transformer layers -> feature map."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, layers: int,
                 linear_projection: bool, dropout: float, upcast: bool) -> None:
        super().__init__()
        dim_head = channels // heads
        inner = heads * dim_head
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if linear_projection else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim, dropout, upcast) for _ in range(layers)])
        self.proj_out = nn.Linear(inner, channels) if linear_projection else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W), context: (B, T, context_dim) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.norm(x)
        if not self.linear_projection:
            h = self.proj_in(h)                                     # 1x1 conv: (B, C, H, W) -> (B, inner, H, W)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, h.shape[1])     # (B, c, H, W) -> (B, H*W, c)
        if self.linear_projection:
            h = self.proj_in(h)                                     # (B, H*W, C) -> (B, H*W, inner)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear_projection:
            h = self.proj_out(h)                                    # (B, H*W, inner) -> (B, H*W, C)
        h = h.reshape(B, H, W, h.shape[-1]).permute(0, 3, 1, 2).contiguous()  # (B, H*W, c) -> (B, c, H, W)
        if not self.linear_projection:
            h = self.proj_out(h)                                    # (B, inner, H, W) -> (B, C, H, W)
        return h + x

    @classmethod
    def from_unet_config(cls, channels: int, heads: int, layers: int, cfg: dict) -> "Transformer2D":
        """The spatial transformer of a UNet level, the rest of its arguments read from the UNet's config."""
        return cls(channels, heads, cfg["cross_attention_dim"], cfg["norm_num_groups"], layers,
                   cfg["use_linear_projection"], cfg["dropout"], cfg["upcast_attention"])


class Downsample(nn.Module):
    """Stride-2 3x3 conv with padding 1: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)); any side works."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W), or to ``size`` (the skip's
    side, which is 2H - 1 where the down path halved an odd side: ceil(n / 2) * 2 = n + 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class DownBlock(nn.Module):
    """``layers`` resnets (each followed by a spatial transformer if ``attention``), then a Downsample.

    Returns the output and every intermediate activation, which the up path receives as skips.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, layers: int, attention: bool, downsample: bool,
                 cfg: dict, heads: int, transformer_layers: int) -> None:
        super().__init__()
        g, eps, p = cfg["norm_num_groups"], cfg["norm_eps"], cfg["dropout"]
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_ch if i == 0 else out_ch, out_ch, temb_dim, g, eps, p) for i in range(layers)])
        self.attentions = nn.ModuleList([Transformer2D.from_unet_config(out_ch, heads, transformer_layers, cfg)
                                         for _ in range(layers)]) if attention else None
        self.downsamplers = nn.ModuleList([Downsample(out_ch)]) if downsample else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)                              # (B, C, H, W) -> (B, C, H/2, W/2)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet, then (spatial transformer, resnet) pairs, at the lowest resolution."""

    def __init__(self, ch: int, temb_dim: int, cfg: dict, heads: int, transformer_layers: int) -> None:
        super().__init__()
        g, eps, p, s = cfg["norm_num_groups"], cfg["norm_eps"], cfg["dropout"], cfg["mid_block_scale_factor"]
        self.attentions = nn.ModuleList([Transformer2D.from_unet_config(ch, heads, transformer_layers, cfg)])
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, temb_dim, g, eps, p, s) for _ in range(2)])

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, emb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x, context), emb)
        return x


class UpBlock(nn.Module):
    """``layers`` resnets, each fed [x, skip] concatenated on channels (+ transformer), then an Upsample."""

    def __init__(self, prev_ch: int, out_ch: int, skip_in_ch: int, temb_dim: int, layers: int, attention: bool,
                 upsample: bool, cfg: dict, heads: int, transformer_layers: int) -> None:
        super().__init__()
        g, eps, p = cfg["norm_num_groups"], cfg["norm_eps"], cfg["dropout"]
        # skip channels: the down path's out_ch, except the last skip, which left the level below (skip_in_ch)
        self.resnets = nn.ModuleList(
            [ResnetBlock((prev_ch if i == 0 else out_ch) + (skip_in_ch if i == layers - 1 else out_ch),
                         out_ch, temb_dim, g, eps, p) for i in range(layers)])
        self.attentions = nn.ModuleList([Transformer2D.from_unet_config(out_ch, heads, transformer_layers, cfg)
                                         for _ in range(layers)]) if attention else None
        self.upsamplers = nn.ModuleList([Upsample(out_ch)]) if upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, context: torch.Tensor,
                upsample_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Pop one skip per resnet; upsample to ``upsample_size`` if given (else 2x)."""
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)                  # (B, C, H, W) ++ (B, C_skip, H, W)
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)                 # (B, C, H, W) -> (B, C, 2H, 2W) or the skip's size
        return x


def _per_block(value, n: int, name: str) -> list:
    """An int (same for every block) or a per-block list -> list of length n."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must be an int or a list with one entry per block ({n}), got {value!r}")
    return values


class UNet(nn.Module):
    """eps_theta(z_t, t, context): the conditional UNet of Stable Diffusion (diffusers' UNet2DConditionModel).

    Build with ``UNet.from_config(config_json_dict)`` or ``UNet.from_pretrained(folder)``; call
    ``unet(x, t, context)`` with x: (B, in_channels, H, W), t: int or 0-d or (B,) tensor of timesteps,
    context: (B, T, cross_attention_dim) -> eps: (B, out_channels, H, W).
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **config}
        for key, allowed in _SUPPORTED.items():
            if cfg[key] not in allowed:
                raise ValueError(f"config[{key!r}] = {cfg[key]!r} is not supported (allowed: {allowed})")
        down_types, up_types = list(cfg["down_block_types"]), list(cfg["up_block_types"])
        for types, allowed, key in ((down_types, _DOWN_TYPES, "down_block_types"), (up_types, _UP_TYPES, "up_block_types")):
            if any(b not in allowed for b in types):
                raise ValueError(f"config[{key!r}] entries must be in {allowed}, got {types}")
        channels = list(cfg["block_out_channels"])
        n = len(channels)
        if len(down_types) != n or len(up_types) != n:
            raise ValueError(f"down_block_types and up_block_types need one entry per block_out_channels ({n})")
        self.config = cfg
        # SD configs name the number of heads "attention_head_dim" (a historical diffusers misnomer)
        heads = _per_block(cfg["num_attention_heads"] or cfg["attention_head_dim"], n, "attention_head_dim")
        layers = _per_block(cfg["layers_per_block"], n, "layers_per_block")
        t_layers = _per_block(cfg["transformer_layers_per_block"], n, "transformer_layers_per_block")
        temb_dim = 4 * channels[0]

        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], cfg["conv_in_kernel"],
                                 padding=(cfg["conv_in_kernel"] - 1) // 2)
        self.time_embedding = TimestepEmbedding(channels[0], temb_dim)
        self.down_blocks = nn.ModuleList(
            [DownBlock(channels[max(i - 1, 0)], channels[i], temb_dim, layers[i], kind == "CrossAttnDownBlock2D",
                       i < n - 1, cfg, heads[i], t_layers[i]) for i, kind in enumerate(down_types)])
        self.mid_block = MidBlock(channels[-1], temb_dim, cfg, heads[-1], t_layers[-1])
        rev_ch, rev_heads, rev_layers, rev_t = channels[::-1], heads[::-1], layers[::-1], t_layers[::-1]
        self.up_blocks = nn.ModuleList(
            [UpBlock(rev_ch[max(i - 1, 0)], rev_ch[i], rev_ch[min(i + 1, n - 1)], temb_dim, rev_layers[i] + 1,
                     kind == "CrossAttnUpBlock2D", i < n - 1, cfg, rev_heads[i], rev_t[i])
             for i, kind in enumerate(up_types)])
        self.conv_norm_out = nn.GroupNorm(cfg["norm_num_groups"], channels[0], eps=cfg["norm_eps"])
        self.conv_out = nn.Conv2d(channels[0], cfg["out_channels"], cfg["conv_out_kernel"],
                                  padding=(cfg["conv_out_kernel"] - 1) // 2)

    @classmethod
    def from_config(cls, config: dict) -> "UNet":
        """Random-weight UNet from a diffusers UNet2DConditionModel config dict (unknown keys ignored).
        A value of the wrong type or range is refused here, with its key's name."""
        from sdlearn import weights

        per_block, positive = "positive int or a list of them", "positive int"
        cfg = weights.check_config(config, DEFAULT_CONFIG, "UNet", {
            "in_channels": positive, "out_channels": positive, "norm_num_groups": positive,
            "cross_attention_dim": positive, "conv_in_kernel": positive, "conv_out_kernel": positive,
            "block_out_channels": "non-empty list of positive ints", "sample_size": per_block,
            "layers_per_block": per_block, "attention_head_dim": per_block, "num_attention_heads": per_block,
            "transformer_layers_per_block": per_block, "norm_eps": "positive number", "freq_shift": "number",
            "mid_block_scale_factor": "number", "dropout": "number", "flip_sin_to_cos": "bool",
            "center_input_sample": "bool", "use_linear_projection": "bool", "upcast_attention": "bool",
        }, multiples=(("norm_num_groups", "block_out_channels"),))
        heads = "num_attention_heads" if cfg["num_attention_heads"] else "attention_head_dim"  # see __init__
        weights.check_multiple(cfg, heads, "block_out_channels", "UNet")
        return cls(dict(config))

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None, *,
                        subfolder: str | None = None) -> "UNet":
        """Load ``config.json`` + ``diffusion_pytorch_model.safetensors`` from a diffusers folder
        (``folder/subfolder`` if given), with ``sdlearn.weights.load_pretrained``: keys and shapes are
        checked on the meta device before any weight is read. Weights come in as ``dtype`` (None:
        float32, as in diffusers, whatever the file stores)."""
        from sdlearn import weights

        return weights.load_pretrained(cls, folder, dtype, subfolder=subfolder)

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Take a diffusers state dict as this model's parameters (no copy), or raise a ValueError saying
        which keys are missing, unexpected or of the wrong shape."""
        from sdlearn import weights

        weights.require_fit(self, state, "state dict")
        self.load_state_dict(state, strict=True, assign=True)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    @property
    def in_channels(self) -> int:
        return self.config["in_channels"]

    @property
    def sample_size(self) -> int | None:
        return self.config["sample_size"]

    def _check_inputs(self, x: torch.Tensor, t, context: torch.Tensor | None) -> torch.Tensor:
        """Validate shapes (ValueError naming the expected values); return t as a (B,) tensor."""
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        B, C, H, W = x.shape
        if C != cfg["in_channels"]:
            raise ValueError(f"x has {C} channels; this UNet expects in_channels={cfg['in_channels']}")
        if H < 1 or W < 1:
            raise ValueError(f"x height and width must be at least 1, got {H}x{W}")
        if context is None:
            raise ValueError("context (the text embeddings, (B, T, cross_attention_dim)) is required")
        if context.ndim != 3 or context.shape[-1] != cfg["cross_attention_dim"] or context.shape[0] != B:
            raise ValueError(f"context must have shape (B={B}, T, cross_attention_dim={cfg['cross_attention_dim']}), "
                             f"got {tuple(context.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, B)):
            raise ValueError(f"t must be a number, a 0-d tensor or a (B={B},) tensor, got shape {tuple(t.shape)}")
        return t.reshape(-1).expand(B)

    def forward(self, x: torch.Tensor, t: int | float | torch.Tensor, context: torch.Tensor | None = None, *,
                encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise eps in x_t.

        x: (B, in_channels, H, W) noisy latents; t: timestep(s); context (alias ``encoder_hidden_states``):
        (B, T, cross_attention_dim) text embeddings -> eps: (B, out_channels, H, W).
        """
        context = encoder_hidden_states if context is None else context
        t = self._check_inputs(x, t, context)
        cfg = self.config
        if cfg["center_input_sample"]:
            x = 2 * x - 1.0
        t_emb = timestep_embedding(t, self.conv_in.out_channels, cfg["flip_sin_to_cos"], cfg["freq_shift"])
        emb = F.silu(self.time_embedding(t_emb.to(x.dtype)))  # (B, c0) -> (B, 4 c0), SiLU shared by all resnets
        h = self.conv_in(x)                                    # (B, 4, H, W) -> (B, c0, H, W)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, emb, context)            # resolution halves after every block but the last
            skips.extend(block_skips)
        h = self.mid_block(h, emb, context)
        # As diffusers: if a side is not a multiple of 2^(downsamplings), some level halved an odd side
        # (n -> ceil(n/2)), and doubling back would overshoot the skip by one; then every upsampler is told
        # the size of the skip it feeds (upsample_size), else it simply doubles.
        factor = 2 ** sum(b.upsamplers is not None for b in self.up_blocks)
        forward_size = any(side % factor for side in x.shape[-2:])
        for block in self.up_blocks:
            size = None
            if forward_size and block.upsamplers is not None:  # the skip the next block pops first
                size = tuple(skips[-1 - len(block.resnets)].shape[-2:])
            h = block(h, skips, emb, context, size)            # consumes len(block.resnets) skips, last first
        return self.conv_out(F.silu(self.conv_norm_out(h)))   # (B, c0, H, W) -> (B, out_channels, H, W)
