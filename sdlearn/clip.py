"""CLIP's text transformer: the encoder Stable Diffusion conditions on.

``CLIPTextEncoder`` is transformers' ``CLIPTextModel`` rewritten small: token + position embeddings,
pre-LayerNorm transformer layers whose self-attention is causal (each token sees itself and the
tokens before it, as in GPT-2, from which CLIP's text tower descends), a final LayerNorm. Its
state-dict keys are transformers' (``text_model.embeddings.token_embedding.weight``,
``text_model.encoder.layers.N.self_attn.q_proj.weight``, ...), so the same code runs SD v1's
CLIP ViT-L/14 text tower (768 wide, 12 layers, quick_gelu) and SD v2's OpenCLIP ViT-H one
(1024 wide, 23 of its 24 layers: SD v2 reads the penultimate layer, and diffusers ships it cut
there, final LayerNorm applied; gelu). Their configs are ``sdlearn.configs.CLIP_VIT_L_TEXT`` and
``OPENCLIP_VIT_H_TEXT``; the course's tiny contrastive CLIP, built on this encoder, is ``sdlearn.toys.TinyCLIP``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI CLIP's sigmoid approximation of GELU
    "gelu": F.gelu,                                         # exact GELU (OpenCLIP, SD v2)
}
# transformers' CLIPTextConfig defaults (CLIP ViT-B/32's text tower); from_config fills missing keys.
DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
                projection_dim=512)


class CLIPAttention(nn.Module):
    """Multi-head causal self-attention: softmax(Q K^T / sqrt(d_head) + M) V, M = -inf above the diagonal."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
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
    def __init__(self, hidden_size: int, intermediate_size: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, L, D) -> (B, L, 4D) -> (B, L, D)


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, act: str, eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=eps)
        self.self_attn = CLIPAttention(hidden_size, num_heads)
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = CLIPMLP(hidden_size, intermediate_size, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, max_positions: int) -> None:
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
    def __init__(self, layers: list[CLIPEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class CLIPTextTransformer(nn.Module):
    def __init__(self, c: dict) -> None:
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(c["vocab_size"], c["hidden_size"], c["max_position_embeddings"])
        self.encoder = CLIPEncoder([
            CLIPEncoderLayer(c["hidden_size"], c["num_attention_heads"], c["intermediate_size"],
                             c["hidden_act"], c["layer_norm_eps"]) for _ in range(c["num_hidden_layers"])])
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class CLIPTextEncoder(nn.Module):
    """CLIP's text tower: input_ids (B, L) -> last hidden state (B, L, D), final LayerNorm applied.

    Same keys and numbers as transformers' ``CLIPTextModel``; build it with ``from_config`` (a
    ``CLIPTextConfig`` dict, e.g. ``sdlearn.configs.CLIP_VIT_L_TEXT``) or ``from_pretrained(folder)``.
    """

    def __init__(self, **config) -> None:
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
        """Every stage: [embeddings, after layer 1, ..., after layer N] (no final LN), each (B, L, D)."""
        states = [self.text_model.embeddings(input_ids)]   # (B, L) -> (B, L, D)
        for layer in self.text_model.encoder.layers:
            states.append(layer(states[-1]))               # (B, L, D) -> (B, L, D)
        return states

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, L) -> the last hidden state after the final LayerNorm (B, L, D): the UNet's context."""
        return self.text_model.final_layer_norm(self.hidden_states(input_ids)[-1])

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
