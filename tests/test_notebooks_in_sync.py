"""Each notebook in notebooks/ is built from its source in notebooks/src/ (tools/nb.py): the cells
learners read must be the cells the source holds (with the generated badge, setup cell and image
attachments), and every code cell must have been executed."""
import base64
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nb as nbtool  # noqa: E402

SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
PROJECT = nbtool.read_project()


EDITIONS = [(src, edition) for src in SOURCES for edition in ("student", "solutions")]


@pytest.mark.parametrize("src, edition", EDITIONS, ids=[f"{s.stem}-{e}" for s, e in EDITIONS])
def test_notebook_matches_source(src, edition):
    target = ROOT / nbtool.notebook_path(src.stem, edition)
    assert target.exists(), f"{target.name} missing: run python tools/nb.py {src.relative_to(ROOT)}"
    cells = json.loads(target.read_text())["cells"]
    want = nbtool.source_cells(src, PROJECT, edition)
    got = [(c["cell_type"], "".join(c["source"]), c.get("attachments", {})) for c in cells]
    assert got == want, (f"{target.name} is out of date with its source or pyproject.toml: rebuild it with "
                         f"tools/nb.py (--keep-outputs when only the badge, setup cell or pictures changed)")
    for c in cells:
        if c["cell_type"] == "code":
            assert c.get("execution_count") is not None, f"{target.name} has an unexecuted cell"
            assert not any(o.get("output_type") == "error" for o in c.get("outputs", []))


def test_every_notebook_has_a_source():
    for folder in (ROOT / "notebooks", ROOT / "notebooks" / "solutions"):
        notebooks = sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb"))
        assert notebooks == [s.stem for s in SOURCES], folder


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_student_edition_shows_no_solved_exercise(src):
    """Every exercise is marked in the source; the student edition shows stubs and hints, never an
    answer, and its check cells ran to "not yet" (the solutions edition proves each answer)."""
    text = src.read_text()
    assert "BEGIN SOLUTION" in text and "one possible solution" not in text
    student = json.loads((ROOT / nbtool.notebook_path(src.stem, "student")).read_text())["cells"]
    solved = json.loads((ROOT / nbtool.notebook_path(src.stem, "solutions")).read_text())["cells"]
    out = lambda cells: "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))  # noqa: E731
    assert "not yet" in out(student) and "correct!" not in out(student)
    assert "correct!" in out(solved) and "not yet" not in out(solved)


def test_nbval_sanitizer_masks_round_off_only_after_difference_labels():
    """nbval compares stored outputs; CPU-dependent round-off is masked, real numbers are not."""
    import re

    from nbval.plugin import get_sanitize_patterns                # nbval's own reader of the file

    rules = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())

    def sanitize(text):                                           # as nbval applies them
        for regex, replace in rules:
            text = re.sub(regex, replace, text)
        return text

    assert sanitize("max |ours - transformers| = 4.8e-06") == "max |ours - transformers| = ROUNDOFF"
    assert sanitize("max |difference| of the decoded images: 2e-07") == "max |difference| of the decoded images: ROUNDOFF"
    assert sanitize("vs the input's z_0: max difference 0.0e+00") == "vs the input's z_0: max difference ROUNDOFF"
    assert sanitize("Euler: mean |sdlearn - diffusers| = 3.6e-08; x") == "Euler: mean |sdlearn - diffusers| = ROUNDOFF; x"
    for kept in ("alpha_bar_T = 4.04e-05", "eps=1e-05", "red 22/24", "PSNR 42.18 dB", "mean |x| = 0.25"):
        assert "ROUNDOFF" not in sanitize(kept)
    assert sanitize("took 9.1 s") == "took TIME"


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_badge_setup_and_pictures_are_generated_not_typed(src):
    """The home is named once (pyproject.toml); sources hold markers, the notebook the generated cells."""
    text = src.read_text()
    assert PROJECT.home not in text and "colab.research.google.com" not in text and "%pip" not in text
    raw = nbtool.parse_cells(text)
    assert nbtool.BADGE_TOKEN in raw[0][1] and raw[1] == ("code", nbtool.SETUP_TOKEN)
    cells = json.loads((ROOT / "notebooks" / (src.stem + ".ipynb")).read_text())["cells"]
    badge = f"colab.research.google.com/github/{PROJECT.github}/blob/v{PROJECT.version}/notebooks/{src.stem}.ipynb"
    assert badge in "".join(cells[0]["source"])
    setup = "".join(cells[1]["source"])
    assert setup.startswith("# NBVAL_IGNORE_OUTPUT\n") and 'if "google.colab" in sys.modules:' in setup
    assert f'%pip install -q "sdlearn[colab] @ git+{PROJECT.home}@v{PROJECT.version}"' in setup
    for c in cells:   # a relative link does not resolve on Colab or from a pip install
        assert c["cell_type"] != "markdown" or "](../" not in "".join(c["source"])


