"""The two editions built from one source (tools/editions.py) and the exercise checks (sdlearn.exercises)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from editions import edition_source  # noqa: E402

from sdlearn.exercises import check, close  # noqa: E402

SOURCE = """x = 1
# BEGIN SOLUTION
answer = x + 1
# END SOLUTION
# STUB: answer = None   # your answer
def f(a):
    # BEGIN SOLUTION
    return a * 2
    # END SOLUTION
    # STUB: return a"""


def test_student_edition_has_stubs_and_no_answer():
    student = edition_source(SOURCE, "student")
    assert "x + 1" not in student and "a * 2" not in student and "SOLUTION" not in student
    assert "answer = None   # your answer" in student.splitlines()
    assert "    return a" in student.splitlines()          # indentation kept inside a function
    ns = {}
    exec(student, ns)
    assert ns["answer"] is None and ns["f"](3) == 3


def test_solutions_edition_has_answers_and_no_stubs():
    solutions = edition_source(SOURCE, "solutions")
    assert "STUB" not in solutions and "SOLUTION" not in solutions
    ns = {}
    exec(solutions, ns)
    assert ns["answer"] == 2 and ns["f"](3) == 6


@pytest.mark.parametrize("bad, message", [
    ("# BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another"),
    ("# BEGIN SOLUTION\n# STUB: x = 1\n# END SOLUTION", "STUB line inside"),
])
def test_broken_markers_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        edition_source(bad, "student")


def test_unknown_edition_is_refused():
    with pytest.raises(ValueError, match="edition"):
        edition_source(SOURCE, "teacher")


def test_check_hints_until_right(capsys):
    assert check("Exercise 1", None, expected=3, hint="count them") is False
    assert "not yet" in capsys.readouterr().out
    assert check("Exercise 1", 4, expected=3, hint="count them") is False
    out = capsys.readouterr().out
    assert out.startswith("not yet") and "count them" in out
    assert check("Exercise 1", 3, expected=3) is True
    assert capsys.readouterr().out.strip() == "Exercise 1: correct!"


def test_a_tuple_of_stubs_is_a_stub(capsys):
    assert check("Ex", (None, None), expected=(1, 2), hint="h") is False
    assert "still the stub" in capsys.readouterr().out
    assert check("Ex", (1, None), expected=(1, 2)) is False
    assert "not right" in capsys.readouterr().out


def test_check_with_a_test_function_reports_errors_as_hints(capsys):
    assert check("Ex", [1, 2], test=lambda a: a[5] == 1, hint="h") is False
    assert "IndexError" in capsys.readouterr().out
    assert check("Ex", 2, test=lambda a: "too small" if a < 3 else True) is False
    assert "too small" in capsys.readouterr().out
    assert check("Ex", 3, test=lambda a: "too small" if a < 3 else True) is True
    with pytest.raises(ValueError, match="either expected= or test="):
        check("Ex", 3)


@pytest.mark.parametrize("a, e, same", [
    (3, 3, True), (3, 4, False), (0.1 + 0.2, 0.3, True), (1.0, 1.1, False), ("a", "a", True),
    (torch.ones(2), torch.ones(2), True), (torch.ones(2), torch.ones(3), False), (torch.ones(2), [1, 1], False),
    ([1, 2.0], (1, 2.0000001), True), ({"a": 1}, {"a": 1}, True), (True, True, True), (1, True, False),
])
def test_close(a, e, same):
    assert close(a, e) is same
