"""Notebook 06 (the full model): one decoder layer with its four norms, and the normalised router entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grok_mini.teach.exercises import ExerciseFailed, call, expect_close, run_check

__all__ = ["check_decoder_layer", "check_normalized_entropy", "layer_variant"]


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
        layer = model.decoder_layers[0]
        d = model.config.emb_size
        h = jax.random.normal(jax.random.key(7), (2, 6, d), jnp.float32) * 2.0
        positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
        key_mask = jnp.array([[True] * 6, [True] * 4 + [False] * 2])

        @nnx.jit
        def run(layer, h):
            return call(decoder_layer, layer, h, positions, key_mask)

        got = run(layer, h)
        if got is None or not hasattr(got, "shape"):
            raise ExerciseFailed(f"decoder_layer should return the new h [2, 6, {d}], got {type(got).__name__}")
        expected, wrong = _layer_and_mistakes(layer, h, positions, key_mask)
        mistakes = [(np.asarray(w), hint) for w, (_, hint) in zip(wrong, _MISTAKES, strict=True)]
        expect_close(got, np.asarray(expected, np.float64), what=f"decoder_layer(layer 0, h [2, 6, {d}], "
                     "positions, key_mask)", rtol=1e-4, atol=1e-4, mistakes=mistakes)
        return "equals DecoderLayer.__call__ on a batch with padding"

    return run_check("decoder_layer", check, hint="attended, _ = layer.multi_head_attention(layer.rms_norm(h), "
                     "positions, key_mask); h = h + layer.rms_norm_1(attended); then the same with rms_norm_2, "
                     "layer.moe and rms_norm_3.")


def check_normalized_entropy(normalized_entropy) -> bool:
    """normalized_entropy(probs [..., E]) → H(p) / log E over the last axis, in [0, 1]."""
    rng = np.random.default_rng(8)

    def check():
        probs = rng.dirichlet(np.full(8, 0.7), size=(3, 5)).astype(np.float32)
        probs[0, 0] = np.eye(8)[2]  # certain: entropy 0
        probs[0, 1] = 1 / 8  # uniform: entropy 1
        got = call(normalized_entropy, jnp.asarray(probs))
        p = probs.astype(np.float64)
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
        expected = entropy / np.log(8)
        if np.isnan(np.asarray(got, np.float64)).any():
            raise ExerciseFailed("normalized_entropy returned NaN: 0 · log 0 counts as 0 (an expert with probability 0 "
                                 "adds nothing); use jnp.where(p > 0, p * log p, 0) or xlogy.")
        mistakes = [
            (entropy, "divide by log E (E = probs.shape[-1]) so that a uniform router gives 1."),
            (entropy / np.log2(8), "divide by log E in the same base as the entropy (natural log both, or log2 both)."),
            (1 - expected, "entropy is high for a spread-out router (1 = uniform), low for a confident one."),
        ]
        expect_close(got, expected, what="normalized_entropy(probs [3, 5, 8])", rtol=1e-4, atol=1e-5,
                     mistakes=mistakes)
        return "certain (0), uniform (1) and random routers, batched over leading axes"

    return run_check("normalized_entropy", check, hint="-(p · log p).sum(-1) / log(E), with 0 · log 0 = 0 "
                     "(jax.scipy.special.entr(p).sum(-1) / jnp.log(E)).")
