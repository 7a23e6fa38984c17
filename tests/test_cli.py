"""``python -m sdlearn {generate,train,info}``: bad command lines end with exit status 2 and one error
line naming the option, before any model loads; a good one writes a PNG."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import sdlearn.train.clip
import sdlearn.train.pixel
import sdlearn.train.reader
import sdlearn.train.t2i
import sdlearn.train.vae
from sdlearn.__main__ import main
from sdlearn.pipeline import StableDiffusion

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]

# (command line, text the error line must contain). "{tmp}" is a fresh folder holding a file "afile"
# and a folder "adir.png"; "{ro}" is a folder nothing can be written in.
BAD_INPUTS = [
    # generate: numbers
    (["generate", "a red circle", "--steps", "0"], "--steps"),
    (["generate", "a red circle", "--steps", "-3"], "--steps"),
    (["generate", "a red circle", "--steps", "2.5"], "--steps"),
    (["generate", "a red circle", "--guidance", "inf"], "--guidance"),
    (["generate", "a red circle", "--guidance", "nan"], "--guidance"),
    (["generate", "a red circle", "--guidance", "-1"], "--guidance"),
    (["generate", "a red circle", "--height", "0"], "--height"),
    (["generate", "a red circle", "--width", "-64"], "--width"),
    (["generate", "a red circle", "--height", "tall"], "--height"),
    (["generate", "a red circle", "--upscale", "0"], "--upscale"),
    (["generate", "a red circle", "--upscale", "-2"], "--upscale"),
    (["generate", "a red circle", "--upscale", "1000"], "--upscale"),
    (["generate", "a red circle", "--seed", "-1"], "--seed"),
    (["generate", "a red circle", "--seed", str(2**64)], "--seed"),
    (["generate", "a red circle", "--seed", "0", "1", "-5"], "--seed"),
    (["generate", "a red circle", "--sampler", "bogus"], "--sampler"),
    (["generate", "a red circle", "--bogus-option"], "--bogus-option"),
    (["generate"], "prompt"),
    # generate: the output path
    (["generate", "a red circle", "-o", "{tmp}/out.jpg"], "--output"),
    (["generate", "a red circle", "-o", "{tmp}/out"], "--output"),
    (["generate", "a red circle", "-o", "{tmp}/adir.png"], "--output"),
    (["generate", "a red circle", "-o", "{tmp}/afile/out.png"], "--output"),
    (["generate", "a red circle", "-o", "{tmp}/afile/deeper/out.png"], "--output"),
    (["generate", "a red circle", "-o", "{ro}/out.png"], "--output"),
    (["generate", "a red circle", "-o", "{ro}/new/out.png"], "--output"),
    # generate: model and device
    (["generate", "a red circle", "--model", "{tmp}/no/such/folder"], "--model"),
    (["generate", "a red circle", "--model", "{tmp}/afile"], "--model"),
    (["generate", "a red circle", "--model", "{tmp}"], "--model"),          # a folder without unet/ vae/ ...
    (["generate", "a red circle", "--model", "someone/some-model"], "--model"),  # a hub id while offline
    (["generate", "a red circle", "--device", "toaster"], "--device"),
    (["generate", "a red circle", "--device", "meta"], "--device"),
    (["generate", "a red circle", "--device", "cuda:99"], "--device"),
    # the command itself, info, train
    (["frobnicate"], "generate"),
    (["--bogus"], "--bogus"),
    (["info", "extra"], "extra"),
    (["info", "--bogus"], "--bogus"),
    (["train", "--bogus"], "--bogus"),
    (["train", "dreams"], "vae"),
    (["train", "vae", "--bogus"], "--bogus"),
    (["train", "vae", "--steps", "many"], "--steps"),
    (["train", "vae", "--steps", "0"], "--steps"),
    (["train", "vae", "--seed", "10000"], "--seed"),   # the trainer's own ValueError
    (["train", "clip", "--batch-size", "0"], "--batch-size"),
    (["train", "t2i", "--lr", "nan"], "--lr"),
    (["train", "t2i", "--lr", "0"], "--lr"),
    (["train", "reader", "--seed", "-1"], "--seed"),
]


def error_line(err: str) -> str:
    """The one ``error:`` line of a failed command's stderr (after argparse's usage, if any)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded."""
    def fail(*args, **kwargs):
        pytest.fail("a model was loaded")
    monkeypatch.setattr(StableDiffusion, "tiny", fail)
    monkeypatch.setattr(StableDiffusion, "from_pretrained", fail)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a trainer gets past its argument parsing."""
    def fail(*args, **kwargs):
        pytest.fail("training started")
    for module in (sdlearn.train.vae, sdlearn.train.clip):
        monkeypatch.setattr(module, "train", fail)
    for module in (sdlearn.train.t2i, sdlearn.train.pixel, sdlearn.train.reader):
        monkeypatch.setattr(module, "seed_everything", fail)


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir.png").mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):             # root writes anywhere; /proc takes no new files even from root
        ro = Path("/proc")
    yield {"tmp": str(tmp_path), "ro": str(ro)}
    (tmp_path / "ro").chmod(0o755)


