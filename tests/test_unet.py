"""sdlearn.unet.UNet equals diffusers' UNet2DConditionModel on the same random weights (SD v1 and v2)."""
import gc
import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding

from sdlearn.attention import capture_attention
from sdlearn.configs import SD15_UNET, SD21_UNET
from sdlearn.pipeline import TINY_MODEL_DIR
from sdlearn.unet import UNet, timestep_embedding

# Tolerance. Both models run the same float32 operations in the same order, so on one machine the
# outputs agree bit for bit (observed max |diff| = 0). Across CPUs/BLAS builds the kernels may sum in a
# different order: each of the ~100 layers then adds a few ulps (eps = 1.2e-7) of its output, and
# GroupNorm/softmax can amplify that ~10-100x over depth. 1e-4 of the output scale leaves margin for
# that while any real mistake (a swapped sin/cos, a wrong head split or scale, a missing residual)
# moves the output by O(1).
RTOL_SCALE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def assert_same(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= RTOL_SCALE * ref.abs().max().item(), f"max |diff| {err:.3g} vs scale {ref.abs().max():.3g}"


def pair(config: dict, seed: int = 0) -> tuple[UNet, UNet2DConditionModel]:
    """Ours with random weights, and diffusers' on the very same tensors (no second copy)."""
    torch.manual_seed(seed)
    ours = UNet.from_config(config).eval()
    with torch.device("meta"):
        ref = UNet2DConditionModel.from_config(config)
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return ours, ref.eval()


def pair_full_size(config: dict, seed: int = 0) -> tuple[UNet, UNet2DConditionModel]:
    """As ``pair`` for the 860M-parameter configs, with cheaper random weights: slices of one random
    vector of prime length (so no two tensors, nor a tensor and its transpose, coincide), scaled by
    1/sqrt(fan_in) like PyTorch's default init; norms' scales near 1. Drawing 860M numbers one by one
    takes longer than the comparison itself."""
    with torch.device("meta"):
        ours, ref = UNet.from_config(config), UNet2DConditionModel.from_config(config)
    pool = torch.randn(1_000_003, generator=torch.Generator().manual_seed(seed))
    state, offset = {}, 0
    for name, meta in ours.state_dict().items():
        n = meta.numel()
        start = offset % pool.numel()
        values = pool.roll(-start).repeat(n // pool.numel() + 1)[:n].view(meta.shape)  # a fresh buffer
        offset += 7919 + n
        if meta.ndim > 1:
            values.div_(meta[0].numel() ** 0.5)                # weights: std 1/sqrt(fan_in)
        elif "norm" in name and name.endswith("weight"):
            values.mul_(0.1).add_(1)                           # GroupNorm/LayerNorm scales
        else:
            values.mul_(0.02)                                  # biases
        state[name] = values
    ours.load_state_dict(state, strict=True, assign=True)
    ref.load_state_dict(state, strict=True, assign=True)
    return ours.eval(), ref.eval()


SMALL = dict(sample_size=16, block_out_channels=[32, 64, 64], layers_per_block=1, norm_num_groups=8,
             down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
REDUCED = {
    # v1 family: conv projections, the same head count everywhere, 2 resnets per level
    "v1": {**SMALL, "cross_attention_dim": 48, "attention_head_dim": 4, "layers_per_block": 2},
    # v2 family: linear projections, per-block head counts, upcast attention, wider context
    "v2": {**SMALL, "cross_attention_dim": 40, "attention_head_dim": [2, 4, 8], "use_linear_projection": True,
           "upcast_attention": True},
    # inpainting: 9 input channels; two levels; two transformer layers; flipped sin/cos off + freq shift
    "inpaint": dict(in_channels=9, block_out_channels=[32, 48], norm_num_groups=16, layers_per_block=[1, 2],
                    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], flip_sin_to_cos=False, freq_shift=1,
                    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=24,
                    attention_head_dim=2, transformer_layers_per_block=2),
    # attention at every level including the lowest, four levels, output channels != input channels
    "all_attn": dict(block_out_channels=[16, 32, 32, 64], norm_num_groups=8, out_channels=8,
                     down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], mid_block_scale_factor=2,
                     up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=16,
                     attention_head_dim=[1, 2, 2, 4], layers_per_block=1),
}


@pytest.mark.parametrize("name", list(REDUCED))
def test_reduced_configs_match_diffusers(name):
    config = REDUCED[name]
    ours, ref = pair(config)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    B, H = 3, 8
    x = torch.randn(B, ref.config.in_channels, H, H, generator=g)
    context = torch.randn(B, 7, ref.config.cross_attention_dim, generator=g)
    t = torch.tensor([0, 500, 999])                          # a batch of mixed timesteps
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=context).sample
        assert_same(ours(x, t, context), expected)
        ours_slow = [m for m in ours.modules() if hasattr(m, "fast")]
        for m in ours_slow:
            m.fast = False                                   # the written-out attention formula
        assert_same(ours(x, t, context), expected)


