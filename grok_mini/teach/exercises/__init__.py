"""Checkers for the notebook exercises, one module per notebook (scale, embeddings, rope, attention, ...).

Each exercise is an answer cell (a function stub to fill in) and a checker cell below it, such as
`checks.check_rope(apply_rope)`. Every checker follows one convention:

- correct → prints "✓ <exercise>: passed (…what was checked…)" and returns True;
- still the stub (the function raises NotImplementedError) → prints "· <exercise>: not attempted
  yet" and nothing more (no hint before an attempt), returns False, so a fresh notebook runs top to
  bottom (and nbval stays green);
- wrong → raises ExerciseFailed (an AssertionError) naming the input that failed, what was
  expected, what came back and, where the mistake is a known one (interleaved RoPE, a forgotten
  cap, an embedding counted twice, ...), what that mistake is; each further wrong attempt adds one
  more hint, from general to specific, in words rather than code;
- an answer that is, or calls, the package function the exercise asks for → refused kindly,
  returns False.

Writing a checker for a new notebook: add a module here, build each check from `run_check`
(prints and returns as above), `call` (runs the student's function, turning NotImplementedError
into "not attempted" and other errors into ExerciseFailed), and `expect_close` / `expect_equal`
(compare, with a list of (known mistake's answer, what the mistake is) pairs to diagnose). Test on
inputs other than the notebook's (other sizes and seeds), so that a hard-coded answer fails.
Reference solutions and the plausible mistakes go in the repository's teacher/ folder (not
installed with the package), and tests/test_exercises.py proves that each checker accepts the
solution, rejects and names every listed mistake, refuses the package's function and fails a
hard-coded answer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["ExerciseFailed", "NotAttempted", "Refused", "run_check", "check_prediction",
           "call", "expect_close", "expect_equal", "GRADEBOOK_VARIABLE"]


class ExerciseFailed(AssertionError):
    """The answer is wrong; the message says where and, when it recognises the mistake, why."""


class NotAttempted(Exception):
    """The exercise function still raises NotImplementedError."""


GRADEBOOK_VARIABLE = "GROK_MINI_GRADEBOOK"  # set by the grader (teach.classroom): verdicts are appended there
_attempts: dict[str, int] = {}  # wrong attempts so far, per exercise, in this kernel
_refused: list[Callable] = []  # the package functions of the exercise being checked (see `call`)


class Refused(Exception):
    """The answer calls one of the package functions that the exercise asks the student to write."""


def run_check(name: str, check: Callable[[], str], *, hints: Sequence[str], answer: Callable | None = None,
              refuse: Iterable[Callable] = ()) -> bool:
    """Run `check` (returns a summary of what passed); print the verdict in the shared convention.

    The stub gets "not attempted yet" and nothing else: no hint before a first attempt. A wrong
    answer raises ExerciseFailed with what went wrong (and the mistake, where it is a known one);
    each further wrong attempt adds the next of `hints`, from general to specific, in words: a
    hint says what to think about, never the code. An `answer` that is, or calls, one of the
    package's functions in `refuse` is refused kindly: writing it is the exercise.
    """
    refuse = tuple(refuse)
    if used := _mentioned(answer, refuse):
        return _refuse(name, used)
    _refused[:] = refuse
    try:
        summary = check()
    except Refused as used:
        return _refuse(name, used.args[0])
    except NotAttempted:
        print(f"· {name}: not attempted yet. Replace `raise NotImplementedError` in your function.")
        _record(name, "not attempted")
        return False
    except ExerciseFailed as error:
        attempts = _attempts[name] = _attempts.get(name, 0) + 1
        _record(name, "failed", getattr(error, "mistake", None) or str(error))  # the named mistake, or what failed
        given = list(hints)[:attempts - 1]
        more = "".join(f"\nHint {i + 1} of {len(hints)}: {hint}" for i, hint in enumerate(given))
        if len(given) < len(hints):
            more += "\n(Change your function and run the cell again; each further wrong attempt adds a hint.)"
        raise ExerciseFailed(f"{error}{more}") from None
    finally:
        _refused.clear()
    print(f"✓ {name}: passed ({summary})")
    _record(name, "passed")
    return True


def _refuse(name: str, function: Callable) -> bool:
    where = _where(function)
    print(f"✗ {name}: your answer uses `{where}`, which already does what this exercise asks you to write "
          "yourself; write your own, then compare it with that one once it works.")
    _record(name, "refused", where)
    return False


def _where(function) -> str:
    function = getattr(function, "fget", function)  # a property
    return f"{function.__module__}.{function.__qualname__}"


def _unwrapped(function):
    """The plain function behind a property, a bound method or a functools.partial."""
    for attribute in ("fget", "__func__", "func"):
        while hasattr(function, attribute):
            function = getattr(function, attribute)
    return function


def _mentioned(answer, refused: tuple) -> Callable | None:
    """The refused function that `answer` is, or names (directly, or as module.name or Class.name), if any."""
    if answer is None or not refused:
        return None
    targets = {id(_unwrapped(f)): f for f in refused}
    answer = getattr(answer, "func", answer)  # functools.partial
    if id(_unwrapped(answer)) in targets:
        return targets[id(_unwrapped(answer))]
    code, names = getattr(answer, "__code__", None), set()
    stack = [code] if code else []
    while stack:  # the names used by the function and by the functions nested in it
        code = stack.pop()
        names.update(code.co_names)
        stack += [c for c in code.co_consts if hasattr(c, "co_names")]
    scope = dict(getattr(answer, "__globals__", {}))
    scope.update({f"closure{i}": cell.cell_contents for i, cell in enumerate(answer.__closure__ or ())
                  if _has_contents(cell)})
    for key in list(names) + [k for k in scope if k.startswith("closure")]:
        value = scope.get(key)
        candidates = [value] + [getattr(value, n, None) for n in names
                                if isinstance(value, (type, types.ModuleType))]
        for candidate in candidates:
            if candidate is not None and id(_unwrapped(candidate)) in targets:
                return targets[id(_unwrapped(candidate))]
    return None


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def _tripwires(refused: Sequence[Callable]):
    """While the student's function runs, a call of a refused function (under any name) raises Refused."""
    patched = []

    def wire(original, function):
        if isinstance(original, property):
            return property(wire(original.fget, function))

        @functools.wraps(original)
        def tripped(*args, **kwargs):
            raise Refused(function)
        return tripped

    for function in refused:
        plain = _unwrapped(function)
        owners = [m for n, m in list(sys.modules.items()) if n.split(".")[0] == plain.__module__.split(".")[0]]
        if "." in plain.__qualname__:  # a method or property: patch the class that defines it
            owner, attribute = sys.modules[plain.__module__], plain.__qualname__.split(".")
            for part in attribute[:-1]:
                owner = getattr(owner, part)
            owners, attributes = [owner], [attribute[-1]]
        else:
            attributes = [plain.__name__]
        for owner in owners:
            for attribute in attributes:
                original = vars(owner).get(attribute)
                if original is not None and id(_unwrapped(original)) == id(plain):
                    patched.append((owner, attribute, original))
                    setattr(owner, attribute, wire(original, function))
    try:
        yield
    finally:
        for owner, attribute, original in reversed(patched):
            setattr(owner, attribute, original)


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
        with _tripwires(tuple(_refused)):
            return function(*args, **kwargs)
    except Refused:
        raise
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


