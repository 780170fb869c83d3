"""Checkers for notebook 12 (why a mixture of experts): two predictions, made before computing them.

Each truth is computed from the config when the checker runs, never stored in the notebook. The
mistakes listed with each are values that a plausible line of reasoning gives, with what it missed.
"""

from __future__ import annotations

import dataclasses

from grok_mini.config import preset
from grok_mini.teach.exercises import check_prediction
from grok_mini.teach.why_moe import expected_experts_read

__all__ = ["check_top1_ratio", "check_batch_experts", "HINTS", "BATCH"]

BATCH = 8  # the decode batch of exercise 2

HINTS = {
    "the top-1 parameter ratio": (
        "Split the parameters into the part every token uses and the part only its chosen experts use.",
        "Attention, the embedding that the tied output also reads, the routers and the norms are used by "
        "every token whatever the routing; only the experts' part of the active count changes with k.",
        "With one expert a token, the active experts are an eighth of all expert weights; add the shared part "
        "to that, then divide the total by the sum.",
    ),
    "the experts a batch reads": (
        "Think about one expert first: how likely is it that no token of the batch picks it?",
        "One token picks two different experts out of eight, so it misses a given expert three times in four; "
        "the tokens of a batch choose independently of one another.",
        "The expected number of experts read is the number of experts times the chance that at least one "
        "token of the batch picks a given one.",
    ),
}


def check_top1_ratio(prediction, *, variable: str = "ratio") -> bool:
    """Exercise 1: total ÷ active parameters of Grok-1 with top-1 routing (within 0.15)."""
    config = preset("grok-1")
    top1 = dataclasses.replace(config, num_selected_experts=1)
    truth = top1.num_params / top1.num_active_params
    top2 = config.num_params / config.num_active_params
    e, k = config.num_experts, config.num_selected_experts
    mistakes = [
        (e / 1, "that is the experts' ratio alone (8 experts, 1 used): attention, the embedding, the routers "
                "and the norms are used by every token, so the active count is larger than an eighth"),
        (top2, "that is Grok-1's own top-2 ratio: with one expert a token the active count is smaller"),
        (2 * top2, "that doubles the top-2 ratio: going from two experts to one halves only the experts' part "
                   "of the active parameters, not the part every token uses"),
        (e / k, "that is the experts' ratio of top-2 (8 experts, 2 used), and it leaves out the shared parameters"),
    ]
    shared = top1.num_active_params - top1.param_counts()["experts"] // e  # what every token uses
    why = (f"with one expert of {e} a token, {top1.num_active_params / 1e9:.1f} B of {top1.num_params / 1e9:.1f} B "
           f"parameters are active; the {shared / 1e9:.1f} B that every token uses keep the ratio below {e}")
    return check_prediction("the top-1 parameter ratio", prediction, truth, tolerance=0.15, why=why,
                            mistakes=mistakes, hints=HINTS["the top-1 parameter ratio"], variable=variable)


def check_batch_experts(prediction, *, variable: str = "experts") -> bool:
    """Exercise 2: experts a Grok-1 layer reads, on average, in one decode step of BATCH tokens whose
    choices are uniform and independent (within 0.3)."""
    config = preset("grok-1")
    e, k = config.num_experts, config.num_selected_experts
    truth = expected_experts_read(config, BATCH)
    one_choice = e * (1 - (1 - 1 / e) ** BATCH)
    mistakes = [
        (k, f"that is batch 1's count: {BATCH} tokens choose independently, so together they reach more experts"),
        (e, "that is every expert for certain: each expert keeps a small chance that no token of the batch picks it"),
        (BATCH * k, f"that counts the {BATCH} × {k} token copies, but there are only {e} experts, which copies "
                    "share"),
        (one_choice, f"that gives each token one choice; each picks {k} different experts"),
    ]
    miss = 1 - k / e
    why = (f"a token misses a given expert with probability {miss:g}, all {BATCH} miss it with {miss ** BATCH:.2f}, "
           f"so {e} × (1 − {miss:g}^{BATCH}) experts are read: at batch {BATCH} a decode step reads almost all "
           "the weights, and the saving of batch 1 is gone")
    return check_prediction("the experts a batch reads", prediction, truth, tolerance=0.3, why=why,
                            mistakes=mistakes, hints=HINTS["the experts a batch reads"], variable=variable)