def run_main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.mark.parametrize("argv, names", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(argv, names, paths, no_model, no_training, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)                 # the default -o out.png would land here
    before = sorted(tmp_path.rglob("*"))
    assert run_main([a.format(**paths) for a in argv]) == 2
    captured = capsys.readouterr()
    assert names in error_line(captured.err)
    assert captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a folder


def test_at_least_twenty_bad_inputs():
    assert len(BAD_INPUTS) >= 20


def test_pipeline_errors_are_one_line_naming_the_option(monkeypatch, capsys, tmp_path):
    """A ValueError raised inside the pipeline call is reported with the command's option names."""
    class Pipe:
        def text_to_image(self, *args, **kwargs):
            raise ValueError("guidance_scale must be a finite number >= 0; got 1e309")
    monkeypatch.setattr(StableDiffusion, "tiny", lambda device=None: Pipe())
    out = tmp_path / "out.png"
    assert run_main(["generate", "a red circle", "-o", str(out)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "--guidance must be a finite number" in line and "guidance_scale" not in line
    assert not out.exists()


def test_size_the_model_cannot_take_is_one_line(capsys, tmp_path):
    """The real tiny model: --height 12 is positive but no multiple of the VAE factor 8."""
    out = tmp_path / "out.png"
    assert run_main(["generate", "a red circle", "--steps", "2", "--height", "12", "-o", str(out)]) == 2
    assert "height" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_generate_writes_a_png(capsys, tmp_path):
    out = tmp_path / "new" / "folder" / "out.png"
    main(["generate", "a red circle in the top left", "--steps", "2", "--seed", "3", "--upscale", "2",
          "-o", str(out)])
    assert f"wrote {out} (1 image(s)" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (128, 128)    # the tiny model's 64 x 64, twice
        colors = image.convert("RGB").getcolors(maxcolors=128 * 128)
    assert len(colors) > 10                                           # a picture, not a flat (black) square


def test_info_and_help(capsys):
    main(["info"])
    out = capsys.readouterr().out
    assert out.startswith("sdlearn ") and "tiny model" in out and "missing" not in out
    assert run_main(["generate", "--help"]) == 0
    assert "--guidance" in capsys.readouterr().out
    assert run_main(["train", "vae", "--help"]) == 0
    assert "--steps" in capsys.readouterr().out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sdlearn", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("args, names", [
    (["generate", "a red circle", "--guidance", "inf", "-o", "x.png"], "--guidance"),
    (["train", "vae", "--seed", "10000"], "--seed"),
])
def test_real_process_exits_2_without_traceback(args, names):
    result = run_cli(*args)
    assert result.returncode == 2
    assert names in error_line(result.stderr)
    assert result.stdout == ""
