"""Notebook 08 (generation): the top-k filter and the official nucleus (top-p) filter."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from grok_mini.generate import filter_logits
from grok_mini.teach.exercises import ExerciseFailed, _failed, call, run_check

__all__ = ["check_top_k_filter", "check_nucleus_filter", "reference_filter"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "top_k_filter": (
        "Find the k-th largest logit; everything below it is dropped.",
        "Dropped logits become minus infinity, so their probability is exactly zero; kept ones stay "
        "unchanged (logits, not probabilities).",
        "Logits tied with the k-th largest are kept too, as the official sampler does.",
    ),
    "nucleus_filter": (
        "Sort the tokens by probability and keep the smallest set whose total reaches top_p.",
        "The token whose probability carries the running total across top_p is kept: the nucleus always "
        "reaches top_p.",
        "Tokens tied with the last one kept are kept too, and the result is logits (minus infinity "
        "outside), not probabilities.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"top_k_filter": (filter_logits,), "nucleus_filter": (filter_logits,)}


def reference_filter(logits: np.ndarray, *, top_k: int | None = None, top_p: float = 1.0) -> np.ndarray:
    """generate.filter_logits on one row [V]: −inf outside the top-k (ties kept) and outside the nucleus."""
    v = logits.shape[-1]
    out = filter_logits(jnp.asarray(logits, jnp.float32)[None], jnp.array([v if top_k is None else top_k]),
                        jnp.array([top_p], jnp.float32))
    return np.asarray(out[0], np.float64)


def _logit_rows() -> list[tuple[str, np.ndarray]]:
    """Rows with well-separated probabilities (no cumulative sum near a threshold), one with ties."""
    rng = np.random.default_rng(9)
    peaked = np.log(np.array([0.43, 0.2, 0.14, 0.085, 0.055, 0.035, 0.025, 0.017, 0.009, 0.004]))
    tied = np.array([2.0, 1.0, 1.0, 1.0, 0.0, -1.0, -3.0, 0.5])
    flat = rng.standard_normal(32) * 0.3
    return [("peaked [10]", peaked.astype(np.float32)), ("with ties [8]", tied.astype(np.float32)),
            ("flat [32]", flat.astype(np.float32))]


def _compare(got, expected: np.ndarray, what: str, mistakes) -> None:
    got = np.asarray(got, np.float64)
    if got.shape != expected.shape:
        raise ExerciseFailed(f"{what}: expected shape {expected.shape} (logits, not token ids), got {got.shape}")
    kept, kept_got = np.isfinite(expected), np.isfinite(got)
    if np.isfinite(got).all() and (got >= 0).all() and np.isclose(got.sum(), 1.0) and not np.isfinite(expected).all():
        raise ExerciseFailed(f"{what}: that looks like probabilities; return logits, with -inf for removed tokens "
                             "(sampling takes the softmax afterwards).")
    if np.isnan(got).any():
        raise ExerciseFailed(f"{what}: NaN in the result; set removed logits to -jnp.inf, keep the others as they are")
    if np.array_equal(kept, kept_got) and np.allclose(got[kept], expected[kept], rtol=1e-5, atol=1e-6):
        return
    for wrong_kept, hint in mistakes:
        if np.array_equal(kept_got, wrong_kept):
            raise _failed(f"{what}: kept {int(kept_got.sum())} tokens, expected {int(kept.sum())}.", hint)
    if np.array_equal(kept, kept_got):
        raise ExerciseFailed(f"{what}: the right tokens are kept, but their logits changed; return the kept logits "
                             "unchanged (no softmax, no renormalising: sampling does that) and -inf elsewhere.")
    raise ExerciseFailed(f"{what}: kept tokens {np.flatnonzero(kept_got).tolist()}, expected "
                         f"{np.flatnonzero(kept).tolist()} (removed logits must be -inf)")


def check_top_k_filter(top_k_filter) -> bool:
    """top_k_filter(logits [V], k) → logits, −inf for every token below the k-th largest (ties with it kept)."""

    def check():
        for name, logits in _logit_rows():
            for k in (1, 3, 5):
                got = call(top_k_filter, jnp.asarray(logits), k)
                expected = reference_filter(logits, top_k=k)
                exact_k = np.zeros(logits.shape, bool)
                exact_k[np.argsort(-logits, kind="stable")[:k]] = True
                mistakes = [
                    (exact_k, "a token whose logit equals the k-th largest is kept too (compare with the k-th "
                              "largest value, logits >= kth, instead of taking exactly k indices)."),
                    (logits > np.sort(logits)[::-1][k - 1], "keep the k-th largest itself: logits >= kth, not >."),
                    (np.argsort(np.argsort(logits)) < k, "keep the *largest* k logits, not the smallest."),
                ]
                _compare(got, expected, f"top_k_filter(logits {name}, k={k})", mistakes)
        return "k = 1, 3, 5 on peaked, tied and flat logits; ties with the k-th largest kept"

    return run_check("top_k_filter", check, answer=top_k_filter,
                     hints=HINTS["top_k_filter"], refuse=REFUSE["top_k_filter"])


def check_nucleus_filter(nucleus_filter) -> bool:
    """nucleus_filter(logits [V], top_p) → logits, −inf outside the likeliest tokens whose mass reaches top_p."""

    def check():
        for name, logits in _logit_rows():
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            order = np.argsort(-probs, kind="stable")
            for top_p in (0.3, 0.5, 0.8, 0.95, 1.0):
                got = call(nucleus_filter, jnp.asarray(logits), top_p)
                expected = reference_filter(logits, top_p=top_p)
                before = np.cumsum(probs[order]) - probs[order]  # mass of the likelier tokens
                untied = np.zeros(logits.shape, bool)
                untied[order[before < top_p]] = True
                strict = np.zeros(logits.shape, bool)
                strict[order[np.cumsum(probs[order]) <= top_p]] = True
                mistakes = [
                    (strict, "keep the token that crosses top_p too: the kept tokens' total must reach top_p "
                             "(a token stays while the tokens likelier than it hold no more than top_p)."),
                    (untied, "tokens tied with the last kept token are kept too: the official rule keeps every "
                             "logit >= a threshold logit, so equal logits share one fate."),
                    (probs >= top_p * probs.max(), "top-p is about cumulative probability, not probability "
                                                   "relative to the likeliest token (that is min-p)."),
                    (np.isin(np.arange(logits.size), order[::-1][np.cumsum(probs[order[::-1]]) <= top_p]),
                     "accumulate from the likeliest token down, not from the least likely up."),
                ]
                _compare(got, expected, f"nucleus_filter(logits {name}, top_p={top_p})", mistakes)
        return "top_p from 0.3 to 1 on peaked, tied and flat logits, as generate.filter_logits (the official rule)"

    return run_check("nucleus_filter", check, answer=nucleus_filter,
                     hints=HINTS["nucleus_filter"], refuse=REFUSE["nucleus_filter"])
