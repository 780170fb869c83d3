"""Teachers' tools: a student edition gives nothing away, and grading gives points only for right answers."""

from __future__ import annotations

import csv
import re
from pathlib import Path

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
    return run_check("double", check, hints=("think of doubling",))'''


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
    ("    return 6", "failed", 0, "double(-4): expected -8, got 6"),  # hard-coded: no named mistake, what failed
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


# ---- the real notebooks: a student edition, executed as handed out, then graded with every answer --------

ROOT = Path(__file__).resolve().parent.parent
NOT_ATTEMPTED = "· {}: not attempted yet. Replace `raise NotImplementedError` in your function.\n"
NOT_PREDICTED = "· {}: not attempted yet. Set `{}` to your prediction and run the cell again.\n"


def _solution_lines() -> set[str]:
    """The lines of code of every reference solution (long enough to be telling)."""
    lines = set()
    for path in (ROOT / "teacher" / "solutions").glob("[a-z]*.py"):
        for line in path.read_text().splitlines():
            code = line.split("  #")[0].strip()
            if len(code) >= 16 and not code.startswith(("#", '"""', "def ", "import ", "from ")):
                lines.add(code)
    return lines


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join([output.get("ename", ""), output.get("evalue", "")] + output.get("traceback", []))
    return "\n".join(str(v) for k, v in output.get("data", {}).items() if k.startswith("text"))


def _exercises(notebook) -> list[tuple[int, str, str]]:
    """(index of the checker cell, exercise, the answer's function or variable name) of every exercise."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if classroom._nbgrader(cell).get("solution") and (m := re.match(r"def (\w+)\(|(\w+) = None\b", cell.source)):
            found.append((index + 1, classroom._nbgrader(cell)["grade_id"], m.group(1) or m.group(2)))
    return found


def _solution_module(exercise: str) -> str:
    import teacher.solutions as solutions

    for path in sorted(Path(solutions.__file__).parent.glob("[a-z]*.py")):
        if re.search(rf"^def {exercise}\(", path.read_text(), re.M):
            return f"teacher.solutions.{path.stem}"
    raise LookupError(exercise)


def _every_answer(notebook) -> tuple[nbformat.NotebookNode, dict[int, str]]:
    """The notebook with, after each exercise's checker, the same checker on each listed mistake, on an
    answer that calls the package, and on the reference solution: one run grades them all. Also
    returns where the checkers of the untouched stubs now are ({cell index: exercise})."""
    from teacher.mistakes import MISTAKES, USES_PACKAGE, WRONG_PREDICTIONS
    from teacher.solutions.predictions import ANSWERS

    cells = [nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {str(ROOT)!r})  # the teacher/ folder")]
    exercises = {checker: (name, function) for checker, name, function in _exercises(notebook)}
    stubs = {}
    for index, cell in enumerate(notebook.cells):
        cells.append(cell)
        if index not in exercises:
            continue
        stubs[len(cells) - 1] = exercises[index][0]
        name, function = exercises[index]
        if name in ANSWERS:  # a prediction: `function` is the variable the student sets
            values = [value for _, value in WRONG_PREDICTIONS[name]] + [ANSWERS[name]]
            answers = [f"{function} = {value}" for value in values]
        else:
            answers = [f"from teacher.mistakes import {wrong.__name__} as {function}" for _, wrong in MISTAKES[name]]
            if name in USES_PACKAGE:
                answers.append(f"from teacher.mistakes import USES_PACKAGE\n{function} = USES_PACKAGE[{name!r}]")
            answers.append(f"from {_solution_module(name)} import {name} as {function}")
        for answer in answers:
            cells += [nbformat.v4.new_code_cell(answer), nbformat.v4.new_code_cell(cell.source, metadata=cell.metadata)]
    notebook.cells = cells
    return notebook, stubs


def test_the_student_edition_of_the_notebooks_runs_gives_nothing_away_and_grades_every_answer(tmp_path):
    from teacher.mistakes import MISTAKES, USES_PACKAGE, WRONG_PREDICTIONS
    from teacher.solutions.predictions import NAMES

    handout = classroom.student_edition(ROOT / "notebooks", tmp_path / "handout")
    solution_lines = _solution_lines()
    submitted = tmp_path / "submissions" / "every-answer"
    submitted.mkdir(parents=True)
    graded, stubs, variable = set(), {}, {}
    for path in handout:
        notebook = nbformat.read(path, as_version=4)
        stored = "\n".join(_text(o) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
        assert [line for line in solution_lines if line in stored] == [], path.name
        variable.update({name: var for _, name, var in _exercises(notebook)})
        if exercises := _exercises(notebook):
            filled, stubs[path.name] = _every_answer(notebook)
            nbformat.write(filled, submitted / path.name)
            graded |= {name for _, name, _ in exercises}
    assert graded == set(MISTAKES) | set(WRONG_PREDICTIONS)  # every listed exercise is in a notebook, and no other

    rows = classroom.grade(tmp_path / "submissions", tmp_path / "grades.csv", feedback=tmp_path / "feedback",
                           workdir=tmp_path / "handout")  # the handout's data/, copied by student_edition
    by_exercise: dict[str, list[dict]] = {}
    for row in rows:
        by_exercise.setdefault(row["exercise"], []).append(row)
    for name, listed in {**MISTAKES, **WRONG_PREDICTIONS}.items():
        got = by_exercise[NAMES.get(name, name)]
        statuses = ["not attempted"] + ["failed"] * len(listed) + ["refused"] * (name in USES_PACKAGE) + ["passed"]
        assert [r["status"] for r in got] == statuses, name
        assert [r["points"] for r in got] == [0.0] * (len(statuses) - 1) + [1.0], name
        for (words, wrong), row in zip(listed, got[1:], strict=False):
            assert re.search(words, row["mistake"]), (name, wrong, row["mistake"])

    # The stub, executed as handed out: "not attempted" and nothing more (no hint, no code).
    for name, where in stubs.items():
        cells = nbformat.read(tmp_path / "feedback" / "every-answer" / name, as_version=4).cells
        for index, exercise in where.items():
            printed = "".join(_text(o) for o in cells[index].outputs if o.output_type == "stream")
            shown = NAMES.get(exercise, exercise)  # (the cell's value, False, is not printed)
            assert printed in (NOT_ATTEMPTED.format(shown), NOT_PREDICTED.format(shown, variable[exercise])), exercise
