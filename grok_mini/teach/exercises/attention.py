"""Notebook 04 (attention and GQA): which K/V head a query head reads, and capped grouped-query attention."""

from __future__ import annotations

import jax as _jax
import jax.numpy as jnp
import numpy as np

from grok_mini.config import GrokConfig
from grok_mini.teach.exercises import call, check_prediction, expect_close, expect_equal, run_check

__all__ = ["check_buggy_line", "check_kv_head", "check_attention", "reference_attention"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "kv_head_for": (
        "How many query heads share one key/value head? That number is the group size.",
        "The groups are contiguous: the first group of query heads uses key/value head 0, the next group "
        "head 1, and so on.",
        "Divide the query head's index by the group size and round down.",
    ),
    "attention": (
        "Each query head reads the key/value head of its group; after that it is scaled dot-product "
        "attention with a cap on the scores.",
        "Scale the scores by one over the square root of the head size first, then cap them smoothly at "
        "±30 with a tanh, then apply the mask.",
        "Masked keys must get exactly zero weight (a very negative score before the softmax), and the "
        "softmax runs over the keys.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"kv_head_for": (), "attention": (_jax.nn.dot_product_attention,)}


def check_kv_head(kv_head_for) -> bool:
    """kv_head_for(query_head, num_q_heads, num_kv_heads) → the key/value head that query head reads."""

    def check():
        for num_q, num_kv in ((48, 8), (4, 2), (6, 3), (8, 8), (8, 1)):
            group = num_q // num_kv
            got = [call(kv_head_for, h, num_q, num_kv) for h in range(num_q)]
            mistakes = [([h % num_kv for h in range(num_q)], "heads are grouped contiguously: query heads "
                         f"0…{group - 1} all read K/V head 0 (h // group), not every {num_kv}th head (h % KV)."),
                        ([h // num_kv for h in range(num_q)], f"divide by the group size ({num_q} / {num_kv} = "
                         f"{group} query heads per K/V head), not by the number of K/V heads."),
                        ([round(h / group) for h in range(num_q)], "round down (integer division): query heads "
                         f"0…{group - 1} all read K/V head 0; rounding to the nearest moves half of them on.")]
            expect_equal([int(g) for g in got], [h // group for h in range(num_q)],
                         what=f"kv_head_for(h, {num_q}, {num_kv}) for h = 0…{num_q - 1}", mistakes=mistakes)
        return "48/8 (Grok-1), 4/2, 6/3, 8/8 (MHA) and 8/1 (MQA)"

    return run_check("kv_head_for", check, answer=kv_head_for, hints=HINTS["kv_head_for"], refuse=REFUSE["kv_head_for"])


def reference_attention(q, k, v, mask, *, cap: float | None = GrokConfig.max_attn_val, scaled: bool = True,
                        grouping: str = "contiguous", masked: bool = True, softmax_axis: int = -1,
                        cap_first: bool = False) -> np.ndarray:
    """Plain float64 grouped-query attention, with switches that reproduce common mistakes.

    q [B, T, H, D], k and v [B, S, KV, D], mask [B, T, S] (True = may attend) → [B, T, H, D].
    tests/test_exercises.py checks the default against layers.MultiHeadAttention.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    heads, kv_heads = q.shape[2], k.shape[2]
    group = heads // kv_heads
    kv_of = np.arange(heads) // group if grouping == "contiguous" else np.arange(heads) % kv_heads
    k, v = k[:, :, kv_of], v[:, :, kv_of]  # [B, S, H, D]: each query head's own copy of its K/V head
    logits = np.einsum("bthd,bshd->bhts", q, k)
    if cap_first:  # the mistake: the cap before the 1/√d scaling
        logits = cap * np.tanh(logits / cap)
    if scaled:
        logits = logits / np.sqrt(q.shape[-1])
    if cap is not None and not cap_first:
        logits = cap * np.tanh(logits / cap)
    if masked:
        logits = np.where(np.asarray(mask)[:, None], logits, -1e30)
    logits = logits - logits.max(axis=softmax_axis, keepdims=True)
    weights = np.exp(logits)
    weights = weights / weights.sum(axis=softmax_axis, keepdims=True)
    return np.einsum("bhts,bshd->bthd", weights, v)


def check_attention(attention) -> bool:
    """attention(q [B, T, H, D], k [B, S, KV, D], v [B, S, KV, D], mask [B, T, S]) → [B, T, H, D]."""
    rng = np.random.default_rng(5)

    def check():
        for b, t, heads, kv_heads, d in ((2, 5, 4, 2, 8), (1, 6, 6, 3, 16)):  # other sizes: nothing hard-coded
            # Large q and k, so that many logits reach the 30·tanh cap's curved part.
            q = (4 * rng.standard_normal((b, t, heads, d))).astype(np.float32)
            k = (4 * rng.standard_normal((b, t, kv_heads, d))).astype(np.float32)
            v = rng.standard_normal((b, t, kv_heads, d)).astype(np.float32)
            causal = np.tril(np.ones((t, t), bool))
            not_pad = np.arange(t)[None] < np.array([t, t - 2])[:b, None]  # row 2: 2 pad tokens at the end
            mask = causal[None] & not_pad[:, None, :]
            got = call(attention, *(jnp.asarray(a) for a in (q, k, v, mask)))
            mistakes = [
                (reference_attention(q, k, v, mask, cap=None), "apply the soft cap: logits = 30·tanh(logits / 30), "
                                                               "after the 1/√d scaling and before the mask."),
                (reference_attention(q, k, v, mask, grouping="modular"), "query head h reads K/V head h // G "
                                                                         "(contiguous groups), not h % KV."),
                (reference_attention(q, k, v, mask, scaled=False), "scale the logits by 1/√d (d = head size) "
                                                                   "before the cap."),
                (reference_attention(q, k, v, mask, masked=False), "masked positions must get zero weight: set "
                                                                   "their logits to a large negative number."),
                (reference_attention(q, k, v, mask, softmax_axis=-2), "the softmax runs over the keys (the last "
                                                                      "axis of [B, H, T, S])."),
                (reference_attention(q, k, v, mask, cap_first=True), "you capped the logits before the 1/√d "
                 "scaling; Grok-1 scales first, then caps the scaled logits at ±30."),
            ]
            expect_close(got, reference_attention(q, k, v, mask), what=f"attention(q {list(q.shape)}, "
                         f"k/v {list(k.shape)}, causal + padding mask)", rtol=1e-4, atol=1e-5, mistakes=mistakes)
        return "GQA grouping, 1/√d, 30·tanh cap, causal and padding masks"

    return run_check("attention", check, answer=attention, hints=HINTS["attention"], refuse=REFUSE["attention"])


# The line of notebook 04's `buggy_attention_mask` that is wrong (its lines are numbered in comments).
_BUGGY_LINE = 4


def check_buggy_line(bug) -> bool:
    """Exercise 3 (find the bug): the number of the wrong line of `buggy_attention_mask`."""
    return check_prediction(
        "buggy_line", bug, _BUGGY_LINE, tolerance=0, variable="bug",
        why="key < query hides each token from itself; the causal rule is key <= query. Query 0 then sees no key at "
            "all, and a softmax over nothing but -1e30 spreads its weight evenly over every key, pads included",
        mistakes=[(6, "combining the two rules with & over [B, T, S] is right: a key must be both earlier (or the "
                      "same) and not padding"),
                  (5, "pad keys are the tokens equal to pad_token; that rule is right"),
                  (2, "the query positions along the rows, 0 … T − 1, are right (and so are the keys along the "
                      "columns)"),
                  (3, "the key positions along the columns, 0 … S − 1, are right (and so are the queries along the "
                      "rows)")],
        hints=("Look at the diagonal of the printed mask: may a token attend to itself?",
               "The causal rule compares a key's position with the query's position.",
               "Which comparison lets position 0 see position 0?"))
