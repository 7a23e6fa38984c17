"""The notebooks need nothing but the installed package: the files they read ship inside sdlearn,
a learner's run writes nothing into the checkout, and the `colab` extra covers what they import
(`make test-packaged` runs the series from a wheel; these are the fast checks)."""
import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import sdlearn
from sdlearn import viz

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


@pytest.fixture
def figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    yield fig
    plt.close(fig)


def test_save_figure_writes_only_when_the_build_asks(figure, tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")                     # where a learner runs a notebook
    monkeypatch.delenv(viz.FIGURES_ENV, raising=False)
    assert viz.save_figure(figure, "line.png") is None
    assert list(tmp_path.rglob("*.png")) == []                     # ../images stays untouched
    monkeypatch.setenv(viz.FIGURES_ENV, str(tmp_path / "images"))  # as tools/nb.py does
    assert viz.save_figure(figure, "line.png") == tmp_path / "images" / "line.png"
    assert (tmp_path / "images" / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_figure_rejects_bad_names_and_a_missing_figures_dir(figure, tmp_path, monkeypatch):
    monkeypatch.setenv(viz.FIGURES_ENV, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="SDLEARN_FIGURES_DIR must name an existing directory"):
        viz.save_figure(figure, "line.png")
    with pytest.raises(ValueError, match="name must be a file name ending in .png"):
        viz.save_figure(figure, "../line.png", tmp_path)
    with pytest.raises(TypeError, match="name must be a str"):
        viz.save_figure(figure, Path("line.png"), tmp_path)


def test_packaged_figures_ship_inside_the_package():
    assert sdlearn.ASSETS_DIR == Path(sdlearn.__file__).resolve().parent / "assets"
    for name in ("03_photo_f.json", "03_photo_f.png", "07_training_loss.png"):
        path = viz.packaged_figure(name)
        assert path.parent == sdlearn.ASSETS_DIR / "figures" and path.stat().st_size > 100
    with pytest.raises(ValueError, match=r"one of the packaged figures \[.*'07_training_loss.png'"):
        viz.packaged_figure("07_missing.png")
    with pytest.raises(ValueError, match="packaged figures"):
        viz.packaged_figure("../figures/03_photo_f.png")


def test_notebooks_read_no_file_through_a_relative_path():
    for src in SOURCES:
        code = src.read_text()
        assert not re.search(r"""["']\.\./""", code), f"{src.name} reads a path relative to the checkout"


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~\[(@;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements(extra: str | None = None) -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in (project["optional-dependencies"][extra] if extra else project["dependencies"])}


def _closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (not extras), from the installed metadata."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            try:
                todo += [_name(r) for r in metadata.requires(name) or [] if "extra ==" not in r]
            except metadata.PackageNotFoundError:
                pass
    return seen


def test_colab_extra_covers_what_the_notebooks_import_and_nothing_heavy():
    colab = _pyproject_requirements("colab")
    assert "jupyterlab" not in colab and "torch" not in colab and "notebook" not in colab
    assert colab - {"ipywidgets"} <= _pyproject_requirements("notebooks")
    available = _closure(_pyproject_requirements() | colab)
    providers = metadata.packages_distributions()
    for src in [*SOURCES, *(ROOT / "sdlearn").rglob("*.py")]:
        if "train" in src.parts:                                   # training extras (accelerate) are optional
            continue
        for node in ast.walk(ast.parse(re.sub(r"^\s*%.*$", "", src.read_text(), flags=re.M))):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                for mod in [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]:
                    top = mod.split(".")[0]
                    if top in sys.stdlib_module_names or top == "sdlearn":
                        continue
                    dists = {d.lower().replace("_", "-") for d in providers.get(top, [])}
                    assert dists & available, f"{src.name} imports {top}, which neither sdlearn nor its colab extra installs"


def test_widget_panels_run_on_ipywidgets_7_and_8_and_update_on_release():
    in_both = {"interact", "IntSlider", "FloatSlider", "Text", "Dropdown"}     # ipywidgets 7.7 and 8.x
    panels = 0
    for src in SOURCES:
        text = src.read_text()
        assert set(re.findall(r"widgets\.(\w+)", text)) <= in_both, src.name
        for call in re.findall(r"widgets\.(?:IntSlider|FloatSlider|Text)\([^)]*\)", text):
            assert "continuous_update=False" in call, f"{src.name}: {call}"
        panels += text.count("widgets.interact(")
    assert panels == 3
