"""Teachers' tools: a student edition gives nothing away, and grading gives points only for right answers."""

from __future__ import annotations

import csv

import nbformat
import pytest

from grok_mini.teach import classroom

ANSWER_CELL = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION


check_double(double)'''

SETUP = '''from grok_mini.teach.exercises import call, expect_equal, run_check


def check_double(double):
    def check():
        for x in (3, -4, 10):
            expect_equal(call(double, x), 2 * x, what=f"double({x})",
                         mistakes=[(x + x + 1, "off by one"), (x * x, "you squared it")])
        return "three inputs"
    return run_check("double", check, hint="multiply by two")'''


def notebook(answer: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(answer)
    cell.metadata["nbgrader"] = {"solution": True, "grade": True, "grade_id": "double", "points": 2,
                                 "locked": False, "schema_version": 3}
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✓ double: passed (three inputs)\n")]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), cell])


def test_the_student_edition_strips_solutions_and_their_outputs(tmp_path):
    (tmp_path / "teacher").mkdir()
    nbformat.write(notebook(ANSWER_CELL), tmp_path / "teacher" / "01_double.ipynb")
    [path] = classroom.student_edition(tmp_path / "teacher", tmp_path / "student")
    text = path.read_text()
    assert "return 2 * x" not in text and "BEGIN SOLUTION" not in text and "passed" not in text
    assert classroom.STUB in nbformat.read(path, as_version=4).cells[1].source


@pytest.mark.parametrize("body, status, points, mistake", [
    ("    return 2 * x", "passed", 2, ""),
    (f"    {classroom.STUB}", "not attempted", 0, ""),
    ("    return x * x", "failed", 0, "you squared it"),
    ("    return x + x + 1", "failed", 0, "off by one"),
    ("    return 6", "failed", 0, ""),  # hard-coded for the first input only
])
def test_grading_executes_submissions_and_names_the_mistake(tmp_path, body, status, points, mistake):
    submitted = ANSWER_CELL.replace("    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", body)
    (tmp_path / "submissions" / "ada").mkdir(parents=True)
    nbformat.write(notebook(submitted), tmp_path / "submissions" / "ada" / "01_double.ipynb")
    rows = classroom.grade(tmp_path / "submissions", tmp_path / "grades.csv", timeout=120)
    assert [(r["exercise"], r["status"], r["points"], r["mistake"]) for r in rows] == \
        [("double", status, points, mistake)]
    with open(tmp_path / "grades.csv", newline="") as file:
        assert next(csv.DictReader(file))["student"] == "ada"
