"""Checkers for the notebook exercises, one module per notebook (scale, embeddings, rope, attention, ...).

Each notebook ends with exercise cells: a function stub to fill in, then a checker call such as
`exercises.rope.check_rope(apply_rope)`. Every checker follows one convention:

- correct → prints "✓ <exercise>: passed (…what was checked…)" and returns True;
- still the stub (the function raises NotImplementedError) → prints "· <exercise>: not attempted
  yet" with a hint and returns False, so a fresh notebook runs top to bottom (and nbval stays green);
- wrong → raises ExerciseFailed (an AssertionError) naming the input that failed, what was
  expected, what came back and, where the mistake is a known one (interleaved RoPE, a forgotten
  cap, an embedding counted twice, ...), a hint about that mistake.

Writing a checker for a new notebook: add a module here, build each check from `run_check`
(prints and returns as above), `call` (runs the student's function, turning NotImplementedError
into "not attempted" and other errors into ExerciseFailed), and `expect_close` / `expect_equal`
(compare, with a list of (known mistake's answer, hint) pairs to diagnose). Reference
solutions go in notebooks/solutions/<module>.py, and tests/test_exercises.py proves that each
checker accepts them and rejects a plausible wrong answer with its hint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["ExerciseFailed", "NotAttempted", "run_check", "call", "expect_close", "expect_equal", "GRADEBOOK_VARIABLE"]


class ExerciseFailed(AssertionError):
    """The answer is wrong; the message says where and, when it recognises the mistake, why."""


class NotAttempted(Exception):
    """The exercise function still raises NotImplementedError."""


GRADEBOOK_VARIABLE = "GROK_MINI_GRADEBOOK"  # set by the grader (teach.classroom): verdicts are appended there
_attempts: dict[str, int] = {}  # wrong attempts so far, per exercise, in this kernel


def run_check(name: str, check: Callable[[], str], *, hint: str, answer: Callable | None = None,
              refuse: Iterable[Callable] = ()) -> bool:
    """Run `check` (returns a summary of what passed); print the verdict in the shared convention.

    The stub gets "not attempted yet" and nothing else: no hint before a first attempt. A wrong
    answer raises ExerciseFailed with what went wrong (and the mistake, where it is a known one);
    from the second wrong attempt on, `hint` is added. `answer` given as one of the package's own
    functions in `refuse` is refused kindly: writing it is the exercise.
    """
    for function in refuse:
        if _same_function(answer, function):
            where = f"{function.__module__}.{function.__qualname__}"
            print(f"✗ {name}: that is the package's own `{where}`, which this exercise asks you to write "
                  "yourself; compare your version with it once it works.")
            _record(name, "refused", where)
            return False
    try:
        summary = check()
    except NotAttempted:
        print(f"· {name}: not attempted yet. Replace `raise NotImplementedError` in your function.")
        _record(name, "not attempted")
        return False
    except ExerciseFailed as error:
        attempts = _attempts[name] = _attempts.get(name, 0) + 1
        _record(name, "failed", getattr(error, "mistake", None))
        more = (f"\nHint (after {attempts} wrong attempts): {hint}" if attempts >= 2 else
                "\n(Change your function and run the cell again; a second wrong attempt adds a general hint.)")
        raise ExerciseFailed(f"{error}{more}") from None
    print(f"✓ {name}: passed ({summary})")
    _record(name, "passed")
    return True


def _same_function(answer, function) -> bool:
    """`answer` is `function` itself, or a functools.partial of it."""
    while answer is not None:
        if answer is function:
            return True
        answer = getattr(answer, "func", None)  # functools.partial
    return False


def _record(name: str, status: str, mistake: str | None = None) -> None:
    """Append the verdict to the grader's gradebook, when a grader runs this notebook."""
    path = os.environ.get(GRADEBOOK_VARIABLE)
    if not path:
        return
    try:
        count = get_ipython().execution_count  # noqa: F821 (IPython's builtin in a notebook)
    except NameError:
        count = None
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(dict(exercise=name, status=status, mistake=mistake, execution_count=count)) + "\n")


def call(function: Callable, *args, **kwargs) -> Any:
    """Call the student's function; NotImplementedError means not attempted, other errors fail clearly."""
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted from None
    except Exception as error:
        shown = ", ".join([_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()])
        raise ExerciseFailed(f"your {getattr(function, '__name__', 'function')}({shown}) raised "
                             f"{type(error).__name__}: {error}") from error


def _describe(value: Any) -> str:
    """A short description of an argument: arrays by shape and dtype, the rest by repr (truncated)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"array{list(value.shape)} {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _diagnose(got: Any, mistakes: Iterable[tuple[Any, str]], same: Callable[[Any, Any], bool]) -> str:
    """The hint of the first known mistake `got` equals, or ""."""
    for wrong_answer, hint in mistakes:
        try:
            if same(got, wrong_answer):
                return hint
        except (ValueError, TypeError):  # shapes that cannot even be compared: not this mistake
            continue
    return ""


def _failed(message: str, mistake: str) -> ExerciseFailed:
    error = ExerciseFailed(message + (f"\nThe mistake: {mistake}" if mistake else ""))
    error.mistake = mistake or None  # what the grader records
    return error


def expect_equal(got: Any, expected: Any, *, what: str, mistakes: Iterable[tuple[Any, str]] = ()) -> None:
    """Exact comparison of plain values (ints, tuples); on mismatch, diagnose known mistakes."""
    if got == expected:
        return
    raise _failed(f"{what}: expected {expected!r}, got {got!r}", _diagnose(got, mistakes, lambda a, b: a == b))


def expect_close(got: Any, expected: np.ndarray, *, what: str, rtol: float = 1e-4, atol: float = 1e-5,
                 mistakes: Iterable[tuple[Any, str]] = (), dtype: Any = None) -> None:
    """Compare arrays (shape, optional dtype, values); on mismatch, diagnose known mistakes."""
    expected = np.asarray(expected)
    if dtype is not None and getattr(got, "dtype", None) != np.dtype(dtype):
        raise ExerciseFailed(f"{what}: expected dtype {np.dtype(dtype)}, got {getattr(got, 'dtype', type(got))}"
                             " (compute in float32 if you like, but return the input's dtype)")
    got_array = np.asarray(got, np.float64)
    if got_array.shape != expected.shape:
        raise ExerciseFailed(f"{what}: expected shape {expected.shape}, got {got_array.shape}")

    def same(a, b):
        return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)

    if same(got_array, expected):
        return
    worst = np.unravel_index(np.argmax(np.abs(got_array - expected)), expected.shape)
    mistake = _diagnose(got_array, mistakes, same)
    raise _failed(f"{what}: values differ, e.g. at index {tuple(int(i) for i in worst)} expected "
                  f"{expected[worst]:.6g}, got {got_array[worst]:.6g} "
                  f"(max |difference| {np.max(np.abs(got_array - expected)):.3g})", mistake)