def test_home_is_named_once_and_version_agrees():
    import sdlearn

    files = [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "tools" / "nb.py", *SOURCES,
             *(ROOT / "sdlearn").rglob("*.py")]
    assert sum(f.read_text().count(PROJECT.home) for f in files) == 1
    assert PROJECT.version == sdlearn.__version__


def test_pictures_are_embedded_as_attachments():
    cells = json.loads((ROOT / "notebooks" / "00_welcome.ipynb").read_text())["cells"]
    pictures = [c for c in cells if c["cell_type"] == "markdown" and "attachment:00_sd_overview.png" in "".join(c["source"])]
    assert len(pictures) == 1
    png = base64.b64decode(pictures[0]["attachments"]["00_sd_overview.png"]["image/png"])
    assert png == (ROOT / "images" / "00_sd_overview.png").read_bytes()


def test_fork_rebuild_regenerates_setup_and_keeps_outputs(tmp_path):
    """--keep-outputs after a change of home: new badge and setup cell, every stored output kept."""
    import nbformat

    src = ROOT / "notebooks" / "src" / "01_forward_noising.py"
    stored = nbformat.read(ROOT / "notebooks" / "01_forward_noising.ipynb", as_version=4)
    fork = nbtool.Project(home="https://github.com/a-teacher/sdlearn-fork", version=PROJECT.version)
    nb = nbtool.build(src, fork, "student")
    assert nbtool.keep_outputs(nb, stored, "01", fork) == []            # only generated cells changed
    assert "github/a-teacher/sdlearn-fork/blob/" in nb.cells[0].source
    assert "git+https://github.com/a-teacher/sdlearn-fork@v" in nb.cells[1].source
    assert [c.get("outputs") for c in nb.cells] == [c.get("outputs") for c in stored.cells]
    assert any(c.get("outputs") for c in nb.cells)
    code = [c for c in nb.cells if c.cell_type == "code"][2]
    code.source += "\nprint('new')"                                     # a real code change is reported
    assert nbtool.keep_outputs(nb, stored, "01", fork) == [code.id]
    with pytest.raises(ValueError, match="added, removed"):
        nbtool.keep_outputs(nb, nbformat.v4.new_notebook(), "01", fork)


def test_project_home_must_be_a_github_repository(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\nversion = "1.0"\n[project.urls]\nHomepage = "https://gitlab.com/a/b"\n')
    with pytest.raises(ValueError, match="Homepage must be a GitHub repository"):
        nbtool.read_project(pyproject)
    pyproject.write_text('[project]\nname = "x"\nversion = "1.0"\n[project.urls]\nHomepage = "https://github.com/a/b.git"\n')
    assert nbtool.read_project(pyproject) == nbtool.Project("https://github.com/a/b", "1.0")


def test_setup_marker_cell_must_be_empty():
    with pytest.raises(ValueError, match="must be empty"):
        nbtool.parse_cells("# %% [setup]\nimport os\n")
