"""Render the series, both editions, to a static HTML book in build/book/ (``make book``).

    python tools/book.py                 # -> build/book/index.html, student/NN_*.html, solutions/NN_*.html

Each page is a stored, executed notebook rendered by nbconvert with every figure inline (output
images and markdown attachments become data: URIs), so the book needs no kernel, no network and no
other file: a classroom can project it, a reader can open it from a USB stick. Every page has a bar
linking the index, the previous and next notebook, and the same notebook in the other edition.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDITIONS = {"student": ROOT / "notebooks", "solutions": ROOT / "notebooks" / "solutions"}
MATHJAX_DEBIAN = Path("/usr/share/javascript/mathjax")   # apt-get install libjs-mathjax (make book does)
MATHJAX_CONFIG = "config=TeX-AMS_CHTML-full,Safe"
NAV_STYLE = ("position:sticky;top:0;z-index:10;background:#f4f4f4;border-bottom:1px solid #ccc;"
             "padding:6px 12px;font:14px sans-serif")


def notebooks(folder: Path) -> list[Path]:
    """The series' notebooks in reading order (NN_topic.ipynb)."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def title(nb_path: Path) -> str:
    """The notebook's title: the first markdown heading, without the leading '#'."""
    for cell in json.loads(nb_path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return nb_path.stem


def nav_bar(edition: str, names: list[str], k: int) -> str:
    """Index · previous · next · the other edition, for page ``k`` of ``names``."""
    other = "solutions" if edition == "student" else "student"
    links = ['<a href="../index.html">index</a>']
    if k > 0:
        links.append(f'<a href="{names[k - 1]}.html">&larr; {names[k - 1]}</a>')
    if k + 1 < len(names):
        links.append(f'<a href="{names[k + 1]}.html">{names[k + 1]} &rarr;</a>')
    links.append(f'<a href="../{other}/{names[k]}.html">{other} edition</a>')
    return (f'<nav class="sdlearn-book" style="{NAV_STYLE}"><b>sdlearn</b> · {edition} edition · '
            + " · ".join(links) + "</nav>")


def render(nb_path: Path, mathjax_url: str) -> str:
    """One notebook -> a self-contained HTML page (figures inline, no kernel). Scripts from the web
    are dropped (require.js and the widget manager: a static page runs no widgets), except MathJax,
    which is served from the book's own folder when Debian's copy is installed."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True, mathjax_url=mathjax_url)
    body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4))
    body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>\n?',
                  lambda m: m.group(0) if "mathjax" in m.group(0).lower() else "", body)
    # the Colab badge is a picture from the web: offline, a text link says the same
    return re.sub(r'<img[^>]*src="https://colab\.research\.google\.com/assets/colab-badge\.svg"[^>]*>',
                  "[Open in Colab]", body)


def copy_mathjax(out: Path) -> str:
    """Copy Debian's MathJax into the book (offline formulas); the URL pages load it from."""
    import shutil

    if not (MATHJAX_DEBIAN / "MathJax.js").is_file():
        print("note: libjs-mathjax is not installed; formulas will load MathJax from the web", file=sys.stderr)
        return f"https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?{MATHJAX_CONFIG}"
    target = out / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(MATHJAX_DEBIAN, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unpacked", "test"))
    return f"../mathjax/MathJax.js?{MATHJAX_CONFIG}"


def build(out: Path = ROOT / "build" / "book") -> list[Path]:
    """Write the book; returns the pages written (index first)."""
    written = []
    rows = []
    names = {ed: [p.stem for p in notebooks(folder)] for ed, folder in EDITIONS.items()}
    if not names["student"]:
        raise SystemExit(f"no notebooks in {EDITIONS['student']}")
    out.mkdir(parents=True, exist_ok=True)
    mathjax_url = copy_mathjax(out)
    for edition, folder in EDITIONS.items():
        (out / edition).mkdir(parents=True, exist_ok=True)
        for k, path in enumerate(notebooks(folder)):
            page = render(path, mathjax_url)
            page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav_bar(edition, names[edition], k), page, count=1)
            target = out / edition / f"{path.stem}.html"
            target.write_text(page, encoding="utf-8")
            written.append(target)
    for path in notebooks(EDITIONS["student"]):
        cells = [f'<a href="student/{path.stem}.html">student edition</a>']
        if path.stem in names["solutions"]:
            cells.append(f'<a href="solutions/{path.stem}.html">solutions</a>')
        rows.append(f"<tr><td>{html.escape(path.stem[:2])}</td><td>{html.escape(title(path))}</td>"
                    f"<td>{' · '.join(cells)}</td></tr>")
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sdlearn: the book</title>"
        "<style>body{font:16px/1.5 sans-serif;max-width:60em;margin:2em auto}td{padding:4px 12px}"
        "tr:nth-child(even){background:#f4f4f4}</style></head><body>"
        "<h1>sdlearn: Stable Diffusion, built from scratch</h1>"
        "<p>The series as stored and executed, readable without a kernel. The student edition has the "
        "exercises unsolved, with the hints its check cells print; the solutions edition has them "
        "solved. See <code>notebooks/TEACHERS.md</code> for the teacher's guide.</p>"
        "<table><tr><th>#</th><th>notebook</th><th>read</th></tr>" + "".join(rows) + "</table></body></html>",
        encoding="utf-8")
    return [index, *written]


def expected_images(nb_path: Path) -> int:
    """How many pictures a notebook holds: image outputs plus markdown attachments."""
    n = 0
    for cell in json.loads(nb_path.read_text())["cells"]:
        n += len(cell.get("attachments", {}))
        n += sum(1 for o in cell.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {})))
    return n


def check(out: Path) -> list[str]:
    """What is wrong with a built book: index links that lead nowhere, notebooks the index misses,
    pages with fewer inline images than their notebook holds, links to images outside the page."""
    problems = []
    index = (out / "index.html").read_text(encoding="utf-8")
    linked = set(re.findall(r'href="([^"]+\.html)"', index))
    for edition, folder in EDITIONS.items():
        for path in notebooks(folder):
            rel = f"{edition}/{path.stem}.html"
            page_file = out / rel
            if rel not in linked:
                problems.append(f"index.html does not link {rel}")
            if not page_file.is_file():
                problems.append(f"{rel} was not written")
                continue
            page = page_file.read_text(encoding="utf-8")
            inline = len(re.findall(r'<img[^>]+src="data:image/', page))
            if inline < expected_images(path):
                problems.append(f"{rel}: {inline} inline images, the notebook has {expected_images(path)}")
            for src in re.findall(r'<img[^>]+src="(?!data:)([^"]+)"', page):
                problems.append(f"{rel}: image {src!r} is not inline (it will not show offline)")
            for href in re.findall(r'<nav class="sdlearn-book".*?</nav>', page, re.S)[0:1]:
                for target in re.findall(r'href="([^"]+)"', href):
                    if not (page_file.parent / target).resolve().is_file():
                        problems.append(f"{rel}: navigation link {target!r} leads nowhere")
    for target in linked:
        if not (out / target).is_file():
            problems.append(f"index.html links {target}, which does not exist")
    return problems


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    args = ap.parse_args(argv)
    pages = build(args.out)
    problems = check(args.out)
    for p in problems:
        print(f"book: {p}", file=sys.stderr)
    if problems:
        raise SystemExit(f"the book in {args.out} has {len(problems)} problem(s)")
    print(f"wrote {len(pages)} pages to {args.out} and checked them: every notebook linked, every "
          f"figure inline (open {args.out / 'index.html'})", file=sys.stderr)


if __name__ == "__main__":
    main()
