"""Bad inputs to sdlearn's loaders fail early, with the right exception, naming the file or the key.

``BAD_INPUTS`` is the table: corrupt, truncated and empty files made in tmp_path, folders that lack a
part, configs with bad values, bad paths and bad dtype arguments. Each row is (id, exception type,
a string the message must contain, the call); ``{tmp}`` in that string is the case's own tmp_path.
Every case starts from a small *valid* pipeline folder (copied into its tmp_path) and breaks one
thing, and ``test_the_valid_inputs_load`` checks that the unbroken folder loads, so each error comes
from the one broken thing. No case touches the network: hub downloads are replaced by a failure.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from sdlearn import weights as W
from sdlearn.clip import CLIPTextEncoder
from sdlearn.pipeline import TINY_MODEL_DIR, StableDiffusion
from sdlearn.unet import UNet
from sdlearn.vae import VAE

UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 16,
        "attention_head_dim": 2, "norm_num_groups": 8}
VAE_CONFIG = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
              "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 4,
              "layers_per_block": 1, "sample_size": 16}
TEXT = {"vocab_size": 49408, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 77}
PARTS = {"unet": (UNet, UNET, "diffusion_pytorch_model.safetensors"),
         "vae": (VAE, VAE_CONFIG, "diffusion_pytorch_model.safetensors"),
         "text_encoder": (CLIPTextEncoder, TEXT, "model.safetensors")}


@pytest.fixture(scope="module")
def valid_folder(tmp_path_factory) -> Path:
    """A small diffusers-layout pipeline folder with random weights (the tiny model's tokenizer/scheduler)."""
    folder = tmp_path_factory.mktemp("valid")
    torch.manual_seed(0)
    for part, (cls, config, weights_name) in PARTS.items():
        (folder / part).mkdir()
        (folder / part / "config.json").write_text(json.dumps(config))
        W.save_file(cls.from_config(config), folder / part / weights_name)
    for part in ("tokenizer", "scheduler"):
        shutil.copytree(TINY_MODEL_DIR / part, folder / part)
    return folder


class Tmp:
    """One case's scratch space: a fresh copy of the valid folder, and helpers to break it."""

    def __init__(self, path: Path, valid: Path):
        self.path = path
        self.sd = path / "sd"
        shutil.copytree(valid, self.sd)

    def file(self, name: str, data: bytes) -> Path:
        (self.path / name).write_bytes(data)
        return self.path / name

    def config(self, part: str, **changes: Any) -> Path:
        """The copy's ``part/`` folder with config.json values changed."""
        path = self.sd / part / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
        return self.sd / part

    def weights(self, part: str, edit: Callable[[dict], dict]) -> Path:
        """The copy's ``part/`` folder with its state dict passed through ``edit``."""
        path = self.sd / part / PARTS[part][2]
        W.save_file(edit(W.load_file(path)), path)
        return self.sd / part

    def cut(self, path: Path, keep: float = 0.5) -> Path:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path

    def single_file(self, name: str, state_dict: dict[str, torch.Tensor]) -> Path:
        return W.save_file(state_dict, self.path / name)


def _pickle(t: Tmp, name: str, obj: Any) -> Path:
    torch.save(obj, t.path / name)
    return t.path / name


UNET_KEY = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"  # (16, cross_attention_dim)
SD_UNKNOWN = {"model.diffusion_model.not_a_layer.weight": torch.zeros(2),  # SD prefixes, unknown names
              "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)}
SD_BOGUS = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2),  # right prefixes, nothing else
            "first_stage_model.encoder.conv_in.weight": torch.zeros(2),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)}


def _bogus_sd_file(t: Tmp) -> Path:
    return t.single_file("bogus.safetensors", SD_UNKNOWN)


