"""Two editions from one source: the student edition (exercise stubs) and the solutions edition.

In ``notebooks/src/NN_topic.py`` an exercise's answer is written between marker lines:

    # BEGIN SOLUTION
    answer_1 = int((snr < 1).nonzero()[0]) + 1
    # END SOLUTION
    # STUB: answer_1 = None   # the step t (counted from 1) where SNR first falls below 1

* the **solutions edition** keeps the lines between the markers and drops the ``# STUB:`` lines;
* the **student edition** drops the lines between the markers and keeps each ``# STUB:`` line with
  its prefix removed (indentation before ``#`` is kept, so stubs work inside a function body).

The same markers work in markdown cells (as ``# BEGIN SOLUTION`` lines of the source, which become
``BEGIN SOLUTION`` lines of the cell). A cell left empty in one edition is dropped from it.
"""
from __future__ import annotations

import re

EDITIONS = ("student", "solutions")
_BEGIN = re.compile(r"^\s*(#\s*)?BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*(#\s*)?END SOLUTION\s*$")
_STUB = re.compile(r"^(\s*)#\s?STUB:\s?(.*)$")


def edition_source(source: str, edition: str, where: str = "cell") -> str:
    """The cell's source as ``edition`` shows it (see the module docstring)."""
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}; got {edition!r}")
    out, inside = [], False
    for n, line in enumerate(source.splitlines(), 1):
        if _BEGIN.match(line):
            if inside:
                raise ValueError(f"{where}, line {n}: BEGIN SOLUTION inside another solution block")
            inside = True
            continue
        if _END.match(line):
            if not inside:
                raise ValueError(f"{where}, line {n}: END SOLUTION without BEGIN SOLUTION")
            inside = False
            continue
        stub = _STUB.match(line)
        if stub:
            if inside:
                raise ValueError(f"{where}, line {n}: a STUB line inside a solution block")
            if edition == "student":
                out.append(stub.group(1) + stub.group(2))
            continue
        if inside and edition == "student":
            continue
        out.append(line)
    if inside:
        raise ValueError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return "\n".join(out)


def has_solutions(source: str) -> bool:
    """Whether a source uses the markers at all."""
    return any(_BEGIN.match(line) for line in source.splitlines())
