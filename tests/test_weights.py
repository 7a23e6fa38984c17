"""sdlearn.weights: safe loading, the key check, and the CompVis <-> diffusers conversion.

The reference is diffusers' own single-file loader (``StableDiffusionPipeline.from_single_file`` with
a local config folder, which works offline): a checkpoint that we write in the original layout must
load through it into exactly the weights we started from, and what we read from an original file
must equal what diffusers reads from it. Models are SD 1.5 / SD 2.1 architectures at reduced width;
the full-size key layouts are checked on the meta device (shapes only, no memory).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import single_file_utils as ref
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdlearn import weights as W

# Reduced SD 1.5 / SD 2.1 architectures: three UNet levels (attention in the first two, as SD has in
# its first three of four), two VAE levels, two text layers. Everything else as the real configs.
UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [32, 64],
       "layers_per_block": 2, "down_block_types": ["DownEncoderBlock2D"] * 2,
       "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 32, "sample_size": 32}
TEXT = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2,
        "pad_token_id": 1}
CONFIGS = {
    "v1": {"unet": {**UNET, "cross_attention_dim": 32, "attention_head_dim": 8},
           "vae": VAE, "text_encoder": {**TEXT, "hidden_act": "quick_gelu"}},
    "v2": {"unet": {**UNET, "cross_attention_dim": 32, "attention_head_dim": [2, 4, 4],
                    "use_linear_projection": True, "upcast_attention": True},
           "vae": VAE, "text_encoder": {**TEXT, "hidden_act": "gelu"}},
}
KIND = {"v1": "clip", "v2": "openclip"}


def build(version: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """diffusers/transformers models with every parameter random (norms too, so a swap would show)."""
    torch.manual_seed(seed)
    cfg = CONFIGS[version]
    models = {"unet": UNet2DConditionModel(**cfg["unet"]), "vae": AutoencoderKL(**cfg["vae"]),
              "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))}
    with torch.no_grad():
        for model in models.values():
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
    return {name: model.eval() for name, model in models.items()}


def outputs(models: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """One forward pass of each part on fixed inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 77, 32, generator=g)
    image = torch.randn(1, 3, 16, 16, generator=g)
    ids = torch.randint(0, 1000, (1, 77), generator=g)
    with torch.no_grad():
        return {"unet": models["unet"](x, 10, context).sample,
                "vae": models["vae"].decode(models["vae"].encode(image).latent_dist.mean).sample,
                "text_encoder": models["text_encoder"](ids).last_hidden_state}


def diffusers_folder(folder: Path, models: dict[str, torch.nn.Module]) -> Path:
    """A local diffusers folder (configs + weights): what from_single_file's ``config=`` reads offline."""
    for name, model in models.items():
        model.save_pretrained(folder / name)
    W.write_model_index(folder, scheduler="DDIMScheduler")
    return folder


def diffusers_single_file(path: Path, folder: Path) -> StableDiffusionPipeline:
    """diffusers' own single-file loader, offline: configs from ``folder``, weights from ``path``."""
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}))
    merges.write_text("#version: 0.2\n")
    return StableDiffusionPipeline.from_single_file(
        str(path), config=str(folder), local_files_only=True, tokenizer=CLIPTokenizer(str(vocab), str(merges)),
        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:10]
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module", params=["v1", "v2"])
def sd(request):
    version = request.param
    models = build(version)
    return version, models, {name: m.state_dict() for name, m in models.items()}


# ----------------------------------------------------------------------------- conversion
def test_round_trip_from_diffusers_is_exact(sd):
    version, _, parts = sd
    cfg = CONFIGS[version]
    original = W.diffusers_to_original(parts, cfg["unet"], cfg["vae"], KIND[version])
    back = W.original_to_diffusers(original, cfg["unet"], cfg["vae"], cfg["text_encoder"])
    for name in parts:
        assert_same_state(back[name], parts[name])
    # and original -> diffusers -> original gives the same file back
    assert_same_state(W.diffusers_to_original(back, cfg["unet"], cfg["vae"], KIND[version]), original)


