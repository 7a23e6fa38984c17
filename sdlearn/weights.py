"""Loading and saving weights: safetensors, diffusers folders, and original single-file checkpoints.

Stable Diffusion's weights come in two layouts holding the same numbers under different names:

* the **original CompVis layout** (``v1-5-pruned-emaonly.safetensors``, ``v2-1_768-ema-pruned.ckpt``):
  one file, one flat state dict, with the UNet under ``model.diffusion_model.``, the VAE under
  ``first_stage_model.`` and the text encoder under ``cond_stage_model.`` (OpenAI CLIP for v1,
  OpenCLIP for v2);
* the **diffusers layout**: a folder with ``unet/``, ``vae/`` and ``text_encoder/`` sub-folders,
  each a ``config.json`` plus a safetensors file whose keys are those of diffusers'
  ``UNet2DConditionModel``, ``AutoencoderKL`` and transformers' ``CLIPTextModel`` -- the keys of
  sdlearn's ``UNet``, ``VAE`` and ``CLIPTextEncoder`` too.

One loader reads both (``load_pretrained`` for a folder, ``pipeline_from_single_file`` for a file),
in the order of nanoGPT's ``GPT.from_pretrained``: build the model from its config on the *meta*
device (shapes, no memory), check every key and shape of the file against it -- a safetensors file's
header says them without reading a byte of weights -- and only then read the weights and make them
the model's parameters (``load_state_dict(assign=True)``). A file that does not fit is refused in
milliseconds, naming the file and listing the missing, unexpected and wrong-shaped keys.

The key conversion between the layouts is a *table*: a list of ``(ours, original)`` prefix pairs built
from the model config, plus a few renames inside a block. The same table read right-to-left converts
back, so round trips are exact. Two places need more than a rename:

* the VAE's mid-block attention uses 1x1 convolutions in the original, ``(C, C, 1, 1)``, and Linear
  layers in diffusers, ``(C, C)``;
* OpenCLIP (v2) fuses the query/key/value projections into one ``in_proj_weight`` ``(3d, d)``;
  ``CLIPTextModel`` keeps ``q_proj``, ``k_proj``, ``v_proj`` ``(d, d)`` apart.

Safety: a pickle (``.ckpt``, ``.bin``, ``.pt``, ``.pth``) can run arbitrary code when unpickled.
``load_file`` refuses one unless the caller opts in with ``allow_pickle=True``, and even then reads it
only through ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers and
refuses everything else. ``save_file`` writes safetensors only; it is sdlearn's one writer.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, TypeVar

import safetensors
import safetensors.torch
import torch

from sdlearn import configs

StateDict = dict[str, torch.Tensor]
Module = TypeVar("Module", bound=torch.nn.Module)

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
#: The weights file of a component folder: diffusers' name, then transformers' (first found is read).
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
PICKLE_WEIGHTS_NAMES = ("diffusion_pytorch_model.bin", "pytorch_model.bin")

# Where each part lives in an original single-file checkpoint.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # v1: OpenAI CLIP ViT-L/14 (a transformers CLIPTextModel)
OPENCLIP_PREFIX = "cond_stage_model.model."    # v2: OpenCLIP ViT-H/14 (open_clip's own module names)


# ----------------------------------------------------------------------------- the SD configs
# What a single file needs beside its weights: the architectures (sdlearn.configs holds the
# diffusers/transformers config.json contents) and the scheduler config of each family.
_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
              "steps_offset": 1, "timestep_spacing": "leading"}
SD_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    # v1.x: 64x64 latents (512 px), OpenAI CLIP ViT-L/14 text (768-d), eps-prediction.
    "v1": {"unet": configs.SD15_UNET, "vae": configs.SD_VAE, "text_encoder": configs.CLIP_VIT_L_TEXT,
           "scheduler": {**_SCHEDULER, "prediction_type": "epsilon"}},
    # v2.x (2.1, 768 px): 96x96 latents, OpenCLIP ViT-H/14 text (1024-d, 23 of its 24 layers), v-prediction.
    "v2": {"unet": configs.SD21_UNET, "vae": configs.SD_VAE | {"sample_size": 768},
           "text_encoder": configs.OPENCLIP_VIT_H_TEXT, "scheduler": {**_SCHEDULER, "prediction_type": "v_prediction"}},
}


# ----------------------------------------------------------------------------- files
# safetensors' dtype names (in a file's header) -> torch dtypes; anything else is read as float32 shapes.
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def load_file(path: str | os.PathLike, allow_pickle: bool = False, meta: bool = False) -> StateDict:
    """Read a state dict from ``path`` onto the CPU (``meta=True``: only its keys and shapes).

    ``.safetensors`` files are read with safetensors (no code can run); with ``meta=True`` only the
    file's header is read and the tensors come back on the meta device (shapes and dtypes, no data).
    Pickle files (``.ckpt``, ``.bin``, ``.pt``, ``.pth``) are refused with a ValueError unless
    ``allow_pickle=True``, and then read only with ``torch.load(weights_only=True)`` (whole, even with
    ``meta=True``: a pickle cannot be read in part); a Lightning-style ``{"state_dict": ...}`` wrapper
    is unwrapped and non-tensor entries are dropped. A missing file is a FileNotFoundError; an empty,
    corrupt or truncated one a ValueError naming it.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (got {type(path).__name__})")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES):
        raise ValueError(f"path must end in {SAFETENSORS_SUFFIX} or one of {', '.join(PICKLE_SUFFIXES)} "
                         f"(got {path.name!r})")
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ValueError(f"{path} is a pickle file, and unpickling can run arbitrary code. Prefer a "
                         ".safetensors file; if you trust this one, pass allow_pickle=True (it is then read "
                         "with torch.load(weights_only=True), which loads tensors only)")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if suffix == SAFETENSORS_SUFFIX:
        try:
            if not meta:
                return safetensors.torch.load_file(str(path), device="cpu")
            with safetensors.safe_open(str(path), framework="pt") as f:  # the header only
                slices = {key: f.get_slice(key) for key in f.keys()}
                return {key: torch.empty(s.get_shape(), device="meta",
                                         dtype=_SAFETENSORS_DTYPES.get(s.get_dtype(), torch.float32))
                        for key, s in slices.items()}
        except safetensors.SafetensorError as err:
            raise ValueError(f"{path} is not a readable safetensors file (empty, corrupt or truncated?): "
                             f"{err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds more than tensors and plain containers (or is no checkpoint at all), "
                         f"so torch.load(weights_only=True) refused it: {err}") from err
    except (EOFError, RuntimeError) as err:  # empty file, broken zip archive
        raise ValueError(f"{path} is not a readable torch checkpoint (empty, corrupt or truncated?): "
                         f"{type(err).__name__} {err}") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def save_file(module_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
              metadata: dict[str, str] | None = None) -> Path:
    """Write a module's state dict (or a state dict) to a ``.safetensors`` file; return the path.

    Tensors are moved to the CPU and made contiguous; tensors that share memory (tied weights, views
    such as a split qkv) are copied, since safetensors stores each tensor on its own.
    """
    path = Path(path)
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        raise ValueError(f"path must end in {SAFETENSORS_SUFFIX} (got {path.name!r}): sdlearn writes no pickles")
    if isinstance(module_or_state_dict, torch.nn.Module):
        state_dict = module_or_state_dict.state_dict()
    elif isinstance(module_or_state_dict, Mapping):
        state_dict = module_or_state_dict
    else:
        raise TypeError(f"module_or_state_dict must be a torch.nn.Module or a dict of tensors "
                        f"(got {type(module_or_state_dict).__name__})")
    tensors, seen = {}, set()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        storage = value.untyped_storage().data_ptr()
        if storage in seen or not value.is_contiguous():
            value = value.clone(memory_format=torch.contiguous_format)
        seen.add(storage)
        tensors[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def write_model_index(folder: str | os.PathLike, scheduler: str = "DPMSolverMultistepScheduler") -> Path:
    """Write ``folder/model_index.json``: what diffusers' ``StableDiffusionPipeline.from_pretrained``
    reads to know which class loads each subfolder (no safety checker or feature extractor)."""
    path = Path(folder) / "model_index.json"
    path.write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "image_encoder": [None, None], "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A ``config.json`` (or any JSON config file) as a dict; a ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object (a config), got {type(config).__name__}")
    return config


