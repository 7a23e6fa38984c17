"""Each notebook in notebooks/ is built from its source in notebooks/src/ (tools/nb.py): the cells
learners read must be the cells the source holds, and every code cell must have been executed."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nb as nbtool  # noqa: E402

SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_matches_source(src):
    target = ROOT / "notebooks" / (src.stem + ".ipynb")
    assert target.exists(), f"{target.name} missing: run python tools/nb.py {src.relative_to(ROOT)}"
    cells = json.loads(target.read_text())["cells"]
    want = nbtool.parse_cells(src.read_text())
    got = [(c["cell_type"], "".join(c["source"])) for c in cells]
    assert got == want, f"{target.name} is out of date with its source: rebuild it with tools/nb.py"
    for c in cells:
        if c["cell_type"] == "code":
            assert c.get("execution_count") is not None, f"{target.name} has an unexecuted cell"
            assert not any(o.get("output_type") == "error" for o in c.get("outputs", []))


def test_every_notebook_has_a_source():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks == [s.stem for s in SOURCES]
