"""Build a notebook from its source in notebooks/src/NN_topic.py and (optionally) execute it.

The source uses "# %%" to start a code cell and "# %% [markdown]" to start a markdown cell
(markdown lines are written as comments: "# text"). The .ipynb in notebooks/ is what learners open
and what nbval checks; tests/test_notebooks_in_sync.py guards that both say the same thing.

    python tools/nb.py notebooks/src/01_forward_noising.py            # build + execute
    python tools/nb.py --no-execute notebooks/src/01_forward_noising.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format source into (kind, source) cells."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            lines = [l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines]
        out.append((kind, "\n".join(lines)))
    return out


def build(src: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(parse_cells(src.read_text())):
        new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new(source, id=f"cell-{i:03d}"))   # stable ids: a rebuild changes no id
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    from nbconvert.preprocessors import ExecutePreprocessor

    env_before = dict(os.environ)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(ROOT / "notebooks")}})
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    for cell in nb.cells:                # drop run timestamps: they would make every rebuild a diff
        cell.metadata.pop("execution", None)
    return nb


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--no-execute", action="store_true")
    args = ap.parse_args(argv)
    for src in args.sources:
        nb = build(src)
        if not args.no_execute:
            t0 = time.time()
            execute(nb)
            print(f"{src.name}: executed in {time.time() - t0:.1f} s", file=sys.stderr)
        target = ROOT / "notebooks" / (src.stem + ".ipynb")
        nbformat.write(nb, target)
        print(f"wrote {target.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
