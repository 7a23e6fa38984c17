"""The course's toy models: small networks trained on the Shapes world to teach an idea, not parts of SD.

``PixelUNet`` (notebook 02) is DDPM in pixel space: eps_theta(x_t, t) for 32x32 Shapes images, a plain
convolutional UNet built from the SD UNet's own pieces (``sdlearn.unet.timestep_embedding``,
``TimestepEmbedding`` and ``ResnetBlock``) without attention or text. It is trained by
``python -m sdlearn train pixel`` and ships in ``assets/pixel_shapes``.

``TinyCLIP`` (notebook 04) pairs a ``CLIPTextEncoder`` with a small image encoder, trained with CLIP's
contrastive objective (Radford et al. 2021, Fig. 3: a symmetric cross-entropy over the batch's
image-caption cosine similarities times a learned temperature) on Shapes captions by
``python -m sdlearn train clip``. Its text tower is the bundled tiny model's text encoder, frozen while
the UNet learns to listen to it; the rest ships in ``assets/tiny_clip``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sdlearn import ASSETS_DIR
from sdlearn.clip import DEFAULTS, CLIPTextEncoder
from sdlearn.data import IMAGE_SIZE
from sdlearn.unet import ResnetBlock, TimestepEmbedding, timestep_embedding

__all__ = ["PixelUNet", "load_pixel_model", "PIXEL_MODEL_DIR", "TinyCLIP", "ImageEncoder", "contrastive_loss",
           "TINY_TEXT_CONFIG", "TINY_CLIP_DIR"]

PIXEL_MODEL_DIR = ASSETS_DIR / "pixel_shapes"
TINY_CLIP_DIR = ASSETS_DIR / "tiny_clip"
#: The bundled tiny text encoder: 128 wide, 4 layers, CLIP's vocabulary and 77 positions.
TINY_TEXT_CONFIG = {**DEFAULTS, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "projection_dim": 128, "hidden_act": "quick_gelu"}


# ---------------------------------------------------------------------------------------------
# Pixel-space DDPM (notebook 02)
# ---------------------------------------------------------------------------------------------

class PixelUNet(nn.Module):
    """eps_theta(x_t, t) for 3-channel images whose side is a multiple of 4 (with the default 3 levels).

    A down path of resnets (each told the timestep) with 2x average pooling between levels, one
    middle resnet, an up path of resnets fed [x, skip] with nearest 2x upsampling between levels.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), t_dim: int = 128) -> None:
        super().__init__()
        self.config = {"channels": list(channels), "t_dim": t_dim}
        self.time_mlp = TimestepEmbedding(t_dim, t_dim)
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        c, self.down = channels[0], nn.ModuleList()
        for c_out in channels:
            self.down.append(_resnet(c, c_out, t_dim))
            c = c_out
        self.mid = _resnet(c, c, t_dim)
        self.up = nn.ModuleList()
        for c_skip in reversed(channels):
            self.up.append(_resnet(c + c_skip, c_skip, t_dim))
            c = c_skip
        self.norm_out, self.conv_out = nn.GroupNorm(8, c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x: (B, 3, H, W) noisy images, t: int or (B,) timesteps -> eps: (B, 3, H, W)."""
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])                  # (B,)
        temb = self.time_mlp(timestep_embedding(t, self.config["t_dim"]))            # (B, t_dim)
        h = self.conv_in(x)                                                          # (B, 3, H, W) -> (B, c0, H, W)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)                                               # (B, c, H, W) -> (B, c, H/2, W/2)
        h = self.mid(h, temb)
        for i, block in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")               # (B, c, H, W) -> (B, c, 2H, 2W)
            h = block(torch.cat([h, skips.pop()], dim=1), temb)                      # concat the skip on channels
        return self.conv_out(F.silu(self.norm_out(h)))                               # (B, c0, H, W) -> (B, 3, H, W)


def _resnet(c_in: int, c_out: int, t_dim: int) -> ResnetBlock:
    """The SD UNet's resnet block with PyTorch's GroupNorm defaults (8 groups, eps 1e-5), no dropout."""
    return ResnetBlock(c_in, c_out, t_dim, groups=8, eps=1e-5, dropout=0.0)


# The bundled file predates the shared ResnetBlock / TimestepEmbedding: the same tensors, older names.
_OLD_NAMES = ((".time.", ".time_emb_proj."), (".skip.", ".conv_shortcut."),
              ("time_mlp.0.", "time_mlp.linear_1."), ("time_mlp.2.", "time_mlp.linear_2."))


def load_pixel_model(path: str | Path = PIXEL_MODEL_DIR) -> PixelUNet:
    """The bundled model (EMA weights; or a folder that ``python -m sdlearn train pixel`` wrote), in eval
    mode on the CPU."""
    from sdlearn.weights import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    model = PixelUNet(tuple(config["channels"]), config["t_dim"])
    state = {}
    for key, tensor in load_file(path / "model.safetensors").items():
        for old, new in _OLD_NAMES:
            key = key.replace(old, new)
        state[key] = tensor
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The tiny contrastive CLIP (notebook 04)
# ---------------------------------------------------------------------------------------------

class ImageEncoder(nn.Module):
    """A small convnet that keeps *where* things are: (B, 3, 64, 64) -> (B, embed_dim).

    Global average pooling would make it translation-invariant (it could not tell "top left" from
    "bottom right"); instead the 8x8 feature map is flattened into a linear layer, so every cell
    of the grid has its own weights.
    """

    def __init__(self, embed_dim: int = 128, width: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GELU(),              # (B, 3, 64, 64) -> (B, w, 32, 32)
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),      # -> (B, 2w, 16, 16)
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),  # -> (B, 2w, 8, 8)
            nn.Conv2d(2 * width, width // 2, 1))                                 # -> (B, w/2, 8, 8)
        n = width // 2 * (IMAGE_SIZE // 8) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, 256), nn.GELU(), nn.Linear(256, embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(images))  # (B, w/2, 8, 8) -> (B, w/2 * 64) -> (B, embed_dim)


class TinyCLIP(nn.Module):
    """Text tower + image tower + learned temperature, trained by ``contrastive_loss``."""

    def __init__(self, text_config: dict | None = None) -> None:
        super().__init__()
        self.text_encoder = CLIPTextEncoder.from_config(text_config or TINY_TEXT_CONFIG)
        c = self.text_encoder.config
        self.text_projection = nn.Linear(c["hidden_size"], c["projection_dim"], bias=False)
        self.image_encoder = ImageEncoder(c["projection_dim"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature 0.07

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, P) unit vectors."""
        return F.normalize(self.text_projection(self.text_encoder.pooled(input_ids)), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [-1, 1] -> (B, P) unit vectors."""
        return F.normalize(self.image_encoder(images), dim=-1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """logits[i, j] = exp(t) * cos(image_i, caption_j): (B_img, B_txt)."""
        return self.logit_scale.exp().clamp(max=100) * self.encode_image(images) @ self.encode_text(input_ids).T

    def save(self, text_encoder_dir: str | Path, clip_dir: str | Path = TINY_CLIP_DIR, info: dict | None = None) -> None:
        """Text tower in transformers layout (float16 storage); image tower, projection, temperature as
        safetensors; ``info`` (how it was trained) goes into clip_dir/config.json."""
        from sdlearn.weights import save_file

        self.text_encoder.save_pretrained(text_encoder_dir, dtype=torch.float16)
        clip_dir = Path(clip_dir)
        clip_dir.mkdir(parents=True, exist_ok=True)
        rest = {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}
        save_file(rest, clip_dir / "model.safetensors", metadata={"format": "pt"})
        config = {"text_config": self.text_encoder.config, "training": info or {}}
        (clip_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, text_encoder_dir: str | Path, clip_dir: str | Path = TINY_CLIP_DIR) -> "TinyCLIP":
        """What ``save`` wrote (the bundled model: ``TINY_MODEL_DIR / "text_encoder"``, ``TINY_CLIP_DIR``)."""
        from sdlearn.weights import load_file

        model = cls(json.loads((Path(clip_dir) / "config.json").read_text())["text_config"])
        model.text_encoder = CLIPTextEncoder.from_pretrained(text_encoder_dir)
        text_state = {f"text_encoder.{k}": v for k, v in model.text_encoder.state_dict().items()}
        model.load_state_dict({**text_state, **load_file(Path(clip_dir) / "model.safetensors")}, strict=True)
        return model.eval()


def contrastive_loss(logits: torch.Tensor, match: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: mean of cross-entropy over rows (image -> caption) and columns.

    ``logits`` (B, B) with the true pairs on the diagonal. ``match`` (B_img, B_txt) bool, optional:
    pairs that are also true (two images of a red circle, a caption that omits the size); the
    target of each row/column is then spread evenly over its true pairs instead of the diagonal
    alone. Extra caption columns true of no image (hard negatives) only compete in the rows.
    """
    if match is None:
        match = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    target = match.float()
    loss_i = -(target / target.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()    # each image picks captions
    cols = target.sum(0) > 0                                                                       # captions some image fits
    t, lg = target[:, cols], logits[:, cols]
    loss_t = -(t / t.sum(0, keepdim=True) * lg.log_softmax(dim=0)).sum(0).mean()                   # each caption picks images
    return (loss_i + loss_t) / 2
