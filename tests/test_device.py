"""Device choice and CPU-generator noise: the same seed gives the same latents everywhere."""
import pytest
import torch

from sdlearn import device


def test_same_seed_same_noise():
    a = device.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    b = device.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    c = device.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 4, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_equals_cpu_draw_then_move():
    """Drawn in float32 on the CPU, then cast: a float16 request is the cast of the float32 draw."""
    ref = torch.randn((3, 5), generator=torch.Generator().manual_seed(4))
    half = device.randn((3, 5), generator=torch.Generator().manual_seed(4), dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, ref.half())


def test_seed_everything_returns_seeded_cpu_generator():
    g = device.seed_everything(123)
    assert g.device.type == "cpu"
    x = torch.randn(4)
    device.seed_everything(123)
    assert torch.equal(torch.randn(4), x)
    assert torch.equal(device.randn((4,), generator=g), torch.randn(4, generator=torch.Generator().manual_seed(123)))


def test_non_cpu_generator_rejected():
    class FakeCudaGenerator:
        device = torch.device("cuda")
    with pytest.raises(ValueError, match="CPU"):
        device.randn((2,), generator=FakeCudaGenerator())


def test_get_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device.get_device() == torch.device("cpu")
    assert device.get_device("cpu") == torch.device("cpu")


def test_get_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.get_device().type == "cuda"


def test_get_dtype():
    assert device.get_dtype("cpu") == torch.float32
    assert device.get_dtype("cpu", half=True) == torch.bfloat16
    assert device.get_dtype("mps", half=True) == torch.float16


def test_get_device_unknown_name():
    with pytest.raises(ValueError, match="cuda"):
        device.get_device("gpu")


def test_quiet_hub_loading_drops_only_the_torchvision_notice():
    """The notice transformers logs without torchvision is dropped; any other record on that logger,
    and other loggers, still show. Calling it twice adds the filter once."""
    import logging

    device.quiet_hub_loading()
    device.quiet_hub_loading()
    logger = logging.getLogger("transformers.utils.import_utils")
    assert sum(isinstance(f, device._DropMessage) for f in logger.filters) == 1
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep()
    other = logging.getLogger("transformers.modeling_utils")
    for log in (logger, other):       # transformers' loggers do not propagate to the root: listen on them
        log.addHandler(keep)
    try:
        logger.warning("CLIPImageProcessor " + device.TORCHVISION_NOTICE + ", falling back to PIL")
        logger.warning("some other notice")
        other.warning(device.TORCHVISION_NOTICE + " elsewhere")
    finally:
        for log in (logger, other):
            log.removeHandler(keep)
    assert seen == ["some other notice", device.TORCHVISION_NOTICE + " elsewhere"]
