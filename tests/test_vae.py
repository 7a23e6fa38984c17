"""sdlearn.vae.VAE against diffusers.AutoencoderKL on identical random weights, the bundled Shapes
VAE, the posterior, bad-input errors and the trainer's reproducibility."""
from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import AutoencoderKL

from sdlearn.data import render, to_tensor
from sdlearn.train import vae as train_vae
from sdlearn import ASSETS_DIR
from sdlearn.configs import SD_VAE
from sdlearn.vae import VAE

TINY_VAE_DIR = ASSETS_DIR / "tiny" / "vae"


def _config(channels, layers=1, groups=8, latent=4, **extra):
    n = len(channels)
    return {"block_out_channels": list(channels), "layers_per_block": layers, "norm_num_groups": groups,
            "latent_channels": latent, "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, **extra}


def _pair(config, seed=0):
    """(diffusers model, sdlearn model) holding the same random weights."""
    torch.manual_seed(seed)
    ref = AutoencoderKL(**config).eval()
    # randomise the GroupNorm affines too (they start at 1/0), so a mix-up of them would show
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = VAE.from_config(dict(ref.config)).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


REDUCED = [
    _config([32], layers=1),                                        # f=1, one block
    _config([16, 32], layers=2, groups=8, latent=3),                # f=2, two resnets per block
    _config([16, 32, 32], layers=1, groups=4, latent=8, mid_block_add_attention=False),  # f=4, no attention
    _config([8, 16, 32, 32], layers=1, groups=4, act_fn="silu"),    # f=8, SD geometry in miniature
]


@pytest.mark.parametrize("config", REDUCED, ids=["f1", "f2-layers2", "f4-noattn", "f8"])
def test_matches_diffusers_reduced(config):
    ref, ours = _pair(config)
    assert set(ours.state_dict()) == set(ref.state_dict())            # same keys (loading ignores their order)
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p_ref, p_ours = ref.encode(x).latent_dist, ours.encode(x)
        # float32 round-off only: both run the same ops, attention may be fused differently (SDPA)
        for name in ("mean", "logvar", "std", "var"):
            torch.testing.assert_close(getattr(p_ours, name), getattr(p_ref, name), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(p_ours.kl(), p_ref.kl(), atol=1e-3, rtol=1e-5)   # a sum of ~1e3 terms
        torch.testing.assert_close(p_ours.sample(torch.Generator().manual_seed(7)),
                                   p_ref.sample(torch.Generator().manual_seed(7)), atol=1e-5, rtol=1e-4)
        per_item = lambda: [torch.Generator().manual_seed(s) for s in (7, 8)]  # noqa: E731  one per image
        torch.testing.assert_close(p_ours.sample(per_item()), p_ref.sample(per_item()), atol=1e-5, rtol=1e-4)
        z = p_ref.mean
        torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours(x), ref(x).sample, atol=1e-5, rtol=1e-4)
    f = 2 ** (len(config["block_out_channels"]) - 1)
    assert p_ours.mean.shape == (2, config["latent_channels"], 32 // f, 48 // f)


def test_matches_diffusers_sd_vae_config():
    ref, ours = _pair(SD_VAE)
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in ref.parameters())
    assert round(n_params / 1e6, 1) == 83.7
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        p_ref, p_ours = ref.encode(x).latent_dist, ours.encode(x)
        assert p_ours.mean.shape == (1, 4, 8, 8)
        # 83.7M parameters and ~30 layers deep: round-off grows, still orders below the signal (~1)
        torch.testing.assert_close(p_ours.mean, p_ref.mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(p_ours.logvar, p_ref.logvar, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.decode(p_ref.mean), ref.decode(p_ref.mean).sample, atol=1e-4, rtol=1e-4)
    assert ours.scaling_factor == 0.18215
    del ref, ours


def test_folders_load_both_ways(tmp_path):
    ref, ours = _pair(REDUCED[3])
    ours.save_pretrained(tmp_path / "ours")
    theirs = AutoencoderKL.from_pretrained(tmp_path / "ours").eval()
    ref.save_pretrained(tmp_path / "ref")
    back = VAE.from_pretrained(tmp_path / "ref")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).sample, ref(x).sample, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(back(x), ref(x).sample, atol=1e-5, rtol=1e-4)


def test_bundled_shapes_vae():
    config = json.loads((TINY_VAE_DIR / "config.json").read_text())
    vae = VAE.from_pretrained(TINY_VAE_DIR)
    assert vae.downsample_factor == 8 and vae.config["latent_channels"] == 4
    assert vae.scaling_factor == config["scaling_factor"] == vae.config["scaling_factor"]
    assert vae.dtype == torch.float32 and vae.device.type == "cpu"
    ref = AutoencoderKL.from_pretrained(TINY_VAE_DIR).eval()          # diffusers reads the same folder
    x = torch.stack([to_tensor(render(s, c, "small", p, seed=i)) for i, (s, c, p) in enumerate(
        [("star", "blue", "top left"), ("square", "orange", "center"), ("triangle", "purple", "bottom right"),
         ("circle", "yellow", "center left"), ("diamond", "green", "top center")])])
    with torch.no_grad():
        posterior = vae.encode(x)
        assert posterior.mean.shape == (5, 4, 8, 8)
        x_hat = vae.decode(posterior.mode()).clamp(-1, 1)
        torch.testing.assert_close(x_hat, ref(x).sample.clamp(-1, 1), atol=1e-4, rtol=1e-4)
    mse = float((x_hat - x).pow(2).mean())
    assert 10 * math.log10(4 / mse) > 30                              # PSNR on unseen small shapes
    # the scaling factor makes latents roughly unit-variance (as SD's 0.18215 does)
    assert 0.3 < float((posterior.mean * vae.scaling_factor).std()) < 3


def test_posterior_sampling_and_kl():
    torch.manual_seed(0)
    vae = VAE.from_config(_config([8, 16], groups=4)).eval()
    with torch.no_grad():
        post = vae.encode(torch.randn(1, 3, 8, 8))
    a, b = post.sample(torch.Generator().manual_seed(3)), post.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, post.sample(torch.Generator().manual_seed(4)))
    assert torch.equal(post.mode(), post.mean)
    # Monte Carlo: 4000 reparameterised samples have the posterior's mean and std (5 sigma-ish bounds)
    g = torch.Generator().manual_seed(0)
    zs = torch.stack([post.sample(g) for _ in range(4000)])
    assert ((zs.mean(0) - post.mean).abs() < 5 * post.std / math.sqrt(4000) + 1e-6).all()
    torch.testing.assert_close(zs.std(0), post.std, rtol=0.1, atol=1e-6)
    # closed-form KL(q || N(0, I)) equals the Monte Carlo estimate E_q[log q(z) - log p(z)]
    log_p = -0.5 * (math.log(2 * math.pi) + zs.pow(2)).sum(dim=(2, 3, 4))               # (4000, 1)
    log_q = torch.stack([-post.nll(z) for z in zs])                                     # (4000, 1)
    torch.testing.assert_close((log_q - log_p).mean(0), post.kl(), rtol=0.05, atol=0.5)
    # KL is zero exactly at the prior
    from sdlearn.vae import DiagonalGaussian

    assert float(DiagonalGaussian(torch.zeros(1, 8, 2, 2)).kl()) == 0.0