TINY = json.loads((TINY_MODEL_DIR / "unet" / "config.json").read_text())  # the bundled model's UNet


@pytest.mark.parametrize("name, size", [(name, (65, 75)) for name in REDUCED]  # a 520x600 image's latent
                         + [("v2", (16, 13)), ("all_attn", (3, 5)), ("tiny", (9, 7))])
def test_sides_not_multiples_of_the_downsampling_match_diffusers(name, size):
    """Any latent side works, as in diffusers: a stride-2 conv halves n to ceil(n/2), and each upsampler
    is told its skip's size (diffusers' upsample_size) instead of doubling. Same tolerance as above."""
    config = TINY if name == "tiny" else REDUCED[name]
    ours, ref = pair(config)
    g = torch.Generator().manual_seed(2)
    B = 1 if size[0] * size[1] > 1000 else 2                  # 65x75 = 4875 tokens: one image keeps it quick
    x = torch.randn(B, ref.config.in_channels, *size, generator=g)
    context = torch.randn(B, 5, ref.config.cross_attention_dim, generator=g)
    t = torch.tensor([10, 900][:B])
    levels = len(ref.config.block_out_channels) - 1
    assert any(side % 2**levels for side in size)             # really a size that needs upsample_size
    with torch.no_grad():
        expected = ref(x, t, encoder_hidden_states=context).sample
        assert expected.shape[-2:] == size
        assert_same(ours(x, t, context), expected)


def test_upsamplers_get_the_skip_sizes():
    """65 -> 33 -> 17 on the way down (ceil halving), so the upsamplers must give 33 and 65, not 34 and 66."""
    with torch.device("meta"):                                # shapes only, no arithmetic
        ours = UNet.from_config(REDUCED["v1"])
    seen = []
    hooks = [b.upsamplers[0].register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape[-2:])))
             for b in ours.up_blocks if b.upsamplers is not None]
    with torch.no_grad(), torch.device("meta"):
        ours(torch.empty(1, 4, 65, 75), torch.tensor([1]), torch.empty(1, 3, 48))
        ours(torch.empty(1, 4, 16, 8), torch.tensor([1]), torch.empty(1, 3, 48))  # multiples of 4: plain doubling
    for h in hooks:
        h.remove()
    assert seen == [(33, 38), (65, 75), (8, 4), (16, 8)]


def test_gradients_match_diffusers():
    ours, ref = pair(REDUCED["v2"])
    ref2 = UNet2DConditionModel.from_config(REDUCED["v2"])           # separate parameters for separate .grad
    ref2.load_state_dict(ref.state_dict())
    x, context, t = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 40), torch.tensor([3, 700])
    ours(x, t, context).square().mean().backward()
    ref2(x, t, encoder_hidden_states=context).sample.square().mean().backward()
    theirs = dict(ref2.named_parameters())
    for name, p in ours.named_parameters():
        assert_same(p.grad, theirs[name].grad)


@pytest.mark.parametrize("flip,shift,dim", [(True, 0, 320), (False, 1, 64), (True, 1, 33)])
def test_timestep_embedding_matches_diffusers(flip, shift, dim):
    t = torch.tensor([0, 1, 250.5, 999])
    expected = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    torch.testing.assert_close(timestep_embedding(t, dim, flip, shift), expected, atol=1e-6, rtol=0)


def test_timestep_forms_agree():
    ours, _ = pair(REDUCED["v1"])
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 48)
    with torch.no_grad():
        expected = ours(x, torch.tensor([250, 250]), context)
        for t in (250, torch.tensor(250.0), torch.tensor([250])):
            torch.testing.assert_close(ours(x, t, context), expected, atol=0, rtol=0)
        torch.testing.assert_close(ours(x, 250, encoder_hidden_states=context), expected, atol=0, rtol=0)