@pytest.fixture(scope="module")
def single_file(sd, tmp_path_factory):
    """Our original-layout file of the ``sd`` models, and diffusers' single-file loader's pipeline from it."""
    version, models, parts = sd
    cfg = CONFIGS[version]
    original = W.diffusers_to_original(parts, cfg["unet"], cfg["vae"], KIND[version])
    assert W.detect_version(original) == version
    if version == "v2":  # real SD 2 files also hold OpenCLIP's projection and temperature: unused by SD
        original["cond_stage_model.model.text_projection"] = torch.randn(32, 16)
        original["cond_stage_model.model.logit_scale"] = torch.tensor(4.6)
    original["alphas_cumprod"] = torch.linspace(1, 0, 1000)  # the training schedule: ignored by both
    tmp = tmp_path_factory.mktemp(version)
    path = W.save_file(original, tmp / "sd.safetensors")
    return path, diffusers_single_file(path, diffusers_folder(tmp / "config", models))


def test_diffusers_single_file_loader_reads_what_we_write(sd, single_file):
    """We write an original-layout file; diffusers' loader must find exactly our weights in it, and the
    models it builds must compute what the models we started from compute."""
    version, models, parts = sd
    _, pipe = single_file
    theirs = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    for name in parts:
        assert_same_state(theirs[name].state_dict(), parts[name])
    # same weights, same code, same inputs: the same outputs up to float32 round-off. The weights are
    # bit-identical (above), but diffusers' single-file loader may lay the UNet out differently in
    # memory, which changes the order of float sums: 2.8e-7 seen on outputs of size ~0.2.
    mine, reference = outputs(models), outputs(theirs)
    for name in mine:
        torch.testing.assert_close(mine[name], reference[name], rtol=0, atol=1e-5, msg=name)


def test_we_read_what_diffusers_reads(sd, single_file):
    """Read the original-layout file both ways: our conversion gives diffusers' loader's state dicts,
    and they fit diffusers' modules key for key (so the models compute the same, as tested above)."""
    version, _, _ = sd
    cfg = CONFIGS[version]
    path, pipe = single_file
    loaded = W.original_to_diffusers(W.load_file(path), cfg["unet"], cfg["vae"], cfg["text_encoder"])
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        assert W.check_state_dict(module, loaded[name]).fits
        assert_same_state(loaded[name], module.state_dict())