def check_prediction(name: str, prediction, truth: float, *, tolerance: float, why: str,
                     mistakes: Iterable[tuple[float, str]] = (), hints: Sequence[str], variable: str) -> bool:
    """A prediction exercise: the student writes a number into `variable` before the notebook computes it.

    `truth` is computed by the checker when it runs (never stored in the notebook); a prediction
    within `tolerance` of it passes and only then is told the value and `why`. A wrong one is told
    "too large" or "too small", or, when it is within `tolerance` of one of `mistakes`' values,
    what that reasoning missed; never the value. None (the stub) is "not attempted".
    """
    if prediction is None:
        print(f"· {name}: not attempted yet. Set `{variable}` to your prediction and run the cell again.")
        _record(name, "not attempted")
        return False

    def check():
        try:
            value = float(prediction)
        except (TypeError, ValueError):
            raise ExerciseFailed(f"`{variable}` should be a number, got {type(prediction).__name__}") from None
        if abs(value - truth) <= tolerance:
            return f"{truth:.4g}: {why}"
        for wrong, mistake in mistakes:
            if abs(value - wrong) <= tolerance:
                raise _failed(f"{value:g} is not it", mistake)
        raise ExerciseFailed(f"{value:g} is {'too large' if value > truth else 'too small'}"
                             f" (by more than {tolerance:g})")

    return run_check(name, check, hints=hints)
