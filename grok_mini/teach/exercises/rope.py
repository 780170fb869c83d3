"""Notebook 03 (RoPE): the rotation frequencies, and rotary embedding itself."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from grok_mini.config import GrokConfig
from grok_mini.layers import rotary_embedding
from grok_mini.teach.exercises import call, expect_close, run_check

__all__ = ["check_rope_frequencies", "check_rope", "interleaved_rope"]

# One hint per further wrong attempt, from general to specific, in words: what to think about, never code.
HINTS = {
    "rope_frequencies": (
        "Each pair of dimensions turns at its own speed; there are half as many frequencies as "
        "dimensions.",
        "The first pair turns fastest (one radian per position), and the speeds fall geometrically "
        "towards the last pair.",
        "The exponent of the base runs over the even dimension indices divided by the head size, and the "
        "frequency is one over that power.",
    ),
    "apply_rope": (
        "Rotate each vector pair by pair, by the position times that pair's frequency; all heads share "
        "the angles.",
        "Grok-1 pairs dimension i with dimension i + D/2 (the two halves), not the neighbours 2i and 2i + "
        "1.",
        "Use the positions you are given (not 0, 1, 2, …), and the rotation itself, not its inverse: the "
        "first half becomes x1·cos − x2·sin.",
    ),
}
# What would answer the exercise in one call (the package's own function, or a library's): refused.
REFUSE = {"rope_frequencies": (), "apply_rope": (rotary_embedding,)}


def check_rope_frequencies(rope_frequencies) -> bool:
    """rope_frequencies(key_size, base) → the D/2 angles per position, 1 / base^(2i/D) for i = 0 … D/2 − 1."""

    def check():
        for key_size, base in ((128, GrokConfig.rope_base), (16, 10_000), (32, 500_000)):
            got = call(rope_frequencies, key_size, base)
            i = np.arange(key_size // 2, dtype=np.float64)
            mistakes = [
                (base ** (-i / key_size), "the exponent is 2i/D (each pair covers two dimensions), not i/D."),
                (base ** (2 * i / key_size), "frequencies shrink with i: 1 / base^(2i/D), not base^(2i/D)."),
                (1.0 / base ** (2 * (i + 1) / key_size), "start at i = 0: pair 0 turns by 1 radian per token."),
            ]
            expect_close(got, 1.0 / base ** (2 * i / key_size), what=f"rope_frequencies({key_size}, {base})",
                         rtol=1e-5, atol=0.0, mistakes=mistakes)
        return "D = 128, 16 and 32, bases 10,000 and 500,000"

    return run_check("rope_frequencies", check, answer=rope_frequencies,
                     hints=HINTS["rope_frequencies"], refuse=REFUSE["rope_frequencies"])


def interleaved_rope(x, positions, base: float = GrokConfig.rope_base) -> np.ndarray:
    """The other convention (GPT-J, Meta's Llama code): dimension 2i pairs with 2i + 1. float64 numpy."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    angles = np.asarray(positions, np.float64)[..., None, None] / base ** (np.arange(0, d, 2) / d)  # [B, T, 1, D/2]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
    out[..., 1::2] = even * np.sin(angles) + odd * np.cos(angles)
    return out


def check_rope(apply_rope) -> bool:
    """apply_rope(x [B, T, H, D], positions [B, T]) → x rotated as layers.rotary_embedding does (half-split)."""
    rng = np.random.default_rng(4)

    def check():
        # Row 2 continues a KV cache; the second case has other sizes (a longer head, one head, offsets).
        cases = [((2, 5, 3, 16), np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]], np.int32)),
                 ((1, 4, 1, 32), np.array([[30, 31, 32, 33]], np.int32))]
        for shape, positions in cases:
            x = rng.standard_normal(shape).astype(np.float32)
            got = call(apply_rope, jnp.asarray(x), jnp.asarray(positions))
            expected = np.asarray(rotary_embedding(jnp.asarray(x), jnp.asarray(positions)), np.float64)
            from_zero = np.broadcast_to(np.arange(shape[1]), positions.shape)
            mistakes = [
                (interleaved_rope(x, positions), "you rotated neighbouring dimensions (2i, 2i+1): that is the "
                                                 "interleaved convention. Grok-1 pairs dimension i with i + D/2 "
                                                 "(half-split, 'rotate_half')."),
                (np.asarray(rotary_embedding(jnp.asarray(x), -jnp.asarray(positions))),
                 "you rotate the wrong way: the first half becomes x1·cos − x2·sin, the second x2·cos + x1·sin."),
                (np.asarray(rotary_embedding(jnp.asarray(x), jnp.asarray(from_zero))),
                 "use the positions you are given (a sequence continuing a KV cache does not start at 0)."),
            ]
            expect_close(got, expected, what=f"apply_rope(x {list(shape)}, positions {positions.tolist()})",
                         rtol=1e-4, atol=1e-5, mistakes=mistakes)
        return "half-split rotation matches layers.rotary_embedding, including offset positions"

    return run_check("apply_rope", check, answer=apply_rope,
                     hints=HINTS["apply_rope"], refuse=REFUSE["apply_rope"])