def component_files(folder: str | os.PathLike, subfolder: str | None = None,
                    allow_pickle: bool = False) -> tuple[Path, Path]:
    """``(config.json, weights file)`` of a diffusers/transformers component folder (``unet/``, ``vae/``,
    ``text_encoder/``), or a ValueError saying what the folder lacks. The weights file is the first of
    ``WEIGHTS_NAMES`` present (``PICKLE_WEIGHTS_NAMES`` too with ``allow_pickle=True``)."""
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a str or os.PathLike (got {type(folder).__name__})")
    folder = Path(folder) / subfolder if subfolder else Path(folder)
    names = list(WEIGHTS_NAMES) + (list(PICKLE_WEIGHTS_NAMES) if allow_pickle else [])
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: expected a component folder holding config.json "
                         f"and one of {names}")
    if not (folder / "config.json").is_file():
        inner = sorted(p.parent.name for p in folder.glob("*/config.json"))
        hint = f"; its sub-folders {inner} have one: pass subfolder={inner[0]!r}" if inner else ""
        raise ValueError(f"no config.json in {folder}: a component folder holds config.json and one of "
                         f"{names}{hint}")
    for name in names:
        if (folder / name).is_file():
            return folder / "config.json", folder / name
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    hint = f" (found {pickles}: pass allow_pickle=True to read them with torch.load(weights_only=True))" \
        if pickles and not allow_pickle else ""
    raise ValueError(f"no weights in {folder}: expected one of {names}{hint}")