def test_bad_inputs_name_expected_values():
    ours, _ = pair(REDUCED["v1"])
    x, context = torch.randn(1, 4, 16, 16), torch.randn(1, 3, 48)
    with pytest.raises(ValueError, match="cross_attention_dim=48"):
        ours(x, 1, torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="height and width must be at least 1, got 0x16"):
        ours(torch.randn(1, 4, 0, 16), 1, context)
    with pytest.raises(ValueError, match="in_channels=4"):
        ours(torch.randn(1, 9, 16, 16), 1, context)
    with pytest.raises(ValueError, match=r"\(B=1,\)"):
        ours(x, torch.tensor([1, 2, 3]), context)
    with pytest.raises(ValueError, match="context"):
        ours(x, 1)
    with pytest.raises(ValueError, match="down_block_types"):
        UNet.from_config({**SMALL, "down_block_types": ["AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]})
    with pytest.raises(ValueError, match="class_embed_type"):
        UNet.from_config({**SMALL, "class_embed_type": "timestep"})


def test_from_pretrained_roundtrip_and_checks(tmp_path):
    ours, ref = pair(REDUCED["v2"])
    ref.save_pretrained(tmp_path / "unet", safe_serialization=True)
    loaded = UNet.from_pretrained(tmp_path, subfolder="unet")
    assert loaded.config["cross_attention_dim"] == 40 and loaded.in_channels == 4 and loaded.sample_size == 16
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    x, context = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 5, context), ours(x, 5, context), atol=0, rtol=0)
    assert UNet.from_pretrained(tmp_path / "unet", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="config.json"):
        UNet.from_pretrained(tmp_path)
    ref.to(torch.float16).save_pretrained(tmp_path / "half", safe_serialization=True)
    assert UNet.from_pretrained(tmp_path / "half").dtype == torch.float32   # diffusers' default too
    other = UNet.from_config({**REDUCED["v2"], "cross_attention_dim": 24})
    with pytest.raises(ValueError, match="wrong shapes"):
        other.load_weights(ref.state_dict())


def test_capture_attention_in_unet():
    ours, _ = pair(REDUCED["v1"])
    x, context = torch.randn(2, 4, 16, 16), torch.randn(2, 7, 48)
    with torch.no_grad(), capture_attention(ours) as maps:
        ours(x, 10, context)
    # cross-attention layers: 2 per down level with attention, 1 mid, 2 + 2 in the up path
    assert len(maps) == 2 + 2 + 1 + 2 + 2 + 2
    probs = maps["down_blocks.0.attentions.0.transformer_blocks.0.attn2"][0]
    assert probs.shape == (2, 4, 16 * 16, 7)
    assert maps["mid_block.attentions.0.transformer_blocks.0.attn2"][0].shape == (2, 4, 4 * 4, 7)


@pytest.mark.parametrize("config,params", [(SD15_UNET, 859_520_964), (SD21_UNET, 865_910_724)],
                         ids=["sd15", "sd21"])
def test_full_size_sd_unets_match_diffusers(config, params):
    ours, ref = pair_full_size(config)   # ~3.4 GB of float32 weights, shared by both models
    try:
        assert sum(p.numel() for p in ours.parameters()) == params
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 16, 16, generator=g)  # a 128x128-pixel image's latent keeps this fast
        context = torch.randn(1, 77, config["cross_attention_dim"], generator=g)
        with torch.no_grad():
            assert_same(ours(x, 981, context), ref(x, 981, encoder_hidden_states=context).sample)
    finally:
        del ours, ref
        gc.collect()


def test_pixel_unet_is_built_from_the_unet_parts_and_the_bundled_model_denoises(tmp_path):
    """Notebook 02's PixelUNet (sdlearn.toys) is made of this file's ResnetBlock and time embedding. The
    bundled weights (saved under older key names) load into it and predict the noise in Shapes images
    far better than eps_hat = 0 (which scores 1); what the trainer saves loads back the same."""
    import torch.nn.functional as F

    from sdlearn.schedules import alpha_bar, make_betas, q_sample
    from sdlearn.toys import PixelUNet, load_pixel_model
    from sdlearn.train.pixel import SCHEDULER_CONFIG, shapes_images
    from sdlearn.unet import ResnetBlock, TimestepEmbedding
    from sdlearn.weights import save_file

    model = load_pixel_model()
    assert all(isinstance(b, ResnetBlock) for b in [*model.down, model.mid, *model.up])
    assert isinstance(model.time_mlp, TimestepEmbedding)
    x0 = shapes_images(8, size=32, seed=123)                                  # (8, 3, 32, 32), unseen renders
    ab = alpha_bar(make_betas(SCHEDULER_CONFIG["beta_schedule"], SCHEDULER_CONFIG["num_train_timesteps"],
                              SCHEDULER_CONFIG["beta_start"], SCHEDULER_CONFIG["beta_end"]))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([20, 100, 250, 500, 750, 999, 50, 400])
    x_t = q_sample(x0, t, eps, ab)
    with torch.no_grad():
        eps_hat = model(x_t, t)
    assert F.mse_loss(eps_hat, eps) < 0.05                                  # trained: 0.007; untrained: 1.1
    save_file(model.state_dict(), tmp_path / "model.safetensors")             # the current key names
    (tmp_path / "config.json").write_text(json.dumps(model.config))
    with torch.no_grad():
        assert torch.equal(load_pixel_model(tmp_path)(x_t, t), eps_hat)
    assert isinstance(model, PixelUNet) and model.config == {"channels": [16, 32, 64], "t_dim": 128}
