"""The KL autoencoder of latent diffusion (Rombach et al. 2022, sec. 3 and appendix G).

An encoder maps an image x (B, 3, H, W) in [-1, 1] to a diagonal Gaussian posterior
q(z|x) = N(mean, diag(exp(logvar))) over a latent z of shape (B, latent_channels, H/f, W/f),
f = 2 ** (number of blocks - 1); a decoder maps z back to an image. Training maximises the
ELBO (Kingma & Welling 2013, eq. 3):  E_q[log p(x|z)] - KL(q(z|x) || N(0, I)),  with the KL
term weighted very lightly (SD: ~1e-6) so the latent stays close to an image, not to noise.

The module tree and parameter names are exactly those of ``diffusers.AutoencoderKL``, so a
diffusers ``config.json`` + state dict loads here unchanged (and vice versa).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sdlearn.device import randn

#: AutoencoderKL's config keys and diffusers' defaults for them.
DEFAULT_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "shift_factor": None,
    "latents_mean": None,
    "latents_std": None,
    "force_upcast": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}

_ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "mish": nn.Mish}
_EPS = 1e-6  # GroupNorm epsilon used throughout the SD VAE


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=_EPS, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), with a 1x1 conv on the skip when channels change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nonlinearity = act()
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))     # (B, C_in, H, W) -> (B, C_out, H, W)
        h = self.conv2(self.nonlinearity(self.norm2(h)))     # (B, C_out, H, W)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection:
    x + W_o softmax(Q K^T / sqrt(C)) V  (Vaswani et al. 2017, eq. 1), Q, K, V = W x_norm."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = _norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)    # (B, C, H, W) -> (B, H*W, C)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)   # (B, H*W, C) each
        weights = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(C), dim=-1)  # (B, H*W, H*W)
        h = self.to_out[0](weights @ v)                      # (B, H*W, C)
        h = h.transpose(1, 2).reshape(B, C, H, W)            # (B, H*W, C) -> (B, C, H, W), a channels-last view
        # h first, as in diffusers: the sum takes h's channels-last layout, and every later layer
        # keeps it (oneDNN's convolutions are faster that way on CPU; same numbers as diffusers).
        return h + x


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv; pad one pixel on the right and bottom only."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))             # (B, C, H, W) -> (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, H, W) -> (B, C, 2H, 2W)


class ResnetStack(nn.Module):
    """``layers`` resnet blocks, then a Downsample (``resample="down"``, an encoder block), an Upsample
    (``"up"``, a decoder block) or nothing (``None``, the last block of either)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int,
                 act: type[nn.Module], resample: Literal["down", "up"] | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, act) for i in range(layers))
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if resample == "down" else None
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if resample == "up" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)                                    # (B, C_in, H, W) -> (B, C_out, H, W)
        for resample in self.downsamplers or self.upsamplers or ():
            x = resample(x)                                  # -> (B, C_out, H/2, W/2) or (B, C_out, 2H, 2W)
        return x


class MidBlock(nn.Module):
    """resnet -> self-attention -> resnet at the lowest resolution (attention optional)."""

    def __init__(self, channels: int, groups: int, act: type[nn.Module], attention: bool) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([AttentionBlock(channels, groups)]) if attention else None
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups, act) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> moments (B, 2*latent_channels, H/f, W/f) (mean and logvar)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        ch, groups, act = cfg["block_out_channels"], cfg["norm_num_groups"], _ACTIVATIONS[cfg["act_fn"]]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            ResnetStack(ch[max(i - 1, 0)], ch[i], cfg["layers_per_block"], groups, act,
                        resample="down" if i < len(ch) - 1 else None) for i in range(len(ch)))
        self.mid_block = MidBlock(ch[-1], groups, act, cfg["mid_block_add_attention"])
        self.conv_norm_out = _norm(ch[-1], groups)
        self.conv_act = act()
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)                                  # (B, 3, H, W) -> (B, ch[0], H, W)
        for block in self.down_blocks:
            h = block(h)                                     # ... -> (B, ch[-1], H/f, W/f)
        h = self.mid_block(h)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))  # -> (B, 2*latent, H/f, W/f)


