"""Notebook 06 (the full model): one decoder layer with its four norms, and the normalised router entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_mini.model import DecoderLayer
from grok_mini.teach.exercises import ExerciseFailed, _failed, call, expect_close, run_check

__all__ = ["check_decoder_layer", "check_normalized_entropy", "layer_variant"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "decoder_layer": (
        "A Grok-1 layer has two sublayers, attention and then the MoE, each added to the residual stream.",
        "Each sublayer is wrapped in its own pair of norms: one on its input, one on its output before "
        "the addition.",
        "The norms are used in order: rms_norm and rms_norm_1 around attention, rms_norm_2 and rms_norm_3 "
        "around the MoE; the residual stream itself is never normalised.",
    ),
    "normalized_entropy": (
        "Entropy is minus the sum of p log p over the experts; normalise it by the entropy of a uniform "
        "router.",
        "A uniform router's entropy is the log of the number of experts: read that number from the "
        "input's last axis.",
        "A probability of exactly zero contributes zero (the limit of p log p), not NaN.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"decoder_layer": (DecoderLayer.__call__,), "normalized_entropy": ()}


def layer_variant(layer, h, positions, key_mask, *, post_norms: bool = True, pre_norms: bool = True,
                  residual: bool = True, post_norm_after_add: bool = False):
    """The decoder layer with switches that reproduce common mistakes (all defaults: the real layer)."""
    def pre(norm, x):
        return norm(x) if pre_norms else x

    def post(norm, x):
        return norm(x) if post_norms else x

    attended, _ = layer.multi_head_attention(pre(layer.rms_norm, h), positions, key_mask)
    if post_norm_after_add:  # the original Transformer's post-LN: normalise the sum
        h = layer.rms_norm_1(h + attended)
        return layer.rms_norm_3(h + layer.moe(pre(layer.rms_norm_2, h)))
    h = (h if residual else 0) + post(layer.rms_norm_1, attended)
    return (h if residual else 0) + post(layer.rms_norm_3, layer.moe(pre(layer.rms_norm_2, h)))


_MISTAKES = [
    (dict(post_norms=False), "the output of attention and of the MoE is normalised again before it is added "
                             "(rms_norm_1 and rms_norm_3, the 'sandwich'): Grok-1 has four norms per layer."),
    (dict(pre_norms=False), "attention and the MoE read a normalised copy of h (rms_norm before attention, "
                            "rms_norm_2 before the MoE), not h itself."),
    (dict(post_norm_after_add=True), "normalise the sublayer's output, then add it to h; normalising the sum "
                                     "(h + sublayer) is the original Transformer's post-LN, not Grok-1."),
    (dict(residual=False), "add each sublayer's normalised output to h (the residual stream); do not replace h."),
]


@nnx.jit
def _layer_and_mistakes(layer, h, positions, key_mask):
    """layer(...)[0] and each mistake's answer, in one compiled program (reused by every check)."""
    return layer(h, positions, key_mask)[0], [layer_variant(layer, h, positions, key_mask, **switches)
                                             for switches, _ in _MISTAKES]


def check_decoder_layer(decoder_layer, model) -> bool:
    """decoder_layer(layer, h [B, T, D], positions [B, T], key_mask [B, T]) → h after the layer, as layer(...)[0]."""

    def check():
        d = model.config.emb_size
        positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
        # Two layers, two inputs, two padding patterns: an answer that ignores its input cannot pass.
        for index, seed, lengths in ((0, 7, (6, 4)), (len(model.decoder_layers) - 1, 8, (3, 6))):
            layer = model.decoder_layers[index]
            h = jax.random.normal(jax.random.key(seed), (2, 6, d), jnp.float32) * 2.0
            key_mask = jnp.arange(6)[None] < jnp.array(lengths)[:, None]

            got = call(decoder_layer, layer, h, positions, key_mask)  # eagerly: any Python the student wrote runs
            if got is None or not hasattr(got, "shape"):
                raise ExerciseFailed(f"decoder_layer should return the new h [2, 6, {d}], got {type(got).__name__}")
            expected, wrong = _layer_and_mistakes(layer, h, positions, key_mask)
            mistakes = [(np.asarray(w), hint) for w, (_, hint) in zip(wrong, _MISTAKES, strict=True)]
            expect_close(got, np.asarray(expected, np.float64), what=f"decoder_layer(layer {index}, h [2, 6, {d}], "
                         f"positions, key_mask of lengths {lengths})", rtol=1e-4, atol=1e-4, mistakes=mistakes)
        return "equals DecoderLayer.__call__ on a batch with padding"

    return run_check("decoder_layer", check, answer=decoder_layer,
                     hints=HINTS["decoder_layer"], refuse=REFUSE["decoder_layer"])


def check_normalized_entropy(normalized_entropy) -> bool:
    """normalized_entropy(probs [..., E]) → H(p) / log E over the last axis, in [0, 1]."""
    rng = np.random.default_rng(8)

    def check():
        for experts in (8, 4):  # Grok-1's 8 experts, and 4: read E from the input
            probs = rng.dirichlet(np.full(experts, 0.7), size=(3, 5)).astype(np.float32)
            probs[0, 0] = np.eye(experts)[2]  # certain: entropy 0
            probs[0, 1] = 1 / experts  # uniform: entropy 1
            got = call(normalized_entropy, jnp.asarray(probs))
            p = probs.astype(np.float64)
            entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
            expected = entropy / np.log(experts)
            if np.isnan(np.asarray(got, np.float64)).any():
                raise _failed("normalized_entropy returned NaN", "0 · log 0 counts as 0: an expert with "
                              "probability 0 adds nothing to the entropy, but 0 times log 0 computes NaN.")
            mistakes = [
                (entropy, "divide by log E (E = the size of the last axis) so that a uniform router gives 1."),
                (entropy / np.log2(experts), "divide by log E in the same base as the entropy (natural log both)."),
                (1 - expected, "entropy is high for a spread-out router (1 = uniform), low for a confident one."),
                (entropy / np.log(8), "you hard-coded 8 experts; read E from the input's last axis."),
            ]
            expect_close(got, expected, what=f"normalized_entropy(probs [3, 5, {experts}])", rtol=1e-4, atol=1e-5,
                         mistakes=mistakes)
        return "certain (0), uniform (1) and random routers, batched over leading axes"

    return run_check("normalized_entropy", check, answer=normalized_entropy, hints=HINTS["normalized_entropy"],
                     refuse=REFUSE["normalized_entropy"])
