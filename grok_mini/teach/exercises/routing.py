"""Notebook 05 (expert routing): Grok-1's top-2 routing, and the Switch load-balancing loss."""

from __future__ import annotations

import numpy as np

from grok_mini import moe, train
from grok_mini.teach.exercises import ExerciseFailed, call, check_prediction, expect_close, run_check

__all__ = ["check_renormalised_change", "check_top2_route", "check_balance_loss", "reference_top2_route",
           "reference_balance_loss"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "top2_route": (
        "The router's probabilities are a softmax over all experts; the two chosen experts are the two "
        "most likely.",
        "Keep the two probabilities as they are: Grok-1 does not make the two gates sum to one.",
        "Compute the softmax in float32, and give the most likely expert first and the second most likely "
        "second.",
    ),
    "balance_loss": (
        "Two numbers per expert: the share of the routing choices it receives, and its mean router "
        "probability.",
        "The shares of all experts add up to one: divide the counts by the number of tokens times the "
        "experts chosen per token.",
        "Multiply the sum over experts of share times probability by the number of experts, so that "
        "perfect balance gives one.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"top2_route": (moe.route,), "balance_loss": (train.balance_loss, train.expert_load)}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def reference_top2_route(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over all experts (float64 here), the two largest probabilities as they are, and their experts."""
    probs = _softmax(np.asarray(logits, np.float64))
    ids = np.argsort(-probs, axis=-1, kind="stable")[..., :2]
    return np.take_along_axis(probs, ids, -1), ids


def _logits(rng: np.random.Generator) -> np.ndarray:
    """Router logits [N, E] with distinct values (no ties), some rows confident and some flat."""
    z = rng.standard_normal((12, 8)) * np.array([[0.5], [1], [2], [4]] * 3)
    return z.astype(np.float32)


def check_top2_route(top2_route) -> bool:
    """top2_route(logits [N, E]) → (gates [N, 2] float32, expert ids [N, 2]), Grok-1's router."""
    rng = np.random.default_rng(5)

    def check():
        for trial in range(3):
            logits = _logits(rng)
            result = call(top2_route, logits.copy())
            if not (isinstance(result, tuple) and len(result) == 2):
                raise ExerciseFailed("top2_route should return a pair (gates, expert_ids), "
                                     f"got {type(result).__name__}")
            gates, ids = (np.asarray(r) for r in result)
            want_gates, want_ids = reference_top2_route(logits)
            if ids.shape != want_ids.shape:
                raise ExerciseFailed(f"expert ids: expected shape {want_ids.shape}, got {ids.shape}")
            ascending = np.argsort(logits, axis=-1)[..., :2]
            if np.array_equal(ids, ascending):
                raise ExerciseFailed("expert ids: you took the two *smallest* logits; top-2 means the largest "
                                     "(argsort(-probs) or jax.lax.top_k).")
            if np.array_equal(np.sort(ids, -1), np.sort(want_ids, -1)) and not np.array_equal(ids, want_ids):
                raise ExerciseFailed("expert ids: the right experts in the wrong order; column 0 is the most "
                                     "likely expert, column 1 the second.")
            if not np.array_equal(ids, want_ids):
                raise ExerciseFailed(f"expert ids (trial {trial}): expected {want_ids.tolist()[:3]}…, "
                                     f"got {ids.tolist()[:3]}…")
            top = np.take_along_axis(logits.astype(np.float64), want_ids, -1)
            mistakes = [
                (want_gates / want_gates.sum(-1, keepdims=True),
                 "you renormalised the two gates to sum to 1 (Mixtral does); Grok-1 keeps the softmax "
                 "probabilities over all 8 experts as they are, so the two gates sum to less than 1."),
                (_softmax(top), "that is a softmax over the two chosen logits only (= renormalised gates); take "
                                "the softmax over all experts first, then pick the top 2."),
                (top, "the gates are probabilities (softmax over all experts), not raw logits."),
            ]
            expect_close(gates, want_gates, what=f"gates (trial {trial})", rtol=1e-5, atol=1e-6, mistakes=mistakes)
        return "3 × 12 tokens: the right experts in order, gates = softmax over all 8, not renormalised"

    return run_check("top2_route", check, answer=top2_route,
                     hints=HINTS["top2_route"], refuse=REFUSE["top2_route"])


def reference_balance_loss(logits: np.ndarray, num_selected: int) -> float:
    """E · Σᵢ fᵢ·Pᵢ: f = share of the top-k assignments per expert (Σ f = 1), P = mean router probability."""
    logits = np.asarray(logits, np.float64)
    n, e = logits.shape
    probs = _softmax(logits)
    ids = np.argsort(-probs, axis=-1, kind="stable")[:, :num_selected]
    f = np.bincount(ids.reshape(-1), minlength=e) / (n * num_selected)
    return float(e * np.sum(f * probs.mean(0)))


def check_balance_loss(balance_loss) -> bool:
    """balance_loss(logits [N, E], num_selected) → the Switch Transformer load-balancing loss (a number)."""
    rng = np.random.default_rng(6)

    def check():
        cases = [("random", rng.standard_normal((64, 8)), 2),
                 ("one expert favoured", rng.standard_normal((64, 8)) + 3.0 * (np.arange(8) == 3), 2),
                 ("top-1, 4 experts", rng.standard_normal((40, 4)) * 2, 1),
                 ("all tokens alike", np.tile(rng.standard_normal((1, 8)) * 3, (16, 1)), 2)]
        for name, logits, k in cases:
            logits = logits.astype(np.float32)
            try:
                got = float(np.asarray(call(balance_loss, logits.copy(), k)))
            except (TypeError, ValueError):
                raise ExerciseFailed(f"balance_loss({name}) should return one number") from None
            n, e = logits.shape
            probs = _softmax(logits.astype(np.float64))
            ids = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
            counts = np.bincount(ids.reshape(-1), minlength=e)
            f = counts / (n * k)
            p = probs.mean(0)
            gate_mass = np.zeros(e)
            np.add.at(gate_mass, ids.reshape(-1), np.take_along_axis(probs, ids, -1).reshape(-1))
            mistakes = [
                (np.array(e * k * np.sum(f * p)), "f should sum to 1: divide the counts by N·k (tokens × "
                                                  "experts per token), not by N; balanced routing then gives 1."),
                (np.array(np.sum(f * p)), "multiply by the number of experts E, so that balanced routing gives 1."),
                (np.array(e * np.sum(f * f)), "P is the mean router *probability* per expert, not the load "
                                              "fraction again (f carries no gradient; P does)."),
                (np.array(e * np.sum(f * gate_mass / n)), "P averages the full softmax over all experts for every "
                                                          "token, not only the gates of the chosen experts."),
            ]
            expect_close(np.array(got), np.array(e * np.sum(f * p)), what=f"balance_loss({name}, k={k})",
                         rtol=1e-4, atol=1e-6, mistakes=mistakes)
        return "random, skewed and collapsed routing, top-1 and top-2"

    return run_check("balance_loss", check, answer=balance_loss,
                     hints=HINTS["balance_loss"], refuse=REFUSE["balance_loss"])


def check_renormalised_change(change, layer, x) -> bool:
    """Exercise 3 (change the architecture): the relative change of the MoE output, before rms_norm_3, when the
    top-2 gates are renormalised to sum to 1 — as a layer without the post-MoE norm would pass it on."""
    import jax.numpy as jnp

    gates, ids = moe.route(layer.moe.router(x), 2)
    weights = moe.gate_matrix(gates, ids, layer.moe.router.w.shape[-1])
    out = moe.dense_moe(layer.moe.experts, x, weights)
    renormalised = moe.dense_moe(layer.moe.experts, x, weights / weights.sum(-1, keepdims=True))
    truth = float(jnp.linalg.norm(renormalised - out) / jnp.linalg.norm(out))
    return check_prediction(
        "renormalised_change", change, truth, tolerance=0.12, variable="change",
        why="each token's output grows by 1 / (g1 + g2); with gates summing to about 0.57 that is about 1.75×, a 75 % "
            "change that nothing undoes without rms_norm_3, so Mixtral-style gates are a different model there",
        mistakes=[(0.0, "no change holds only after rms_norm_3, which removes any per-token scale; before it (or in a "
                        "model without it) the output is multiplied by 1 / (g1 + g2)"),
                  (3.0, "that assumes a uniform router (two gates of 1/8 each); these gates sum to more than that, as "
                        "printed in section 2"),
                  (1.0, "that would need gates summing to one half; read the mean gate sum printed in section 2")],
        hints=("The MoE output is linear in the gates: what does dividing both gates by their sum do to it?",
               "Each token's output is multiplied by one number, one over the sum of its two gates.",
               "Section 2 printed the mean sum of the two gates; the relative change is about one over it, minus one."))