def test_bad_inputs():
    vae = VAE.from_config(_config([8, 16, 16, 16], groups=4))
    with pytest.raises(ValueError, match="multiples of the downsampling factor 8"):
        vae.encode(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="in_channels=3"):
        vae.encode(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vae.encode(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="latent_channels=4"):
        vae.decode(torch.randn(1, 3, 8, 8))
    other = VAE.from_config(_config([8, 16, 32, 32], groups=4))
    with pytest.raises(ValueError, match=r"expected \(16,"):
        vae.load_state_dict(other.state_dict())
    fewer = VAE.from_config(_config([8, 16], groups=4))
    with pytest.raises(ValueError, match="missing keys"):
        vae.load_state_dict(fewer.state_dict())
    with pytest.raises(ValueError, match="down_block_types"):
        VAE.from_config({"block_out_channels": [8, 16], "norm_num_groups": 4})
    with pytest.raises(ValueError, match="norm_num_groups=32"):
        VAE.from_config(_config([8], groups=32))
    with pytest.raises(ValueError, match="act_fn"):
        VAE.from_config(_config([8], groups=4, act_fn="tanh"))
    with pytest.raises(TypeError, match="config must be a dict"):
        VAE.from_config("config.json")
    with pytest.raises(ValueError, match="config.json"):
        VAE.from_pretrained("/nonexistent/folder")


def test_trainer_is_reproducible_and_weights_the_foreground():
    config = {**train_vae.SHAPES_VAE_CONFIG, **_config([8, 8, 8, 8], groups=4)}
    runs = [train_vae.train(seed=s, steps=2, batch_size=2, config=config, device="cpu")[0] for s in (0, 0, 1)]
    sd = [r.state_dict() for r in runs]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert any(not torch.equal(sd[0][k], sd[2][k]) for k in sd[0])
    # an error on the shape costs fg_weight times more per pixel than the same error on the background
    x = to_tensor(render("star", "red", "small", "center", seed=0)).unsqueeze(0)
    fg = train_vae.foreground(x).bool().expand_as(x)               # the weighted region (shape + rim)
    on_shape, off_shape = x.clone(), x.clone()
    on_shape[fg] += 0.1
    off_shape[~fg] += 0.1
    n_fg, n_bg = int(fg.sum()), int((~fg).sum())
    ratio = (train_vae.reconstruction_loss(on_shape, x, edge_weight=0) / n_fg) / (
        train_vae.reconstruction_loss(off_shape, x, edge_weight=0) / n_bg)
    assert abs(float(ratio) - 20.0) < 1e-3


def test_decoder_only_fine_tuning_keeps_the_encoder(tmp_path):
    """--decoder-only: the encoder (hence every latent a UNet was trained on) is bit-identical
    after training, the decoder is not."""
    config = {**train_vae.SHAPES_VAE_CONFIG, **_config([8, 8, 8, 8], groups=4)}
    VAE.from_config(config).save_pretrained(tmp_path / "start")
    start = VAE.from_pretrained(tmp_path / "start").state_dict()
    tuned = train_vae.train(seed=0, steps=2, batch_size=2, device="cpu", world="scenes", init=tmp_path / "start",
                            decoder_only=True)[0].state_dict()
    frozen = [k for k in start if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(start[k], tuned[k]) for k in frozen)
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith("decoder."))
    with pytest.raises(ValueError, match="--decoder-only needs --init"):
        train_vae.main(["--decoder-only", "--steps", "1", "--out", str(tmp_path / "x")])
