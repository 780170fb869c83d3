"""For teachers only (not installed with the package, not in the student edition of the notebooks).

- `teacher.solutions.<topic>`: a reference solution of every exercise of that notebook;
- `teacher.mistakes`: for every exercise, plausible wrong answers, each with the words its checker
  must use to name the mistake, and an answer that calls the package's own function (refused).

tests/test_exercises.py runs each checker on all of them; tests/test_classroom.py puts them into
the student edition of the notebooks and grades the result.
"""
