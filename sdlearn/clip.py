"""CLIP's text transformer (the encoder Stable Diffusion conditions on) and a tiny contrastive CLIP.

``CLIPTextEncoder`` is transformers' ``CLIPTextModel`` rewritten small: token + position embeddings,
pre-LayerNorm transformer layers whose self-attention is causal (each token sees itself and the
tokens before it, as in GPT-2, from which CLIP's text tower descends), a final LayerNorm. Its
state-dict keys are transformers' (``text_model.embeddings.token_embedding.weight``,
``text_model.encoder.layers.N.self_attn.q_proj.weight``, ...), so the same code runs SD v1's
CLIP ViT-L/14 text tower (768 wide, 12 layers, quick_gelu) and SD v2's OpenCLIP ViT-H one
(1024 wide, 23 of its 24 layers: SD v2 reads the penultimate layer, and diffusers ships it cut
there, final LayerNorm applied; gelu).

``TinyCLIP`` pairs a ``CLIPTextEncoder`` with a small image encoder, trained with CLIP's
contrastive objective (Radford et al. 2021, Fig. 3: a symmetric cross-entropy over the batch's
image-caption cosine similarities times a learned temperature) on the Shapes world. Its text
encoder is the bundled tiny model's, frozen while the UNet learns to listen to it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdlearn.configs import CLIP_VIT_L_TEXT, OPENCLIP_VIT_H_TEXT
from sdlearn.data import IMAGE_SIZE

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP's sigmoid approximation of GELU
    "gelu": F.gelu,                                         # exact GELU (OpenCLIP, SD v2)
}
# transformers' CLIPTextConfig defaults (CLIP ViT-B/32's text tower); from_config fills missing keys.
DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
                projection_dim=512)
#: SD v1's text encoder, CLIP ViT-L/14, and SD v2's, OpenCLIP ViT-H/14 cut to 23 layers (sdlearn.configs).
SD1_TEXT_CONFIG, SD2_TEXT_CONFIG = CLIP_VIT_L_TEXT, OPENCLIP_VIT_H_TEXT


class CLIPAttention(nn.Module):
    """Multi-head causal self-attention: softmax(Q K^T / sqrt(d_head) + M) V, M = -inf above the diagonal."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads ({num_heads})")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = (proj(x).view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, L, D) -> (B, h, L, D/h)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)                     # (B, h, L, D/h)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D))                         # (B, h, L, D/h) -> (B, L, D)


class CLIPMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, L, D) -> (B, L, 4D) -> (B, L, D)


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, act: str, eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=eps)
        self.self_attn = CLIPAttention(hidden_size, num_heads)
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = CLIPMLP(hidden_size, intermediate_size, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, max_positions: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.position_embedding = nn.Embedding(max_positions, hidden_size)  # learned, one vector per slot

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        if L > self.position_embedding.num_embeddings:
            raise ValueError(f"input_ids has {L} tokens; this encoder has {self.position_embedding.num_embeddings} positions")
        positions = torch.arange(L, device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, L) -> (B, L, D)


class CLIPEncoder(nn.Module):
    def __init__(self, layers: list[CLIPEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class CLIPTextTransformer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(c["vocab_size"], c["hidden_size"], c["max_position_embeddings"])
        self.encoder = CLIPEncoder([
            CLIPEncoderLayer(c["hidden_size"], c["num_attention_heads"], c["intermediate_size"],
                             c["hidden_act"], c["layer_norm_eps"]) for _ in range(c["num_hidden_layers"])])
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class CLIPTextEncoder(nn.Module):
    """CLIP's text tower: input_ids (B, L) -> last hidden state (B, L, D), final LayerNorm applied.

    Same keys and numbers as transformers' ``CLIPTextModel``; build it with ``from_config`` (a
    ``CLIPTextConfig`` dict, e.g. ``SD1_TEXT_CONFIG``) or ``from_pretrained(folder)``.
    """

    def __init__(self, **config):
        super().__init__()
        act = config.get("hidden_act", DEFAULTS["hidden_act"])
        if act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        self.config = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
        self.text_model = CLIPTextTransformer(self.config)
        self.apply(_init_weights)
        self.register_load_state_dict_pre_hook(_accept_transformers_keys)

    @classmethod
    def from_config(cls, config: dict) -> "CLIPTextEncoder":
        """From a transformers ``CLIPTextConfig`` dict (a text_encoder/config.json); unknown keys ignored.
        A value of the wrong type or range is refused here, with its key's name."""
        from sdlearn import weights

        positive = "positive int"
        weights.check_config(config, DEFAULTS, "CLIPTextEncoder", {
            "vocab_size": positive, "hidden_size": positive, "intermediate_size": positive,
            "num_hidden_layers": positive, "num_attention_heads": positive, "max_position_embeddings": positive,
            "projection_dim": positive, "layer_norm_eps": "positive number", "bos_token_id": "int",
            "eos_token_id": "int", "pad_token_id": "int",
        }, multiples=(("num_attention_heads", "hidden_size"),))
        return cls(**config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None, *,
                        subfolder: str | None = None) -> "CLIPTextEncoder":
        """Load a transformers-layout folder, config.json + model.safetensors (``folder/subfolder`` if
        given), with ``sdlearn.weights.load_pretrained``; weights come in as ``dtype`` (None: float32)."""
        from sdlearn import weights

        return weights.load_pretrained(cls, folder, dtype, subfolder=subfolder)

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write config.json + model.safetensors that transformers' ``CLIPTextModel.from_pretrained`` loads."""
        from sdlearn.weights import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **self.config,
                  "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
                  "dtype": "float32"}
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().to(dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    def hidden_states(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Every stage for teaching: [embeddings, after layer 1, ..., after layer N] (no final LN), each (B, L, D)."""
        x = self.text_model.embeddings(input_ids)  # (B, L) -> (B, L, D)
        states = [x]
        for layer in self.text_model.encoder.layers:
            x = layer(x)                           # (B, L, D) -> (B, L, D)
            states.append(x)
        return states

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.text_model.embeddings(input_ids)          # (B, L) -> (B, L, D)
        for layer in self.text_model.encoder.layers:
            x = layer(x)                                   # (B, L, D) -> (B, L, D)
        return self.text_model.final_layer_norm(x)         # (B, L, D): the UNet's context

    def pooled(self, input_ids: torch.Tensor, last_hidden_state: torch.Tensor | None = None) -> torch.Tensor:
        """The state at the first end token, which has read the whole prompt: (B, L) -> (B, D)."""
        h = self(input_ids) if last_hidden_state is None else last_hidden_state
        eos = (input_ids == self.config["eos_token_id"]).int().argmax(dim=-1)  # (B,) first end position
        return h[torch.arange(h.shape[0], device=h.device), eos]


def _accept_transformers_keys(module, state_dict, prefix, *args) -> None:
    """Also load transformers 5's ``CLIPTextModel.state_dict()``, whose keys lack ``text_model.``
    (files on disk, SD checkpoints and transformers 4 keep it), and drop the old ``position_ids`` buffer."""
    for key in list(state_dict):
        rest = key[len(prefix):]
        if not key.startswith(prefix):
            continue
        if rest.endswith("embeddings.position_ids"):
            del state_dict[key]
        elif rest.split(".")[0] in ("embeddings", "encoder", "final_layer_norm"):
            state_dict[prefix + "text_model." + rest] = state_dict.pop(key)


def _init_weights(m: nn.Module) -> None:
    """GPT-2 style: N(0, 0.02) weights, zero biases (LayerNorms start as the identity)."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# The tiny contrastive CLIP of the bundled model
# ---------------------------------------------------------------------------------------------

#: The bundled tiny text encoder: 128 wide, 4 layers, CLIP's vocabulary and 77 positions.
TINY_TEXT_CONFIG = {**DEFAULTS, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "projection_dim": 128, "hidden_act": "quick_gelu"}
TINY_CLIP_DIR = Path(__file__).resolve().parent / "assets" / "tiny_clip"


class ImageEncoder(nn.Module):
    """A small convnet that keeps *where* things are: (B, 3, 64, 64) -> (B, embed_dim).

    Global average pooling would make it translation-invariant (it could not tell "top left" from
    "bottom right"); instead the 8x8 feature map is flattened into a linear layer, so every cell
    of the grid has its own weights.
    """

    def __init__(self, embed_dim: int = 128, width: int = 32):
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

    def __init__(self, text_config: dict | None = None):
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
        from safetensors.torch import load_file

        model = cls(json.loads((Path(clip_dir) / "config.json").read_text())["text_config"])
        model.text_encoder = CLIPTextEncoder.from_pretrained(text_encoder_dir)
        text_state = {f"text_encoder.{k}": v for k, v in model.text_encoder.state_dict().items()}
        model.load_state_dict({**text_state, **load_file(Path(clip_dir) / "model.safetensors")}, strict=True)
        return model.eval()


def contrastive_loss(logits: torch.Tensor, match: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: mean of cross-entropy over rows (image -> caption) and columns.

    ``logits`` (B, B) with the true pairs on the diagonal. ``match`` (B, B) bool, optional: pairs
    that are also true (two images of a red circle, a caption that omits the size); the target
    of each row/column is then spread evenly over its true pairs instead of the diagonal alone.
    """
    B = logits.shape[0]
    if match is None:
        match = torch.eye(B, dtype=torch.bool, device=logits.device)
    target = match.float()
    loss_i = -(target / target.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()    # each image picks captions
    loss_t = -(target / target.sum(0, keepdim=True) * logits.log_softmax(dim=0)).sum(0).mean()    # each caption picks images
    return (loss_i + loss_t) / 2
