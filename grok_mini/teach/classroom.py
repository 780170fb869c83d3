"""For teachers: a student edition of the notebooks, and grading a folder of completed ones.

    grok-mini classroom student notebooks/ handout/        # what students get
    grok-mini classroom grade submissions/ --out grades.csv

The convention follows nbgrader's, so the notebooks also work in an nbgrader course: a cell whose
`metadata.nbgrader.solution` is true is an answer cell, and any code between `### BEGIN SOLUTION`
and `### END SOLUTION` in it becomes `raise NotImplementedError  # your code here` in the student
edition; its outputs, and those of cells tagged `answer-output`, are cleared. `points` in a cell's
nbgrader metadata is what each exercise checked in that cell is worth (1 by default).

Grading executes each student's notebook from the top in a fresh kernel with
$GROK_MINI_GRADEBOOK set: every checker (`teach.exercises.run_check`) appends its verdict there
(passed, failed with the mistake it recognised, not attempted, or refused because the answer was
the package's own function), and the grader turns those lines into one CSV row per student and
exercise. A notebook that cannot run to the end still gets its rows: the exercises before the error
keep their verdicts, the rest are "not run".
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat

from grok_mini.teach.exercises import GRADEBOOK_VARIABLE

__all__ = ["student_edition", "grade", "GRADEBOOK_VARIABLE", "STUB"]

STUB = "raise NotImplementedError  # your code here"
_SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION[ \t]*$", re.S | re.M)
GRADE_COLUMNS = ("student", "notebook", "exercise", "status", "points", "max_points", "mistake")


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def strip_solutions(source: str) -> str:
    """Every `### BEGIN SOLUTION` … `### END SOLUTION` region replaced by the stub, at its indentation."""
    return _SOLUTION.sub(lambda match: f"{match[1]}{STUB}", source)


def student_edition(notebooks: str | Path, out: str | Path) -> list[Path]:
    """Write the student edition of every NN_*.ipynb in `notebooks` to `out`; returns the files written.

    The stored data the notebooks read (`notebooks/data/`: training histories, the lab's sweep) is
    copied beside them; nothing else (no solutions) is.
    """
    notebooks, out = Path(notebooks), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (notebooks / "data").is_dir():
        shutil.copytree(notebooks / "data", out / "data", dirs_exist_ok=True)
    written = []
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            answer = _nbgrader(cell).get("solution", False)
            if cell.cell_type == "code" and answer:
                cell.source = strip_solutions(cell.source)
            if cell.cell_type == "code" and (answer or "answer-output" in cell.get("metadata", {}).get("tags", [])):
                cell.outputs, cell.execution_count = [], None
        nbformat.write(notebook, out / path.name)
        written.append(out / path.name)
    return written


def _points(notebook) -> dict[int, float]:
    """Cell index → points each exercise checked in that cell is worth."""
    return {i: float(_nbgrader(cell).get("points", 1)) for i, cell in enumerate(notebook.cells)}


def grade_notebook(path: str | Path, *, timeout: float = 600, feedback: str | Path | None = None,
                   workdir: str | Path | None = None) -> list[dict]:
    """Execute one completed notebook cell by cell and return its verdicts, each with its cell's index.

    A cell that raises (a wrong answer raises ExerciseFailed) does not stop the rest: every
    exercise is graded on its own. `feedback`: where to write the executed notebook, with every
    checker's message, to hand back to the student. `workdir`: the folder the notebook runs in
    (default: its own), e.g. the course's notebooks/ folder, whose data/ some notebooks read.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    verdicts = []
    with tempfile.TemporaryDirectory() as folder:
        gradebook = Path(folder) / "gradebook.jsonl"
        gradebook.touch()
        previous = os.environ.get(GRADEBOOK_VARIABLE)
        os.environ[GRADEBOOK_VARIABLE] = str(gradebook)  # the kernel inherits it
        try:
            client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(workdir or path.parent)}})
            with client.setup_kernel():
                for index, cell in enumerate(notebook.cells):
                    if cell.cell_type != "code":
                        continue
                    try:
                        client.execute_cell(cell, index)
                    except CellExecutionError:
                        pass  # the verdict it wrote still counts
                    lines = gradebook.read_text().splitlines()
                    verdicts += [dict(json.loads(line), cell=index) for line in lines[len(verdicts):] if line.strip()]
            if feedback is not None:
                nbformat.write(notebook, feedback)
        finally:
            if previous is None:
                os.environ.pop(GRADEBOOK_VARIABLE, None)
            else:
                os.environ[GRADEBOOK_VARIABLE] = previous
    return verdicts


def grade(submissions: str | Path, out: str | Path, *, expected: dict[str, list[str]] | None = None,
          timeout: float = 600, feedback: str | Path | None = None, workdir: str | Path | None = None) -> list[dict]:
    """Grade `submissions/<student>/<NN_name>.ipynb`; write and return one row per student and exercise.

    `expected` ({notebook name: [exercise names]}) lists the exercises that must appear, so one a
    student never reached (the notebook stopped earlier) gets a row "not run" with 0 points.
    `feedback`: a folder that receives `<student>/<NN_name>.ipynb` executed, with the checkers' messages.
    `workdir`: the folder every notebook runs in (default: the student's folder).
    """
    rows = []
    for student in sorted(p for p in Path(submissions).iterdir() if p.is_dir()):
        for path in sorted(student.glob("[0-9][0-9]_*.ipynb")):
            points = _points(nbformat.read(path, as_version=4))
            seen = set()
            returned = None
            if feedback is not None:
                (Path(feedback) / student.name).mkdir(parents=True, exist_ok=True)
                returned = Path(feedback) / student.name / path.name
            for verdict in grade_notebook(path, timeout=timeout, feedback=returned, workdir=workdir):
                worth = points.get(verdict.get("cell", -1), 1.0)
                seen.add(verdict["exercise"])
                rows.append(dict(student=student.name, notebook=path.name, exercise=verdict["exercise"],
                                 status=verdict["status"], points=worth if verdict["status"] == "passed" else 0.0,
                                 max_points=worth, mistake=verdict.get("mistake") or ""))
            for name in (expected or {}).get(path.name, []):
                if name not in seen:
                    rows.append(dict(student=student.name, notebook=path.name, exercise=name, status="not run",
                                     points=0.0, max_points=1.0, mistake=""))
    with open(out, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, GRADE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows
