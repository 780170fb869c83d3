"""Notebook 11 (the experts): two predictions, the cost of one expert and the size of a SiLU porting bug."""

from __future__ import annotations

import numpy as np

from grok_mini.config import preset
from grok_mini.teach.exercises import check_prediction

__all__ = ["check_expert_multiply_adds", "check_silu_expert_change", "expert_multiply_adds_millions",
           "silu_expert_change", "HINTS", "REFUSE"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "expert_multiply_adds": (
        "A token that passes through a matrix costs one multiply-add for every number stored in that matrix.",
        "One expert holds three matrices: the gate and the value from the model width to the expert width, "
        "and the down projection back; the expert width is the config's ffn size, not eight times the width.",
        "Count the multiply-adds of one expert for one token, in one layer, and give the answer in millions; "
        "a FLOP is half a multiply-add, so do not double it.",
    ),
    "silu_expert_change": (
        "Look at the two curves in section 3: where do GELU and SiLU differ, and by how much compared with "
        "their size there?",
        "The recorded gate pre-activations mostly lie between minus three and three, exactly where the two "
        "curves part; the value matrix and the down projection pass the difference on.",
        "The change is neither tiny like the exact-erf difference nor of the size of the output itself: "
        "compare with the ReLU number printed in section 3, a function of the same family.",
    ),
}
# Predictions: nothing to refuse (the answer is a number).
REFUSE = {"expert_multiply_adds": (), "silu_expert_change": ()}


def expert_multiply_adds_millions(config=None) -> float:
    """Multiply-adds of one expert for one token, in millions: three matrices of emb_size × ffn_size."""
    config = preset("grok-1") if config is None else config
    return 3 * config.emb_size * config.ffn_size / 1e6


def check_expert_multiply_adds(multiply_adds) -> bool:
    """Exercise 1: how many multiply-adds (in millions) one Grok-1 expert costs for one token in one layer."""
    grok = preset("grok-1")
    d, f = grok.emb_size, grok.ffn_size
    truth = expert_multiply_adds_millions(grok)
    return check_prediction(
        "expert_multiply_adds", multiply_adds, truth, tolerance=0.05 * truth, variable="multiply_adds",
        why=f"three matrices of {d:,} × {f:,}, one multiply-add per weight; the same as a plain two-matrix FFN of "
            f"width 8 · {d:,}, which is what the factor 2/3 in the width rule is for",
        mistakes=[(2 * truth, "that is twice the truth: either two FLOPs per multiply-add were counted, or both "
                              "of the token's experts instead of one"),
                  (2 * d * f / 1e6, "that counts two matrices; a gated expert has three (gate, value and down "
                                    "projection)"),
                  (3 * d * 8 * d / 1e6, "that uses eight times the width as the expert width; the width rule "
                                        "multiplies it by 2/3 because there are three matrices"),
                  (d * f / 1e6, "that is one matrix only; one expert holds three of them"),
                  (8 * truth, "that runs all eight experts; a token goes through only one expert here (two in "
                              "all, and the question asks for one)")],
        hints=HINTS["expert_multiply_adds"])


def _gelu_tanh(z: np.ndarray) -> np.ndarray:
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))


def _silu(z: np.ndarray) -> np.ndarray:
    return z / (1 + np.exp(-z))


def silu_expert_change(experts, x) -> float:
    """‖experts_SiLU(x) − experts_GELU(x)‖ / ‖experts_GELU(x)‖ over every expert and token, in float64.

    experts: a layer's `moe.Experts`; x: its inputs [N, D] (the output of rms_norm_2).
    """
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    kernels = [np.asarray(linear.kernel(), np.float64) for linear in (experts.linear, experts.linear_v,
                                                                      experts.linear_1)]
    gate, value = x @ kernels[0], x @ kernels[1]  # [E, N, F]: every expert on every token
    official = (_gelu_tanh(gate) * value) @ kernels[2]  # [E, N, D]
    ported = (_silu(gate) * value) @ kernels[2]
    return float(np.linalg.norm(ported - official) / np.linalg.norm(official))


def check_silu_expert_change(change, experts, x) -> bool:
    """Exercise 2: the relative change of a layer's expert outputs when GELU (tanh form) is replaced by SiLU."""
    truth = silu_expert_change(experts, x)
    return check_prediction(
        "silu_expert_change", change, truth, tolerance=0.5 * truth, variable="change",
        why="SiLU is x·σ(x), GELU is close to x·σ(1.702·x): another function, which differs most where most "
            "pre-activations are (|z| < 3); the change is a few per cent of the output, far above any rounding, "
            "several hundred times the exact-erf difference; through the whole model it flips about "
            "one next-token prediction in twenty",
        mistakes=[(0.0, "that treats SiLU as an approximation of GELU, as the exact-erf form is; SiLU is a "
                        "different function, 0.1 below GELU at minus one and 0.19 near plus and minus two"),
                  (0.26, "that is the conformance fixture's change of the logits on another (random) model; "
                         "measure this layer's expert outputs on its own inputs"),
                  (0.5, "that would need the two curves to differ by half the output's size; they agree for "
                        "large positive inputs, which carry most of the output"),
                  (1.0, "that is a change as large as the output itself, as if the two functions were "
                        "unrelated; both are smooth ReLU-like curves")],
        hints=HINTS["silu_expert_change"])