def load_folder(folder: str | os.PathLike, allow_pickle: bool = False) -> tuple[dict[str, Any], StateDict]:
    """Read one diffusers-format component folder (``unet/``, ``vae/``, ``text_encoder/``).

    Returns ``(config, state_dict)``: the folder's ``config.json`` and the weights of
    ``diffusion_pytorch_model.safetensors`` or ``model.safetensors`` (the ``.bin`` twins only with
    ``allow_pickle=True``). Text-encoder keys saved by older transformers with a ``text_model.``
    prefix are returned without it, as ``CLIPTextModel().state_dict()`` names them today.
    """
    config_path, weights_path = component_files(folder, allow_pickle=allow_pickle)
    return read_config(config_path), _strip_text_model_prefix(load_file(weights_path, allow_pickle))


# ----------------------------------------------------------------------------- checks
def check_dtype(dtype: Any) -> torch.dtype | None:
    """``dtype`` if it is None or a floating-point torch.dtype; else a TypeError/ValueError naming it."""
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float16, or None for float32 "
                        f"(got {dtype!r})")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype (torch.float32, torch.float16, torch.bfloat16), "
                         f"got {dtype}")
    return dtype


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _are_ints(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(map(_is_int, value))


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# The kinds of value a config key may hold: kind -> (is the type right?, is the value right?).
CONFIG_KINDS = {
    "int": (_is_int, lambda v: True),
    "positive int": (_is_int, lambda v: v > 0),
    "positive int or a list of them": (lambda v: _is_int(v) or _are_ints(v), lambda v: min(_as_list(v), default=0) > 0),
    "non-empty list of positive ints": (_are_ints, lambda v: min(v, default=0) > 0),
    "number": (_is_number, math.isfinite),
    "positive number": (_is_number, lambda v: math.isfinite(v) and v > 0),
    "bool": (lambda v: isinstance(v, bool), lambda v: True),
}


def check_config(config: Any, defaults: Mapping[str, Any], what: str, kinds: Mapping[str, str],
                 multiples: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """Check a model config's values before the model is built; return it merged over ``defaults``.

    ``kinds`` maps keys to a kind of ``CONFIG_KINDS`` ("positive int", "bool", ...): a value of the
    wrong type is a TypeError, one out of range a ValueError, each naming ``what`` and the key. None
    passes where ``defaults`` holds None (diffusers' "unset"). ``multiples``: pairs ``(a, b)`` where
    every entry of ``config[b]`` must be a multiple of (the matching entry of) ``config[a]``
    (``check_multiple``). Used by ``UNet``, ``VAE`` and ``CLIPTextEncoder.from_config``.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict (a {what} config.json's content), got {type(config).__name__}")
    cfg = {**defaults, **config}
    for key, kind in kinds.items():
        value = cfg.get(key)
        if value is None and key in defaults and defaults[key] is None:
            continue
        type_ok, value_ok = CONFIG_KINDS[kind]
        if not type_ok(value):
            raise TypeError(f"{what} config[{key!r}] must be a {kind}, got {value!r} ({type(value).__name__})")
        if not value_ok(value):
            raise ValueError(f"{what} config[{key!r}] must be a {kind}, got {value!r}")
    for a, b in multiples:
        check_multiple(cfg, a, b, what)
    return cfg


def check_multiple(cfg: Mapping[str, Any], a: str, b: str, what: str) -> None:
    """Every entry of ``cfg[b]`` (channel counts) must be a multiple of ``cfg[a]`` (groups, heads), an
    int or a list with one entry per entry of ``cfg[b]``; else a ValueError naming both keys."""
    divisors, values = _as_list(cfg[a]), _as_list(cfg[b])
    if len(divisors) == 1:
        divisors = divisors * len(values)
    if len(divisors) != len(values):
        raise ValueError(f"{what} config[{a!r}] must be an int or a list with one entry per {b} "
                         f"({len(values)}), got {cfg[a]!r}")
    if any(v % d for d, v in zip(divisors, values)):
        raise ValueError(f"{what} config: every entry of {b}={list(values)} must be a multiple of "
                         f"{a}={cfg[a]!r}")


@dataclass
class KeyReport:
    """How a state dict fits a module: keys it lacks, keys it has extra, and keys whose shapes differ."""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, got, want

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        def listing(title: str, items: list[str], limit: int = 10) -> list[str]:
            if not items:
                return []
            more = [f"    ... and {len(items) - limit} more"] if len(items) > limit else []
            return [f"  {title} ({len(items)}):"] + [f"    {item}" for item in items[:limit]] + more
        lines = listing("missing keys", self.missing) + listing("unexpected keys", self.unexpected) + listing(
            "wrong shapes", [f"{k}: got {tuple(got)}, expected {tuple(want)}" for k, got, want in self.mismatched])
        return "\n".join(lines) if lines else "all keys and shapes fit"


def check_state_dict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare ``state_dict`` with ``module.state_dict()`` key by key and shape by shape (either may
    live on the meta device: only shapes are read)."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module (got {type(module).__name__})")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict of tensors (got {type(state_dict).__name__})")
    want = module.state_dict()
    report = KeyReport(missing=sorted(set(want) - set(state_dict)), unexpected=sorted(set(state_dict) - set(want)))
    for key in sorted(set(want) & set(state_dict)):
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(got).__name__}, not a tensor")
        if got.shape != want[key].shape:
            report.mismatched.append((key, tuple(got.shape), tuple(want[key].shape)))
    return report


def require_fit(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike,
                strict: bool = True) -> KeyReport:
    """``check_state_dict``, raising a ValueError that names ``source`` (the file) and lists every
    missing, unexpected and wrong-shaped key when the state dict does not fit. ``strict=False``
    tolerates missing and unexpected keys, never wrong shapes."""
    report = check_state_dict(module, state_dict)
    if report.mismatched or (strict and not report.fits):
        raise ValueError(f"{source} does not fit {type(module).__name__}:\n{report}")
    return report


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> KeyReport:
    """Copy ``state_dict`` into ``module`` after checking that it fits; return the ``KeyReport``.

    All keys and shapes are checked first (``require_fit``), so nothing is ever half-loaded. Values
    are cast to each parameter's dtype and device.
    """
    report = require_fit(module, state_dict, "state_dict", strict=strict)
    with torch.no_grad():
        module.load_state_dict(dict(state_dict), strict=strict)
    return report


# ----------------------------------------------------------------------------- the one loader
@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """``with torch.device("meta"):``, minus one cost: ``nn.init.normal_`` (``nn.Embedding``'s init) has
    nothing to draw on the meta device, yet its first call there imports torch._dynamo (~2 s), so it
    is skipped for meta tensors (real ones, in other threads too, are filled as usual)."""
    normal_ = torch.nn.init.normal_
    torch.nn.init.normal_ = lambda tensor, *args, **kwargs: tensor if tensor.is_meta else normal_(tensor, *args, **kwargs)
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.nn.init.normal_ = normal_


def build_on_meta(cls: type[Module], config: Mapping[str, Any], source: str | os.PathLike) -> Module:
    """``cls.from_config(config)`` on the meta device: the architecture and its shapes, no memory.
    A bad config value is reported with ``source`` (the config file) in front."""
    try:
        with meta_device():
            return cls.from_config(dict(config))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{source}: {err}") from err


def materialise(module: Module, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> Module:
    """Make ``state_dict``'s tensors the parameters of ``module`` (built on the meta device; keys
    already checked), floating-point ones cast to ``dtype`` (None: float32): no second copy."""
    dtype = dtype or torch.float32
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a buffer that is not in the state dict (persistent=False) would stay without memory
        raise RuntimeError(f"{type(module).__name__}: {left[:5]} not materialised (not in its state dict)")
    return module.eval()


def load_pretrained(cls: type[Module], folder: str | os.PathLike, dtype: torch.dtype | None = None, *,
                    subfolder: str | None = None, allow_pickle: bool = False) -> Module:
    """The loader behind ``UNet``, ``VAE`` and ``CLIPTextEncoder.from_pretrained(folder, dtype=None)``.

    1. ``cls.from_config(folder/config.json)`` on the meta device (no memory);
    2. every key and shape of the weights file (its header only) checked against it: a ValueError
       naming the file lists the missing, unexpected and wrong-shaped keys;
    3. the weights read and assigned as parameters, cast to ``dtype`` (None: float32, as diffusers'
       and transformers' ``from_pretrained`` do whatever the file stores).
    """
    dtype = check_dtype(dtype)
    config_path, weights_path = component_files(folder, subfolder, allow_pickle)
    model = build_on_meta(cls, read_config(config_path), config_path)
    header = match_text_model_prefix(_strip_text_model_prefix(load_file(weights_path, allow_pickle, meta=True)), model)
    require_fit(model, header, weights_path)
    state = header if not any(v.is_meta for v in header.values()) else match_text_model_prefix(
        _strip_text_model_prefix(load_file(weights_path, allow_pickle)), model)
    return materialise(model, state, dtype)


# ----------------------------------------------------------------------------- the conversion tables
@dataclass(frozen=True)
class _Block:
    """One row of a conversion table: a key ``original + rest`` becomes ``ours + renamed(rest)``."""
    ours: str
    original: str
    renames: tuple[tuple[str, str], ...] = ()  # (ours, original) for the start of ``rest``
    conv1x1: bool = False  # original stores Linear weights as 1x1 convolutions: (C, C, 1, 1) <-> (C, C)


# Inside a UNet ResBlock: the original keeps its layers in nn.Sequentials (in_layers = norm, SiLU,
# conv; out_layers = norm, SiLU, dropout, conv), diffusers names them.
_UNET_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
                ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."))
_VAE_RESNET = (("conv_shortcut.", "nin_shortcut."),)
_VAE_ATTENTION = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                  ("to_out.0.", "proj_out."))
# OpenCLIP's residual attention block -> CLIPEncoderLayer (in_proj_* is split separately, see _split_qkv).
_OPENCLIP_LAYER = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
                   ("mlp.fc2.", "mlp.c_proj."), ("self_attn.out_proj.", "attn.out_proj."))


def _has_attention(block_type: str | None) -> bool:
    return block_type is not None and "CrossAttn" in block_type


def _unet_table(config: Mapping[str, Any]) -> list[_Block]:
    """The UNet's rows. The original numbers its blocks in one flat sequence:

    ``input_blocks``: 0 = conv_in, then per level ``layers_per_block`` x (ResBlock[, Transformer]) and a
    Downsample (all levels but the last); ``middle_block``: ResBlock, Transformer, ResBlock;
    ``output_blocks``: per level ``layers_per_block + 1`` x (ResBlock[, Transformer][, Upsample]).
    """
    L = config.get("layers_per_block", 2)
    if not isinstance(L, int):
        raise ValueError(f"unet_config['layers_per_block'] must be one int, as in SD v1/v2 (got {L!r})")
    down_types = config.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"])
    up_types = config.get("up_block_types", ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
    n = len(down_types)
    rows = [_Block("time_embedding.linear_1.", "time_embed.0."), _Block("time_embedding.linear_2.", "time_embed.2."),
            _Block("conv_in.", "input_blocks.0.0."), _Block("conv_norm_out.", "out.0."), _Block("conv_out.", "out.2.")]
    for b in range(n):
        for j in range(L):
            i = 1 + b * (L + 1) + j
            rows.append(_Block(f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{i}.0.", _UNET_RESNET))
            if _has_attention(down_types[b]):
                rows.append(_Block(f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{i}.1."))
        if b < n - 1:
            rows.append(_Block(f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{1 + b * (L + 1) + L}.0.op."))
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None:
        rows += [_Block("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET),
                 _Block("mid_block.attentions.0.", "middle_block.1."),
                 _Block("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET)]
    for b in range(n):
        attention = _has_attention(up_types[b])
        for j in range(L + 1):
            i = b * (L + 1) + j
            rows.append(_Block(f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{i}.0.", _UNET_RESNET))
            if attention:
                rows.append(_Block(f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{i}.1."))
        if b < n - 1:  # the Upsample follows the level's last ResBlock (and its Transformer, if any)
            rows.append(_Block(f"up_blocks.{b}.upsamplers.0.conv.",
                               f"output_blocks.{b * (L + 1) + L}.{2 if attention else 1}.conv."))
    return rows


def _vae_table(config: Mapping[str, Any]) -> list[_Block]:
    """The VAE's rows. The original decoder numbers its levels from the bottom (``up.0`` is the
    last, full-resolution level), diffusers from the top (``up_blocks.0`` runs first)."""
    L = config.get("layers_per_block", 2)
    n = len(config.get("block_out_channels", [128, 256, 512, 512]))
    rows = [_Block("quant_conv.", "quant_conv."), _Block("post_quant_conv.", "post_quant_conv.")]
    for part in ("encoder", "decoder"):
        rows += [_Block(f"{part}.conv_in.", f"{part}.conv_in."), _Block(f"{part}.conv_out.", f"{part}.conv_out."),
                 _Block(f"{part}.conv_norm_out.", f"{part}.norm_out."),
                 _Block(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _VAE_RESNET),
                 _Block(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTENTION, conv1x1=True),
                 _Block(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _VAE_RESNET)]
    for i in range(n):
        rows += [_Block(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", _VAE_RESNET)
                 for j in range(L)]
        if i < n - 1:
            rows.append(_Block(f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv."))
        level = n - 1 - i
        rows += [_Block(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{level}.block.{j}.", _VAE_RESNET)
                 for j in range(L + 1)]
        if i < n - 1:
            rows.append(_Block(f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{level}.upsample.conv."))
    return rows


def _openclip_table(num_layers: int) -> list[_Block]:
    """OpenCLIP's text tower -> CLIPTextModel, keeping the first ``num_layers`` residual blocks."""
    rows = [_Block("embeddings.token_embedding.", "token_embedding."),
            _Block("embeddings.position_embedding.weight", "positional_embedding"),
            _Block("final_layer_norm.", "ln_final.")]
    rows += [_Block(f"encoder.layers.{i}.", f"transformer.resblocks.{i}.", _OPENCLIP_LAYER) for i in range(num_layers)]
    return rows


def _convert(state_dict: Mapping[str, torch.Tensor], table: list[_Block], to_original: bool,
             what: str) -> StateDict:
    """Rename every key of ``state_dict`` through ``table``; a key that no row covers is an error."""
    rows = sorted(table, key=lambda r: len(r.ours if to_original else r.original), reverse=True)  # longest first
    out, unknown = {}, []
    for key, value in state_dict.items():
        for row in rows:
            src, dst = (row.ours, row.original) if to_original else (row.original, row.ours)
            if key == src or key.startswith(src):
                break
        else:
            unknown.append(key)
            continue
        rest = key[len(src):]
        for ours, original in row.renames:
            old, new = (ours, original) if to_original else (original, ours)
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        if row.conv1x1 and to_original and value.ndim == 2:
            value = value[:, :, None, None]  # Linear (C, C) -> 1x1 conv (C, C, 1, 1)
        elif row.conv1x1 and not to_original and value.ndim == 4:
            value = value[:, :, 0, 0]  # 1x1 conv (C, C, 1, 1) -> Linear (C, C)
        out[dst + rest] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 8 else "")
        raise ValueError(f"{what}: keys that the config's layout does not have: {shown}")
    return out


def _split_qkv(state_dict: StateDict) -> StateDict:
    """OpenCLIP ``attn.in_proj_weight`` (3d, d) -> ``self_attn.{q,k,v}_proj.weight`` (d, d) each; same for biases."""
    out = {}
    for key, value in state_dict.items():
        for kind in ("weight", "bias"):
            if key.endswith(f"attn.in_proj_{kind}"):
                stem = key[: -len(f"attn.in_proj_{kind}")]
                for name, part in zip("qkv", value.chunk(3, dim=0)):  # (3d, ...) -> 3 x (d, ...)
                    out[f"{stem}self_attn.{name}_proj.{kind}"] = part
                break
        else:
            out[key] = value
    return out


def _fuse_qkv(state_dict: StateDict) -> StateDict:
    """The inverse of ``_split_qkv``: ``self_attn.{q,k,v}_proj.*`` (d, ...) -> ``attn.in_proj_*`` (3d, ...)."""
    out = {}
    for key, value in state_dict.items():
        if ".self_attn.q_proj." in key:
            stem, kind = key.split(".self_attn.q_proj.")
            parts = [state_dict[f"{stem}.self_attn.{name}_proj.{kind}"] for name in "qkv"]
            out[f"{stem}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)  # 3 x (d, ...) -> (3d, ...)
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            out[key] = value
    return out


def _strip_text_model_prefix(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers < 5 saved CLIPTextModel keys as ``text_model.*``, and < 4.31 its ``position_ids``
    buffer too; today's module has neither."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items()
            if not k.endswith("embeddings.position_ids")}


def match_text_model_prefix(state_dict: Mapping[str, torch.Tensor], module: torch.nn.Module) -> StateDict:
    """Name CLIP text-encoder keys as ``module`` does: with the ``text_model.`` prefix (transformers < 5,
    the hub's files) or without it (transformers 5's ``CLIPTextModel``). Other state dicts pass unchanged."""
    state_dict = dict(state_dict)
    if any(k.startswith("text_model.") for k in module.state_dict()):
        return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in state_dict.items()}
    return _strip_text_model_prefix(state_dict)


def _component(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def detect_text_encoder(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"clip"`` (SD v1: OpenAI CLIP) or ``"openclip"`` (SD v2: OpenCLIP) from an original checkpoint's keys."""
    if any(k.startswith(OPENCLIP_PREFIX) for k in state_dict):
        return "openclip"
    if any(k.startswith(CLIP_PREFIX) for k in state_dict):
        return "clip"
    raise ValueError(f"state_dict has no text encoder: no key starts with {CLIP_PREFIX!r} (SD v1) "
                     f"or {OPENCLIP_PREFIX!r} (SD v2)")


def detect_version(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"v1"`` or ``"v2"``: the SD family of an original single-file checkpoint (by its text encoder)."""
    return {"clip": "v1", "openclip": "v2"}[detect_text_encoder(state_dict)]


def original_to_diffusers(state_dict: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any],
                          vae_config: Mapping[str, Any], text_config: Mapping[str, Any]) -> dict[str, StateDict]:
    """Split an original CompVis-layout checkpoint into diffusers-layout state dicts.

    Returns ``{"unet": ..., "vae": ..., "text_encoder": ...}`` with the keys of diffusers'
    ``UNet2DConditionModel`` / ``AutoencoderKL`` and transformers' ``CLIPTextModel`` (so of sdlearn's
    ``UNet`` / ``VAE`` / ``CLIPTextEncoder``) for the given configs (``config.json`` contents).
    The text encoder's kind is read from the keys (see ``detect_text_encoder``); an OpenCLIP tower
    keeps its first ``text_config["num_hidden_layers"]`` blocks (23 of 24 for SD 2: it uses the
    penultimate layer). Keys SD never uses are dropped: the training schedule's buffers (``betas``,
    ``alphas_cumprod``, ...), EMA copies (``model_ema.*``), CLIP's ``position_ids`` buffer, OpenCLIP's
    ``text_projection`` and ``logit_scale``. Tensors are shared with ``state_dict``, not copied.
    """
    kind = detect_text_encoder(state_dict)
    parts = {"unet": _convert(_component(state_dict, UNET_PREFIX), _unet_table(unet_config), False, "unet"),
             "vae": _convert(_component(state_dict, VAE_PREFIX), _vae_table(vae_config), False, "vae")}
    if kind == "clip":
        text = _strip_text_model_prefix(_component(state_dict, CLIP_PREFIX))
    else:
        num_layers = text_config.get("num_hidden_layers", 23)
        text = _component(state_dict, OPENCLIP_PREFIX)
        unused = [k for k in text if k in ("text_projection", "logit_scale", "attn_mask")
                  or (k.startswith("transformer.resblocks.") and int(k.split(".")[2]) >= num_layers)]
        text = _split_qkv(_convert({k: v for k, v in text.items() if k not in unused},
                                   _openclip_table(num_layers), False, "text_encoder"))
    parts["text_encoder"] = text
    for name, part in parts.items():
        if not part:
            raise ValueError(f"state_dict has no {name} weights: is it an original SD v1/v2 checkpoint?")
    return parts


def diffusers_to_original(parts: Mapping[str, Mapping[str, torch.Tensor]], unet_config: Mapping[str, Any],
                          vae_config: Mapping[str, Any], text_encoder: str = "clip") -> StateDict:
    """Join diffusers-layout state dicts into one original CompVis-layout checkpoint.

    ``parts`` maps ``"unet"``, ``"vae"``, ``"text_encoder"`` to state dicts (diffusers/sdlearn keys);
    ``text_encoder`` is ``"clip"`` (SD v1 layout) or ``"openclip"`` (SD v2 layout). The inverse of
    ``original_to_diffusers``: converting back gives the same tensors under the same keys.
    """
    if text_encoder not in ("clip", "openclip"):
        raise ValueError(f"text_encoder must be 'clip' (SD v1) or 'openclip' (SD v2), got {text_encoder!r}")
    missing = [name for name in ("unet", "vae", "text_encoder") if name not in parts]
    if missing:
        raise ValueError(f"parts must hold 'unet', 'vae' and 'text_encoder' state dicts (missing {missing})")
    out = {UNET_PREFIX + k: v for k, v in _convert(parts["unet"], _unet_table(unet_config), True, "unet").items()}
    out.update({VAE_PREFIX + k: v for k, v in _convert(parts["vae"], _vae_table(vae_config), True, "vae").items()})
    text = _strip_text_model_prefix(parts["text_encoder"])
    if text_encoder == "clip":
        out.update({CLIP_PREFIX + "text_model." + k: v for k, v in text.items()})
    else:
        num_layers = len({k.split(".")[2] for k in text if k.startswith("encoder.layers.")})
        text = _convert(_fuse_qkv(text), _openclip_table(num_layers), True, "text_encoder")
        out.update({OPENCLIP_PREFIX + k: v for k, v in text.items()})
    return out


# ----------------------------------------------------------------------------- whole pipelines
def pipeline_from_single_file(cls: type, path: str | os.PathLike, allow_pickle: bool = False,
                              version: str | None = None, prediction_type: str | None = None,
                              configs: Mapping[str, Mapping[str, Any]] | None = None,
                              dtype: torch.dtype | None = None) -> Any:
    """Build ``cls`` (``sdlearn.pipeline.StableDiffusion``) from an original single-file checkpoint.

    The SD family (``"v1"``/``"v2"``) is read from the text encoder's keys unless ``version`` is given;
    its configs are ``SD_CONFIGS[version]`` unless ``configs`` (same layout: ``"unet"``, ``"vae"``,
    ``"text_encoder"``, ``"scheduler"``) is given. A checkpoint cannot tell eps- from v-prediction: v1
    uses ``"epsilon"``, v2 defaults to ``"v_prediction"`` (SD 2.x 768); pass
    ``prediction_type="epsilon"`` for the 512-px SD 2.x base models. The UNet and text encoder come in
    as ``dtype`` (None: float32), the VAE in float32.

    As ``load_pretrained``: the three models are built on the meta device and every key and shape of
    the file (a safetensors file's header) is checked against them before any weight is read.
    """
    from sdlearn import schedulers
    from sdlearn.clip import CLIPTextEncoder
    from sdlearn.tokenizer import CLIPTokenizer
    from sdlearn.unet import UNet
    from sdlearn.vae import VAE

    dtype = check_dtype(dtype)
    path = Path(path)
    header = load_file(path, allow_pickle=allow_pickle, meta=True)  # keys and shapes (pickles: everything)
    try:
        version = version or detect_version(header)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    if version not in SD_CONFIGS:
        raise ValueError(f"version must be one of {sorted(SD_CONFIGS)} (got {version!r})")
    configs = SD_CONFIGS[version] if configs is None else configs

    def split(state_dict: StateDict) -> dict[str, StateDict]:
        try:
            return original_to_diffusers(state_dict, configs["unet"], configs["vae"], configs["text_encoder"])
        except ValueError as err:
            raise ValueError(f"{path} is not an SD {version} checkpoint: {err}") from err

    parts = split(header)  # keys no table row covers are refused here, before any model is built
    classes = {"unet": UNet, "vae": VAE, "text_encoder": CLIPTextEncoder}
    modules = {name: build_on_meta(klass, configs[name], f"configs[{name!r}]") for name, klass in classes.items()}
    reports = {name: check_state_dict(modules[name], match_text_model_prefix(parts[name], modules[name]))
               for name in modules}
    misfits = "\n".join(f"{name}:\n{report}" for name, report in reports.items() if not report.fits)
    if misfits:
        raise ValueError(f"{path} does not fit the SD {version} architecture:\n{misfits}")
    if any(v.is_meta for v in header.values()):  # checked: now read the weights
        parts = split(load_file(path, allow_pickle=allow_pickle))
    del header
    for name, module in modules.items():
        part = match_text_model_prefix(parts.pop(name), module)
        materialise(module, part, torch.float32 if name == "vae" else dtype)
    scheduler_config = dict(configs["scheduler"])
    if prediction_type is not None:
        scheduler_config["prediction_type"] = prediction_type
    tokenizer = CLIPTokenizer()
    if version == "v2":
        tokenizer.pad_id = 0  # SD 2 pads prompts with "!" (id 0), SD 1 with <|endoftext|>
    return cls(modules["unet"], modules["vae"], modules["text_encoder"], tokenizer,
               schedulers.DPMSolverPP.from_config(scheduler_config))
