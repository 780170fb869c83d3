"""Notebook 13 (router dynamics): two predictions, checked against what the notebook's own data give.

- `check_renormalised_gradient`: the unchosen/chosen ratio of the router-logit gradient in a layer
  without rms_norm_3 whose top-2 gates are renormalised to sum to 1 (Mixtral's choice);
- `check_favoured_share`: expert 0's final share in the stored runs that start with it favoured
  and train with neither router loss.

Each truth is computed when the checker runs, from the inputs the notebook passes (its seeds and
inputs, its stored runs), never printed before the exercise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grok_mini.teach.exercises import check_prediction

__all__ = ["HINTS", "check_renormalised_gradient", "check_favoured_share", "renormalised_ratios",
           "favoured_share"]

# Three hints per exercise, from general to specific, in words (no code).
HINTS = {
    "renormalised_gradient": (
        "Write a chosen expert's gate as its exponential divided by a sum over all eight experts, and see "
        "where an unchosen logit appears in it.",
        "Dividing both chosen gates by their own sum removes whatever factor they share, and the softmax "
        "denominator is exactly such a shared factor.",
        "After renormalising, each gate depends only on the difference of the two chosen logits, so the "
        "other six logits have no path to the output at all: only float32 rounding is left.",
    ),
    "favoured_share": (
        "Think about which losses can lower a logit that the task barely sees, and which of them this arm "
        "keeps.",
        "With rms_norm_3 the next-token loss only compares the two chosen experts of a token; the favoured "
        "expert is one of them almost everywhere, so its share changes only where its partner overtakes it.",
        "Without the balance loss and the z-loss nothing pushes the favoured expert back towards one "
        "eighth: it stays close to its starting share of about one half, falling a little in some layers.",
    ),
}


def renormalised_ratios(inputs, *, renormalize: bool = True) -> list[float]:
    """The unchosen/chosen gradient ratio for each (seed, h, projection) of `inputs`, on layer 0 of the
    float32 toy Grok of that seed without rms_norm_3, with (or without) renormalised top-2 gates."""
    import jax.numpy as jnp
    from flax import nnx

    import grok_mini
    from grok_mini.config import Variant
    from grok_mini.teach.router_dynamics import gradient_split

    ratios = []
    for seed, h, projection in inputs:
        config = dataclasses.replace(grok_mini.preset("toy"),
                                     variant=Variant(drop_norms=("rms_norm_3",), renormalize=renormalize))
        layer = grok_mini.Grok(config, dtype=jnp.float32, rngs=nnx.Rngs(seed)).decoder_layers[0]
        ratios.append(gradient_split(layer, h, projection)["ratio"])
    return ratios


def check_renormalised_gradient(ratio, inputs) -> bool:
    """Prediction: mean |∂L/∂logit| on unchosen over chosen experts, no rms_norm_3, renormalised gates.

    inputs: the notebook's [(seed, h, projection), ...] of section 1.
    """
    truth = float(np.mean(renormalised_ratios(inputs)))
    without_norm = float(np.mean(renormalised_ratios(inputs, renormalize=False)))
    return check_prediction(
        "renormalised_gradient", ratio, truth, tolerance=0.01, variable="ratio",
        why="dividing the two chosen gates by their sum cancels the softmax's denominator, the only place the "
            "unchosen logits enter; they get no gradient at all, with or without rms_norm_3 (what is left is "
            "float32 rounding). Renormalised routers, too, learn about neglected experts only from the "
            "auxiliary losses",
        mistakes=[(without_norm, "that is the ratio without rms_norm_3 and with Grok's raw gates; renormalising "
                                 "divides out the shared softmax denominator, and with it the unchosen logits"),
                  (1.0, "the unchosen logits would get as much gradient as the chosen ones only if they entered "
                        "the output the same way; they can only act through the gates' shared denominator"),
                  (0.5, "through the shared denominator the unchosen logits do reach raw gates, but a "
                        "renormalised gate divides that denominator out completely, not by half")],
        hints=HINTS["renormalised_gradient"])


def favoured_share(histories, *, expert: int = 0, last: int = 10) -> float:
    """Expert `expert`'s share, mean over the last `last` steps, the layers and the runs."""
    load = np.asarray([np.asarray(h["expert_load"], np.float64)[-last:, :, expert] for h in histories])
    return float(load.mean())


def check_favoured_share(share, histories) -> bool:
    """Prediction: expert 0's final share (last 10 steps, mean over layers and seeds) in the runs that start
    with it favoured and use neither the balance loss nor the z-loss. histories: those runs' histories."""
    truth = favoured_share(histories)
    start = float(np.mean([np.asarray(h["expert_load"], np.float64)[0, :, 0].mean() for h in histories]))
    return check_prediction(
        "favoured_share", share, truth, tolerance=0.12, variable="share",
        why=f"it starts at {start:.2f} and stays far above 1/8: with rms_norm_3 the next-token loss sends almost "
            "no gradient to the other experts' logits, so without the balance loss or the z-loss nothing "
            "lifts them back; what it loses, it loses where a token's other chosen expert overtakes it",
        mistakes=[(0.125, "1/8 is where the balance loss takes it (section 2); the next-token loss alone sends "
                          "almost no gradient to the neglected experts' logits (section 1), so it cannot"),
                  (0.25, "half-way back would need something pushing the other experts' logits up; the "
                         "next-token loss, through rms_norm_3, hardly reaches them"),
                  (1.0, "with top-2 routing an expert receives at most one of each token's two assignments: "
                        "its share of the assignments cannot exceed 1/2")],
        hints=HINTS["favoured_share"])
