"""Notebook 02 (embeddings and RMSNorm): write RMSNorm, and the tied output layer."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from grok_mini.config import GrokConfig
from grok_mini.layers import RMSNorm
from grok_mini.teach.exercises import call, expect_close, run_check

__all__ = ["check_rms_norm", "check_tied_logits"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "rms_norm": (
        "RMSNorm divides by the root of the mean square over the features; unlike LayerNorm it subtracts "
        "nothing.",
        "The small epsilon goes inside the square root, and the learned scale multiplies the result as it "
        "is (not one plus the scale).",
        "Do the arithmetic in float32 whatever the input's dtype, and give back the input's dtype at the "
        "end.",
    ),
    "tied_logits": (
        "The output projection is not a new matrix: it is the table that embedded the tokens, used the "
        "other way round.",
        "Score each position's vector against every row of the embedding table: one dot product per "
        "vocabulary entry.",
        "Grok-1 scales the scores by a constant of the config (output_multiplier_scale); the input side's "
        "embedding multiplier does not belong here.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"rms_norm": (RMSNorm.__call__,), "tied_logits": ()}


def _reference_rms_norm(x, scale, eps) -> np.ndarray:
    """The package's RMSNorm with `scale` loaded, as float64 numpy."""
    norm = RMSNorm(x.shape[-1], eps=eps)
    norm.scale[...] = jnp.asarray(scale, jnp.float32)
    return np.asarray(norm(jnp.asarray(x)), np.float64)


def _rms_variant(x, scale, eps, *, axis=-1, centre=False, mean=True, offset=0.0) -> np.ndarray:
    """float64 RMSNorm with switches that reproduce common mistakes."""
    x = np.asarray(x, np.float64)
    if centre:
        x = x - x.mean(axis=axis, keepdims=True)
    square = np.mean(x**2, axis=axis, keepdims=True) if mean else np.sum(x**2, axis=axis, keepdims=True)
    return x / np.sqrt(square + eps) * (np.asarray(scale, np.float64) + offset)


def _rms_in_dtype(x, scale, eps):
    """RMSNorm with every step in x's dtype (the mistake): bfloat16 squares, mean and rsqrt."""
    x = jnp.asarray(x)
    normed = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + jnp.asarray(eps, x.dtype))
    return np.asarray(normed * jnp.asarray(scale).astype(x.dtype), np.float64)


def check_rms_norm(rms_norm) -> bool:
    """rms_norm(x, scale, eps) → scale ⊙ x / sqrt(mean(x²) + eps) over the last axis, in x's dtype."""
    rng = np.random.default_rng(2)

    def check():
        eps = GrokConfig.rms_norm_eps
        cases = [
            ("float32 activations [2, 5, 16]", (3 * rng.standard_normal((2, 5, 16))).astype(np.float32),
             (0.5 + rng.random(16)).astype(np.float32), 1e-5),
            ("tiny vectors (RMS 1e-4) [3, 16]", (1e-4 * rng.standard_normal((3, 16))).astype(np.float32),
             np.ones(16, np.float32), 1e-4),
            # float32 inside and one rounding to bfloat16 at the end: within half a bfloat16 step (0.39 %)
            ("bfloat16 activations [4, 1024]", jnp.asarray(5 * rng.standard_normal((4, 1024)), jnp.bfloat16),
             (0.5 + rng.random(1024)).astype(np.float32), 5e-3),
        ]
        for what, x, scale, rtol in cases:
            got = call(rms_norm, jnp.asarray(x), jnp.asarray(scale), eps)
            mistakes = [
                (_rms_variant(x, scale, eps, offset=1.0), "Grok-1 uses the stored scale as is: scale ⊙ x̂, "
                                                          "not (1 + scale) ⊙ x̂."),
                (_rms_variant(x, scale, 0.0), "add eps inside the square root: sqrt(mean(x²) + eps). It "
                                              "matters for tiny vectors."),
                (_rms_variant(x, scale, eps, centre=True), "that is LayerNorm: RMSNorm does not subtract the "
                                                           "mean."),
                (_rms_variant(x, scale, eps, mean=False), "use the mean of x² over the features, not the sum."),
                (_rms_variant(x, scale, eps, axis=0), "normalise each vector over its features (the last axis)."),
                (_rms_in_dtype(jnp.asarray(x), jnp.asarray(scale), eps),
                 "you computed in the input's dtype (bfloat16 here); Grok-1 computes RMSNorm in float32 inside and "
                 "rounds once, at the end, to the input's dtype."),
            ]
            expect_close(got, _reference_rms_norm(x, scale, eps), what=f"rms_norm on {what}", rtol=rtol,
                         atol=1e-6, mistakes=mistakes, dtype=jnp.asarray(x).dtype)
        return "float32, tiny vectors and bfloat16 inputs"

    return run_check("rms_norm", check, answer=rms_norm, hints=HINTS["rms_norm"], refuse=REFUSE["rms_norm"])


def check_tied_logits(tied_logits) -> bool:
    """tied_logits(h [B, T, D], embedding [V, D], config) → logits [B, T, V], Grok-1's output layer."""
    config = GrokConfig(vocab_size=11, emb_size=16, key_size=4, num_q_heads=2, num_kv_heads=1, num_layers=1,
                        widening_factor=1.0, sequence_len=8, embedding_multiplier_scale=4.0)
    rng = np.random.default_rng(3)

    def check():
        for c, batch, length in ((config, 2, 3), (dataclasses.replace(config, vocab_size=7, emb_size=12), 1, 5)):
            h = rng.standard_normal((batch, length, c.emb_size)).astype(np.float32)
            embedding = (rng.standard_normal((c.vocab_size, c.emb_size)) / 4).astype(np.float32)
            got = call(tied_logits, jnp.asarray(h), jnp.asarray(embedding), c)
            plain = np.einsum("btd,vd->btv", h.astype(np.float64), embedding.astype(np.float64))
            mistakes = [
                (plain, "multiply the logits by config.output_multiplier_scale (1/√3 in Grok-1)."),
                (plain * c.embedding_multiplier_scale, "the output uses output_multiplier_scale; "
                                                       "embedding_multiplier_scale is for the input side."),
                (plain / c.output_multiplier_scale, "multiply by output_multiplier_scale, don't divide."),
            ]
            expect_close(got, plain * c.output_multiplier_scale, what=f"tied_logits(h {list(h.shape)}, "
                         f"embedding {list(embedding.shape)}, config)", mistakes=mistakes)
        return "logits = h · embeddingᵀ × output_multiplier_scale"

    return run_check("tied_logits", check, answer=tied_logits, hints=HINTS["tied_logits"], refuse=REFUSE["tied_logits"])
