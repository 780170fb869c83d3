"""Notebook 02 (embeddings and RMSNorm): write RMSNorm, and the tied output layer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from grok_mini.config import GrokConfig
from grok_mini.layers import RMSNorm
from grok_mini.teach.exercises import call, expect_close, run_check

__all__ = ["check_rms_norm", "check_tied_logits"]


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
            ("bfloat16 activations [4, 32]", jnp.asarray(5 * rng.standard_normal((4, 32)), jnp.bfloat16),
             (0.5 + rng.random(32)).astype(np.float32), 1e-2),
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
            ]
            expect_close(got, _reference_rms_norm(x, scale, eps), what=f"rms_norm on {what}", rtol=rtol,
                         atol=1e-6, mistakes=mistakes, dtype=jnp.asarray(x).dtype)
        return "float32, tiny vectors and bfloat16 inputs"

    return run_check("rms_norm", check, hint="x / sqrt(mean(x**2, axis=-1, keepdims=True) + eps) * scale, "
                     "computed in float32 and cast back with .astype(x.dtype).")


def check_tied_logits(tied_logits) -> bool:
    """tied_logits(h [B, T, D], embedding [V, D], config) → logits [B, T, V], Grok-1's output layer."""
    config = GrokConfig(vocab_size=11, emb_size=16, key_size=4, num_q_heads=2, num_kv_heads=1, num_layers=1,
                        widening_factor=1.0, sequence_len=8, embedding_multiplier_scale=4.0)
    rng = np.random.default_rng(3)

    def check():
        h = rng.standard_normal((2, 3, config.emb_size)).astype(np.float32)
        embedding = (rng.standard_normal((config.vocab_size, config.emb_size)) / 4).astype(np.float32)
        got = call(tied_logits, jnp.asarray(h), jnp.asarray(embedding), config)
        plain = np.einsum("btd,vd->btv", h.astype(np.float64), embedding.astype(np.float64))
        mistakes = [
            (plain, "multiply the logits by config.output_multiplier_scale (1/√3 in Grok-1)."),
            (plain * config.embedding_multiplier_scale, "the output uses output_multiplier_scale; "
                                                        "embedding_multiplier_scale is for the input side."),
            (plain / config.output_multiplier_scale, "multiply by output_multiplier_scale, don't divide."),
        ]
        expect_close(got, plain * config.output_multiplier_scale, what="tied_logits(h [2, 3, 16], "
                     "embedding [11, 16], config)", mistakes=mistakes)
        return "logits = h · embeddingᵀ × output_multiplier_scale"

    return run_check("tied_logits", check, hint="the same [vocab, emb] table that embeds tokens scores them: "
                     "einsum('btd,vd->btv', h, embedding) times config.output_multiplier_scale.")