def test_openclip_keeps_the_penultimate_layer_and_splits_qkv():
    """SD 2 runs OpenCLIP's 24-block tower to block 23: the extra block is dropped, and the fused
    in_proj (3d, d) splits into q, k, v (d, d) as diffusers splits it."""
    torch.manual_seed(0)
    d, blocks = 8, 3
    original = {"cond_stage_model.model.token_embedding.weight": torch.randn(50, d),
                "cond_stage_model.model.positional_embedding": torch.randn(77, d),
                "cond_stage_model.model.ln_final.weight": torch.randn(d),
                "cond_stage_model.model.ln_final.bias": torch.randn(d),
                "cond_stage_model.model.text_projection": torch.randn(d, d)}
    for i in range(blocks):
        p = f"cond_stage_model.model.transformer.resblocks.{i}."
        original.update({p + "attn.in_proj_weight": torch.randn(3 * d, d), p + "attn.in_proj_bias": torch.randn(3 * d),
                         p + "attn.out_proj.weight": torch.randn(d, d), p + "attn.out_proj.bias": torch.randn(d),
                         p + "ln_1.weight": torch.randn(d), p + "ln_1.bias": torch.randn(d),
                         p + "ln_2.weight": torch.randn(d), p + "ln_2.bias": torch.randn(d),
                         p + "mlp.c_fc.weight": torch.randn(4 * d, d), p + "mlp.c_fc.bias": torch.randn(4 * d),
                         p + "mlp.c_proj.weight": torch.randn(d, 4 * d), p + "mlp.c_proj.bias": torch.randn(d)})
    text = W._split_qkv(W._convert(
        {k.removeprefix("cond_stage_model.model."): v for k, v in original.items()
         if "resblocks.2." not in k and "text_projection" not in k}, W._openclip_table(blocks - 1), False, "text"))
    model = CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=d, intermediate_size=4 * d,
                                         num_hidden_layers=blocks - 1, num_attention_heads=2))
    reference = ref.convert_open_clip_checkpoint(model, original)  # keeps block 2: it only drops block 23
    reference = {k.removeprefix("text_model."): v for k, v in reference.items()
                 if "layers.2." not in k and k != "text_projection.weight"}
    assert_same_state(text, reference)
    # the same through the public function, with SD's unet/vae left out of the picture
    assert set(text) == set(model.state_dict())
    w = original["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(text["encoder.layers.1.self_attn.k_proj.weight"], w[d:2 * d])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_full_size_layouts_match_diffusers_and_the_real_files(version):
    """The full SD 1.5 / SD 2.1 architectures (shapes only, on the meta device): our original-layout
    keys convert back through diffusers' own converters to exactly the tensors we started from, and
    they include key names known from the released checkpoints."""
    cfg = W.SD_CONFIGS[version]
    with torch.device("meta"):
        models = {"unet": UNet2DConditionModel(**cfg["unet"]), "vae": AutoencoderKL(**cfg["vae"]),
                  "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))}
    parts = {name: m.state_dict() for name, m in models.items()}
    original = W.diffusers_to_original(parts, cfg["unet"], cfg["vae"], KIND[version])
    unet = ref.convert_ldm_unet_checkpoint(original, cfg["unet"])
    assert set(unet) == set(parts["unet"]) and all(unet[k] is parts["unet"][k] for k in unet)
    vae = ref.convert_ldm_vae_checkpoint(original, cfg["vae"])
    assert set(vae) == set(parts["vae"])
    assert all(vae[k].shape == parts["vae"][k].shape for k in vae)
    if version == "v1":
        text = ref.convert_ldm_clip_checkpoint(original)
        assert set(text) == {"text_model." + k for k in parts["text_encoder"]}
    else:  # diffusers' converter expects the real file's 24th block (which it drops) and projection
        assert len({k.split(".")[4] for k in original if ".resblocks." in k}) == 23
        real = dict(original)
        for k in [k for k in original if ".resblocks.22." in k]:
            real[k.replace(".resblocks.22.", ".resblocks.23.")] = original[k]
        real["cond_stage_model.model.text_projection"] = torch.empty(1024, 1024, device="meta")
        text = ref.convert_open_clip_checkpoint(models["text_encoder"], real)
        assert set(text) - {"text_projection.weight"} == {"text_model." + k for k in parts["text_encoder"]}
        assert set(W.original_to_diffusers(real, cfg["unet"], cfg["vae"], cfg["text_encoder"])["text_encoder"]) \
            == set(parts["text_encoder"])
    known = ["model.diffusion_model.input_blocks.3.0.op.weight", "model.diffusion_model.output_blocks.2.1.conv.weight",
             "model.diffusion_model.output_blocks.5.2.conv.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
             "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
             "first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.encoder.down.2.block.0.nin_shortcut.weight"]
    assert all(k in original for k in known), [k for k in known if k not in original]
    assert original["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert len([k for k in original if k.startswith("model.diffusion_model.")]) == len(parts["unet"]) == 686
    text_keys = {"v1": "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
                 "v2": "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"}
    assert text_keys[version] in original


def test_a_checkpoint_of_another_layout_is_refused(sd):
    version, _, parts = sd
    cfg = CONFIGS[version]
    original = W.diffusers_to_original(parts, cfg["unet"], cfg["vae"], KIND[version])
    two_levels = {**cfg["unet"], "block_out_channels": [32, 64], "down_block_types": UNET["down_block_types"][:2],
                  "up_block_types": UNET["up_block_types"][1:]}
    with pytest.raises(ValueError, match="unet: keys that the config's layout does not have"):
        W.original_to_diffusers(original, two_levels, cfg["vae"], cfg["text_encoder"])
    with pytest.raises(ValueError, match="no text encoder"):
        W.original_to_diffusers({k: v for k, v in original.items() if not k.startswith("cond_stage_model.")},
                                cfg["unet"], cfg["vae"], cfg["text_encoder"])
    with pytest.raises(ValueError, match="text_encoder must be 'clip'"):
        W.diffusers_to_original(parts, cfg["unet"], cfg["vae"], "t5")


# ----------------------------------------------------------------------------- load_into
def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_load_into_refuses_what_does_not_fit_and_changes_nothing():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**CONFIGS["v1"]["unet"])
    before = _snapshot(unet)
    good = {k: torch.randn_like(v) for k, v in before.items()}
    cases = {
        "wrong shapes": {**good, "conv_in.weight": torch.randn(32, 4, 1, 1)},
        "missing": {k: v for k, v in good.items() if k != "conv_out.bias"},
        "unexpected": {**good, "extra.weight": torch.zeros(3)},
    }
    for name, state_dict in cases.items():
        with pytest.raises(ValueError) as err:
            W.load_into(unet, state_dict)
        assert name in str(err.value), str(err.value)
        assert_same_state(unet.state_dict(), before)  # nothing half-loaded
    assert "conv_in.weight: got (32, 4, 1, 1), expected (32, 4, 3, 3)" in str(W.check_state_dict(unet, cases["wrong shapes"]))

    with pytest.raises(ValueError, match="wrong shapes"):  # strict=False never tolerates a wrong shape
        W.load_into(unet, cases["wrong shapes"], strict=False)
    assert_same_state(unet.state_dict(), before)
    report = W.load_into(unet, cases["missing"], strict=False)
    assert report.missing == ["conv_out.bias"] and not report.fits
    assert torch.equal(unet.conv_in.weight, good["conv_in.weight"])
    assert torch.equal(unet.conv_out.bias, before["conv_out.bias"])
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        W.load_into(good, good)


def test_load_into_casts_half_precision_weights():
    vae = AutoencoderKL(**VAE)
    half = {k: v.half() for k, v in vae.state_dict().items()}
    W.load_into(vae, half)
    assert vae.encoder.conv_in.weight.dtype == torch.float32
    assert torch.equal(vae.encoder.conv_in.weight, half["encoder.conv_in.weight"].float())


# ----------------------------------------------------------------------------- files
class Payload:
    """A pickle that, when unpickled, creates a file: stands in for any code an attacker wants run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_a_malicious_pickle_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": Payload(marker)}, path)

    with pytest.raises(ValueError, match="allow_pickle=True"):  # (a) no opt-in: refused before opening
        W.load_file(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights_only=True"):  # (b) opt-in: torch.load(weights_only=True) refuses
        W.load_file(path, allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(ValueError, match="allow_pickle=True"):  # a diffusers folder of .bin files likewise
        (tmp_path / "unet").mkdir()
        (tmp_path / "unet" / "config.json").write_text("{}")
        path.rename(tmp_path / "unet" / "diffusion_pytorch_model.bin")
        W.load_folder(tmp_path / "unet")
    assert not marker.exists()

    # the control: the payload is real -- an unguarded torch.load runs it
    torch.load(tmp_path / "unet" / "diffusion_pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_a_plain_pickle_loads_with_opt_in(tmp_path):
    state = {"a": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save({"state_dict": state, "global_step": 7}, tmp_path / "model.ckpt")
    assert_same_state(W.load_file(tmp_path / "model.ckpt", allow_pickle=True), state)
    with pytest.raises(ValueError, match="path must end in .safetensors"):
        W.load_file(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="sdlearn writes no pickles"):
        W.save_file(state, tmp_path / "model.ckpt")


def test_save_file_and_load_folder_round_trip(sd, tmp_path):
    version, models, parts = sd
    cfg = CONFIGS[version]
    # views that share memory (OpenCLIP's q, k, v split from one in_proj) are saved as separate tensors
    original = W.diffusers_to_original(parts, cfg["unet"], cfg["vae"], KIND[version])
    split = W.original_to_diffusers(original, cfg["unet"], cfg["vae"], cfg["text_encoder"])["text_encoder"]
    W.save_file(split, tmp_path / "text.safetensors")
    assert_same_state(W.load_file(tmp_path / "text.safetensors"), split)
    # a diffusers folder as diffusers and transformers write it
    folder = diffusers_folder(tmp_path / "sd", models)
    from sdlearn.clip import CLIPTextEncoder
    from sdlearn.unet import UNet
    from sdlearn.vae import VAE

    for name, klass in (("unet", UNet), ("vae", VAE), ("text_encoder", CLIPTextEncoder)):
        config, state_dict = W.load_folder(folder / name)
        assert_same_state(state_dict, parts[name])
        ours = klass.from_config(config)  # and into sdlearn's module, whatever its text-encoder key prefix
        assert W.load_into(ours, W.match_text_model_prefix(state_dict, ours)).fits
        assert_same_state(W.match_text_model_prefix(ours.state_dict(), models[name]), parts[name])
    # older transformers wrote text-encoder keys under "text_model."; they are read without it
    W.save_file({"text_model." + k: v for k, v in parts["text_encoder"].items()},
                folder / "text_encoder" / "model.safetensors")
    assert_same_state(W.load_folder(folder / "text_encoder")[1], parts["text_encoder"])


# ----------------------------------------------------------------------------- sdlearn's own modules
def test_single_file_into_sdlearn_modules_matches_diffusers(sd, single_file):
    """An original-layout file read by ``pipeline_from_single_file`` into sdlearn's UNet / VAE /
    CLIPTextEncoder computes what diffusers' single-file loader's models compute."""
    from sdlearn.pipeline import StableDiffusion

    version, _, _ = sd
    path, pipe = single_file
    configs = {**CONFIGS[version], "scheduler": W.SD_CONFIGS[version]["scheduler"]}
    ours = W.pipeline_from_single_file(StableDiffusion, path, configs=configs)
    assert ours.scheduler.config["prediction_type"] == {"v1": "epsilon", "v2": "v_prediction"}[version]
    assert ours.tokenizer.pad_id == {"v1": ours.tokenizer.end_id, "v2": 0}[version]

    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    image, ids = torch.randn(1, 3, 16, 16, generator=g), torch.randint(0, 1000, (1, 77), generator=g)
    with torch.no_grad():
        pairs = [(ours.unet(x, 10, context), pipe.unet(x, 10, context).sample),
                 (ours.vae.encode(image).mean, pipe.vae.encode(image).latent_dist.mean),
                 (ours.vae.decode(x), pipe.vae.decode(x).sample),
                 (ours.text_encoder(ids), pipe.text_encoder(ids).last_hidden_state)]
    for mine, theirs in pairs:
        # same float32 weights, same maths in a different order of operations: round-off only
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_pipeline_from_single_file_refuses_misfits_and_pickles(single_file, sd, tmp_path):
    from sdlearn.pipeline import StableDiffusion

    version, _, _ = sd
    path, _ = single_file
    wider_context = {**CONFIGS[version], "scheduler": {},
                     "unet": {**CONFIGS[version]["unet"], "cross_attention_dim": 48}}
    with pytest.raises(ValueError, match=r"does not fit the SD v\d architecture:\nunet:\n  wrong shapes"):
        W.pipeline_from_single_file(StableDiffusion, path, configs=wider_context)
    torch.save(W.load_file(path), tmp_path / "sd.ckpt")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        W.pipeline_from_single_file(StableDiffusion, tmp_path / "sd.ckpt")
    # with the opt-in, the same weights come through torch.load(weights_only=True)
    configs = {**CONFIGS[version], "scheduler": W.SD_CONFIGS[version]["scheduler"]}
    ours = W.pipeline_from_single_file(StableDiffusion, tmp_path / "sd.ckpt", allow_pickle=True, configs=configs)
    assert torch.equal(ours.unet.conv_in.weight, W.load_file(path)["model.diffusion_model.input_blocks.0.0.weight"])


def cheap_random(shapes: dict[str, torch.Size], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float16 tensors of the given shapes, cheaply: slices of one random vector of prime length
    at shifting offsets (as tests/test_unet.py's ``pair_full_size``), so no two tensors coincide.
    Drawing the full-size UNet's 860M numbers one by one takes longer than the test itself."""
    pool = torch.randn(1_000_003, generator=torch.Generator().manual_seed(seed)).half()
    out, offset = {}, 0
    for key, shape in shapes.items():
        n = shape.numel()
        out[key] = pool.roll(-(offset % pool.numel())).repeat(n // pool.numel() + 1)[:n].view(shape).clone()
        offset += 7919 + n
    return out


def test_full_size_sd15_unet_through_diffusers_single_file_loader(tmp_path):
    """The real-size SD 1.5 UNet (859.5M random float16 weights, ``cheap_random``) written in the original layout loads
    bit-exact through diffusers' ``UNet2DConditionModel.from_single_file``, and back through ours."""
    cfg = W.SD_CONFIGS["v1"]["unet"]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UNet2DConditionModel(**cfg).state_dict().items()}
    unet = cheap_random(shapes)
    original = {W.UNET_PREFIX + k: v for k, v in W._convert(unet, W._unet_table(cfg), True, "unet").items()}
    path = W.save_file(original, tmp_path / "unet.safetensors")
    del original
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **cfg}))
    theirs = UNet2DConditionModel.from_single_file(str(path), config=str(tmp_path), torch_dtype=torch.float16,
                                                   local_files_only=True)
    assert_same_state(theirs.state_dict(), unet)
    del theirs
    back = W._convert(W._component(W.load_file(path), W.UNET_PREFIX), W._unet_table(cfg), False, "unet")
    assert_same_state(back, unet)