class Decoder(nn.Module):
    """Latent (B, latent_channels, h, w) -> image (B, 3, h*f, w*f)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        ch, groups, act = cfg["block_out_channels"][::-1], cfg["norm_num_groups"], _ACTIVATIONS[cfg["act_fn"]]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], ch[0], 3, padding=1)
        self.up_blocks = nn.ModuleList(
            ResnetStack(ch[max(i - 1, 0)], ch[i], cfg["layers_per_block"] + 1, groups, act,
                        resample="up" if i < len(ch) - 1 else None) for i in range(len(ch)))
        self.mid_block = MidBlock(ch[0], groups, act, cfg["mid_block_add_attention"])
        self.conv_norm_out = _norm(ch[-1], groups)
        self.conv_act = act()
        self.conv_out = nn.Conv2d(ch[-1], cfg["out_channels"], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))                  # (B, latent, h, w) -> (B, ch[-1], h, w)
        for block in self.up_blocks:
            h = block(h)                                     # ... -> (B, ch[0], h*f, w*f)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))  # -> (B, 3, h*f, w*f)


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(std^2)), built from the encoder's moments (B, 2C, h, w).

    The encoder outputs log sigma^2 (``logvar``) rather than sigma: any real number is a valid
    log-variance, so no positivity constraint is needed; it is clamped to [-30, 20] for safety.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, self.logvar = moments.chunk(2, dim=1)     # (B, 2C, h, w) -> 2 x (B, C, h, w)
        self.logvar = self.logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Reparameterised sample z = mean + std * eps (Kingma & Welling 2013, eq. 10), eps ~ N(0, I)
        drawn on the CPU generator (one per batch item if a list, as diffusers) by ``sdlearn.device.randn``."""
        eps = randn(self.mean.shape, generator, self.mean.device, self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per example, in closed form (Kingma & Welling 2013, appendix B):
        0.5 * sum(mean^2 + var - 1 - logvar) over (C, h, w) -> (B,)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))

    def nll(self, z: torch.Tensor) -> torch.Tensor:
        """-log q(z|x) per example: 0.5 * sum(log 2pi + logvar + (z - mean)^2 / var) -> (B,)."""
        return 0.5 * (math.log(2 * math.pi) + self.logvar + (z - self.mean).pow(2) / self.var).sum(dim=(1, 2, 3))


def _validate_config(cfg: dict[str, Any]) -> None:
    n = len(cfg["block_out_channels"])
    if n == 0:
        raise ValueError("block_out_channels must list at least one channel count")
    for key, allowed in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        if len(cfg[key]) != n or any(t != allowed for t in cfg[key]):
            raise ValueError(f"{key} must be {n} x {allowed!r} (one per entry of block_out_channels); "
                             f"got {list(cfg[key])}")
    if cfg["act_fn"] not in _ACTIVATIONS:
        raise ValueError(f"act_fn must be one of {', '.join(_ACTIVATIONS)}; got {cfg['act_fn']!r}")
    bad = [c for c in cfg["block_out_channels"] if c % cfg["norm_num_groups"]]
    if bad:
        raise ValueError(f"every entry of block_out_channels must be divisible by norm_num_groups="
                         f"{cfg['norm_num_groups']}; got {list(cfg['block_out_channels'])}")
    if not (cfg["use_quant_conv"] and cfg["use_post_quant_conv"]):
        raise ValueError("use_quant_conv and use_post_quant_conv must be True (as in every SD 1.x/2.x VAE)")


