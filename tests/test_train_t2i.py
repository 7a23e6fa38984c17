"""The text-to-image trainer (``python -m sdlearn train t2i``) on a tiny configuration: a run cut into
chunks with ``--stop-after`` / ``--resume`` ends with the same weights as the uninterrupted run."""
import pytest
import torch
from safetensors.torch import load_file

from sdlearn.pipeline import TINY_MODEL_DIR
from sdlearn.train import t2i

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model_dir, run_dir, *extra: str) -> dict[str, torch.Tensor]:
    """4 steps (the learning-rate schedule's length) of batch 4 on 8 cached images, a 2-level UNet."""
    t2i.main(["--seed", "3", "--steps", "4", "--batch-size", "4", "--num-images", "8", "--channels", "32,32",
              "--layers-per-block", "1", "--checkpoint-every", "100", "--model-dir", str(model_dir),
              "--run-dir", str(run_dir), *extra])
    return load_file(run_dir / "checkpoint.safetensors")


@pytest.fixture
def model_dir(tmp_path):
    """A model folder holding the bundled VAE and text encoder (links), where the trainer writes unet/."""
    folder = tmp_path / "model"
    folder.mkdir()
    for part in ("vae", "text_encoder"):
        (folder / part).symlink_to(TINY_MODEL_DIR / part, target_is_directory=True)
    return folder


def test_resumed_chunks_give_the_weights_of_one_run(model_dir, tmp_path):
    whole = _train(model_dir, tmp_path / "whole")
    _train(model_dir, tmp_path / "chunks", "--stop-after", "2")
    halfway = load_file(tmp_path / "chunks" / "checkpoint.safetensors")
    chunks = _train(model_dir, tmp_path / "chunks", "--resume")
    assert set(chunks) == set(whole)
    assert any(k.startswith("opt.") for k in whole) and "generators" in whole
    changed = [k for k in whole if k.startswith("unet.") and not torch.equal(halfway[k], whole[k])]
    assert changed, "steps 3-4 changed no weight: the comparison below would prove nothing"
    for key in whole:                          # weights, EMA, Adam's moments and step, the data order
        torch.testing.assert_close(chunks[key], whole[key], rtol=0, atol=0, msg=key)
    assert (model_dir / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_training_step_is_the_ldm_loss_of_one_drawn_batch():
    """training_step draws (index, posterior noise, dropout, t, eps) from the generator in that order
    and returns MSE(eps_theta(z_t, t, states[caption]), eps); a model that predicts 0 scores E[eps^2]."""
    cache = {"mean": torch.zeros(5, 4, 8, 8), "std": torch.ones(5, 4, 8, 8), "states": torch.arange(3.0)[:, None, None].expand(3, 77, 8),
             "caption": torch.tensor([1, 2, 1, 2, 1]), "scaling_factor": torch.tensor(0.5)}
    a_bar = torch.linspace(0.99, 0.01, 1000)
    seen = {}

    def zero_unet(z_t, t, context):
        seen.update(z_t=z_t, t=t, context=context)
        return torch.zeros_like(z_t)

    loss = t2i.training_step(zero_unet, cache, a_bar, 6, 0.5, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(5, (6,), generator=g)
    z0 = torch.randn(6, 4, 8, 8, generator=g) * 0.5
    drop = torch.rand(6, generator=g) < 0.5
    t = torch.randint(1000, (6,), generator=g)
    eps = torch.randn(6, 4, 8, 8, generator=g)
    assert torch.equal(seen["t"], t)
    caption = torch.where(drop, 0, cache["caption"][idx])                 # dropped captions read state 0: ""
    assert torch.equal(seen["context"], cache["states"][caption])
    torch.testing.assert_close(seen["z_t"], a_bar[t].sqrt()[:, None, None, None] * z0
                               + (1 - a_bar[t]).sqrt()[:, None, None, None] * eps)
    torch.testing.assert_close(loss, eps.pow(2).mean())
    assert drop.any() and not drop.all()       # both kinds of caption in the batch: the dropout ran
    assert torch.equal(cache["caption"], torch.tensor([1, 2, 1, 2, 1]))   # the cache is not changed in place


def test_ema_update_moves_a_decay_share_towards_the_model():
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.clone() for p in ema.parameters()]
    t2i.ema_update(ema, model, 0.9)
    for b, p_ema, p in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * b + 0.1 * p)


def test_the_trainer_runs_on_scenes(model_dir, tmp_path):
    """--world scenes caches Shapes world 2 (one or two objects, any background) in its own file."""
    state = _train(model_dir, tmp_path / "scenes", "--world", "scenes", "--two-objects", "0.5",
                   "--one-object-steps", "2")
    assert any(k.startswith("unet.") for k in state)
    (cache_file,) = (tmp_path / "scenes").glob("cache_*_scenes0.5_v2.safetensors")
    objects = load_file(cache_file)["objects"]
    assert set(objects.tolist()) == {1, 2}                 # both kinds cached: the curriculum has a choice


def test_a_curriculum_pool_draws_only_its_rows():
    """training_step(pool=rows) draws its batch from those cache rows alone (one-object scenes first)."""
    cache = {"mean": torch.arange(6.0)[:, None, None, None].expand(6, 4, 8, 8), "std": torch.zeros(6, 4, 8, 8),
             "states": torch.zeros(7, 77, 8), "caption": torch.arange(1, 7), "scaling_factor": torch.tensor(1.0)}
    a_bar = torch.ones(1000)                                   # z_t = z0: the drawn rows show through
    drawn = []

    def unet(z_t, t, context):
        drawn.append(z_t[:, 0, 0, 0])
        return torch.zeros_like(z_t)
    for k in range(20):
        t2i.training_step(unet, cache, a_bar, 8, 0.0, torch.Generator().manual_seed(k), pool=torch.tensor([1, 4]))
    assert set(torch.cat(drawn).round().tolist()) == {1.0, 4.0}


def test_init_unet_fine_tunes_a_trained_unet(model_dir, tmp_path):
    """--init-unet starts from a trained UNet (world 1's, to fine-tune on scenes); a config that
    differs from the run's is refused by name."""
    from sdlearn.unet import UNet

    state = _train(model_dir, tmp_path / "ft", "--channels", "64,128,128", "--batch-size", "2", "--steps", "1",
                   "--init-unet", str(TINY_MODEL_DIR / "unet"))
    bundled = UNet.from_pretrained(TINY_MODEL_DIR / "unet").state_dict()
    drift = max((state[f"unet.{k}"] - v).abs().max().item() for k, v in bundled.items())
    assert 0 < drift < 5e-3                      # one Adam step (lr 1e-3) away from the bundled weights
    with pytest.raises(ValueError, match="--init-unet"):
        _train(model_dir, tmp_path / "bad", "--init-unet", str(TINY_MODEL_DIR / "unet"))   # 32,32 channels