BAD_INPUTS: list[tuple[str, type[Exception], str, Callable[[Tmp], Any]]] = [
    # ------------------------------------------------------------------ files
    ("safetensors-garbage", ValueError, "{tmp}/bad.safetensors",
     lambda t: W.load_file(t.file("bad.safetensors", b"not a safetensors file" * 4))),
    ("safetensors-empty", ValueError, "{tmp}/empty.safetensors",
     lambda t: W.load_file(t.file("empty.safetensors", b""))),
    ("safetensors-truncated", ValueError, "{tmp}/sd/unet/diffusion_pytorch_model.safetensors",
     lambda t: W.load_file(t.cut(t.sd / "unet" / "diffusion_pytorch_model.safetensors"))),
    ("safetensors-truncated-header-only", ValueError, "diffusion_pytorch_model.safetensors",
     lambda t: W.load_file(t.cut(t.sd / "vae" / "diffusion_pytorch_model.safetensors", 0.99), meta=True)),
    ("ckpt-empty", ValueError, "{tmp}/empty.ckpt",
     lambda t: W.load_file(t.file("empty.ckpt", b""), allow_pickle=True)),
    ("ckpt-garbage", ValueError, "{tmp}/garbage.ckpt",
     lambda t: W.load_file(t.file("garbage.ckpt", b"garbage, not a pickle"), allow_pickle=True)),
    ("pt-truncated-zip", ValueError, "{tmp}/cut.pt",
     lambda t: W.load_file(t.cut(_pickle(t, "cut.pt", {"w": torch.ones(1000)})), allow_pickle=True)),
    ("ckpt-not-a-state-dict", ValueError, "{tmp}/list.ckpt",
     lambda t: W.load_file(_pickle(t, "list.ckpt", [torch.ones(2)]), allow_pickle=True)),
    ("ckpt-without-opt-in", ValueError, "{tmp}/model.ckpt",
     lambda t: W.load_file(_pickle(t, "model.ckpt", {"w": torch.ones(2)}))),
    ("file-missing", FileNotFoundError, "{tmp}/missing.safetensors",
     lambda t: W.load_file(t.path / "missing.safetensors")),
    ("file-suffix", ValueError, "model.npz", lambda t: W.load_file(t.file("model.npz", b"x"))),
    ("path-not-a-path", TypeError, "path", lambda t: W.load_file(3)),
    # ------------------------------------------------------------------ single files
    ("single-file-garbage", ValueError, "{tmp}/sd.safetensors",
     lambda t: StableDiffusion.from_single_file(t.file("sd.safetensors", b"\x00" * 400), device="cpu")),
    ("single-file-bogus-sd-keys", ValueError, "does not have: not_a_layer.weight",
     lambda t: StableDiffusion.from_single_file(_bogus_sd_file(t), device="cpu")),
    ("single-file-bogus-names-file", ValueError, "{tmp}/bogus.safetensors",
     lambda t: StableDiffusion.from_single_file(_bogus_sd_file(t), device="cpu")),
    ("single-file-wrong-shapes", ValueError, "conv_in.weight: got (2,), expected (320, 4, 3, 3)",
     lambda t: StableDiffusion.from_single_file(t.single_file("shapes.safetensors", {
         "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2),
         "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
         "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(768)}), device="cpu")),
    ("single-file-no-text-encoder", ValueError, "{tmp}/unet_only.safetensors",
     lambda t: StableDiffusion.from_single_file(t.single_file("unet_only.safetensors", {
         "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}), device="cpu")),
    ("single-file-missing", FileNotFoundError, "{tmp}/nowhere.safetensors",
     lambda t: StableDiffusion.from_single_file(t.path / "nowhere.safetensors", device="cpu")),
    ("single-file-pickle-without-opt-in", ValueError, "{tmp}/sd.ckpt",
     lambda t: StableDiffusion.from_single_file(_pickle(t, "sd.ckpt", SD_BOGUS), device="cpu")),
    ("single-file-empty-ckpt", ValueError, "{tmp}/sd.ckpt",
     lambda t: StableDiffusion.from_single_file(t.file("sd.ckpt", b""), allow_pickle=True, device="cpu")),
    ("single-file-version", ValueError, "version",
     lambda t: W.pipeline_from_single_file(StableDiffusion, _bogus_sd_file(t), version="v3")),
    # ------------------------------------------------------------------ component folders
    ("config-invalid-json", ValueError, "{tmp}/sd/unet/config.json",
     lambda t: UNet.from_pretrained(t.file("sd/unet/config.json", b'{"in_channels": 4,').parent)),
    ("config-empty", ValueError, "{tmp}/sd/text_encoder/config.json",
     lambda t: CLIPTextEncoder.from_pretrained(t.file("sd/text_encoder/config.json", b"").parent)),
    ("config-not-an-object", ValueError, "{tmp}/sd/vae/config.json",
     lambda t: VAE.from_pretrained(t.file("sd/vae/config.json", b"[1, 2]").parent)),
    ("config-not-utf8", ValueError, "{tmp}/sd/vae/config.json",
     lambda t: VAE.from_pretrained(t.file("sd/vae/config.json", b"\xff\xfe{}").parent)),
    ("config-bad-value-names-file", ValueError, "{tmp}/sd/unet/config.json",
     lambda t: UNet.from_pretrained(t.config("unet", norm_num_groups=7))),
    ("config-bad-value-names-key", ValueError, "norm_num_groups",
     lambda t: UNet.from_pretrained(t.config("unet", norm_num_groups=7))),
    ("config-missing", ValueError, "{tmp}/sd/text_encoder",
     lambda t: (t.sd / "text_encoder" / "config.json").unlink() or CLIPTextEncoder.from_pretrained(t.sd / "text_encoder")),
    ("config-missing-hint-subfolder", ValueError, "subfolder='text_encoder'",
     lambda t: CLIPTextEncoder.from_pretrained(t.sd)),
    ("weights-missing", ValueError, "diffusion_pytorch_model.safetensors",
     lambda t: (t.sd / "vae" / "diffusion_pytorch_model.safetensors").unlink() or VAE.from_pretrained(t.sd / "vae")),
    ("weights-only-pickles", ValueError, "allow_pickle=True",
     lambda t: (t.sd / "unet" / "diffusion_pytorch_model.safetensors").rename(t.sd / "unet" / "diffusion_pytorch_model.bin")
     and UNet.from_pretrained(t.sd / "unet")),
    ("weights-corrupt", ValueError, "{tmp}/sd/vae/diffusion_pytorch_model.safetensors",
     lambda t: t.cut(t.sd / "vae" / "diffusion_pytorch_model.safetensors", 0.3) and VAE.from_pretrained(t.sd / "vae")),
    ("weights-wrong-shape", ValueError, UNET_KEY + ": got (16, 24), expected (16, 16)",
     lambda t: UNet.from_pretrained(t.weights("unet", lambda sd: {**sd, UNET_KEY: torch.zeros(16, 24)}))),
    ("weights-wrong-shape-names-file", ValueError, "{tmp}/sd/unet/diffusion_pytorch_model.safetensors",
     lambda t: UNet.from_pretrained(t.config("unet", cross_attention_dim=24))),
    ("weights-missing-key", ValueError, "conv_out.bias",
     lambda t: UNet.from_pretrained(t.weights("unet", lambda sd: {k: v for k, v in sd.items() if k != "conv_out.bias"}))),
    ("weights-unexpected-key", ValueError, "encoder.extra.weight",
     lambda t: VAE.from_pretrained(t.weights("vae", lambda sd: {**sd, "encoder.extra.weight": torch.zeros(1)}))),
    ("weights-of-another-model", ValueError, "{tmp}/sd/vae/diffusion_pytorch_model.safetensors does not fit VAE",
     lambda t: shutil.copy(t.sd / "text_encoder" / "model.safetensors", t.sd / "vae" / "diffusion_pytorch_model.safetensors")
     and VAE.from_pretrained(t.sd / "vae")),
    ("folder-missing", ValueError, "{tmp}/nowhere", lambda t: VAE.from_pretrained(t.path / "nowhere")),
    ("subfolder-missing", ValueError, "{tmp}/sd/unet2", lambda t: UNet.from_pretrained(t.sd, subfolder="unet2")),
    ("folder-not-a-path", TypeError, "folder", lambda t: UNet.from_pretrained(None)),
    # ------------------------------------------------------------------ dtype arguments
    ("dtype-string", TypeError, "dtype", lambda t: UNet.from_pretrained(t.sd / "unet", dtype="float16")),
    ("dtype-integer", ValueError, "dtype", lambda t: VAE.from_pretrained(t.sd / "vae", dtype=torch.int8)),
    ("dtype-python-type", TypeError, "dtype", lambda t: CLIPTextEncoder.from_pretrained(t.sd / "text_encoder", dtype=float)),
    ("dtype-pipeline", TypeError, "dtype", lambda t: StableDiffusion.from_pretrained(t.sd, device="cpu", dtype="fp16")),
    ("dtype-single-file", ValueError, "dtype",
     lambda t: StableDiffusion.from_single_file(_bogus_sd_file(t), device="cpu", dtype=torch.long)),
    # ------------------------------------------------------------------ config values (from_config)
    ("unet-groups-do-not-divide", ValueError, "norm_num_groups", lambda t: UNet.from_config({**UNET, "norm_num_groups": 7})),
    ("unet-negative-channels", ValueError, "block_out_channels",
     lambda t: UNet.from_config({**UNET, "block_out_channels": [-16, 32]})),
    ("unet-no-channels", ValueError, "block_out_channels", lambda t: UNet.from_config({**UNET, "block_out_channels": []})),
    ("unet-zero-in-channels", ValueError, "in_channels", lambda t: UNet.from_config({**UNET, "in_channels": 0})),
    ("unet-layers-a-string", TypeError, "layers_per_block", lambda t: UNet.from_config({**UNET, "layers_per_block": "two"})),
    ("unet-context-a-float", TypeError, "cross_attention_dim",
     lambda t: UNet.from_config({**UNET, "cross_attention_dim": 768.0})),
    ("unet-context-a-list", TypeError, "cross_attention_dim",
     lambda t: UNet.from_config({**UNET, "cross_attention_dim": [16, 16]})),
    ("unet-unknown-block", ValueError, "down_block_types",
     lambda t: UNet.from_config({**UNET, "down_block_types": ["CrossAttnDownBlock2D", "SkipDownBlock2D"]})),
    ("unet-heads-do-not-divide", ValueError, "attention_head_dim", lambda t: UNet.from_config({**UNET, "attention_head_dim": 3})),
    ("unet-heads-per-block-length", ValueError, "attention_head_dim",
     lambda t: UNet.from_config({**UNET, "attention_head_dim": [2, 2, 2]})),
    ("unet-flag-a-string", TypeError, "use_linear_projection",
     lambda t: UNet.from_config({**UNET, "use_linear_projection": "yes"})),
    ("unet-negative-eps", ValueError, "norm_eps", lambda t: UNet.from_config({**UNET, "norm_eps": -1e-5})),
    ("unet-bool-as-int", TypeError, "out_channels", lambda t: UNet.from_config({**UNET, "out_channels": True})),
    ("unet-config-a-string", TypeError, "config", lambda t: UNet.from_config("unet/config.json")),
    ("vae-scaling-a-string", TypeError, "scaling_factor", lambda t: VAE.from_config({**VAE_CONFIG, "scaling_factor": "abc"})),
    ("vae-negative-latents", ValueError, "latent_channels", lambda t: VAE.from_config({**VAE_CONFIG, "latent_channels": -4})),
    ("vae-groups-do-not-divide", ValueError, "norm_num_groups", lambda t: VAE.from_config({**VAE_CONFIG, "norm_num_groups": 7})),
    ("vae-zero-layers", ValueError, "layers_per_block", lambda t: VAE.from_config({**VAE_CONFIG, "layers_per_block": 0})),
    ("vae-unknown-block", ValueError, "up_block_types",
     lambda t: VAE.from_config({**VAE_CONFIG, "up_block_types": ["AttnUpDecoderBlock2D"] * 2})),
    ("vae-infinite-scaling", ValueError, "scaling_factor",
     lambda t: VAE.from_config({**VAE_CONFIG, "scaling_factor": float("inf")})),
    ("clip-heads-do-not-divide", ValueError, "num_attention_heads",
     lambda t: CLIPTextEncoder.from_config({**TEXT, "hidden_size": 18, "num_attention_heads": 4})),
    ("clip-layers-a-string", TypeError, "num_hidden_layers",
     lambda t: CLIPTextEncoder.from_config({**TEXT, "num_hidden_layers": "12"})),
    ("clip-unknown-activation", ValueError, "hidden_act", lambda t: CLIPTextEncoder.from_config({**TEXT, "hidden_act": "relu6"})),
    ("clip-nan-eps", ValueError, "layer_norm_eps", lambda t: CLIPTextEncoder.from_config({**TEXT, "layer_norm_eps": float("nan")})),
    ("clip-zero-positions", ValueError, "max_position_embeddings",
     lambda t: CLIPTextEncoder.from_config({**TEXT, "max_position_embeddings": 0})),
    # ------------------------------------------------------------------ pipeline paths
    ("pipeline-typo-offline", ValueError, "'models/typo' is neither a local folder",
     lambda t: StableDiffusion.from_pretrained("models/typo", device="cpu")),
    ("pipeline-invalid-hub-id", ValueError, "./models/typo",
     lambda t: _online() or StableDiffusion.from_pretrained("./models/typo", device="cpu")),
    ("pipeline-invalid-hub-id-says-so", ValueError, "valid hub id",
     lambda t: _online() or StableDiffusion.from_pretrained("models/sd/typo", device="cpu")),
    ("pipeline-a-file", ValueError, "{tmp}/sd/model_index.json",
     lambda t: StableDiffusion.from_pretrained(t.file("sd/model_index.json", b"{}"), device="cpu")),
    ("pipeline-part-missing", ValueError, "vae/",
     lambda t: shutil.rmtree(t.sd / "vae") or StableDiffusion.from_pretrained(t.sd, device="cpu")),
    ("pipeline-not-a-path", TypeError, "path_or_id", lambda t: StableDiffusion.from_pretrained(7, device="cpu")),
    ("pipeline-scheduler-invalid-json", ValueError, "{tmp}/sd/scheduler/scheduler_config.json",
     lambda t: StableDiffusion.from_pretrained(t.file("sd/scheduler/scheduler_config.json", b"{").parents[1], device="cpu")),
    ("pipeline-tokenizer-invalid-json", ValueError, "{tmp}/sd/tokenizer/special_tokens_map.json",
     lambda t: StableDiffusion.from_pretrained(t.file("sd/tokenizer/special_tokens_map.json", b"[").parents[1],
                                               device="cpu")),
    ("pipeline-unet-bad-config", ValueError, "{tmp}/sd/unet/config.json",
     lambda t: StableDiffusion.from_pretrained(t.config("unet", layers_per_block=-1).parent, device="cpu")),
]


def _online() -> None:
    """Pretend the hub is reachable (HF_HUB_OFFLINE unset); the autouse fixture keeps downloads failing."""
    import os

    os.environ.pop("HF_HUB_OFFLINE", None)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Offline, and any hub download is a test failure (cases must be refused before one starts)."""
    import huggingface_hub

    def download(*args, **kwargs):
        raise AssertionError("a loading error case tried to download from the hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)


def test_the_table_is_large_and_its_ids_unique():
    ids = [case[0] for case in BAD_INPUTS]
    assert len(ids) >= 35 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("name,exception,needle,call", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_naming_the_file_or_key(name, exception, needle, call, tmp_path, valid_folder):
    with pytest.raises(exception) as err:
        call(Tmp(tmp_path, valid_folder))
    assert type(err.value) is exception, type(err.value)
    assert needle.format(tmp=tmp_path) in str(err.value), str(err.value)


def test_the_valid_inputs_load(tmp_path, valid_folder):
    """The folder every case breaks loads: so each case fails because of what it broke."""
    t = Tmp(tmp_path, valid_folder)
    pipe = StableDiffusion.from_pretrained(t.sd, device="cpu")
    for part, (cls, config, weights_name) in PARTS.items():
        model = getattr(pipe, part)
        assert isinstance(model, cls) and next(model.parameters()).dtype == torch.float32
        saved = W.match_text_model_prefix(W.load_file(t.sd / part / weights_name), model)
        assert W.check_state_dict(model, saved).fits
        assert all(torch.equal(model.state_dict()[key], value) for key, value in saved.items())
    half = UNet.from_pretrained(t.sd, torch.float16, subfolder="unet")
    assert half.dtype == torch.float16 and not any(p.is_meta for p in half.parameters())


def test_misfits_are_refused_before_any_weight_is_read(tmp_path, valid_folder, monkeypatch):
    """Keys and shapes come from the safetensors header: a file that does not fit is refused without
    its tensors ever being loaded (the full-size SD architecture is built on the meta device only)."""
    import safetensors.torch

    t = Tmp(tmp_path, valid_folder)
    misfit = t.weights("unet", lambda sd: {**sd, UNET_KEY: torch.zeros(16, 24)})
    bogus = _bogus_sd_file(t)

    def no_read(*args, **kwargs):
        raise AssertionError("weights were read before the keys were checked")

    monkeypatch.setattr(safetensors.torch, "load_file", no_read)
    with pytest.raises(ValueError, match="wrong shapes"):
        UNet.from_pretrained(misfit)
    with pytest.raises(ValueError, match="does not fit the SD v1 architecture"):
        StableDiffusion.from_single_file(t.single_file("shapes.safetensors", SD_BOGUS), device="cpu")
    with pytest.raises(ValueError, match="keys that the config's layout does not have"):
        StableDiffusion.from_single_file(bogus, device="cpu")


class Payload:
    """A pickle that, when unpickled, creates a file: stands in for any code an attacker wants run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_malicious_pickle_never_runs_through_from_single_file(tmp_path):
    path = tmp_path / "sd.ckpt"
    torch.save({"state_dict": dict(SD_BOGUS), "payload": Payload(tmp_path / "pwned")}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        StableDiffusion.from_single_file(path, device="cpu")
    with pytest.raises(ValueError, match="weights_only=True"):
        StableDiffusion.from_single_file(path, allow_pickle=True, device="cpu")
    assert not (tmp_path / "pwned").exists()
    torch.load(path, weights_only=False)  # the control: unguarded, the payload runs
    assert (tmp_path / "pwned").exists()