class VAE(nn.Module):
    """AutoencoderKL: ``encode(x) -> DiagonalGaussian``, ``decode(z) -> x``.

    Build with ``VAE.from_config(config_dict)`` (a diffusers AutoencoderKL ``config.json``) or
    ``VAE.from_pretrained(folder)``. ``scaling_factor`` (``config["scaling_factor"]``) is what
    latents are multiplied by before diffusion: 1 / std of the training latents (SD: 0.18215).
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **{k: v for k, v in config.items() if k in DEFAULT_CONFIG}}
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            cfg[key] = list(cfg[key])
        _validate_config(cfg)
        self.config = cfg
        latent2 = 2 * cfg["latent_channels"]
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(latent2, latent2, 1)
        self.post_quant_conv = nn.Conv2d(cfg["latent_channels"], cfg["latent_channels"], 1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "VAE":
        """A randomly initialised VAE from a diffusers AutoencoderKL config (unknown keys ignored).
        A value of the wrong type or range is refused here, with its key's name."""
        from sdlearn import weights

        positive = "positive int"
        weights.check_config(config, DEFAULT_CONFIG, "VAE", {
            "in_channels": positive, "out_channels": positive, "latent_channels": positive,
            "norm_num_groups": positive, "layers_per_block": positive,
            "block_out_channels": "non-empty list of positive ints", "sample_size": "positive int or a list of them",
            "scaling_factor": "positive number", "shift_factor": "number", "force_upcast": "bool",
            "use_quant_conv": "bool", "use_post_quant_conv": "bool", "mid_block_add_attention": "bool",
        }, multiples=(("norm_num_groups", "block_out_channels"),))
        return cls(**config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None, *,
                        subfolder: str | None = None) -> "VAE":
        """Load ``config.json`` and ``diffusion_pytorch_model.safetensors`` from a diffusers folder
        (``folder/subfolder`` if given, e.g. ``subfolder="vae"`` of a pipeline folder) with
        ``sdlearn.weights.load_pretrained``; weights come in as ``dtype`` (None: float32)."""
        from sdlearn import weights

        return weights.load_pretrained(cls, folder, dtype, subfolder=subfolder)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` in diffusers' layout."""
        from sdlearn import weights

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1", **self.config}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().float() for k, v in self.state_dict().items()}
        weights.save_file(state, folder / "diffusion_pytorch_model.safetensors")

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True,
                        assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``, but a checkpoint that doesn't fit this config raises a
        ValueError listing the missing, unexpected and wrong-shaped keys (``sdlearn.weights.require_fit``)."""
        from sdlearn import weights

        weights.require_fit(self, state_dict, "state_dict", strict=strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def scaling_factor(self) -> float:
        return float(self.config["scaling_factor"])

    @property
    def downsample_factor(self) -> int:
        """f: each latent pixel stands for an f x f patch of the image."""
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Image (B, in_channels, H, W) in [-1, 1] -> posterior over (B, latent_channels, H/f, W/f)."""
        f, c = self.downsample_factor, self.config["in_channels"]
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a (B, {c}, H, W) tensor; got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[1] != c:
            raise ValueError(f"x must have in_channels={c} channels; got {x.shape[1]} (shape {tuple(x.shape)})")
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"x height and width must be multiples of the downsampling factor {f}; "
                             f"got {x.shape[2]}x{x.shape[3]}")
        moments = self.quant_conv(self.encoder(x))           # (B, 3, H, W) -> (B, 2C, H/f, W/f)
        return DiagonalGaussian(moments)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent_channels, h, w) (unscaled) -> image (B, out_channels, h*f, w*f)."""
        c = self.config["latent_channels"]
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != c:
            raise ValueError(f"z must be a (B, latent_channels={c}, h, w) tensor; got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        return self.decoder(self.post_quant_conv(z))         # (B, C, h, w) -> (B, 3, h*f, w*f)

    def forward(self, x: torch.Tensor, sample_posterior: bool = False,
                generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Reconstruct x: decode(encode(x).sample()) or, by default, decode of the posterior mean."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z)
